//! deploy/iam/ holds one least-privilege policy per long-running process. Every AWS operation a
//! process's code calls must be granted by its policy, and the policy must grant nothing else.
//!
//! Calls are found in the process's source files: a method call without arguments whose name is
//! an operation of an AWS SDK crate the file uses (deploy/iam/sdk-operations.txt lists them,
//! generated from the SDK crates), and a call made without the SDK by the `X-Amz-Target` it
//! sends (`"AWSEvents.PutEvents"`, `"Kinesis_20131202.GetRecords"`: the relay's own clients of
//! the two calls it makes per event). Admin and operator paths (`setup`, `status`, `dlq`, `show`)
//! live in other files and run with an operator's credentials.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| path.display().to_string())? {
        let p = entry?.path();
        if p.is_dir() {
            out.extend(rust_files(&p)?);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    Ok(out)
}

/// crate name → (IAM prefix, operations).
fn operations() -> anyhow::Result<HashMap<String, (String, BTreeSet<String>)>> {
    let text = std::fs::read_to_string(root().join("deploy/iam/sdk-operations.txt"))?;
    let mut ops: HashMap<String, (String, BTreeSet<String>)> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [krate, prefix, op] = parts[..] else {
            anyhow::bail!("bad line in sdk-operations.txt: {line}");
        };
        ops.entry(krate.to_owned())
            .or_insert_with(|| (prefix.to_owned(), BTreeSet::new()))
            .1
            .insert(op.to_owned());
    }
    Ok(ops)
}

fn action(op: &str) -> String {
    // TransactWriteItems is authorised per item; this code only puts items in transactions.
    if op == "transact_write_items" {
        return "PutItem".into();
    }
    // SQS authorises a batch as its single action (there is no sqs:DeleteMessageBatch).
    let op = op.strip_suffix("_batch").unwrap_or(op);
    op.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `X-Amz-Target` prefixes of calls made without the SDK, and their IAM prefix.
const TARGETS: [(&str, &str); 2] = [("\"AWSEvents.", "events"), ("\"Kinesis_20131202.", "kinesis")];

/// The IAM actions the code in `sources` calls.
fn called(sources: &[&str]) -> anyhow::Result<BTreeSet<String>> {
    let ops = operations()?;
    let mut actions = BTreeSet::new();
    let mut files = Vec::new();
    for s in sources {
        files.extend(rust_files(&root().join(s))?);
    }
    for file in files {
        let code = std::fs::read_to_string(&file)?;
        // Unit tests inside the file do not run in production.
        let code = code.split("#[cfg(test)]").next().unwrap_or_default();
        // A submodule that takes its parent's names (`use super::*;`) calls through the SDK
        // clients its parent names: the parent's text counts for which SDKs it uses.
        let parent = if code.contains("use super::*;") {
            let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::read_to_string(dir.join("mod.rs")).unwrap_or_default()
        } else {
            String::new()
        };
        let used: Vec<&(String, BTreeSet<String>)> = ops
            .iter()
            .filter(|(krate, _)| {
                let name = format!("aws_sdk_{krate}");
                code.contains(&name) || parent.contains(&name)
            })
            .map(|(_, v)| v)
            .collect();
        for (target, prefix) in TARGETS {
            for (at, _) in code.match_indices(target) {
                let rest = &code[at + target.len()..];
                let op = &rest[..rest.find('"').unwrap_or(0)];
                if !op.is_empty() && op.chars().all(|c| c.is_ascii_alphanumeric()) {
                    actions.insert(format!("{prefix}:{op}"));
                }
            }
        }
        let bytes = code.as_bytes();
        let mut i = 0;
        while let Some(dot) = code[i..].find('.') {
            let start = i + dot + 1;
            let end = start
                + code[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(0);
            i = start;
            if end == start || !code[end..].starts_with("()") || !bytes[start].is_ascii_lowercase() {
                continue;
            }
            let name = &code[start..end];
            for (prefix, names) in &used {
                if names.contains(name) {
                    actions.insert(format!("{prefix}:{}", action(name)));
                }
            }
        }
    }
    Ok(actions)
}

fn granted(policy: &str) -> anyhow::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("deploy/iam").join(policy))?;
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    let mut actions = BTreeSet::new();
    for st in doc["Statement"].as_array().into_iter().flatten() {
        assert_eq!(st["Effect"], "Allow", "{policy}: only Allow statements");
        match &st["Action"] {
            serde_json::Value::String(a) => {
                actions.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                actions.extend(list.iter().filter_map(|a| a.as_str()).map(str::to_owned));
            }
            other => panic!("{policy}: Action {other}"),
        }
        assert!(
            st["Resource"] != "*" && !st["Action"].to_string().contains('*'),
            "{policy}: no wildcard actions or resources"
        );
    }
    anyhow::ensure!(!actions.is_empty(), "{policy} grants nothing");
    Ok(actions)
}

/// `calls`, plus `s3:ListBucket` where objects are read, though no code lists: without it S3
/// answers a missing key with 403 AccessDenied — which a process must take for a refusal of
/// itself and hold — instead of 404 NoSuchKey (the object is gone: park and move on).
fn answered_404_when_missing(mut calls: BTreeSet<String>) -> BTreeSet<String> {
    if calls.contains("s3:GetObject") {
        calls.insert("s3:ListBucket".to_owned());
    }
    calls
}

/// The grant that makes a missing claim check a 404 is on the bucket itself (ListBucket is a
/// bucket action: a grant on `bucket/claim-checks/*` never matches it) and unconditioned (a
/// GetObject carries no `s3:prefix`, so a prefix condition would never hold for it).
#[test]
fn readers_of_claim_checks_may_list_the_bucket() -> anyhow::Result<()> {
    for policy in ["relay.json", "shipping.json"] {
        let grants = statements_granting(policy, "s3:ListBucket")?;
        assert_eq!(grants.len(), 1, "{policy}: {grants:?}");
        assert_eq!(
            grants[0]["Resource"], "arn:aws:s3:::bridge-claim-checks",
            "{policy}"
        );
        assert!(grants[0].get("Condition").is_none(), "{policy}: {}", grants[0]);
    }
    Ok(())
}

#[test]
fn capture_policy_is_exactly_what_capture_calls() -> anyhow::Result<()> {
    // Records above Kinesis' limit go to S3 through the shared claim-check store.
    let calls = called(&[
        "bridge/src/capture",
        "bridge/src/sink",
        "eventing/src/claim_check.rs",
    ])?;
    assert!(calls.contains("kinesis:PutRecords"), "{calls:?}");
    assert_eq!(granted("capture.json")?, calls);
    Ok(())
}

#[test]
fn relay_policy_is_exactly_what_the_relay_calls() -> anyhow::Result<()> {
    let calls = called(&[
        "bridge/src/relay",
        "eventing/src/eventbridge.rs",
        "eventing/src/put_events.rs",
        "eventing/src/claim_check.rs",
        "eventing/src/deadletter.rs",
    ])?;
    assert!(calls.contains("events:PutEvents"), "{calls:?}");
    assert_eq!(granted("relay.json")?, answered_404_when_missing(calls));
    Ok(())
}

#[test]
fn shipping_policy_is_exactly_what_the_service_calls() -> anyhow::Result<()> {
    let calls = called(&[
        "shipping/src/consumer",
        "shipping/src/publisher.rs",
        "shipping/src/store.rs",
        "shipping/src/incoming.rs",
        "shipping/src/apply.rs",
        // Its events go out through the shared publisher (claim checks included), what it
        // cannot publish into its own dead-letter queue.
        "eventing/src/eventbridge.rs",
        "eventing/src/put_events.rs",
        "eventing/src/claim_check.rs",
        "eventing/src/deadletter.rs",
    ])?;
    assert!(calls.contains("dynamodb:GetRecords"), "{calls:?}");
    assert_eq!(granted("shipping.json")?, answered_404_when_missing(calls));
    Ok(())
}

/// The statements of `policy` that grant `action`.
fn statements_granting(policy: &str, action: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(root().join("deploy/iam").join(policy))?;
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    Ok(doc["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|st| match &st["Action"] {
            serde_json::Value::String(a) => a == action,
            serde_json::Value::Array(list) => list.iter().any(|a| a == action),
            _ => false,
        })
        .cloned()
        .collect())
}

/// Both roles may publish to the same bus: without `events:source`, each could publish as the
/// other (the shipping service as the monolith, whose events it projects). Each PutEvents grant
/// is conditioned on its process's own source (the binaries' default `--event-source`).
#[test]
fn each_role_publishes_only_as_its_own_source() -> anyhow::Result<()> {
    for (policy, source) in [("relay.json", "legacy.monolith"), ("shipping.json", "shipping")] {
        let grants = statements_granting(policy, "events:PutEvents")?;
        anyhow::ensure!(!grants.is_empty(), "{policy} grants no events:PutEvents");
        for st in grants {
            assert_eq!(
                st["Condition"],
                serde_json::json!({"StringEquals": {"events:source": source}}),
                "{policy}: PutEvents only as `{source}`: {st}"
            );
        }
    }
    Ok(())
}

/// deploy/iam's policies are generated from deploy/cloudformation's roles (the one source):
/// with the templates' default names (and the region and account as `*`) each role is its
/// file, statement for statement — the tests above then hold for the deployed roles too.
#[tokio::test]
async fn the_templates_roles_are_exactly_these_policies() -> anyhow::Result<()> {
    use harness::cloudformation::{policies, template};
    let bridge = policies(&template("outbox-bridge.yaml")).await?;
    let shipping = policies(&template("shipping.yaml")).await?;
    for (roles, role, file) in [
        (&bridge, "CaptureRole", "capture.json"),
        (&bridge, "RelayRole", "relay.json"),
        (&shipping, "ShippingRole", "shipping.json"),
    ] {
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root().join("deploy/iam").join(file))?)?;
        assert_eq!(
            roles[role], expected,
            "deploy/iam/{file} is not {role} of the template: run scripts/gen-iam"
        );
    }
    Ok(())
}
