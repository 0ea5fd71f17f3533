//! `bridge setup`'s own resources: the Kinesis stream and the lease/checkpoint table (the
//! rest is `eventing::provision`).

use std::time::Duration;

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::{EncryptionType, StreamStatus};
pub use eventing::provision::*;

/// The key a stream is encrypted with: Kinesis' own AWS-managed key, which needs no KMS
/// permission in any role (deploy/cloudformation/outbox-bridge.yaml uses the same).
pub const STREAM_KEY: &str = "alias/aws/kinesis";

/// Creates the stream with `shards` shards unless it exists, waits until it is active, and
/// encrypts it at rest ([`STREAM_KEY`]) unless it already is.
pub async fn ensure_stream(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: i32,
) -> Result<bool, SetupError> {
    let created = match client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
    {
        Ok(_) => true,
        Err(err) if err.code() == Some("ResourceInUseException") => false,
        Err(err) => {
            return Err(SetupError::CreateStream {
                stream: stream.into(),
                code: err.code().unwrap_or("unknown").into(),
                source: Box::new(err),
            })
        }
    };
    let wait = Duration::from_secs(60);
    let started = tokio::time::Instant::now();
    while started.elapsed() < wait {
        let summary = client.describe_stream_summary().stream_name(stream).send().await;
        if let Ok(out) = summary {
            let summary = out.stream_description_summary();
            if summary.map(|s| s.stream_status()) == Some(&StreamStatus::Active) {
                if summary.and_then(|s| s.encryption_type()) != Some(&EncryptionType::Kms) {
                    client
                        .start_stream_encryption()
                        .stream_name(stream)
                        .encryption_type(EncryptionType::Kms)
                        .key_id(STREAM_KEY)
                        .send()
                        .await
                        .map_err(|err| failed("kinesis stream encryption", stream, err))?;
                    // Active again once encryption is on: look again.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                tracing::info!(stream, created, "kinesis stream ready");
                return Ok(created);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(SetupError::StreamNotActive {
        stream: stream.into(),
        seconds: wait.as_secs(),
    })
}

/// Sets the stream's maximum record size (`UpdateMaxRecordSize`, 1024 to 10240 KiB) unless it
/// is that already, and waits until the stream says so. Returns whether it changed. Capture
/// reads the limit when it starts: a running capture takes a raised limit up when restarted.
pub async fn ensure_max_record_size(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    kib: i32,
) -> Result<bool, SetupError> {
    let wait = Duration::from_secs(60);
    let started = tokio::time::Instant::now();
    let mut asked = false;
    while started.elapsed() < wait {
        let out = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(|err| failed("kinesis stream record size", stream, err))?;
        let Some(summary) = out.stream_description_summary() else {
            break;
        };
        // A stream that does not say has the default size.
        let now = summary.max_record_size_in_kib().unwrap_or(1024);
        if now == kib && summary.stream_status() == &StreamStatus::Active {
            return Ok(asked);
        }
        if !asked && summary.stream_status() == &StreamStatus::Active {
            client
                .update_max_record_size()
                .stream_arn(summary.stream_arn())
                .max_record_size_in_kib(kib)
                .send()
                .await
                .map_err(|err| failed("kinesis stream record size", stream, err))?;
            asked = true;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(SetupError::StreamNotActive {
        stream: stream.into(),
        seconds: wait.as_secs(),
    })
}

/// Creates the checkpoint/lease table (key `lease_key`, on-demand) unless it exists.
pub async fn ensure_checkpoint_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<bool, SetupError> {
    let created = ensure_table(client, table, "lease_key", None).await?;
    // Worker heartbeat items expire; shard leases carry no such attribute and never do.
    ensure_ttl(client, table, crate::relay::lease::WORKER_TTL_ATTRIBUTE).await?;
    Ok(created)
}
