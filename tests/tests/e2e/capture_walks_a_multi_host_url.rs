//! A libpq multi-host URL (`postgres://…@dead:port,live:port/db?target_session_attrs=…`):
//! capture, and the query connections of `bridge status`, pass over a host that does not
//! answer and settle on the one that is the primary.

use std::time::Duration;

use harness::process::Proc;
use harness::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_passes_over_an_unreachable_host_to_the_primary() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let dead = harness::free_port()?;
    let url = stack
        .pg
        .url()
        .replacen("@127.0.0.1:", &format!("@127.0.0.1:{dead},127.0.0.1:"), 1)
        + "?target_session_attrs=primary";
    let env = stack.env_with(&[("DATABASE_URL", &url)]);
    let capture = Proc::spawn("bridge", &["capture"], &env)?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    let id = "00000000-0000-0000-0000-00000000aa01";
    stack
        .insert_outbox(id, ("Order", "o-multi"), "OrderPlaced", r#"{"n": 1}"#)
        .await?;
    harness::wait::until("the row in Kinesis", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        let records = stack.records().await?;
        Ok(records
            .iter()
            .any(|r| harness::stack::outbox_id(r) == Some(id))
            .then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", capture.output()))?;
    assert!(
        capture.output().contains("trying the next"),
        "{}",
        capture.output()
    );
    // The query connection walks the list too.
    let (code, out, err) = harness::process::run("bridge", &["status", "--json"], &env).await?;
    let status: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| anyhow::anyhow!("{e}: {out}\n{err}"))?;
    assert_eq!(status["slot"]["active"], true, "{code:?} {status}");

    // A setting that could land on either server is refused with the reason, before any
    // connection: the slot lives on one.
    let either = stack.pg.url() + "?target_session_attrs=prefer-standby";
    let env = stack.env_with(&[("DATABASE_URL", &either)]);
    let (code, out, err) = harness::process::run("bridge", &["capture"], &env).await?;
    assert_ne!(code, Some(0));
    assert!(err.contains("lives on one server"), "{out}\n{err}");
    Ok(())
}
