//! Operator tools for a dead-letter queue (the bridge's and the microservices'): list what is
//! parked with its reason, and redrive it — hand each message to a function that sends it back
//! where it came from, deleting it from the DLQ only once that succeeded.

use std::collections::HashSet;
use std::future::Future;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error("dead-letter queue `{queue}`: {op} failed ({code})")]
pub struct DlqError {
    pub queue: String,
    pub op: &'static str,
    pub code: String,
}

/// One parked message.
#[derive(Debug, Clone, Serialize)]
pub struct Parked {
    pub message_id: String,
    /// The `reason` message attribute, or the body's `reason` field.
    pub reason: String,
    pub receive_count: Option<String>,
    pub sent_at: Option<String>,
    pub body: String,
    #[serde(skip)]
    receipt: String,
}

pub struct Dlq {
    sqs: aws_sdk_sqs::Client,
    name: String,
    url: String,
}

/// How long messages stay hidden while a listing or a redrive holds them.
const HOLD_SECONDS: i32 = 60;

impl Dlq {
    pub async fn open(sqs: aws_sdk_sqs::Client, name: &str) -> Result<Self, DlqError> {
        let url = sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| DlqError {
                queue: name.into(),
                op: "GetQueueUrl",
                code: e.code().unwrap_or("unreachable").into(),
            })?
            .queue_url
            .unwrap_or_default();
        Ok(Self {
            sqs,
            name: name.into(),
            url,
        })
    }

    fn error(&self, op: &'static str, e: &dyn ProvideErrorMetadata) -> DlqError {
        DlqError {
            queue: self.name.clone(),
            op,
            code: e.code().unwrap_or("unreachable").into(),
        }
    }

    /// Takes up to `max` distinct messages, hidden for [`HOLD_SECONDS`].
    async fn take(&self, max: usize) -> Result<Vec<Parked>, DlqError> {
        let mut seen = HashSet::new();
        let mut taken = Vec::new();
        while taken.len() < max {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(i32::try_from((max - taken.len()).min(10)).unwrap_or(10))
                .visibility_timeout(HOLD_SECONDS)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(|e| self.error("ReceiveMessage", &e))?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                if seen.insert(m.message_id().unwrap_or_default().to_owned()) {
                    taken.push(parked(m));
                }
            }
        }
        Ok(taken)
    }

    /// Every parked message (up to `max`) with its reason; they stay in the queue.
    pub async fn list(&self, max: usize) -> Result<Vec<Parked>, DlqError> {
        let taken = self.take(max).await?;
        for p in &taken {
            // Visible again right away: listing must not delay a redrive.
            let _ = self
                .sqs
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(&p.receipt)
                .visibility_timeout(0)
                .send()
                .await;
        }
        Ok(taken)
    }

    /// Sends each parked message (up to `max`) back with `send`; deletes it from the DLQ when
    /// `send` succeeded, leaves it parked otherwise. Returns (redriven, failures with reasons).
    pub async fn redrive<F, Fut>(
        &self,
        max: usize,
        send: F,
    ) -> Result<(usize, Vec<(String, String)>), DlqError>
    where
        F: Fn(Parked) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut redriven = 0;
        let mut failed = Vec::new();
        for p in self.take(max).await? {
            let (id, receipt) = (p.message_id.clone(), p.receipt.clone());
            match send(p).await {
                Ok(()) => {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.url)
                        .receipt_handle(&receipt)
                        .send()
                        .await
                        .map_err(|e| self.error("DeleteMessage", &e))?;
                    redriven += 1;
                }
                Err(reason) => {
                    let _ = self
                        .sqs
                        .change_message_visibility()
                        .queue_url(&self.url)
                        .receipt_handle(&receipt)
                        .visibility_timeout(0)
                        .send()
                        .await;
                    failed.push((id, reason));
                }
            }
        }
        Ok((redriven, failed))
    }
}

fn parked(m: Message) -> Parked {
    let body = m.body().unwrap_or_default().to_owned();
    let reason = m
        .message_attributes()
        .and_then(|a| a.get("reason"))
        .and_then(|v| v.string_value())
        .map(str::to_owned)
        .or_else(|| {
            serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["reason"].as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| "(no reason recorded: moved by the redrive policy)".into());
    let system = |k: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&k)).cloned();
    Parked {
        message_id: m.message_id().unwrap_or_default().to_owned(),
        reason,
        receive_count: m
            .message_attributes()
            .and_then(|a| a.get("receive_count"))
            .and_then(|v| v.string_value())
            .map(str::to_owned)
            .or_else(|| system(MessageSystemAttributeName::ApproximateReceiveCount)),
        sent_at: system(MessageSystemAttributeName::SentTimestamp),
        receipt: m.receipt_handle().unwrap_or_default().to_owned(),
        body,
    }
}

/// The listing as a human reads it: one block per message.
pub fn render(queue: &str, parked: &[Parked]) -> String {
    use std::fmt::Write;
    let mut out = format!("{} message(s) in {queue}\n", parked.len());
    for p in parked {
        let body: String = p.body.chars().take(300).collect();
        let _ = writeln!(
            out,
            "- {}\n  reason: {}\n  receives: {}\n  body: {body}{}",
            p.message_id,
            p.reason,
            p.receive_count.as_deref().unwrap_or("-"),
            if p.body.len() > body.len() { "…" } else { "" }
        );
    }
    out
}
