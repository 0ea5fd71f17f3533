//! One shard's worker: read records in order, publish their events, park what cannot be
//! published, and only then move the shard's checkpoint (conditional on still owning the lease).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::ShardIteratorType;
use tokio_util::sync::CancellationToken;

use super::claims::Unresolved;
use super::envelope::{self, Decision, Event};
use super::lease::{Outcome, SHARD_END};
use super::pace::{self, ReadPace};
use super::{now_ms, RelayContext, RelayError};
use eventing::deadletter::Origin;
use eventing::retry::{while_transient, Backoff};

/// Records asked for per GetRecords (Kinesis allows up to 10,000; a page of this many is
/// "full": more are probably waiting).
const PAGE_LIMIT: i32 = 1000;

/// How a worker stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum WorkerEnd {
    /// The shard is closed and drained (after a reshard); its children may start.
    ShardEnd,
    /// Another relay owns the lease now.
    LeaseLost,
    /// Shutdown or rebalancing asked it to stop.
    Stopped,
}

pub struct ShardWorker {
    pub ctx: Arc<RelayContext>,
    pub shard_id: String,
    pub checkpoint: Option<String>,
    pub stop: CancellationToken,
}

/// A worker that ends (stopped, its lease lost, the relay stopping) leaves no problem behind
/// on `/healthz`: whoever reads the shard next sets its own.
impl Drop for ShardWorker {
    fn drop(&mut self) {
        self.refused(None);
    }
}

impl ShardWorker {
    pub async fn run(mut self) -> Result<WorkerEnd, RelayError> {
        // Drained by another relay between our lease snapshot and our acquire (it released the
        // lease at shutdown): nothing to read. Kinesis refuses `SHARD_END` as a position — a
        // subscription retried it for ever, holding the lease and a worker slot.
        if self.checkpoint.as_deref() == Some(SHARD_END) {
            tracing::info!(shard = %self.shard_id, "shard already drained by another relay");
            return Ok(WorkerEnd::ShardEnd);
        }
        if let Some(consumer) = self.ctx.consumer.clone() {
            return self.run_subscribed(consumer).await;
        }
        let mut backoff = Backoff::call();
        let mut held = Backoff::call();
        let Some(mut iterator) = self.iterator().await? else {
            return self.finish_closed_shard().await;
        };
        let shard_label = vec![("shard".to_owned(), self.shard_id.clone())];
        let alive = self.beacon();
        let mut pace = ReadPace::new(self.ctx.max_reads_per_second, self.ctx.poll_interval);
        let mut at_tip = false;
        loop {
            // The beacon beats only once a page was read and settled (below): a shard that
            // cannot be read or published for the stall bound shows on /healthz.
            if let Some(at) = pace.next_read(at_tip) {
                self.sleep_until(at).await;
            }
            if self.stop.is_cancelled() {
                return Ok(WorkerEnd::Stopped);
            }
            pace.started(std::time::Instant::now());
            let page = match self.ctx.reader.get_records(&iterator, PAGE_LIMIT).await {
                Ok(page) => {
                    backoff.reset();
                    page
                }
                Err(err) if err.code() == Some("ExpiredIteratorException") => {
                    match self.iterator().await? {
                        Some(it) => iterator = it,
                        None => return self.finish_closed_shard().await,
                    }
                    continue;
                }
                Err(err) => {
                    if err.code() == Some("ResourceNotFoundException") {
                        return Err(RelayError::StreamMissing {
                            stream: self.ctx.stream.clone(),
                        });
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(shard = %self.shard_id, error = %err, code = err.code().unwrap_or(""), delay_ms = delay.as_millis() as u64, "getrecords failed, retrying");
                    self.sleep(delay).await;
                    continue;
                }
            };
            let records = &page.records[..];
            at_tip = pace::at_tip(records.len(), PAGE_LIMIT as usize, page.millis_behind_latest);
            pace.returned(records.iter().map(|r| r.data().as_ref().len()).sum());
            if let Some(behind) = page.millis_behind_latest {
                self.ctx
                    .metrics
                    .relay_millis_behind
                    .get_or_create(&shard_label)
                    .set(behind);
            }
            if let Some(last) = records.last() {
                if !self.settle(records, &mut held).await? {
                    if self.stop.is_cancelled() {
                        return Ok(WorkerEnd::Stopped);
                    }
                    // Read the page again from the checkpoint, with whatever came after it.
                    match self.iterator().await? {
                        Some(it) => iterator = it,
                        None => return self.finish_closed_shard().await,
                    }
                    continue;
                }
                // Counted once settled: a held page is read again.
                self.ctx.metrics.relay_records_read.inc_by(records.len() as u64);
                let sequence = last.sequence_number().to_owned();
                if let Outcome::Lost = self.checkpoint(&sequence).await? {
                    return Ok(WorkerEnd::LeaseLost);
                }
                self.checkpoint = Some(sequence);
            }
            alive.beat();
            match page.next_shard_iterator {
                Some(next) => iterator = next,
                None => return self.finish_closed_shard().await,
            }
        }
    }

    /// `/healthz`: a page that cannot be read, published or checkpointed for the stall bound
    /// makes the relay unhealthy (dropped with the worker: a stopped worker is not stuck).
    pub(super) fn beacon(&self) -> Arc<eventing::health::Beacon> {
        self.ctx
            .metrics
            .health
            .beacon(format!("relay: shard {} worker made no progress", self.shard_id))
    }

    /// A closed shard, drained: say so, so its children can start.
    pub(super) async fn finish_closed_shard(&self) -> Result<WorkerEnd, RelayError> {
        match self.checkpoint(SHARD_END).await? {
            Outcome::Done(()) => Ok(WorkerEnd::ShardEnd),
            Outcome::Lost => Ok(WorkerEnd::LeaseLost),
        }
    }

    async fn iterator(&self) -> Result<Option<String>, RelayError> {
        let backoff = Backoff::call();
        let what = format!("GetShardIterator {}", self.shard_id);
        let out = while_transient(&what, backoff, || {
            let req = self
                .ctx
                .kinesis
                .get_shard_iterator()
                .stream_name(&self.ctx.stream)
                .shard_id(&self.shard_id);
            match &self.checkpoint {
                Some(seq) => req
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(seq),
                None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            }
            .send()
        })
        .await
        .map_err(|err| match err.code() {
            Some("ResourceNotFoundException") => RelayError::StreamMissing {
                stream: self.ctx.stream.clone(),
            },
            _ => RelayError::Kinesis(Box::new(err)),
        })?;
        // No iterator: the shard is closed and nothing is left after the checkpoint.
        Ok(out.shard_iterator().map(str::to_owned))
    }

    /// [`Self::handle`], or — for a page to hold ([`RelayError::holds_the_page`]) — a pause that
    /// grows with each try, and `false`: the caller reads the page again.
    pub(super) async fn settle(
        &self,
        records: &[aws_sdk_kinesis::types::Record],
        held: &mut Backoff,
    ) -> Result<bool, RelayError> {
        match self.handle(records).await {
            Ok(()) => {
                held.reset();
                self.refused(None);
                Ok(true)
            }
            Err(
                err @ (RelayError::ClaimCheckDenied(_)
                | RelayError::Publish(eventing::eventbridge::PublishError::RouteBusMissing { .. })),
            ) => {
                let delay = held.next_delay();
                let why = eventing::error_chain::chain(&err);
                tracing::warn!(shard = %self.shard_id, error = %why, delay_ms = delay.as_millis() as u64, "holding the page until what it needs is there");
                self.refused(Some(format!(
                    "relay: shard {} holds its page: {why}",
                    self.shard_id
                )));
                self.sleep(delay).await;
                Ok(false)
            }
            Err(err) if err.holds_the_page() => {
                let delay = held.next_delay();
                tracing::warn!(shard = %self.shard_id, error = %err, delay_ms = delay.as_millis() as u64, "holding the page until eventbridge accepts an event");
                self.sleep(delay).await;
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Sets (or clears) the `/healthz` problem of a page held because S3 refuses the relay or
    /// a route's bus is missing.
    fn refused(&self, reason: Option<String>) {
        let name = format!("page-held/{}", self.shard_id);
        self.ctx.metrics.health.problem(&name, reason);
    }

    /// Publishes the page's events and parks its dead letters; returns when all are settled.
    /// Records that are not events are parked after the publish, so a page held for another
    /// try ([`RelayError::holds_the_page`]) has parked nothing yet.
    pub(super) async fn handle(&self, records: &[aws_sdk_kinesis::types::Record]) -> Result<(), RelayError> {
        let mut events: Vec<Event> = Vec::new();
        // The record each event came from, by the event's position (a refusal names it).
        let mut sources = Vec::new();
        let mut malformed = Vec::new();
        // Counted once the page settles: a held page is read again, its skips with it.
        let mut skipped = 0;
        let mut dropped: Vec<String> = Vec::new();
        for record in records {
            let raw = record.data().as_ref();
            let decision = match envelope::decide(raw, &self.ctx.envelope) {
                // Decided on the whole record; a claim check in that one is not followed.
                Decision::Claimed(check) => match super::claims::resolve(&self.ctx.s3, &check).await {
                    Ok(whole) => envelope::decide(&whole, &self.ctx.envelope),
                    Err(Unresolved::Park(reason)) => Decision::DeadLetter(reason),
                    Err(Unresolved::Denied(err)) => return Err(RelayError::ClaimCheckDenied(err)),
                },
                decision => decision,
            };
            match decision {
                Decision::Publish(event) => {
                    tracing::trace!(event_id = %event.event_id, shard = %self.shard_id, "event");
                    sources.push(record);
                    events.push(event);
                }
                Decision::Skip => skipped += 1,
                Decision::Dropped(route) => dropped.push(route),
                // The slim record is parked: a redrive reads the claim check again.
                Decision::DeadLetter(reason) => malformed.push((reason, record)),
                Decision::Claimed(check) => malformed.push((
                    format!(
                        "claim check s3://{}/{} holds another claim check",
                        check.bucket, check.key
                    ),
                    record,
                )),
            }
        }
        let refused = if events.is_empty() {
            Vec::new()
        } else {
            self.ctx.publisher.publish(events).await?
        };
        self.ctx.metrics.relay_records_skipped.inc_by(skipped);
        for route in dropped {
            self.ctx
                .metrics
                .relay_events_dropped
                .get_or_create(&vec![("route".to_owned(), route)])
                .inc();
        }
        for (reason, record) in malformed {
            self.park(&reason, record, "malformed").await?;
        }
        for refused in refused {
            // The stream record it came from, as for any dead letter: a redrive replays it
            // through the relay, where a raised limit or a fixed rule lets it through.
            match sources.get(refused.position) {
                Some(record) => self.park(&refused.reason, record, "refused").await?,
                None => {
                    tracing::error!(event_id = %refused.event.event_id, "refused event without its record; parking its envelope");
                    let origin = Origin {
                        stream: &self.ctx.stream,
                        shard_id: &self.shard_id,
                        sequence_number: "",
                        partition_key: "",
                    };
                    self.park_raw(
                        &refused.reason,
                        refused.event.detail().as_bytes(),
                        &origin,
                        "refused",
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Parks a stream record in the dead-letter queue with where it was in the stream.
    async fn park(
        &self,
        reason: &str,
        record: &aws_sdk_kinesis::types::Record,
        kind: &str,
    ) -> Result<(), RelayError> {
        let origin = Origin {
            stream: &self.ctx.stream,
            shard_id: &self.shard_id,
            sequence_number: record.sequence_number(),
            partition_key: record.partition_key().unwrap_or_default(),
        };
        self.park_raw(reason, record.data().as_ref(), &origin, kind).await
    }

    /// Parks bytes in the dead-letter queue, retrying until SQS takes it: losing it is not an option.
    async fn park_raw(
        &self,
        reason: &str,
        raw: &[u8],
        origin: &Origin<'_>,
        kind: &str,
    ) -> Result<(), RelayError> {
        let sequence = origin.sequence_number;
        let backoff = Backoff::call();
        let what = format!("park record {sequence} of {}", self.shard_id);
        while_transient(&what, backoff, || self.ctx.dlq.park(reason, raw, origin)).await?;
        tracing::warn!(shard = %self.shard_id, sequence, reason, "record parked in the dead-letter queue");
        self.ctx
            .metrics
            .dead_letters
            .get_or_create(&vec![("kind".to_owned(), kind.to_owned())])
            .inc();
        Ok(())
    }

    pub(super) async fn checkpoint(&self, sequence: &str) -> Result<Outcome<()>, RelayError> {
        let backoff = Backoff::checkpoint();
        let what = format!("checkpoint {}", self.shard_id);
        let outcome = while_transient(&what, backoff, || {
            let expires = now_ms() + self.ctx.lease_duration.as_millis() as i64;
            self.ctx.leases.checkpoint(&self.shard_id, sequence, expires)
        })
        .await?;
        Ok(outcome)
    }

    async fn sleep_until(&self, at: std::time::Instant) {
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => {}
            () = self.stop.cancelled() => {}
        }
    }

    pub(super) async fn sleep(&self, delay: Duration) {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.stop.cancelled() => {}
        }
    }
}
