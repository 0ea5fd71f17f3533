//! `bridge relay`: Kinesis → EventBridge, the blog's Lambda as a long-running, horizontally
//! scalable process.
//!
//! A coordinator keeps this relay's fair share of shard leases (free or expired ones first,
//! then one at a time from the busiest other relay) and runs one worker per leased shard. A
//! child shard starts only once its parents are drained (`SHARD_END`), so a reshard keeps each
//! key's order. Checkpoints move only after EventBridge accepted every event before them:
//! a crash replays from the last checkpoint (duplicates, never gaps). The lease round itself
//! is in `round`; this module runs the rounds, the workers, and the shutdown.

pub mod claims;
pub mod envelope;
pub mod fan_out;
pub mod get_records;
pub mod lease;
pub mod pace;
pub mod plan;
mod round;
pub mod routing;
mod shard;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use envelope::EnvelopeConfig;
use eventing::deadletter::{DeadLetterError, DeadLetterQueue};
use eventing::eventbridge::{PublishError, Publisher};
use lease::{LeaseError, LeaseTable};
use shard::{ShardWorker, WorkerEnd};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("kinesis stream `{stream}` does not exist; run `bridge setup` first")]
    StreamMissing { stream: String },
    #[error("kinesis call failed")]
    Kinesis(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("{what} took longer than {} ms, a third of the lease", after.as_millis())]
    TimedOut { what: String, after: Duration },
    /// Held, not fatal: see [`RelayError::holds_the_page`].
    #[error("s3 refuses the relay's read of a claim check: check s3:GetObject and s3:ListBucket on --claim-check-bucket (and kms:Decrypt on its key)")]
    ClaimCheckDenied(#[source] claims::ReadError),
}

impl RelayError {
    /// Transient trouble the coordinator rides out; everything else stops the relay.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Lease(err) => err.is_retryable(),
            Self::Kinesis(_) | Self::TimedOut { .. } => true,
            Self::StreamMissing { .. }
            | Self::Publish(_)
            | Self::DeadLetter(_)
            | Self::ClaimCheckDenied(_) => false,
        }
    }

    /// EventBridge refused a call holding one event alone before it accepted anything: the
    /// event or the configuration, which only a later acceptance tells apart. The worker holds
    /// its page (nothing parked, no checkpoint) and tries it again, instead of stopping the
    /// relay: one event must not stop it, and any event accepted meanwhile — on another shard,
    /// or after this one on the same — lets the next try park this one.
    ///
    /// S3 refusing the relay's read of a claim check is held the same way: the refusal is the
    /// relay's (its role, a key policy), never the record's, and stopping only restarts the
    /// relay onto the same record. So is a route's bus that does not exist: stopping would
    /// stop every route; holding stops only this shard's page until the bus is there.
    pub fn holds_the_page(&self) -> bool {
        matches!(
            self,
            Self::Publish(PublishError::RefusedFromTheStart { .. } | PublishError::RouteBusMissing { .. })
                | Self::ClaimCheckDenied(_)
        )
    }
}

/// What every shard worker shares.
pub struct RelayContext {
    pub kinesis: aws_sdk_kinesis::Client,
    /// GetRecords without the SDK's per-call work: every polled record comes through it.
    pub reader: get_records::GetRecordsClient,
    pub stream: String,
    pub publisher: Publisher,
    /// Reads back records capture sent by claim check.
    pub s3: aws_sdk_s3::Client,
    pub dlq: DeadLetterQueue,
    pub leases: LeaseTable,
    pub envelope: EnvelopeConfig,
    pub metrics: Arc<Metrics>,
    pub lease_duration: Duration,
    /// At a shard's tip, from one GetRecords' start to the next.
    pub poll_interval: Duration,
    /// GetRecords calls per second and shard, at most (Kinesis allows 5, shared by every
    /// polling consumer of the stream).
    pub max_reads_per_second: f64,
    /// Enhanced fan-out: the registered consumer whose subscriptions replace polling.
    pub consumer: Option<fan_out::Consumer>,
    pub shutdown_timeout: Duration,
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<WorkerEnd, RelayError>>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs the relay until `shutdown` or a fatal error.
pub async fn run(ctx: Arc<RelayContext>, shutdown: CancellationToken) -> Result<(), RelayError> {
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut tick = tokio::time::interval(ctx.lease_duration / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(stream = %ctx.stream, worker = %ctx.leases.worker_id, "relay started");
    let rounds = ctx.metrics.health.beacon("relay: no lease round got through");
    // Beats on every round in which no take of a lease failed or hung: one that keeps failing
    // (a lease item the relay cannot write) shows, even while the relay reads other shards.
    let takes = ctx
        .metrics
        .health
        .beacon("relay: taking a shard's lease keeps failing");
    let mut twin_warned = false;
    let mut troubled = HashSet::new();
    let result = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            _ = tick.tick() => {
                if let Err(err) = reap(&mut running).await {
                    break Err(err);
                }
                // A shutdown does not wait for the round: a lease it may have just taken, with
                // no worker yet, expires on its own.
                let saw = tokio::select! {
                    saw = round::balance(&ctx, &mut running, &mut troubled) => saw,
                    () = shutdown.cancelled() => break Ok(()),
                };
                match saw {
                    Ok(round::Round { unleased, twin_held, takes_failed, renewals_failed }) => {
                        if !renewals_failed {
                            rounds.beat();
                        }
                        if takes_failed == 0 {
                            takes.beat();
                        }
                        if twin_held > 0 && !twin_warned {
                            tracing::warn!(
                                worker = %ctx.leases.worker_id,
                                shards = twin_held,
                                "another process holds shards under this relay's worker id; it keeps them \
                                 and this one leaves them alone: give each relay its own --worker-id"
                            );
                        }
                        twin_warned = twin_held > 0;
                        // Shards nobody reads while this relay reads none: something keeps it
                        // from taking them (a lease it cannot write, a worker that keeps failing).
                        let idle = running.is_empty() && unleased > 0;
                        ctx.metrics.health.problem(
                            "relay-idle",
                            idle.then(|| format!("relay: owns no shard while {unleased} shard(s) are unleased")),
                        );
                    }
                    Err(err) if err.is_retryable() => tracing::warn!(error = %err, "lease round failed, retrying"),
                    Err(err) => break Err(err),
                }
                ctx.metrics.relay_shards_owned.set(running.len() as i64);
            }
        }
    };
    stop_all(&ctx, running).await;
    result
}

/// Collects finished workers; a fatal worker error stops the relay.
async fn reap(running: &mut HashMap<String, Running>) -> Result<(), RelayError> {
    let finished: Vec<String> = running
        .iter()
        .filter(|(_, r)| r.task.is_finished())
        .map(|(s, _)| s.clone())
        .collect();
    for shard in finished {
        let Some(worker) = running.remove(&shard) else {
            continue;
        };
        match worker.task.await {
            Ok(Ok(end)) => tracing::info!(shard, ?end, "shard worker finished"),
            Ok(Err(err)) if err.is_retryable() => {
                tracing::warn!(shard, error = %err, "shard worker failed; the shard will be retaken")
            }
            Ok(Err(err)) => return Err(err),
            Err(join) => {
                tracing::error!(shard, error = %join, "shard worker panicked; the shard will be retaken")
            }
        }
    }
    Ok(())
}

fn start(
    ctx: &Arc<RelayContext>,
    running: &mut HashMap<String, Running>,
    shard: &str,
    checkpoint: Option<String>,
) {
    tracing::info!(
        shard,
        checkpoint = checkpoint.as_deref().unwrap_or("start"),
        "shard leased"
    );
    let stop = CancellationToken::new();
    let worker = ShardWorker {
        ctx: ctx.clone(),
        shard_id: shard.to_owned(),
        checkpoint,
        stop: stop.clone(),
    };
    running.insert(
        shard.to_owned(),
        Running {
            stop,
            task: tokio::spawn(worker.run()),
        },
    );
}

/// How long shutdown gives the lease table to release the leases and the heartbeat, after
/// the workers: a hung table must not keep the process past the orchestrator's stop timeout.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shutdown: workers finish their current page, then the leases are released for others.
/// One deadline for all of them (`shutdown_timeout`): waited one after the other, four
/// workers held up by an outage took four timeouts, past the orchestrator's stop timeout
/// (ECS: 30 s), and the kill left every lease to expire. A worker still busy at the deadline
/// is aborted (its page was not checkpointed, so the next owner reads it again, as after a
/// crash) and, once it is gone, its lease released all the same: nobody waits for it to expire.
async fn stop_all(ctx: &RelayContext, running: HashMap<String, Running>) {
    for worker in running.values() {
        worker.stop.cancel();
    }
    let deadline = tokio::time::Instant::now() + ctx.shutdown_timeout;
    let mut stopped = Vec::new();
    for (shard, mut worker) in running {
        let ended = match tokio::time::timeout_at(deadline, &mut worker.task).await {
            Ok(ended) => ended,
            Err(_) => {
                tracing::warn!(
                    shard,
                    "shard worker did not finish its page in time; abandoned, its page will be read again"
                );
                worker.task.abort();
                worker.task.await
            }
        };
        match ended {
            Ok(Ok(_)) => stopped.push(shard),
            Err(join) if join.is_cancelled() => stopped.push(shard),
            Ok(Err(error)) => tracing::warn!(shard, error = %error, "shard worker failed while stopping"),
            Err(error) => {
                // Gone as surely as an aborted one: the next owner reads its page again.
                tracing::error!(shard, error = %error, "shard worker panicked while stopping");
                stopped.push(shard);
            }
        }
    }
    let releases = stopped.iter().map(|shard| async move {
        if let Err(error) = ctx.leases.release(shard).await {
            tracing::warn!(shard, error = %error, "could not release the lease; it expires on its own");
        }
    });
    let released = async {
        futures_util::future::join_all(releases).await;
        if let Err(error) = ctx.leases.retire().await {
            tracing::warn!(error = %error, "could not remove this relay's heartbeat item; its TTL does");
        }
    };
    if tokio::time::timeout(RELEASE_TIMEOUT, released).await.is_err() {
        tracing::warn!(
            "the lease table did not answer in time; the leases and the heartbeat expire on their own"
        );
    }
}
