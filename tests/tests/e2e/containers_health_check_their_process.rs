//! `bridge healthcheck` and `shipping healthcheck`, the container health checks (the image has
//! no curl). Liveness is not readiness: the check asks `/livez`, which stays 200 while the
//! process waits out an outage (capture cut off from Postgres) — a container check that failed
//! then would have the orchestrator kill the very process that is patiently waiting, again and
//! again — while `--ready` (`/readyz`, and `/healthz` as before) reports the stall with its
//! reasons. Both exit 1 when nothing answers.

use std::time::Duration;

use harness::postgres::StopMode;
use harness::process::{self, Proc};
use harness::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_follows_the_process_health() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.run_ok("shipping", &["setup"]).await?;
    let (bport, sport) = (harness::free_port()?, harness::free_port()?);
    // Bound on the wildcard address, as in a container; the check asks on loopback.
    let (blisten, slisten) = (format!("0.0.0.0:{bport}"), format!("0.0.0.0:{sport}"));
    let mut capture = Proc::spawn(
        "bridge",
        &[
            "capture",
            "--metrics-listen",
            &blisten,
            "--stall-timeout-secs",
            "3",
        ],
        &stack.env(),
    )?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    let mut shipping = Proc::spawn("shipping", &["run", "--metrics-listen", &slisten], &stack.env())?;

    let check = |bin: &'static str, listen: String, ready: bool| {
        let env = stack.env();
        async move {
            let mut args = vec!["healthcheck", "--metrics-listen", &listen];
            if ready {
                args.push("--ready");
            }
            let (code, out, err) = process::run(bin, &args, &env).await?;
            anyhow::Ok((code, format!("{out}{err}")))
        }
    };
    harness::wait::until("both processes ready", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        shipping.ensure_running()?;
        let (b, _) = check("bridge", blisten.clone(), true).await?;
        let (s, _) = check("shipping", slisten.clone(), true).await?;
        Ok((b == Some(0) && s == Some(0)).then_some(()))
    })
    .await?;

    // Postgres gone: capture's input stalls, and past --stall-timeout-secs it is not ready…
    stack.pg.stop(StopMode::Fast)?;
    let reasons = harness::wait::until(
        "capture to report itself not ready",
        Duration::from_secs(60),
        || async {
            capture.ensure_running()?;
            let (code, text) = check("bridge", blisten.clone(), true).await?;
            Ok((code == Some(1)).then_some(text))
        },
    )
    .await?;
    assert!(reasons.contains("unhealthy"), "{reasons}");
    let (status, body) = harness::metrics::health(bport).await?;
    assert_eq!(status, 503, "/healthz keeps its meaning: {body}");
    // …and alive all the while: the container check passes through the outage.
    for _ in 0..3 {
        let (code, text) = check("bridge", blisten.clone(), false).await?;
        assert_eq!(code, Some(0), "liveness during the outage: {text}");
        capture.ensure_running()?;
    }
    let live = reqwest::get(format!("http://127.0.0.1:{bport}/livez")).await?;
    assert_eq!(live.status().as_u16(), 200);
    stack.pg.start_again()?;
    harness::wait::until("capture ready again", Duration::from_secs(60), || async {
        let (code, _) = check("bridge", blisten.clone(), true).await?;
        Ok((code == Some(0)).then_some(()))
    })
    .await?;

    // legacy-sim's container checks legacy-sim, not the bridge.
    let (mut sim, base) = stack.spawn_legacy_sim().await?;
    let sim_listen = base.trim_start_matches("http://").to_owned();
    let (code, out, err) = process::run(
        "legacy-sim",
        &["healthcheck", "--listen", &sim_listen],
        &stack.env(),
    )
    .await?;
    assert_eq!(code, Some(0), "{out}{err}");
    sim.terminate(Duration::from_secs(20)).await?;
    let (code, _, err) = process::run(
        "legacy-sim",
        &["healthcheck", "--listen", &sim_listen],
        &stack.env(),
    )
    .await?;
    assert_eq!(code, Some(1), "{err}");

    capture.terminate(Duration::from_secs(20)).await?;
    shipping.terminate(Duration::from_secs(20)).await?;
    for (bin, listen) in [("bridge", &blisten), ("shipping", &slisten)] {
        for ready in [false, true] {
            let (code, text) = check(bin, listen.clone(), ready).await?;
            assert_eq!(code, Some(1), "{bin}: {text}");
            assert!(text.contains("nothing answers"), "{bin}: {text}");
        }
    }
    Ok(())
}

/// `/metrics` is OpenMetrics text and says so; it carries `build_info` and the process figures;
/// with `--cloudwatch-metrics emf` the figures CloudWatch alarms watch go out as embedded metric
/// format lines on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_openmetrics_with_build_info_and_process_figures() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let capture = stack
        .spawn_capture(&["--metrics-listen", &listen, "--cloudwatch-metrics", "emf"])
        .await?;
    capture
        .wait_output(
            "an EMF line",
            &["\"_aws\"", "\"ReplicationLagBytes\""],
            Duration::from_secs(30),
        )
        .await?;
    let emf: serde_json::Value = capture
        .output()
        .lines()
        .find(|l| l.contains("\"_aws\""))
        .map(serde_json::from_str)
        .transpose()?
        .unwrap_or_default();
    assert_eq!(
        emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "OutboxBridge",
        "{emf}"
    );
    assert_eq!(emf["Service"], "capture", "{emf}");
    assert!(emf["RetainedWalBytes"].is_number(), "{emf}");
    let resp = reqwest::get(format!("http://{listen}/metrics")).await?;
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.text().await?;
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(
        body.ends_with("# EOF\n") && body.matches("# EOF").count() == 1,
        "one OpenMetrics exposition"
    );
    assert!(body.contains("bridge_build_info{version=\""), "{body}");
    let rss = harness::metrics::value_in(&body, "process_resident_memory_bytes")?;
    assert!(rss > 1_000_000.0, "{rss}");
    assert!(harness::metrics::value_in(&body, "process_cpu_seconds_total")? > 0.0);
    capture.ensure_running()?;
    Ok(())
}
