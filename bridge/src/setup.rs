//! `bridge setup`'s own resources: the Kinesis stream and the lease/checkpoint table (the
//! rest is `eventing::provision`).

use std::time::Duration;

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::{EncryptionType, StreamStatus};
pub use eventing::provision::*;

/// The key a stream is encrypted with: Kinesis' own AWS-managed key, which needs no KMS
/// permission in any role (deploy/cloudformation/outbox-bridge.yaml uses the same).
pub const STREAM_KEY: &str = "alias/aws/kinesis";

/// Creates the stream with `shards` shards unless it exists, waits until it is active, and
/// encrypts it at rest ([`STREAM_KEY`]) unless it already is.
pub async fn ensure_stream(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: i32,
) -> Result<bool, SetupError> {
    let created = match client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
    {
        Ok(_) => true,
        Err(err) if err.code() == Some("ResourceInUseException") => false,
        Err(err) => {
            return Err(SetupError::CreateStream {
                stream: stream.into(),
                code: err.code().unwrap_or("unknown").into(),
                source: Box::new(err),
            })
        }
    };
    let wait = Duration::from_secs(60);
    let started = tokio::time::Instant::now();
    while started.elapsed() < wait {
        let summary = client.describe_stream_summary().stream_name(stream).send().await;
        if let Ok(out) = summary {
            let summary = out.stream_description_summary();
            if summary.map(|s| s.stream_status()) == Some(&StreamStatus::Active) {
                if summary.and_then(|s| s.encryption_type()) != Some(&EncryptionType::Kms) {
                    client
                        .start_stream_encryption()
                        .stream_name(stream)
                        .encryption_type(EncryptionType::Kms)
                        .key_id(STREAM_KEY)
                        .send()
                        .await
                        .map_err(|err| failed("kinesis stream encryption", stream, err))?;
                    // Active again once encryption is on: look again.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                tracing::info!(stream, created, "kinesis stream ready");
                return Ok(created);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(SetupError::StreamNotActive {
        stream: stream.into(),
        seconds: wait.as_secs(),
    })
}

/// Sets the stream's maximum record size (`UpdateMaxRecordSize`, 1024 to 10240 KiB) unless it
/// is that already, and waits until the stream says so. Returns whether it changed. Capture
/// reads the limit when it starts: a running capture takes a raised limit up when restarted.
pub async fn ensure_max_record_size(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    kib: i32,
) -> Result<bool, SetupError> {
    let wait = Duration::from_secs(60);
    let started = tokio::time::Instant::now();
    let mut asked = false;
    while started.elapsed() < wait {
        let out = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(|err| failed("kinesis stream record size", stream, err))?;
        let Some(summary) = out.stream_description_summary() else {
            break;
        };
        // A stream that does not say has the default size.
        let now = summary.max_record_size_in_kib().unwrap_or(1024);
        if now == kib && summary.stream_status() == &StreamStatus::Active {
            return Ok(asked);
        }
        if !asked && summary.stream_status() == &StreamStatus::Active {
            client
                .update_max_record_size()
                .stream_arn(summary.stream_arn())
                .max_record_size_in_kib(kib)
                .send()
                .await
                .map_err(|err| failed("kinesis stream record size", stream, err))?;
            asked = true;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(SetupError::StreamNotActive {
        stream: stream.into(),
        seconds: wait.as_secs(),
    })
}

/// Creates the checkpoint/lease table (key `lease_key`, on-demand) unless it exists.
pub async fn ensure_checkpoint_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<bool, SetupError> {
    let created = ensure_table(client, table, "lease_key", None).await?;
    // Worker heartbeat items expire; shard leases carry no such attribute and never do.
    ensure_ttl(client, table, crate::relay::lease::WORKER_TTL_ATTRIBUTE).await?;
    Ok(created)
}

/// Everything `bridge setup` makes in AWS, as its flags name it.
#[derive(Debug, Clone)]
pub struct AwsPlan {
    pub stream: String,
    pub shards: i32,
    /// Raise (or lower) the stream's record limit, when given.
    pub max_record_size_kib: Option<i32>,
    pub event_bus: String,
    /// Days the bus's archive keeps events (none when 0).
    pub archive_days: i32,
    pub checkpoint_table: String,
    pub claim_check_bucket: String,
    /// Days a claim check's object lives.
    pub claim_check_days: i32,
    pub dead_letter_queue: String,
}

/// How setup reports a resource: made now, or there before.
pub fn state(created: bool) -> &'static str {
    if created {
        "created"
    } else {
        "already present"
    }
}

/// Makes (idempotently) every AWS resource of `plan`, in dependency order; `report` gets one
/// line per resource, saying whether it was created or already there.
pub async fn ensure_aws(
    aws: &aws_config::SdkConfig,
    plan: &AwsPlan,
    mut report: impl FnMut(String),
) -> Result<(), SetupError> {
    let kinesis = aws_sdk_kinesis::Client::new(aws);
    let stream = &plan.stream;
    let created = ensure_stream(&kinesis, stream, plan.shards).await?;
    report(format!("kinesis stream {stream}: {}", state(created)));
    if let Some(kib) = plan.max_record_size_kib {
        let changed = ensure_max_record_size(&kinesis, stream, kib).await?;
        let how = if changed { "set" } else { "unchanged" };
        report(format!(
            "kinesis stream {stream}: max record size {kib} KiB ({how})"
        ));
    }
    let eventbridge = aws_sdk_eventbridge::Client::new(aws);
    let created = ensure_bus(&eventbridge, &plan.event_bus).await?;
    report(format!("event bus {}: {}", plan.event_bus, state(created)));
    if plan.archive_days > 0 {
        let archive = eventing::replay::archive_name(&plan.event_bus);
        let created = ensure_archive(&eventbridge, &plan.event_bus, &archive, plan.archive_days).await?;
        report(format!(
            "event archive {archive} ({} days): {}",
            plan.archive_days,
            state(created)
        ));
    }
    let dynamo = aws_sdk_dynamodb::Client::new(aws);
    let created = ensure_checkpoint_table(&dynamo, &plan.checkpoint_table).await?;
    report(format!(
        "checkpoint table {}: {}",
        plan.checkpoint_table,
        state(created)
    ));
    let region = aws.region().map(|r| r.as_ref().to_owned());
    let s3 = eventing::claim_check::s3_client(aws);
    let created = ensure_bucket(
        &s3,
        &plan.claim_check_bucket,
        region.as_deref(),
        plan.claim_check_days,
    )
    .await?;
    report(format!(
        "claim-check bucket {}: {}",
        plan.claim_check_bucket,
        state(created)
    ));
    ensure_queue(&aws_sdk_sqs::Client::new(aws), &plan.dead_letter_queue).await?;
    report(format!("dead-letter queue {}: ready", plan.dead_letter_queue));
    Ok(())
}
