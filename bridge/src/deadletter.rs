//! The bridge's dead-letter queue: a record the relay cannot turn into an event is parked here
//! with its reason and the original record, and the relay moves on.

use std::collections::HashMap;

use aws_sdk_sqs::types::MessageAttributeValue;
use serde_json::json;

/// SQS takes at most 256 KiB per message; a larger original is cut and marked so.
const MAX_ORIGINAL_BYTES: usize = 200 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("cannot park a record in the dead-letter queue `{queue}`")]
pub struct DeadLetterError {
    pub queue: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Where a parked record came from.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub stream: &'a str,
    pub shard_id: &'a str,
    pub sequence_number: &'a str,
}

#[derive(Clone)]
pub struct DeadLetterQueue {
    client: aws_sdk_sqs::Client,
    name: String,
    url: String,
}

impl DeadLetterQueue {
    /// Looks the queue up by name (`bridge setup` creates it).
    pub async fn open(client: aws_sdk_sqs::Client, name: &str) -> Result<Self, DeadLetterError> {
        let url = client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| DeadLetterError {
                queue: name.into(),
                source: Box::new(e),
            })?
            .queue_url()
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            client,
            name: name.into(),
            url,
        })
    }

    pub async fn park(
        &self,
        reason: &str,
        original: &[u8],
        origin: &Origin<'_>,
    ) -> Result<(), DeadLetterError> {
        let truncated = original.len() > MAX_ORIGINAL_BYTES;
        let text = String::from_utf8_lossy(&original[..original.len().min(MAX_ORIGINAL_BYTES)]);
        let body = json!({
            "reason": reason,
            "stream": origin.stream,
            "shard_id": origin.shard_id,
            "sequence_number": origin.sequence_number,
            "original_bytes": original.len(),
            "original_truncated": truncated,
            "record": text,
        });
        let reason_attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason.chars().take(256).collect::<String>())
            .build()
            .map_err(|e| DeadLetterError {
                queue: self.name.clone(),
                source: Box::new(e),
            })?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body.to_string())
            .set_message_attributes(Some(HashMap::from([("reason".to_owned(), reason_attr)])))
            .send()
            .await
            .map_err(|e| DeadLetterError {
                queue: self.name.clone(),
                source: Box::new(e),
            })?;
        Ok(())
    }
}
