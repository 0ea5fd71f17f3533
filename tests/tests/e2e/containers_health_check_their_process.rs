//! `bridge healthcheck` and `shipping healthcheck`, the container health checks (the image has
//! no curl): exit 0 while the process on --metrics-listen reports itself healthy, 1 with its
//! reasons once it stalls (capture cut off from Postgres), 1 when nothing answers.

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

    let check = |bin: &'static str, listen: String| {
        let env = stack.env();
        async move {
            let (code, out, err) =
                process::run(bin, &["healthcheck", "--metrics-listen", &listen], &env).await?;
            anyhow::Ok((code, format!("{out}{err}")))
        }
    };
    harness::wait::until("both processes healthy", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        shipping.ensure_running()?;
        let (b, _) = check("bridge", blisten.clone()).await?;
        let (s, _) = check("shipping", slisten.clone()).await?;
        Ok((b == Some(0) && s == Some(0)).then_some(()))
    })
    .await?;

    // Postgres gone: capture's input stalls, and past --stall-timeout-secs it says so.
    stack.pg.stop(StopMode::Fast)?;
    let reasons = harness::wait::until(
        "capture to report itself unhealthy",
        Duration::from_secs(60),
        || async {
            capture.ensure_running()?;
            let (code, text) = check("bridge", blisten.clone()).await?;
            Ok((code == Some(1)).then_some(text))
        },
    )
    .await?;
    assert!(reasons.contains("unhealthy"), "{reasons}");

    capture.terminate(Duration::from_secs(20)).await?;
    shipping.terminate(Duration::from_secs(20)).await?;
    for (bin, listen) in [("bridge", &blisten), ("shipping", &slisten)] {
        let (code, text) = check(bin, listen.clone()).await?;
        assert_eq!(code, Some(1), "{bin}: {text}");
        assert!(text.contains("nothing answers"), "{bin}: {text}");
    }
    Ok(())
}
