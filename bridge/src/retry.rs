//! Retrying AWS calls: which failures are transient (the one place that decides), and
//! exponential backoff with jitter so retrying processes do not stampede together.

use std::time::Duration;

// Every AWS SDK crate re-exports the same smithy types; Kinesis' names serve for all of them.
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use rand::Rng;

/// The cause label of a transient AWS failure (timeouts, connection trouble, throttling, 5xx),
/// or `None` when retrying cannot help (bad request, missing resource, permissions).
pub fn transient_cause<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&'static str> {
    match err {
        SdkError::TimeoutError(_) => Some("timeout"),
        SdkError::DispatchFailure(_) => Some("connection"),
        SdkError::ResponseError(_) => Some("malformed_response"),
        SdkError::ServiceError(service) => {
            let code = err.code().unwrap_or("");
            if code.contains("Throttl")
                || code.contains("ThroughputExceeded")
                || matches!(code, "LimitExceededException" | "RequestLimitExceeded")
            {
                Some("throttled")
            } else if service.raw().status().as_u16() >= 500 || service.raw().status().as_u16() == 429 {
                Some("server_error")
            } else {
                None
            }
        }
        _ => None,
    }
}

#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
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
}
