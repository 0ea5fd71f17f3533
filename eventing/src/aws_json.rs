//! Signed awsJson 1.1 calls without the AWS SDK's per-call orchestrator.
//!
//! Why our own: the relay makes one PutEvents call per ten events (EventBridge's limit) and
//! reads every record through GetRecords, and profiles of the relay put the SDK's per-call work
//! (config-bag layers, runtime plugins, interceptors, its hyper wrappers and JSON codec) at over
//! a quarter of its CPU. Everything that is not per call still comes from the SDK's crates,
//! resolved once at start: the region, the credentials provider chain, the endpoint (each
//! service's own SDK endpoint rules, so FIPS, dual-stack and `AWS_ENDPOINT_URL[_SERVICE]` behave
//! as in every other client here). What is left here is the call itself: the request, signed
//! by [`crate::sigv4`] (which says why not `aws-sigv4`), hyper's connection pool with rustls and
//! the platform's roots, and the service's error answer.
//!
//! Retries are the caller's: every failure comes back with its cause, classified by
//! [`crate::retry::transient_code`] like every SDK error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_types::service_config::ServiceConfigKey;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// How long one attempt may take, connection included (as the SDK's attempt timeout).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Credentials are fetched again this long before they expire (the SDK's lazy cache does the same).
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// Credentials without an expiry (keys in the environment) are looked up again this often.
const REFRESH_WITHOUT_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// Keys handed out already within [`REFRESH_BEFORE_EXPIRY`] are still good until they expire:
/// the provider has nothing fresher yet, so it is asked again after this pause (or half their
/// remaining life, if less), not on every call.
const RECHECK_NEAR_EXPIRY: Duration = Duration::from_secs(10);

/// A call refused as a whole: awsJson's error body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type")]
    kind: Option<String>,
    #[serde(alias = "Message")]
    message: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not reach the service")]
    Dispatch(#[source] BoxError),
    #[error("refused (HTTP {status}): {code}: {message}")]
    Service {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the answer (HTTP {status}) could not be read")]
    Malformed {
        status: u16,
        #[source]
        source: BoxError,
    },
    #[error("no AWS credentials to sign the call")]
    Credentials(#[source] CredentialsError),
    #[error("the call could not be signed")]
    Signing(#[source] BoxError),
}

impl CallError {
    /// The service's error code, for a call it refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The service's message, for a call it refused.
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

impl crate::retry::Transient for CallError {
    fn is_transient(&self) -> bool {
        self.transient_cause().is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no AWS region configured (AWS_REGION)")]
    NoRegion,
    #[error("no AWS credentials provider configured")]
    NoCredentials,
    #[error("the {0} endpoint could not be resolved")]
    Endpoint(&'static str, #[source] BoxError),
    #[error("the endpoint `{0}` is not a usable URL")]
    BadEndpoint(String),
    #[error("the platform's TLS roots could not be loaded")]
    Tls(#[source] BoxError),
}

/// Calls one service; clones share the connection pool and the cached credentials.
#[derive(Clone)]
pub struct AwsJsonClient {
    http: Client<Https, Full<Bytes>>,
    uri: http::Uri,
    scope: crate::sigv4::Scope,
    credentials: SharedCredentialsProvider,
    cached: Arc<Mutex<Option<Cached>>>,
    /// Held while the provider is asked: callers that find the cache stale meanwhile wait for
    /// that one lookup instead of each making their own.
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

/// Credentials and when to look them up again.
#[derive(Clone)]
struct Cached {
    credentials: Credentials,
    refresh_at: SystemTime,
}

impl Cached {
    fn fresh(credentials: Credentials, now: SystemTime) -> Self {
        let refresh_at = match credentials.expiry() {
            None => now + REFRESH_WITHOUT_EXPIRY,
            Some(expiry) => match expiry.checked_sub(REFRESH_BEFORE_EXPIRY) {
                Some(early) if early > now => early,
                // Already near expiry when handed out: use them, ask again a little later.
                _ => {
                    let left = expiry.duration_since(now).unwrap_or_default();
                    now + RECHECK_NEAR_EXPIRY.min(left / 2)
                }
            },
        };
        Self {
            credentials,
            refresh_at,
        }
    }
}

impl AwsJsonClient {
    /// A client of the service at `endpoint` (resolved by the caller), signing as `signing_name`.
    pub fn new(
        aws: &aws_config::SdkConfig,
        endpoint: &str,
        signing_name: &'static str,
    ) -> Result<Self, SetupError> {
        let region = region(aws)?;
        let credentials = aws.credentials_provider().ok_or(SetupError::NoCredentials)?;
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|_| SetupError::BadEndpoint(endpoint.to_owned()))?;
        let scope = crate::sigv4::Scope::new(&region, signing_name, &uri)
            .ok_or_else(|| SetupError::BadEndpoint(endpoint.to_owned()))?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
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
            scope,
            credentials,
            cached: Arc::default(),
            refreshing: Arc::default(),
        })
    }

    /// One call of `target` (`X-Amz-Target`) with `body`: the answer's body on a 2xx, else why not.
    pub async fn call(&self, target: &str, body: Vec<u8>) -> Result<Bytes, CallError> {
        let credentials = self.credentials().await?;
        let request = self.signed(target, body, credentials)?;
        let call = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| CallError::Dispatch(e.into()))?;
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
                .map_err(|e| CallError::Dispatch(e.into()))?
                .to_bytes();
            Ok::<_, CallError>((status, error_type, bytes))
        };
        let (status, error_type, bytes) = tokio::time::timeout(ATTEMPT_TIMEOUT, call)
            .await
            .map_err(|_| CallError::Timeout(ATTEMPT_TIMEOUT))??;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        Err(refusal(status, error_type.as_deref(), &bytes))
    }

    fn signed(
        &self,
        target: &str,
        body: Vec<u8>,
        credentials: Credentials,
    ) -> Result<http::Request<Full<Bytes>>, CallError> {
        let signing = |e: BoxError| CallError::Signing(e);
        let signature = crate::sigv4::sign(&self.scope, &credentials, target, &body, SystemTime::now());
        let sensitive = |value: &str| {
            let mut value = http::HeaderValue::from_str(value).map_err(|e| signing(e.into()))?;
            // The session token and signature stay out of any debug output.
            value.set_sensitive(true);
            Ok::<_, CallError>(value)
        };
        let mut builder = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, crate::sigv4::CONTENT_TYPE)
            // The host as signed (hyper would write the URI's, default port included).
            .header(http::header::HOST, &self.scope.host)
            .header("x-amz-target", target)
            .header("x-amz-date", signature.amz_date)
            .header(http::header::AUTHORIZATION, sensitive(&signature.authorization)?);
        if let Some(token) = credentials.session_token() {
            builder = builder.header("x-amz-security-token", sensitive(token.trim())?);
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| signing(e.into()))
    }

    /// The cached credentials, looked up again shortly before they expire: by one caller at a
    /// time, the others waiting for its answer.
    async fn credentials(&self) -> Result<Credentials, CallError> {
        if let Some(cached) = self.cached_now() {
            return Ok(cached);
        }
        let _turn = self.refreshing.lock().await;
        // Whoever held the turn before may have looked them up already.
        if let Some(cached) = self.cached_now() {
            return Ok(cached);
        }
        let fresh = self
            .credentials
            .provide_credentials()
            .await
            .map_err(CallError::Credentials)?;
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some(Cached::fresh(fresh.clone(), SystemTime::now()));
        }
        Ok(fresh)
    }

    /// The cached credentials, unless a lookup is due.
    fn cached_now(&self) -> Option<Credentials> {
        let now = SystemTime::now();
        let cached = self.cached.lock().ok()?;
        cached
            .as_ref()
            .filter(|c| now < c.refresh_at)
            .map(|c| c.credentials.clone())
    }
}

/// The configured region.
pub fn region(aws: &aws_config::SdkConfig) -> Result<String, SetupError> {
    Ok(aws.region().ok_or(SetupError::NoRegion)?.to_string())
}

/// The endpoint URL configured for the service `service_id` (`AWS_ENDPOINT_URL_<SERVICE>`, then
/// `AWS_ENDPOINT_URL`, as the SDK's own client of that service reads them), if any.
pub fn configured_endpoint(
    aws: &aws_config::SdkConfig,
    service_id: &'static str,
) -> Result<Option<String>, SetupError> {
    if aws.get_origin("endpoint_url").is_client_config() {
        return Ok(aws.endpoint_url().map(str::to_owned));
    }
    let key = ServiceConfigKey::builder()
        .service_id(service_id)
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .map_err(|e| SetupError::Endpoint(service_id, e.into()))?;
    Ok(aws
        .service_config()
        .and_then(|conf| conf.load_config(key))
        .or_else(|| aws.endpoint_url().map(str::to_owned)))
}

/// Why a call was refused, from awsJson's error body or, failing that, its header and status.
pub fn refusal(status: u16, error_type: Option<&str>, body: &[u8]) -> CallError {
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
        Some(code) => CallError::Service {
            status,
            code: code.to_owned(),
            message,
        },
        // No code: a proxy's or load balancer's page. Its status says whether to retry.
        None => CallError::Service {
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
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A provider handing out keys that expire `lifetime` after each lookup, counting lookups;
    /// each lookup takes `delay` (an STS or ECS agent round trip).
    #[derive(Debug)]
    struct Expiring {
        lifetime: Duration,
        delay: Duration,
        lookups: Arc<AtomicU32>,
    }

    impl ProvideCredentials for Expiring {
        fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.lookups.fetch_add(1, Ordering::SeqCst);
            let (lifetime, delay) = (self.lifetime, self.delay);
            aws_credential_types::provider::future::ProvideCredentials::new(async move {
                tokio::time::sleep(delay).await;
                Ok(Credentials::new(
                    format!("key-{n}"),
                    "secret",
                    Some("token".into()),
                    Some(SystemTime::now() + lifetime),
                    "test",
                ))
            })
        }
    }

    fn client(lifetime: Duration, delay: Duration) -> (AwsJsonClient, Arc<AtomicU32>) {
        let lookups = Arc::new(AtomicU32::new(0));
        let aws = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Expiring {
                lifetime,
                delay,
                lookups: lookups.clone(),
            }))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        (
            AwsJsonClient::new(&aws, "http://127.0.0.1:1", "events").unwrap(),
            lookups,
        )
    }

    #[tokio::test]
    async fn credentials_are_looked_up_once_and_again_before_they_expire() {
        // An hour-long role session: one lookup serves many calls.
        let (long, lookups) = client(Duration::from_secs(3600), Duration::ZERO);
        for _ in 0..3 {
            assert_eq!(long.credentials().await.unwrap().access_key_id(), "key-0");
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
        // Keys within five minutes of their expiry are still good for a while: the provider has
        // nothing fresher yet, so it is asked again only after a pause, not on every call.
        let (short, lookups) = client(Duration::from_secs(120), Duration::ZERO);
        for _ in 0..5 {
            assert_eq!(short.credentials().await.unwrap().access_key_id(), "key-0");
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_near_expiry_share_one_lookup() {
        // Keys two minutes from expiry, a lookup that takes a moment: sixteen calls at once
        // (a relay's shards publishing together) wait for one lookup, not one each.
        let (near, lookups) = client(Duration::from_secs(120), Duration::from_millis(200));
        for wave in 0..2 {
            let calls: Vec<_> = (0..16)
                .map(|_| {
                    let near = near.clone();
                    tokio::spawn(
                        async move { near.credentials().await.map(|c| c.access_key_id().to_owned()) },
                    )
                })
                .collect();
            for call in calls {
                assert_eq!(call.await.unwrap().unwrap(), "key-0", "wave {wave}");
            }
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn refusals_are_read_as_aws_writes_them() {
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
