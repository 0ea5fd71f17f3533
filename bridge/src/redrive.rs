//! `bridge dlq redrive`: records the relay parked are put back on their stream, each on its
//! own partition key (so on its aggregate's shard), and leave the dead-letter queue once
//! Kinesis took them.

use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::put_record::PutRecordError;
use eventing::dlq_tools::{Dlq, DlqError, Parked};

/// Why a parked record stays parked.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("not a parked record")]
    NotParked(#[source] serde_json::Error),
    #[error("the record was truncated when parked; republish it from the source")]
    Truncated,
    #[error("no stream or record in the parked message")]
    Incomplete,
    #[error("PutRecord to {stream}")]
    Put {
        stream: String,
        #[source]
        source: Box<SdkError<PutRecordError>>,
    },
}

/// Redrives up to `max` parked records: (how many went back, each kept one with its reason).
pub async fn to_streams(
    dlq: &Dlq,
    kinesis: &aws_sdk_kinesis::Client,
    max: usize,
) -> Result<(usize, Vec<(String, String)>), DlqError> {
    dlq.redrive(max, |p| put_back(kinesis.clone(), p)).await
}

async fn put_back(kinesis: aws_sdk_kinesis::Client, parked: Parked) -> Result<(), RedriveError> {
    let body: serde_json::Value = serde_json::from_str(&parked.body).map_err(RedriveError::NotParked)?;
    if body["original_truncated"].as_bool() == Some(true) {
        return Err(RedriveError::Truncated);
    }
    let (Some(stream), Some(record)) = (body["stream"].as_str(), body["record"].as_str()) else {
        return Err(RedriveError::Incomplete);
    };
    // Its own partition key: back on its aggregate's shard (older parks lack it).
    let key = body["partition_key"]
        .as_str()
        .filter(|k| !k.is_empty())
        .or_else(|| body["sequence_number"].as_str())
        .unwrap_or("dlq-redrive");
    kinesis
        .put_record()
        .stream_name(stream)
        .partition_key(key)
        .data(aws_sdk_kinesis::primitives::Blob::new(record.as_bytes().to_vec()))
        .send()
        .await
        .map_err(|source| RedriveError::Put {
            stream: stream.to_owned(),
            source: Box::new(source),
        })?;
    Ok(())
}
