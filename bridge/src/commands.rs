//! What each subcommand runs: turn parsed flags into library configuration and call it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{
    CaptureTuningArgs, Command, DlqAction, MetricsArgs, OutboxAction, OutboxArgs, RelayResourceArgs,
    RelayTuningArgs, SinkKind, SourceArgs,
};
use bridge::capture::{self, CaptureConfig, TableRoutes};
use bridge::dms::EncodeOptions;
use bridge::metrics::{self, Metrics};
use bridge::partition::PartitionKey;
use bridge::relay;
use bridge::relay::envelope::EnvelopeConfig;
use bridge::replication::session_attrs::SessionAttrs;
use bridge::replication::PgTarget;
use bridge::run::{CaptureStart, RelayStart};
use bridge::status::StatusConfig;

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Setup(args) => {
            let aws = bridge::aws_config().await;
            let r = &args.resources;
            // Whole days: the flags' parsers refuse anything finer (EventBridge's and S3's unit).
            let days = |d: Duration| i32::try_from(d.as_secs() / 86_400).unwrap_or(i32::MAX);
            let plan = bridge::setup::AwsPlan {
                stream: args.stream.stream.clone(),
                shards: args.shards,
                max_record_size_kib: args.max_record_size_kib,
                event_bus: r.event_bus.clone(),
                archive_days: days(args.archive_retention),
                checkpoint_table: r.checkpoint_table.clone(),
                claim_check_bucket: r.claim_check_bucket.clone(),
                claim_check_days: days(args.claim_check_retention),
                dead_letter_queue: r.dead_letter_queue.clone(),
            };
            bridge::setup::ensure_aws(&aws, &plan, |line| println!("{line}")).await?;
            let stream = &plan.stream;
            if args.full_load {
                let tuning = CaptureTuningArgs::defaults()?;
                let cfg = capture_config(args.source, args.outbox, &tuning)?;
                let kinesis = aws_sdk_kinesis::Client::new(&aws);
                let s3 = eventing::claim_check::s3_client(&aws);
                let claims = eventing::claim_check::ClaimCheckStore::new(s3, &r.claim_check_bucket);
                return crate::full_load::run(&cfg, kinesis, claims, stream).await;
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
                    bridge::setup::state(slot.created),
                    slot.confirmed_flush
                );
            } else {
                println!("no --database-url: the publication and slot are created when capture first starts");
            }
            Ok(())
        }
        Command::Capture(args) => {
            let cfg = capture_config(args.source, args.outbox, &args.tuning)?;
            let metrics = serve_metrics(&args.metrics, "capture").await?;
            let shutdown = eventing::shutdown::on_signal();
            if args.sink == SinkKind::Null {
                // No stream to record the slot on: the slot must exist (setup or SQL).
                tracing::warn!("--sink null: every record is discarded and acknowledged");
                let sink = Arc::new(bridge::sink::null::NullSink);
                capture::run(&cfg, sink, metrics, shutdown, None).await?;
            } else {
                let start = CaptureStart {
                    cfg,
                    stream: args.stream.stream,
                    on_slot_loss: args.tuning.on_slot_loss,
                    resync_margin: args.tuning.resync_margin,
                    claim_check_bucket: args.claim_check_bucket,
                };
                bridge::run::capture(start, metrics, shutdown).await?;
            }
            tracing::info!("capture stopped");
            Ok(())
        }
        Command::Relay(args) => {
            let metrics = serve_metrics(&args.metrics, "relay").await?;
            let timeout = args.shutdown_timeout;
            let start = relay_start(
                &args.outbox,
                args.stream.stream,
                args.resources,
                &args.tuning,
                timeout,
            )?;
            let ctx = bridge::run::relay_context(start, metrics).await?;
            relay::run(ctx, eventing::shutdown::on_signal()).await?;
            tracing::info!("relay stopped");
            Ok(())
        }
        Command::Backfill(args) => crate::backfill_cmd::run(args).await,
        Command::Healthcheck(args) => {
            let path = if args.ready { "/readyz" } else { "/livez" };
            eventing::server::probe(&args.metrics_listen, path, Duration::from_secs(5)).await?;
            println!("ok");
            Ok(())
        }
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
                unpublished_age_threshold: args.unpublished_age_threshold,
                synchronous_standby: args.synchronous_standby,
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
        Command::Schemas {
            action: crate::cli::SchemasAction::Export(args),
        } => export_schemas(&args),
        Command::Config { action } => {
            use clap::CommandFactory;
            let long_running = ["setup", "capture", "relay", "run"];
            let report = eventing::config_file::check(&crate::cli::Cli::command(), &action, &long_running)
                .map_err(anyhow::Error::msg)?;
            print!("{report}");
            // The file's tables: routing (over the default --outbox-table) and contracts.
            let file = eventing::config_file::applied().file.as_ref();
            let default_table = "public.outbox".parse().context("the default outbox table")?;
            let routing = bridge::relay::routing::from_file(file.map(|f| f.text.as_str()), &default_table)
                .map_err(|p| anyhow::anyhow!("[routing]: {p:?}"))?;
            println!("\n# routing");
            print!("{routing}");
            match file.map(eventing::contracts::from_file).transpose() {
                Ok(Some(Some(contracts))) => println!("\n# contracts: {contracts}"),
                Ok(_) => println!("\n# contracts: none (no [contracts] schemas = DIR)"),
                Err(p) => anyhow::bail!("[contracts]: {p:?}"),
            }
            Ok(())
        }
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
                wait: args.wait,
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
            let metrics = serve_metrics(&args.metrics, "run").await?;
            let timeout = args.capture.shutdown_timeout;
            let claim_check_bucket = args.resources.claim_check_bucket.clone();
            let start = relay_start(
                &args.outbox,
                args.stream.stream.clone(),
                args.resources,
                &args.relay,
                timeout,
            )?;
            let ctx = bridge::run::relay_context(start, metrics.clone()).await?;
            let capture = CaptureStart {
                cfg,
                stream: args.stream.stream,
                on_slot_loss: args.capture.on_slot_loss,
                resync_margin: args.capture.resync_margin,
                claim_check_bucket: claim_check_bucket.clone(),
            };
            bridge::run::pipeline(capture, ctx, metrics, eventing::shutdown::on_signal()).await?;
            tracing::info!("bridge stopped");
            Ok(())
        }
    }
}

async fn serve_metrics(args: &MetricsArgs, service: &str) -> anyhow::Result<Arc<Metrics>> {
    let metrics = Metrics::new();
    metrics.health.set_stall_bound(args.stall_timeout);
    let addr = metrics::serve(&args.metrics_listen, metrics.clone())
        .await
        .with_context(|| format!("--metrics-listen {}: cannot listen", args.metrics_listen))?;
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    if args.cloudwatch_metrics == eventing::emf::CloudWatchMetrics::Emf {
        let render = {
            let metrics = metrics.clone();
            move || metrics.render()
        };
        eventing::emf::spawn(
            service.to_owned(),
            metrics::EMF_FIGURES.to_vec(),
            render,
            tokio_util::sync::CancellationToken::new(),
        );
    }
    Ok(metrics)
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
    let primary = match &source.heartbeat_database_url {
        Some(url) => PgTarget::from_url(url, "outbox-bridge").context("--heartbeat-database-url")?,
        None if target.session_attrs == SessionAttrs::Standby => {
            target.with_session_attrs(SessionAttrs::Primary)
        }
        None => target.clone(),
    };
    // The file's outbox tables (`[[routing.tables]]`), else --outbox-table: each keyed by its
    // aggregate id column, and each in the publication.
    let file = eventing::config_file::applied()
        .file
        .as_ref()
        .map(|f| f.text.as_str());
    let routing = bridge::relay::routing::from_file(file, &outbox.outbox_table)
        .map_err(|problems| anyhow::anyhow!("[routing]: {problems:?}"))?;
    let mut outboxes = routing.tables.iter().map(|t| {
        (
            t.table.clone(),
            PartitionKey::Attribute(t.columns.aggregate_id.clone()),
        )
    });
    let (first, first_key) = outboxes
        .next()
        .unwrap_or((outbox.outbox_table, PartitionKey::Attribute("aggregateid".into())));
    let routes = TableRoutes {
        outbox: first,
        outbox_key: first_key,
        outbox_occurred_at: routing
            .tables
            .first()
            .map_or_else(|| "occurred_at".to_owned(), |t| t.columns.occurred_at.clone()),
        more_outboxes: outboxes.collect(),
        overrides: source.partition_keys.into_iter().collect(),
    };
    let mut tables = source.tables;
    for t in &routing.tables {
        if !tables.contains(&t.table) {
            tables.push(t.table.clone());
        }
    }
    Ok(CaptureConfig {
        target,
        primary,
        slot: source.slot,
        publication: source.publication,
        tables,
        routes,
        encode: EncodeOptions {
            strict_dms: tuning.strict_dms,
        },
        message_prefix: tuning.message_prefix.clone(),
        window: usize::from(tuning.max_inflight_batches),
        linger: tuning.batch_linger,
        // Replaced per connection by what the server's wal_sender_timeout asks for.
        status_interval: Duration::from_secs(1),
        shutdown_timeout: tuning.shutdown_timeout,
        retained_wal_warn_bytes: tuning.retained_wal_warn_bytes,
        retained_wal_warn_age: tuning.retained_wal_warn_age,
        heartbeat: Some(tuning.heartbeat_interval).filter(|d| !d.is_zero()),
        replication_timeout: tuning.replication_timeout,
        synchronous_standby: tuning.synchronous_standby.clone(),
        failover_slot: source.failover_slot,
    })
}

/// The relay's resources and tuning, from its flags.
fn relay_start(
    outbox: &OutboxArgs,
    stream: String,
    resources: RelayResourceArgs,
    tuning: &RelayTuningArgs,
    shutdown_timeout: Duration,
) -> anyhow::Result<RelayStart> {
    // Checked at start already (main); read again over this command's --outbox-table.
    let file = eventing::config_file::applied()
        .file
        .as_ref()
        .map(|f| f.text.as_str());
    let routing = bridge::relay::routing::from_file(file, &outbox.outbox_table)
        .map_err(|problems| anyhow::anyhow!("[routing]: {problems:?}"))?;
    let contracts = match &eventing::config_file::applied().file {
        Some(file) => eventing::contracts::from_file(file)
            .map_err(|problems| anyhow::anyhow!("[contracts]: {problems:?}"))?
            .map(std::sync::Arc::new),
        None => None,
    };
    if let Some(contracts) = &contracts {
        tracing::info!(
            schemas = contracts.len(),
            "contracts loaded: each event's data is checked before it is published"
        );
    }
    Ok(RelayStart {
        stream,
        event_bus: resources.event_bus,
        claim_check_bucket: resources.claim_check_bucket,
        dead_letter_queue: resources.dead_letter_queue,
        checkpoint_table: resources.checkpoint_table,
        envelope: EnvelopeConfig {
            routing: std::sync::Arc::new(routing.clone()),
            publish_raw_changes: tuning.publish_raw_changes,
            event_types: tuning
                .event_types
                .iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
        },
        contracts,
        event_source: tuning.event_source.clone(),
        max_event_bytes: usize::try_from(tuning.max_event_bytes).unwrap_or(usize::MAX),
        worker_id: tuning.worker_id.clone(),
        lease_duration: tuning.lease_duration,
        poll_interval: tuning.poll_interval,
        max_reads_per_second: tuning.max_reads_per_second,
        put_events_concurrency: tuning.put_events_concurrency,
        consumer_name: tuning.consumer_name.clone().filter(|n| !n.is_empty()),
        shutdown_timeout,
    })
}

async fn dlq(action: DlqAction) -> anyhow::Result<()> {
    let aws = bridge::aws_config().await;
    let (args, redrive) = match action {
        DlqAction::List(a) => (a, false),
        DlqAction::Redrive(a) => (a, true),
    };
    let queue = &args.resources.dead_letter_queue;
    let dlq = eventing::dlq_tools::Dlq::open(aws_sdk_sqs::Client::new(&aws), queue, args.hold).await?;
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

/// `bridge schemas export`: every contract as a registry document, one file each.
fn export_schemas(args: &crate::cli::SchemasExportArgs) -> anyhow::Result<()> {
    use eventing::contracts::{registry, Contracts};
    let contracts = match &args.schemas {
        Some(dir) => Contracts::load(dir, false).map_err(|p| anyhow::anyhow!("{}", p.join("\n")))?,
        None => {
            let file = eventing::config_file::applied().file.as_ref().context(
                "no contracts: give --schemas DIR, or --config FILE with [contracts] schemas = DIR",
            )?;
            eventing::contracts::from_file(file)
                .map_err(|p| anyhow::anyhow!("{p:?}"))?
                .context("the configuration file has no [contracts] schemas = DIR")?
        }
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    for (source, detail_type, contract) in contracts.schemas() {
        let document =
            registry::document(source, detail_type, contract, args.content).map_err(anyhow::Error::msg)?;
        let name = registry::schema_name(source, detail_type);
        let path = args.out.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{name}: {} ({})", path.display(), args.content.registry_type());
    }
    Ok(())
}
