//! One lease round's decisions, without I/O: which shards may be read now (parents drained
//! first), how many this relay should own, which to try to take, and which one to take over
//! from the busiest relay when that is still not enough.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::lease::ShardLease;

/// A shard as `ListShards` describes it.
#[derive(Debug, Clone)]
pub struct ShardInfo {
    pub shard_id: String,
    pub parent: Option<String>,
    pub adjacent_parent: Option<String>,
}

/// What this relay should do in one round.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<'a> {
    /// How many more shards this relay should own (its fair share minus what it runs).
    pub wanted: usize,
    /// Shards it may take (free, expired, or held by this very process), in order: try them
    /// until `wanted` are taken.
    pub candidates: Vec<&'a str>,
    /// When still short after those: one shard and the relay it is taken from (the one holding
    /// the most, above the fair share). Never a process using this relay's own worker id.
    pub take_over: Option<(&'a str, &'a str)>,
    /// Readable shards without a live lease (before this round takes any).
    pub unleased: Vec<&'a str>,
    /// Readable shards held by another process under this relay's worker id (a mistake).
    pub twin_held: usize,
}

pub fn plan<'a>(
    shards: &'a [ShardInfo],
    leases: &'a HashMap<String, ShardLease>,
    running: &HashSet<&str>,
    workers: usize,
    me: &str,
    now_ms: i64,
) -> Plan<'a> {
    let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    let finished = |id: &str| leases.get(id).is_some_and(ShardLease::is_finished);
    // A child is read only once its parents are drained (or gone from the stream).
    let parent_done = |p: Option<&str>| p.is_none_or(|p| !listed.contains(p) || finished(p));
    let eligible: Vec<&str> = shards
        .iter()
        .filter(|s| {
            !finished(&s.shard_id)
                && parent_done(s.parent.as_deref())
                && parent_done(s.adjacent_parent.as_deref())
        })
        .map(|s| s.shard_id.as_str())
        .collect();
    let target = eligible.len().div_ceil(workers.max(1));
    let live = |id: &str| {
        leases
            .get(id)
            .filter(|l| l.expires_at_ms > now_ms && l.owner.is_some())
    };
    let held_elsewhere = |id: &str| live(id).is_some_and(|l| !l.mine);

    let candidates = eligible
        .iter()
        .copied()
        .filter(|s| !running.contains(s) && !held_elsewhere(s))
        .collect();
    let mut held: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for &shard in &eligible {
        // A shard whose worker here is still stopping is not ours to take again yet.
        if running.contains(shard) {
            continue;
        }
        if let Some(owner) = live(shard)
            .filter(|l| !l.mine)
            .and_then(|l| l.owner.as_deref())
            .filter(|o| *o != me)
        {
            held.entry(owner).or_default().push(shard);
        }
    }
    let take_over = held
        .into_iter()
        .filter(|(_, s)| s.len() > target)
        .max_by_key(|(_, s)| s.len())
        .and_then(|(owner, s)| s.first().map(|shard| (*shard, owner)));
    Plan {
        wanted: target.saturating_sub(running.len()),
        candidates,
        take_over,
        unleased: eligible
            .iter()
            .copied()
            .filter(|s| !running.contains(s) && live(s).is_none())
            .collect(),
        twin_held: eligible
            .iter()
            .filter(|s| live(s).is_some_and(|l| !l.mine && l.owner.as_deref() == Some(me)))
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn shards(ids: &[&str]) -> Vec<ShardInfo> {
        ids.iter()
            .map(|id| ShardInfo {
                shard_id: (*id).into(),
                parent: None,
                adjacent_parent: None,
            })
            .collect()
    }

    fn lease(shard: &str, owner: Option<&str>, live: bool, mine: bool) -> (String, ShardLease) {
        (
            shard.into(),
            ShardLease {
                shard_id: shard.into(),
                owner: owner.map(Into::into),
                expires_at_ms: if live { NOW + 5_000 } else { NOW - 1 },
                checkpoint: None,
                mine,
            },
        )
    }

    #[test]
    fn a_lone_relay_takes_every_free_or_expired_shard() {
        let s = shards(&["a", "b", "c"]);
        let leases = HashMap::from([lease("b", Some("gone"), false, false)]);
        let p = plan(&s, &leases, &HashSet::new(), 1, "me", NOW);
        assert_eq!(p.wanted, 3);
        assert_eq!(p.candidates, ["a", "b", "c"]);
        assert_eq!(p.unleased, ["a", "b", "c"]);
        assert_eq!(p.take_over, None);
    }

    #[test]
    fn a_second_relay_takes_its_share_from_the_busiest() {
        let s = shards(&["a", "b", "c", "d"]);
        let leases: HashMap<_, _> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| lease(id, Some("other"), true, false))
            .collect();
        let p = plan(&s, &leases, &HashSet::new(), 2, "me", NOW);
        assert_eq!(p.wanted, 2);
        assert!(p.candidates.is_empty(), "all are held elsewhere");
        assert_eq!(p.take_over, Some(("a", "other")));
        assert!(p.unleased.is_empty());
        // At the fair share, nothing is taken over.
        let balanced: HashMap<_, _> = [("a", "other"), ("b", "other"), ("c", "third"), ("d", "third")]
            .iter()
            .map(|(id, o)| lease(id, Some(o), true, false))
            .collect();
        let p = plan(&s, &balanced, &HashSet::new(), 3, "me", NOW);
        assert_eq!((p.wanted, p.take_over), (2, None));
    }

    #[test]
    fn children_wait_for_their_parents_to_drain() {
        let mut s = shards(&["parent"]);
        s.push(ShardInfo {
            shard_id: "child".into(),
            parent: Some("parent".into()),
            adjacent_parent: None,
        });
        let none = HashMap::new();
        let open = plan(&s, &none, &HashSet::new(), 1, "me", NOW);
        assert_eq!(open.candidates, ["parent"]);
        let mut drained = HashMap::from([lease("parent", None, false, false)]);
        if let Some(l) = drained.get_mut("parent") {
            l.checkpoint = Some(super::super::lease::SHARD_END.into());
        }
        let p = plan(&s, &drained, &HashSet::new(), 1, "me", NOW);
        assert_eq!(p.candidates, ["child"]);
    }

    #[test]
    fn a_process_with_our_worker_id_is_left_alone_and_counted() {
        let s = shards(&["a", "b"]);
        let leases = HashMap::from([
            lease("a", Some("me"), true, false),
            lease("b", Some("me"), true, true),
        ]);
        let running = HashSet::from(["b"]);
        let p = plan(&s, &leases, &running, 1, "me", NOW);
        assert!(p.candidates.is_empty(), "{p:?}");
        assert_eq!(p.take_over, None, "never taken over from a twin");
        assert_eq!(p.twin_held, 1);
        // Once its lease expires, the shard is free to take.
        let expired = HashMap::from([lease("a", Some("me"), false, false)]);
        let p = plan(&s, &expired, &running, 1, "me", NOW);
        assert_eq!(p.candidates, ["a"]);
        assert_eq!(p.twin_held, 0);
    }
}
