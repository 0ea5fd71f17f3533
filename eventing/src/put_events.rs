//! EventBridge's PutEvents, sent without the AWS SDK's per-call orchestrator
//! ([`crate::aws_json`] says why): the request built straight from the events, EventBridge's
//! endpoint from the SDK's EventBridge endpoint rules, resolved once.
//!
//! Retries are the caller's ([`crate::eventbridge::Publisher`]).

use aws_sdk_eventbridge::config::endpoint::{Params, ResolveEndpoint};
use serde::Deserialize;

use crate::aws_json::{configured_endpoint, region, AwsJsonClient, CallError, SetupError};

/// A PutEvents call's failure.
pub type PutEventsError = CallError;

/// One entry of a PutEvents call, borrowed from the event it publishes.
pub struct Entry<'a> {
    pub event_bus_name: &'a str,
    pub source: &'a str,
    pub detail_type: &'a str,
    pub detail: &'a str,
    pub trace_header: Option<String>,
}

/// The awsJson 1.1 body `{"Entries":[{"EventBusName":…,"Source":…,"DetailType":…,"Detail":…}]}`,
/// written in one buffer sized up front. Written here rather than by serde: each `Detail` is an
/// event's whole JSON as a string, and escaping it was serde_json's slowest path in the relay.
fn request_body(entries: &[Entry<'_>]) -> Vec<u8> {
    // Escaping grows a detail by its quotes' backslashes: a fifth is room enough for most.
    let room: usize = entries
        .iter()
        .map(|e| 80 + e.event_bus_name.len() + e.source.len() + e.detail_type.len() + e.detail.len() * 6 / 5)
        .sum();
    let mut body = Vec::with_capacity(room + 16);
    body.extend_from_slice(b"{\"Entries\":[");
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"EventBusName\":");
        json_escape_simd::escape_into(entry.event_bus_name, &mut body);
        body.extend_from_slice(b",\"Source\":");
        json_escape_simd::escape_into(entry.source, &mut body);
        body.extend_from_slice(b",\"DetailType\":");
        json_escape_simd::escape_into(entry.detail_type, &mut body);
        body.extend_from_slice(b",\"Detail\":");
        json_escape_simd::escape_into(entry.detail, &mut body);
        if let Some(header) = &entry.trace_header {
            body.extend_from_slice(b",\"TraceHeader\":");
            json_escape_simd::escape_into(header, &mut body);
        }
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    body
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
        let answer = self
            .json
            .call("AWSEvents.PutEvents", request_body(entries))
            .await?;
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
        let body = String::from_utf8(request_body(&entries)).unwrap();
        assert_eq!(
            body,
            r#"{"Entries":[{"EventBusName":"bus","Source":"legacy","DetailType":"OrderPlaced","Detail":"{\"a\":\"x\\\"y\"}"},{"EventBusName":"bus","Source":"legacy","DetailType":"T","Detail":"{}","TraceHeader":"Root=1-2-3"}]}"#
        );
    }

    #[test]
    fn every_text_reads_back_as_it_was_written() {
        // Quotes, backslashes, control characters, multi-byte text, at every offset of the
        // escaper's 16- and 32-byte blocks.
        let mut details: Vec<String> = vec![String::new(), "\u{0}\u{1f}\u{7f}".into(), "é🚀\"\\/".into()];
        for len in [15usize, 16, 17, 31, 32, 33, 63, 64, 65, 300] {
            for special in ["\"", "\\", "\n", "\t", "\u{1}", "é", "\u{2028}"] {
                for at in [0, len / 2, len.saturating_sub(1)] {
                    let mut text = "x".repeat(len);
                    text.insert_str(at, special);
                    details.push(text);
                }
            }
        }
        let entries: Vec<Entry> = details
            .iter()
            .map(|d| Entry {
                event_bus_name: "bus",
                source: d,
                detail_type: d,
                detail: d,
                trace_header: Some(d.clone()),
            })
            .collect();
        let body: serde_json::Value = serde_json::from_slice(&request_body(&entries)).unwrap();
        let read = body["Entries"].as_array().unwrap();
        assert_eq!(read.len(), details.len());
        for (entry, detail) in read.iter().zip(&details) {
            for field in ["Source", "DetailType", "Detail", "TraceHeader"] {
                assert_eq!(entry[field].as_str(), Some(detail.as_str()), "{field}");
            }
        }
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
