//! A small OTLP receiver on loopback: what the processes export — over HTTP (`POST /v1/traces`,
//! protobuf) or gRPC (the TraceService's `Export`, HTTP/2 without TLS) — decoded into spans a
//! test can follow across processes.
//!
//! Only the fields a test reads are declared (prost skips the others): the service name from
//! each resource, and each span's ids and name.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(string, optional, tag = "1")]
    string_value: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<RawSpan>,
}

#[derive(Clone, PartialEq, Message)]
struct RawSpan {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
}

/// One exported span, ids in lowercase hex (`parent` empty for a root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub name: String,
}

pub struct Receiver {
    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    task: tokio::task::JoinHandle<()>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let store = spans.clone();
        let grpc_store = spans.clone();
        let app = axum::Router::new()
            .route(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                post(move |body: Bytes| {
                    let store = grpc_store.clone();
                    async move {
                        // One length-prefixed message: a compression flag, its length, the message.
                        let message = body.get(5..).map(Bytes::copy_from_slice).unwrap_or_default();
                        let status = match ExportTraceServiceRequest::decode(message) {
                            Ok(request) => {
                                keep(&store, request);
                                "0"
                            }
                            Err(_) => "3",
                        };
                        // A trailers-only answer: the status in the headers, an empty response message.
                        (
                            [("content-type", "application/grpc"), ("grpc-status", status)],
                            Bytes::from_static(&[0, 0, 0, 0, 0]),
                        )
                    }
                }),
            )
            .route(
                "/v1/traces",
                post(move |body: Bytes| {
                    let store = store.clone();
                    async move {
                        let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                            return axum::http::StatusCode::BAD_REQUEST;
                        };
                        keep(&store, request);
                        axum::http::StatusCode::OK
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, spans, task })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().map(|all| all.clone()).unwrap_or_default()
    }

    /// The spans of one trace received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans
            .lock()
            .map(|all| all.iter().filter(|s| s.trace_id == trace_id).cloned().collect())
            .unwrap_or_default()
    }
}

/// Adds the spans of one export request to `store`.
fn keep(store: &Mutex<Vec<Span>>, request: ExportTraceServiceRequest) {
    let mut got = Vec::new();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.string_value.clone())
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            got.push(Span {
                service: service.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                name: span.name,
            });
        }
    }
    if let Ok(mut all) = store.lock() {
        all.extend(got);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
