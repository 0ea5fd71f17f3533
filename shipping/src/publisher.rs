//! The service's outbox publisher: reads the outbox table's DynamoDB Stream (every shard,
//! parents before children), publishes each inserted item to EventBridge with the same
//! envelope as the relay, marks it dispatched, and checkpoints the shard's sequence number
//! only after EventBridge accepted everything up to it. At least once: a crash between
//! publishing and checkpointing publishes again, and consumers dedupe by `event_id`.
//!
//! An item that is not an event, or that EventBridge refuses for its content, is parked in the
//! publisher's own dead-letter queue with its reason *before* the checkpoint passes it: nothing
//! is skipped with only a log line, and the outbox TTL cannot delete it unseen.
//!
//! A call EventBridge refuses as a whole before it accepted anything (the event, or a bus it
//! cannot take: `PublishError::RefusedFromTheStart`) holds the shard: nothing parked, no
//! checkpoint, the page read again after a growing pause — items written after it come with it,
//! and once one is accepted the refused one is parked. Stopping the service instead would stop
//! it again on the same item after each restart.
//!
//! One publisher per service is the intended deployment; a second one duplicates events
//! (harmless, see above) but loses nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue as TableValue;
use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata;
use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, ShardIteratorType};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::Store;
use eventing::deadletter::{DeadLetterError, DeadLetterQueue, Origin};
use eventing::event::Event;
use eventing::eventbridge::{PublishError, Publisher};
use eventing::retry::{transient_cause, while_transient, while_transient_until, Backoff};

#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// Pause after an empty read of a shard (DynamoDB Streams allows 5 reads/s per shard).
    pub poll_interval: Duration,
    /// How often the shard list is refreshed (shards roll over every few hours on AWS).
    pub refresh_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("outbox table `{0}` has no stream; run `shipping setup`")]
    NoStream(String),
    #[error("dynamodb streams {op} refused ({code})")]
    Streams {
        op: &'static str,
        code: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
}

#[derive(Clone)]
struct Context {
    streams: aws_sdk_dynamodbstreams::Client,
    store: Store,
    publisher: Publisher,
    dlq: DeadLetterQueue,
    metrics: Arc<Metrics>,
    cfg: PublisherConfig,
    stream_arn: String,
}

pub async fn run(
    streams: aws_sdk_dynamodbstreams::Client,
    store: Store,
    publisher: Publisher,
    dlq: DeadLetterQueue,
    metrics: Arc<Metrics>,
    cfg: PublisherConfig,
    cancel: CancellationToken,
) -> Result<(), PublisherError> {
    let outbox = store.tables.outbox.clone();
    // At start-up as later: a dropped connection or a 5xx is worth another try (the chaos run
    // found a restart during an AWS outage exiting here).
    let backoff = Backoff::call();
    let described = while_transient_until("DescribeTable", backoff, &cancel, || {
        store.client().describe_table().table_name(&outbox).send()
    })
    .await
    .map_err(|e| streams_error("DescribeTable", e))?;
    let Some(described) = described else {
        return Ok(());
    };
    let stream_arn = described
        .table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_owned)
        .ok_or_else(|| PublisherError::NoStream(outbox.clone()))?;
    tracing::info!(table = %outbox, stream = %stream_arn, "publishing the outbox stream");
    let ctx = Context {
        streams,
        store,
        publisher,
        dlq,
        metrics,
        cfg,
        stream_arn,
    };
    let mut finished: HashSet<String> = HashSet::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut workers: JoinSet<(String, Result<(), PublisherError>)> = JoinSet::new();
    loop {
        let shards = list_shards(&ctx).await?;
        let known: HashSet<&String> = shards.keys().collect();
        for (shard, parent) in &shards {
            if running.contains(shard) || finished.contains(shard) {
                continue;
            }
            if let Some(p) = parent
                .as_ref()
                .filter(|p| known.contains(p) && !finished.contains(*p))
            {
                tracing::debug!(shard, parent = %p, "waiting for the parent shard");
                continue;
            }
            running.insert(shard.clone());
            let (ctx, shard, cancel) = (ctx.clone(), shard.clone(), cancel.clone());
            workers.spawn(async move {
                let r = read_shard(&ctx, &shard, &cancel).await;
                (shard, r)
            });
        }
        let refresh = tokio::time::sleep(ctx.cfg.refresh_interval);
        tokio::pin!(refresh);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    while workers.join_next().await.is_some() {}
                    return Ok(());
                }
                Some(done) = workers.join_next(), if !workers.is_empty() => {
                    let Ok((shard, result)) = done else { continue };
                    running.remove(&shard);
                    result?;
                    // Ended (closed shard): its children may start now.
                    finished.insert(shard);
                    break;
                }
                _ = &mut refresh => break,
            }
        }
    }
}

/// A DynamoDB (Streams) call that failed for good, named.
fn streams_error<E>(op: &'static str, err: E) -> PublisherError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    PublisherError::Streams {
        op,
        code: err.code().unwrap_or("unknown").to_owned(),
        source: Box::new(err),
    }
}

/// Every shard of the stream with its parent.
async fn list_shards(ctx: &Context) -> Result<HashMap<String, Option<String>>, PublisherError> {
    let mut shards = HashMap::new();
    let mut start: Option<String> = None;
    loop {
        let backoff = Backoff::call();
        let out = while_transient("DescribeStream", backoff, || {
            ctx.streams
                .describe_stream()
                .stream_arn(&ctx.stream_arn)
                .set_exclusive_start_shard_id(start.clone())
                .send()
        })
        .await
        .map_err(|err| streams_error("DescribeStream", err))?;
        let Some(desc) = out.stream_description else {
            return Ok(shards);
        };
        for shard in desc.shards() {
            if let Some(id) = shard.shard_id() {
                shards.insert(id.to_owned(), shard.parent_shard_id().map(str::to_owned));
            }
        }
        match desc.last_evaluated_shard_id {
            Some(last) => start = Some(last),
            None => return Ok(shards),
        }
    }
}

/// Reads one shard from its checkpoint to its end (a closed shard) or until cancelled.
async fn read_shard(ctx: &Context, shard: &str, cancel: &CancellationToken) -> Result<(), PublisherError> {
    let mut checkpoint = load_checkpoint(ctx, shard).await?;
    if checkpoint.finished {
        return Ok(());
    }
    let mut iterator = shard_iterator(ctx, shard, checkpoint.sequence.as_deref()).await?;
    let mut backoff = Backoff::call();
    let mut held = Backoff::call();
    // Beats once a page is read and settled: a shard that cannot be read or published for the
    // stall bound shows on /healthz, however often its calls are retried meanwhile.
    let alive = ctx.metrics.health.beacon(format!(
        "shipping: the publisher made no progress on shard {shard}"
    ));
    while !cancel.is_cancelled() {
        let out = match ctx
            .streams
            .get_records()
            .shard_iterator(&iterator)
            .limit(1000)
            .send()
            .await
        {
            Ok(out) => {
                backoff.reset();
                out
            }
            Err(err) if err.code() == Some("ExpiredIteratorException") => {
                iterator = shard_iterator(ctx, shard, checkpoint.sequence.as_deref()).await?;
                continue;
            }
            Err(err) if err.code() == Some("TrimmedDataAccessException") => {
                tracing::error!(shard, "the stream trimmed records this publisher never read (down for over 24 h?): undispatched outbox items older than the stream must be republished");
                // Read again from the oldest record (in memory until the next page is settled):
                // a held page re-reads from here, and the trimmed sequence number is refused.
                checkpoint.sequence = None;
                iterator = shard_iterator(ctx, shard, None).await?;
                continue;
            }
            Err(err) if transient_cause(&err).is_some() => {
                let delay = backoff.next_delay();
                tracing::warn!(shard, error = %err, delay_ms = delay.as_millis() as u64, "GetRecords failed, retrying");
                // A shutdown during an outage need not wait out the backoff.
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
                continue;
            }
            Err(err) => {
                return Err(PublisherError::Streams {
                    op: "GetRecords",
                    code: err.code().unwrap_or("unknown").to_owned(),
                    source: Box::new(err),
                })
            }
        };
        let records = out.records.unwrap_or_default();
        let last_sequence = records
            .last()
            .and_then(|r| r.dynamodb())
            .and_then(|d| d.sequence_number())
            .map(str::to_owned);
        let mut events: Vec<(Event, String)> = Vec::new();
        let mut not_events = Vec::new();
        for record in records
            .iter()
            .filter(|r| r.event_name() == Some(&OperationType::Insert))
        {
            let Some(change) = record.dynamodb() else { continue };
            let sequence = change.sequence_number().unwrap_or_default();
            let Some(image) = change.new_image() else { continue };
            match event_from_image(image) {
                Ok(event) => events.push((event, sequence.to_owned())),
                Err(not_an_event) => {
                    let reason = format!(
                        "outbox item is not an event: {}",
                        eventing::error_chain::chain(&not_an_event)
                    );
                    not_events.push((sequence.to_owned(), reason, image_json(image)));
                }
            }
        }
        if !events.is_empty() {
            match publish(ctx, shard, events).await {
                Err(PublisherError::Publish(err @ PublishError::RefusedFromTheStart { .. })) => {
                    let delay = held.next_delay();
                    tracing::warn!(shard, error = %err, delay_ms = delay.as_millis() as u64, "holding the page until eventbridge accepts an event");
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                    iterator = shard_iterator(ctx, shard, checkpoint.sequence.as_deref()).await?;
                    continue;
                }
                other => other?,
            }
            held.reset();
        }
        // After the publish, so a held page has parked nothing yet.
        for (sequence, reason, image) in not_events {
            park(ctx, shard, &sequence, &reason, image.as_bytes()).await?;
        }
        if let Some(seq) = last_sequence {
            save_checkpoint(ctx, shard, Some(&seq), false).await?;
            checkpoint.sequence = Some(seq);
        }
        alive.beat();
        match out.next_shard_iterator {
            Some(next) => iterator = next,
            None => {
                save_checkpoint(ctx, shard, checkpoint.sequence.as_deref(), true).await?;
                tracing::info!(shard, "shard ended");
                return Ok(());
            }
        }
        if records.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(ctx.cfg.poll_interval) => {}
            }
        }
    }
    Ok(())
}

async fn publish(ctx: &Context, shard: &str, events: Vec<(Event, String)>) -> Result<(), PublisherError> {
    let ids: Vec<String> = events.iter().map(|(e, _)| e.event_id.clone()).collect();
    let sequences: HashMap<String, String> = events
        .iter()
        .map(|(e, seq)| (e.event_id.clone(), seq.clone()))
        .collect();
    let refused = ctx
        .publisher
        .publish(events.into_iter().map(|(e, _)| e).collect())
        .await?;
    let refused_ids: HashSet<&str> = refused.iter().map(|r| r.event.event_id.as_str()).collect();
    for r in &refused {
        // Our own events, so a refusal is a bug or a limit change: loud, counted, parked, left undispatched.
        tracing::error!(shard, event_id = %r.event.event_id, reason = %r.reason, "eventbridge refused a shipment event");
        ctx.metrics.outbox_events_refused.inc();
        let sequence = sequences.get(&r.event.event_id).map_or("", String::as_str);
        let original = format!(
            r#"{{"detail-type":{},"detail":{}}}"#,
            serde_json::to_string(&r.event.detail_type).unwrap_or_default(),
            r.event.detail()
        );
        park(ctx, shard, sequence, &r.reason, original.as_bytes()).await?;
    }
    for id in ids.iter().filter(|id| !refused_ids.contains(id.as_str())) {
        ctx.metrics.outbox_events_published.inc();
        tracing::debug!(event_id = %id, "published");
        let backoff = Backoff::data_path();
        while_transient("mark dispatched", backoff, || ctx.store.mark_dispatched(id)).await?;
    }
    Ok(())
}

/// Parks an outbox item in the publisher's dead-letter queue, retrying while SQS is unavailable:
/// the checkpoint must not pass an item that is neither published nor parked.
async fn park(
    ctx: &Context,
    shard: &str,
    sequence: &str,
    reason: &str,
    original: &[u8],
) -> Result<(), PublisherError> {
    let origin = Origin {
        stream: &ctx.stream_arn,
        shard_id: shard,
        sequence_number: sequence,
        partition_key: "",
    };
    let backoff = Backoff::call();
    let what = format!("park outbox item {sequence} of {shard}");
    while_transient(&what, backoff, || ctx.dlq.park(reason, original, &origin)).await?;
    ctx.metrics.outbox_events_parked.inc();
    tracing::error!(
        shard,
        sequence,
        reason,
        "outbox item parked in the publisher's dead-letter queue"
    );
    Ok(())
}

/// A stream image as JSON, for the dead-letter queue (strings and numbers as text).
fn image_json(image: &HashMap<String, AttributeValue>) -> String {
    let fields: serde_json::Map<String, serde_json::Value> = image
        .iter()
        .map(|(name, value)| {
            let value = match value {
                AttributeValue::S(s) | AttributeValue::N(s) => serde_json::Value::String(s.clone()),
                AttributeValue::Bool(b) => serde_json::Value::Bool(*b),
                other => serde_json::Value::String(format!("{other:?}")),
            };
            (name.clone(), value)
        })
        .collect();
    serde_json::Value::Object(fields).to_string()
}

fn text(image: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    match image.get(name)? {
        AttributeValue::S(s) => Some(s.clone()),
        AttributeValue::N(n) => Some(n.clone()),
        _ => None,
    }
}

/// Why an outbox item is not an event.
#[derive(Debug, thiserror::Error)]
enum NotAnEvent {
    #[error("no event_id")]
    NoEventId,
    #[error("{0}: no detail_type")]
    NoDetailType(String),
    #[error("{event_id}: data is not JSON")]
    DataNotJson {
        event_id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// An outbox item (its stream image) as an event with the relay's envelope.
fn event_from_image(image: &HashMap<String, AttributeValue>) -> Result<Event, NotAnEvent> {
    let event_id = text(image, "event_id").ok_or(NotAnEvent::NoEventId)?;
    let detail_type = text(image, "detail_type").ok_or_else(|| NotAnEvent::NoDetailType(event_id.clone()))?;
    // Kept as the stored text (validated, never re-encoded): numbers go out digit for digit.
    let stored = text(image, "data");
    let data = match &stored {
        Some(text) => serde_json::from_str::<&RawValue>(text).map_err(|source| NotAnEvent::DataNotJson {
            event_id: event_id.clone(),
            source,
        })?,
        None => eventing::event::null_data(),
    };
    let version = text(image, "aggregate_version").and_then(|v| v.parse::<i64>().ok());
    let traceparent = text(image, "traceparent");
    let metadata = json!({
        "event_id": event_id,
        "aggregate_type": text(image, "aggregate_type"),
        "aggregate_id": text(image, "aggregate_id"),
        "aggregate_version": version,
        "occurred_at": text(image, "occurred_at"),
        "traceparent": traceparent,
        "causation_id": text(image, "causation_id"),
    });
    Ok(Event::new(event_id, detail_type, &metadata, data, traceparent))
}

struct Checkpoint {
    sequence: Option<String>,
    finished: bool,
}

async fn load_checkpoint(ctx: &Context, shard: &str) -> Result<Checkpoint, PublisherError> {
    let table = &ctx.store.tables.checkpoints;
    let backoff = Backoff::call();
    // A worker starting during an AWS outage waits it out (the chaos run's brownouts).
    let out = while_transient("GetItem checkpoint", backoff, || {
        ctx.store
            .client()
            .get_item()
            .table_name(table)
            .key("shard_id", TableValue::S(shard.into()))
            .consistent_read(true)
            .send()
    })
    .await
    .map_err(|e| streams_error("GetItem checkpoint", e))?;
    let item = out.item.unwrap_or_default();
    Ok(Checkpoint {
        sequence: item.get("sequence_number").and_then(|v| v.as_s().ok()).cloned(),
        finished: item
            .get("finished")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
    })
}

async fn save_checkpoint(
    ctx: &Context,
    shard: &str,
    sequence: Option<&str>,
    finished: bool,
) -> Result<(), PublisherError> {
    let table = &ctx.store.tables.checkpoints;
    let backoff = Backoff::data_path();
    while_transient("PutItem checkpoint", backoff, || {
        let mut put = ctx
            .store
            .client()
            .put_item()
            .table_name(table)
            .item("shard_id", TableValue::S(shard.into()))
            .item("stream_arn", TableValue::S(ctx.stream_arn.clone()))
            .item("finished", TableValue::Bool(finished));
        if let Some(seq) = sequence {
            put = put.item("sequence_number", TableValue::S(seq.into()));
        }
        put.send()
    })
    .await
    .map(|_| ())
    .map_err(|err| streams_error("PutItem checkpoint", err))
}

async fn shard_iterator(ctx: &Context, shard: &str, after: Option<&str>) -> Result<String, PublisherError> {
    let backoff = Backoff::call();
    let what = format!("GetShardIterator {shard}");
    let out = while_transient(&what, backoff, || {
        let req = ctx
            .streams
            .get_shard_iterator()
            .stream_arn(&ctx.stream_arn)
            .shard_id(shard);
        match after {
            Some(seq) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        }
        .send()
    })
    .await
    .map_err(|err| streams_error("GetShardIterator", err))?;
    out.shard_iterator.ok_or_else(|| PublisherError::Streams {
        op: "GetShardIterator",
        code: "NoIterator".into(),
        source: "the response had no iterator".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_image_becomes_an_event_with_the_envelope() {
        let image: HashMap<String, AttributeValue> = [
            ("event_id", AttributeValue::S("e1".into())),
            ("detail_type", AttributeValue::S("ShipmentScheduled".into())),
            ("aggregate_type", AttributeValue::S("Shipment".into())),
            ("aggregate_id", AttributeValue::S("o1".into())),
            ("aggregate_version", AttributeValue::N("1".into())),
            ("causation_id", AttributeValue::S("m1".into())),
            (
                "data",
                AttributeValue::S(r#"{"state":"SCHEDULED","fee":12345678901234567.89}"#.into()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let e = event_from_image(&image).unwrap();
        assert_eq!(e.detail_type, "ShipmentScheduled");
        assert_eq!(e.metadata_value()["aggregate_version"], 1);
        assert_eq!(e.metadata_value()["causation_id"], "m1");
        assert_eq!(e.data(), r#"{"state":"SCHEDULED","fee":12345678901234567.89}"#);
    }
}
