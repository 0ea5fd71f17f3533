//! `bridge relay`: Kinesis → EventBridge, the blog's Lambda as a long-running, horizontally
//! scalable process.
//!
//! A coordinator keeps this relay's fair share of shard leases (free or expired ones first,
//! then one at a time from the busiest other relay) and runs one worker per leased shard. A
//! child shard starts only once its parents are drained (`SHARD_END`), so a reshard keeps each
//! key's order. Checkpoints move only after EventBridge accepted every event before them:
//! a crash replays from the last checkpoint (duplicates, never gaps).

pub mod claims;
pub mod envelope;
pub mod fan_out;
pub mod lease;
pub mod pace;
pub mod plan;
mod shard;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use envelope::EnvelopeConfig;
use eventing::deadletter::{DeadLetterError, DeadLetterQueue};
use eventing::eventbridge::{PublishError, Publisher};
use lease::{LeaseError, LeaseTable, Outcome};
use plan::ShardInfo;
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
    #[error("the relay may not read capture's claim checks (s3:GetObject on --claim-check-bucket)")]
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
    pub fn holds_the_page(&self) -> bool {
        matches!(self, Self::Publish(PublishError::RefusedFromTheStart { .. }))
    }
}

/// What every shard worker shares.
pub struct RelayContext {
    pub kinesis: aws_sdk_kinesis::Client,
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
                let round = tokio::select! {
                    round = balance(&ctx, &mut running, &mut troubled) => round,
                    () = shutdown.cancelled() => break Ok(()),
                };
                match round {
                    Ok(Round { unleased, twin_held, takes_failed, renewals_failed }) => {
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

/// One lease round: heartbeat, renew what we hold, take our fair share of the rest.
/// `troubled`: shards whose lease could not be taken (the call failed or hung), tried last.
async fn balance(
    ctx: &Arc<RelayContext>,
    running: &mut HashMap<String, Running>,
    troubled: &mut HashSet<String>,
) -> Result<Round, RelayError> {
    let began = tokio::time::Instant::now();
    // Renew first: a round's other calls (ListShards, the snapshot) can fail or be slow, and
    // that must not let the leases of pages still in flight lapse. Then the heartbeat, even
    // when a renewal failed: other relays that stop counting this one take its shards.
    // Every call is bounded by a third of the lease (a hung attempt may take the SDK's 30 s):
    // the next round, and its renewals, must come before the leases lapse.
    let renewed = renew(ctx, running).await;
    bounded(ctx, "the heartbeat", ctx.leases.heartbeat(expiry(ctx))).await?;
    // A renewal that failed (logged) does not end the round either: one lease item the table
    // cannot write must not keep the relay from taking shards (a dead relay's, a reshard's
    // children). `/healthz` says so if it lasts.
    let renewals_failed = match renewed {
        Ok(()) => false,
        Err(err) if err.is_retryable() => true,
        Err(err) => return Err(err),
    };
    let shards = bounded(ctx, "ListShards", list_shards(ctx)).await?;
    let now = now_ms();
    let (leases, workers) = bounded(ctx, "the lease snapshot", ctx.leases.snapshot(now)).await?;

    let me = ctx.leases.worker_id.clone();
    let plan = {
        let ids: HashSet<&str> = running.keys().map(String::as_str).collect();
        plan::plan(&shards, &leases, &ids, workers, &me, now)
    };
    // One lease item that cannot be written (a hot partition, a hung call) must not keep the
    // relay from the other shards: its failure is logged and the next candidate tried, and it
    // is tried last in later rounds — unless the lease is this process's already (a take whose
    // answer was lost may have succeeded: retaking it first puts its worker back at once).
    // The takes end half a lease after the round began, so a hung one cannot hold the round,
    // and the renewals that start the next, past the end of the leases renewed in this one.
    troubled.retain(|shard| plan.candidates.contains(&shard.as_str()));
    let takes_end = began + ctx.lease_duration / 2;
    let mine = |shard: &str| leases.get(shard).is_some_and(|l| l.mine);
    let mut candidates = plan.candidates.clone();
    candidates.sort_by_key(|shard| troubled.contains(*shard) && !mine(shard));
    let mut taken = 0;
    let mut takes_failed = 0;
    for shard in candidates {
        if taken >= plan.wanted || tokio::time::Instant::now() >= takes_end {
            break;
        }
        let take = ctx.leases.acquire(shard, now, expiry(ctx), None);
        match try_take(takes_end, shard, take, troubled).await? {
            Taken::Yes(checkpoint) => {
                start(ctx, running, shard, checkpoint);
                taken += 1;
            }
            Taken::HeldElsewhere => {}
            Taken::Failed => takes_failed += 1,
        }
    }
    if taken < plan.wanted && tokio::time::Instant::now() < takes_end {
        if let Some((shard, owner)) = plan.take_over {
            let take = ctx.leases.acquire(shard, now, expiry(ctx), Some(owner));
            match try_take(takes_end, shard, take, troubled).await? {
                Taken::Yes(checkpoint) => {
                    tracing::info!(shard, from = owner, "took a shard over to balance the relays");
                    start(ctx, running, shard, checkpoint);
                }
                Taken::HeldElsewhere => {}
                Taken::Failed => takes_failed += 1,
            }
        }
    }
    let unleased = plan
        .unleased
        .iter()
        .filter(|s| !running.contains_key(**s))
        .count();
    Ok(Round {
        unleased,
        twin_held: plan.twin_held,
        takes_failed,
        renewals_failed,
    })
}

/// A lease's end, counted from the call that sets it: a round's earlier calls may have taken
/// a good part of the lease.
fn expiry(ctx: &RelayContext) -> i64 {
    now_ms() + ctx.lease_duration.as_millis() as i64
}

/// `call`, given up on after a third of the lease.
async fn bounded<T, E: Into<RelayError>>(
    ctx: &RelayContext,
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, RelayError> {
    let after = ctx.lease_duration / 3;
    match tokio::time::timeout(after, call).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(RelayError::TimedOut {
            what: what.to_owned(),
            after,
        }),
    }
}

/// What one take of a lease came to.
enum Taken {
    /// Ours now: start the worker from this checkpoint.
    Yes(Option<String>),
    /// Another relay holds it.
    HeldElsewhere,
    /// The call failed or hung (logged; the shard is remembered in `troubled`).
    Failed,
}

/// One lease take, given up at `end`. Only a fatal error (a missing table, say) ends the round.
async fn try_take(
    end: tokio::time::Instant,
    shard: &str,
    take: impl std::future::Future<Output = Result<Outcome<Option<String>>, LeaseError>>,
    troubled: &mut HashSet<String>,
) -> Result<Taken, RelayError> {
    let outcome = match tokio::time::timeout_at(end, take).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => {
            let err = RelayError::from(err);
            if !err.is_retryable() {
                return Err(err);
            }
            tracing::warn!(shard, error = %err, "could not take the shard's lease; trying the others");
            troubled.insert(shard.to_owned());
            return Ok(Taken::Failed);
        }
        Err(_) => {
            tracing::warn!(
                shard,
                "taking the shard's lease did not finish in time; trying it again next round"
            );
            troubled.insert(shard.to_owned());
            return Ok(Taken::Failed);
        }
    };
    troubled.remove(shard);
    Ok(match outcome {
        Outcome::Done(checkpoint) => Taken::Yes(checkpoint),
        Outcome::Lost => Taken::HeldElsewhere,
    })
}

/// Lease renewals in flight at once.
const RENEWALS_AT_ONCE: usize = 16;

/// Renews every lease this relay holds and stops the workers whose lease another relay took.
/// Renewals run side by side, each bounded: one slow or failing item does not keep the others
/// from being renewed in time. The first failure is returned once all were tried.
async fn renew(ctx: &RelayContext, running: &HashMap<String, Running>) -> Result<(), RelayError> {
    let outcomes: Vec<_> = futures_util::stream::iter(running)
        .map(|(shard, worker)| async move {
            let what = format!("renewing the lease of {shard}");
            let outcome = bounded(ctx, &what, ctx.leases.renew(shard, expiry(ctx))).await;
            (shard, worker, outcome)
        })
        .buffer_unordered(RENEWALS_AT_ONCE)
        .collect()
        .await;
    let mut failed = None;
    for (shard, worker, outcome) in outcomes {
        match outcome {
            Ok(Outcome::Done(())) => {}
            Ok(Outcome::Lost) => {
                tracing::info!(shard, "lease taken over by another relay; stopping its worker");
                worker.stop.cancel();
            }
            Err(err) if err.is_retryable() => {
                tracing::warn!(shard, error = %err, "could not renew the lease; renewing the others");
                failed.get_or_insert(err);
            }
            Err(err) => return Err(err),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// What one lease round saw.
struct Round {
    /// Eligible shards without a live lease.
    unleased: usize,
    /// Shards held by another process that uses this relay's worker id.
    twin_held: usize,
    /// Takes of a lease that failed or hung.
    takes_failed: usize,
    /// A renewal of a lease this relay holds failed or hung.
    renewals_failed: bool,
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

async fn list_shards(ctx: &RelayContext) -> Result<Vec<ShardInfo>, RelayError> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => ctx.kinesis.list_shards().next_token(t),
            None => ctx.kinesis.list_shards().stream_name(&ctx.stream),
        };
        let out = req.send().await.map_err(|err| {
            if err.code() == Some("ResourceNotFoundException") {
                RelayError::StreamMissing {
                    stream: ctx.stream.clone(),
                }
            } else {
                RelayError::Kinesis(Box::new(err))
            }
        })?;
        for s in out.shards() {
            shards.push(ShardInfo {
                shard_id: s.shard_id().to_owned(),
                parent: s.parent_shard_id().map(str::to_owned),
                adjacent_parent: s.adjacent_parent_shard_id().map(str::to_owned),
            });
        }
        match out.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok(shards),
        }
    }
}
