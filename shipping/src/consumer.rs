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

/// Applies one message while keeping it invisible to other consumers.
async fn handle(
    ctx: &Context,
    message: Message,
    deletes: &tokio::sync::mpsc::Sender<String>,
) -> Result<(), ConsumerError> {
    let Some(receipt) = message.receipt_handle().map(str::to_owned) else {
        return Ok(());
    };
    let receives: u32 = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let body = message.body().unwrap_or_default();
    let before = Failures::of(&message);
    ctx.metrics.messages_in_flight.inc();
    let result = tokio::select! {
        r = apply_body(ctx, body) => r,
        never = keep_invisible(ctx, &receipt) => match never {},
    };
    ctx.metrics.messages_in_flight.dec();
    match result {
        Ok((event_id, applied)) => {
            ctx.metrics.applied(applied.label());
            tracing::debug!(event_id, outcome = applied.label(), "applied");
            // The deleter only ends after every receiver (and so every sender) has.
            if let Err(unsent) = deletes.send(receipt).await {
                delete(ctx, &ctx.queue_url, &unsent.0).await;
            }
            Ok(())
        }
        Err(Failure::Unusable(reason)) => {
            ctx.metrics.failed("unusable");
            let after = before.poison();
            match &ctx.dead_letter {
                Some((dlq, max)) if after.poison >= *max => {
                    park(ctx, dlq, &message, &reason, after.poison).await;
                }
                _ => {
                    tracing::warn!(
                        message_id = message.message_id().unwrap_or(""),
                        receives,
                        poison_failures = after.poison,
                        reason,
                        "event cannot be applied; it will be retried, then dead-lettered"
                    );
                    again_later(ctx, &message, &receipt, after).await;
                }
            }
            Ok(())
        }
        Err(Failure::Held(reason)) => {
            ctx.metrics.failed("refused");
            let after = before.transient();
            tracing::warn!(
                message_id = message.message_id().unwrap_or(""),
                receives,
                failures = after.all,
                reason,
                "the service is refused what the event needs; held and retried (this never dead-letters it)"
            );
            again_later(ctx, &message, &receipt, after).await;
            Ok(())
        }
        Err(Failure::Transient(reason)) => {
            ctx.metrics.failed("transient");
            let after = before.transient();
            tracing::warn!(
                message_id = message.message_id().unwrap_or(""),
                receives,
                failures = after.all,
                reason,
                "applying failed for a passing reason; retrying later (this never dead-letters it)"
            );
            again_later(ctx, &message, &receipt, after).await;
            Ok(())
        }
        Err(Failure::Fatal(err)) => {
            // Leave the message: it reappears after its visibility timeout, for a fixed deployment.
            Err(ConsumerError::Store(err))
        }
    }
}

enum Failure {
    /// The event can never be applied: counts against the redrive budget, then parked.
    Unusable(String),
    /// A passing failure (an outage, throttling, contention): retried, never parked.
    Transient(String),
    /// A refusal of the service itself (its permissions), not of the event: retried, never
    /// parked, and `/healthz` says so until it ends.
    Held(String),
    Fatal(crate::store::StoreError),
}

/// The `/healthz` problem set while S3 refuses the service's reads of claim checks.
const CLAIM_CHECKS_REFUSED: &str = "claim-checks-refused";

async fn apply_body(ctx: &Context, body: &str) -> Result<(String, apply::Applied), Failure> {
    let event = incoming::parse(body).map_err(|e| Failure::Unusable(e.to_string()))?;
    let span = tracing::info_span!("event", event_id = %event.event_id, detail_type = %event.detail_type);
    async move {
        let claim_checked = event.claim_check.is_some();
        let mut event = incoming::resolve(&ctx.s3, event).await.map_err(|e| match e {
            IncomingError::Unusable(r) => Failure::Unusable(r),
            transient @ IncomingError::Transient { .. } => Failure::Transient(transient.to_string()),
            refused @ IncomingError::Refused { .. } => {
                ctx.metrics.health.problem(
                    CLAIM_CHECKS_REFUSED,
                    Some(format!("shipping: {refused}; events held, none parked")),
                );
                Failure::Held(refused.to_string())
            }
        })?;
        if claim_checked {
            ctx.metrics.health.problem(CLAIM_CHECKS_REFUSED, None);
        }
        // The trace goes on through this transaction: what it writes to the outbox carries
        // this span, so the shipment event's publication is its child.
        let mut trace = telemetry::start(
            "shipping apply",
            telemetry::Kind::Consumer,
            event.traceparent.as_deref(),
            vec![
                telemetry::Attribute::new("messaging.message.id", event.event_id.clone()),
                telemetry::Attribute::new("event.detail_type", event.detail_type.clone()),
            ],
        );
        if let Some(span) = &trace {
            event.traceparent = Some(span.traceparent().to_owned());
        }
        let result = apply::apply(&ctx.store, &event).await;
        if let Some(mut span) = trace.take() {
            match &result {
                Ok(applied) => span.set_attribute(telemetry::Attribute::new(
                    "shipping.applied",
                    format!("{applied:?}"),
                )),
                Err(err) => span.fail(err.to_string()),
            }
            span.end();
        }
        match result {
            Ok(applied) => Ok((event.event_id, applied)),
            Err(unusable @ (ApplyError::Unusable(_) | ApplyError::ShipmentPayload { .. })) => {
                Err(Failure::Unusable(format!(
                    "event {}: {}",
                    event.event_id,
                    eventing::error_chain::chain(&unusable)
                )))
            }
            Err(ApplyError::Store(err)) if err.is_transient() => Err(Failure::Transient(err.to_string())),
            Err(ApplyError::Store(err)) if err.parks_the_event() => {
                Err(Failure::Unusable(format!("event {}: {err}", event.event_id)))
            }
            Err(ApplyError::Store(err)) => Err(Failure::Fatal(err)),
            Err(contended @ ApplyError::Contended { .. }) => Err(Failure::Transient(contended.to_string())),
        }
    }
    .instrument(span)
    .await
}

/// Extends the message's visibility until dropped (it never returns on its own).
async fn keep_invisible(ctx: &Context, receipt: &str) -> std::convert::Infallible {
    let every = (ctx.cfg.visibility_timeout / 2).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(err) = ctx
            .sqs
            .change_message_visibility()
            .queue_url(&ctx.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(ctx.cfg.visibility_timeout))
            .send()
            .await
        {
            tracing::warn!(error = %err, "cannot extend a message's visibility; it may be delivered twice (the inbox absorbs that)");
        }
    }
}

/// Brings a failed message back after its backoff. With a redrive policy the message is sent
/// again as a new one carrying its failure counts, and the received copy deleted, so that SQS's
/// receive count (which the redrive policy reads) only ever reaches the limit through `park`.
/// Should the send fail, the message is merely made visible later (a receive is then spent).
async fn again_later(ctx: &Context, message: &Message, receipt: &str, after: Failures) {
    let delay = after.delay(ctx.cfg.retry_delay);
    if ctx.dead_letter.is_none() {
        return retry_later(ctx, receipt, delay).await;
    }
    let attr = |v: u32| {
        MessageAttributeValue::builder()
            .data_type("Number")
            .string_value(v.to_string())
            .build()
    };
    let (Ok(poison), Ok(all)) = (attr(after.poison), attr(after.all)) else {
        return retry_later(ctx, receipt, delay).await;
    };
    let sent = ctx
        .sqs
        .send_message()
        .queue_url(&ctx.queue_url)
        .message_body(message.body().unwrap_or_default())
        .delay_seconds(secs(delay).min(900))
        .message_attributes(failures::POISON, poison)
        .message_attributes(failures::ALL, all)
        .send()
        .await;
    match sent {
        Ok(_) => delete(ctx, &ctx.queue_url, receipt).await,
        Err(err) => {
            tracing::warn!(error = %err, "cannot send a failed message again; it returns after its backoff, spending one receive");
            retry_later(ctx, receipt, delay).await;
        }
    }
}

/// How often a message has failed, as it carries it across re-sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Failures {
    /// Definite failures of the event itself: these count against `maxReceiveCount`.
    poison: u32,
    /// Every failure, transient ones included: these set the backoff.
    all: u32,
}

/// The longest a failed message waits before it is tried again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

mod failures {
    pub const POISON: &str = "shipping.poison-failures";
    pub const ALL: &str = "shipping.failures";
}

impl Failures {
    fn of(message: &Message) -> Self {
        let read = |name: &str| {
            message
                .message_attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.string_value())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Self {
            poison: read(failures::POISON),
            all: read(failures::ALL),
        }
    }

    fn poison(self) -> Self {
        Self {
            poison: self.poison.saturating_add(1),
            all: self.all.saturating_add(1),
        }
    }

    fn transient(self) -> Self {
        Self {
            poison: self.poison,
            all: self.all.saturating_add(1),
        }
    }

    /// `base` doubled per earlier failure, at most a minute: after a long outage a message is
    /// tried again within a minute of its end, not a quarter of an hour.
    fn delay(self, base: Duration) -> Duration {
        let factor = 1u32 << self.all.saturating_sub(1).min(10);
        base.saturating_mul(factor).min(MAX_RETRY_DELAY)
    }
}

async fn retry_later(ctx: &Context, receipt: &str, delay: Duration) {
    if let Err(err) = ctx
        .sqs
        .change_message_visibility()
        .queue_url(&ctx.queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(secs(delay))
        .send()
        .await
    {
        tracing::warn!(error = %err, "cannot reschedule a failed message; it returns after its visibility timeout");
    }
}

/// Moves an unusable message to the DLQ with its reason, then deletes it from the queue.
async fn park(ctx: &Context, dlq: &str, message: &Message, reason: &str, receives: u32) {
    let attr = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
    };
    let (Ok(reason_attr), Ok(receives_attr), Ok(queue_attr)) =
        (attr(reason), attr(&receives.to_string()), attr(&ctx.cfg.queue))
    else {
        return;
    };
    let sent = ctx
        .sqs
        .send_message()
        .queue_url(dlq)
        .message_body(message.body().unwrap_or_default())
        .message_attributes("reason", reason_attr)
        .message_attributes("receive_count", receives_attr)
        .message_attributes("source_queue", queue_attr)
        .send()
        .await;
    match sent {
        Ok(_) => {
            ctx.metrics.events_dead_lettered.inc();
            tracing::error!(
                message_id = message.message_id().unwrap_or(""),
                receives,
                reason,
                "event dead-lettered"
            );
            if let Some(receipt) = message.receipt_handle() {
                delete(ctx, &ctx.queue_url, receipt).await;
            }
        }
        // The redrive policy moves it on the next receive anyway.
        Err(err) => tracing::warn!(error = %err, "cannot park an unusable message; the redrive policy will"),
    }
}

/// How long a delete waits for others to share its DeleteMessageBatch.
const DELETE_LINGER: Duration = Duration::from_millis(50);

/// How often the dead-letter queue's depth is read for `/metrics`.
const DEAD_LETTER_POLL: Duration = Duration::from_secs(10);

/// Keeps `shipping_dead_letter_queue_messages` at the dead-letter queue's depth. Events land
/// there from two places — this consumer's poison messages, and EventBridge when the rule
/// cannot deliver to the queue — and only the queue itself counts the second: a counter in
/// this process never sees them. Parked messages being read (`dlq list`) count as well.
async fn watch_dead_letters(ctx: Arc<Context>, dlq: String, stop: CancellationToken) {
    let names = [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ];
    loop {
        let read = ctx
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await;
        match read {
            Ok(out) => {
                let depth: i64 = names
                    .iter()
                    .filter_map(|n| out.attributes().and_then(|a| a.get(n)))
                    .filter_map(|v| v.parse::<i64>().ok())
                    .sum();
                ctx.metrics.dead_letter_queue_messages.set(depth);
            }
            // The gauge keeps its last value; the next read tries again.
            Err(err) => tracing::debug!(error = %err, "reading the dead-letter queue's depth failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(DEAD_LETTER_POLL) => {}
        }
    }
}

/// Deletes applied messages, up to ten per DeleteMessageBatch and up to `at_once` calls at a
/// time, until every sender is gone. One call at a time held every applied message's slot behind
/// it once the channel filled: the consumer was capped near ten messages per round trip.
async fn delete_batches(
    ctx: Arc<Context>,
    mut receipts: tokio::sync::mpsc::Receiver<String>,
    at_once: usize,
) {
    let mut calls = JoinSet::new();
    let mut batch: Vec<String> = Vec::with_capacity(10);
    while receipts.recv_many(&mut batch, 10).await > 0 {
        // A short wait fills the batch when messages finish one by one (a slow store): the
        // messages stay invisible meanwhile, and one call instead of ten is what SQS bills.
        let deadline = tokio::time::Instant::now() + DELETE_LINGER;
        while batch.len() < 10 {
            let room = 10 - batch.len();
            match tokio::time::timeout_at(deadline, receipts.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        while calls.try_join_next().is_some() {}
        if calls.len() >= at_once.max(1) {
            calls.join_next().await;
        }
        let ctx = ctx.clone();
        let full = std::mem::replace(&mut batch, Vec::with_capacity(10));
        calls.spawn(async move { delete_batch(&ctx, &full).await });
    }
    while calls.join_next().await.is_some() {}
}

async fn delete_batch(ctx: &Context, receipts: &[String]) {
    if let [one] = receipts {
        return delete(ctx, &ctx.queue_url, one).await;
    }
    let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(r)
                .build()
                .ok()
        })
        .collect();
    let mut backoff = Backoff::delete();
    loop {
        match ctx
            .sqs
            .delete_message_batch()
            .queue_url(&ctx.queue_url)
            .set_entries(Some(entries.clone()))
            .send()
            .await
        {
            Ok(out) => {
                // An entry that failed alone gets its own attempts.
                for failed in out.failed() {
                    if let Some(r) = failed.id().parse::<usize>().ok().and_then(|i| receipts.get(i)) {
                        delete(ctx, &ctx.queue_url, r).await;
                    }
                }
                return;
            }
            Err(err) if transient_cause(&err).is_some() && backoff.attempts() < 5 => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, messages = receipts.len(), "cannot delete applied messages; their redelivery will be a no-op");
                return;
            }
        }
    }
}

async fn delete(ctx: &Context, queue_url: &str, receipt: &str) {
    let mut backoff = Backoff::delete();
    loop {
        match ctx
            .sqs
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => return,
            Err(err) if transient_cause(&err).is_some() && backoff.attempts() < 5 => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            // Redelivered later, then absorbed by the inbox as a duplicate.
            Err(err) => {
                tracing::warn!(error = %err, "cannot delete an applied message; its redelivery will be a no-op");
                return;
            }
        }
    }
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
