//! Kinesis' GetRecords, sent without the AWS SDK's per-call orchestrator and JSON codec
//! (`eventing::aws_json` says why): every event the relay publishes is read through it, and
//! the SDK's parsing of each record's base64 `Data` was a fifth of the relay's CPU. Records are
//! read borrowed from the answer's bytes and decoded once. The endpoint comes from the SDK's
//! Kinesis endpoint rules, resolved once; the other Kinesis calls stay on the SDK.

use std::borrow::Cow;

use aws_sdk_kinesis::config::endpoint::{Params, ResolveEndpoint};
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::Record;
use eventing::aws_json::{configured_endpoint, region, AwsJsonClient, CallError, SetupError};
use serde::{Deserialize, Serialize};

/// One GetRecords answer.
#[derive(Debug)]
pub struct Page {
    pub records: Vec<Record>,
    /// `None` once a closed shard is read to its end.
    pub next_shard_iterator: Option<String>,
    pub millis_behind_latest: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Request<'a> {
    shard_iterator: &'a str,
    limit: i32,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer<'a> {
    #[serde(borrow, default)]
    records: Vec<RawRecord<'a>>,
    next_shard_iterator: Option<String>,
    millis_behind_latest: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRecord<'a> {
    #[serde(borrow)]
    sequence_number: Cow<'a, str>,
    /// Base64; `Cow` because a JSON writer may escape its `/`.
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(borrow)]
    partition_key: Cow<'a, str>,
    approximate_arrival_timestamp: Option<f64>,
}

/// Reads shards; clones share the connection pool and the cached credentials.
#[derive(Clone)]
pub struct GetRecordsClient {
    json: AwsJsonClient,
}

impl GetRecordsClient {
    /// Resolves the region, credentials and endpoint from `aws` once.
    pub async fn new(aws: &aws_config::SdkConfig) -> Result<Self, SetupError> {
        let url = endpoint_url(aws).await?;
        Ok(Self {
            json: AwsJsonClient::new(aws, &url, "kinesis")?,
        })
    }

    /// At most `limit` records from `iterator`, or why not (Kinesis' code in [`CallError::code`]).
    pub async fn get_records(&self, iterator: &str, limit: i32) -> Result<Page, CallError> {
        let body = serde_json::to_vec(&Request {
            shard_iterator: iterator,
            limit,
        })
        .map_err(|e| CallError::Signing(e.into()))?;
        let answer = self.json.call("Kinesis_20131202.GetRecords", body).await?;
        parse(&answer).map_err(|source| CallError::Malformed { status: 200, source })
    }
}

fn parse(answer: &[u8]) -> Result<Page, eventing::aws_json::BoxError> {
    let answer: Answer = serde_json::from_slice(answer)?;
    let mut records = Vec::with_capacity(answer.records.len());
    for raw in answer.records {
        let data = base64_simd::STANDARD.decode_to_vec(raw.data.as_bytes())?;
        records.push(
            Record::builder()
                .sequence_number(raw.sequence_number)
                .partition_key(raw.partition_key)
                .data(Blob::new(data))
                .set_approximate_arrival_timestamp(
                    raw.approximate_arrival_timestamp.map(DateTime::from_secs_f64),
                )
                .build()?,
        );
    }
    Ok(Page {
        records,
        next_shard_iterator: answer.next_shard_iterator,
        millis_behind_latest: answer.millis_behind_latest,
    })
}

/// The configured endpoint (`AWS_ENDPOINT_URL_KINESIS`, then `AWS_ENDPOINT_URL`) through the
/// SDK's Kinesis endpoint rules.
async fn endpoint_url(aws: &aws_config::SdkConfig) -> Result<String, SetupError> {
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| SetupError::Endpoint("Kinesis", e);
    let params = Params::builder()
        .region(region(aws)?)
        .use_fips(aws.use_fips().unwrap_or(false))
        .use_dual_stack(aws.use_dual_stack().unwrap_or(false))
        .set_endpoint(configured_endpoint(aws, "Kinesis")?)
        .operation_type("data")
        .build()
        .map_err(|e| failed(e.into()))?;
    let endpoint = aws_sdk_kinesis::config::endpoint::DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(failed)?;
    Ok(endpoint.url().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_decoded_from_kinesis_answer() {
        let answer = br#"{"Records":[{"SequenceNumber":"4960","ApproximateArrivalTimestamp":1.7329e9,"Data":"eyJhIjoxfQ==","PartitionKey":"k","EncryptionType":"KMS"},{"SequenceNumber":"4961","Data":"eyJiIjoy\/Q==","PartitionKey":"k2"}],"NextShardIterator":"it-2","MillisBehindLatest":12}"#;
        let page = parse(answer).unwrap();
        assert_eq!(page.records.len(), 2);
        assert_eq!(page.records[0].data().as_ref(), br#"{"a":1}"#);
        assert_eq!(page.records[0].sequence_number(), "4960");
        assert_eq!(page.records[0].partition_key(), Some("k"));
        assert!(page.records[0].approximate_arrival_timestamp().is_some());
        // An escaped `/` in the base64 text is read as `/`.
        assert_eq!(page.records[1].data().as_ref(), b"{\"b\":2\xfd");
        assert_eq!(page.next_shard_iterator.as_deref(), Some("it-2"));
        assert_eq!(page.millis_behind_latest, Some(12));

        let closed = parse(br#"{"Records":[],"MillisBehindLatest":0}"#).unwrap();
        assert!(closed.records.is_empty() && closed.next_shard_iterator.is_none());
        assert!(
            parse(br#"{"Records":[{"SequenceNumber":"1","Data":"not base64!","PartitionKey":"k"}]}"#)
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_endpoint_comes_from_the_sdks_rules_or_the_configured_url() {
        let aws = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        assert_eq!(
            endpoint_url(&aws).await.unwrap(),
            "https://kinesis.eu-west-1.amazonaws.com"
        );
        let local = aws.to_builder().endpoint_url("http://127.0.0.1:4566").build();
        assert_eq!(endpoint_url(&local).await.unwrap(), "http://127.0.0.1:4566");
    }
}
