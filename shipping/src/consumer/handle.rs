//! One message: parsed, applied in its inbox transaction, kept invisible meanwhile, and then
//! deleted, retried later or parked.

use super::*;

/// Applies one message while keeping it invisible to other consumers.
pub(super) async fn handle(
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

pub(super) enum Failure {
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
pub(super) const CLAIM_CHECKS_REFUSED: &str = "claim-checks-refused";

pub(super) async fn apply_body(ctx: &Context, body: &str) -> Result<(String, apply::Applied), Failure> {
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
pub(super) async fn keep_invisible(ctx: &Context, receipt: &str) -> std::convert::Infallible {
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
