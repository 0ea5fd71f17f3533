//! EventBridge's PutEvents, sent without the AWS SDK's per-call orchestrator
//! ([`crate::aws_json`] says why): the request built straight from the events, EventBridge's
//! endpoint from the SDK's EventBridge endpoint rules, resolved once.
//!
//! Retries are the caller's ([`crate::eventbridge::Publisher`]).

use aws_sdk_eventbridge::config::endpoint::{Params, ResolveEndpoint};
use serde::{Deserialize, Serialize};

use crate::aws_json::{configured_endpoint, region, AwsJsonClient, CallError, SetupError};

/// A PutEvents call's failure.
pub type PutEventsError = CallError;

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

/// Sends PutEvents calls; clones share the connection pool and the cached credentials.
#[derive(Clone)]
pub struct PutEventsClient {
    json: AwsJsonClient,
}

impl PutEventsClient {
    /// Resolves the region, credentials and endpoint from `aws` once.
    pub async fn new(aws: &aws_config::SdkConfig) -> Result<Self, SetupError> {
        let url = endpoint_url(aws).await?;
        Ok(Self {
            json: AwsJsonClient::new(aws, &url, "events")?,
        })
    }

    /// One PutEvents call with `entries`: EventBridge's per-entry results, or why the call failed.
    pub async fn put_events(&self, entries: &[Entry<'_>]) -> Result<Output, PutEventsError> {
        let body = serde_json::to_vec(&Request { entries }).map_err(|e| CallError::Signing(e.into()))?;
        let answer = self.json.call("AWSEvents.PutEvents", body).await?;
        serde_json::from_slice(&answer).map_err(|e| CallError::Malformed {
            status: 200,
            source: e.into(),
        })
    }
}

/// The configured endpoint (`AWS_ENDPOINT_URL_EVENTBRIDGE`, then `AWS_ENDPOINT_URL`) through
/// the SDK's EventBridge endpoint rules.
async fn endpoint_url(aws: &aws_config::SdkConfig) -> Result<String, SetupError> {
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| SetupError::Endpoint("EventBridge", e);
    let params = Params::builder()
        .region(region(aws)?)
        .use_fips(aws.use_fips().unwrap_or(false))
        .use_dual_stack(aws.use_dual_stack().unwrap_or(false))
        .set_endpoint(configured_endpoint(aws, "EventBridge")?)
        .build()
        .map_err(|e| failed(e.into()))?;
    let endpoint = aws_sdk_eventbridge::config::endpoint::DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(failed)?;
    Ok(endpoint.url().to_owned())
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

    #[test]
    fn entry_results_are_read_as_eventbridge_writes_them() {
        let out: Output = serde_json::from_str(
            r#"{"FailedEntryCount":1,"Entries":[{"EventId":"e1"},{"ErrorCode":"ThrottlingException","ErrorMessage":"slow"}]}"#,
        )
        .unwrap();
        assert_eq!(out.failed_entry_count, 1);
        assert_eq!(out.entries[0].error_code, None);
        assert_eq!(out.entries[1].error_code.as_deref(), Some("ThrottlingException"));
    }

    fn sdk_config(region: &str) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .region(aws_config::Region::new(region.to_owned()))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build()
    }

    #[tokio::test]
    async fn the_endpoint_comes_from_the_sdks_rules_or_the_configured_url() {
        let url = endpoint_url(&sdk_config("eu-west-1")).await.unwrap();
        assert_eq!(url, "https://events.eu-west-1.amazonaws.com");
        let fips = sdk_config("us-east-1").to_builder().use_fips(true).build();
        let url = endpoint_url(&fips).await.unwrap();
        assert_eq!(url, "https://events-fips.us-east-1.amazonaws.com");
        let local = sdk_config("us-east-1")
            .to_builder()
            .endpoint_url("http://127.0.0.1:4566")
            .build();
        let url = endpoint_url(&local).await.unwrap();
        assert_eq!(url, "http://127.0.0.1:4566");
    }
}
