//! An SQS message as EventBridge delivers it: the event JSON whose `detail` is the relay's
//! envelope `{"metadata": {...}, "data": ...}`; a claim check in the metadata is resolved
//! from S3 (and its digest verified) before anything is applied.
//!
//! S3's answer decides what a claim check that cannot be read means: an outage is transient; a
//! refusal of the service itself (its credentials or permissions: `AccessDenied`, an expired
//! token, a KMS key it may not use) is no fault of the event, which is held until the grant is
//! fixed; anything else (the object is gone: `NoSuchKey`) makes the event unusable.

use aws_sdk_s3::error::ProvideErrorMetadata;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One incoming domain event.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub event_id: String,
    pub detail_type: String,
    pub aggregate_version: Option<i64>,
    pub traceparent: Option<String>,
    /// The payload as raw JSON: numbers keep every digit (see `domain::Decimal`).
    pub data: Box<RawValue>,
    /// `{bucket, key, size, sha256}` when the payload was too large for EventBridge.
    pub claim_check: Option<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    /// The message can never be applied (not an event, a broken claim check): poison.
    #[error("{0}")]
    Unusable(String),
    /// S3 was unavailable: worth another delivery.
    #[error("claim check s3://{bucket}/{key}: {cause}")]
    Transient {
        bucket: String,
        key: String,
        cause: String,
    },
    /// S3 refused the service itself (`code`): held, never parked, until the grant is fixed.
    #[error("s3 refuses the service's read of the claim check s3://{bucket}/{key} ({code}): check the role's s3:GetObject and s3:ListBucket on the bucket and kms:Decrypt on its key")]
    Refused {
        bucket: String,
        key: String,
        code: String,
    },
}

/// Only `detail.data`, raw: the rest of the event is read as a `Value`.
#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow)]
    detail: Option<RawDetail<'a>>,
}

#[derive(Deserialize)]
struct RawDetail<'a> {
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Parses an SQS body. `detail-type` comes from the EventBridge event, the event id from the
/// envelope's metadata (EventBridge's own `id` differs on every publication of the same event).
pub fn parse(body: &str) -> Result<Incoming, IncomingError> {
    let event: Value = serde_json::from_str(body)
        .map_err(|e| IncomingError::Unusable(format!("message body is not JSON: {e}")))?;
    let detail_type = event["detail-type"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            IncomingError::Unusable("message is not an EventBridge event: no detail-type".into())
        })?;
    let metadata = &event["detail"]["metadata"];
    let event_id = metadata["event_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            IncomingError::Unusable(format!("{detail_type}: detail.metadata.event_id is missing"))
        })?;
    let aggregate_version = match &metadata["aggregate_version"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let claim_check = metadata.get("claim_check").filter(|c| !c.is_null()).cloned();
    let data = serde_json::from_str::<RawData>(body)
        .ok()
        .and_then(|r| r.detail)
        .and_then(|d| d.data)
        .map_or_else(|| RawValue::from_string("null".into()), |d| Ok(d.to_owned()))
        .map_err(|e| IncomingError::Unusable(format!("{detail_type}: detail.data: {e}")))?;
    Ok(Incoming {
        event_id: event_id.to_owned(),
        detail_type: detail_type.to_owned(),
        aggregate_version,
        traceparent: metadata["traceparent"].as_str().map(str::to_owned),
        data,
        claim_check,
    })
}

/// Replaces a claim check by the payload it points to.
pub async fn resolve(s3: &aws_sdk_s3::Client, mut incoming: Incoming) -> Result<Incoming, IncomingError> {
    let Some(claim) = incoming.claim_check.take() else {
        return Ok(incoming);
    };
    let (Some(bucket), Some(key), Some(sha256)) = (
        claim["bucket"].as_str(),
        claim["key"].as_str(),
        claim["sha256"].as_str(),
    ) else {
        return Err(IncomingError::Unusable(format!(
            "{}: claim check without bucket, key and sha256: {claim}",
            incoming.event_id
        )));
    };
    let transient = |cause: String| IncomingError::Transient {
        bucket: bucket.into(),
        key: key.into(),
        cause,
    };
    let object = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => o,
        Err(err) if eventing::retry::transient_cause(&err).is_some() => {
            return Err(transient(err.to_string()))
        }
        Err(err) if eventing::retry::refused_caller(err.code().unwrap_or("")) => {
            return Err(IncomingError::Refused {
                bucket: bucket.into(),
                key: key.into(),
                code: err.code().unwrap_or("unknown").to_owned(),
            })
        }
        Err(err) => {
            return Err(IncomingError::Unusable(format!(
                "{}: claim check s3://{bucket}/{key} cannot be read ({})",
                incoming.event_id,
                err.code().unwrap_or("unknown")
            )))
        }
    };
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| transient(e.to_string()))?
        .into_bytes();
    if format!("{:x}", Sha256::digest(&bytes)) != sha256 {
        return Err(IncomingError::Unusable(format!(
            "{}: claim check s3://{bucket}/{key} does not match its sha256",
            incoming.event_id
        )));
    }
    incoming.data = serde_json::from_slice::<Box<RawValue>>(&bytes).map_err(|e| {
        IncomingError::Unusable(format!(
            "{}: claim-checked payload is not JSON: {e}",
            incoming.event_id
        ))
    })?;
    Ok(incoming)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_the_envelope_from_an_eventbridge_event() {
        let body = json!({"id": "eb-1", "detail-type": "OrderPlaced", "source": "legacy.monolith",
            "detail": {"metadata": {"event_id": "e1", "aggregate_version": 3, "traceparent": "00-a-b-01"},
            "data": {"order_id": "o1"}}})
        .to_string();
        let e = parse(&body).unwrap();
        assert_eq!(e.event_id, "e1");
        assert_eq!(e.aggregate_version, Some(3));
        assert_eq!(e.data.get(), r#"{"order_id":"o1"}"#);
        assert!(e.claim_check.is_none());
    }

    #[test]
    fn a_message_that_is_not_an_event_is_unusable() {
        for body in ["nope", "{}", r#"{"detail-type": "X", "detail": {}}"#] {
            assert!(matches!(parse(body), Err(IncomingError::Unusable(_))), "{body}");
        }
    }
}
