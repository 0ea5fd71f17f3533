//! The local endpoint's SubscribeToShard: enhanced fan-out as Kinesis serves it — an AWS
//! event stream (binary frames with CRCs, `aws-smithy-eventstream`) that first answers
//! `initial-response`, then pushes `SubscribeToShardEvent`s as records arrive, at most 2 MB/s
//! per consumer and shard, with an empty event now and then at the tip, and ends after five
//! minutes (the consumer subscribes again from where it is). Consumers are registered,
//! described and deregistered as on Kinesis: a registration gets a new ARN, a deregistered
//! consumer's subscriptions end and cannot be opened again.
//!
//! Served over HTTP/1.1 with a chunked body: the SDK reads an event stream the same way as over
//! real Kinesis' HTTP/2 (nothing in it requires HTTP/2; plain `http://` never negotiates it).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::State;

const SUBSCRIPTION: Duration = Duration::from_secs(300);
const BYTES_PER_SECOND: f64 = 2.0 * 1024.0 * 1024.0;
/// Records per pushed event, at most.
const EVENT_RECORDS: usize = 1000;
/// At the tip, an empty event this often (Kinesis keeps an idle subscription alive the same way).
const IDLE_EVENT: Duration = Duration::from_secs(1);

fn error(kind: &str, message: &str) -> axum::response::Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        json!({"__type": kind, "message": message}).to_string(),
    )
        .into_response()
}

/// RegisterStreamConsumer, DescribeStreamConsumer (by name and stream, or by ARN) and
/// DeregisterStreamConsumer.
pub fn consumer_call(state: &State, op: &str, request: &Value) -> axum::response::Response {
    let stream = request["StreamARN"].as_str().unwrap_or_default();
    let Ok(mut consumers) = state.consumers.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let name = match request["ConsumerARN"].as_str() {
        Some(arn) => consumers
            .iter()
            .find(|(_, a)| a.as_str() == arn)
            .map(|(n, _)| n.clone()),
        None => request["ConsumerName"].as_str().map(str::to_owned),
    }
    .unwrap_or_default();
    let arn = match op {
        "RegisterStreamConsumer" => {
            if consumers.contains_key(&name) {
                return error("ResourceInUseException", "consumer already registered");
            }
            let n = state.registrations.fetch_add(1, Ordering::Relaxed) + 1;
            let arn = format!("{stream}/consumer/{name}:{n}");
            consumers.insert(name.clone(), arn.clone());
            arn
        }
        _ => match consumers.get(&name) {
            Some(arn) => arn.clone(),
            None => return error("ResourceNotFoundException", "no such consumer"),
        },
    };
    if op == "DeregisterStreamConsumer" {
        consumers.remove(&name);
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
            "{}",
        )
            .into_response();
    }
    let stream = arn.split("/consumer/").next().unwrap_or_default();
    let consumer = json!({"ConsumerName": name, "ConsumerARN": arn, "ConsumerStatus": "ACTIVE",
                          "ConsumerCreationTimestamp": 0, "StreamARN": stream});
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        json!({"Consumer": consumer.clone(), "ConsumerDescription": consumer}).to_string(),
    )
        .into_response()
}

fn registered(state: &State, arn: &str) -> bool {
    state.consumers.lock().is_ok_and(|c| c.values().any(|a| a == arn))
}

pub fn subscribe(state: Arc<State>, request: &Value) -> axum::response::Response {
    let consumer = request["ConsumerARN"].as_str().unwrap_or_default().to_owned();
    if !registered(&state, &consumer) {
        return error("ResourceNotFoundException", "no such consumer");
    }
    let shard = request["ShardId"]
        .as_str()
        .and_then(|s| s.rsplit('-').next())
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let position = &request["StartingPosition"];
    let sequence = position["SequenceNumber"]
        .as_str()
        .and_then(|s| s.parse::<usize>().ok());
    let start = match (position["Type"].as_str(), sequence) {
        (Some("AFTER_SEQUENCE_NUMBER"), Some(seq)) => seq + 1,
        (Some("AT_SEQUENCE_NUMBER"), Some(seq)) => seq,
        (Some("LATEST"), _) => stored_len(&state, shard),
        _ => 0,
    };
    state.counts.subscriptions.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(push(state, consumer, shard, start, tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    }));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")],
        body,
    )
        .into_response()
}

/// Pushes the shard's records from `position` until the subscription's time is up, the
/// consumer is deregistered, or it hangs up (the send fails).
async fn push(
    state: Arc<State>,
    consumer: String,
    shard: usize,
    mut position: usize,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let opened = Instant::now();
    if tx.send(initial_response()).await.is_err() {
        return;
    }
    let mut sent_bytes = 0.0;
    let mut last_event = Instant::now();
    while opened.elapsed() < SUBSCRIPTION && registered(&state, &consumer) {
        let put = state.put.notified();
        tokio::pin!(put);
        put.as_mut().enable();
        let (records, bytes, end, len) = page(&state, shard, position);
        if records.is_empty() {
            if last_event.elapsed() >= IDLE_EVENT {
                let continuation = position.checked_sub(1).map(|s| s.to_string()).unwrap_or_default();
                if tx.send(event(Vec::new(), &continuation, 0)).await.is_err() {
                    return;
                }
                last_event = Instant::now();
            }
            let _ = tokio::time::timeout(IDLE_EVENT, put).await;
            continue;
        }
        // 2 MB/s per consumer and shard, with a second's worth of burst.
        let due = opened + Duration::from_secs_f64((sent_bytes / BYTES_PER_SECOND - 1.0).max(0.0));
        tokio::time::sleep_until(due).await;
        let n = records.len() as u64;
        let behind = if end < len { 1000 } else { 0 };
        let continuation = (end - 1).to_string();
        if tx.send(event(records, &continuation, behind)).await.is_err() {
            return;
        }
        state.counts.pushed_records.fetch_add(n, Ordering::Relaxed);
        sent_bytes += bytes as f64;
        position = end;
        last_event = Instant::now();
    }
}

fn stored_len(state: &State, shard: usize) -> usize {
    state
        .shards
        .as_ref()
        .and_then(|s| s.lock().ok().and_then(|s| s.get(shard).map(Vec::len)))
        .unwrap_or(0)
}

/// Up to a page of records from `position`: the records, their data bytes, the position after
/// them and the shard's length.
fn page(state: &State, shard: usize, position: usize) -> (Vec<Value>, usize, usize, usize) {
    let Some(Ok(shards)) = state.shards.as_ref().map(|s| s.lock()) else {
        return (Vec::new(), 0, position, position);
    };
    let stored = shards.get(shard).map(Vec::as_slice).unwrap_or_default();
    let end = stored.len().min(position + EVENT_RECORDS).max(position);
    let slice = stored.get(position..end).unwrap_or_default();
    let records = super::records_json(stored, position, end);
    let bytes = slice.iter().map(|r| r.data.len() * 3 / 4).sum();
    (records, bytes, end, stored.len())
}

fn frame(headers: &[(&'static str, &'static str)], payload: String) -> Bytes {
    let message = headers.iter().fold(Message::new(payload), |m, (name, value)| {
        m.add_header(Header::new(*name, HeaderValue::String((*value).into())))
    });
    let mut buf = Vec::new();
    match write_message_to(&message, &mut buf) {
        Ok(()) => Bytes::from(buf),
        Err(_) => Bytes::new(),
    }
}

fn initial_response() -> Bytes {
    frame(
        &[(":message-type", "event"), (":event-type", "initial-response")],
        "{}".to_owned(),
    )
}

fn event(records: Vec<Value>, continuation: &str, millis_behind: u64) -> Bytes {
    let payload = json!({"Records": records, "ContinuationSequenceNumber": continuation,
                         "MillisBehindLatest": millis_behind});
    frame(
        &[
            (":message-type", "event"),
            (":event-type", "SubscribeToShardEvent"),
            (":content-type", "application/json"),
        ],
        payload.to_string(),
    )
}
