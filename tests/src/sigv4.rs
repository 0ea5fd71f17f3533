//! SigV4 signatures checked the way AWS checks them, for calls made without the AWS SDK
//! (the emulator accepts any signature): botocore recomputes the signature of a request as it
//! arrived at a proxy (`sigv4_check.py`).

use anyhow::Context;
use base64::Engine;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::faults::RecordedCall;

/// botocore's verdict on one request.
#[derive(Debug, Deserialize)]
pub struct Verdict {
    pub algorithm: String,
    /// The signature botocore computes for the request with the credentials.
    pub expected: String,
    /// The signature the request carried.
    pub got: String,
    pub signed_headers: Vec<String>,
    /// Access key, date, region, service, `aws4_request`.
    pub scope: Vec<String>,
}

/// The credentials the caller signed with (`token`: `AWS_SESSION_TOKEN`, if any).
pub struct Keys<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub token: Option<&'a str>,
}

/// botocore's verdict on `call`, which arrived at `endpoint` (`http://host:port`).
pub async fn check(call: &RecordedCall, endpoint: &str, keys: &Keys<'_>) -> anyhow::Result<Verdict> {
    let input = serde_json::json!({
        "access_key": keys.access_key,
        "secret_key": keys.secret_key,
        "token": keys.token,
        "method": call.method,
        "url": format!("{}{}", endpoint.trim_end_matches('/'), call.path_and_query),
        "headers": call.headers,
        "body_b64": base64::engine::general_purpose::STANDARD.encode(&call.body),
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/src/sigv4_check.py");
    let mut child = tokio::process::Command::new(crate::python::python())
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("python3 (with moto's botocore) is needed to check signatures")?;
    let mut stdin = child.stdin.take().context("python3's stdin")?;
    stdin.write_all(input.to_string().as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "sigv4_check.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("sigv4_check.py's verdict")
}
