//! A reshard (UpdateShardCount 1 → 2: the shard closed, split into two children) while the relay
//! is behind: the closed parent still holds 1,000 unread records when the children receive newer
//! ones of the same aggregates. The relay publishes every event of the parent before any of its
//! children's — so an aggregate's events keep their order across the reshard — loses none, and
//! goes on streaming from the children, and through a merge of the two back into one.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_kinesis::types::Shard;
use harness::bus;
use harness::faults::FaultProxy;
use harness::process::Proc;
use harness::stack::{outbox_id, Stack};
use serde_json::Value;

/// Writes `n` events for each of ten aggregates in one transaction, each aggregate's in order.
async fn write(stack: &Stack, round: &str, n: i32) -> anyhow::Result<()> {
    stack
        .pg
        .client()
        .await?
        .execute(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
             SELECT gen_random_uuid(), 'Order', 'order-' || (g % 10), 'OrderNoted', \
                    jsonb_build_object('round', $1::text, 'i', g), 1 \
             FROM generate_series(1, $2 * 10) AS g ORDER BY g",
            &[&round, &n],
        )
        .await?;
    Ok(())
}

async fn reshard(stack: &Stack, shards: i32) -> anyhow::Result<()> {
    harness::kinesis::reshard(&stack.kinesis, &stack.stream, shards).await
}

/// The stream's shards: (closed, open).
async fn shards(stack: &Stack) -> anyhow::Result<(Vec<Shard>, Vec<Shard>)> {
    let out = stack
        .kinesis
        .list_shards()
        .stream_name(&stack.stream)
        .send()
        .await?;
    Ok(out.shards().iter().cloned().partition(|s| {
        s.sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .is_some()
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_read_only_after_their_parent_is_drained() -> anyhow::Result<()> {
    let stack = Stack::start_with_shards(1).await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::monolith_events(&sdk, "all").await?;
    let capture = stack.spawn_capture(&[]).await?;

    // Before the reshard: into the one shard, with no relay reading.
    write(&stack, "before", 100).await?;
    stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(60))
        .await?;
    reshard(&stack, 2).await?;
    // After it: the same aggregates, into the children.
    write(&stack, "after", 20).await?;
    let records = stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(60))
        .await?;

    let (closed, _) = shards(&stack).await?;
    let parent: HashSet<String> = closed.iter().map(|s| s.shard_id().to_owned()).collect();
    assert_eq!(parent.len(), 1, "the one shard is closed: {closed:?}");
    let shard_of: HashMap<String, String> = records
        .iter()
        .filter_map(|r| outbox_id(r).map(|id| (id.to_owned(), r.shard.clone())))
        .collect();
    let in_children: HashSet<&String> = shard_of.values().filter(|s| !parent.contains(*s)).collect();
    let mut per_shard: HashMap<&String, usize> = HashMap::new();
    for shard in shard_of.values() {
        *per_shard.entry(shard).or_default() += 1;
    }
    assert_eq!(in_children.len(), 2, "both children took events: {per_shard:?}");
    assert_eq!(
        shard_of.values().filter(|s| parent.contains(*s)).count(),
        1000,
        "the parent kept its records"
    );

    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    let env = stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]);
    let relay = Proc::spawn("bridge", &["relay", "--lease-duration-secs", "3"], &env)?;
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    events
        .until_all(&ids, Duration::from_secs(120), || {
            format!("relay:\n{}", relay.output())
        })
        .await?;

    // The order EventBridge was asked to take them in: the parent's events all came first.
    let mut first_sent: HashMap<String, usize> = HashMap::new();
    for (call, body) in proxy.plan.put_events_requests().iter().enumerate() {
        let Ok(body) = serde_json::from_str::<Value>(body) else {
            continue;
        };
        for entry in body["Entries"].as_array().into_iter().flatten() {
            let detail: Value = serde_json::from_str(entry["Detail"].as_str().unwrap_or("null"))?;
            if let Some(id) = detail["metadata"]["event_id"].as_str() {
                first_sent.entry(id.to_owned()).or_insert(call);
            }
        }
    }
    let call_of = |in_parent: bool| {
        shard_of
            .iter()
            .filter(|(_, shard)| parent.contains(*shard) == in_parent)
            .filter_map(|(id, _)| first_sent.get(id).copied())
            .collect::<Vec<usize>>()
    };
    let (from_parent, from_children) = (call_of(true), call_of(false));
    assert_eq!((from_parent.len(), from_children.len()), (1000, 200));
    let last_of_parent = from_parent.iter().max().copied().unwrap_or_default();
    let first_of_children = from_children.iter().min().copied().unwrap_or_default();
    assert!(
        last_of_parent < first_of_children,
        "a child's event went out (call {first_of_children}) before the parent was drained (call {last_of_parent})"
    );

    // Streaming goes on from the children.
    write(&stack, "later", 2).await?;
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    events
        .until_all(&ids, Duration::from_secs(60), || {
            format!("relay:\n{}", relay.output())
        })
        .await?;
    // And through a merge (2 → 1: one child of two parents) while the relay keeps up.
    reshard(&stack, 1).await?;
    write(&stack, "merged", 2).await?;
    let (_, open) = shards(&stack).await?;
    assert!(
        open.len() == 1 && open[0].adjacent_parent_shard_id().is_some(),
        "one open shard, the child of two: {open:?}"
    );
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    events
        .until_all(&ids, Duration::from_secs(60), || {
            format!("relay:\n{}", relay.output())
        })
        .await?;
    relay.ensure_running()?;
    capture.ensure_running()?;
    Ok(())
}
