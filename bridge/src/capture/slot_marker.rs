//! Remembers, outside Postgres, that a slot was created for a stream: a tag on the Kinesis
//! stream. A slot that is missing although the tag says it was made was dropped (or lost with
//! its database), and recreating it silently would skip every change made meanwhile.

use aws_sdk_kinesis::error::ProvideErrorMetadata;

#[derive(Debug, thiserror::Error)]
#[error("cannot read or write the slot marker tag on kinesis stream `{stream}` ({code})")]
pub struct MarkerError {
    pub stream: String,
    pub code: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn tag_key(slot: &str) -> String {
    format!("outbox-bridge.slot.{slot}")
}

/// Whether a slot of this name was created for this stream before.
pub async fn was_created(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    slot: &str,
) -> Result<bool, MarkerError> {
    let key = tag_key(slot);
    let mut start: Option<String> = None;
    loop {
        let out = kinesis
            .list_tags_for_stream()
            .stream_name(stream)
            .set_exclusive_start_tag_key(start.take())
            .send()
            .await
            .map_err(|e| marker_error(stream, e))?;
        if out.tags().iter().any(|t| t.key() == key) {
            return Ok(true);
        }
        match (out.has_more_tags(), out.tags().last()) {
            (true, Some(last)) => start = Some(last.key().to_owned()),
            _ => return Ok(false),
        }
    }
}

/// Records that the slot was created, with the LSN it starts at.
pub async fn mark_created(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    slot: &str,
    lsn: &str,
) -> Result<(), MarkerError> {
    kinesis
        .add_tags_to_stream()
        .stream_name(stream)
        .tags(tag_key(slot), format!("created at {lsn}"))
        .send()
        .await
        .map_err(|e| marker_error(stream, e))?;
    Ok(())
}

fn marker_error<E>(stream: &str, err: E) -> MarkerError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    MarkerError {
        stream: stream.into(),
        code: err.code().unwrap_or("unknown").into(),
        source: Box::new(err),
    }
}
