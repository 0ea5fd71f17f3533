//! What an event-driven service needs around AWS, shared by the bridge and the microservices
//! (which meet the bridge only through AWS, never through its code): the event envelope,
//! EventBridge publishing with claim checks, dead-letter queues and the operator tools for them,
//! one retry policy, `/metrics` + `/healthz` serving, logging, shutdown, and idempotent
//! provisioning of AWS resources.

pub mod aws_json;
pub mod claim_check;
pub mod config_file;
pub mod contracts;
pub mod deadletter;
pub mod dlq_tools;
pub mod duration;
pub mod emf;
pub mod error_chain;
pub mod event;
pub mod eventbridge;
pub mod health;
pub mod logging;
pub mod old_names;
pub mod process_metrics;
pub mod process_start;
pub mod provision;
pub mod put_events;
pub mod replay;
pub mod retry;
pub mod server;
pub mod shutdown;
pub mod sigv4;

/// Loads the AWS SDK's configuration the standard way: region, credentials and
/// `AWS_ENDPOINT_URL` (LocalStack, moto) from the environment and profiles.
///
/// Every attempt has a deadline: a hung call (a half-open connection) would otherwise stall
/// the in-order completions behind it for good; a timed-out attempt is retried like any other.
///
/// Retries, deliberately in two layers of different jobs: the SDK's *standard* mode, 3
/// attempts within one call (a blip — a dropped connection, one throttled request — costs
/// milliseconds and is invisible, which matters for calls with no loop around them, such as a
/// message's visibility extension, whose failure would count a receive against the redrive
/// budget), and around that [`retry::while_transient`], which outlasts outages of any length
/// with capped backoff, logging and metrics. Set here rather than left to the SDK's default so
/// a change of default cannot change the pipeline's behaviour unnoticed.
pub async fn aws_config() -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .operation_attempt_timeout(std::time::Duration::from_secs(30))
        .build();
    let retries = aws_config::retry::RetryConfig::standard().with_max_attempts(3);
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(retries)
        .load()
        .await
}
