//! Claim checks: an event too large for EventBridge is stored in S3, and the event carries
//! `{bucket, key, size, sha256}` instead of its payload, for consumers to resolve.

use aws_sdk_s3::primitives::ByteStream;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
#[error("cannot store the claim check s3://{bucket}/{key}")]
pub struct ClaimCheckError {
    pub bucket: String,
    pub key: String,
    /// Throttling, 5xx or connection trouble: worth another attempt.
    pub transient: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

#[derive(Clone)]
pub struct ClaimCheckStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl ClaimCheckStore {
    pub fn new(client: aws_sdk_s3::Client, bucket: &str) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// Stores `payload` under a key derived from the event id (so a retry overwrites, never
    /// duplicates) and returns the claim check that replaces it.
    pub async fn store(&self, event_id: &str, payload: &str) -> Result<Value, ClaimCheckError> {
        // A hash of the id: ids that differ only in characters a key cannot hold stay apart.
        let key = format!(
            "{}{}-{:x}.json",
            crate::provision::CLAIM_CHECK_PREFIX,
            sanitize(event_id),
            Sha256::digest(event_id.as_bytes())
        );
        self.put(key, payload.as_bytes().to_vec()).await
    }

    /// Stores a whole stream record (capture's, for one above Kinesis' 1 MiB limit) under a key
    /// named by its hash: storing it again overwrites, never duplicates. Returns the claim check.
    pub async fn store_record(&self, record: &[u8]) -> Result<Value, ClaimCheckError> {
        let key = format!(
            "{}{RECORDS}{:x}.json",
            crate::provision::CLAIM_CHECK_PREFIX,
            Sha256::digest(record)
        );
        self.put(key, record.to_vec()).await
    }

    async fn put(&self, key: String, body: Vec<u8>) -> Result<Value, ClaimCheckError> {
        let sha256 = format!("{:x}", Sha256::digest(&body));
        let size = body.len();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| ClaimCheckError {
                bucket: self.bucket.clone(),
                key: key.clone(),
                transient: crate::retry::transient_cause(&e).is_some(),
                source: Box::new(e),
            })?;
        Ok(json!({"bucket": self.bucket, "key": key, "size": size, "sha256": sha256}))
    }
}

/// Where capture's whole records go, under the claim-check prefix (and its lifecycle rule).
pub const RECORDS: &str = "records/";

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl crate::retry::Transient for ClaimCheckError {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

/// The S3 client every process uses. Path-style addressing (`http://host/bucket/key`) whenever an
/// endpoint is configured: virtual-hosted style puts the bucket in the host name
/// (`bucket.localstack:4566`), which no emulator's host name (docker compose's `localstack`)
/// resolves. `AWS_S3_FORCE_PATH_STYLE=true|false` overrides either way.
pub fn s3_client(aws: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let path_style = match std::env::var("AWS_S3_FORCE_PATH_STYLE").ok().as_deref() {
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        _ => aws.endpoint_url().is_some(),
    };
    let config = aws_sdk_s3::config::Builder::from(aws)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
