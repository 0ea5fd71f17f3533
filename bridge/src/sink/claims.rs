//! Records above Kinesis' 1 MiB limit travel whole through S3. Capture encodes such a record
//! twice: whole (`Record::claim`) and without its large values (`data`, naming them in
//! `dropped-columns`). Before the record is sent, the sink stores the whole one in the
//! claim-check bucket and adds `metadata.claim-check` `{bucket, key, size, sha256}` to the
//! slim one; the relay reads it back and publishes the whole record. Stored before PutRecords,
//! and the slot is acknowledged only after: a claim check in the stream always resolves.

use bytes::Bytes;
use eventing::claim_check::ClaimCheckStore;
use eventing::retry::{while_transient, Backoff};

use super::SinkError;
use crate::dms::Record;

/// Stores the whole record of every record that carries one, and points it at it. A transient
/// S3 failure is retried for as long as it lasts; any other (no bucket, no permission) ends the
/// batch: capture stops with the reason and the slot keeps the record.
pub async fn attach(store: &ClaimCheckStore, records: &mut [Record]) -> Result<(), SinkError> {
    for record in records.iter_mut() {
        let Some(whole) = record.claim.take() else {
            continue;
        };
        let check = while_transient("store a record's claim check", Backoff::data_path(), || {
            store.store_record(&whole)
        })
        .await
        .map_err(SinkError::ClaimCheck)?;
        record.data = with_claim_check(&record.data, &check).ok_or_else(|| SinkError::Rejected {
            code: "ClaimCheck".into(),
            source: "a record without a JSON metadata object at its end".into(),
        })?;
        tracing::info!(key = %check["key"], bytes = whole.len(), "record above kinesis' limit stored whole in s3");
    }
    Ok(())
}

/// Adds `"claim-check": check` to the record's metadata. Capture's records end with their
/// metadata object (`…,"metadata":{…}}`), so it goes in before the last two braces, and every
/// other byte stays as encoded (numbers digit for digit).
fn with_claim_check(data: &[u8], check: &serde_json::Value) -> Option<Bytes> {
    let head = data.strip_suffix(b"}}")?;
    let mut out = Vec::with_capacity(data.len() + 256);
    out.extend_from_slice(head);
    out.extend_from_slice(b",\"claim-check\":");
    out.extend_from_slice(check.to_string().as_bytes());
    out.extend_from_slice(b"}}");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_claim_check_goes_into_the_metadata_and_nothing_else_changes() {
        let data = br#"{"data":{"id":"e1","amount":12345678901234567.89},"metadata":{"table-name":"outbox","dropped-columns":["payload"]}}"#;
        let check = json!({"bucket": "b", "key": "claim-checks/records/ab.json", "size": 3, "sha256": "ab"});
        let out = with_claim_check(data, &check).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains("12345678901234567.89"), "{text}");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["metadata"]["claim-check"], check);
        assert_eq!(v["metadata"]["dropped-columns"], json!(["payload"]));
        assert_eq!(with_claim_check(b"[1]", &check), None);
    }
}
