//! One lease round of the coordinator: renew the leases this relay holds, write its
//! heartbeat, list the shards, read the lease table, and take this relay's fair share. Every
//! call is bounded, and no single lease item failing or hanging — in a renewal or a take —
//! ends the round: it is logged, and `/healthz` says so if it lasts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use futures_util::StreamExt;

use super::lease::{LeaseError, Outcome};
use super::plan::{self, ShardInfo};
use super::{now_ms, start, RelayContext, RelayError, Running};

/// One lease round: heartbeat, renew what we hold, take our fair share of the rest.
/// `troubled`: shards whose lease could not be taken (the call failed or hung), tried last.
pub(super) async fn balance(
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
pub(super) struct Round {
    /// Eligible shards without a live lease.
    pub(super) unleased: usize,
    /// Shards held by another process that uses this relay's worker id.
    pub(super) twin_held: usize,
    /// Takes of a lease that failed or hung.
    pub(super) takes_failed: usize,
    /// A renewal of a lease this relay holds failed or hung.
    pub(super) renewals_failed: bool,
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
