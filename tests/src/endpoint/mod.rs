//! A minimal local AWS endpoint for the benchmarks and the fan-out tests: Kinesis (PutRecords acknowledged at once;
//! with `keep`, also ListShards / GetShardIterator / GetRecords over what was put) and
//! EventBridge (PutEvents accepted at once, each event's arrival timed against its
//! `occurred_at`), and the stream's tags. What is left to measure is our own path — encoding, batching, signing, HTTP —
//! with no emulator behind it.

pub mod consumer;
mod fan_out;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

#[derive(Default)]
pub struct Counts {
    pub records: AtomicU64,
    /// Data bytes of the records put (decoded from base64).
    pub record_bytes: AtomicU64,
    pub requests: AtomicU64,
    pub events: AtomicU64,
    /// PutEvents calls (each carries up to 10 entries).
    pub put_events_calls: AtomicU64,
    /// GetRecords calls answered, and those refused by the read limits.
    pub reads: AtomicU64,
    pub throttled_reads: AtomicU64,
    /// SubscribeToShard event streams opened, and the records pushed over them.
    pub subscriptions: AtomicU64,
    pub pushed_records: AtomicU64,
    /// Every PutEvents entry's event id (`detail.metadata.event_id`), with `Options::record_ids`.
    pub event_ids: Mutex<std::collections::HashSet<String>>,
    /// Each event's way through the hops, with `Options::trace_stages`.
    pub stages: Option<Mutex<std::collections::HashMap<String, consumer::Stages>>>,
    /// SQS and DynamoDB calls, by operation.
    pub calls: Mutex<std::collections::BTreeMap<String, u64>>,
    /// SQS, DynamoDB (and, with a latency, PutEvents) calls being answered now, and the most
    /// there were at once, by operation.
    pub in_flight: Mutex<std::collections::BTreeMap<String, (u64, u64)>>,
    /// TransactWriteItems calls that committed.
    pub transactions: AtomicU64,
    /// When the first and the latest PutEvents arrived.
    pub events_window: Mutex<Option<(Instant, Instant)>>,
    /// Seconds from each event's `occurred_at` to its arrival here.
    pub event_latencies: Mutex<Vec<f64>>,
}

pub struct Stored {
    pub data: String,
    pub partition_key: String,
    pub arrival: f64,
}

pub struct State {
    pub counts: Arc<Counts>,
    /// Records per shard, kept only when the endpoint also serves reads.
    pub shards: Option<Mutex<Vec<Vec<Stored>>>>,
    /// Woken whenever records are put: what a subscription waits on at the tip.
    pub put: tokio::sync::Notify,
    /// Registered enhanced fan-out consumers: each one's ARN, by name.
    consumers: Mutex<std::collections::BTreeMap<String, String>>,
    /// Consumers registered so far: each registration's ARN is a new one, as on Kinesis.
    registrations: AtomicU64,
    /// SQS and DynamoDB as shipping calls them (see `consumer`).
    pub service_latency: Option<std::time::Duration>,
    put_events_latency: Option<std::time::Duration>,
    pub queues: Mutex<consumer::Queues>,
    pub tables: Mutex<consumer::Tables>,
    /// Woken whenever a message is queued: what a long poll waits on.
    pub delivered: tokio::sync::Notify,
    rule_queue: Option<&'static str>,
    refuse_put_events_holding: Option<&'static str>,
    url: String,
    /// Kinesis' published per-shard read limits, when enforced: one budget per shard.
    read_limits: Option<Mutex<Vec<ReadBudget>>>,
    /// Whether each PutEvents entry's latency is computed (costs CPU the relay competes for).
    time_events: bool,
    record_ids: bool,
    /// The stream's tags: capture keeps its slot marker, delivery record and backfill
    /// progress there, and `bridge backfill` its request.
    tags: Mutex<std::collections::BTreeMap<String, String>>,
}

/// Kinesis' read limits per shard: 5 GetRecords calls per second and 2 MB/s of data. Like
/// Kinesis, one call may overdraw the byte budget (up to a page); later calls are throttled
/// until it has refilled.
struct ReadBudget {
    calls: std::collections::VecDeque<Instant>,
    bytes: f64,
    refilled: Instant,
}

const READS_PER_SECOND: usize = 5;
const READ_BYTES_PER_SECOND: f64 = 2.0 * 1024.0 * 1024.0;

impl ReadBudget {
    fn new() -> Self {
        Self {
            calls: std::collections::VecDeque::new(),
            bytes: READ_BYTES_PER_SECOND,
            refilled: Instant::now(),
        }
    }

    /// Whether a call may be made now (and then counts it).
    fn admit(&mut self) -> bool {
        let now = Instant::now();
        self.bytes = (self.bytes + now.duration_since(self.refilled).as_secs_f64() * READ_BYTES_PER_SECOND)
            .min(READ_BYTES_PER_SECOND);
        self.refilled = now;
        // A call ages out of the window a little before a full second: the two clocks are the
        // relay's and ours, and a request's trip over loopback is not what Kinesis meters.
        while self
            .calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_millis(990))
        {
            self.calls.pop_front();
        }
        if self.calls.len() >= READS_PER_SECOND || self.bytes <= 0.0 {
            return false;
        }
        self.calls.push_back(now);
        true
    }
}

/// How the endpoint behaves.
#[derive(Clone, Copy, Default)]
pub struct Options {
    /// Keep put records in this many shards and serve them back.
    pub keep_shards: Option<usize>,
    /// Enforce Kinesis' per-shard read limits on GetRecords.
    pub kinesis_read_limits: bool,
    /// Time every PutEvents entry against its `occurred_at`.
    pub time_events: bool,
    /// Keep every published event's id (`Counts::event_ids`).
    pub record_ids: bool,
    /// Answer SQS and DynamoDB calls (shipping's), each after this long.
    pub service_latency: Option<std::time::Duration>,
    /// Answer each PutEvents after this long (EventBridge's own time; the entries count as
    /// arrived when the call does).
    pub put_events_latency: Option<std::time::Duration>,
    /// Deliver every PutEvents entry to this queue, as an EventBridge rule would.
    pub rule_queue: Option<&'static str>,
    /// Time each event at every hop (`Counts::stages`): PutRecords, PutEvents, receive, apply.
    pub trace_stages: bool,
    /// Refuse as a whole (`ValidationException`, as EventBridge does for a limit of its own)
    /// every PutEvents call with an entry whose detail holds this text.
    pub refuse_put_events_holding: Option<&'static str>,
}

/// A running endpoint.
pub struct Endpoint {
    pub url: String,
    pub counts: Arc<Counts>,
    state: Arc<State>,
}

impl Endpoint {
    /// The value of one of the stream's tags.
    pub fn tag(&self, key: &str) -> Option<String> {
        self.state.tags.lock().ok()?.get(key).cloned()
    }

    /// Queues a message (a backlog for the consumer).
    pub fn enqueue(&self, queue: &str, body: String) {
        self.state.enqueue(queue, body);
    }

    /// SQS and DynamoDB calls so far, by operation.
    pub fn calls(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The most SQS, DynamoDB (and, with a latency, PutEvents) calls of each operation answered
    /// at once.
    pub fn peak_concurrent_calls(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts
            .in_flight
            .lock()
            .map(|c| c.iter().map(|(op, (_, peak))| (op.clone(), *peak)).collect())
            .unwrap_or_default()
    }

    /// Messages in a queue, visible or in flight.
    pub fn queue_depth(&self, queue: &str) -> usize {
        consumer::depth(&self.state.queues, queue)
    }

    /// Every traced event's hops.
    pub fn stages(&self) -> Vec<consumer::Stages> {
        self.counts
            .stages
            .as_ref()
            .and_then(|s| s.lock().ok().map(|s| s.values().copied().collect()))
            .unwrap_or_default()
    }

    /// How many records each shard holds (the last one's sequence number is one less).
    pub fn shard_lengths(&self) -> Vec<usize> {
        match self.state.shards.as_ref().map(|s| s.lock()) {
            Some(Ok(shards)) => shards.iter().map(Vec::len).collect(),
            _ => Vec::new(),
        }
    }

    /// Stores records as if they had been put: `(partition key, base64 data)`.
    pub fn preload(&self, records: impl IntoIterator<Item = (String, String)>) {
        let Some(Ok(mut shards)) = self.state.shards.as_ref().map(|s| s.lock()) else {
            return;
        };
        let count = shards.len();
        let arrival = now_seconds();
        for (partition_key, data) in records {
            if let Some(shard) = shards.get_mut(shard_of(&partition_key, count)) {
                shard.push(Stored {
                    data,
                    partition_key,
                    arrival,
                });
            }
        }
        drop(shards);
        self.state.put.notify_waiters();
    }
}

/// Serves on a free loopback port.
pub async fn start(options: Options) -> anyhow::Result<Endpoint> {
    let counts = Arc::new(Counts {
        stages: options.trace_stages.then(Mutex::default),
        ..Counts::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let shard_count = options.keep_shards.map(|n| n.max(1));
    let state = Arc::new(State {
        counts: counts.clone(),
        shards: shard_count.map(|n| Mutex::new((0..n).map(|_| Vec::new()).collect())),
        read_limits: shard_count
            .filter(|_| options.kinesis_read_limits)
            .map(|n| Mutex::new((0..n).map(|_| ReadBudget::new()).collect())),
        time_events: options.time_events,
        record_ids: options.record_ids,
        tags: Mutex::default(),
        put: tokio::sync::Notify::new(),
        consumers: Mutex::default(),
        registrations: AtomicU64::new(0),
        service_latency: options.service_latency,
        put_events_latency: options.put_events_latency,
        queues: Mutex::default(),
        tables: Mutex::default(),
        delivered: tokio::sync::Notify::new(),
        rule_queue: options.rule_queue,
        refuse_put_events_holding: options.refuse_put_events_holding,
        url: url.clone(),
    });
    let handler_state = state.clone();
    let app = Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: Bytes| {
            let state = handler_state.clone();
            async move {
                let target = headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if target.starts_with("AmazonSQS.") || target.starts_with("DynamoDB") {
                    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if let Some(reply) = consumer::answer(&state, target, &request).await {
                        return reply;
                    }
                }
                match state
                    .put_events_latency
                    .filter(|_| target.ends_with(".PutEvents"))
                {
                    Some(latency) => {
                        let _answering = consumer::InFlight::enter(&state.counts, "PutEvents");
                        let reply = answer(&state, &headers, &body);
                        tokio::time::sleep(latency).await;
                        reply
                    }
                    None => answer(&state, &headers, &body),
                }
            }
        }),
    );
    // Without it, a response's head and its first event-stream frame (two small writes) wait
    // on the client's delayed ACK: ~40 ms per subscription event.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Endpoint { url, counts, state })
}

impl State {
    pub fn url(&self) -> &str {
        &self.url
    }
}

pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn shard_id(i: usize) -> String {
    format!("shardId-{i:012}")
}

/// FNV-1a: any stable spread of partition keys over shards will do here.
fn shard_of(key: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}

fn answer(state: &Arc<State>, headers: &HeaderMap, body: &[u8]) -> axum::response::Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let reply = match target.rsplit('.').next().unwrap_or_default() {
        "PutRecords" => put_records(state, &request),
        "SubscribeToShard" => return fan_out::subscribe(state.clone(), &request),
        "DescribeStreamSummary" => {
            let name = request["StreamName"].as_str().unwrap_or("bench");
            json!({"StreamDescriptionSummary": {
                "StreamName": name, "StreamARN": stream_arn(name), "StreamStatus": "ACTIVE",
                "RetentionPeriodHours": 24, "StreamCreationTimestamp": 0,
                "EnhancedMonitoring": [], "OpenShardCount": 1}})
        }
        op @ ("RegisterStreamConsumer" | "DescribeStreamConsumer" | "DeregisterStreamConsumer") => {
            return fan_out::consumer_call(state, op, &request)
        }
        "PutEvents" if refused_whole(state, &request) => {
            return client_error(
                "ValidationException",
                "1 validation error detected: an entry exceeds a limit",
            );
        }
        "PutEvents" => put_events(state, &request),
        "ListShards" => {
            let n = state
                .shards
                .as_ref()
                .map_or(1, |s| s.lock().map_or(1, |s| s.len()));
            let shards: Vec<Value> = (0..n)
                .map(|i| {
                    json!({"ShardId": shard_id(i),
                    "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
                    "SequenceNumberRange": {"StartingSequenceNumber": "0"}})
                })
                .collect();
            json!({"Shards": shards})
        }
        "GetShardIterator" => {
            let shard = request["ShardId"].as_str().unwrap_or_default();
            let index = shard
                .rsplit('-')
                .next()
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            let position = match request["ShardIteratorType"].as_str() {
                Some("AFTER_SEQUENCE_NUMBER") => request["StartingSequenceNumber"]
                    .as_str()
                    .and_then(|s| s.parse::<usize>().ok())
                    .map_or(0, |s| s + 1),
                _ => 0,
            };
            json!({"ShardIterator": format!("{index}:{position}")})
        }
        "GetRecords" => match get_records(state, &request) {
            Some(reply) => {
                state.counts.reads.fetch_add(1, Ordering::Relaxed);
                reply
            }
            None => {
                state.counts.throttled_reads.fetch_add(1, Ordering::Relaxed);
                return client_error(
                    "ProvisionedThroughputExceededException",
                    "Rate exceeded for shard",
                );
            }
        },
        "ListTagsForStream" => {
            let tags: Vec<Value> = state
                .tags
                .lock()
                .map(|t| t.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect())
                .unwrap_or_default();
            json!({"Tags": tags, "HasMoreTags": false})
        }
        "AddTagsToStream" => {
            if let (Ok(mut tags), Some(new)) = (state.tags.lock(), request["Tags"].as_object()) {
                for (k, v) in new {
                    tags.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
                }
            }
            json!({})
        }
        "RemoveTagsFromStream" => {
            if let (Ok(mut tags), Some(keys)) = (state.tags.lock(), request["TagKeys"].as_array()) {
                for k in keys.iter().filter_map(Value::as_str) {
                    tags.remove(k);
                }
            }
            json!({})
        }
        _ => json!({}),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        reply.to_string(),
    )
        .into_response()
}

/// Seconds since the epoch of an `occurred_at`: Postgres' text form (what the DMS record
/// carries), or RFC 3339.
fn parse_occurred_at(occurred: &str) -> Option<f64> {
    let at = chrono::DateTime::parse_from_str(occurred, "%Y-%m-%d %H:%M:%S%.f%#z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(occurred))
        .ok()?;
    Some(at.timestamp_micros() as f64 / 1e6)
}

fn stream_arn(name: &str) -> String {
    format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}")
}

fn put_records(state: &State, request: &Value) -> Value {
    let records = request["Records"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let n = records.len();
    state.counts.requests.fetch_add(1, Ordering::Relaxed);
    let seq = state.counts.records.fetch_add(n as u64, Ordering::Relaxed);
    let bytes: usize = records
        .iter()
        .map(|r| r["Data"].as_str().map_or(0, |d| d.len() * 3 / 4))
        .sum();
    state
        .counts
        .record_bytes
        .fetch_add(bytes as u64, Ordering::Relaxed);
    if let Some(shards) = &state.shards {
        let arrival = now_seconds();
        if let Ok(mut shards) = shards.lock() {
            let count = shards.len();
            for r in records {
                let key = r["PartitionKey"].as_str().unwrap_or_default().to_owned();
                if let Some(shard) = shards.get_mut(shard_of(&key, count)) {
                    shard.push(Stored {
                        data: r["Data"].as_str().unwrap_or_default().to_owned(),
                        partition_key: key,
                        arrival,
                    });
                }
            }
        }
        state.put.notify_waiters();
    }
    if state.counts.stages.is_some() {
        let at = now_seconds();
        for r in records {
            let data = r["Data"].as_str().unwrap_or_default();
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
                continue;
            };
            let record: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if let Some(id) = record["data"]["id"].as_str() {
                state.stage_put_records(id, at);
            }
        }
    }
    let results: Vec<Value> = (0..n)
        .map(|i| json!({"SequenceNumber": (seq + i as u64).to_string(), "ShardId": shard_id(0)}))
        .collect();
    json!({"FailedRecordCount": 0, "Records": results})
}

/// Records `position..end` of a shard as Kinesis returns them (sequence number = index).
pub(crate) fn records_json(stored: &[Stored], position: usize, end: usize) -> Vec<Value> {
    stored
        .get(position..end)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({"SequenceNumber": (position + i).to_string(), "ApproximateArrivalTimestamp": r.arrival,
                   "Data": r.data, "PartitionKey": r.partition_key})
        })
        .collect()
}

/// A page of records, or `None` when the shard's read limits refuse the call.
fn get_records(state: &State, request: &Value) -> Option<Value> {
    let iterator = request["ShardIterator"].as_str().unwrap_or("0:0");
    let (shard, position) = iterator
        .split_once(':')
        .and_then(|(s, p)| Some((s.parse::<usize>().ok()?, p.parse::<usize>().ok()?)))
        .unwrap_or((0, 0));
    let limit = request["Limit"].as_u64().unwrap_or(10_000) as usize;
    let limited = match &state.read_limits {
        Some(limits) => {
            if !limits.lock().ok()?.get_mut(shard)?.admit() {
                return None;
            }
            true
        }
        None => false,
    };
    let Some(Ok(shards)) = state.shards.as_ref().map(|s| s.lock()) else {
        return Some(json!({"Records": [], "NextShardIterator": iterator, "MillisBehindLatest": 0}));
    };
    let stored = shards.get(shard).map(Vec::as_slice).unwrap_or_default();
    let end = stored.len().min(position + limit);
    let records = records_json(stored, position, end);
    if limited {
        // Kinesis counts the data bytes (base64 is 4/3 of them).
        let bytes: usize = stored
            .get(position..end)
            .unwrap_or_default()
            .iter()
            .map(|r| r.data.len() * 3 / 4)
            .sum();
        if let Some(Ok(mut limits)) = state.read_limits.as_ref().map(|l| l.lock()) {
            if let Some(b) = limits.get_mut(shard) {
                b.bytes -= bytes as f64;
            }
        }
    }
    let behind = if end < stored.len() { 1000 } else { 0 };
    Some(
        json!({"Records": records, "NextShardIterator": format!("{shard}:{end}"), "MillisBehindLatest": behind}),
    )
}

/// A 400 answer in the JSON protocols' error shape.
fn client_error(code: &str, message: &str) -> axum::response::Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        json!({"__type": code, "message": message}).to_string(),
    )
        .into_response()
}

/// Whether a PutEvents call holds an entry the endpoint is told to refuse the call for.
fn refused_whole(state: &State, request: &Value) -> bool {
    state.refuse_put_events_holding.is_some_and(|marker| {
        request["Entries"].as_array().is_some_and(|entries| {
            entries
                .iter()
                .any(|e| e["Detail"].as_str().is_some_and(|d| d.contains(marker)))
        })
    })
}

fn put_events(state: &State, request: &Value) -> Value {
    let (counts, time_events) = (&state.counts, state.time_events);
    let entries = request["Entries"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let arrival = Instant::now();
    let now = now_seconds();
    counts.events.fetch_add(entries.len() as u64, Ordering::Relaxed);
    counts.put_events_calls.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut window) = counts.events_window.lock() {
        let first = window.map_or(arrival, |(first, _)| first);
        *window = Some((first, arrival));
    }
    let latencies: Vec<f64> = entries
        .iter()
        .filter(|_| time_events)
        .filter_map(|e| {
            let detail: Value = serde_json::from_str(e["Detail"].as_str()?).ok()?;
            let occurred = detail["metadata"]["occurred_at"].as_str()?;
            Some(now - parse_occurred_at(occurred)?)
        })
        .collect();
    if let Ok(mut all) = counts.event_latencies.lock() {
        all.extend(latencies);
    }
    if state.rule_queue.is_some() || state.counts.stages.is_some() {
        for e in entries {
            let Some(detail_text) = e["Detail"].as_str() else {
                continue;
            };
            let detail: Value = serde_json::from_str(detail_text).unwrap_or(Value::Null);
            if state.counts.stages.is_some() {
                if let Some(id) = detail["metadata"]["event_id"].as_str() {
                    let occurred = detail["metadata"]["occurred_at"]
                        .as_str()
                        .and_then(parse_occurred_at)
                        .unwrap_or(0.0);
                    state.stage_put_events(id, occurred, now);
                }
            }
            if let Some(queue) = state.rule_queue {
                let event = json!({"version": "0", "id": format!("eb-{}", counts.events.load(Ordering::Relaxed)),
                    "detail-type": e["DetailType"], "source": e["Source"], "account": "123456789012",
                    "time": "2026-11-29T00:00:00Z", "region": "us-east-1", "resources": [], "detail": detail});
                state.enqueue(queue, event.to_string());
            }
        }
    }
    if state.record_ids {
        if let Ok(mut ids) = counts.event_ids.lock() {
            ids.extend(entries.iter().filter_map(|e| {
                let detail: Value = serde_json::from_str(e["Detail"].as_str()?).ok()?;
                Some(detail["metadata"]["event_id"].as_str()?.to_owned())
            }));
        }
    }
    let results: Vec<Value> = (0..entries.len())
        .map(|i| json!({"EventId": format!("bench-{i}")}))
        .collect();
    json!({"FailedEntryCount": 0, "Entries": results})
}

/// One DMS record of an outbox insert (~300-byte payload), base64 as Kinesis carries it.
pub fn outbox_record(i: u64) -> (String, String) {
    let id = format!("00000000-0000-4000-8000-{i:012}");
    let aggregate = format!("{}", i % 1000);
    let body = json!({
        "data": {"id": id, "aggregatetype": "Order", "aggregateid": aggregate, "type": "OrderPlaced",
                 "payload": {"order_id": i, "pad": "x".repeat(240)}, "aggregate_version": 1,
                 "occurred_at": "2026-11-23 12:00:00.000000+00"},
        "metadata": {"timestamp": "2026-11-23T12:00:00.000000Z", "record-type": "data", "operation": "insert",
                     "partition-key-type": "attribute-name", "schema-name": "public", "table-name": "outbox",
                     "transaction-id": 1000 + i / 100, "commit-timestamp": "2026-11-23T12:00:00.000000Z",
                     "stream-position": "0/0", "transaction-record-id": i % 100 + 1,
                     "commit-lsn": "0/0", "lsn": "0/0"}
    });
    let key = format!("public.outbox.{aggregate}");
    (
        key,
        base64::engine::general_purpose::STANDARD.encode(body.to_string()),
    )
}
