//! A Postgres password — in the URL, in PGPASSWORD or in a password file, right or wrong — never appears in any
//! process's output (logs, errors, `--help`) or in the metrics.

use std::time::Duration;

use harness::postgres::SUPERUSER_PASSWORD;
use harness::process;
use harness::stack::Stack;

const WRONG: &str = "wrong-secret-Zq8v";

fn without_password(url: &str) -> String {
    url.replace(&format!(":{SUPERUSER_PASSWORD}@"), "@")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_logs_errors_help_and_metrics() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut outputs: Vec<(String, String)> = Vec::new();

    // A working pipeline with the password in the URL, and its metrics.
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut bridge = process::Proc::spawn("bridge", &["run", "--metrics-listen", &listen], &stack.env())?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    let out = stack
        .run_ok(
            "legacy-sim",
            &[
                "load",
                "--customers",
                "2",
                "--orders",
                "5",
                "--progress",
                "always",
            ],
        )
        .await?;
    outputs.push(("legacy-sim load".into(), out));
    stack.wait_drained("outbox_bridge", &bridge).await?;
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await?
        .text()
        .await?;
    outputs.push(("bridge /metrics".into(), metrics));
    bridge.terminate(Duration::from_secs(30)).await?;
    outputs.push(("bridge run".into(), bridge.output()));

    // The password from PGPASSWORD instead of the URL.
    let mut pgpassword_env = stack.env();
    pgpassword_env.retain(|(k, _)| k != "DATABASE_URL");
    pgpassword_env.push(("DATABASE_URL".into(), without_password(&stack.pg.url())));
    pgpassword_env.push(("PGPASSWORD".into(), SUPERUSER_PASSWORD.into()));
    let (_, out, err) = process::run("bridge", &["status"], &pgpassword_env).await?;
    assert!(
        out.contains("slot outbox_bridge") && out.contains("exists true"),
        "{out}{err}"
    );
    outputs.push(("bridge status (PGPASSWORD)".into(), out + &err));

    // The password from a password file (libpq's format; PGPASSFILE), none in the URL.
    let dir = tempfile::tempdir()?;
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, format!("# test\n*:*:*:postgres:{SUPERUSER_PASSWORD}\n"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut pgpass_env = stack.env();
    pgpass_env.retain(|(k, _)| k != "DATABASE_URL");
    pgpass_env.push(("DATABASE_URL".into(), without_password(&stack.pg.url())));
    pgpass_env.push(("PGPASSFILE".into(), pgpass.display().to_string()));
    let (_, out, err) = process::run("bridge", &["status"], &pgpass_env).await?;
    assert!(
        out.contains("slot outbox_bridge") && out.contains("exists true"),
        "{out}{err}"
    );
    outputs.push(("bridge status (PGPASSFILE)".into(), out + &err));

    // A wrong password: refused, and the refusal does not quote it.
    let mut wrong_env = stack.env();
    wrong_env.retain(|(k, _)| k != "DATABASE_URL");
    wrong_env.push(("DATABASE_URL".into(), stack.pg.url_as("postgres", WRONG)));
    let mut capture = process::Proc::spawn("bridge", &["capture"], &wrong_env)?;
    let said = harness::wait::until(
        "capture to report the refusal",
        Duration::from_secs(60),
        || async {
            let out = capture.output();
            Ok((out.contains("password") || out.contains("auth")).then_some(()))
        },
    )
    .await;
    let _ = capture.terminate(Duration::from_secs(10)).await;
    let refused = capture.output();
    assert!(said.is_ok(), "{refused}");
    outputs.push(("bridge capture (wrong password)".into(), refused));

    // --help with the URL in the environment.
    for (bin, args) in [
        ("bridge", vec!["capture", "--help"]),
        ("bridge", vec!["status", "--help"]),
        ("legacy-sim", vec!["serve", "--help"]),
        ("shipping", vec!["run", "--help"]),
    ] {
        let (_, out, err) = process::run(bin, &args, &stack.env()).await?;
        outputs.push((format!("{bin} {}", args.join(" ")), out + &err));
    }

    for (what, text) in &outputs {
        assert!(!text.is_empty(), "{what} printed nothing");
        for secret in [SUPERUSER_PASSWORD, WRONG] {
            assert!(!text.contains(secret), "{what} shows a password:\n{text}");
        }
    }
    Ok(())
}
