//! Enhanced fan-out (`--consumer-name`): Kinesis pushes each shard's records to this relay's
//! registered consumer over a SubscribeToShard event stream, with its own 2 MB/s per shard and
//! no GetRecords polling (what the Kinesis Client Library does by default). A record reaches
//! the relay as soon as Kinesis has it instead of at the next poll.
//!
//! Leases and checkpoints work as with polling: a worker subscribes from its checkpoint,
//! publishes each pushed batch, then checkpoints its last record. A subscription ends after
//! five minutes (or on any error) and the worker subscribes again from its checkpoint: a batch
//! pushed but not checkpointed comes again (duplicates, never gaps).

use std::time::Duration;

use tokio::time::Instant;

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};

use super::lease::Outcome;
use super::shard::{ShardWorker, WorkerEnd};
use super::RelayError;
use eventing::retry::{while_transient, Backoff};

/// The relay's registered consumer.
#[derive(Clone, Debug)]
pub struct Consumer {
    pub name: String,
    pub arn: String,
}

/// The least time between two checkpoints of a subscribed shard.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

async fn sleep_until_some(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The consumer's ARN, registering it on the stream if it is not yet, once it is ACTIVE.
pub async fn ensure_consumer(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    name: &str,
) -> Result<String, RelayError> {
    let missing = |_| RelayError::StreamMissing {
        stream: stream.to_owned(),
    };
    let summary = while_transient("DescribeStreamSummary", Backoff::call(), || {
        kinesis.describe_stream_summary().stream_name(stream).send()
    })
    .await
    .map_err(|err| match err.code() {
        Some("ResourceNotFoundException") => missing(()),
        _ => RelayError::Kinesis(Box::new(err)),
    })?;
    let stream_arn = summary
        .stream_description_summary()
        .map(|s| s.stream_arn().to_owned())
        .ok_or_else(|| missing(()))?;
    let mut registered = false;
    loop {
        let described = kinesis
            .describe_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .send()
            .await;
        match described {
            Ok(out) => {
                if let Some(consumer) = out.consumer_description() {
                    if consumer.consumer_status() == &ConsumerStatus::Active {
                        tracing::info!(
                            consumer = name,
                            arn = consumer.consumer_arn(),
                            "enhanced fan-out consumer active"
                        );
                        return Ok(consumer.consumer_arn().to_owned());
                    }
                    tracing::info!(consumer = name, status = %consumer.consumer_status(), "waiting for the fan-out consumer to become active");
                }
            }
            // Register only what is not there (moto registers a second copy of a name).
            Err(err) if err.code() == Some("ResourceNotFoundException") && !registered => {
                match kinesis
                    .register_stream_consumer()
                    .stream_arn(&stream_arn)
                    .consumer_name(name)
                    .send()
                    .await
                {
                    Ok(_) => {
                        tracing::info!(consumer = name, "registered an enhanced fan-out consumer");
                        registered = true;
                    }
                    // Another relay registered it meanwhile.
                    Err(err) if err.code() == Some("ResourceInUseException") => registered = true,
                    Err(err) if err.code() == Some("LimitExceededException") => {}
                    Err(err) => return Err(RelayError::Kinesis(Box::new(err))),
                }
                continue;
            }
            Err(err) if err.code() == Some("ResourceNotFoundException") => {}
            Err(err) if err.code() == Some("AccessDeniedException") => {
                return Err(RelayError::Kinesis(Box::new(err)))
            }
            Err(err) => {
                tracing::warn!(error = %DisplayErrorContext(&err), "DescribeStreamConsumer failed, retrying");
            }
        }
        // Registration takes seconds on Kinesis; the API allows 20 describes per second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl ShardWorker {
    /// Reads the shard through subscriptions until it is closed and drained, the lease is
    /// lost, or the worker is stopped.
    pub(super) async fn run_subscribed(mut self, mut consumer: Consumer) -> Result<WorkerEnd, RelayError> {
        let shard_label = vec![("shard".to_owned(), self.shard_id.clone())];
        let alive = self.beacon();
        let mut backoff = Backoff::call();
        let mut held = Backoff::call();
        loop {
            // The beacon beats on each event received and settled (below), not on each
            // subscribe: a shard that cannot be subscribed to or published for the stall bound
            // shows on /healthz.
            if self.stop.is_cancelled() {
                return Ok(WorkerEnd::Stopped);
            }
            let position = match &self.checkpoint {
                Some(seq) => StartingPosition::builder()
                    .r#type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(seq),
                None => StartingPosition::builder().r#type(ShardIteratorType::TrimHorizon),
            }
            .build()
            .map_err(|err| RelayError::Kinesis(Box::new(err)))?;
            let subscribed = tokio::select! {
                out = self
                    .ctx
                    .kinesis
                    .subscribe_to_shard()
                    .consumer_arn(&consumer.arn)
                    .shard_id(&self.shard_id)
                    .starting_position(position)
                    .send() => out,
                () = self.stop.cancelled() => return Ok(WorkerEnd::Stopped),
            };
            let mut out = match subscribed {
                Ok(out) => out,
                Err(err) => {
                    if err.code() == Some("ResourceNotFoundException") {
                        // The consumer was deregistered (by an operator, a stack update) or the
                        // stream is gone: register it again, or stop with the stream's error.
                        tracing::warn!(shard = %self.shard_id, consumer = %consumer.name, "the fan-out consumer is gone; registering it again");
                        let arn = tokio::select! {
                            arn = ensure_consumer(&self.ctx.kinesis, &self.ctx.stream, &consumer.name) => arn?,
                            () = self.stop.cancelled() => return Ok(WorkerEnd::Stopped),
                        };
                        if arn == consumer.arn {
                            // The stream and the consumer are there: the shard is not.
                            return Err(RelayError::StreamMissing {
                                stream: self.ctx.stream.clone(),
                            });
                        }
                        consumer.arn = arn;
                        continue;
                    }
                    // ResourceInUse: the previous subscription is still closing (Kinesis allows
                    // one per shard and consumer, and one call per second).
                    let delay = backoff.next_delay();
                    tracing::warn!(shard = %self.shard_id, error = %DisplayErrorContext(&err), delay_ms = delay.as_millis() as u64, "SubscribeToShard failed, retrying");
                    self.sleep(delay).await;
                    continue;
                }
            };
            self.ctx.metrics.relay_subscriptions.inc();
            // Pushes come as often as records are put (per PutRecords, not per 200 ms poll): the
            // checkpoint follows at most every CHECKPOINT_EVERY, not after each push, so the lease
            // table sees the same write rate as with polling. It always covers only what
            // EventBridge accepted.
            let mut pending: Option<(String, Instant)> = None;
            loop {
                let due = pending.as_ref().map(|(_, due)| *due);
                let next = tokio::select! {
                    next = out.event_stream.recv() => Some(next),
                    () = sleep_until_some(due) => None,
                    () = self.stop.cancelled() => {
                        return Ok(if self.flush(&mut pending).await? {
                            WorkerEnd::Stopped
                        } else {
                            WorkerEnd::LeaseLost
                        });
                    }
                };
                let Some(next) = next else {
                    if !self.flush(&mut pending).await? {
                        return Ok(WorkerEnd::LeaseLost);
                    }
                    continue;
                };
                let event = match next {
                    Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => event,
                    Ok(Some(_)) => continue,
                    // The subscription's five minutes are up: subscribe again from the checkpoint.
                    Ok(None) => break,
                    Err(err) => {
                        tracing::warn!(shard = %self.shard_id, error = %DisplayErrorContext(&err), "subscription failed, subscribing again");
                        self.sleep(backoff.next_delay()).await;
                        break;
                    }
                };
                backoff.reset();
                self.ctx
                    .metrics
                    .relay_millis_behind
                    .get_or_create(&shard_label)
                    .set(event.millis_behind_latest());
                let records = event.records();
                if let Some(last) = records.last() {
                    if !self.settle(records, &mut held).await? {
                        // Subscribe again from what was published: these records come again.
                        break;
                    }
                    self.ctx.metrics.relay_records_read.inc_by(records.len() as u64);
                    let due = pending
                        .as_ref()
                        .map_or_else(|| Instant::now() + CHECKPOINT_EVERY, |(_, due)| *due);
                    pending = Some((last.sequence_number().to_owned(), due));
                }
                alive.beat();
                // A closed shard's last event names its children and has nothing to continue from.
                if !event.child_shards().is_empty() && event.continuation_sequence_number().is_empty() {
                    if !self.flush(&mut pending).await? {
                        return Ok(WorkerEnd::LeaseLost);
                    }
                    return self.finish_closed_shard().await;
                }
            }
            // Subscribe again from what was published, not from the last written checkpoint.
            if !self.flush(&mut pending).await? {
                return Ok(WorkerEnd::LeaseLost);
            }
        }
    }

    /// Writes the pending checkpoint, if any (conditional on the lease): `false` when the
    /// lease is lost.
    async fn flush(&mut self, pending: &mut Option<(String, Instant)>) -> Result<bool, RelayError> {
        let Some((sequence, _)) = pending.take() else {
            return Ok(true);
        };
        match self.checkpoint(&sequence).await? {
            Outcome::Lost => Ok(false),
            Outcome::Done(()) => {
                self.checkpoint = Some(sequence);
                Ok(true)
            }
        }
    }
}
