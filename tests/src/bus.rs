//! The microservice end of the bus, as a test sees it: an EventBridge rule routing to an SQS
//! queue, and a reader that drains the queue.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_eventbridge::types::Target;
use serde_json::Value;

pub struct Subscription {
    pub queue_url: String,
    sqs: aws_sdk_sqs::Client,
    /// Every event body received so far.
    pub received: Vec<Value>,
    /// SQS message ids received: a message whose delete was lost comes back, and must not count
    /// as EventBridge delivering its event twice.
    seen: std::collections::HashSet<String>,
}

/// Creates `queue` and a rule routing every event the monolith's outbox publishes (source
/// `legacy.monolith` on the `legacy-monolith` bus) to it: what most tests watch.
pub async fn monolith_events(sdk: &aws_config::SdkConfig, queue: &str) -> anyhow::Result<Subscription> {
    subscribe(
        sdk,
        "legacy-monolith",
        queue,
        &serde_json::json!({"source": ["legacy.monolith"]}),
    )
    .await
}

/// Creates `queue` and a rule on `bus` that routes events matching `pattern` to it.
pub async fn subscribe(
    sdk: &aws_config::SdkConfig,
    bus: &str,
    queue: &str,
    pattern: &Value,
) -> anyhow::Result<Subscription> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(queue)
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let rule = format!("{queue}-rule");
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(bus)
        .event_pattern(pattern.to_string())
        .send()
        .await?;
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(bus)
        .targets(Target::builder().id("queue").arn(arn).build()?)
        .send()
        .await?;
    Ok(Subscription {
        queue_url,
        sqs,
        received: Vec::new(),
        seen: std::collections::HashSet::new(),
    })
}

impl Subscription {
    /// Receives (and deletes) whatever is waiting; returns how many arrived.
    pub async fn poll(&mut self) -> anyhow::Result<usize> {
        let mut got = 0;
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await?;
            let messages = out.messages();
            if messages.is_empty() {
                return Ok(got);
            }
            let mut deletes = Vec::new();
            for (i, m) in messages.iter().enumerate() {
                let again = m.message_id().is_some_and(|id| !self.seen.insert(id.to_owned()));
                if !again {
                    self.received
                        .push(serde_json::from_str(m.body().unwrap_or("null"))?);
                    got += 1;
                }
                if let Some(handle) = m.receipt_handle() {
                    deletes.push(
                        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(handle)
                            .build()?,
                    );
                }
            }
            // A delete the emulator fails under load: the messages come back after their
            // visibility timeout and are recognised by id then.
            if let Err(e) = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(deletes))
                .send()
                .await
            {
                eprintln!("deleting received messages failed (they will come back): {e}");
            }
        }
    }

    /// The received events by `detail.metadata.event_id`, with how often each came.
    pub fn by_event_id(&self) -> HashMap<String, (usize, Value)> {
        let mut out: HashMap<String, (usize, Value)> = HashMap::new();
        for e in &self.received {
            if let Some(id) = e["detail"]["metadata"]["event_id"].as_str() {
                out.entry(id.to_owned()).or_insert((0, e.clone())).0 += 1;
            }
        }
        out
    }

    /// Polls until an event arrived for every id in `ids`; `context` explains a timeout.
    pub async fn until_all(
        &mut self,
        ids: &std::collections::HashSet<String>,
        timeout: Duration,
        context: impl Fn() -> String,
    ) -> anyhow::Result<()> {
        self.until("every outbox row as an event", timeout, |s| {
            let got = s.by_event_id();
            ids.iter().all(|id| got.contains_key(id))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", context()))
    }

    /// Polls until `done` holds or `timeout` passes.
    pub async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        loop {
            // A read the emulator fails (a 500 under load) is read again; the deadline still holds.
            if let Err(err) = self.poll().await {
                eprintln!("reading the bus queue failed, reading again: {err:#}");
            }
            if done(self) {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what} ({} events so far)",
                self.received.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
