//! An HTTP proxy in front of the emulator that injects AWS failures the emulator cannot
//! produce itself: whole-call throttling, 5xx answers, added latency, TransactWriteItems
//! cancellations, partial PutEvents / PutRecords failures in which only some entries really
//! arrive and the others come back with an error code, refusals of the caller's permissions,
//! and S3's answer to a missing key for a caller without `s3:ListBucket` (403, not moto's 404).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The brownout key for S3, whose REST calls carry no `X-Amz-Target`.
pub const S3: &str = "s3";

#[derive(Default)]
pub struct FaultPlan {
    /// Whole PutEvents calls to answer with ThrottlingException.
    pub throttle_put_events: AtomicU32,
    /// PutEvents calls in which every odd entry fails (and is not delivered).
    pub partial_put_events: AtomicU32,
    /// PutEvents calls whose every entry is refused for its content (InvalidArgument), undelivered.
    pub refuse_put_events: AtomicU32,
    /// Whole PutRecords calls to answer with ProvisionedThroughputExceededException.
    pub throttle_put_records: AtomicU32,
    /// PutRecords calls in which every odd record fails (and is not stored).
    pub partial_put_records: AtomicU32,
    /// The same, answered without `FailedRecordCount` (the field is optional in the API): only
    /// the entries' own error codes say what failed.
    pub uncounted_partial_put_records: AtomicU32,
    /// TransactWriteItems calls to answer with TransactionCanceledException (conflicts).
    pub cancel_transact_writes: AtomicU32,
    /// Calls of any kind to answer with 500 InternalFailure.
    pub fail_5xx: AtomicU32,
    /// Added to every forwarded call while non-zero.
    pub latency_ms: AtomicU64,
    /// While non-zero, a PutEvents call holding an entry EventBridge cannot take (a detail type
    /// over 128 characters, or an entry of this many bytes or more) fails as a whole with
    /// ValidationException, as EventBridge's request validation does (moto checks neither).
    pub put_events_entry_limit: AtomicU64,
    /// While set, a PutEvents call whose body holds this text fails as a whole with
    /// ValidationException: a limit of EventBridge's that the publisher's own checks do not know.
    pub refuse_put_events_holding: std::sync::Mutex<Option<String>>,
    /// While set, a PutEvents call whose body holds this text fails as a whole with
    /// AccessDeniedException: a permission taken away mid-flight (not the event's fault).
    pub deny_put_events_holding: std::sync::Mutex<Option<String>>,
    /// While set, every call whose `X-Amz-Target` starts with this (e.g. `DynamoDB_20120810.`)
    /// — or, set to [`S3`], every call without one (S3's REST calls) — is answered 503
    /// ServiceUnavailable (S3's as S3 does: `SlowDown`, in XML): one AWS service browned out,
    /// the others healthy.
    pub brownout: std::sync::Mutex<Option<String>>,
    /// While set like [`FaultPlan::brownout`] (a target prefix, or [`S3`]), every such call is
    /// refused for the caller's permissions: S3's REST calls with 403 `AccessDenied` in S3's
    /// XML, the JSON services' with 400 `AccessDeniedException` (as those services answer it).
    /// A role or key policy changed under a running process: its fault, not the request's.
    pub deny: std::sync::Mutex<Option<String>>,
    /// Calls answered by [`FaultPlan::deny`].
    pub denied: AtomicU32,
    /// While set, S3's 404 `NoSuchKey` becomes 403 `AccessDenied`: what S3 answers for a missing
    /// key to a caller without `s3:ListBucket` on the bucket (moto always answers 404).
    pub missing_key_as_denied: std::sync::atomic::AtomicBool,
    /// While set to (target prefix, text), every call whose `X-Amz-Target` starts with the
    /// prefix and whose body holds the text is answered 503 ServiceUnavailable: one item (a hot
    /// partition, say) failing while the rest of its table answers.
    pub brownout_holding: std::sync::Mutex<Option<(String, String)>>,
    /// While set to (target prefix, text, milliseconds), every call whose `X-Amz-Target` starts
    /// with the prefix and whose body holds the text is held that long before it is forwarded:
    /// one slow item, or one slow operation, while the rest answers at once.
    pub delay_holding: std::sync::Mutex<Option<(String, String, u64)>>,
    /// Calls seen per kind, for the test to check the faults were hit.
    pub throttled: AtomicU32,
    pub partial: AtomicU32,
    /// Every fault answered or injected, of any kind.
    pub injected: AtomicU32,
    /// The body of every PutEvents request, as the client sent it (what EventBridge was asked to store).
    pub put_events_bodies: std::sync::Mutex<Vec<Bytes>>,
    /// Every PutEvents and GetRecords request whole (path, headers, body): what AWS checks a
    /// signature against (the two calls the relay signs itself).
    pub signed_calls: std::sync::Mutex<Vec<RecordedCall>>,
    /// Every call forwarded or answered, by operation (`X-Amz-Target`'s last part; `s3` for
    /// S3's REST calls): what a benchmark prices.
    pub calls: std::sync::Mutex<std::collections::BTreeMap<String, CallCount>>,
}

/// A request as it arrived.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    /// `X-Amz-Target`.
    pub target: String,
    pub method: String,
    pub path_and_query: String,
    /// Names in lower case, in the order they arrived.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Calls of one operation, and the entries they carried (TransactItems, Entries, Records;
/// the keys of a batch's RequestItems), or 1 per call without a list.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct CallCount {
    pub calls: u64,
    pub entries: u64,
}

/// The entries a request carries (1 for a single-item call).
fn entries_of(body: &[u8]) -> u64 {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return 1;
    };
    for list in ["TransactItems", "Entries", "Records"] {
        if let Some(items) = request[list].as_array() {
            return items.len() as u64;
        }
    }
    if let Some(tables) = request["RequestItems"].as_object() {
        return tables
            .values()
            .map(|t| t.as_array().map_or(1, |a| a.len() as u64))
            .sum();
    }
    1
}

impl FaultPlan {
    /// Browns out the service whose targets start with `prefix` (`None`: all healthy again).
    pub fn set_brownout(&self, prefix: Option<&str>) {
        if let Ok(mut b) = self.brownout.lock() {
            *b = prefix.map(str::to_owned);
        }
    }

    /// Refuses the caller's permissions on the service whose targets start with `prefix`
    /// (or S3's, with [`S3`]); `None`: granted again.
    pub fn set_deny(&self, prefix: Option<&str>) {
        if let Ok(mut d) = self.deny.lock() {
            *d = prefix.map(str::to_owned);
        }
    }

    /// Calls so far, by operation.
    pub fn call_counts(&self) -> std::collections::BTreeMap<String, CallCount> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Every PutEvents request body seen so far, as text.
    pub fn put_events_requests(&self) -> Vec<String> {
        self.put_events_bodies
            .lock()
            .map(|b| {
                b.iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
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
    if matches!(target, "AWSEvents.PutEvents" | "Kinesis_20131202.GetRecords") {
        if let Ok(mut calls) = plan.signed_calls.lock() {
            calls.push(RecordedCall {
                target: target.to_owned(),
                method: method.to_string(),
                path_and_query: uri.path_and_query().map_or("/".into(), ToString::to_string),
                headers: headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: body.clone(),
            });
        }
    }
    if let Ok(mut calls) = plan.calls.lock() {
        let op = target
            .rsplit('.')
            .next()
            .filter(|op| !op.is_empty())
            .unwrap_or(S3);
        let count = calls.entry(op.to_owned()).or_default();
        count.calls += 1;
        count.entries += entries_of(&body);
    }
    if service_matches(&plan.deny, target) {
        plan.denied.fetch_add(1, Ordering::SeqCst);
        plan.injected.fetch_add(1, Ordering::SeqCst);
        if target.is_empty() {
            return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied");
        }
        return aws_error(StatusCode::BAD_REQUEST, "AccessDeniedException", json!({}));
    }
    let browned_out = service_matches(&plan.brownout, target)
        || plan
            .brownout_holding
            .lock()
            .ok()
            .and_then(|b| {
                b.as_ref()
                    .map(|(prefix, text)| calls_holding(target, &body, prefix, text))
            })
            .unwrap_or(false);
    if browned_out {
        plan.injected.fetch_add(1, Ordering::SeqCst);
        if target.is_empty() {
            return s3_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate.",
            );
        }
        return aws_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", json!({}));
    }
    if take(&plan.fail_5xx) {
        plan.injected.fetch_add(1, Ordering::SeqCst);
        return aws_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", json!({}));
    }
    let held_for = plan.delay_holding.lock().ok().and_then(|d| {
        d.as_ref()
            .filter(|(prefix, text, _)| calls_holding(target, &body, prefix, text))
            .map(|(_, _, ms)| *ms)
    });
    if let Some(ms) = held_for {
        plan.injected.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
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
        if take(&plan.uncounted_partial_put_records) {
            plan.injected.fetch_add(1, Ordering::SeqCst);
            let uncounted = Batch {
                failed_count: "",
                ..PUT_RECORDS
            };
            return partial(&ctx, &uri, &headers, &body, uncounted).await;
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
        if let Ok(mut bodies) = ctx.plan.put_events_bodies.lock() {
            bodies.push(body.clone());
        }
        let limit = ctx.plan.put_events_entry_limit.load(Ordering::SeqCst);
        if limit > 0 {
            if let Some(reason) = unacceptable_entry(&body, limit) {
                return aws_error(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    json!({"message": reason}),
                );
            }
        }
        // A whole call refused for its content, or denied for a permission, while it holds a marker.
        let marked = [
            (
                &ctx.plan.refuse_put_events_holding,
                "ValidationException",
                "1 validation error detected: refused by the test proxy",
            ),
            (
                &ctx.plan.deny_put_events_holding,
                "AccessDeniedException",
                "User is not authorized to perform: events:PutEvents (the test proxy)",
            ),
        ];
        for (marker, code, message) in marked {
            let held = marker
                .lock()
                .ok()
                .and_then(|m| m.as_ref().map(|m| holds(&body, m.as_bytes())))
                .unwrap_or(false);
            if held {
                ctx.plan.injected.fetch_add(1, Ordering::SeqCst);
                return aws_error(StatusCode::BAD_REQUEST, code, json!({ "message": message }));
            }
        }
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
        if take(&ctx.plan.refuse_put_events) {
            ctx.plan.injected.fetch_add(1, Ordering::SeqCst);
            let entries = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["Entries"].as_array().map(Vec::len))
                .unwrap_or(0);
            let results: Vec<Value> = (0..entries)
                .map(|_| json!({"ErrorCode": "InvalidArgument", "ErrorMessage": "refused by the test proxy"}))
                .collect();
            let body = json!({"FailedEntryCount": entries, "Entries": results});
            return (
                StatusCode::OK,
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
    if target.is_empty() && plan.missing_key_as_denied.load(Ordering::SeqCst) {
        return missing_key_as_denied(&ctx, method, &uri, &headers, body).await;
    }
    forward(&ctx, method, &uri, &headers, body).await
}

/// Whether `target` (empty: an S3 REST call) is of the service set in `setting`.
fn service_matches(setting: &std::sync::Mutex<Option<String>>, target: &str) -> bool {
    setting
        .lock()
        .ok()
        .and_then(|b| {
            b.as_ref().map(|prefix| match prefix.as_str() {
                S3 => target.is_empty(),
                prefix => target.starts_with(prefix),
            })
        })
        .unwrap_or(false)
}

/// Forwards an S3 call; a 404 for a missing key comes back as S3 answers it to a caller that
/// may not list the bucket: 403 AccessDenied (it must not learn whether the key exists).
async fn missing_key_as_denied(
    ctx: &Ctx,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let upstream = forward(ctx, method, uri, headers, body).await;
    if upstream.status() != StatusCode::NOT_FOUND {
        return upstream;
    }
    let (parts, upstream_body) = upstream.into_parts();
    let Ok(bytes) = axum::body::to_bytes(upstream_body, 1 << 20).await else {
        return (StatusCode::BAD_GATEWAY, "proxy: upstream body").into_response();
    };
    // HEAD answers carry no body: a 404 there is a missing key as well.
    if bytes.is_empty() || holds(&bytes, b"<Code>NoSuchKey</Code>") {
        ctx.plan.injected.fetch_add(1, Ordering::SeqCst);
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied");
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Whether `needle` occurs in `body`.
/// A call of an operation starting with `prefix` whose body holds `text`.
fn calls_holding(target: &str, body: &[u8], prefix: &str, text: &str) -> bool {
    target.starts_with(prefix) && holds(body, text.as_bytes())
}

fn holds(body: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && body.windows(needle.len()).any(|w| w == needle)
}

/// Why EventBridge would refuse this PutEvents request as a whole, if it would.
fn unacceptable_entry(body: &[u8], limit: u64) -> Option<String> {
    let request: Value = serde_json::from_slice(body).ok()?;
    request["Entries"].as_array()?.iter().find_map(|entry| {
        let text = |k: &str| entry[k].as_str().unwrap_or_default();
        let size = (text("Source").len() + text("DetailType").len() + text("Detail").len()) as u64;
        if text("DetailType").chars().count() > 128 {
            Some("1 validation error detected: Value at 'entries.1.member.detailType' failed to satisfy constraint: Member must have length less than or equal to 128".to_owned())
        } else if size >= limit {
            Some(format!("Total size of the entries in the request is over the limit ({size} bytes)"))
        } else {
            None
        }
    })
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

/// An error as S3's REST API answers it (XML, not the JSON protocols' `__type`): what its SDK
/// parses the code from.
fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>test-proxy</RequestId></Error>"
    );
    (status, [("content-type", "application/xml")], body).into_response()
}

/// The shape of a batch call that can fail in part.
struct Batch {
    list: &'static str,
    /// The field counting failed entries; empty: the answer leaves it out.
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
    if !batch.failed_count.is_empty() {
        body[batch.failed_count] = json!(failed);
    }
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
