//! What capture remembers outside Postgres, as tags on the Kinesis stream it writes to — the
//! one place that survives the database (a dropped slot, a failover, a restore):
//! - `outbox-bridge.slot.<slot>`: the slot was created for this stream. A slot that is missing
//!   although the tag says it was made was dropped (or lost with its database), and recreating
//!   it silently would skip every change made meanwhile.
//! - `outbox-bridge.delivered.<slot>` and `outbox-bridge.resync.<slot>`: see `delivery`.
//! - `outbox-bridge.full-load.<slot>`: `bridge setup --full-load` is `running` from before its
//!   slot exists until every snapshot row is in Kinesis, then `done`. A slot whose full load
//!   is still `running` was left by a load cut short: streaming from it would skip the rows
//!   the load had not sent, so capture refuses it and the load is run again.
//!
//! Tag values may hold letters, digits, spaces and `_ . / = + - % @` only (no `:`), and
//! AddTagsToStream allows 5 calls per second per account: capture writes a few per minute.

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
#[error("cannot read or write the tag `{key}` on kinesis stream `{stream}` ({code})")]
pub struct MarkerError {
    pub stream: String,
    pub key: String,
    pub code: String,
    /// Whether waiting may help (see [`MarkerError::is_transient`]).
    transient: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl MarkerError {
    /// An outage, throttling — or a stream that does not exist yet (`bridge setup` or a
    /// CloudFormation stack may create it after capture starts) — is waited out; a refusal
    /// (AccessDenied, a bad request) stops capture with its reason, since a restart meets it again.
    pub fn is_transient(&self) -> bool {
        self.transient
    }
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

fn full_load_key(slot: &str) -> String {
    format!("outbox-bridge.full-load.{slot}")
}

/// Whether a full load for `slot` began and never finished (its tag says `running`).
pub async fn full_load_unfinished(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    slot: &str,
) -> Result<bool, MarkerError> {
    let value = read_tag(kinesis, stream, &full_load_key(slot)).await?;
    Ok(value.as_deref().and_then(|v| tag_field(v, "state")) == Some("running"))
}

/// Records a full load's state: `running` (with when it began) or `done` (with its rows).
pub async fn mark_full_load(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    slot: &str,
    state: &str,
) -> Result<(), MarkerError> {
    write_tag(kinesis, stream, &full_load_key(slot), state).await
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

fn marker_error<E>(stream: &str, key: &str, err: SdkError<E, HttpResponse>) -> MarkerError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient =
        eventing::retry::transient_cause(&err).is_some() || err.code() == Some("ResourceNotFoundException");
    MarkerError {
        stream: stream.into(),
        key: key.into(),
        code: err.code().unwrap_or("unknown").into(),
        transient,
        source: Box::new(err),
    }
}
