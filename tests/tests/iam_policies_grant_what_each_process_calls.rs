//! deploy/iam/ holds one least-privilege policy per long-running process. Every AWS operation a
//! process's code calls must be granted by its policy, and the policy must grant nothing else.
//!
//! Calls are found in the process's source files: a method call without arguments whose name is
//! an operation of an AWS SDK crate the file uses (deploy/iam/sdk-operations.txt lists them,
//! generated from the SDK crates). Admin and operator paths (`setup`, `status`, `dlq`, `show`)
//! live in other files and run with an operator's credentials.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(rel: &str) -> Vec<PathBuf> {
    let path = root().join(rel);
    if path.is_file() {
        return vec![path];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p.strip_prefix(root()).unwrap().to_string_lossy()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

/// crate name → (IAM prefix, operations).
fn operations() -> HashMap<String, (String, BTreeSet<String>)> {
    let text = std::fs::read_to_string(root().join("deploy/iam/sdk-operations.txt")).unwrap();
    let mut ops: HashMap<String, (String, BTreeSet<String>)> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut parts = line.split_whitespace();
        let (krate, prefix, op) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        ops.entry(krate.to_owned())
            .or_insert_with(|| (prefix.to_owned(), BTreeSet::new()))
            .1
            .insert(op.to_owned());
    }
    ops
}

fn action(op: &str) -> String {
    // TransactWriteItems is authorised per item; this code only puts items in transactions.
    if op == "transact_write_items" {
        return "PutItem".into();
    }
    op.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The IAM actions the code in `sources` calls.
fn called(sources: &[&str]) -> BTreeSet<String> {
    let ops = operations();
    let mut actions = BTreeSet::new();
    for file in sources.iter().flat_map(|s| rust_files(s)) {
        let code = std::fs::read_to_string(&file).unwrap();
        // Unit tests inside the file do not run in production.
        let code = code.split("#[cfg(test)]").next().unwrap_or_default();
        let used: Vec<&(String, BTreeSet<String>)> = ops
            .iter()
            .filter(|(krate, _)| code.contains(&format!("aws_sdk_{krate}")))
            .map(|(_, v)| v)
            .collect();
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
    actions
}

fn granted(policy: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("deploy/iam").join(policy)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut actions = BTreeSet::new();
    for st in doc["Statement"].as_array().unwrap() {
        assert_eq!(st["Effect"], "Allow", "{policy}: only Allow statements");
        match &st["Action"] {
            serde_json::Value::String(a) => {
                actions.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                actions.extend(list.iter().map(|a| a.as_str().unwrap().to_owned()));
            }
            other => panic!("{policy}: Action {other}"),
        }
        assert!(
            st["Resource"] != "*" && !st["Action"].to_string().contains('*'),
            "{policy}: no wildcard actions or resources"
        );
    }
    actions
}

#[test]
fn capture_policy_is_exactly_what_capture_calls() {
    let calls = called(&["bridge/src/capture", "bridge/src/sink"]);
    assert!(calls.contains("kinesis:PutRecords"), "{calls:?}");
    assert_eq!(granted("capture.json"), calls);
}

#[test]
fn relay_policy_is_exactly_what_the_relay_calls() {
    let calls = called(&[
        "bridge/src/relay",
        "bridge/src/eventbridge.rs",
        "bridge/src/claim_check.rs",
        "bridge/src/deadletter.rs",
    ]);
    assert!(calls.contains("events:PutEvents"), "{calls:?}");
    assert_eq!(granted("relay.json"), calls);
}

#[test]
fn shipping_policy_is_exactly_what_the_service_calls() {
    let calls = called(&[
        "shipping/src/consumer.rs",
        "shipping/src/publisher.rs",
        "shipping/src/store.rs",
        "shipping/src/incoming.rs",
        "shipping/src/apply.rs",
        // Its events go out through the relay's publisher (claim checks included).
        "bridge/src/eventbridge.rs",
        "bridge/src/claim_check.rs",
    ]);
    assert!(calls.contains("dynamodb:GetRecords"), "{calls:?}");
    assert_eq!(granted("shipping.json"), calls);
}
