//! A failed message: sent again later with its counts (so SQS's receive count never sees an
//! outage), or parked in the DLQ on its last allowed poison failure.

use super::*;

/// Brings a failed message back after its backoff. With a redrive policy the message is sent
/// again as a new one carrying its failure counts, and the received copy deleted, so that SQS's
/// receive count (which the redrive policy reads) only ever reaches the limit through `park`.
/// Should the send fail, the message is merely made visible later (a receive is then spent).
pub(super) async fn again_later(ctx: &Context, message: &Message, receipt: &str, after: Failures) {
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
pub(super) struct Failures {
    /// Definite failures of the event itself: these count against `maxReceiveCount`.
    pub(super) poison: u32,
    /// Every failure, transient ones included: these set the backoff.
    pub(super) all: u32,
}

/// The longest a failed message waits before it is tried again.
pub(super) const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

pub(super) mod failures {
    pub const POISON: &str = "shipping.poison-failures";
    pub const ALL: &str = "shipping.failures";
}

impl Failures {
    pub(super) fn of(message: &Message) -> Self {
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

    pub(super) fn poison(self) -> Self {
        Self {
            poison: self.poison.saturating_add(1),
            all: self.all.saturating_add(1),
        }
    }

    pub(super) fn transient(self) -> Self {
        Self {
            poison: self.poison,
            all: self.all.saturating_add(1),
        }
    }

    /// `base` doubled per earlier failure, at most a minute: after a long outage a message is
    /// tried again within a minute of its end, not a quarter of an hour.
    pub(super) fn delay(self, base: Duration) -> Duration {
        let factor = 1u32 << self.all.saturating_sub(1).min(10);
        base.saturating_mul(factor).min(MAX_RETRY_DELAY)
    }
}

pub(super) async fn retry_later(ctx: &Context, receipt: &str, delay: Duration) {
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
pub(super) async fn park(ctx: &Context, dlq: &str, message: &Message, reason: &str, receives: u32) {
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
