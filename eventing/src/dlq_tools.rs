//! Operator tools for a dead-letter queue (the bridge's and the microservices'): list what is
//! parked with its reason, and redrive it — hand each message to a function that sends it back
//! where it came from, deleting it from the DLQ only once that succeeded.
//!
//! A redrive works a page (≤ 10 messages) at a time and keeps the page hidden until each
//! message is sent and deleted: a queue longer than one hold never lets a message it took show
//! up again for a second redrive (or this one) to send twice, and a receipt handle is always
//! the one SQS gave last, so the delete after the send takes.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

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
    /// How long messages stay hidden while a listing or a redrive holds them.
    hold: Duration,
}

impl Dlq {
    pub async fn open(sqs: aws_sdk_sqs::Client, name: &str, hold: Duration) -> Result<Self, DlqError> {
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
            hold,
        })
    }

    fn hold_secs(&self) -> i32 {
        i32::try_from(self.hold.as_secs().max(1)).unwrap_or(43_200)
    }

    /// One page of up to `max` (≤ 10) messages, hidden for the hold.
    async fn receive(&self, max: usize) -> Result<Vec<Message>, DlqError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
            .visibility_timeout(self.hold_secs())
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| self.error("ReceiveMessage", &e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Hides `messages` for a whole hold again, in one call per ten. Best effort: one whose
    /// visibility cannot be changed is a message another reader may take.
    async fn extend_hold(&self, messages: &[Parked]) {
        for chunk in messages.chunks(10) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&p.receipt)
                        .visibility_timeout(self.hold_secs())
                        .build()
                        .ok()
                })
                .collect();
            let changed = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await;
            if let Err(err) = changed {
                tracing::warn!(queue = %self.name, error = %crate::error_chain::chain(&err), "cannot extend the hold of messages being redriven");
            }
        }
    }

    /// Best effort: a message whose visibility cannot be changed becomes visible at the end of
    /// its hold anyway.
    async fn set_visibility(&self, receipt: &str, seconds: i32) {
        let _ = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await;
    }

    fn error(&self, op: &'static str, e: &dyn ProvideErrorMetadata) -> DlqError {
        DlqError {
            queue: self.name.clone(),
            op,
            code: e.code().unwrap_or("unreachable").into(),
        }
    }

    /// Takes up to `max` distinct messages, hidden for the hold (a listing: a message seen
    /// again once its hold ran out is not listed twice).
    async fn take(&self, max: usize) -> Result<Vec<Parked>, DlqError> {
        let mut seen = HashSet::new();
        let mut taken = Vec::new();
        while taken.len() < max {
            let messages = self.receive(max - taken.len()).await?;
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
            self.set_visibility(&p.receipt, 0).await;
        }
        Ok(taken)
    }

    /// Sends each parked message (up to `max`) back with `send`; deletes it from the DLQ when
    /// `send` succeeded, leaves it parked otherwise. Returns (redriven, failures with reasons).
    pub async fn redrive<F, Fut, E>(
        &self,
        max: usize,
        send: F,
    ) -> Result<(usize, Vec<(String, String)>), DlqError>
    where
        F: Fn(Parked) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::error::Error,
    {
        let mut redriven = 0;
        let mut failed = Vec::new();
        // Only what was parked before this redrive began: a record that fails again is parked
        // anew (a new message) while the redrive runs, and sending that one too would go round
        // until `max`. Those are left hidden and shown again at the end, like the ones kept.
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        // Messages handled (sent, or failed and kept) or left for later.
        let mut handled: HashSet<String> = HashSet::new();
        let mut later: HashSet<String> = HashSet::new();
        let mut kept: Vec<String> = Vec::new();
        // Pages in a row with nothing new: what is left keeps coming back (holds shorter than the
        // run), so the run is over.
        let mut stale_pages = 0;
        while handled.len() < max && stale_pages < 3 {
            let page = self.receive(max - handled.len()).await?;
            if page.is_empty() {
                break;
            }
            let mut held_since = Instant::now();
            let mut fresh = Vec::new();
            for p in page.into_iter().map(parked) {
                // One handled earlier whose hold ran out: left as it is.
                if handled.contains(&p.message_id) || later.contains(&p.message_id) {
                    continue;
                }
                let sent_ms = p.sent_at.as_deref().and_then(|t| t.parse::<u128>().ok());
                if sent_ms.is_some_and(|t| t > started_ms) {
                    later.insert(p.message_id.clone());
                    kept.push(p.receipt.clone());
                    continue;
                }
                fresh.push(p);
            }
            let page = fresh;
            stale_pages = if page.is_empty() { stale_pages + 1 } else { 0 };
            for (i, p) in page.iter().enumerate() {
                // A third of the hold gone: the rest of the page is hidden for a whole hold
                // again (one call), so no other reader can take a message this one will send.
                if held_since.elapsed() > self.hold / 3 {
                    self.extend_hold(&page[i..]).await;
                    held_since = Instant::now();
                }
                handled.insert(p.message_id.clone());
                match send(p.clone()).await {
                    Ok(()) => match self
                        .sqs
                        .delete_message()
                        .queue_url(&self.url)
                        .receipt_handle(&p.receipt)
                        .send()
                        .await
                    {
                        Ok(_) => redriven += 1,
                        Err(e) => failed.push((
                            p.message_id.clone(),
                            format!(
                                "sent, but still parked (DeleteMessage failed: {}): a later redrive sends it again",
                                e.code().unwrap_or("unreachable")
                            ),
                        )),
                    },
                    Err(error) => {
                        kept.push(p.receipt.clone());
                        failed.push((p.message_id.clone(), crate::error_chain::chain(&error)));
                    }
                }
            }
        }
        // What could not be sent is visible again only now, so this run does not take it twice.
        for receipt in &kept {
            self.set_visibility(receipt, 0).await;
        }
        Ok((redriven, failed))
    }
}

/// EventBridge's reason for an event it could not deliver to a rule's target, from the
/// attributes it sends to the target's dead-letter queue.
fn undelivered(m: &Message) -> Option<String> {
    let attribute = |name: &str| {
        m.message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
    };
    let code = attribute("ERROR_CODE")?;
    Some(format!(
        "eventbridge could not deliver it to {}: {code}: {}",
        attribute("TARGET_ARN").unwrap_or("the rule's target"),
        attribute("ERROR_MESSAGE").unwrap_or_default()
    ))
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
        .or_else(|| undelivered(&m))
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
