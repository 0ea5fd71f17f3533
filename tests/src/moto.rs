//! `moto_server` on a free loopback port, stopped on drop, and the AWS SDK environment that
//! points at it.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;

const LAUNCHER: &str = include_str!("moto_launcher.py");

pub struct Moto {
    children: Vec<tokio::process::Child>,
    router: Option<tokio::task::JoinHandle<()>>,
    pub endpoint: String,
}

/// Which of the split emulator's processes serves a request: Kinesis, DynamoDB with its streams,
/// and the rest (EventBridge and SQS share one, because moto delivers rule targets in-process).
fn process_for(target: &str) -> usize {
    if target.starts_with("Kinesis_") {
        0
    } else if target.starts_with("DynamoDB") {
        1
    } else {
        2
    }
}

impl Moto {
    /// One `moto_server`: what every test uses.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// One `moto_server` whose EventBridge archives lag as AWS's do: an event becomes
    /// replayable only `lag` after it reached the archive (see moto_launcher.py).
    pub async fn start_with_archive_lag(lag: Duration) -> anyhow::Result<Self> {
        let secs = lag.as_secs_f64().to_string();
        Self::start_with(&[("OUTBOX_MOTO_ARCHIVE_LAG_SECS", &secs)]).await
    }

    async fn start_with(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let (child, endpoint) = Self::spawn(env).await?;
        Ok(Self {
            children: vec![child],
            router: None,
            endpoint,
        })
    }

    /// Three `moto_server`s behind one endpoint that routes each call by service. moto handles
    /// one request at a time (one Python process), so a long run on one of them is bound to a
    /// single core; split, Kinesis, DynamoDB and the rest run side by side. Nothing else changes
    /// for its users: one endpoint, the same answers.
    pub async fn start_split() -> anyhow::Result<Self> {
        let (a, b, c) = tokio::try_join!(Self::spawn(&[]), Self::spawn(&[]), Self::spawn(&[]))?;
        let upstreams: std::sync::Arc<[String]> = vec![a.1, b.1, c.1].into();
        let http = reqwest::Client::new();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let upstreams = upstreams.clone();
                let http = http.clone();
                async move {
                    let target = headers
                        .get("x-amz-target")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let upstream = &upstreams[process_for(target)];
                    crate::forward::forward(&http, upstream, method, &uri, &headers, body).await
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let router = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            children: vec![a.0, b.0, c.0],
            router: Some(router),
            endpoint,
        })
    }

    async fn spawn(env: &[(&str, &str)]) -> anyhow::Result<(tokio::process::Child, String)> {
        let port = crate::free_port()?;
        let args = [
            "-H".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
        ];
        // moto's own server, started through a launcher that fixes its Kinesis record loss
        // under concurrent PutRecords (see moto_launcher.py). pip may put `moto_server` outside
        // PATH, but the module is importable wherever moto is installed.
        let mut child = tokio::process::Command::new(crate::python::python())
            .args(["-c", LAUNCHER])
            .args(&args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("the project's Python (.venv) is missing: scripts/bootstrap makes it and installs moto[server]")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        // Whoever answers must be our child: one that exited (its port taken) fails at once.
        crate::wait::until("moto_server to answer", Duration::from_secs(30), || {
            let exited = child.try_wait();
            let req = http.get(&endpoint).send();
            async move {
                if let Some(status) = exited? {
                    anyhow::bail!("moto_server exited ({status}) before it answered");
                }
                Ok(req.await.ok().map(|_| ()))
            }
        })
        .await?;
        Ok((child, endpoint))
    }

    /// The environment variables the AWS SDK (ours and boto's) reads to reach this emulator.
    pub fn env(&self) -> Vec<(String, String)> {
        aws_env(&self.endpoint)
    }

    /// An SDK configuration for the test process itself.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.endpoint).await
    }
}

/// The environment the AWS SDKs (ours and boto's) read, for processes under test. The endpoint
/// is named by host name (`localhost`, not `127.0.0.1`), as docker compose's `localstack` is: an
/// S3 client that put the bucket in the host name (virtual-hosted style) would fail here as it
/// fails there, so every test proves path-style addressing.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    let endpoint = by_host_name(endpoint);
    [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A loopback endpoint (`http://127.0.0.1:PORT`) as `http://localhost:PORT`.
pub fn by_host_name(endpoint: &str) -> String {
    endpoint.replacen("://127.0.0.1:", "://localhost:", 1)
}

pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "testing", "testing", None, None, "stack",
        ))
        .load()
        .await
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(router) = &self.router {
            router.abort();
        }
        for child in &mut self.children {
            let _ = child.start_kill();
        }
    }
}
