//! The local endpoint as the consumer side sees AWS: SQS queues (long polling, visibility
//! timeouts, batches) and DynamoDB tables (items by key, TransactWriteItems with the conditions
//! shipping writes, an outbox table whose stream is empty), each call answered after an
//! injected service latency (AWS answers in ~10 ms, moto in far more). What is left to measure
//! is shipping's own path — receive, parse, decide, commit, delete — at AWS-like latency.
//!
//! With `Options::rule_queue`, every PutEvents entry is also delivered to that queue as the
//! EventBridge event a rule would send: the relay's output flows on to shipping, and each
//! event's way is timed at every hop (`Counts::stages`).
//!
//! Not AWS: conditions are evaluated only for the forms shipping writes
//! (`attribute_not_exists(k)`, `… OR aggregate_version < :v`, `order_version = :read`); other
//! conditions pass. Items are not size-checked; MD5s are not sent.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{now_seconds, State};

/// Where each event was when: seconds since the epoch, per hop (0: not seen there).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stages {
    pub occurred_at: f64,
    pub put_records: f64,
    pub put_events: f64,
    pub received: f64,
    pub applied: f64,
}

struct Message {
    id: String,
    body: String,
    receives: u32,
    visible_at: Instant,
    receipt: String,
}

#[derive(Default)]
pub struct Queues {
    queues: HashMap<String, VecDeque<Message>>,
    next: u64,
}

/// Tables by name, items by their key's value.
#[derive(Default)]
pub struct Tables {
    tables: HashMap<String, HashMap<String, Value>>,
}

/// Key attributes of the tables shipping writes (the first one an item has is its key).
const KEYS: [&str; 4] = ["event_id", "customer_id", "order_id", "lease_key"];

fn key_of(item: &Value) -> Option<String> {
    KEYS.iter()
        .find_map(|k| item[*k]["S"].as_str().map(str::to_owned))
}

/// Answers an SQS or DynamoDB call; `None` for any other service.
pub async fn answer(state: &State, target: &str, request: &Value) -> Option<axum::response::Response> {
    let (service, op) = target.split_once('.')?;
    if !matches!(
        service,
        "AmazonSQS" | "DynamoDB_20120810" | "DynamoDBStreams_20120810"
    ) {
        return None;
    }
    if let Ok(mut calls) = state.counts.calls.lock() {
        *calls.entry(op.to_owned()).or_default() += 1;
    }
    let _answering = InFlight::enter(&state.counts, op);
    if let Some(latency) = state.service_latency {
        tokio::time::sleep(latency).await;
    }
    let reply = match (service, op) {
        ("AmazonSQS", "ReceiveMessage") => receive(state, request).await,
        ("AmazonSQS", _) => sqs(state, op, request),
        ("DynamoDBStreams_20120810", "DescribeStream") => Ok(json!({"StreamDescription": {
            "StreamArn": request["StreamArn"], "StreamStatus": "ENABLED", "Shards": []}})),
        ("DynamoDBStreams_20120810", _) => Ok(json!({})),
        _ => dynamodb(state, op, request),
    };
    let content_type = "application/x-amz-json-1.0";
    Some(match reply {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, content_type)],
            body.to_string(),
        )
            .into_response(),
        Err(body) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, content_type)],
            body.to_string(),
        )
            .into_response(),
    })
}

/// One call being answered: counted in `Counts::in_flight` until dropped (also when the client
/// goes away mid-call and the handler is cancelled).
pub(crate) struct InFlight<'a> {
    counts: &'a super::Counts,
    op: String,
}

impl<'a> InFlight<'a> {
    pub(crate) fn enter(counts: &'a super::Counts, op: &str) -> Self {
        if let Ok(mut all) = counts.in_flight.lock() {
            let (now, peak) = all.entry(op.to_owned()).or_default();
            *now += 1;
            *peak = (*peak).max(*now);
        }
        Self {
            counts,
            op: op.to_owned(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut all) = self.counts.in_flight.lock() {
            if let Some((now, _)) = all.get_mut(&self.op) {
                *now = now.saturating_sub(1);
            }
        }
    }
}

fn queue_name(request: &Value) -> String {
    request["QueueUrl"]
        .as_str()
        .or(request["QueueName"].as_str())
        .and_then(|u| u.rsplit('/').next())
        .unwrap_or_default()
        .to_owned()
}

impl State {
    /// Queues a message as if sent (an EventBridge rule's delivery, a test's backlog).
    pub fn enqueue(&self, queue: &str, body: String) {
        if let Ok(mut q) = self.queues.lock() {
            q.next += 1;
            let id = format!("m-{}", q.next);
            q.queues.entry(queue.to_owned()).or_default().push_back(Message {
                id,
                body,
                receives: 0,
                visible_at: Instant::now(),
                receipt: String::new(),
            });
        }
        self.delivered.notify_waiters();
    }

    fn stage(&self, event_id: &str, set: impl FnOnce(&mut Stages)) {
        if let Some(stages) = &self.counts.stages {
            if let Ok(mut all) = stages.lock() {
                set(all.entry(event_id.to_owned()).or_default());
            }
        }
    }

    /// Records when an event was put on the bus (and when it occurred).
    pub fn stage_put_events(&self, event_id: &str, occurred_at: f64, at: f64) {
        self.stage(event_id, |s| {
            s.occurred_at = occurred_at;
            if s.put_events == 0.0 {
                s.put_events = at;
            }
        });
    }

    pub fn stage_put_records(&self, event_id: &str, at: f64) {
        self.stage(event_id, |s| {
            if s.put_records == 0.0 {
                s.put_records = at;
            }
        });
    }
}

fn sqs(state: &State, op: &str, request: &Value) -> Result<Value, Value> {
    let name = queue_name(request);
    let url = format!("{}/queue/{name}", state.url());
    let mut queues = state.queues.lock().map_err(|_| json!({}))?;
    let reply = match op {
        "GetQueueUrl" => json!({"QueueUrl": url}),
        "CreateQueue" => {
            queues.queues.entry(name).or_default();
            json!({"QueueUrl": url})
        }
        "GetQueueAttributes" => {
            json!({"Attributes": {"QueueArn": format!("arn:aws:sqs:us-east-1:123456789012:{name}")}})
        }
        "DeleteMessage" => {
            let receipt = request["ReceiptHandle"].as_str().unwrap_or_default();
            if let Some(q) = queues.queues.get_mut(&name) {
                q.retain(|m| m.receipt != receipt);
            }
            json!({})
        }
        "DeleteMessageBatch" => {
            let entries = request["Entries"].as_array().cloned().unwrap_or_default();
            let receipts: std::collections::HashSet<&str> = entries
                .iter()
                .filter_map(|e| e["ReceiptHandle"].as_str())
                .collect();
            if let Some(q) = queues.queues.get_mut(&name) {
                q.retain(|m| !receipts.contains(m.receipt.as_str()));
            }
            let ok: Vec<Value> = entries.iter().map(|e| json!({"Id": e["Id"]})).collect();
            json!({"Successful": ok, "Failed": []})
        }
        "ChangeMessageVisibility" => {
            let receipt = request["ReceiptHandle"].as_str().unwrap_or_default();
            let secs = request["VisibilityTimeout"].as_u64().unwrap_or(30);
            if let Some(m) = queues
                .queues
                .get_mut(&name)
                .and_then(|q| q.iter_mut().find(|m| m.receipt == receipt))
            {
                m.visible_at = Instant::now() + Duration::from_secs(secs);
            }
            json!({})
        }
        "SendMessage" => {
            drop(queues);
            let body = request["MessageBody"].as_str().unwrap_or_default().to_owned();
            state.enqueue(&name, body);
            json!({"MessageId": "sent"})
        }
        "SendMessageBatch" => {
            drop(queues);
            let entries = request["Entries"].as_array().cloned().unwrap_or_default();
            for e in &entries {
                state.enqueue(&name, e["MessageBody"].as_str().unwrap_or_default().to_owned());
            }
            let ok: Vec<Value> = entries
                .iter()
                .map(|e| json!({"Id": e["Id"], "MessageId": "sent", "MD5OfMessageBody": ""}))
                .collect();
            json!({"Successful": ok, "Failed": []})
        }
        _ => json!({}),
    };
    Ok(reply)
}

/// Long polling: up to `MaxNumberOfMessages` visible messages, waiting up to `WaitTimeSeconds`
/// for the first.
async fn receive(state: &State, request: &Value) -> Result<Value, Value> {
    let name = queue_name(request);
    let max = request["MaxNumberOfMessages"].as_u64().unwrap_or(1).clamp(1, 10) as usize;
    let wait = Duration::from_secs(request["WaitTimeSeconds"].as_u64().unwrap_or(0).min(20));
    let visibility = Duration::from_secs(request["VisibilityTimeout"].as_u64().unwrap_or(30));
    let deadline = Instant::now() + wait;
    loop {
        let delivered = state.delivered.notified();
        tokio::pin!(delivered);
        delivered.as_mut().enable();
        let messages = take(state, &name, max, visibility)?;
        if !messages.is_empty() || Instant::now() >= deadline {
            return Ok(json!({"Messages": messages}));
        }
        // Also wakes for messages becoming visible again.
        let _ = tokio::time::timeout_at(
            deadline.min(Instant::now() + Duration::from_millis(200)),
            delivered,
        )
        .await;
    }
}

fn take(state: &State, name: &str, max: usize, visibility: Duration) -> Result<Vec<Value>, Value> {
    let mut queues = state.queues.lock().map_err(|_| json!({}))?;
    let now = Instant::now();
    let mut next = queues.next;
    let mut out = Vec::new();
    if let Some(q) = queues.queues.get_mut(name) {
        for m in q.iter_mut().filter(|m| m.visible_at <= now).take(max) {
            next += 1;
            m.receipt = format!("r-{next}");
            m.receives += 1;
            m.visible_at = now + visibility;
            out.push(
                json!({"MessageId": m.id, "ReceiptHandle": m.receipt, "Body": m.body,
                            "Attributes": {"ApproximateReceiveCount": m.receives.to_string()}}),
            );
        }
    }
    queues.next = next;
    drop(queues);
    if state.counts.stages.is_some() {
        let at = now_seconds();
        for m in &out {
            let body: Value =
                serde_json::from_str(m["Body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
            if let Some(id) = body["detail"]["metadata"]["event_id"].as_str() {
                state.stage(id, |s| {
                    if s.received == 0.0 {
                        s.received = at;
                    }
                });
            }
        }
    }
    Ok(out)
}

fn dynamodb(state: &State, op: &str, request: &Value) -> Result<Value, Value> {
    let table = request["TableName"].as_str().unwrap_or_default().to_owned();
    let mut tables = state.tables.lock().map_err(|_| json!({}))?;
    match op {
        "DescribeTable" => Ok(json!({"Table": {"TableName": table, "TableStatus": "ACTIVE",
            "LatestStreamArn": format!("arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-01-01T00:00:00.000")}})),
        "GetItem" => {
            let key = request["Key"]
                .as_object()
                .and_then(|k| k.values().next())
                .and_then(|v| v["S"].as_str())
                .unwrap_or_default();
            let item = tables.tables.get(&table).and_then(|t| t.get(key)).cloned();
            Ok(match item {
                Some(item) => json!({"Item": item}),
                None => json!({}),
            })
        }
        "PutItem" => {
            if let Some(key) = key_of(&request["Item"]) {
                tables
                    .tables
                    .entry(table)
                    .or_default()
                    .insert(key, request["Item"].clone());
            }
            Ok(json!({}))
        }
        "TransactWriteItems" => {
            let items = request["TransactItems"].as_array().cloned().unwrap_or_default();
            let puts: Vec<&Value> = items.iter().map(|i| &i["Put"]).collect();
            let reasons: Vec<bool> = puts
                .iter()
                .map(|put| {
                    let table = put["TableName"].as_str().unwrap_or_default();
                    let stored =
                        key_of(&put["Item"]).and_then(|k| tables.tables.get(table).and_then(|t| t.get(&k)));
                    condition_holds(put, stored)
                })
                .collect();
            if reasons.iter().any(|ok| !ok) {
                let codes: Vec<Value> = reasons
                    .iter()
                    .map(|ok| json!({"Code": if *ok { "None" } else { "ConditionalCheckFailed" }}))
                    .collect();
                return Err(
                    json!({"__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                                  "message": "Transaction cancelled, please refer cancellation reasons for specific reasons",
                                  "CancellationReasons": codes}),
                );
            }
            let at = now_seconds();
            for put in puts {
                let table = put["TableName"].as_str().unwrap_or_default().to_owned();
                if let Some(key) = key_of(&put["Item"]) {
                    if state.counts.stages.is_some() && put["Item"]["processed_at"].is_object() {
                        state.stage(&key, |s| s.applied = at);
                    }
                    tables
                        .tables
                        .entry(table)
                        .or_default()
                        .insert(key, put["Item"].clone());
                }
            }
            state.counts.transactions.fetch_add(1, Ordering::Relaxed);
            Ok(json!({}))
        }
        // UpdateItem (the publisher's marks), DeleteItem, Scan: accepted.
        _ => Ok(json!({})),
    }
}

/// Whether a Put's condition holds against the stored item, for the forms shipping writes.
fn condition_holds(put: &Value, stored: Option<&Value>) -> bool {
    let Some(condition) = put["ConditionExpression"].as_str() else {
        return true;
    };
    let Some(stored) = stored else {
        // Nothing stored: `attribute_not_exists` holds; `order_version = :read` does not.
        return !condition.starts_with("order_version");
    };
    let number = |v: &Value| v["N"].as_str().and_then(|n| n.parse::<f64>().ok());
    let values = &put["ExpressionAttributeValues"];
    if condition.contains("aggregate_version < :v") {
        return match (number(&stored["aggregate_version"]), number(&values[":v"])) {
            (Some(have), Some(new)) => have < new,
            _ => false,
        };
    }
    if condition.starts_with("order_version = :read") {
        return number(&stored["order_version"]) == number(&values[":read"]);
    }
    // attribute_not_exists(key) on a stored item.
    !condition.starts_with("attribute_not_exists")
}

/// The visible and in-flight messages of a queue.
pub fn depth(queues: &Mutex<Queues>, queue: &str) -> usize {
    queues
        .lock()
        .map(|q| q.queues.get(queue).map_or(0, VecDeque::len))
        .unwrap_or(0)
}
