//! The benchmark keeps working: `bench ceiling` with a small backlog drains it completely in
//! every configuration (pg_recvlogical, null sink, local endpoint, moto). Speed is read from
//! the benchmark's own output, never asserted here.

use serde_json::Value;
use tests::process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceiling_drains_the_whole_backlog_every_way() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("ceiling.json");
    let out_arg = out.to_string_lossy().into_owned();
    let (code, stdout, stderr) =
        process::run("bench", &["ceiling", "--rows", "2000", "--out", &out_arg], &[]).await?;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("| drained by |"),
        "prints a markdown table: {stdout}"
    );
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    assert_eq!(rows.len(), 4, "{rows:?}");
    for r in &rows {
        assert_eq!(r["complete"], true, "{r}");
        assert_eq!(r["events"], 2000, "{r}");
    }
    assert!(
        rows[2]["verified"]
            .as_str()
            .unwrap_or("")
            .contains("endpoint received 2000 records"),
        "{}",
        rows[2]
    );
    Ok(())
}
