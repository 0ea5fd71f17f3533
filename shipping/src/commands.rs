//! What each subcommand runs.

use std::time::Duration;

use anyhow::Context;

use crate::cli::{Cli, Command, DlqAction, Names, RunArgs, Show};
use eventing::claim_check::ClaimCheckStore;
use eventing::eventbridge::Publisher;
use shipping::consumer::{self, ConsumerConfig};
use shipping::metrics::Metrics;
use shipping::publisher::{self, PublisherConfig};
use shipping::store::Store;
use shipping::{setup, Tables};

const DAY: Duration = Duration::from_secs(86_400);

fn tables(names: &Names) -> Tables {
    Tables {
        customers: names.customers_table.clone(),
        shipments: names.shipments_table.clone(),
        inbox: names.inbox_table.clone(),
        outbox: names.outbox_table.clone(),
        checkpoints: names.checkpoint_table.clone(),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let aws = eventing::aws_config().await;
    let names = cli.names;
    match cli.command {
        Command::Setup(args) => {
            let cfg = setup::SetupConfig {
                queue: names.queue.clone(),
                dead_letter_queue: names.dead_letter_queue.clone(),
                outbox_dead_letter_queue: names.outbox_dead_letter_queue.clone(),
                max_receive_count: args.max_receive_count,
                visibility_timeout_seconds: whole_seconds(args.visibility_timeout),
                event_bus: names.event_bus.clone(),
                monolith_source: names.monolith_source.clone(),
                tables: tables(&names),
            };
            setup::run(&aws, &cfg).await?;
            Ok(())
        }
        Command::Run(args) => run_service(&aws, &names, args).await,
        Command::Rebuild(args) => {
            let cfg = setup::SetupConfig {
                queue: names.queue.clone(),
                dead_letter_queue: names.dead_letter_queue.clone(),
                outbox_dead_letter_queue: names.outbox_dead_letter_queue.clone(),
                max_receive_count: args.setup.max_receive_count,
                visibility_timeout_seconds: whole_seconds(args.setup.visibility_timeout),
                event_bus: names.event_bus.clone(),
                monolith_source: names.monolith_source.clone(),
                tables: tables(&names),
            };
            setup::run(&aws, &cfg).await?;
            let req = eventing::replay::Request {
                bus: names.event_bus.clone(),
                archive: eventing::replay::archive_name(&names.event_bus),
                rule: setup::rule_name(&names.queue, &names.monolith_source),
                since: args.since,
                until: args.until.unwrap_or_else(chrono::Utc::now),
            };
            let events = aws_sdk_eventbridge::Client::new(&aws);
            // The rule exists since setup: events before `until` that it did not deliver are
            // replayed, the newest of them twice (the archive may not have had them at first).
            let replays = eventing::replay::replay_settled(&events, &req, args.archive_lag, |state, at| {
                if state == eventing::replay::WAITING_FOR_ARCHIVE {
                    eprintln!(
                        "replay to {}: waiting for the archive to catch up (EventBridge archives with a delay) \
                         to replay the newest events again{}",
                        req.rule,
                        at.map_or_else(String::new, |t| format!(" at {}", t.to_rfc3339()))
                    );
                    return;
                }
                eprintln!(
                    "replay to {}: {state}{}",
                    req.rule,
                    at.map_or_else(String::new, |t| format!(", up to {}", t.to_rfc3339()))
                );
            })
            .await?;
            println!(
                "replay {} completed: the monolith's events of {} .. {} are in {}; `shipping run` applies \
                 them (events it already applied are absorbed by its inbox)",
                replays.join(" and "),
                req.since.to_rfc3339(),
                req.until.to_rfc3339(),
                names.queue
            );
            Ok(())
        }
        Command::Config { action } => {
            use clap::CommandFactory;
            let report =
                eventing::config_file::check(&crate::cli::Cli::command(), &action, &["setup", "run"])
                    .map_err(anyhow::Error::msg)?;
            print!("{report}");
            Ok(())
        }
        Command::Dlq { action } => {
            let sqs = aws_sdk_sqs::Client::new(&aws);
            let hold = match action {
                DlqAction::List { hold, .. } | DlqAction::Redrive { hold, .. } => hold,
            };
            let dlq = eventing::dlq_tools::Dlq::open(sqs.clone(), &names.dead_letter_queue, hold).await?;
            match action {
                DlqAction::List { max, json, .. } => {
                    let parked = dlq.list(max as usize).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&parked)?);
                    } else {
                        print!(
                            "{}",
                            eventing::dlq_tools::render(&names.dead_letter_queue, &parked)
                        );
                    }
                }
                DlqAction::Redrive { max, .. } => {
                    let url = sqs
                        .get_queue_url()
                        .queue_name(&names.queue)
                        .send()
                        .await
                        .with_context(|| format!("queue {}", names.queue))?
                        .queue_url
                        .unwrap_or_default();
                    let (redriven, failed) = dlq
                        .redrive(max as usize, |p| {
                            let (sqs, url) = (sqs.clone(), url.clone());
                            async move {
                                sqs.send_message()
                                    .queue_url(url)
                                    .message_body(p.body)
                                    .send()
                                    .await
                                    .map(|_| ())
                            }
                        })
                        .await?;
                    println!("redriven {redriven} event(s) to {}", names.queue);
                    for (id, reason) in &failed {
                        println!("kept {id}: {reason}");
                    }
                    anyhow::ensure!(
                        failed.is_empty(),
                        "{} event(s) could not be redriven",
                        failed.len()
                    );
                }
            }
            Ok(())
        }
        Command::Healthcheck {
            metrics_listen,
            ready,
        } => {
            let path = if ready { "/readyz" } else { "/livez" };
            eventing::server::probe(&metrics_listen, path, Duration::from_secs(5)).await?;
            println!("ok");
            Ok(())
        }
        Command::Show { what } => {
            let store = Store::new(aws_sdk_dynamodb::Client::new(&aws), tables(&names), DAY, DAY);
            let (table, key, id) = match &what {
                Show::Customer { customer_id } => (&names.customers_table, "customer_id", customer_id),
                Show::Shipment { order_id } => (&names.shipments_table, "order_id", order_id),
            };
            match store.item_json(table, key, id).await? {
                Some(item) => {
                    println!("{}", serde_json::to_string_pretty(&item)?);
                    Ok(())
                }
                None => anyhow::bail!("no item with {key} `{id}` in `{table}`"),
            }
        }
    }
}

async fn run_service(aws: &aws_config::SdkConfig, names: &Names, args: RunArgs) -> anyhow::Result<()> {
    let cancel = eventing::shutdown::on_signal();
    let metrics = Metrics::new();
    let render = {
        let metrics = metrics.clone();
        move || metrics.render()
    };
    metrics.health.set_stall_bound(args.stall_timeout);
    let addr = eventing::server::serve(&args.metrics_listen, render, metrics.health.clone())
        .await
        .with_context(|| format!("--metrics-listen {}: cannot listen", args.metrics_listen))?;
    tracing::info!(%addr, "metrics on /metrics, health on /livez and /readyz");
    if args.cloudwatch_metrics == eventing::emf::CloudWatchMetrics::Emf {
        let render = {
            let metrics = metrics.clone();
            move || metrics.render()
        };
        let figures = vec![
            eventing::emf::Figure {
                family: "shipping_events_dead_lettered_total",
                name: "EventsParked",
                unit: "Count",
                take: eventing::emf::Take::Increase,
            },
            eventing::emf::Figure {
                family: "shipping_dead_letter_queue_messages",
                name: "DeadLetterQueueMessages",
                unit: "Count",
                take: eventing::emf::Take::Sum,
            },
        ];
        eventing::emf::spawn("shipping".into(), figures, render, cancel.clone());
    }
    let store = Store::new(
        aws_sdk_dynamodb::Client::new(aws),
        tables(names),
        args.inbox_ttl,
        args.outbox_ttl,
    );
    let s3 = eventing::claim_check::s3_client(aws);
    let events = Publisher::new(
        eventing::put_events::PutEventsClient::new(aws)
            .await
            .context("eventbridge client")?,
        &names.event_bus,
        &args.event_source,
        usize::try_from(args.max_event_bytes).unwrap_or(usize::MAX),
        ClaimCheckStore::new(s3.clone(), &args.claim_check_bucket),
        metrics.publisher.clone(),
    )
    .with_contracts(contracts()?);
    let consumer_cfg = ConsumerConfig {
        queue: names.queue.clone(),
        concurrency: args.concurrency as usize,
        wait_seconds: i32::try_from(args.wait_time.as_secs()).unwrap_or(20),
        visibility_timeout: args.visibility_timeout,
        retry_delay: args.retry_delay,
    };
    let publisher_cfg = PublisherConfig {
        poll_interval: args.poll_interval,
        refresh_interval: Duration::from_secs(30),
    };
    // One failing half stops the other: a service that consumes but never publishes (or the
    // reverse) would look healthy while its outbox grows.
    let stop = cancel.child_token();
    let consume = consumer::run(
        aws_sdk_sqs::Client::new(aws),
        s3,
        store.clone(),
        metrics.clone(),
        consumer_cfg,
        stop.clone(),
    );
    let sqs = aws_sdk_sqs::Client::new(aws);
    let outbox_dlq = eventing::deadletter::DeadLetterQueue::open(sqs, &names.outbox_dead_letter_queue)
        .await
        .with_context(|| {
            format!(
                "outbox dead-letter queue `{}`: has `shipping setup` run?",
                names.outbox_dead_letter_queue
            )
        })?;
    let publish = publisher::run(
        aws_sdk_dynamodbstreams::Client::new(aws),
        store,
        events,
        outbox_dlq,
        metrics,
        publisher_cfg,
        stop.clone(),
    );
    let components = args.components;
    let (consumed, published) = tokio::join!(
        async {
            if !components.consumer() {
                return Ok(());
            }
            let r = consume.await;
            stop.cancel();
            r
        },
        async {
            if !components.publisher() {
                return Ok(());
            }
            let r = publish.await;
            stop.cancel();
            r
        }
    );
    consumed.context("consumer")?;
    published.context("publisher")?;
    tracing::info!("shipping stopped cleanly");
    Ok(())
}

/// A duration as the whole seconds AWS takes (the flags' parsers refuse anything finer).
fn whole_seconds(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// The contracts of `[contracts]` in the configuration file: shipping checks its own events
/// before it publishes them (a breach is parked in the publisher's dead-letter queue).
fn contracts() -> anyhow::Result<Option<std::sync::Arc<eventing::contracts::Contracts>>> {
    let Some(file) = &eventing::config_file::applied().file else {
        return Ok(None);
    };
    let contracts =
        eventing::contracts::from_file(file).map_err(|p| anyhow::anyhow!("[contracts]: {p:?}"))?;
    if let Some(c) = &contracts {
        tracing::info!(
            schemas = c.len(),
            "contracts loaded: each shipment event is checked before it is published"
        );
    }
    Ok(contracts.map(std::sync::Arc::new))
}
