//! `bridge relay --consumer-name`: enhanced fan-out. moto cannot serve SubscribeToShard, so the
//! stream is the harness's local endpoint (event-stream frames as Kinesis pushes them); leases,
//! checkpoints, the bus's dead letters live in moto. Two relays share the consumer and the
//! shards; one is killed -9: the other takes its shards over from their checkpoints, and every
//! event is published — once, since the checkpoints had caught up before the kill. An event
//! EventBridge refuses before accepting any is held, then parked once another is accepted.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use harness::endpoint::{self, Endpoint};
use harness::moto::{aws_env, Moto};
use harness::process::{self, Proc};
use harness::wait;

const STREAM: &str = "fan-out";

/// moto (leases, checkpoints, the bus's dead letters) set up for the stream, the endpoint
/// serving it from `shards` shards (and refusing PutEvents calls holding `refuse`, if given),
/// and a relay's environment pointing at both.
async fn stack(
    shards: usize,
    refuse: Option<&'static str>,
) -> anyhow::Result<(Moto, Endpoint, Vec<(String, String)>)> {
    let moto = Moto::start().await?;
    let (code, out, err) = process::run("bridge", &["setup", "--stream", STREAM], &moto.env()).await?;
    anyhow::ensure!(code == Some(0), "bridge setup failed: {out}{err}");
    let endpoint = endpoint::start(endpoint::Options {
        keep_shards: Some(shards),
        record_ids: true,
        refuse_put_events_holding: refuse,
        ..endpoint::Options::default()
    })
    .await?;
    let mut env = aws_env(&endpoint.url);
    for service in ["DYNAMODB", "SQS", "S3"] {
        env.push((format!("AWS_ENDPOINT_URL_{service}"), moto.endpoint.clone()));
    }
    Ok((moto, endpoint, env))
}

/// Each shard's checkpoint in the lease table, by shard index.
async fn checkpoints(moto: &Moto) -> anyhow::Result<HashMap<usize, String>> {
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let items = dynamodb
        .scan()
        .table_name("bridge-checkpoints")
        .send()
        .await?
        .items
        .unwrap_or_default();
    let attr = |item: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>, k: &str| {
        item.get(k).and_then(|v| v.as_s().ok()).cloned()
    };
    Ok(items
        .iter()
        .filter(|i| attr(i, "lease_kind").as_deref() == Some("shard"))
        .filter(|i| attr(i, "lease_stream").as_deref() == Some(STREAM))
        .filter_map(|i| {
            let shard = attr(i, "lease_shard_id")?.rsplit('-').next()?.parse().ok()?;
            Some((shard, attr(i, "lease_checkpoint")?))
        })
        .collect())
}

/// Whether every shard's checkpoint is its last record.
async fn caught_up(moto: &Moto, endpoint: &Endpoint) -> anyhow::Result<bool> {
    let done = checkpoints(moto).await?;
    Ok(endpoint
        .shard_lengths()
        .iter()
        .enumerate()
        .all(|(i, &n)| n == 0 || done.get(&i).map(String::as_str) == Some((n - 1).to_string().as_str())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_a_consumer_and_a_killed_ones_shards_resume_from_their_checkpoints(
) -> anyhow::Result<()> {
    let (moto, endpoint, env) = stack(4, None).await?;
    let relay = |id: &str, port: u16| {
        let listen = format!("127.0.0.1:{port}");
        Proc::spawn(
            "bridge",
            &[
                "relay",
                "--stream",
                STREAM,
                "--consumer-name",
                "shared",
                "--worker-id",
                id,
                "--lease-duration-secs",
                "10",
                "--metrics-listen",
                &listen,
            ],
            &env,
        )
    };
    let (port_a, port_b) = (harness::free_port()?, harness::free_port()?);
    let mut a = relay("relay-a", port_a)?;
    let mut b = relay("relay-b", port_b)?;
    // The events go in once the two have split the shards: a relay that started alone takes
    // all four, and the other then takes its share over — the first may still publish until
    // its next checkpoint write finds the lease gone, and those events would go out twice
    // (at-least-once allows it; this test counts each event once).
    wait::until(
        "the relays to own two shards each",
        Duration::from_secs(60),
        || async {
            a.ensure_running()?;
            b.ensure_running()?;
            let owned = |port| harness::metrics::scrape(port, "bridge_relay_shards_owned");
            let (na, nb) = (
                owned(port_a).await.unwrap_or(0.0),
                owned(port_b).await.unwrap_or(0.0),
            );
            Ok((na == 2.0 && nb == 2.0).then_some(()))
        },
    )
    .await?;
    endpoint.preload((0..2000).map(endpoint::outbox_record));
    let published = |n: usize| {
        let ids = endpoint.counts.event_ids.lock().map_or(0, |ids| ids.len());
        (ids >= n).then_some(())
    };
    wait::until("the first 2,000 events", Duration::from_secs(60), || async {
        a.ensure_running()?;
        b.ensure_running()?;
        Ok(published(2000))
    })
    .await?;
    wait::until("the checkpoints to catch up", Duration::from_secs(30), || async {
        Ok(caught_up(&moto, &endpoint).await?.then_some(()))
    })
    .await?;
    // Both relays read (four subscriptions in all), none polled.
    assert!(
        endpoint.counts.subscriptions.load(Ordering::Relaxed) >= 4,
        "{:?}",
        endpoint.counts.subscriptions
    );
    assert_eq!(endpoint.counts.reads.load(Ordering::Relaxed), 0);

    a.kill9().await?;
    endpoint.preload((2000..4000).map(endpoint::outbox_record));
    wait::until("every event, after the kill", Duration::from_secs(90), || async {
        b.ensure_running()?;
        Ok(published(4000))
    })
    .await?;
    wait::until(
        "the checkpoints to catch up again",
        Duration::from_secs(30),
        || async { Ok(caught_up(&moto, &endpoint).await?.then_some(())) },
    )
    .await?;
    let events = endpoint.counts.events.load(Ordering::Relaxed);
    assert_eq!(
        events, 4000,
        "each event once: the surviving relay resumed the killed one's shards from their checkpoints"
    );
    b.terminate(Duration::from_secs(20)).await?;
    assert_eq!(endpoint.counts.reads.load(Ordering::Relaxed), 0, "never polled");
    Ok(())
}

/// An operator (or a stack update) deregisters the relay's consumer while it reads: its
/// subscriptions end and SubscribeToShard answers ResourceNotFound. The relay registers the
/// consumer again (a new ARN) and resumes each shard from its checkpoint: nothing is lost, and
/// the relay does not stop with a misleading "stream does not exist".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deregistered_consumer_is_registered_again_and_reading_resumes() -> anyhow::Result<()> {
    let (_moto, endpoint, env) = stack(2, None).await?;
    let listen = format!("127.0.0.1:{}", harness::free_port()?);
    let mut relay = Proc::spawn(
        "bridge",
        &[
            "relay",
            "--stream",
            STREAM,
            "--consumer-name",
            "deregistered",
            "--metrics-listen",
            &listen,
        ],
        &env,
    )?;
    let published = |n: usize| {
        let ids = endpoint.counts.event_ids.lock().map_or(0, |ids| ids.len());
        (ids >= n).then_some(())
    };
    endpoint.preload((0..1000).map(endpoint::outbox_record));
    wait::until("the first 1,000 events", Duration::from_secs(60), || async {
        relay.ensure_running()?;
        Ok(published(1000))
    })
    .await?;

    let kinesis = aws_sdk_kinesis::Client::new(&harness::moto::sdk_config_for(&endpoint.url).await);
    let stream_arn = kinesis
        .describe_stream_summary()
        .stream_name(STREAM)
        .send()
        .await?
        .stream_description_summary
        .map(|s| s.stream_arn)
        .unwrap_or_default();
    let consumer = |kinesis: aws_sdk_kinesis::Client, stream_arn: String| async move {
        let out = kinesis
            .describe_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name("deregistered")
            .send()
            .await?;
        anyhow::Ok(
            out.consumer_description
                .map(|c| c.consumer_arn)
                .unwrap_or_default(),
        )
    };
    let first_arn = consumer(kinesis.clone(), stream_arn.clone()).await?;
    kinesis
        .deregister_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name("deregistered")
        .send()
        .await?;

    endpoint.preload((1000..2000).map(endpoint::outbox_record));
    wait::until(
        "every event, after the deregistration",
        Duration::from_secs(90),
        || async {
            relay.ensure_running()?;
            Ok(published(2000))
        },
    )
    .await?;
    let second_arn = consumer(kinesis.clone(), stream_arn.clone()).await?;
    assert_ne!(first_arn, second_arn, "registered again, as a new consumer");
    relay.terminate(Duration::from_secs(20)).await?;
    assert_eq!(endpoint.counts.reads.load(Ordering::Relaxed), 0, "never polled");
    Ok(())
}

/// Right after start (nothing accepted yet) an event EventBridge refuses as a whole call,
/// alone on its shard: the worker holds it — running, nothing parked — and subscribes again
/// from its checkpoint; the next event of the same aggregate comes with it, is accepted, and
/// then the refused one is parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_refused_before_any_was_accepted_is_held_then_parked() -> anyhow::Result<()> {
    use base64::Engine as _;
    const MARKER: &str = "refused-as-a-whole-call";
    let (_moto, endpoint, env) = stack(1, Some(MARKER)).await?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (key, data) = endpoint::outbox_record(1);
    let refused =
        String::from_utf8(b64.decode(data)?)?.replacen("\"pad\":\"", &format!("\"pad\":\"{MARKER}"), 1);
    anyhow::ensure!(refused.contains(MARKER), "{refused}");
    endpoint.preload([(key, b64.encode(refused))]);
    let refused_id = "00000000-0000-4000-8000-000000000001";
    let relay = Proc::spawn(
        "bridge",
        &["relay", "--stream", STREAM, "--consumer-name", "held"],
        &env,
    )?;
    relay
        .wait_output(
            "the relay to hold the refused event",
            &["holding the page", refused_id],
            Duration::from_secs(60),
        )
        .await?;
    assert!(
        !relay.output().contains("parked in the dead-letter queue"),
        "{}",
        relay.output()
    );

    // Event 1001 is aggregate 1 again: the same shard, after the refused one.
    endpoint.preload([endpoint::outbox_record(1001)]);
    relay
        .wait_output(
            "the refused event to be parked",
            &["parked in the dead-letter queue", refused_id],
            Duration::from_secs(60),
        )
        .await?;
    let ids = endpoint
        .counts
        .event_ids
        .lock()
        .map(|ids| ids.clone())
        .unwrap_or_default();
    assert!(ids.contains("00000000-0000-4000-8000-000000001001"), "{ids:?}");
    assert!(!ids.contains(refused_id), "{ids:?}");
    relay.ensure_running()?;
    Ok(())
}
