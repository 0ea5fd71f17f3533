//! A minimal Kinesis endpoint that accepts every PutRecords and acknowledges it at once: what is
//! left is our own path — encoding, batching, signing, HTTP — with no emulator behind it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

#[derive(Default)]
pub struct Counts {
    pub records: AtomicU64,
    pub requests: AtomicU64,
}

/// Serves on a free loopback port; returns its URL and the counters.
pub async fn start() -> anyhow::Result<(String, Arc<Counts>)> {
    let counts = Arc::new(Counts::default());
    let state = counts.clone();
    let app = Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: Bytes| {
            let counts = state.clone();
            async move { answer(&counts, &headers, &body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, counts))
}

fn answer(counts: &Counts, headers: &HeaderMap, body: &[u8]) -> axum::response::Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let reply = match target.rsplit('.').next().unwrap_or_default() {
        "PutRecords" => {
            let n = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["Records"].as_array().map(Vec::len))
                .unwrap_or(0);
            counts.requests.fetch_add(1, Ordering::Relaxed);
            let seq = counts.records.fetch_add(n as u64, Ordering::Relaxed);
            let records: Vec<Value> = (0..n)
                .map(|i| json!({"SequenceNumber": (seq + i as u64).to_string(), "ShardId": "shardId-000000000000"}))
                .collect();
            json!({"FailedRecordCount": 0, "Records": records})
        }
        // The slot marker capture keeps on the stream.
        "ListTagsForStream" => json!({"Tags": [], "HasMoreTags": false}),
        _ => json!({}),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        reply.to_string(),
    )
        .into_response()
}
