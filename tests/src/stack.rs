//! The whole embedded stack for one test or the demo: Postgres migrated by legacy-sim, moto,
//! and a Kinesis stream made by `bridge setup`.

use std::time::Duration;

use anyhow::Context;

use crate::kinesis::{self, StreamRecord};
use crate::moto::Moto;
use crate::postgres::TestPostgres;
use crate::process::{self, Proc};

pub struct Stack {
    pub pg: TestPostgres,
    pub moto: Moto,
    pub kinesis: aws_sdk_kinesis::Client,
    pub stream: String,
}

impl Stack {
    /// Starts Postgres and moto, migrates the monolith schema and creates the stream.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_shards(4).await
    }

    pub async fn start_with_shards(shards: u32) -> anyhow::Result<Self> {
        Self::start_on(Moto::start().await?, shards).await
    }

    /// The same stack on an emulator whose archives lag ([`Moto::start_with_archive_lag`]).
    pub async fn start_with_archive_lag(lag: Duration) -> anyhow::Result<Self> {
        Self::start_on(Moto::start_with_archive_lag(lag).await?, 4).await
    }

    /// The same stack on the split emulator ([`Moto::start_split`]), for long runs.
    pub async fn start_split() -> anyhow::Result<Self> {
        Self::start_on(Moto::start_split().await?, 4).await
    }

    /// Postgres migrated and moto, and nothing created in AWS: for resources made another way
    /// (a CloudFormation stack). `stream` is the name the pipeline will use.
    pub async fn start_bare(stream: &str) -> anyhow::Result<Self> {
        Self::migrated(Moto::start().await?, stream.to_owned()).await
    }

    async fn migrated(moto: Moto, stream: String) -> anyhow::Result<Self> {
        let pg = TestPostgres::start()?;
        let kinesis = aws_sdk_kinesis::Client::new(&moto.sdk_config().await);
        let stack = Self {
            pg,
            moto,
            kinesis,
            stream,
        };
        stack.run_ok("legacy-sim", &["migrate"]).await?;
        Ok(stack)
    }

    async fn start_on(moto: Moto, shards: u32) -> anyhow::Result<Self> {
        let stack = Self::migrated(moto, crate::unique("cdc")).await?;
        stack
            .run_ok(
                "bridge",
                &[
                    "setup",
                    "--stream",
                    &stack.stream,
                    "--shards",
                    &shards.to_string(),
                ],
            )
            .await?;
        Ok(stack)
    }

    /// DATABASE_URL, the AWS SDK's variables for moto, and the stream name.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.moto.env();
        env.push(("DATABASE_URL".into(), self.pg.url()));
        env.push(("BRIDGE_STREAM".into(), self.stream.clone()));
        env.push(("BRIDGE_METRICS_LISTEN".into(), "127.0.0.1:0".into()));
        env.push(("SHIPPING_METRICS_LISTEN".into(), "127.0.0.1:0".into()));
        env
    }

    /// [`Stack::env`] with some variables replaced (an endpoint behind a proxy, a metrics port).
    pub fn env_with(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.env();
        env.retain(|(k, _)| !overrides.iter().any(|(name, _)| name == k));
        env.extend(overrides.iter().map(|(k, v)| {
            let v = match *k {
                // A proxy in front of the emulator is reached by host name too (see `aws_env`).
                "AWS_ENDPOINT_URL" => crate::moto::by_host_name(v),
                _ => (*v).to_owned(),
            };
            ((*k).to_owned(), v)
        }));
        env
    }

    /// Runs a binary to completion and fails with its output unless it exits 0.
    pub async fn run_ok(&self, bin: &str, args: &[&str]) -> anyhow::Result<String> {
        let (code, out, err) = process::run(bin, args, &self.env()).await?;
        anyhow::ensure!(
            code == Some(0),
            "{bin} {args:?} exited with {code:?}:\n{out}\n{err}"
        );
        Ok(out)
    }

    pub fn spawn(&self, bin: &str, args: &[&str]) -> anyhow::Result<Proc> {
        Proc::spawn(bin, args, &self.env())
    }

    /// `bridge capture` with the stack's defaults plus `args`; returns once it streams from its slot.
    pub async fn spawn_capture(&self, args: &[&str]) -> anyhow::Result<Proc> {
        let mut all = vec!["capture"];
        all.extend_from_slice(args);
        let proc = self.spawn("bridge", &all)?;
        let slot = args
            .iter()
            .position(|a| *a == "--slot")
            .and_then(|i| args.get(i + 1))
            .unwrap_or(&"outbox_bridge");
        self.wait_slot_active(slot, &proc).await?;
        Ok(proc)
    }

    /// Runs `bridge capture` where it is expected to refuse to start: its exit code and output.
    pub async fn capture_refusal(&self) -> anyhow::Result<(Option<i32>, String)> {
        self.capture_refusal_with(&[]).await
    }

    /// [`Stack::capture_refusal`] with more flags.
    pub async fn capture_refusal_with(&self, args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
        let mut all = vec!["capture"];
        all.extend_from_slice(args);
        let mut capture = Proc::spawn("bridge", &all, &self.env())?;
        let code = capture.wait(Duration::from_secs(60)).await?;
        Ok((code, capture.output()))
    }

    /// Waits until a walsender that `proc` started streams from `slot`, failing early if
    /// `proc` exits. A killed reader's walsender may hold the slot a moment longer: only a
    /// backend that started after `proc` counts.
    pub async fn wait_slot_active(&self, slot: &str, proc: &Proc) -> anyhow::Result<()> {
        let client = self.pg.client().await?;
        let spawned = proc
            .started_at()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        crate::wait::until(
            &format!("slot {slot} to be active"),
            Duration::from_secs(60),
            || async {
                proc.ensure_running()?;
                let row = client
                    .query_opt(
                        "SELECT extract(epoch FROM a.backend_start)::float8 FROM pg_replication_slots s \
                         JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = $1",
                        &[&slot],
                    )
                    .await?;
                let started = row.and_then(|r| r.get::<_, Option<f64>>(0));
                Ok(started.filter(|&s| s >= spawned).map(|_| ()))
            },
        )
        .await
    }

    /// `legacy-sim serve` on a free port; returns the process and its base URL.
    pub async fn spawn_legacy_sim(&self) -> anyhow::Result<(Proc, String)> {
        self.spawn_legacy_sim_with(&self.env()).await
    }

    /// [`Stack::spawn_legacy_sim`] with its own environment.
    pub async fn spawn_legacy_sim_with(&self, env: &[(String, String)]) -> anyhow::Result<(Proc, String)> {
        let port = crate::free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let proc = Proc::spawn("legacy-sim", &["serve", "--listen", &listen], env)?;
        let base = format!("http://{listen}");
        let http = reqwest::Client::new();
        crate::wait::until("legacy-sim to serve", Duration::from_secs(30), || {
            let running = proc.ensure_running();
            let req = http.get(format!("{base}/healthz")).send();
            async move {
                running?;
                Ok(req.await.ok().filter(|r| r.status().is_success()).map(|_| ()))
            }
        })
        .await
        .with_context(|| proc.output())?;
        Ok((proc, base))
    }

    pub async fn records(&self) -> anyhow::Result<Vec<StreamRecord>> {
        kinesis::read_all(&self.kinesis, &self.stream).await
    }

    /// Writes one outbox row (version 1) as the monolith would; `payload` is JSON text.
    pub async fn insert_outbox(
        &self,
        id: &str,
        aggregate: (&str, &str),
        event_type: &str,
        payload: &str,
    ) -> anyhow::Result<()> {
        self.pg
            .client()
            .await?
            .execute(
                "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                 VALUES ($1::text::uuid, $2, $3, $4, $5::text::jsonb, 1)",
                &[&id, &aggregate.0, &aggregate.1, &event_type, &payload],
            )
            .await?;
        Ok(())
    }

    /// Every outbox id in the monolith's database: the ground truth.
    pub async fn outbox_ids(&self) -> anyhow::Result<Vec<String>> {
        let client = self.pg.client().await?;
        let rows = client
            .query("SELECT id::text FROM outbox ORDER BY id", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Waits until every outbox row in the database has a record in the stream (duplicates
    /// allowed) while `proc` keeps running; returns the records. It waits at the source of
    /// truth first (the slot acknowledged all WAL written so far, so by the acknowledgement
    /// rule every committed row is in Kinesis), then reads the stream: re-reading a large
    /// stream from moto on every poll would starve the very process under test.
    pub async fn wait_all_in_kinesis(
        &self,
        proc: &Proc,
        timeout: Duration,
    ) -> anyhow::Result<Vec<StreamRecord>> {
        let ids: std::collections::HashSet<String> = self.outbox_ids().await?.into_iter().collect();
        self.wait_drained_within("outbox_bridge", proc, timeout).await?;
        let mut missing = ids.len();
        for _ in 0..10 {
            let records = self.records().await?;
            let seen: std::collections::HashSet<&str> = records.iter().filter_map(outbox_id).collect();
            missing = ids.iter().filter(|id| !seen.contains(id.as_str())).count();
            if missing == 0 {
                return Ok(records);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        anyhow::bail!(
            "the slot acknowledged everything, yet {missing} of {} outbox rows are not in kinesis",
            ids.len()
        )
    }

    /// Waits until the slot has acknowledged everything written so far: by the acknowledgement
    /// rule, every change committed before this call is then in Kinesis.
    pub async fn wait_drained(&self, slot: &str, proc: &Proc) -> anyhow::Result<()> {
        self.wait_drained_within(slot, proc, Duration::from_secs(90))
            .await
    }

    pub async fn wait_drained_within(
        &self,
        slot: &str,
        proc: &Proc,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let client = self.pg.client().await?;
        let row = client
            .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[])
            .await?;
        let written = row.get::<_, i64>(0) as u64;
        crate::wait::until(
            &format!("slot {slot} to acknowledge {written:#x}"),
            timeout,
            || async {
                proc.ensure_running()?;
                Ok(self
                    .confirmed_flush(slot)
                    .await?
                    .filter(|&f| f >= written)
                    .map(|_| ()))
            },
        )
        .await
    }

    /// The slot's `confirmed_flush_lsn` as a number, if the slot exists.
    pub async fn confirmed_flush(&self, slot: &str) -> anyhow::Result<Option<u64>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(|v| v as u64))
    }
}

/// The outbox id of a DMS record of the outbox table: an insert, or a row re-published from
/// the table (`load`: an outbox resync).
pub fn outbox_id(record: &StreamRecord) -> Option<&str> {
    let m = &record.json["metadata"];
    (m["table-name"] == "outbox" && (m["operation"] == "insert" || m["operation"] == "load"))
        .then(|| record.json["data"]["id"].as_str())
        .flatten()
}
