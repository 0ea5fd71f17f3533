//! Creating AWS resources idempotently, against any endpoint: what `bridge setup` and
//! `shipping setup` are made of.

use std::time::Duration;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot create kinesis stream `{stream}` ({code})")]
    CreateStream {
        stream: String,
        code: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("kinesis stream `{stream}` did not become active within {seconds} s")]
    StreamNotActive { stream: String, seconds: u64 },
    #[error("cannot create {kind} `{name}` ({code})")]
    Create {
        kind: &'static str,
        name: String,
        code: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{kind} `{name}` did not become active")]
    NotActive { kind: &'static str, name: String },
}

/// Creates the event bus unless it exists.
pub async fn ensure_bus(client: &aws_sdk_eventbridge::Client, bus: &str) -> Result<bool, SetupError> {
    match client.create_event_bus().name(bus).send().await {
        Ok(_) => Ok(true),
        Err(err) if err.code() == Some("ResourceAlreadyExistsException") => Ok(false),
        Err(err) => Err(failed("event bus", bus, err)),
    }
}

/// Creates the bus's archive (every event, kept `retention_days`; 0 = for ever) unless it
/// exists: what `bridge replay` and `shipping rebuild` replay from.
pub async fn ensure_archive(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    archive: &str,
    retention_days: i32,
) -> Result<bool, SetupError> {
    let bus_arn = client
        .describe_event_bus()
        .name(bus)
        .send()
        .await
        .map_err(|e| failed("event bus archive", archive, e))?
        .arn()
        .unwrap_or_default()
        .to_owned();
    match client
        .create_archive()
        .archive_name(archive)
        .event_source_arn(bus_arn)
        .retention_days(retention_days)
        .description("every event of the bus, for replays (outbox-bridge)")
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if err.code() == Some("ResourceAlreadyExistsException") => Ok(false),
        Err(err) => Err(failed("event bus archive", archive, err)),
    }
}

/// Creates an on-demand table with a string hash key (and a stream of new images when
/// `stream` is set) unless it exists, then waits until it is active. An existing table
/// without the requested stream gets one: a publisher reading it would otherwise wait forever.
pub async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
    stream: Option<aws_sdk_dynamodb::types::StreamViewType>,
) -> Result<bool, SetupError> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    };
    let invalid = |e: aws_sdk_dynamodb::error::BuildError| SetupError::Create {
        kind: "dynamodb table",
        name: table.into(),
        code: "InvalidRequest".into(),
        source: Box::new(e),
    };
    let key_schema = KeySchemaElement::builder()
        .attribute_name(key)
        .key_type(KeyType::Hash)
        .build()
        .map_err(invalid)?;
    let attr = AttributeDefinition::builder()
        .attribute_name(key)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(invalid)?;
    let spec = stream.clone().map(|view| {
        StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(view)
            .build()
    });
    let spec = spec.transpose().map_err(invalid)?;
    let created = match client
        .create_table()
        .table_name(table)
        .key_schema(key_schema)
        .attribute_definitions(attr)
        .billing_mode(BillingMode::PayPerRequest)
        .set_stream_specification(spec.clone())
        .send()
        .await
    {
        Ok(_) => true,
        Err(err) if err.code() == Some("ResourceInUseException") => false,
        Err(err) => return Err(failed("dynamodb table", table, err)),
    };
    wait_active(client, table).await?;
    if !created && spec.is_some() {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| failed("dynamodb table", table, e))?;
        let has_stream = described
            .table()
            .and_then(|t| t.stream_specification())
            .is_some_and(|s| s.stream_enabled());
        if !has_stream {
            client
                .update_table()
                .table_name(table)
                .set_stream_specification(spec)
                .send()
                .await
                .map_err(|e| failed("dynamodb table stream", table, e))?;
            wait_active(client, table).await?;
        }
    }
    Ok(created)
}

/// Turns on DynamoDB's TTL on `attribute` (epoch seconds) unless it is already on.
pub async fn ensure_ttl(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    attribute: &str,
) -> Result<(), SetupError> {
    use aws_sdk_dynamodb::types::{TimeToLiveSpecification, TimeToLiveStatus};
    let current = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| failed("dynamodb ttl", table, e))?;
    let on = current.time_to_live_description().is_some_and(|d| {
        matches!(
            d.time_to_live_status(),
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) && d.attribute_name() == Some(attribute)
    });
    if on {
        return Ok(());
    }
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(attribute)
        .build()
        .map_err(|e| SetupError::Create {
            kind: "dynamodb ttl",
            name: table.into(),
            code: "InvalidRequest".into(),
            source: Box::new(e),
        })?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(|e| failed("dynamodb ttl", table, e))?;
    Ok(())
}

async fn wait_active(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), SetupError> {
    for _ in 0..240 {
        let status = client.describe_table().table_name(table).send().await.ok();
        let active = status
            .and_then(|o| o.table().and_then(|t| t.table_status().cloned()))
            .is_some_and(|s| s == aws_sdk_dynamodb::types::TableStatus::Active);
        if active {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(SetupError::NotActive {
        kind: "dynamodb table",
        name: table.into(),
    })
}

/// Where claim-checked payloads are written in the bucket.
pub const CLAIM_CHECK_PREFIX: &str = "claim-checks/";

/// Creates the claim-check bucket unless it exists; then (every time, so an older bucket is
/// brought in line) encryption at rest, no public access, and claim checks expiring after
/// `retention_days`.
pub async fn ensure_bucket(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    region: Option<&str>,
    retention_days: i32,
) -> Result<bool, SetupError> {
    let created = create_bucket(client, bucket, region).await?;
    configure_bucket(client, bucket, retention_days).await?;
    Ok(created)
}

async fn configure_bucket(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    retention_days: i32,
) -> Result<(), SetupError> {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
        LifecycleRuleFilter, PublicAccessBlockConfiguration, ServerSideEncryption,
        ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    };
    let invalid = |e: aws_sdk_s3::error::BuildError| failed_build("s3 bucket", bucket, e);
    let sse = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::Aes256)
                        .build()
                        .map_err(invalid)?,
                )
                .build(),
        )
        .build()
        .map_err(invalid)?;
    client
        .put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(sse)
        .send()
        .await
        .map_err(|e| failed("s3 bucket encryption", bucket, e))?;
    client
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .block_public_policy(true)
                .ignore_public_acls(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| failed("s3 public access block", bucket, e))?;
    let rule = LifecycleRule::builder()
        .id("expire-claim-checks")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(CLAIM_CHECK_PREFIX).build())
        .expiration(LifecycleExpiration::builder().days(retention_days).build())
        .build()
        .map_err(invalid)?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(invalid)?,
        )
        .send()
        .await
        .map_err(|e| failed("s3 bucket lifecycle", bucket, e))?;
    Ok(())
}

fn failed_build(kind: &'static str, name: &str, err: aws_sdk_s3::error::BuildError) -> SetupError {
    SetupError::Create {
        kind,
        name: name.into(),
        code: "invalid request".into(),
        source: Box::new(err),
    }
}

async fn create_bucket(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    region: Option<&str>,
) -> Result<bool, SetupError> {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    let mut req = client.create_bucket().bucket(bucket);
    // us-east-1 is the one region that refuses an explicit location constraint.
    if let Some(region) = region.filter(|r| *r != "us-east-1") {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match req.send().await {
        Ok(_) => Ok(true),
        Err(err)
            if matches!(
                err.code(),
                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
            ) =>
        {
            Ok(false)
        }
        Err(err) => Err(failed("s3 bucket", bucket, err)),
    }
}

/// Creates an SQS queue (idempotent by name) and returns its URL.
pub async fn ensure_queue(client: &aws_sdk_sqs::Client, name: &str) -> Result<String, SetupError> {
    use aws_sdk_sqs::types::QueueAttributeName;
    match client
        .create_queue()
        .queue_name(name)
        // Parked records wait for an operator: keep them for the maximum, 14 days.
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
        .send()
        .await
    {
        Ok(out) => Ok(out.queue_url().unwrap_or_default().to_owned()),
        Err(err) => Err(failed("sqs queue", name, err)),
    }
}

/// All AWS SDK errors share smithy's error-metadata trait, so one helper names the code.
pub fn failed<E>(kind: &'static str, name: &str, err: E) -> SetupError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().unwrap_or("unknown").to_owned();
    SetupError::Create {
        kind,
        name: name.into(),
        code,
        source: Box::new(err),
    }
}
