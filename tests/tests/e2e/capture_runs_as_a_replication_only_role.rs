//! Least privilege: capture runs as a role with `LOGIN REPLICATION` and membership in
//! `outbox_bridge_reader` (SELECT on the outbox and the prune horizon, granted by the migration;
//! no other table privileges, no ownership), its password read from a password file — and that
//! is enough for the default recovery too: its slot dropped, it resyncs the outbox. A role
//! without REPLICATION, or a missing publication, stops it with an error naming what is missing
//! and the SQL that fixes it.

use std::time::Duration;

use harness::process::Proc;
use harness::stack::{outbox_id, Stack};
use harness::wait;

const ROLE_PW: &str = "cdc-role-pw-Hq2";
const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                      VALUES ($1::text::uuid, 'Customer', 'c-1', 'CustomerCreated', '{}', 1)";

/// The stack's environment, connecting as `role` (no password in the URL) with a password file.
fn env_as(stack: &Stack, role: &str, pgpass: &std::path::Path) -> Vec<(String, String)> {
    let mut env = stack.env();
    env.retain(|(k, _)| k != "DATABASE_URL");
    let url = format!("postgres://{role}@127.0.0.1:{}/postgres", stack.pg.port);
    env.push(("DATABASE_URL".into(), url));
    env.push(("PGPASSFILE".into(), pgpass.display().to_string()));
    env
}

/// Runs `bridge capture` expecting it to stop on its own with a fatal error; returns its output.
async fn capture_refuses(env: &[(String, String)], args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["capture"];
    all.extend_from_slice(args);
    let mut capture = Proc::spawn("bridge", &all, env)?;
    let code = capture.wait(Duration::from_secs(60)).await?;
    let out = capture.output();
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}:\n{out}");
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_needs_only_login_replication_and_names_what_is_missing() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let admin = stack.pg.client().await?;
    admin
        .batch_execute(&format!(
            "CREATE ROLE cdc_bridge LOGIN REPLICATION IN ROLE outbox_bridge_reader PASSWORD '{ROLE_PW}'; \
             CREATE ROLE cdc_plain LOGIN PASSWORD '{ROLE_PW}';"
        ))
        .await?;
    let dir = tempfile::tempdir()?;
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, format!("*:*:*:*:{ROLE_PW}\n"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600))?;
    }

    // The whole capture path as the REPLICATION-only role, on a slot it creates itself.
    let env = env_as(&stack, "cdc_bridge", &pgpass);
    let mut capture = Proc::spawn("bridge", &["capture", "--slot", "least_privilege"], &env)?;
    stack.wait_slot_active("least_privilege", &capture).await?;
    let id = "00000000-0000-0000-0000-0000000000a1";
    admin.execute(INSERT, &[&id]).await?;
    wait::until("the row in kinesis", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        let records = stack.records().await?;
        Ok(records.iter().any(|r| outbox_id(r) == Some(id)).then_some(()))
    })
    .await?;
    let streaming_as: String = admin
        .query_one(
            "SELECT usename::text FROM pg_stat_replication WHERE application_name = 'outbox-bridge'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(streaming_as, "cdc_bridge");
    let privileged: bool = admin
        .query_one(
            "SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolbypassrls FROM pg_roles \
             WHERE rolname = 'cdc_bridge'",
            &[],
        )
        .await?
        .get(0);
    assert!(!privileged);
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));

    // The slot is lost while capture is down: the default recovery re-publishes the outbox rows
    // of the gap, reading them with the role's own grants.
    harness::postgres::drop_slot(&admin, "least_privilege", harness::postgres::SlotReader::Stopped).await?;
    let gap = "00000000-0000-0000-0000-0000000000a2";
    admin.execute(INSERT, &[&gap]).await?;
    let mut capture = Proc::spawn("bridge", &["capture", "--slot", "least_privilege"], &env)?;
    wait::until("the gap's row re-published", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        let records = stack.records().await?;
        Ok(records.iter().any(|r| outbox_id(r) == Some(gap)).then_some(()))
    })
    .await?;
    assert!(
        capture.output().contains("outbox resync done"),
        "{}",
        capture.output()
    );
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));

    // Without REPLICATION: creating a slot is refused, with the fix.
    let plain = env_as(&stack, "cdc_plain", &pgpass);
    let out = capture_refuses(&plain, &["--slot", "plain_new"]).await?;
    assert!(
        out.contains("REPLICATION") && out.contains("ALTER ROLE \"cdc_plain\" REPLICATION;"),
        "{out}"
    );
    // …and streaming from an existing slot is refused the same way.
    let out = capture_refuses(&plain, &["--slot", "least_privilege"]).await?;
    assert!(
        out.contains("may not open a replication connection")
            && out.contains("ALTER ROLE \"cdc_plain\" REPLICATION;"),
        "{out}"
    );

    // A missing publication: the role may not create it (it does not own the table), so the
    // error names the publication and the owner's SQL.
    admin.batch_execute("DROP PUBLICATION outbox_bridge").await?;
    let out = capture_refuses(&env, &["--slot", "least_privilege"]).await?;
    assert!(
        out.contains("publication `outbox_bridge` does not exist")
            && out.contains(
                "CREATE PUBLICATION \"outbox_bridge\" FOR TABLE \"public\".\"outbox\" WITH (publish = 'insert');"
            ),
        "{out}"
    );
    assert!(!out.contains(ROLE_PW), "the role's password is shown:\n{out}");
    Ok(())
}
