//! Retrying AWS calls: which failures are transient and which refuse the caller itself (the one
//! place that decides), exponential backoff with jitter so retrying processes do not stampede
//! together, and [`while_transient`], the one retry loop: an outage is waited out however long
//! it lasts.

use std::future::Future;
use std::time::Duration;

// Every AWS SDK crate re-exports these smithy types: one classification serves all of them.
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use rand::Rng;
use tokio_util::sync::CancellationToken;

/// The cause label of a transient AWS failure (timeouts, connection trouble, throttling, 5xx),
/// or `None` when retrying cannot help (bad request, missing resource, permissions).
pub fn transient_cause<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&'static str> {
    match err {
        SdkError::TimeoutError(_) => Some("timeout"),
        SdkError::DispatchFailure(_) => Some("connection"),
        SdkError::ResponseError(_) => Some("malformed_response"),
        SdkError::ServiceError(service) => {
            transient_code(err.code().unwrap_or(""), service.raw().status().as_u16())
        }
        _ => None,
    }
}

/// The cause label of a service's refusal with `code` and HTTP `status`, when retrying may help.
pub fn transient_code(code: &str, status: u16) -> Option<&'static str> {
    // Codes the AWS SDKs' standard retry treats as transient though some come with a
    // 4xx status: S3's `RequestTimeout` (a slow upload, HTTP 400) must not stop a process.
    if code.contains("Throttl")
        || code.contains("ThroughputExceeded")
        || matches!(
            code,
            "LimitExceededException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException"
                | "BandwidthLimitExceeded"
                | "SlowDown"
                | "TransactionInProgressException"
                | "PriorRequestNotComplete"
        )
    {
        Some("throttled")
    } else if matches!(code, "RequestTimeout" | "RequestTimeoutException") {
        Some("timeout")
    } else if status >= 500 || status == 429 {
        Some("server_error")
    } else {
        None
    }
}

/// Whether a refusal with `code` is about the caller itself — its credentials, permissions or
/// keys (an expired session, a role or bucket or KMS key policy that no longer lets it in) —
/// rather than about what it asked for. No input is at fault, so nothing may be parked for it:
/// the caller holds its input and tries again until an operator fixes the grant, and says so
/// on `/healthz`. (S3 answers a missing key with 403 `AccessDenied` too, to a caller without
/// `s3:ListBucket` on the bucket: the roles are granted it, so that a missing object reads as
/// 404 `NoSuchKey`, which is the input's fault.)
pub fn refused_caller(code: &str) -> bool {
    // S3 reports a refusal of KMS (a disabled key, a key policy without kms:Decrypt) as
    // `KMS.<code>`.
    code.starts_with("KMS.")
        || matches!(
            code,
            "AccessDenied"
                | "AccessDeniedException"
                | "AllAccessDisabled"
                | "AccountProblem"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "InvalidAccessKeyId"
                | "InvalidClientTokenId"
                | "InvalidToken"
                | "TokenRefreshRequired"
                | "SignatureDoesNotMatch"
                | "InvalidSignatureException"
                | "RequestTimeTooSkewed"
                | "UnrecognizedClientException"
        )
}

/// A failure that may go away by itself (an outage, throttling) rather than one retrying cannot fix.
pub trait Transient {
    fn is_transient(&self) -> bool;
}

impl<E: ProvideErrorMetadata> Transient for SdkError<E, HttpResponse> {
    fn is_transient(&self) -> bool {
        transient_cause(self).is_some()
    }
}

/// Runs `op` until it succeeds or fails for good: a transient failure is retried after
/// `backoff`'s next delay, for as long as it lasts. Never giving up is deliberate: a process that
/// exits during a long outage only restarts into the same outage (and an exit on a give-up count
/// made a 3-minute DynamoDB brownout stop the shipping service); meanwhile the stall beacons turn
/// `/healthz` 503. The first failure and every tenth are logged as warnings (with the error's
/// chain of causes), the rest at debug.
pub async fn while_transient<T, E, F, Fut>(what: &str, backoff: Backoff, op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Transient + std::error::Error,
{
    let never = CancellationToken::new();
    match while_transient_until(what, backoff, &never, op).await? {
        Some(value) => Ok(value),
        None => unreachable!("a token nobody cancels"),
    }
}

/// [`while_transient`] that a shutdown ends during a wait: `Ok(None)` then (what was not done
/// is done by the next start, as after a crash).
pub async fn while_transient_until<T, E, F, Fut>(
    what: &str,
    mut backoff: Backoff,
    stop: &CancellationToken,
    mut op: F,
) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Transient + std::error::Error,
{
    loop {
        match op().await {
            Ok(value) => return Ok(Some(value)),
            Err(err) if err.is_transient() => {
                let delay = backoff.next_delay();
                let attempt = backoff.attempts();
                let delay_ms = delay.as_millis() as u64;
                if attempt == 1 || attempt.is_multiple_of(10) {
                    tracing::warn!(op = what, attempt, error = %crate::error_chain::chain(&err), delay_ms, "transient failure, retrying");
                } else {
                    tracing::debug!(op = what, attempt, error = %crate::error_chain::chain(&err), delay_ms, "transient failure, retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return Ok(None),
                }
            }
            Err(err) => return Err(err),
        }
    }
}

/// Every cause label [`transient_cause`] gives, plus a partial failure (some entries of a batch
/// call failed): metrics start each at 0.
pub const CAUSES: [&str; 6] = [
    "throttled",
    "partial_failure",
    "malformed_response",
    "timeout",
    "connection",
    "server_error",
];

#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// The policy for a control-plane or side call (a lookup, a park, a claim check): from
    /// 200 ms up to 10 s between attempts.
    pub fn call() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(10))
    }

    /// The policy on the data path (PutRecords, PutEvents, checkpoints, marks), where a
    /// recovering service should be noticed within seconds: from 100 ms up to 5 s.
    pub fn data_path() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The policy of a checkpoint write: like the data path from 200 ms, since a checkpoint
    /// the lease outlives is worth a slightly slower first retry.
    pub fn checkpoint() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(5))
    }

    /// The policy of a consumer's receive loop: up to 20 s, since an empty or unreachable
    /// queue costs nothing to wait out and every receiver polls it.
    pub fn receive() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(20))
    }

    /// The policy of deleting handled messages: short (up to 2 s), since a message not
    /// deleted within its visibility timeout is delivered again.
    pub fn delete() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// A policy of its own; prefer a named one above, so every loop's policy is in this table.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The delay before the next attempt: uniform in `[c/4, c]`, `c = min(cap, base * 2^attempt)`
    /// (the floor keeps a retry storm off a recovering service).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(rand::rng().random_range(millis / 4..=millis))
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_stays_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..40 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
        assert_eq!(b.attempts(), 40);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    fn service_error(
        status: u16,
        code: &str,
    ) -> SdkError<aws_smithy_types::error::ErrorMetadata, HttpResponse> {
        let meta = aws_smithy_types::error::ErrorMetadata::builder()
            .code(code)
            .build();
        let status =
            aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap_or_else(|_| unreachable!());
        let raw = HttpResponse::new(status, aws_smithy_types::body::SdkBody::empty());
        SdkError::service_error(meta, raw)
    }

    #[test]
    fn a_request_timeout_or_throttle_is_transient_whatever_its_status() {
        // S3 answers a slow upload with 400 RequestTimeout; DynamoDB a retried transaction
        // with 400 TransactionInProgressException: both go away by themselves.
        assert_eq!(
            transient_cause(&service_error(400, "RequestTimeout")),
            Some("timeout")
        );
        assert_eq!(
            transient_cause(&service_error(400, "RequestTimeoutException")),
            Some("timeout")
        );
        for code in [
            "TransactionInProgressException",
            "TooManyRequestsException",
            "SlowDown",
            "ThrottlingException",
        ] {
            assert_eq!(
                transient_cause(&service_error(400, code)),
                Some("throttled"),
                "{code}"
            );
        }
        assert_eq!(
            transient_cause(&service_error(503, "ServiceUnavailable")),
            Some("server_error")
        );
        for code in [
            "AccessDeniedException",
            "ValidationException",
            "ResourceNotFoundException",
        ] {
            assert_eq!(transient_cause(&service_error(400, code)), None, "{code}");
        }
    }

    #[test]
    fn refusals_of_the_caller_are_told_from_refusals_of_the_request() {
        for code in [
            "AccessDenied",
            "AccessDeniedException",
            "ExpiredToken",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "KMS.DisabledException",
            "KMS.AccessDeniedException",
        ] {
            assert!(refused_caller(code), "{code}");
            assert_eq!(transient_code(code, 403), None, "{code}: not an outage either");
        }
        for code in [
            "NoSuchKey",
            "NoSuchBucket",
            "ValidationException",
            "InvalidObjectState",
        ] {
            assert!(!refused_caller(code), "{code}");
        }
    }

    struct Failure(bool);
    impl Transient for Failure {
        fn is_transient(&self) -> bool {
            self.0
        }
    }
    impl std::fmt::Debug for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Failure({})", self.0)
        }
    }
    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transient: {}", self.0)
        }
    }
    impl std::error::Error for Failure {}

    #[tokio::test]
    async fn waits_out_any_number_of_transient_failures_and_stops_at_a_fatal_one() {
        // More failures than any give-up count the loops had (they had 5 to 40).
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
        let mut calls = 0;
        let out = while_transient("test", backoff.clone(), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 200 {
                    Err(Failure(true))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert!(matches!(out, Ok(200)));
        let mut calls = 0;
        let out: Result<(), Failure> = while_transient("test", backoff, || {
            calls += 1;
            let n = calls;
            async move { Err(Failure(n < 3)) }
        })
        .await;
        assert!(matches!(out, Err(Failure(false))));
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn a_shutdown_ends_the_wait() {
        let stop = CancellationToken::new();
        stop.cancel();
        let backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let out: Result<Option<()>, Failure> =
            while_transient_until("test", backoff, &stop, || async { Err(Failure(true)) }).await;
        assert!(matches!(out, Ok(None)));
    }
}
