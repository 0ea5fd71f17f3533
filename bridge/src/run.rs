//! The long-running processes as `bridge capture`, `bridge relay` and `bridge run` start them:
//! capture waits out a database or stream that is not up yet, the relay opens its resources,
//! and `run` ties both to one shutdown so one stage failing stops the other.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::capture::{self, CaptureConfig, CaptureError, OnSlotLoss, Recovery, SlotLoss};
use crate::metrics::Metrics;
use crate::relay::envelope::EnvelopeConfig;
use crate::relay::get_records::GetRecordsClient;
use crate::relay::lease::LeaseTable;
use crate::relay::{self, RelayContext, RelayError};
use crate::sink::kinesis::KinesisSink;
use eventing::claim_check::ClaimCheckStore;
use eventing::deadletter::{DeadLetterError, DeadLetterQueue};
use eventing::eventbridge::Publisher;
use eventing::put_events::PutEventsClient;

/// What capture streams, to which stream, and how it recovers a lost slot.
pub struct CaptureStart {
    pub cfg: CaptureConfig,
    pub stream: String,
    pub on_slot_loss: OnSlotLoss,
    pub resync_margin: Duration,
    /// Where records above the stream's record limit are stored whole (`sink::claims`).
    pub claim_check_bucket: String,
}

/// The relay's AWS resources and tuning.
pub struct RelayStart {
    pub stream: String,
    pub event_bus: String,
    pub claim_check_bucket: String,
    pub dead_letter_queue: String,
    pub checkpoint_table: String,
    pub envelope: EnvelopeConfig,
    /// Checked by the publisher before each PutEvents (`[contracts]`).
    pub contracts: Option<Arc<eventing::contracts::Contracts>>,
    pub event_source: String,
    pub max_event_bytes: usize,
    /// This worker's name in the lease table (default: host, pid and a random suffix).
    pub worker_id: Option<String>,
    pub lease_duration: Duration,
    pub poll_interval: Duration,
    pub max_reads_per_second: f64,
    /// PutEvents calls in flight at once per shard.
    pub put_events_concurrency: usize,
    /// Enhanced fan-out under this consumer name instead of polling.
    pub consumer_name: Option<String>,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("--dead-letter-queue {queue} (run `bridge setup` first)")]
    DeadLetterQueue {
        queue: String,
        #[source]
        source: DeadLetterError,
    },
    #[error("cannot set up the AWS client for the relay's PutEvents or GetRecords")]
    AwsClient(#[from] eventing::aws_json::SetupError),
    #[error("cannot read kinesis stream `{stream}`'s record limit (DescribeStreamSummary)")]
    StreamLimits {
        stream: String,
        #[source]
        source: Box<
            aws_sdk_kinesis::error::SdkError<
                aws_sdk_kinesis::operation::describe_stream_summary::DescribeStreamSummaryError,
            >,
        >,
    },
    #[error("the capture task ended abnormally")]
    CaptureTask(#[source] tokio::task::JoinError),
}

/// Capture into Kinesis until `shutdown` or a fatal error.
pub async fn capture(
    start: CaptureStart,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let CaptureStart {
        cfg,
        stream,
        on_slot_loss,
        resync_margin,
        claim_check_bucket,
    } = start;
    // Watched from the start: a capture that keeps failing to start is not healthy either.
    let starting = metrics
        .health
        .beacon("capture: not started (postgres or kinesis not ready)");
    let aws = crate::aws_config().await;
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
        Err(err) if on_slot_loss == OnSlotLoss::ResyncOutbox && SlotLoss::of(&err).is_some() => {}
        Err(err) => return Err(err.into()),
    }
    // Still "not started" while the limit cannot be read (a throttled DescribeStreamSummary).
    let limits = eventing::retry::while_transient_until(
        "read the stream's record limit",
        eventing::retry::Backoff::call(),
        &shutdown,
        || crate::sink::kinesis::stream_limits(&kinesis, &stream),
    )
    .await;
    let limits = match limits {
        Ok(Some(limits)) => limits,
        Ok(None) => return Ok(()),
        // A role written before capture read the limit: the default limit is always safe
        // (records above 1 MiB go by claim check, as they did); say what the role lacks.
        Err(err)
            if matches!(
                aws_sdk_kinesis::error::ProvideErrorMetadata::code(&err),
                Some("AccessDeniedException" | "AccessDenied")
            ) =>
        {
            tracing::warn!(
                stream,
                "kinesis:DescribeStreamSummary is denied: capture assumes the default 1 MiB record \
                 limit (grant it to use a raised --max-record-size-kib)"
            );
            crate::sink::kinesis::LIMITS
        }
        Err(source) => {
            return Err(RunError::StreamLimits {
                stream: stream.clone(),
                source: Box::new(source),
            })
        }
    };
    drop(starting);
    let recovery = Recovery {
        log: capture::delivery::DeliveryLog::new(kinesis.clone(), &stream, &cfg.slot),
        policy: on_slot_loss,
        margin: resync_margin,
    };
    tracing::info!(
        stream,
        max_record_bytes = limits.bytes_per_record,
        "kinesis stream's record limit"
    );
    let claims = ClaimCheckStore::new(eventing::claim_check::s3_client(&aws), &claim_check_bucket);
    let sink = Arc::new(
        KinesisSink::new(kinesis, &stream, metrics.clone())
            .with_claim_checks(claims)
            .with_limits(limits),
    );
    capture::run(&cfg, sink, metrics, shutdown, Some(recovery)).await?;
    Ok(())
}

/// Opens what the relay writes to (the dead-letter queue must exist).
pub async fn relay_context(start: RelayStart, metrics: Arc<Metrics>) -> Result<Arc<RelayContext>, RunError> {
    let aws = crate::aws_config().await;
    let dlq = DeadLetterQueue::open(aws_sdk_sqs::Client::new(&aws), &start.dead_letter_queue)
        .await
        .map_err(|source| RunError::DeadLetterQueue {
            queue: start.dead_letter_queue.clone(),
            source,
        })?;
    let s3 = eventing::claim_check::s3_client(&aws);
    let claim_checks = ClaimCheckStore::new(s3.clone(), &start.claim_check_bucket);
    let publisher = Publisher::new(
        PutEventsClient::new(&aws).await?,
        &start.event_bus,
        &start.event_source,
        start.max_event_bytes,
        claim_checks,
        metrics.publisher.clone(),
    )
    .with_calls_at_once(start.put_events_concurrency)
    .with_contracts(start.contracts.clone());
    let worker_id = start.worker_id.unwrap_or_else(default_worker_id);
    let leases = LeaseTable::new(
        aws_sdk_dynamodb::Client::new(&aws),
        &start.checkpoint_table,
        &start.stream,
        &worker_id,
    );
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let consumer = match start.consumer_name {
        Some(name) => Some(relay::fan_out::Consumer {
            arn: relay::fan_out::ensure_consumer(&kinesis, &start.stream, &name).await?,
            name,
        }),
        None => None,
    };
    Ok(Arc::new(RelayContext {
        kinesis,
        reader: GetRecordsClient::new(&aws).await?,
        stream: start.stream,
        publisher,
        s3,
        dlq,
        leases,
        envelope: start.envelope,
        metrics,
        lease_duration: start.lease_duration,
        poll_interval: start.poll_interval,
        max_reads_per_second: start.max_reads_per_second,
        consumer,
        shutdown_timeout: start.shutdown_timeout,
    }))
}

/// Capture and relay in one process (`bridge run`).
pub async fn pipeline(
    capture_start: CaptureStart,
    relay: Arc<RelayContext>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // One stage failing stops the other: a half-running pipeline only hides the failure.
    let stop = shutdown.child_token();
    let capture_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            // Even a panic in capture stops the relay: the guard cancels on drop.
            let _stop_relay = stop.clone().drop_guard();
            capture(capture_start, metrics, stop).await
        }
    });
    let relay_result = relay::run(relay, stop.clone()).await;
    stop.cancel();
    capture_task.await.map_err(RunError::CaptureTask)??;
    relay_result?;
    Ok(())
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() { "relay".to_owned() } else { host };
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}
