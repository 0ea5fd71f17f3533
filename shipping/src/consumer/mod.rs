//! The SQS consumer: long polling, at most `concurrency` messages applied at once, each one's
//! visibility extended while it is being applied, deleted only after its transaction committed.
//!
//! A failed message comes back after a backoff that grows with its failures. Only *definite*
//! failures of the event itself (poison: it cannot be parsed, applied or stored) count against
//! the queue's `maxReceiveCount`; a transient one (DynamoDB or S3 unavailable, throttling, a hot
//! aggregate) never does, however long it lasts, nor does a refusal of the service itself (S3
//! denying its read of a claim check: held, with `/healthz` saying so). SQS counts every receive, so a failed message
//! is sent again as a new message carrying its own counts (`shipping.poison-failures`,
//! `shipping.failures`) and the received copy deleted: the redrive policy never sees an outage.
//! On its last allowed poison failure a message is moved to the DLQ with its reason as a
//! message attribute. The redrive policy stays the safety net for a consumer that dies mid-message.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::{self, ApplyError};
use crate::incoming::{self, IncomingError};
use crate::metrics::Metrics;
use crate::store::Store;
use eventing::retry::{transient_cause, while_transient, Backoff};

mod deletes;
mod failed;
mod handle;

use deletes::*;
use failed::*;
use handle::*;

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub queue: String,
    pub concurrency: usize,
    /// Long-poll wait, 0–20 s.
    pub wait_seconds: i32,
    /// Visibility timeout each message gets, and keeps getting while it is being applied.
    pub visibility_timeout: Duration,
    /// Base delay before a failed message is delivered again (doubles per receive).
    pub retry_delay: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("queue `{queue}` is not usable ({code}); has `shipping setup` run?")]
    Queue {
        queue: String,
        code: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot apply events: {0}")]
    Store(#[source] crate::store::StoreError),
}

struct Context {
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    store: Store,
    metrics: Arc<Metrics>,
    cfg: ConsumerConfig,
    queue_url: String,
    /// From the queue's redrive policy: where an unusable message goes on its last receive.
    dead_letter: Option<(String, u32)>,
}

pub async fn run(
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    store: Store,
    metrics: Arc<Metrics>,
    cfg: ConsumerConfig,
    cancel: CancellationToken,
) -> Result<(), ConsumerError> {
    let queue_url = queue_url(&sqs, &cfg.queue).await?;
    let dead_letter = redrive_target(&sqs, &cfg.queue, &queue_url).await?;
    match &dead_letter {
        Some((_, max)) => tracing::info!(queue = %cfg.queue, max_receive_count = max, "consuming"),
        None => {
            tracing::warn!(queue = %cfg.queue, "consuming a queue without a redrive policy: poison messages are retried forever")
        }
    }
    let ctx = Arc::new(Context {
        sqs,
        s3,
        store,
        metrics,
        queue_url,
        dead_letter,
        cfg,
    });
    let permits = Arc::new(Semaphore::new(ctx.cfg.concurrency.max(1)));
    // One receive brings at most ten messages in one round trip: at AWS' ~10 ms a call, one
    // receiver alone caps the consumer near 1,000 messages/s. One receiver per ten permits.
    let receivers = ctx.cfg.concurrency.div_ceil(10).max(1);
    // Deletes go out in batches of up to ten, as many at once as there are receivers (the same
    // cap applies); a message's permit is free once its receipt is handed over, not after one
    // more round trip.
    let (deletes, pending_deletes) = tokio::sync::mpsc::channel::<String>(ctx.cfg.concurrency.max(1) * 4);
    let deleter = tokio::spawn(delete_batches(ctx.clone(), pending_deletes, receivers));
    let stop = cancel.child_token();
    if let Some((dlq, _)) = &ctx.dead_letter {
        tokio::spawn(watch_dead_letters(ctx.clone(), dlq.clone(), stop.clone()));
    }
    let mut loops: JoinSet<Result<(), ConsumerError>> = JoinSet::new();
    for _ in 0..receivers {
        loops.spawn(receive_loop(
            ctx.clone(),
            permits.clone(),
            deletes.clone(),
            stop.clone(),
        ));
    }
    drop(deletes);
    let mut outcome = Ok(());
    while let Some(done) = loops.join_next().await {
        if let Ok(Err(err)) = done {
            if outcome.is_ok() {
                outcome = Err(err);
            }
            // One fatal error stops every receiver.
            stop.cancel();
        }
    }
    // Every receiver has dropped its sender: the deleter sends what is left, then ends.
    if tokio::time::timeout(ctx.cfg.visibility_timeout, deleter)
        .await
        .is_err()
    {
        tracing::warn!("deletes still pending at the stop deadline: those messages will be redelivered (and absorbed by the inbox)");
    }
    outcome
}

/// One receiver: takes permits, receives up to that many messages, applies each in its task.
async fn receive_loop(
    ctx: Arc<Context>,
    permits: Arc<Semaphore>,
    deletes: tokio::sync::mpsc::Sender<String>,
    cancel: CancellationToken,
) -> Result<(), ConsumerError> {
    // `/healthz`: receives that keep failing (SQS unreachable, a queue gone) make it unhealthy.
    let alive = ctx
        .metrics
        .health
        .beacon("shipping: the consumer received nothing");
    let mut tasks: JoinSet<Result<(), ConsumerError>> = JoinSet::new();
    let mut backoff = Backoff::receive();
    // Each receiver's share of the permits (so every receiver can always get its batch).
    let concurrency = ctx.cfg.concurrency.max(1);
    let share = concurrency / concurrency.div_ceil(10);
    let batch = u32::try_from(share.clamp(1, 10)).unwrap_or(10);
    let outcome = loop {
        if let Some(fatal) = reap(&mut tasks) {
            break Err(fatal);
        }
        // Ten permits (or all there are) before a receive: when every slot is busy, a receiver
        // waits for ten to free up and takes ten messages in one call, instead of one call per
        // message that finishes (SQS bills per request).
        let mut held = tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ok(()),
            Some(Ok(Err(fatal))) = tasks.join_next(), if !tasks.is_empty() => break Err(fatal),
            p = permits.clone().acquire_many_owned(batch) => match p { Ok(p) => p, Err(_) => break Ok(()) },
        };
        let receive = ctx
            .sqs
            .receive_message()
            .queue_url(&ctx.queue_url)
            .max_number_of_messages(batch as i32)
            .wait_time_seconds(ctx.cfg.wait_seconds)
            .visibility_timeout(secs(ctx.cfg.visibility_timeout))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names(failures::POISON)
            .message_attribute_names(failures::ALL)
            .send();
        let received = tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            r = receive => r,
        };
        let messages = match received {
            Ok(out) => {
                backoff.reset();
                alive.beat();
                out.messages.unwrap_or_default()
            }
            Err(err) => match transient_cause(&err) {
                Some(cause) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(queue = %ctx.cfg.queue, cause, delay_ms = delay.as_millis() as u64, "receive failed, retrying");
                    // A shutdown during an outage need not wait out the backoff.
                    tokio::select! {
                        _ = cancel.cancelled() => break Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
                None => {
                    break Err(ConsumerError::Queue {
                        queue: ctx.cfg.queue.clone(),
                        code: err.code().unwrap_or("unknown").to_owned(),
                        source: Box::new(err),
                    })
                }
            },
        };
        // One permit per message; the rest go back with `held` when it drops.
        for message in messages {
            let Some(permit) = held.split(1) else {
                break;
            };
            let ctx = ctx.clone();
            let deletes = deletes.clone();
            tasks.spawn(async move {
                let _permit = permit;
                handle(&ctx, message, &deletes).await
            });
        }
    };
    // Messages already taken are applied to the end: stopping halfway would only make them
    // wait out their visibility timeout. Bounded, though: during an outage a message can retry
    // for long, and a stop must not wait for the outage to end (it is redelivered, and the inbox
    // absorbs whatever did commit).
    let drained = async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(err)) = done {
                tracing::error!(error = %err, "message task failed while stopping");
            }
        }
    };
    if tokio::time::timeout(ctx.cfg.visibility_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            left = tasks.len(),
            "messages still being applied at the stop deadline: left to be redelivered"
        );
        tasks.abort_all();
    }
    outcome
}

/// The first fatal error among the finished message tasks, if any.
fn reap(tasks: &mut JoinSet<Result<(), ConsumerError>>) -> Option<ConsumerError> {
    while let Some(done) = tasks.try_join_next() {
        if let Ok(Err(fatal)) = done {
            return Some(fatal);
        }
    }
    None
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX).min(43_200)
}

async fn queue_url(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<String, ConsumerError> {
    let backoff = Backoff::call();
    let out = while_transient("GetQueueUrl", backoff, || {
        sqs.get_queue_url().queue_name(queue).send()
    })
    .await
    .map_err(|err| queue_error(queue, err))?;
    Ok(out.queue_url.unwrap_or_default())
}

fn queue_error<E>(queue: &str, err: E) -> ConsumerError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    ConsumerError::Queue {
        queue: queue.into(),
        code: err.code().unwrap_or("unknown").to_owned(),
        source: Box::new(err),
    }
}

/// The DLQ's URL and `maxReceiveCount` from the queue's redrive policy, when it has one.
async fn redrive_target(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    url: &str,
) -> Result<Option<(String, u32)>, ConsumerError> {
    let backoff = Backoff::call();
    let attrs = while_transient("GetQueueAttributes", backoff, || {
        sqs.get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
    })
    .await
    .map_err(|err| queue_error(queue, err))?;
    let Some(policy) = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
    else {
        return Ok(None);
    };
    let max = match &policy["maxReceiveCount"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let (Some(arn), Some(max)) = (policy["deadLetterTargetArn"].as_str(), max) else {
        return Ok(None);
    };
    let dlq_name = arn.rsplit(':').next().unwrap_or_default();
    let dlq_url = queue_url(sqs, dlq_name).await?;
    Ok(Some((dlq_url, u32::try_from(max).unwrap_or(u32::MAX))))
}

#[cfg(test)]
mod tests {
    use super::Failures;
    use std::time::Duration;

    #[test]
    fn only_poison_failures_count_against_the_dead_letter_budget() {
        let mut f = Failures::default();
        for _ in 0..50 {
            f = f.transient();
        }
        assert_eq!(f, Failures { poison: 0, all: 50 });
        f = f.poison();
        assert_eq!(f, Failures { poison: 1, all: 51 });
    }

    #[test]
    fn the_backoff_doubles_and_stops_at_a_minute() {
        let base = Duration::from_secs(1);
        assert_eq!(Failures { poison: 0, all: 1 }.delay(base), base);
        assert_eq!(Failures { poison: 0, all: 3 }.delay(base), Duration::from_secs(4));
        assert_eq!(
            Failures { poison: 0, all: 40 }.delay(base),
            Duration::from_secs(60)
        );
        assert_eq!(
            Failures { poison: 0, all: 40 }.delay(Duration::ZERO),
            Duration::ZERO
        );
    }
}
