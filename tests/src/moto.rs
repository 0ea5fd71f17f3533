//! `moto_server` on a free loopback port, stopped on drop, and the AWS SDK environment that
//! points at it.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;

const LAUNCHER: &str = include_str!("moto_launcher.py");

pub struct Moto {
    child: tokio::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub async fn start() -> anyhow::Result<Self> {
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
        let child = tokio::process::Command::new("python3")
            .args(["-c", LAUNCHER])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("python3 not found: moto needs it (scripts/bootstrap installs moto[server])")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let moto = Self { child, endpoint };
        let http = reqwest::Client::new();
        crate::wait::until("moto_server to answer", Duration::from_secs(30), || {
            let req = http.get(&moto.endpoint).send();
            async move { Ok(req.await.ok().map(|_| ())) }
        })
        .await?;
        Ok(moto)
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

pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
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
        let _ = self.child.start_kill();
    }
}
