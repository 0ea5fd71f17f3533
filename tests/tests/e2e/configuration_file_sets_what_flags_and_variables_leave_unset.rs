//! `--config FILE`: a file alone configures capture end to end; a variable beats the file and a
//! flag beats both (flag > environment > file > default); a bad file stops the process at start
//! with each problem's line; `config check` shows every value with its source, secrets hidden.

use std::time::Duration;

use harness::process::{self, Proc};
use harness::stack::{outbox_id, Stack};

fn with(env: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_runs_from_the_file_and_flags_and_variables_win_over_it() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bridge.toml");
    let url = stack.pg.url();
    let password = url
        .split_once("postgres:")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(password, _)| password.to_owned())
        .unwrap_or_default();
    anyhow::ensure!(!password.is_empty(), "no password in {url}");
    std::fs::write(
        &path,
        format!(
            "database_url = \"{url}\"\nstream = \"{stream}\"\nslot = \"top_level_slot\"\nmetrics_listen = \"127.0.0.1:0\"\n\n[capture]\nslot = \"file_slot\"\nstall_timeout = \"90s\"\n",
            stream = stack.stream
        ),
    )?;
    let config = path.to_str().unwrap_or_default();
    // Only the emulator's variables: everything of ours comes from the file.
    let aws = stack.moto.env();

    // The file alone: capture's own table wins over the top level, and the stream and the
    // database come from the top level.
    let mut capture = Proc::spawn("bridge", &["capture", "--config", config], &aws)?;
    stack.wait_slot_active("file_slot", &capture).await?;
    let ids = [
        "6f1c7a4e-0000-4000-8000-000000000001",
        "6f1c7a4e-0000-4000-8000-000000000002",
    ];
    for id in ids {
        stack
            .insert_outbox(id, ("Customer", id), "CustomerCreated", "{\"n\":1}")
            .await?;
    }
    stack
        .wait_drained_within("file_slot", &capture, Duration::from_secs(90))
        .await?;
    let records = stack.records().await?;
    for id in ids {
        anyhow::ensure!(
            records.iter().any(|r| outbox_id(r) == Some(id)),
            "{id} is not in the stream the file names:\n{}",
            capture.output()
        );
    }
    capture.terminate(Duration::from_secs(20)).await?;

    // A variable beats the file.
    let mut capture = Proc::spawn(
        "bridge",
        &["capture", "--config", config],
        &with(&aws, &[("BRIDGE_SLOT", "env_slot")]),
    )?;
    stack.wait_slot_active("env_slot", &capture).await?;
    capture.terminate(Duration::from_secs(20)).await?;

    // A flag beats both; the file is named by its variable this time.
    let mut capture = Proc::spawn(
        "bridge",
        &["capture", "--slot", "flag_slot"],
        &with(&aws, &[("BRIDGE_SLOT", "env_slot"), ("BRIDGE_CONFIG", config)]),
    )?;
    stack.wait_slot_active("flag_slot", &capture).await?;
    capture.terminate(Duration::from_secs(20)).await?;

    // `config check` says the same, each value with its source, the password hidden.
    let (code, out, err) = process::run(
        "bridge",
        &[
            "--config",
            config,
            "config",
            "check",
            "capture",
            "--slot",
            "flag_slot",
        ],
        &with(&aws, &[("BRIDGE_SHUTDOWN_TIMEOUT", "5s")]),
    )
    .await?;
    anyhow::ensure!(code == Some(0), "config check exited {code:?}:\n{out}\n{err}");
    let expected = [
        "slot = \"flag_slot\"  # flag".to_owned(),
        "shutdown_timeout = \"5s\"  # environment BRIDGE_SHUTDOWN_TIMEOUT".to_owned(),
        format!("stall_timeout = \"90s\"  # file {config}:8 `capture.stall_timeout`"),
        format!("stream = \"{}\"  # file {config}:2 `stream`", stack.stream),
        "heartbeat_interval = \"1m\"  # default".to_owned(),
    ];
    for line in &expected {
        anyhow::ensure!(out.lines().any(|l| l == line), "no line {line:?} in:\n{out}");
    }
    anyhow::ensure!(
        !out.contains(&password) && out.contains("postgres:***@"),
        "the password is not hidden:\n{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_stops_every_process_at_start_with_each_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "evnt_bus = \"orders\"\n[relay]\nstall_timeout = \"soon\"\n[shipping]\nqueue = \"q\"\n",
    )?;
    let config = path.to_str().unwrap_or_default();
    for args in [
        vec!["relay", "--config", config],
        vec!["--config", config, "config", "check"],
    ] {
        let (code, out, err) = process::run("bridge", &args, &[]).await?;
        anyhow::ensure!(code == Some(2), "{args:?} exited {code:?}:\n{out}\n{err}");
        for needle in [
            format!("{config}:1: `evnt_bus`: unknown key"),
            format!("{config}:3: `relay.stall_timeout`: invalid value 'soon'"),
            format!("{config}:5: `shipping.queue`: `[shipping]` is not a command of `bridge`"),
            "the configuration file is not valid (3 problems)".to_owned(),
        ] {
            anyhow::ensure!(err.contains(&needle), "{args:?}: no {needle:?} in:\n{err}");
        }
    }

    // `--config` after the command line shown would belong to that line: refused, with the fix.
    let (code, _, err) =
        process::run("bridge", &["config", "check", "relay", "--config", config], &[]).await?;
    anyhow::ensure!(
        code == Some(1) && err.contains("give --config before the command line"),
        "{code:?}: {err}"
    );

    // shipping reads its own file the same way (SHIPPING_CONFIG).
    let good = dir.path().join("shipping.toml");
    std::fs::write(
        &good,
        "queue = \"from-file\"\n[run]\nvisibility_timeout = \"45s\"\n",
    )?;
    let (code, out, err) = process::run(
        "shipping",
        &["config", "check", "run"],
        &[("SHIPPING_CONFIG".to_owned(), good.to_string_lossy().into_owned())],
    )
    .await?;
    anyhow::ensure!(
        code == Some(0),
        "shipping config check exited {code:?}:\n{out}\n{err}"
    );
    for needle in [
        "queue = \"from-file\"  # file",
        "visibility_timeout = \"45s\"  # file",
    ] {
        anyhow::ensure!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    Ok(())
}
