//! outbox-bridge: Postgres logical replication → Kinesis in AWS DMS's record format (capture),
//! with the slot acknowledged only once Kinesis durably holds every change up to that LSN;
//! and Kinesis → EventBridge domain events (relay), checkpointed only once EventBridge took them.

pub mod capture;
pub mod claim_check;
pub mod deadletter;
pub mod dlq_tools;
pub mod dms;
pub mod eventbridge;
pub mod health;
pub mod logging;
pub mod lsn;
pub mod metrics;
pub mod partition;
pub mod relay;
pub mod replication;
pub mod retry;
pub mod setup;
pub mod shutdown;
pub mod sink;
pub mod status;
pub mod table;

/// Loads the AWS SDK's configuration the standard way: region, credentials and
/// `AWS_ENDPOINT_URL` (LocalStack, moto) from the environment and profiles.
///
/// Every attempt has a deadline: a hung call (a half-open connection) would otherwise stall
/// the in-order completions behind it for good; a timed-out attempt is retried like any other.
pub async fn aws_config() -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .operation_attempt_timeout(std::time::Duration::from_secs(30))
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await
}
