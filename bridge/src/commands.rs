//! What each subcommand runs: turn parsed flags into library configuration and call it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{
    CaptureTuningArgs, Command, DlqAction, MetricsArgs, OutboxAction, OutboxArgs, RelayResourceArgs,
    RelayTuningArgs, SinkKind, SourceArgs,
};
use bridge::capture::{self, CaptureConfig, TableRoutes};
use bridge::dms::EncodeOptions;
use bridge::metrics::{self, Metrics};
use bridge::relay::envelope::EnvelopeConfig;
use bridge::relay::lease::LeaseTable;
use bridge::relay::{self, RelayContext};
use bridge::replication::PgTarget;
use bridge::sink::kinesis::KinesisSink;
use bridge::status::StatusConfig;
use eventing::claim_check::ClaimCheckStore;
use eventing::deadletter::DeadLetterQueue;
use eventing::eventbridge::Publisher;

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Setup(args) => {
            let aws = bridge::aws_config().await;
            let stream = &args.stream.stream;
            let created =
                bridge::setup::ensure_stream(&aws_sdk_kinesis::Client::new(&aws), stream, args.shards)
                    .await?;
            println!("kinesis stream {stream}: {}", state(created));
            let r = &args.resources;
            let created =
                bridge::setup::ensure_bus(&aws_sdk_eventbridge::Client::new(&aws), &r.event_bus).await?;
            println!("event bus {}: {}", r.event_bus, state(created));
            if args.archive_retention_days > 0 {
                let archive = eventing::replay::archive_name(&r.event_bus);
                let created = bridge::setup::ensure_archive(
                    &aws_sdk_eventbridge::Client::new(&aws),
                    &r.event_bus,
                    &archive,
                    args.archive_retention_days,
                )
                .await?;
                println!(
                    "event archive {archive} ({} days): {}",
                    args.archive_retention_days,
                    state(created)
                );
            }
            let dynamo = aws_sdk_dynamodb::Client::new(&aws);
            let created = bridge::setup::ensure_checkpoint_table(&dynamo, &r.checkpoint_table).await?;
            println!("checkpoint table {}: {}", r.checkpoint_table, state(created));
            let region = aws.region().map(|r| r.as_ref().to_owned());
            let s3 = aws_sdk_s3::Client::new(&aws);
            let created = bridge::setup::ensure_bucket(&s3, &r.claim_check_bucket, region.as_deref()).await?;
            println!("claim-check bucket {}: {}", r.claim_check_bucket, state(created));
            bridge::setup::ensure_queue(&aws_sdk_sqs::Client::new(&aws), &r.dead_letter_queue).await?;
            println!("dead-letter queue {}: ready", r.dead_letter_queue);
            if args.full_load {
                let tuning = CaptureTuningArgs::defaults()?;
                let cfg = capture_config(args.source, args.outbox, &tuning)?;
                let kinesis = aws_sdk_kinesis::Client::new(&aws);
                return crate::full_load::run(&cfg, kinesis, stream).await;
            }
            if args.source.database_url.is_some() {
                let tuning = CaptureTuningArgs::defaults()?;
                let cfg = capture_config(args.source, args.outbox, &tuning)?;
                let kinesis = aws_sdk_kinesis::Client::new(&aws);
                let slot = capture::ensure_slot_recorded(&cfg, &kinesis, stream, args.recreate_slot)
                    .await?
                    .slot;
                println!(
                    "publication {}: ready; replication slot {}: {} at {}",
                    cfg.publication,
                    cfg.slot,
                    state(slot.created),
                    slot.confirmed_flush
                );
            } else {
                println!("no --database-url: the publication and slot are created when capture first starts");
            }
            Ok(())
        }
        Command::Capture(args) => {
            let cfg = capture_config(args.source, args.outbox, &args.tuning)?;
            let metrics = serve_metrics(&args.metrics).await?;
            let shutdown = eventing::shutdown::on_signal();
            if args.sink == SinkKind::Null {
                // No stream to record the slot on: the slot must exist (setup or SQL).
                tracing::warn!("--sink null: every record is discarded and acknowledged");
                let sink = Arc::new(bridge::sink::null::NullSink);
                capture::run(&cfg, sink, metrics, shutdown, None).await?;
            } else {
                let policy = (args.tuning.on_slot_loss, args.tuning.resync_margin);
                run_capture(cfg, args.stream.stream, metrics, shutdown, policy).await?;
            }
            tracing::info!("capture stopped");
            Ok(())
        }
        Command::Relay(args) => {
            let metrics = serve_metrics(&args.metrics).await?;
            let timeout = Duration::from_secs(args.shutdown_timeout_secs);
            let ctx = relay_context(
                &args.outbox,
                args.stream.stream,
                &args.resources,
                &args.tuning,
                timeout,
                metrics,
            )
            .await?;
            relay::run(ctx, eventing::shutdown::on_signal()).await?;
            tracing::info!("relay stopped");
            Ok(())
        }
        Command::Backfill(args) => crate::backfill_cmd::run(args).await,
        Command::Replay(args) => {
            let aws = bridge::aws_config().await;
            let req = eventing::replay::Request {
                archive: eventing::replay::archive_name(&args.event_bus),
                bus: args.event_bus,
                rule: args.rule,
                since: args.since,
                until: args.until.unwrap_or_else(chrono::Utc::now),
            };
            let name =
                eventing::replay::replay(&aws_sdk_eventbridge::Client::new(&aws), &req, |state, last| {
                    eprintln!(
                        "replay to rule {}: {state}{}",
                        req.rule,
                        last.map_or_else(String::new, |t| format!(", up to {}", t.to_rfc3339()))
                    );
                })
                .await?;
            println!(
                "replay {name} completed: events of {} .. {} sent again to rule {} only",
                req.since.to_rfc3339(),
                req.until.to_rfc3339(),
                req.rule
            );
            Ok(())
        }
        Command::Status(args) => {
            let aws = bridge::aws_config().await;
            let target = match &args.source.database_url {
                Some(url) => Some(PgTarget::from_url(url, "outbox-bridge-status").context("--database-url")?),
                None => None,
            };
            let cfg = StatusConfig {
                target,
                slot: args.source.slot,
                publication: args.source.publication,
                stream: args.stream.stream,
                checkpoint_table: args.resources.checkpoint_table,
                dead_letter_queue: args.resources.dead_letter_queue,
                retained_wal_threshold: args.retained_wal_threshold,
            };
            let status = bridge::status::gather(&aws, &cfg).await;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", bridge::status::render(&status, &cfg));
            }
            if !status.attention.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Dlq { action } => dlq(action).await,
        Command::Outbox {
            action: OutboxAction::Prune(args),
        } => {
            let url = args
                .source
                .database_url
                .context("--database-url (or DATABASE_URL) is required")?;
            let cfg = bridge::prune::PruneConfig {
                target: PgTarget::from_url(&url, "outbox-bridge-prune").context("--database-url")?,
                slot: args.source.slot,
                outbox: args.outbox.outbox_table,
                older_than: args.older_than,
                batch: args.batch,
                wait: Duration::from_secs(args.wait_secs),
            };
            let pruned = bridge::prune::prune(&cfg).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&pruned)?);
            } else {
                println!(
                    "pruned {} row(s) from {} in {} batch(es): delivered before {}; {} older row(s) kept (not provably delivered yet)",
                    pruned.deleted, pruned.table, pruned.batches, pruned.horizon_lsn, pruned.kept_older_rows
                );
            }
            Ok(())
        }
        Command::Run(args) => {
            let cfg = capture_config(
                args.source,
                OutboxArgs {
                    outbox_table: args.outbox.outbox_table.clone(),
                },
                &args.capture,
            )?;
            let metrics = serve_metrics(&args.metrics).await?;
            let timeout = Duration::from_secs(args.capture.shutdown_timeout_secs);
            let policy = (args.capture.on_slot_loss, args.capture.resync_margin);
            let stream = args.stream.stream;
            let ctx = relay_context(
                &args.outbox,
                stream.clone(),
                &args.resources,
                &args.relay,
                timeout,
                metrics.clone(),
            )
            .await?;
            let shutdown = eventing::shutdown::on_signal();
            // One stage failing stops the other: a half-running pipeline only hides the failure.
            let stop = shutdown.child_token();
            let capture = tokio::spawn({
                let stop = stop.clone();
                async move {
                    // Even a panic in capture stops the relay: the guard cancels on drop.
                    let _stop_relay = stop.clone().drop_guard();
                    run_capture(cfg, stream, metrics, stop, policy).await
                }
            });
            let relay_result = relay::run(ctx, stop.clone()).await;
            stop.cancel();
            let capture_result = capture.await.context("capture task")?;
            capture_result?;
            relay_result?;
            tracing::info!("bridge stopped");
            Ok(())
        }
    }
}

fn state(created: bool) -> &'static str {
    if created {
        "created"
    } else {
        "already present"
    }
}

async fn serve_metrics(args: &MetricsArgs) -> anyhow::Result<Arc<Metrics>> {
    let metrics = Metrics::new();
    metrics
        .health
        .set_stall_bound(Duration::from_secs(args.stall_timeout_secs));
    let addr = metrics::serve(&args.metrics_listen, metrics.clone())
        .await
        .with_context(|| format!("--metrics-listen {}: cannot listen", args.metrics_listen))?;
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    Ok(metrics)
}

async fn run_capture(
    cfg: CaptureConfig,
    stream: String,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    (policy, margin): (capture::OnSlotLoss, Duration),
) -> anyhow::Result<()> {
    let aws = bridge::aws_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    // Postgres or Kinesis may not be up yet: wait for them as the stream loop would.
    let backoff = eventing::retry::Backoff::call();
    let ready =
        eventing::retry::while_transient_until("check the slot's stream tag", backoff, &shutdown, || {
            capture::ensure_slot_recorded(&cfg, &kinesis, &stream, false)
        })
        .await;
    match ready {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(()),
        // The stream loop meets the same loss and resyncs from the outbox.
        Err(err) if policy == capture::OnSlotLoss::ResyncOutbox && capture::SlotLoss::of(&err).is_some() => {}
        Err(err) => return Err(err.into()),
    }
    let recovery = capture::Recovery {
        log: capture::delivery::DeliveryLog::new(kinesis.clone(), &stream, &cfg.slot),
        policy,
        margin,
    };
    let sink = Arc::new(KinesisSink::new(kinesis, &stream, metrics.clone()));
    capture::run(&cfg, sink, metrics, shutdown, Some(recovery)).await?;
    Ok(())
}

fn capture_config(
    source: SourceArgs,
    outbox: OutboxArgs,
    tuning: &CaptureTuningArgs,
) -> anyhow::Result<CaptureConfig> {
    let url = source
        .database_url
        .context("--database-url (or DATABASE_URL) is required")?;
    let target = PgTarget::from_url(&url, "outbox-bridge").context("--database-url")?;
    let routes = TableRoutes {
        outbox: outbox.outbox_table,
        overrides: source.partition_keys.into_iter().collect(),
        ..TableRoutes::default()
    };
    Ok(CaptureConfig {
        target,
        slot: source.slot,
        publication: source.publication,
        tables: source.tables,
        routes,
        encode: EncodeOptions {
            strict_dms: tuning.strict_dms,
        },
        message_prefix: tuning.message_prefix.clone(),
        window: usize::from(tuning.max_inflight_batches),
        linger: Duration::from_millis(tuning.batch_linger_ms),
        // Replaced per connection by what the server's wal_sender_timeout asks for.
        status_interval: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(tuning.shutdown_timeout_secs),
        retained_wal_warn_bytes: tuning.retained_wal_warn_bytes,
        retained_wal_warn_age: Duration::from_secs(tuning.retained_wal_warn_secs),
        heartbeat: Some(Duration::from_secs(tuning.heartbeat_secs)).filter(|d| !d.is_zero()),
        replication_timeout: Duration::from_secs(tuning.replication_timeout_secs),
        synchronous_standbys: tuning.synchronous_standby.clone(),
    })
}

async fn relay_context(
    outbox: &OutboxArgs,
    stream: String,
    resources: &RelayResourceArgs,
    tuning: &RelayTuningArgs,
    shutdown_timeout: Duration,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<RelayContext>> {
    let aws = bridge::aws_config().await;
    let dlq = DeadLetterQueue::open(aws_sdk_sqs::Client::new(&aws), &resources.dead_letter_queue)
        .await
        .with_context(|| {
            format!(
                "--dead-letter-queue {} (run `bridge setup` first)",
                resources.dead_letter_queue
            )
        })?;
    let claim_checks = ClaimCheckStore::new(aws_sdk_s3::Client::new(&aws), &resources.claim_check_bucket);
    let publisher = Publisher::new(
        aws_sdk_eventbridge::Client::new(&aws),
        &resources.event_bus,
        &tuning.event_source,
        usize::try_from(tuning.max_event_bytes).unwrap_or(262_144),
        claim_checks,
        metrics.publisher.clone(),
    );
    let worker_id = tuning.worker_id.clone().unwrap_or_else(default_worker_id);
    let leases = LeaseTable::new(
        aws_sdk_dynamodb::Client::new(&aws),
        &resources.checkpoint_table,
        &stream,
        &worker_id,
    );
    Ok(Arc::new(RelayContext {
        kinesis: aws_sdk_kinesis::Client::new(&aws),
        stream,
        publisher,
        dlq,
        leases,
        envelope: EnvelopeConfig {
            outbox: outbox.outbox_table.clone(),
            publish_raw_changes: tuning.publish_raw_changes,
            event_types: tuning
                .event_types
                .iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
        },
        metrics,
        lease_duration: Duration::from_secs(tuning.lease_duration_secs),
        poll_interval: Duration::from_millis(tuning.poll_interval_ms),
        shutdown_timeout,
    }))
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() { "relay".to_owned() } else { host };
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

async fn dlq(action: DlqAction) -> anyhow::Result<()> {
    let aws = bridge::aws_config().await;
    let (args, redrive) = match action {
        DlqAction::List(a) => (a, false),
        DlqAction::Redrive(a) => (a, true),
    };
    let queue = &args.resources.dead_letter_queue;
    let dlq = eventing::dlq_tools::Dlq::open(
        aws_sdk_sqs::Client::new(&aws),
        queue,
        Duration::from_secs(args.hold_secs),
    )
    .await?;
    let max = args.max as usize;
    if !redrive {
        let parked = dlq.list(max).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&parked)?);
        } else {
            print!("{}", eventing::dlq_tools::render(queue, &parked));
        }
        return Ok(());
    }
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let (redriven, failed) = bridge::redrive::to_streams(&dlq, &kinesis, max).await?;
    println!("redriven {redriven} record(s) from {queue}");
    for (id, reason) in &failed {
        println!("kept {id}: {reason}");
    }
    anyhow::ensure!(
        failed.is_empty(),
        "{} record(s) could not be redriven",
        failed.len()
    );
    Ok(())
}
