//! A record capture sent by claim check (it was above Kinesis' 1 MiB limit, see
//! `sink::claims`): the whole record is read back from S3 and takes the slim one's place.
//! A transient S3 failure is retried; a claim check that cannot be resolved (the object is
//! gone: 404 `NoSuchKey`; its hash does not match) parks the record with that reason. A refusal
//! of the relay itself (`AccessDenied`, an expired token, a KMS key it may not use:
//! [`eventing::retry::refused_caller`]) is not the record's fault: its worker holds the page —
//! nothing parked or checkpointed, `/healthz` saying why — until S3 lets it read. The relay's
//! role may list the bucket, so that a missing object is a 404, not a 403 (S3's rule for a
//! caller without `s3:ListBucket`), and is parked instead of holding the shard for ever.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use eventing::retry::{refused_caller, transient_cause, while_transient, Backoff, Transient};
use sha2::{Digest, Sha256};

use super::envelope::ClaimRef;

#[derive(Debug, thiserror::Error)]
#[error("reading s3://{bucket}/{key}: {reason}")]
pub struct ReadError {
    bucket: String,
    key: String,
    reason: String,
    transient: bool,
}

/// Why a claim check was not resolved.
#[derive(Debug)]
pub enum Unresolved {
    /// The record's fault (object gone, hash mismatch): park it with this reason.
    Park(String),
    /// The relay's (its credentials or permissions): hold the page.
    Denied(ReadError),
}

impl Transient for ReadError {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

/// The whole record behind `check`, or why it cannot be had.
pub async fn resolve(s3: &aws_sdk_s3::Client, check: &ClaimRef) -> Result<Vec<u8>, Unresolved> {
    let what = format!("read claim check s3://{}/{}", check.bucket, check.key);
    let whole = match while_transient(&what, Backoff::call(), || read(s3, check)).await {
        Ok(whole) => whole,
        Err(e) if refused_caller(&e.reason) => return Err(Unresolved::Denied(e)),
        Err(e) => {
            return Err(Unresolved::Park(format!(
                "record above the Kinesis stream's record limit sent by claim check, which cannot be read \
                 ({e}); the object may have expired (ClaimCheckRetentionDays)"
            )))
        }
    };
    if let Some(expected) = &check.sha256 {
        let actual = format!("{:x}", Sha256::digest(&whole));
        if &actual != expected {
            return Err(Unresolved::Park(format!(
                "claim check s3://{}/{} does not match its record (sha256 {actual}, expected {expected})",
                check.bucket, check.key
            )));
        }
    }
    Ok(whole)
}

async fn read(s3: &aws_sdk_s3::Client, check: &ClaimRef) -> Result<Vec<u8>, ReadError> {
    let error = |reason: String, transient: bool| ReadError {
        bucket: check.bucket.clone(),
        key: check.key.clone(),
        reason,
        transient,
    };
    let object = s3
        .get_object()
        .bucket(&check.bucket)
        .key(&check.key)
        .send()
        .await
        .map_err(|e: SdkError<_, _>| {
            let transient = transient_cause(&e).is_some();
            error(e.code().unwrap_or("no answer").to_owned(), transient)
        })?;
    // A body cut off midway is the connection's fault: worth another try.
    let body = object
        .body
        .collect()
        .await
        .map_err(|e| error(e.to_string(), true))?;
    Ok(body.into_bytes().to_vec())
}
