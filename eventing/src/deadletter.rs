//! The bridge's dead-letter queue: a record the relay cannot turn into an event is parked here
//! with its reason and the original record, and the relay moves on.

use std::collections::HashMap;

use aws_sdk_sqs::types::MessageAttributeValue;
use serde_json::json;

/// SQS takes at most 1 MiB per message since 2026 (256 KiB before): body plus attributes, and
/// escaping can grow the original, so the encoded body is measured and the original cut until it
/// fits, with room for the attributes. Kept at the old size: a queue created with an explicit
/// `MaximumMessageSize` of 256 KiB still takes it.
const MAX_BODY_BYTES: usize = 240 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("cannot park a record in the dead-letter queue `{queue}`")]
pub struct DeadLetterError {
    pub queue: String,
    /// Throttling, 5xx or connection trouble: worth another attempt.
    pub transient: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Where a parked record came from.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub stream: &'a str,
    pub shard_id: &'a str,
    pub sequence_number: &'a str,
    /// The record's partition key, so a redrive puts it back on the same shard ("" if none).
    pub partition_key: &'a str,
}

#[derive(Clone)]
pub struct DeadLetterQueue {
    client: aws_sdk_sqs::Client,
    name: String,
    url: String,
}

impl DeadLetterQueue {
    /// Looks the queue up by name (`bridge setup` creates it).
    /// Transient failures (an outage while the relay starts) are retried until they pass.
    pub async fn open(client: aws_sdk_sqs::Client, name: &str) -> Result<Self, DeadLetterError> {
        let backoff = crate::retry::Backoff::call();
        let url = crate::retry::while_transient("GetQueueUrl", backoff, || {
            client.get_queue_url().queue_name(name).send()
        })
        .await
        .map_err(|e| DeadLetterError {
            queue: name.into(),
            transient: false,
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
        let reason = sqs_safe(reason);
        let mut keep = original.len();
        let body = loop {
            let text = sqs_safe(&String::from_utf8_lossy(&original[..keep]));
            let body = json!({
                "reason": reason,
                "stream": origin.stream,
                "shard_id": origin.shard_id,
                "sequence_number": origin.sequence_number,
                "partition_key": origin.partition_key,
                "original_bytes": original.len(),
                "original_truncated": keep < original.len(),
                "record": text,
            })
            .to_string();
            if body.len() <= MAX_BODY_BYTES || keep == 0 {
                break body;
            }
            keep /= 2;
        };
        let error = |e: Box<dyn std::error::Error + Send + Sync>, transient| DeadLetterError {
            queue: self.name.clone(),
            transient,
            source: e,
        };
        let reason_attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason.chars().take(256).collect::<String>())
            .build()
            .map_err(|e| error(Box::new(e), false))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .set_message_attributes(Some(HashMap::from([("reason".to_owned(), reason_attr)])))
            .send()
            .await
            .map_err(|e| {
                let transient = crate::retry::transient_cause(&e).is_some();
                error(Box::new(e), transient)
            })?;
        Ok(())
    }
}

/// SQS accepts only #x9, #xA, #xD, #x20-#xD7FF, #xE000-#xFFFD and #x10000+ in messages.
fn sqs_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

impl crate::retry::Transient for DeadLetterError {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

#[cfg(test)]
mod tests {
    use super::sqs_safe;

    #[test]
    fn characters_sqs_refuses_are_replaced() {
        assert_eq!(sqs_safe("a\u{0}b\tc\u{FFFF}"), "a\u{FFFD}b\tc\u{FFFD}");
        assert_eq!(sqs_safe("plain\ntext"), "plain\ntext");
    }
}
