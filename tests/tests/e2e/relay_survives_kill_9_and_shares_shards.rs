//! Two relays share the shards through leases; kill -9 of one mid-stream: the other takes its
//! shards over from their checkpoints and nothing is lost. Leases stay with their relay while
//! the rest of a lease round, or one lease's renewal, fails or hangs. (Sized for moto, whose
//! rule → SQS delivery takes about 0.12 s per event.)

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use harness::bus;
use harness::faults::{FaultPlan, FaultProxy};
use harness::process::Proc;
use harness::stack::Stack;
use harness::wait;

async fn owned(metrics_port: u16) -> anyhow::Result<f64> {
    harness::metrics::scrape(metrics_port, "bridge_relay_shards_owned").await
}

/// Waits until the relay serving /metrics on `metrics_port` owns `shards` shards.
async fn wait_owns(relay: &Proc, metrics_port: u16, shards: f64) -> anyhow::Result<()> {
    wait::until(
        &format!("the relay to own {shards} shard(s)"),
        Duration::from_secs(60),
        || async {
            relay.ensure_running()?;
            Ok((owned(metrics_port).await.unwrap_or(0.0) == shards).then_some(()))
        },
    )
    .await
}

/// Each shard lease's shard, owner and when it expires (ms since the epoch), read from the
/// table; `kind` "worker" for the relays' heartbeat items instead (their worker id as owner).
async fn leases_of_kind(
    dynamo: &aws_sdk_dynamodb::Client,
    kind: &str,
) -> anyhow::Result<Vec<(String, String, i64)>> {
    let (id, owner) = match kind {
        "worker" => ("lease_worker", "lease_worker"),
        _ => ("lease_shard_id", "lease_owner"),
    };
    let items = harness::shipping::scan(dynamo, "bridge-checkpoints").await?;
    Ok(items
        .iter()
        .filter(|i| harness::shipping::text(i, "lease_kind") == kind)
        .map(|i| {
            let expires = i
                .get("lease_expires_at")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (
                harness::shipping::text(i, id),
                harness::shipping::text(i, owner),
                expires,
            )
        })
        .collect())
}

/// One of the leased shards.
async fn first_shard(dynamo: &aws_sdk_dynamodb::Client) -> anyhow::Result<String> {
    let leases = leases_of_kind(dynamo, "shard").await?;
    leases
        .first()
        .map(|l| l.0.clone())
        .ok_or_else(|| anyhow::anyhow!("no lease in the table"))
}

fn now_ms() -> anyhow::Result<i64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64)
}

/// Starts relay `relay-a` through `proxy` and waits until it owns all `shards`.
async fn relay_through(stack: &Stack, proxy: &FaultProxy, shards: f64) -> anyhow::Result<Proc> {
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let env = stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]);
    // A 6 s lease: each call of a round is given up after 2 s, and the round after that
    // renews well before the lease runs out.
    let relay = Proc::spawn(
        "bridge",
        &[
            "relay",
            "--worker-id",
            "relay-a",
            "--lease-duration-secs",
            "6",
            "--metrics-listen",
            &listen,
        ],
        &env,
    )?;
    wait_owns(&relay, port, shards).await?;
    Ok(relay)
}

/// For `watch`, every lease but `except`'s stays with relay-a and live, and so does relay-a's
/// heartbeat (other relays would otherwise stop counting it and take its shards).
async fn leases_stay_live(
    dynamo: &aws_sdk_dynamodb::Client,
    relay: &Proc,
    except: Option<&str>,
    watch: Duration,
) -> anyhow::Result<()> {
    let outage = std::time::Instant::now();
    while outage.elapsed() < watch {
        relay.ensure_running()?;
        // The clock first: every item read was written after it, so a slow scan cannot make a
        // live lease look lapsed.
        let now = now_ms()?;
        let mut leases = leases_of_kind(dynamo, "shard").await?;
        leases.extend(leases_of_kind(dynamo, "worker").await?);
        for (shard, owner, expires_at) in leases.iter().filter(|l| Some(l.0.as_str()) != except) {
            assert_eq!(owner, "relay-a", "{leases:?}");
            assert!(
                *expires_at > now,
                "the lease or heartbeat of {shard} lapsed {} ms ago, {:?} into the outage\n{}",
                now - expires_at,
                outage.elapsed(),
                relay.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// What the fault tests below start from: a four-shard stack with capture running, the bus
/// watched, the lease table's client, and a fault proxy in front of the emulator.
struct Rig {
    stack: Stack,
    dynamo: aws_sdk_dynamodb::Client,
    events: bus::Subscription,
    capture: Proc,
    proxy: FaultProxy,
}

async fn rig() -> anyhow::Result<Rig> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let events = bus::monolith_events(&sdk, "all").await?;
    let capture = stack.spawn_capture(&[]).await?;
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    Ok(Rig {
        dynamo: aws_sdk_dynamodb::Client::new(&sdk),
        stack,
        events,
        capture,
        proxy,
    })
}

/// Writes one `CustomerCreated` event for each of forty aggregates (`{series}-0` …; every one of
/// four shards gets some) and waits until capture has them all in the stream: their outbox
/// ids, and for each the shard it is on.
async fn forty_events(
    stack: &Stack,
    capture: &Proc,
    series: &str,
) -> anyhow::Result<(HashSet<String>, HashMap<String, String>)> {
    let mut ids = HashSet::new();
    for i in 0..40u32 {
        let id = format!("00000000-0000-0000-0000-{i:012}");
        stack
            .insert_outbox(
                &id,
                ("Customer", &format!("{series}-{i}")),
                "CustomerCreated",
                "{}",
            )
            .await?;
        ids.insert(id);
    }
    let records = stack
        .wait_all_in_kinesis(capture, Duration::from_secs(60))
        .await?;
    let shard_of = records
        .iter()
        .filter_map(|r| harness::stack::outbox_id(r).map(|id| (id.to_owned(), r.shard.clone())))
        .filter(|(id, _)| ids.contains(id))
        .collect();
    Ok((ids, shard_of))
}

/// The ids among `shard_of` whose shard is (`on`) or is not `shard`.
fn ids_on(shard_of: &HashMap<String, String>, shard: &str, on: bool) -> HashSet<String> {
    shard_of
        .iter()
        .filter(|(_, s)| (s.as_str() == shard) == on)
        .map(|(id, _)| id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relays_shards_are_taken_over_and_nothing_is_lost() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::monolith_events(&sdk, "all").await?;
    let capture = stack.spawn_capture(&[]).await?;
    let (port_a, port_b) = (harness::free_port()?, harness::free_port()?);
    let relay = |id: &str, port: u16| {
        let listen = format!("127.0.0.1:{port}");
        stack.spawn(
            "bridge",
            &[
                "relay",
                "--worker-id",
                id,
                "--lease-duration-secs",
                "3",
                "--metrics-listen",
                &listen,
            ],
        )
    };
    let mut a = relay("relay-a", port_a)?;
    let mut b = relay("relay-b", port_b)?;

    // Both hold a fair share of the four shards.
    wait::until(
        "the relays to split the shards",
        Duration::from_secs(60),
        || async {
            a.ensure_running()?;
            b.ensure_running()?;
            let (na, nb) = (
                owned(port_a).await.unwrap_or(0.0),
                owned(port_b).await.unwrap_or(0.0),
            );
            Ok((na == 2.0 && nb == 2.0).then_some(()))
        },
    )
    .await?;

    let load = stack.spawn(
        "legacy-sim",
        &[
            "load",
            "--customers",
            "50",
            "--orders",
            "150",
            "--concurrency",
            "2",
            "--rate",
            "60",
            "--progress",
            "never",
        ],
    )?;
    events
        .until("events to flow", Duration::from_secs(60), |s| {
            s.received.len() > 40
        })
        .await?;
    a.kill9().await?;
    wait_owns(&b, port_b, 4.0).await?;

    let mut load = load;
    assert_eq!(
        load.wait(Duration::from_secs(120)).await?,
        Some(0),
        "{}",
        load.output()
    );
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    events
        .until_all(&ids, Duration::from_secs(120), || {
            format!("relay-b:\n{}\ncapture:\n{}", b.output(), capture.output())
        })
        .await?;
    let duplicates = events.received.len() - events.by_event_id().len();
    println!(
        "{} events, {} deliveries, {duplicates} duplicates",
        ids.len(),
        events.received.len()
    );

    // Worker heartbeat items do not pile up: each carries a TTL (on in the table), and a relay
    // that stops cleanly removes its own; the killed one's is left to the TTL.
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let ttl = dynamo
        .describe_time_to_live()
        .table_name("bridge-checkpoints")
        .send()
        .await?;
    assert_eq!(
        ttl.time_to_live_description().and_then(|d| d.attribute_name()),
        Some("expires_at")
    );
    let workers = || async {
        let items = harness::shipping::scan(&dynamo, "bridge-checkpoints").await?;
        Ok::<_, anyhow::Error>(
            items
                .into_iter()
                .filter(|i| harness::shipping::text(i, "lease_kind") == "worker")
                .map(|i| {
                    let ttl = i.get("expires_at").and_then(|v| v.as_n().ok()).cloned();
                    (harness::shipping::text(&i, "lease_worker"), ttl)
                })
                .collect::<Vec<_>>(),
        )
    };
    let before = workers().await?;
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before.iter().all(|(_, ttl)| ttl.is_some()), "{before:?}");
    assert_eq!(
        b.terminate(Duration::from_secs(30)).await?,
        Some(0),
        "{}",
        b.output()
    );
    let after = workers().await?;
    assert_eq!(
        after.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
        ["relay-a"],
        "{after:?}"
    );
    Ok(())
}

/// Two relays started with the same `--worker-id` by mistake: never both own a shard (each would
/// publish it and move its checkpoint), the second says why it leaves the shards alone, and it
/// takes them over once the first is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_with_one_worker_id_never_both_own_a_shard() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let _capture = stack.spawn_capture(&[]).await?;
    let (port_a, port_b) = (harness::free_port()?, harness::free_port()?);
    let relay = |port: u16| {
        let listen = format!("127.0.0.1:{port}");
        stack.spawn(
            "bridge",
            &[
                "relay",
                "--worker-id",
                "twin",
                // Long enough that a lease round slowed by a loaded machine does not let the
                // lease lapse (the twin may then take it, rightly) while this test watches.
                "--lease-duration-secs",
                "10",
                "--metrics-listen",
                &listen,
            ],
        )
    };
    let mut a = relay(port_a)?;
    wait_owns(&a, port_a, 4.0).await?;
    let b = relay(port_b)?;
    // Several lease rounds (one every ~3 s at a 10 s lease) with both running: four owned in all.
    let watching = std::time::Instant::now();
    while watching.elapsed() < Duration::from_secs(20) {
        a.ensure_running()?;
        b.ensure_running()?;
        let (na, nb) = (
            owned(port_a).await.unwrap_or(0.0),
            owned(port_b).await.unwrap_or(0.0),
        );
        assert!(
            na + nb <= 4.0,
            "both relays own shards under one worker id: {na} + {nb}\nA:\n{}\nB:\n{}",
            a.output(),
            b.output()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait::until("the second relay to warn", Duration::from_secs(30), || async {
        Ok(b.output()
            .contains("give each relay its own --worker-id")
            .then_some(()))
    })
    .await?;
    a.kill9().await?;
    wait_owns(&b, port_b, 4.0).await?;
    Ok(())
}

/// A lease round renews the leases it holds before its other calls: ListShards failing (a
/// throttled or browned-out Kinesis control plane) for three leases' time must not let the
/// leases of a relay that still reads and publishes its shards lapse, or another relay would
/// take them and publish their pages a second time (and `bridge status` would call them
/// unleased).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_stay_live_while_list_shards_fails() -> anyhow::Result<()> {
    let stack = Stack::start_with_shards(2).await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.moto.sdk_config().await);
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    let relay = relay_through(&stack, &proxy, 2.0).await?;

    proxy.plan.set_brownout(Some("Kinesis_20131202.ListShards"));
    leases_stay_live(&dynamo, &relay, None, Duration::from_secs(18)).await?;
    let refused = proxy.plan.call_counts().get("ListShards").map_or(0, |c| c.calls);
    assert!(
        refused >= 3,
        "ListShards was called {refused} times in the outage"
    );
    assert!(
        relay.output().contains("lease round failed"),
        "{}",
        relay.output()
    );
    proxy.plan.set_brownout(None);
    Ok(())
}

/// relay-a owns four shards and `fault` is set on one shard's lease item (given the text that
/// marks its calls): the other leases and the heartbeat stay live for three leases' time, and
/// the relay logs `logged`.
async fn one_lease_in_trouble(fault: impl FnOnce(&FaultPlan, String), logged: &str) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.moto.sdk_config().await);
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    let relay = relay_through(&stack, &proxy, 4.0).await?;
    let shard = first_shard(&dynamo).await?;
    fault(&proxy.plan, format!("#{shard}\""));
    leases_stay_live(&dynamo, &relay, Some(&shard), Duration::from_secs(18)).await?;
    assert!(relay.output().contains(logged), "{}", relay.output());
    Ok(())
}

/// One lease the table cannot write (its partition throttled, say) must not keep the relay
/// from renewing the others or writing its heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lease_that_cannot_be_renewed_does_not_let_the_others_lapse() -> anyhow::Result<()> {
    one_lease_in_trouble(
        |plan, marker| {
            if let Ok(mut b) = plan.brownout_holding.lock() {
                *b = Some(("DynamoDB_20120810.UpdateItem".into(), marker));
            }
        },
        "could not renew the lease",
    )
    .await
}

/// A renewal or a ListShards call that hangs (an attempt may take the SDK's 30 s before it
/// times out) must not hold the round past the leases: each call of a round is given up after
/// a third of the lease, and renewals run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hung_renewal_does_not_let_the_others_lapse() -> anyhow::Result<()> {
    one_lease_in_trouble(
        |plan, marker| {
            if let Ok(mut d) = plan.delay_holding.lock() {
                *d = Some(("DynamoDB_20120810.UpdateItem".into(), marker, 20_000));
            }
        },
        "took longer than",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_list_shards_does_not_let_the_leases_lapse() -> anyhow::Result<()> {
    let stack = Stack::start_with_shards(2).await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.moto.sdk_config().await);
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    let relay = relay_through(&stack, &proxy, 2.0).await?;

    if let Ok(mut d) = proxy.plan.delay_holding.lock() {
        *d = Some(("Kinesis_20131202.ListShards".into(), stack.stream.clone(), 20_000));
    }
    leases_stay_live(&dynamo, &relay, None, Duration::from_secs(18)).await?;
    assert!(
        relay.output().contains("ListShards took longer than"),
        "{}",
        relay.output()
    );
    Ok(())
}

/// SIGTERM while EventBridge is down and every worker retries its page: the relay exits within
/// the orchestrator's stop timeout (ECS kills after 30 s) and releases its leases and heartbeat,
/// so the next relay takes the shards at once instead of after they expire, and publishes what
/// was held up. (The workers used to be waited for one after the other, each for the whole
/// shutdown timeout: four stuck shards kept the relay 80 s, and the kill left every lease to
/// expire.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_during_an_outage_exits_in_time_and_releases_its_leases() -> anyhow::Result<()> {
    let Rig {
        stack,
        dynamo,
        mut events,
        capture,
        proxy,
    } = rig().await?;
    let mut relay = relay_through(&stack, &proxy, 4.0).await?;
    proxy.plan.set_brownout(Some("AWSEvents."));
    let (ids, shard_of) = forty_events(&stack, &capture, "stop").await?;
    let shards_holding: HashSet<&String> = shard_of.values().collect();
    assert_eq!(shards_holding.len(), 4, "{shards_holding:?}");
    // Each worker has read its page and retries its PutEvents (four shards, four retries).
    harness::wait::until(
        "the workers retrying their PutEvents",
        Duration::from_secs(60),
        || async {
            relay.ensure_running()?;
            let retries = relay.output().matches("putevents retry").count();
            Ok((retries >= 4).then_some(()))
        },
    )
    .await?;
    events.poll().await?;
    assert!(events.by_event_id().is_empty(), "published during the brownout");

    let code = relay.terminate(Duration::from_secs(30)).await?;
    assert_eq!(code, Some(0), "{}", relay.output());
    let leases = leases_of_kind(&dynamo, "shard").await?;
    assert_eq!(leases.len(), 4, "{leases:?}");
    assert!(
        leases.iter().all(|(_, owner, _)| owner.is_empty()),
        "leases left to expire: {leases:?}\n{}",
        relay.output()
    );
    let heartbeats = leases_of_kind(&dynamo, "worker").await?;
    assert!(heartbeats.is_empty(), "{heartbeats:?}");

    proxy.plan.set_brownout(None);
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let next = stack.spawn(
        "bridge",
        &["relay", "--worker-id", "relay-b", "--metrics-listen", &listen],
    )?;
    events
        .until_all(&ids, Duration::from_secs(90), || next.output())
        .await?;
    Ok(())
}

/// Starts a relay (worker id relay-a, 6 s lease, 10 s stall bound) whose AWS calls go through
/// `proxy`, serving /metrics and /healthz on the returned port.
fn relay_via(stack: &Stack, proxy: &FaultProxy) -> anyhow::Result<(Proc, u16)> {
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let env = stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]);
    let relay = Proc::spawn(
        "bridge",
        &[
            "relay",
            "--worker-id",
            "relay-a",
            "--lease-duration-secs",
            "6",
            "--stall-timeout-secs",
            "10",
            "--metrics-listen",
            &listen,
        ],
        &env,
    )?;
    Ok((relay, port))
}

/// One shard's lease item cannot be written while the relay starts (`fault`: every write to
/// it answered 503 — a hot partition —, or held 20 s): the relay takes the other shards and
/// publishes their events, `/healthz` says a take keeps failing (after the stall bound), and
/// it takes that one too once its item answers, healthy again. (A failed take used
/// to end the lease round: with the first shard's item failing, the relay took no shard at all.)
async fn the_other_shards_are_taken_while(fault: impl FnOnce(&FaultPlan, String)) -> anyhow::Result<()> {
    let Rig {
        stack,
        mut events,
        capture,
        proxy,
        ..
    } = rig().await?;
    let shards = stack
        .kinesis
        .list_shards()
        .stream_name(&stack.stream)
        .send()
        .await?;
    // The first shard listed: the first the relay tries.
    let stuck = shards
        .shards()
        .first()
        .map(|s| s.shard_id().to_owned())
        .ok_or_else(|| anyhow::anyhow!("no shard"))?;
    fault(&proxy.plan, stuck.clone());
    let (relay, port) = relay_via(&stack, &proxy)?;
    wait_owns(&relay, port, 3.0).await?;

    let (ids, shard_of) = forty_events(&stack, &capture, "take").await?;
    let on_stuck = ids_on(&shard_of, &stuck, true);
    assert!(!on_stuck.is_empty(), "no record on {stuck}");
    let elsewhere = ids_on(&shard_of, &stuck, false);
    events
        .until_all(&elsewhere, Duration::from_secs(90), || relay.output())
        .await?;
    let got = events.by_event_id();
    assert!(
        on_stuck.iter().all(|id| !got.contains_key(id)),
        "published from a shard without its lease"
    );
    assert_eq!(owned(port).await?, 3.0);
    // The relay reads the other shards, but says that one lease cannot be taken.
    harness::metrics::wait_health(
        port,
        503,
        "relay: taking a shard's lease keeps failing",
        Duration::from_secs(60),
    )
    .await?;

    if let Ok(mut b) = proxy.plan.brownout_holding.lock() {
        *b = None;
    }
    if let Ok(mut d) = proxy.plan.delay_holding.lock() {
        *d = None;
    }
    wait_owns(&relay, port, 4.0).await?;
    events
        .until_all(&ids, Duration::from_secs(90), || relay.output())
        .await?;
    harness::metrics::wait_health(port, 200, "ok", Duration::from_secs(30)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lease_that_cannot_be_taken_does_not_keep_the_relay_from_the_others() -> anyhow::Result<()> {
    the_other_shards_are_taken_while(|plan, shard| {
        if let Ok(mut b) = plan.brownout_holding.lock() {
            *b = Some(("DynamoDB_20120810.UpdateItem".into(), shard));
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hung_lease_take_does_not_keep_the_relay_from_the_others() -> anyhow::Result<()> {
    the_other_shards_are_taken_while(|plan, shard| {
        if let Ok(mut d) = plan.delay_holding.lock() {
            *d = Some(("DynamoDB_20120810.UpdateItem".into(), shard, 20_000));
        }
    })
    .await
}

/// `/healthz` names a relay that owns no shard while shards are unleased (here: every take of
/// a lease fails, as when the relay may not write the lease items), instead of only, after the
/// stall timeout, that its lease rounds do not get through; healthy again once it takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_cannot_take_any_lease_is_unhealthy_and_says_why() -> anyhow::Result<()> {
    let stack = Stack::start_with_shards(2).await?;
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    // `lease_shard_id` is written by a take only, not by renewals or checkpoints.
    if let Ok(mut b) = proxy.plan.brownout_holding.lock() {
        *b = Some(("DynamoDB_20120810.UpdateItem".into(), "lease_shard_id".into()));
    }
    let (relay, port) = relay_via(&stack, &proxy)?;
    harness::metrics::wait_health(
        port,
        503,
        "relay: owns no shard while 2 shard(s) are unleased",
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", relay.output()))?;
    relay.ensure_running()?;
    if let Ok(mut b) = proxy.plan.brownout_holding.lock() {
        *b = None;
    }
    wait_owns(&relay, port, 2.0).await?;
    harness::metrics::wait_health(port, 200, "ok", Duration::from_secs(30)).await?;
    Ok(())
}

/// Relay A cannot renew one of its leases (every write to that item answered 503) when relay B
/// dies: A still takes B's shards once their leases expire and publishes their events, and
/// `/healthz` says its rounds do not get through. (A failed renewal used to end every round
/// before its takes: B's shards went unread for as long as the one renewal failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_cannot_renew_one_lease_still_takes_a_dead_relays_shards() -> anyhow::Result<()> {
    let Rig {
        stack,
        dynamo,
        mut events,
        capture,
        proxy,
    } = rig().await?;
    let (a, port_a) = relay_via(&stack, &proxy)?;
    wait_owns(&a, port_a, 4.0).await?;
    let port_b = harness::free_port()?;
    let listen_b = format!("127.0.0.1:{port_b}");
    let mut b = stack.spawn(
        "bridge",
        &[
            "relay",
            "--worker-id",
            "relay-b",
            "--lease-duration-secs",
            "6",
            "--metrics-listen",
            &listen_b,
        ],
    )?;
    wait_owns(&b, port_b, 2.0).await?;
    wait_owns(&a, port_a, 2.0).await?;
    let leases = leases_of_kind(&dynamo, "shard").await?;
    let stuck = leases
        .iter()
        .find(|(_, owner, _)| owner == "relay-a")
        .map(|l| l.0.clone())
        .ok_or_else(|| anyhow::anyhow!("relay-a owns no lease: {leases:?}"))?;
    if let Ok(mut fault) = proxy.plan.brownout_holding.lock() {
        *fault = Some(("DynamoDB_20120810.UpdateItem".into(), format!("#{stuck}\"")));
    }
    b.kill9().await?;
    wait_owns(&a, port_a, 4.0).await?;

    let (ids, shard_of) = forty_events(&stack, &capture, "renew").await?;
    let readable = ids_on(&shard_of, &stuck, false);
    events
        .until_all(&readable, Duration::from_secs(90), || a.output())
        .await?;
    harness::metrics::wait_health(
        port_a,
        503,
        "relay: no lease round got through",
        Duration::from_secs(60),
    )
    .await?;
    assert!(a.output().contains("could not renew the lease"), "{}", a.output());

    if let Ok(mut fault) = proxy.plan.brownout_holding.lock() {
        *fault = None;
    }
    events
        .until_all(&ids, Duration::from_secs(90), || a.output())
        .await?;
    harness::metrics::wait_health(port_a, 200, "ok", Duration::from_secs(60)).await?;
    Ok(())
}
