//! `bridge backfill`: records the request for capture and follows it to the end with progress.

use std::time::Duration;

use anyhow::Context;
use bridge::capture::backfill::{BackfillLog, Job, JobState};
use bridge::replication::PgTarget;

use crate::cli::BackfillArgs;

/// Kinesis allows tag values of at most 256 characters.
const TAG_LIMIT: usize = 256;

pub async fn run(args: BackfillArgs) -> anyhow::Result<()> {
    let aws = bridge::aws_config().await;
    let log = BackfillLog::new(
        aws_sdk_kinesis::Client::new(&aws),
        &args.stream.stream,
        &args.slot,
    );
    let current = log
        .read()
        .await
        .context("reading the backfill tag of the stream")?;
    if let Some(job) = current.filter(|j| j.state.is_active() && !args.restart) {
        eprintln!(
            "backfill {} is already running ({} rows so far): following it; --restart replaces it",
            job.id, job.rows
        );
        return follow(&log, &job.id, None).await;
    }
    let job = Job {
        id: format!("{:08x}", rand::random::<u32>()),
        tables: if args.all { Vec::new() } else { args.table.clone() },
        where_sql: args.where_sql.clone(),
        chunk_rows: args.chunk_rows,
        rows_per_second: args.rows_per_second,
        state: JobState::Requested,
        table_index: 0,
        last_key: None,
        rows: 0,
        reason: None,
    };
    // Progress adds a key and counters later: leave room for them.
    anyhow::ensure!(
        job.to_tag().len() + 80 <= TAG_LIMIT,
        "the request does not fit the stream tag it is kept in ({TAG_LIMIT} characters): shorten --where \
         or name fewer tables per run"
    );
    log.write(&job).await.context("recording the backfill request")?;
    println!(
        "backfill {} requested: the capture streaming from slot {} runs it",
        job.id, args.slot
    );
    if args.no_wait {
        return Ok(());
    }
    let total = match &args.database_url {
        Some(url) => count_rows(url, &job).await.ok(),
        None => None,
    };
    follow(&log, &job.id, total).await
}

/// Polls the job until it is done or failed, with a progress bar.
async fn follow(log: &BackfillLog, id: &str, total: Option<u64>) -> anyhow::Result<()> {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} rows {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let job = log.read().await.context("reading the backfill tag")?;
        let Some(job) = job.filter(|j| j.id == id) else {
            bar.abandon();
            anyhow::bail!("backfill {id} was replaced by another request");
        };
        bar.set_position(job.rows);
        bar.set_message(format!("({})", job_state(&job)));
        match job.state {
            JobState::Done => {
                bar.finish();
                println!("backfill {id} done: {} rows sent to the stream", job.rows);
                return Ok(());
            }
            JobState::Failed => {
                bar.abandon();
                anyhow::bail!(
                    "backfill {id} failed: {}",
                    job.reason.as_deref().unwrap_or("no reason recorded")
                );
            }
            JobState::Requested | JobState::Running => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn job_state(job: &Job) -> &'static str {
    match job.state {
        JobState::Requested => "waiting for capture",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
    }
}

/// How many rows the request covers, for the progress bar.
async fn count_rows(url: &str, job: &Job) -> anyhow::Result<u64> {
    let target = PgTarget::from_url(url, "outbox-bridge-backfill")?;
    let client = bridge::replication::slot::query_client(&target).await?;
    let filter = job
        .where_sql
        .as_ref()
        .map_or_else(String::new, |w| format!(" WHERE ({w})"));
    let mut total = 0_u64;
    for table in &job.tables {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {}{filter}", table.quoted()), &[])
            .await?
            .get(0);
        total += n.unsigned_abs();
    }
    anyhow::ensure!(!job.tables.is_empty(), "--all: counted by capture");
    Ok(total)
}
