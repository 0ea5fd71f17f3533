//! TLS to Postgres: the server has a certificate from a CA the test makes up, and `pg_hba.conf`
//! lets the bridge's role in over TLS only (`hostssl`), so a capture that streams proves both
//! its query and its replication connection are encrypted. `verify-full` succeeds with that CA
//! and the certificate's host name; another CA, or another host name, is refused (and the
//! refusal is final, not retried); `verify-ca` accepts the CA whatever the host name. Without
//! TLS, a server asking for a cleartext `password` is refused on both connections (the password
//! never travels in the clear) unless `sslmode=disable` was asked for; `require_auth` is honoured.

use std::path::Path;
use std::time::Duration;

use harness::process::Proc;
use harness::stack::{outbox_id, Stack};
use harness::tls::TestCa;
use harness::wait;

const ROLE_PW: &str = "tls-role-pw-7Jc";
const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                      VALUES ($1::text::uuid, 'Customer', 'c-1', 'CustomerCreated', '{}', 1)";

fn env_with(stack: &Stack, host: &str, query: &str) -> Vec<(String, String)> {
    let mut env = stack.env();
    env.retain(|(k, _)| k != "DATABASE_URL");
    let url = format!(
        "postgres://cdc_tls:{ROLE_PW}@{host}:{}/postgres?{query}",
        stack.pg.port
    );
    env.push(("DATABASE_URL".into(), url));
    env
}

fn verify(mode: &str, ca: &Path) -> String {
    format!("sslmode={mode}&sslrootcert={}", ca.display())
}

async fn capture_refuses(env: &[(String, String)]) -> anyhow::Result<String> {
    let mut capture = Proc::spawn("bridge", &["capture"], env)?;
    // Refused for good: it must stop by itself, not retry a certificate forever.
    let code = capture.wait(Duration::from_secs(60)).await?;
    let out = capture.output();
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}:\n{out}");
    Ok(out)
}

/// Streams one new outbox row through a capture running with `env`, then checks every
/// connection of the bridge's role was encrypted.
async fn streams_over_tls(stack: &Stack, env: &[(String, String)], id: &str) -> anyhow::Result<()> {
    let admin = stack.pg.client().await?;
    let mut capture = Proc::spawn("bridge", &["capture"], env)?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    admin.execute(INSERT, &[&id]).await?;
    wait::until("the row in kinesis", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        let records = stack.records().await?;
        Ok(records.iter().any(|r| outbox_id(r) == Some(id)).then_some(()))
    })
    .await?;
    let rows = admin
        .query(
            "SELECT a.backend_type::text, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.usename = 'cdc_tls'",
            &[],
        )
        .await?;
    let walsender_tls = rows
        .iter()
        .any(|r| r.get::<_, String>(0) == "walsender" && r.get::<_, bool>(1));
    assert!(walsender_tls, "no encrypted walsender for the bridge: {rows:?}");
    assert!(rows.iter().all(|r| r.get::<_, bool>(1)));
    capture.terminate(Duration::from_secs(30)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_accepts_our_ca_and_refuses_another_or_a_wrong_host() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let ca = TestCa::new("outbox-bridge test CA")?;
    let other_ca = TestCa::new("somebody else's CA")?;
    // Valid for "localhost" only, so 127.0.0.1 is the wrong host name.
    stack.pg.enable_tls(
        &ca.issue(&["localhost"])?,
        "hostssl all cdc_tls 127.0.0.1/32 scram-sha-256",
    )?;
    stack
        .pg
        .client()
        .await?
        .batch_execute(&format!(
            "CREATE ROLE cdc_tls LOGIN REPLICATION PASSWORD '{ROLE_PW}'"
        ))
        .await?;
    let dir = tempfile::tempdir()?;
    let (ca_file, other_file) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca_file, ca.cert_pem())?;
    std::fs::write(&other_file, other_ca.cert_pem())?;

    let good = env_with(&stack, "localhost", &verify("verify-full", &ca_file));
    streams_over_tls(&stack, &good, "00000000-0000-0000-0000-0000000000f1").await?;

    let out = capture_refuses(&env_with(
        &stack,
        "localhost",
        &verify("verify-full", &other_file),
    ))
    .await?;
    assert!(
        out.contains("sslmode=verify-full") && out.contains("invalid peer certificate: UnknownIssuer"),
        "another CA:\n{out}"
    );
    let out = capture_refuses(&env_with(&stack, "127.0.0.1", &verify("verify-full", &ca_file))).await?;
    assert!(
        out.contains("sslmode=verify-full") && out.contains("not valid for name"),
        "wrong host name:\n{out}"
    );
    // Without TLS the server itself refuses the role (hostssl only).
    let out = capture_refuses(&env_with(&stack, "127.0.0.1", "sslmode=disable")).await?;
    assert!(out.contains("no encryption"), "sslmode=disable:\n{out}");

    // verify-ca checks the chain only: the same wrong host name is fine.
    let ca_only = env_with(&stack, "127.0.0.1", &verify("verify-ca", &ca_file));
    streams_over_tls(&stack, &ca_only, "00000000-0000-0000-0000-0000000000f2").await?;
    let out = capture_refuses(&env_with(&stack, "127.0.0.1", &verify("verify-ca", &other_file))).await?;
    assert!(out.contains("UnknownIssuer"), "verify-ca, another CA:\n{out}");

    // require: encrypted, not verified (libpq's meaning).
    let require = env_with(&stack, "127.0.0.1", "sslmode=require");
    streams_over_tls(&stack, &require, "00000000-0000-0000-0000-0000000000f3").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleartext_password_is_never_sent_over_an_unencrypted_connection() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    // No TLS on this server, and the role authenticates with `password` (cleartext).
    stack
        .pg
        .prepend_hba("host all cdc_plain 127.0.0.1/32 password")
        .await?;
    stack
        .pg
        .client()
        .await?
        .batch_execute(&format!(
            "CREATE ROLE cdc_plain LOGIN REPLICATION PASSWORD '{ROLE_PW}'"
        ))
        .await?;
    let env = |query: &str| {
        let mut env = stack.env();
        env.retain(|(k, _)| k != "DATABASE_URL");
        let url = format!(
            "postgres://cdc_plain:{ROLE_PW}@127.0.0.1:{}/postgres?{query}",
            stack.pg.port
        );
        env.push(("DATABASE_URL".into(), url));
        env
    };
    // The default sslmode (prefer): refused for good, before any password is sent.
    let out = capture_refuses(&env("application_name=plain")).await?;
    assert!(out.contains("password in clear text"), "sslmode=prefer:\n{out}");
    assert!(!out.contains(ROLE_PW), "{out}");
    // require_auth forbids it whatever the transport.
    let out = capture_refuses(&env("sslmode=disable&require_auth=scram-sha-256")).await?;
    assert!(out.contains("require_auth"), "require_auth:\n{out}");
    let out = capture_refuses(&env("channel_binding=require")).await?;
    assert!(out.contains("channel_binding=require is not supported"), "{out}");
    // Asked for explicitly, the unencrypted connection is accepted (with a warning).
    let mut capture = Proc::spawn("bridge", &["capture"], &env("sslmode=disable"))?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    capture.terminate(Duration::from_secs(30)).await?;
    Ok(())
}
