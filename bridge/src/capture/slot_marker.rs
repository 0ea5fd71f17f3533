//! What capture remembers outside Postgres, as tags on the Kinesis stream it writes to — the
//! one place that survives the database (a dropped slot, a failover, a restore):
//! - `outbox-bridge.slot.<slot>`: the slot was created for this stream. A slot that is missing
//!   although the tag says it was made was dropped (or lost with its database), and recreating
//!   it silently would skip every change made meanwhile.
//! - `outbox-bridge.delivered.<slot>` and `outbox-bridge.resync.<slot>`: see `delivery`.
//!
//! Tag values may hold letters, digits, spaces and `_ . / = + - % @` only (no `:`), and
//! AddTagsToStream allows 5 calls per second per account: capture writes a few per minute.

use aws_sdk_kinesis::error::ProvideErrorMetadata;

#[derive(Debug, thiserror::Error)]
#[error("cannot read or write the tag `{key}` on kinesis stream `{stream}` ({code})")]
pub struct MarkerError {
    pub stream: String,
    pub key: String,
    pub code: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The value of `name=value` among a tag value's space-separated fields.
pub fn tag_field<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn tag_key(slot: &str) -> String {
    format!("outbox-bridge.slot.{slot}")
}

/// The value of the tag `key` on the stream, if it is set.
pub async fn read_tag(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    key: &str,
) -> Result<Option<String>, MarkerError> {
    let mut start: Option<String> = None;
    loop {
        let out = kinesis
            .list_tags_for_stream()
            .stream_name(stream)
            .set_exclusive_start_tag_key(start.take())
            .send()
            .await
            .map_err(|e| marker_error(stream, key, e))?;
        if let Some(tag) = out.tags().iter().find(|t| t.key() == key) {
            return Ok(Some(tag.value().unwrap_or_default().to_owned()));
        }
        match (out.has_more_tags(), out.tags().last()) {
            (true, Some(last)) => start = Some(last.key().to_owned()),
            _ => return Ok(None),
        }
    }
}

/// Sets the tag `key` on the stream (replacing its value).
pub async fn write_tag(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    key: &str,
    value: &str,
) -> Result<(), MarkerError> {
    kinesis
        .add_tags_to_stream()
        .stream_name(stream)
        .tags(key, value)
        .send()
        .await
        .map_err(|e| marker_error(stream, key, e))?;
    Ok(())
}

/// Whether a slot of this name was created for this stream before.
pub async fn was_created(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    slot: &str,
) -> Result<bool, MarkerError> {
    Ok(read_tag(kinesis, stream, &tag_key(slot)).await?.is_some())
}

/// Records that the slot was created, with the LSN it starts at.
pub async fn mark_created(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    slot: &str,
    lsn: &str,
) -> Result<(), MarkerError> {
    write_tag(kinesis, stream, &tag_key(slot), &format!("created at {lsn}")).await
}

fn marker_error<E>(stream: &str, key: &str, err: E) -> MarkerError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    MarkerError {
        stream: stream.into(),
        key: key.into(),
        code: err.code().unwrap_or("unknown").into(),
        source: Box::new(err),
    }
}
