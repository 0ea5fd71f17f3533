//! `bridge setup`: creates what the pipeline needs in AWS, idempotently, against any endpoint.

use std::time::Duration;

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::StreamStatus;

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

/// Creates the stream with `shards` shards unless it exists, then waits until it is active.
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
            if out.stream_description_summary().map(|s| s.stream_status()) == Some(&StreamStatus::Active) {
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

/// Creates the event bus unless it exists.
pub async fn ensure_bus(client: &aws_sdk_eventbridge::Client, bus: &str) -> Result<bool, SetupError> {
    match client.create_event_bus().name(bus).send().await {
        Ok(_) => Ok(true),
        Err(err) if err.code() == Some("ResourceAlreadyExistsException") => Ok(false),
        Err(err) => Err(failed("event bus", bus, err)),
    }
}

/// Creates the checkpoint/lease table (key `lease_key`, on-demand) unless it exists.
pub async fn ensure_checkpoint_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<bool, SetupError> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let key = KeySchemaElement::builder()
        .attribute_name("lease_key")
        .key_type(KeyType::Hash)
        .build();
    let attr = AttributeDefinition::builder()
        .attribute_name("lease_key")
        .attribute_type(ScalarAttributeType::S)
        .build();
    let (key, attr) = match (key, attr) {
        (Ok(k), Ok(a)) => (k, a),
        (Err(e), _) | (_, Err(e)) => {
            let (kind, name, code) = ("dynamodb table", table.into(), "InvalidRequest".into());
            return Err(SetupError::Create {
                kind,
                name,
                code,
                source: Box::new(e),
            });
        }
    };
    let created = match client
        .create_table()
        .table_name(table)
        .key_schema(key)
        .attribute_definitions(attr)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
    {
        Ok(_) => true,
        Err(err) if err.code() == Some("ResourceInUseException") => false,
        Err(err) => return Err(failed("dynamodb table", table, err)),
    };
    for _ in 0..240 {
        let status = client.describe_table().table_name(table).send().await.ok();
        let active = status
            .and_then(|o| o.table().and_then(|t| t.table_status().cloned()))
            .is_some_and(|s| s == aws_sdk_dynamodb::types::TableStatus::Active);
        if active {
            return Ok(created);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(SetupError::NotActive {
        kind: "dynamodb table",
        name: table.into(),
    })
}

/// Creates the claim-check bucket unless it exists.
pub async fn ensure_bucket(
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
        .send()
        .await
    {
        Ok(out) => Ok(out.queue_url().unwrap_or_default().to_owned()),
        Err(err) => Err(failed("sqs queue", name, err)),
    }
}

/// All AWS SDK errors share smithy's error-metadata trait, so one helper names the code.
fn failed<E>(kind: &'static str, name: &str, err: E) -> SetupError
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
