//! outbox-bridge: Postgres logical replication → Kinesis in AWS DMS's record format (capture),
//! with the slot acknowledged only once Kinesis durably holds every change up to that LSN.

pub mod capture;
pub mod dms;
pub mod lsn;
pub mod metrics;
pub mod partition;
pub mod replication;
pub mod setup;
pub mod shutdown;
pub mod sink;
pub mod table;

/// Loads the AWS SDK's configuration the standard way: region, credentials and
/// `AWS_ENDPOINT_URL` (LocalStack, moto) from the environment and profiles.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
