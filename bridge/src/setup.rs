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
