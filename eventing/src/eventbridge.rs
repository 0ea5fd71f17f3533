//! Publishing domain events to an EventBridge bus with PutEvents.
//!
//! A call takes at most 10 entries within the request size limit. Failed entries are matched
//! to their events by position in *that* request and retried with backoff and jitter; an event
//! larger than the entry limit goes through the claim-check store; an entry EventBridge rejects
//! for its content is handed back as a dead letter, never retried forever. An entry that can
//! never be accepted (a detail type beyond EventBridge's limits, an entry still too large after
//! the claim check) is handed back before any request is made: one such event must not fail the
//! whole PutEvents call, and with it every retry of the same page.
//!
//! A call EventBridge refuses *as a whole* for its content (`ValidationException`: a limit these
//! checks do not know of) is split in halves until the event behind it is alone in its call;
//! that event is handed back with EventBridge's reason and the rest are published. Only once
//! EventBridge has accepted something, though: a refusal of every call from the start may be the
//! configuration's (a bus name EventBridge cannot take), and parking each event for it would
//! drain a healthy stream into the dead-letter queue — the caller gets
//! `PublishError::RefusedFromTheStart` and tries again later (the relay holds that page).
//!
//! Several calls of one `publish` are in flight at once (`calls_at_once`): one call at a time
//! takes a round trip per ten events (~20 ms at AWS), which caps a caller near 500 events/s
//! whatever its CPU. EventBridge keeps no order among entries anyway; the caller's checkpoint
//! still waits for every call of the batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::json;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::claim_check::{ClaimCheckError, ClaimCheckStore};
use crate::event::Event;
use crate::put_events::{Entry, PutEventsClient};

/// The largest PutEvents entry EventBridge accepts: 1 MB since 2026-01-29 (256 KiB before). SQS
/// messages were raised to the same size, so a rule delivers such an event to a queue whole.
pub const MAX_ENTRY_BYTES: u64 = 1_048_576;
use crate::retry::{while_transient, Backoff};

type Labels = Vec<(String, String)>;

/// The publisher's counters; each service registers them where it serves its metrics.
#[derive(Clone, Default)]
pub struct PublisherMetrics {
    pub events_published: Counter,
    pub claim_checks: Counter,
    pub put_events_retries: Family<Labels, Counter>,
}

impl PublisherMetrics {
    /// Registers the counters as `eventbridge_*` in `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "eventbridge_events_published",
            "Events EventBridge accepted",
            self.events_published.clone(),
        );
        registry.register(
            "eventbridge_claim_checks",
            "Events sent as claim checks (payload in S3)",
            self.claim_checks.clone(),
        );
        registry.register(
            "eventbridge_put_events_retries",
            "PutEvents retries by cause",
            self.put_events_retries.clone(),
        );
        // Known label values start at 0: an empty family is left out of the exposition.
        for cause in crate::retry::CAUSES {
            let _ = self
                .put_events_retries
                .get_or_create(&vec![("cause".to_owned(), cause.to_owned())]);
        }
    }
}

/// PutEvents calls of one `publish` in flight at once, unless set otherwise.
pub const DEFAULT_CALLS_AT_ONCE: usize = 8;

/// Most entries one PutEvents call takes.
pub const MAX_ENTRIES_PER_CALL: usize = 10;
/// EventBridge's limit on `DetailType`, in characters.
pub const MAX_DETAIL_TYPE_CHARS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("event bus `{bus}` does not exist; run `bridge setup` first")]
    BusMissing { bus: String },
    /// A bus a route names (not the publisher's own) does not exist: the page waits for it.
    #[error("event bus `{bus}` (named by a route) does not exist: create it, or change the route")]
    RouteBusMissing { bus: String },
    #[error("eventbridge refused PutEvents and retrying cannot help ({code})")]
    Rejected {
        code: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "eventbridge refused PutEvents as a whole ({code}: {message}) with event {event_id} alone in the \
         call, and has accepted no event since start: the event or the configuration (the bus name, \
         the region) — nothing is parked until eventbridge accepts an event"
    )]
    RefusedFromTheStart {
        code: String,
        message: String,
        event_id: String,
    },
    #[error(transparent)]
    ClaimCheck(#[from] ClaimCheckError),
}

/// The code of a call refused as a whole for the request's content.
const CALL_REFUSED_FOR_CONTENT: &str = "ValidationException";

#[derive(Clone)]
pub struct Publisher {
    client: PutEventsClient,
    bus: String,
    source: String,
    /// The largest entry EventBridge accepts (see [`MAX_ENTRY_BYTES`]).
    max_entry_bytes: usize,
    claim_checks: ClaimCheckStore,
    metrics: PublisherMetrics,
    calls_at_once: usize,
    /// Whether EventBridge has accepted any entry of this publisher (shared by its clones).
    accepted: Arc<AtomicBool>,
    /// Each event's `data` is checked against its contract before it is sent.
    contracts: Option<Arc<crate::contracts::Contracts>>,
}

/// How the calls of a `publish` settled: events refused for their content, entry by entry, and
/// events refused as a whole call while alone in it (parked only once something was accepted).
#[derive(Default)]
struct Settled {
    refused: Vec<Refused>,
    /// With EventBridge's message.
    alone_refused: Vec<(Prepared, String)>,
}

impl Settled {
    fn entries_refused(refused: Vec<Refused>) -> Self {
        Self {
            refused,
            alone_refused: Vec::new(),
        }
    }

    fn merge(&mut self, other: Settled) {
        self.refused.extend(other.refused);
        self.alone_refused.extend(other.alone_refused);
    }
}

/// An event EventBridge would not take, with the reason.
#[derive(Debug)]
pub struct Refused {
    /// Where the event stood in the list given to [`Publisher::publish`] (the relay finds the
    /// stream record it came from by it).
    pub position: usize,
    pub event: Event,
    pub reason: String,
}

/// An event ready for an entry, and where it stood in the list given to [`Publisher::publish`].
struct Prepared {
    position: usize,
    event: Event,
    /// The detail sent instead of the event's own: its claim check.
    claimed: Option<String>,
}

impl Prepared {
    fn detail(&self) -> &str {
        self.claimed.as_deref().unwrap_or(self.event.detail())
    }

    fn refused(self, reason: String) -> Refused {
        Refused {
            position: self.position,
            event: self.event,
            reason,
        }
    }
}

impl Publisher {
    pub fn new(
        client: PutEventsClient,
        bus: &str,
        source: &str,
        max_entry_bytes: usize,
        claim_checks: ClaimCheckStore,
        metrics: PublisherMetrics,
    ) -> Self {
        Self {
            client,
            bus: bus.into(),
            source: source.into(),
            max_entry_bytes,
            claim_checks,
            metrics,
            calls_at_once: DEFAULT_CALLS_AT_ONCE,
            accepted: Arc::new(AtomicBool::new(false)),
            contracts: None,
        }
    }

    /// Checks each event's `data` against its `(Source, DetailType)` contract before sending
    /// it: one that breaks it is refused with the schema's errors (the caller parks it).
    #[must_use]
    pub fn with_contracts(mut self, contracts: Option<Arc<crate::contracts::Contracts>>) -> Self {
        self.contracts = contracts;
        self
    }

    /// Why the event's data breaks its contract, if it does.
    fn breaks_contract(&self, event: &Event) -> Option<String> {
        let contracts = self.contracts.as_ref()?;
        contracts
            .violation(event.source(&self.source), &event.detail_type, event.data())
            .map(|why| format!("event {} ({}): {why}", event.event_id, event.detail_type))
    }

    /// At most `n` PutEvents calls of one `publish` in flight (1: one after the other).
    #[must_use]
    pub fn with_calls_at_once(mut self, n: usize) -> Self {
        self.calls_at_once = n.max(1);
        self
    }

    /// Publishes every event; returns once each was accepted, or refused for its content.
    pub async fn publish(&self, events: Vec<Event>) -> Result<Vec<Refused>, PublishError> {
        let mut prepared = Vec::with_capacity(events.len());
        let mut refused = Vec::new();
        for (position, event) in events.into_iter().enumerate() {
            if let Some(reason) = self
                .breaks_contract(&event)
                .or_else(|| self.unacceptable_type(&event))
            {
                refused.push(Refused {
                    position,
                    event,
                    reason,
                });
                continue;
            }
            let (event, claimed) = self.prepare(event).await?;
            let item = Prepared {
                position,
                event,
                claimed,
            };
            // AWS: an entry must be *less than* the limit.
            let size = self.entry_size(&item.event, item.detail());
            if size >= self.max_entry_bytes {
                let reason = format!(
                    "event {} is {size} bytes even without its payload (claim-checked), over EventBridge's \
                     entry limit of {} bytes: its metadata is too large",
                    item.event.event_id, self.max_entry_bytes
                );
                refused.push(item.refused(reason));
                continue;
            }
            prepared.push(item);
        }
        let mut calls: Vec<Vec<Prepared>> = Vec::new();
        let mut batch: Vec<Prepared> = Vec::new();
        let mut batch_bytes = 0;
        for item in prepared {
            let size = self.entry_size(&item.event, item.detail());
            if !batch.is_empty()
                && (batch.len() == MAX_ENTRIES_PER_CALL || batch_bytes + size > self.max_entry_bytes)
            {
                calls.push(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
            batch_bytes += size;
            batch.push(item);
        }
        if !batch.is_empty() {
            calls.push(batch);
        }
        // The first fatal error ends the rest (dropped mid-call): the caller publishes the whole
        // batch again, and duplicates are what at-least-once allows.
        let mut done = futures_util::stream::iter(calls.into_iter().map(|call| self.put_all(call)))
            .buffer_unordered(self.calls_at_once);
        let mut settled = Settled::default();
        while let Some(call) = done.next().await {
            settled.merge(call?);
        }
        refused.extend(settled.refused);
        // Decided once every call is settled, so the order the calls came back in does not matter.
        for (item, message) in settled.alone_refused {
            let code = CALL_REFUSED_FOR_CONTENT;
            let event_id = &item.event.event_id;
            if !self.accepted.load(Ordering::SeqCst) {
                return Err(PublishError::RefusedFromTheStart {
                    code: code.to_owned(),
                    message,
                    event_id: event_id.clone(),
                });
            }
            tracing::warn!(event_id = %event_id, code, message, "eventbridge refused a call holding only this event");
            let reason = format!(
                "eventbridge refused a PutEvents call holding only event {event_id} as a whole: {code}: {message}"
            );
            refused.push(item.refused(reason));
        }
        Ok(refused)
    }

    /// The event, with a claim check to send instead of its detail when that is too large for
    /// an entry.
    async fn prepare(&self, event: Event) -> Result<(Event, Option<String>), PublishError> {
        let detail = event.detail();
        // AWS: an entry must be *less than* the limit.
        if self.entry_size(&event, detail) < self.max_entry_bytes {
            return Ok((event, None));
        }
        let backoff = Backoff::call();
        let what = format!("claim-check store of event {}", event.event_id);
        let claim = while_transient(&what, backoff, || {
            self.claim_checks.store(&event.event_id, event.data())
        })
        .await?;
        self.metrics.claim_checks.inc();
        tracing::info!(event_id = %event.event_id, bytes = detail.len(), "event above the entry limit: sent as a claim check");
        let mut metadata = event.metadata_value();
        metadata["claim_check"] = claim;
        let detail = json!({"metadata": metadata, "data": null}).to_string();
        Ok((event, Some(detail)))
    }

    /// Why EventBridge can never take this event's detail type, if it cannot.
    fn unacceptable_type(&self, event: &Event) -> Option<String> {
        let chars = event.detail_type.chars().count();
        let control = event.detail_type.chars().any(char::is_control);
        (chars > MAX_DETAIL_TYPE_CHARS || control).then(|| {
            format!(
                "event {}: detail type of {chars} characters{} is beyond EventBridge's limit \
                 ({MAX_DETAIL_TYPE_CHARS} characters, no control characters)",
                event.event_id,
                if control { " with control characters" } else { "" },
            )
        })
    }

    /// EventBridge's entry size: source, detail type and detail, in bytes.
    fn entry_size(&self, event: &Event, detail: &str) -> usize {
        event.source(&self.source).len() + event.detail_type.len() + detail.len()
    }

    async fn put_all(&self, mut pending: Vec<Prepared>) -> Result<Settled, PublishError> {
        let mut backoff = Backoff::data_path();
        let mut refused = Vec::new();
        let started = std::time::SystemTime::now();
        loop {
            let entries: Vec<Entry<'_>> = pending
                .iter()
                .map(|item| Entry {
                    event_bus_name: item.event.bus(&self.bus),
                    source: item.event.source(&self.source),
                    detail_type: &item.event.detail_type,
                    detail: item.detail(),
                    // X-Ray links the event to the same trace as the spans exported here.
                    trace_header: traceparent(&item.event).and_then(telemetry::xray_header),
                })
                .collect();
            let answer = self.client.put_events(&entries).await;
            drop(entries);
            let cause = match answer {
                Ok(out) => {
                    let results = &out.entries;
                    if results.iter().any(|r| r.error_code.is_none()) {
                        self.accepted.store(true, Ordering::SeqCst);
                    }
                    let complete = results.len() == pending.len();
                    if complete
                        && out.failed_entry_count == 0
                        && results.iter().all(|r| r.error_code.is_none())
                    {
                        self.metrics.events_published.inc_by(pending.len() as u64);
                        for item in &pending {
                            self.traced(&item.event, started);
                        }
                        return Ok(Settled::entries_refused(refused));
                    }
                    if results.len() != pending.len() {
                        "malformed_response"
                    } else {
                        let mut retry = Vec::new();
                        let mut throttled = false;
                        for (item, result) in pending.into_iter().zip(results) {
                            match result.error_code.as_deref() {
                                None => {
                                    self.metrics.events_published.inc();
                                    self.traced(&item.event, started);
                                }
                                Some(code) if !content_refused(code) => {
                                    throttled |= code.contains("Throttl");
                                    retry.push(item);
                                }
                                Some(code) => refused.push(item.refused(format!(
                                    "eventbridge refused the entry: {code}: {}",
                                    result.error_message.as_deref().unwrap_or("")
                                ))),
                            }
                        }
                        pending = retry;
                        if pending.is_empty() {
                            return Ok(Settled::entries_refused(refused));
                        }
                        if throttled {
                            "throttled"
                        } else {
                            "partial_failure"
                        }
                    }
                }
                Err(err) => match err.transient_cause() {
                    Some(cause) => cause,
                    None if err.code() == Some(CALL_REFUSED_FOR_CONTENT) => {
                        let mut settled = Settled::entries_refused(refused);
                        if pending.len() == 1 {
                            let message = err.message().unwrap_or_default().to_owned();
                            if let Some(item) = pending.pop() {
                                settled.alone_refused.push((item, message));
                            }
                            return Ok(settled);
                        }
                        // Halves, one after the other: a rare path, and one event is behind it.
                        self.metrics
                            .put_events_retries
                            .get_or_create(&vec![("cause".to_owned(), "call_refused_split".to_owned())])
                            .inc();
                        let back = pending.split_off(pending.len() / 2);
                        settled.merge(Box::pin(self.put_all(pending)).await?);
                        settled.merge(Box::pin(self.put_all(back)).await?);
                        return Ok(settled);
                    }
                    None if err.code() == Some("ResourceNotFoundException") => {
                        // A route may name another bus: every bus of the call is a suspect.
                        let mut buses: Vec<&str> = pending.iter().map(|i| i.event.bus(&self.bus)).collect();
                        buses.sort_unstable();
                        buses.dedup();
                        let bus = buses.join("` or `");
                        if buses.iter().any(|b| *b != self.bus) {
                            return Err(PublishError::RouteBusMissing { bus });
                        }
                        return Err(PublishError::BusMissing { bus });
                    }
                    None => {
                        return Err(PublishError::Rejected {
                            code: err.code().unwrap_or("no code").to_owned(),
                            source: Box::new(err),
                        })
                    }
                },
            };
            self.metrics
                .put_events_retries
                .get_or_create(&vec![("cause".to_owned(), cause.to_owned())])
                .inc();
            let delay = backoff.next_delay();
            tracing::warn!(bus = %self.bus, cause, events = pending.len(), attempt = backoff.attempts(), delay_ms = delay.as_millis() as u64, "putevents retry");
            tokio::time::sleep(delay).await;
        }
    }
}

/// The event's `metadata.traceparent`, if it has one.
fn traceparent(event: &Event) -> Option<&str> {
    event.traceparent.as_deref()
}

impl Publisher {
    /// A span for a published event, child of its `traceparent`, from the first PutEvents
    /// attempt to the one that took it.
    fn traced(&self, event: &Event, started: std::time::SystemTime) {
        if let Some(parent) = traceparent(event).filter(|_| telemetry::enabled()) {
            telemetry::record(
                "eventbridge put_events",
                telemetry::Kind::Producer,
                parent,
                started,
                std::time::SystemTime::now(),
                vec![
                    telemetry::Attribute::new("messaging.system", "aws_eventbridge"),
                    telemetry::Attribute::new("messaging.destination.name", self.bus.clone()),
                    telemetry::Attribute::new("messaging.message.id", event.event_id.clone()),
                    telemetry::Attribute::new("event.detail_type", event.detail_type.clone()),
                ],
            );
        }
    }
}

/// Entry-level codes that mean the event's *content* is refused: parked, never retried.
/// Everything else (throttling, internal errors, and permission or account errors, which an
/// operator fixes) is retried, so a policy change never drains good events into the DLQ.
fn content_refused(code: &str) -> bool {
    matches!(
        code,
        "InvalidArgument" | "MalformedDetail" | "ValidationException" | "InvalidParameterValue"
    )
}

#[cfg(test)]
mod tests {
    use super::content_refused;

    #[test]
    fn only_content_errors_are_parked_permission_errors_are_retried() {
        assert!(content_refused("MalformedDetail"));
        assert!(content_refused("InvalidArgument"));
        assert!(!content_refused("AccessDeniedException"));
        assert!(!content_refused("NotAuthorizedForSourceException"));
        assert!(!content_refused("ThrottlingException"));
    }
}
