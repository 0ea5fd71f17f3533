//! An HTTP proxy in front of the emulator that injects AWS failures the emulator cannot
//! produce itself: whole-call throttling, 5xx answers, added latency, TransactWriteItems
//! cancellations, and partial PutEvents / PutRecords failures in which only some entries really
//! arrive and the others come back with an error code.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Default)]
pub struct FaultPlan {
    /// Whole PutEvents calls to answer with ThrottlingException.
    pub throttle_put_events: AtomicU32,
    /// PutEvents calls in which every odd entry fails (and is not delivered).
    pub partial_put_events: AtomicU32,
    /// Whole PutRecords calls to answer with ProvisionedThroughputExceededException.
    pub throttle_put_records: AtomicU32,
    /// PutRecords calls in which every odd record fails (and is not stored).
    pub partial_put_records: AtomicU32,
    /// TransactWriteItems calls to answer with TransactionCanceledException (conflicts).
    pub cancel_transact_writes: AtomicU32,
    /// Calls of any kind to answer with 500 InternalFailure.
    pub fail_5xx: AtomicU32,
    /// Added to every forwarded call while non-zero.
    pub latency_ms: AtomicU64,
    /// Calls seen per kind, for the test to check the faults were hit.
    pub throttled: AtomicU32,
    pub partial: AtomicU32,
    /// Every fault answered or injected, of any kind.
    pub injected: AtomicU32,
}

pub struct FaultProxy {
    pub endpoint: String,
    pub plan: Arc<FaultPlan>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Ctx {
    upstream: String,
    http: reqwest::Client,
    plan: Arc<FaultPlan>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let plan = Arc::new(FaultPlan::default());
        let ctx = Ctx {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            plan: plan.clone(),
        };
        let app = axum::Router::new().fallback(handle).with_state(ctx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { endpoint, plan, task })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn handle(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let plan = &ctx.plan;
    if take(&plan.fail_5xx) {
        plan.injected.fetch_add(1, Ordering::SeqCst);
        return aws_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", json!({}));
    }
    let delay = plan.latency_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if target == "Kinesis_20131202.PutRecords" {
        if take(&plan.throttle_put_records) {
            plan.injected.fetch_add(1, Ordering::SeqCst);
            return aws_error(
                StatusCode::BAD_REQUEST,
                "ProvisionedThroughputExceededException",
                json!({}),
            );
        }
        if take(&plan.partial_put_records) {
            plan.injected.fetch_add(1, Ordering::SeqCst);
            return partial(&ctx, &uri, &headers, &body, PUT_RECORDS).await;
        }
    }
    if target == "DynamoDB_20120810.TransactWriteItems" && take(&plan.cancel_transact_writes) {
        plan.injected.fetch_add(1, Ordering::SeqCst);
        let items = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["TransactItems"].as_array().map(Vec::len))
            .unwrap_or(1);
        let reasons: Vec<Value> = (0..items)
            .map(|_| json!({"Code": "TransactionConflict", "Message": "injected by the test proxy"}))
            .collect();
        return aws_error(
            StatusCode::BAD_REQUEST,
            "TransactionCanceledException",
            json!({"CancellationReasons": reasons}),
        );
    }
    if target == "AWSEvents.PutEvents" {
        if take(&ctx.plan.throttle_put_events) {
            ctx.plan.throttled.fetch_add(1, Ordering::SeqCst);
            ctx.plan.injected.fetch_add(1, Ordering::SeqCst);
            let body = json!({"__type": "ThrottlingException", "message": "injected by the test proxy"});
            return (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/x-amz-json-1.1")],
                body.to_string(),
            )
                .into_response();
        }
        if take(&ctx.plan.partial_put_events) {
            ctx.plan.partial.fetch_add(1, Ordering::SeqCst);
            ctx.plan.injected.fetch_add(1, Ordering::SeqCst);
            return partial(&ctx, &uri, &headers, &body, PUT_EVENTS).await;
        }
    }
    forward(&ctx, method, &uri, &headers, body).await
}

/// An AWS JSON-protocol error answer.
fn aws_error(status: StatusCode, kind: &str, extra: Value) -> Response {
    let mut body = json!({"__type": kind, "message": "injected by the test proxy"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    (
        status,
        [("content-type", "application/x-amz-json-1.0")],
        body.to_string(),
    )
        .into_response()
}

/// The shape of a batch call that can fail in part.
struct Batch {
    list: &'static str,
    failed_count: &'static str,
    error_code: &'static str,
}

const PUT_EVENTS: Batch = Batch {
    list: "Entries",
    failed_count: "FailedEntryCount",
    error_code: "ThrottlingException",
};
const PUT_RECORDS: Batch = Batch {
    list: "Records",
    failed_count: "FailedRecordCount",
    error_code: "ProvisionedThroughputExceededException",
};

/// Delivers only the even entries; the odd ones come back failed, as a partial failure does.
async fn partial(ctx: &Ctx, uri: &Uri, headers: &HeaderMap, body: &Bytes, batch: Batch) -> Response {
    let Ok(mut request) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, "proxy: body is not JSON").into_response();
    };
    let entries = request[batch.list].as_array().cloned().unwrap_or_default();
    let kept: Vec<Value> = entries.iter().step_by(2).cloned().collect();
    request[batch.list] = Value::Array(kept);
    let upstream = forward(ctx, Method::POST, uri, headers, Bytes::from(request.to_string())).await;
    let (parts, upstream_body) = upstream.into_parts();
    let Ok(bytes) = axum::body::to_bytes(upstream_body, 1 << 20).await else {
        return (StatusCode::BAD_GATEWAY, "proxy: upstream body").into_response();
    };
    let accepted: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut ids = accepted[batch.list]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter();
    let results: Vec<Value> = (0..entries.len())
        .map(|i| {
            if i % 2 == 0 {
                ids.next()
                    .unwrap_or(json!({"ErrorCode": "InternalFailure", "ErrorMessage": "missing"}))
            } else {
                json!({"ErrorCode": batch.error_code, "ErrorMessage": "injected partial failure"})
            }
        })
        .collect();
    let failed = results.iter().filter(|r| r.get("ErrorCode").is_some()).count();
    let mut body = json!({ batch.list: results });
    body[batch.failed_count] = json!(failed);
    (
        parts.status,
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

async fn forward(ctx: &Ctx, method: Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
    crate::forward::forward(&ctx.http, &ctx.upstream, method, uri, headers, body).await
}
