//! EventBridge's PutEvents, sent without the AWS SDK's per-call orchestrator.
//!
//! Why our own: PutEvents takes at most ten entries, so the relay makes one call per ten events,
//! and profiles of the relay put the SDK's per-call work (config-bag layers, runtime plugins,
//! interceptors, endpoint rules) at over a quarter of its CPU. Everything that is not per call
//! still comes from the SDK's crates, resolved once at start: the region, the credentials
//! provider chain, the endpoint (the SDK's own endpoint rules, so FIPS, dual-stack and
//! `AWS_ENDPOINT_URL[_EVENTBRIDGE]` behave as in every other client here), and SigV4 signing
//! (`aws-sigv4`). What is left here is the call itself: the awsJson1.1 request, hyper's
//! connection pool with rustls and the platform's roots, and reading the answer.
//!
//! Retries are the caller's ([`crate::eventbridge::Publisher`]): every failure comes back with
//! its cause, classified by [`crate::retry::transient_code`] like every SDK error.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sdk_eventbridge::config::endpoint::{Params, ResolveEndpoint};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_types::service_config::ServiceConfigKey;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// How long one attempt may take, connection included (as the SDK's attempt timeout).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Credentials are fetched again this long before they expire (the SDK's lazy cache does the same).
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// Credentials without an expiry (keys in the environment) are looked up again this often.
const REFRESH_WITHOUT_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// One entry of a PutEvents call, borrowed from the event it publishes.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entry<'a> {
    pub event_bus_name: &'a str,
    pub source: &'a str,
    pub detail_type: &'a str,
    pub detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_header: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Request<'a> {
    entries: &'a [Entry<'a>],
}

/// EventBridge's answer: one result per entry, in the request's order.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Output {
    #[serde(default)]
    pub failed_entry_count: u32,
    #[serde(default)]
    pub entries: Vec<EntryResult>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryResult {
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// A call refused as a whole: awsJson's error body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type")]
    kind: Option<String>,
    #[serde(alias = "Message")]
    message: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PutEventsError {
    #[error("putevents got no answer within {0:?}")]
    Timeout(Duration),
    #[error("putevents could not reach eventbridge")]
    Dispatch(#[source] BoxError),
    #[error("eventbridge refused putevents (HTTP {status}): {code}: {message}")]
    Service {
        status: u16,
        code: String,
        message: String,
    },
    #[error("eventbridge's answer to putevents (HTTP {status}) could not be read")]
    Malformed {
        status: u16,
        #[source]
        source: BoxError,
    },
    #[error("no AWS credentials to sign putevents")]
    Credentials(#[source] CredentialsError),
    #[error("putevents could not be signed")]
    Signing(#[source] BoxError),
}

impl PutEventsError {
    /// EventBridge's error code, for a call it refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// EventBridge's message, for a call it refused.
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Service { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The cause label when retrying may help (see [`crate::retry::transient_code`]).
    pub fn transient_cause(&self) -> Option<&'static str> {
        match self {
            Self::Timeout(_) => Some("timeout"),
            Self::Dispatch(_) => Some("connection"),
            Self::Malformed { .. } => Some("malformed_response"),
            Self::Service { status, code, .. } => crate::retry::transient_code(code, *status),
            // A provider that timed out or failed (IMDS, the ECS agent) comes back; no
            // provider at all, or a broken configuration, is the operator's to fix.
            Self::Credentials(err) => match err {
                CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_) => {
                    Some("connection")
                }
                _ => None,
            },
            Self::Signing(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no AWS region configured for EventBridge (AWS_REGION)")]
    NoRegion,
    #[error("no AWS credentials provider configured for EventBridge")]
    NoCredentials,
    #[error("EventBridge's endpoint could not be resolved")]
    Endpoint(#[source] BoxError),
    #[error("EventBridge's endpoint `{0}` is not a usable URL")]
    BadEndpoint(String),
    #[error("the platform's TLS roots could not be loaded")]
    Tls(#[source] BoxError),
}

/// Sends PutEvents calls; clones share the connection pool and the cached credentials.
#[derive(Clone)]
pub struct PutEventsClient {
    http: Client<Https, Full<Bytes>>,
    uri: http::Uri,
    region: String,
    credentials: SharedCredentialsProvider,
    cached: std::sync::Arc<Mutex<Option<(Credentials, SystemTime)>>>,
}

impl PutEventsClient {
    /// Resolves the region, credentials and endpoint from `aws` once.
    pub async fn new(aws: &aws_config::SdkConfig) -> Result<Self, SetupError> {
        let region = aws.region().ok_or(SetupError::NoRegion)?.to_string();
        let credentials = aws.credentials_provider().ok_or(SetupError::NoCredentials)?;
        let url = endpoint_url(aws, &region).await?;
        let uri: http::Uri = url.parse().map_err(|_| SetupError::BadEndpoint(url.clone()))?;
        if uri.host().is_none() {
            return Err(SetupError::BadEndpoint(url));
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.into()))?;
        let tls = hyper_rustls::ConfigBuilderExt::with_native_roots(tls)
            .map_err(|e| SetupError::Tls(e.into()))?
            .with_no_client_auth();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        // Idle connections are dropped well before AWS's load balancers close them (60 s), so a
        // call rarely meets a connection the far end has just closed.
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self {
            http,
            uri,
            region,
            credentials,
            cached: std::sync::Arc::default(),
        })
    }

    /// Where the calls go (for logs).
    pub fn endpoint(&self) -> String {
        self.uri.to_string()
    }

    /// One PutEvents call with `entries`: EventBridge's per-entry results, or why the call failed.
    pub async fn put_events(&self, entries: &[Entry<'_>]) -> Result<Output, PutEventsError> {
        let body = serde_json::to_vec(&Request { entries }).map_err(|e| PutEventsError::Signing(e.into()))?;
        let credentials = self.credentials().await?;
        let request = self.signed(body, credentials)?;
        let call = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| PutEventsError::Dispatch(e.into()))?;
            let status = response.status().as_u16();
            let error_type = response
                .headers()
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| PutEventsError::Dispatch(e.into()))?
                .to_bytes();
            Ok::<_, PutEventsError>((status, error_type, bytes))
        };
        let (status, error_type, bytes) = tokio::time::timeout(ATTEMPT_TIMEOUT, call)
            .await
            .map_err(|_| PutEventsError::Timeout(ATTEMPT_TIMEOUT))??;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| PutEventsError::Malformed {
                status,
                source: e.into(),
            });
        }
        Err(refusal(status, error_type.as_deref(), &bytes))
    }

    fn signed(
        &self,
        body: Vec<u8>,
        credentials: Credentials,
    ) -> Result<http::Request<Full<Bytes>>, PutEventsError> {
        let signing = |e: BoxError| PutEventsError::Signing(e);
        let identity: Identity = credentials.into();
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "AWSEvents.PutEvents"),
        ];
        let uri = self.uri.to_string();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("events")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing(e.into()))?
            .into();
        let signable =
            SignableRequest::new("POST", &uri, headers.iter().copied(), SignableBody::Bytes(&body))
                .map_err(|e| signing(e.into()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| signing(e.into()))?
            .into_parts();
        let mut builder = http::Request::post(self.uri.clone());
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let mut request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| signing(e.into()))?;
        for (name, value) in instructions.headers() {
            let mut value = http::HeaderValue::from_str(value).map_err(|e| signing(e.into()))?;
            // The session token and signature stay out of any debug output.
            value.set_sensitive(true);
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| signing(e.into()))?;
            request.headers_mut().insert(name, value);
        }
        Ok(request)
    }

    /// The cached credentials, looked up again shortly before they expire.
    async fn credentials(&self) -> Result<Credentials, PutEventsError> {
        let now = SystemTime::now();
        if let Ok(cached) = self.cached.lock() {
            if let Some((credentials, refresh_at)) = cached.as_ref() {
                if now < *refresh_at {
                    return Ok(credentials.clone());
                }
            }
        }
        let fresh = self
            .credentials
            .provide_credentials()
            .await
            .map_err(PutEventsError::Credentials)?;
        let refresh_at = fresh.expiry().map_or(now + REFRESH_WITHOUT_EXPIRY, |expiry| {
            expiry.checked_sub(REFRESH_BEFORE_EXPIRY).unwrap_or(now)
        });
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some((fresh.clone(), refresh_at));
        }
        Ok(fresh)
    }
}

/// The configured endpoint (`AWS_ENDPOINT_URL_EVENTBRIDGE`, then `AWS_ENDPOINT_URL`, as the
/// SDK's EventBridge client reads them) through the SDK's endpoint rules.
async fn endpoint_url(aws: &aws_config::SdkConfig, region: &str) -> Result<String, SetupError> {
    let configured = if aws.get_origin("endpoint_url").is_client_config() {
        aws.endpoint_url().map(str::to_owned)
    } else {
        let key = ServiceConfigKey::builder()
            .service_id("EventBridge")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .map_err(|e| SetupError::Endpoint(e.into()))?;
        aws.service_config()
            .and_then(|conf| conf.load_config(key))
            .or_else(|| aws.endpoint_url().map(str::to_owned))
    };
    let params = Params::builder()
        .region(region)
        .use_fips(aws.use_fips().unwrap_or(false))
        .use_dual_stack(aws.use_dual_stack().unwrap_or(false))
        .set_endpoint(configured)
        .build()
        .map_err(|e| SetupError::Endpoint(e.into()))?;
    let endpoint = aws_sdk_eventbridge::config::endpoint::DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(SetupError::Endpoint)?;
    Ok(endpoint.url().to_owned())
}

/// Why a call was refused, from awsJson's error body or, failing that, its header and status.
fn refusal(status: u16, error_type: Option<&str>, body: &[u8]) -> PutEventsError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let kind = parsed
        .as_ref()
        .and_then(|b| b.kind.as_deref())
        .or(error_type)
        .map(error_code);
    let message = parsed
        .as_ref()
        .and_then(|b| b.message.clone())
        .unwrap_or_default();
    match kind {
        Some(code) => PutEventsError::Service {
            status,
            code: code.to_owned(),
            message,
        },
        // No code: a proxy's or load balancer's page. Its status says whether to retry.
        None => PutEventsError::Service {
            status,
            code: format!("HTTP {status}"),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

/// `aws.events#ThrottlingException:http://…` → `ThrottlingException` (awsJson's sanitising rule).
fn error_code(kind: &str) -> &str {
    let kind = kind.split(':').next().unwrap_or(kind);
    kind.rsplit('#').next().unwrap_or(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_body_is_awsjson_with_the_sdks_field_names() {
        let entries = [
            Entry {
                event_bus_name: "bus",
                source: "legacy",
                detail_type: "OrderPlaced",
                detail: r#"{"a":"x\"y"}"#,
                trace_header: None,
            },
            Entry {
                event_bus_name: "bus",
                source: "legacy",
                detail_type: "T",
                detail: "{}",
                trace_header: Some("Root=1-2-3".into()),
            },
        ];
        let body = serde_json::to_string(&Request { entries: &entries }).unwrap();
        assert_eq!(
            body,
            r#"{"Entries":[{"EventBusName":"bus","Source":"legacy","DetailType":"OrderPlaced","Detail":"{\"a\":\"x\\\"y\"}"},{"EventBusName":"bus","Source":"legacy","DetailType":"T","Detail":"{}","TraceHeader":"Root=1-2-3"}]}"#
        );
    }

    fn sdk_config(region: &str) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .region(aws_config::Region::new(region.to_owned()))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build()
    }

    #[tokio::test]
    async fn the_endpoint_comes_from_the_sdks_rules_or_the_configured_url() {
        let url = endpoint_url(&sdk_config("eu-west-1"), "eu-west-1").await.unwrap();
        assert_eq!(url, "https://events.eu-west-1.amazonaws.com");
        let fips = sdk_config("us-east-1").to_builder().use_fips(true).build();
        let url = endpoint_url(&fips, "us-east-1").await.unwrap();
        assert_eq!(url, "https://events-fips.us-east-1.amazonaws.com");
        let local = sdk_config("us-east-1")
            .to_builder()
            .endpoint_url("http://127.0.0.1:4566")
            .build();
        let url = endpoint_url(&local, "us-east-1").await.unwrap();
        assert_eq!(url, "http://127.0.0.1:4566");
    }

    #[test]
    fn entry_results_and_refusals_are_read_as_eventbridge_writes_them() {
        let out: Output = serde_json::from_str(
            r#"{"FailedEntryCount":1,"Entries":[{"EventId":"e1"},{"ErrorCode":"ThrottlingException","ErrorMessage":"slow"}]}"#,
        )
        .unwrap();
        assert_eq!(out.failed_entry_count, 1);
        assert_eq!(out.entries[0].error_code, None);
        assert_eq!(out.entries[1].error_code.as_deref(), Some("ThrottlingException"));

        let err = refusal(
            400,
            None,
            br#"{"__type":"com.amazonaws.events#ValidationException","message":"too big"}"#,
        );
        assert_eq!(err.code(), Some("ValidationException"));
        assert_eq!(err.message(), Some("too big"));
        assert_eq!(err.transient_cause(), None);

        let err = refusal(400, Some("ThrottlingException:http://internal.amazon.com/"), b"");
        assert_eq!(err.code(), Some("ThrottlingException"));
        assert_eq!(err.transient_cause(), Some("throttled"));

        let err = refusal(503, None, b"<html>unavailable</html>");
        assert_eq!(err.transient_cause(), Some("server_error"));
        let err = refusal(403, None, br#"{"__type":"AccessDeniedException","Message":"no"}"#);
        assert_eq!(err.message(), Some("no"));
        assert_eq!(err.transient_cause(), None);
    }
}
