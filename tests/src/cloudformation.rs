//! The templates in deploy/cloudformation, deployed into the emulator and read, through
//! cloudformation.py (boto3 and PyYAML come with moto).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

const TOOL: &str = include_str!("cloudformation.py");

/// deploy/cloudformation/`name`.
pub fn template(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/cloudformation")
        .join(name)
}

async fn tool(args: &[&str], env: &[(String, String)]) -> anyhow::Result<Value> {
    let out = tokio::process::Command::new(crate::python::python())
        .args(["-c", TOOL])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .context("python3 (with moto's boto3) is needed to read the templates")?;
    anyhow::ensure!(
        out.status.success(),
        "cloudformation.py {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Creates stack `stack` from `template` at the emulator in `env`; returns its outputs.
pub async fn deploy(
    env: &[(String, String)],
    endpoint: &str,
    template: &Path,
    stack: &str,
    parameters: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let template = template.to_string_lossy();
    let pairs: Vec<String> = parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["deploy", endpoint, &template, stack];
    args.extend(pairs.iter().map(String::as_str));
    tool(&args, env).await
}

/// Each IAM role's inline policy, with the template's default names, region and account `*`.
pub async fn policies(template: &Path) -> anyhow::Result<Value> {
    tool(&["policies", &template.to_string_lossy()], &[]).await
}

/// `template` as JSON.
pub async fn read(template: &Path) -> anyhow::Result<Value> {
    tool(&["template", &template.to_string_lossy()], &[]).await
}

/// The resources of `template` that no output names.
pub async fn unnamed(template: &Path) -> anyhow::Result<Value> {
    tool(&["unnamed", &template.to_string_lossy()], &[]).await
}

/// Where the templates' declared settings differ from what `bridge setup` and `shipping setup`
/// made at `endpoint` under the default names (empty: they agree).
pub async fn disagreements(env: &[(String, String)], endpoint: &str) -> anyhow::Result<Value> {
    let (bridge, shipping) = (template("outbox-bridge.yaml"), template("shipping.yaml"));
    tool(
        &[
            "agree",
            endpoint,
            &bridge.to_string_lossy(),
            &shipping.to_string_lossy(),
        ],
        env,
    )
    .await
}
