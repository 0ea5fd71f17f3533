//! The task that runs the jobs: reads each chunk in primary-key order between a low and a high
//! watermark, paced, and records progress once Kinesis holds the chunk.

use super::coordinator::{Chunk, Coordinator, REREAD_PAUSE};
use super::job::{BackfillLog, Job, JobState};
use super::*;

/// Looks for requests and runs them, one at a time, until shutdown. A failure of Postgres or
/// Kinesis is retried; a request that cannot work (no such table, no primary key, a bad
/// `--where`) fails with its reason.
pub async fn run_jobs(
    coordinator: Arc<Coordinator>,
    log: BackfillLog,
    cfg: CaptureConfig,
    shutdown: CancellationToken,
) {
    let run = format!("{:016x}", rand::random::<u64>());
    let mut idle_client = None;
    // Chunks are numbered across jobs: a late watermark of an interrupted one matches nothing.
    let mut seq = 0_u64;
    let mut seed_failing = false;
    loop {
        if !coordinator.seeded.load(Ordering::Acquire) {
            // Until then no job runs: a transaction an earlier process streamed before it was
            // visible would go unnoticed.
            match seed(&cfg, &coordinator).await {
                Ok(()) => coordinator.seeded.store(true, Ordering::Release),
                Err(error) => {
                    if !seed_failing {
                        tracing::warn!(error = %error, "cannot list the running transactions; no backfill runs until that works (retrying)");
                    }
                    seed_failing = true;
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(POLL) => {}
                    }
                    continue;
                }
            }
        }
        let job = match log.read().await {
            Ok(Some(job)) if job.state.is_active() => Some(job),
            Ok(_) => None,
            Err(error) => {
                tracing::debug!(error = %error, "cannot read the backfill request; retrying");
                None
            }
        };
        if let Some(job) = job {
            coordinator.begin(&run, &job);
            let outcome = tokio::select! {
                outcome = execute(&coordinator, &log, &cfg, job.clone(), &run, &mut seq) => outcome,
                () = shutdown.cancelled() => return,
            };
            coordinator.finish();
            match outcome {
                Ok(()) => {}
                Err(BackfillError::Refused(reason)) => {
                    tracing::error!(id = %job.id, reason = %reason, "backfill refused");
                    let failed = Job {
                        state: JobState::Failed,
                        reason: Some(reason),
                        ..coordinator.durable().unwrap_or(job)
                    };
                    if let Err(error) = log.write(&failed).await {
                        tracing::warn!(error = %error, "cannot record the failed backfill");
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "backfill interrupted; it resumes where it got to")
                }
            }
        }
        if !coordinator.unseen().is_empty() {
            // No chunk is in flight: a snapshot now trims the list (the next job's chunks need
            // only what it does not show), and keeps it short and its xids recent.
            match idle_snapshot(&cfg, &mut idle_client).await {
                Ok(snapshot) => coordinator.observe(&snapshot),
                Err(error) => {
                    idle_client = None;
                    tracing::debug!(error = %error, "cannot take a snapshot to trim the list of unseen transactions; retrying");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Transactions an earlier process may have streamed (and had the slot acknowledge) before
/// they were visible: under synchronous replication a commit waits, visible to nobody, for the
/// standby. Postgres does not tell such a commit from a transaction still at work
/// (`pg_xact_status` says "in progress" for both), so every transaction running now counts
/// (`xip`, and from `xmax` to the next xid) until a snapshot shows it or this process decodes
/// it. Without synchronous replication a commit is visible right after its WAL flush, long
/// before a restarted capture reads a chunk: nothing is seeded. The probe takes an xid to learn
/// the next one, and rolls back.
async fn seed(cfg: &CaptureConfig, coordinator: &Coordinator) -> Result<(), BackfillError> {
    const RUNNING: &str = "\
        WITH now AS (SELECT pg_current_snapshot() AS snap, pg_current_xact_id() AS next), \
             running AS ( \
               SELECT pg_snapshot_xip(snap) AS x FROM now \
               UNION SELECT g::text::xid8 FROM now, \
                 generate_series(pg_snapshot_xmax(snap)::text::numeric, next::text::numeric - 1) AS g) \
        SELECT (SELECT snap::text FROM now), \
               coalesce((SELECT string_agg(x::text, ',') FROM running), ''), \
               current_setting('synchronous_standby_names') <> ''";
    let mut client = slot::query_client(&cfg.target).await?;
    let tx = client.transaction().await?;
    let row = tx.query_one(RUNNING, &[]).await?;
    tx.rollback().await?;
    let (text, running, synchronous): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
    let snapshot = Snapshot::parse(&text)
        .ok_or_else(|| BackfillError::Refused(format!("unreadable pg_current_snapshot(): {text}")))?;
    let running: Vec<u32> = if synchronous {
        running
            .split(',')
            .filter_map(|x| x.parse::<u64>().ok())
            .map(|x| x as u32)
            .collect()
    } else {
        Vec::new()
    };
    if !running.is_empty() {
        tracing::info!(transactions = ?running, "synchronous replication: a backfill reads rows these running transactions changed only once they are visible");
    }
    coordinator.unseen().seed(&snapshot, running);
    Ok(())
}

async fn idle_snapshot(
    cfg: &CaptureConfig,
    client: &mut Option<tokio_postgres::Client>,
) -> Result<Snapshot, BackfillError> {
    let c = match client.take() {
        Some(c) if !c.is_closed() => c,
        _ => slot::query_client(&cfg.target).await?,
    };
    let snapshot = current_snapshot(&c).await?;
    *client = Some(c);
    Ok(snapshot)
}

async fn current_snapshot(client: &impl tokio_postgres::GenericClient) -> Result<Snapshot, BackfillError> {
    let text: String = client
        .query_one("SELECT pg_current_snapshot()::text", &[])
        .await?
        .get(0);
    Snapshot::parse(&text)
        .ok_or_else(|| BackfillError::Refused(format!("unreadable pg_current_snapshot(): {text}")))
}

async fn execute(
    coordinator: &Coordinator,
    log: &BackfillLog,
    cfg: &CaptureConfig,
    mut job: Job,
    run: &str,
    seq: &mut u64,
) -> Result<(), BackfillError> {
    let mut client = slot::query_client(&cfg.target).await?;
    let tables = if job.tables.is_empty() {
        publication_tables(&client, &cfg.publication).await?
    } else {
        job.tables.clone()
    };
    let mut plans = Vec::with_capacity(tables.len());
    for table in &tables {
        let relation = crate::capture::catalog::table_relation(&client, table).await?;
        if relation.columns.is_empty() {
            return Err(BackfillError::Refused(format!("{table} does not exist")));
        }
        let key_columns = crate::capture::catalog::primary_key_columns(&client, table, &relation).await?;
        if key_columns.is_empty() {
            return Err(BackfillError::Refused(format!(
                "{table} has no primary key: a backfill reads in primary-key order"
            )));
        }
        plans.push((table.clone(), Arc::new(relation), key_columns));
    }
    if let Some(sql) = &job.where_sql {
        // Checked once up front, so a typo fails the job with Postgres' reason.
        for (table, _, _) in &plans {
            client
                .simple_query(&format!("SELECT 1 FROM {} WHERE ({sql}) LIMIT 0", table.quoted()))
                .await
                .map_err(|e| BackfillError::Refused(format!("--where on {table}: {}", error_text(&e))))?;
        }
    }
    if job.state == JobState::Requested {
        job.state = JobState::Running;
        log.write(&job).await?;
        coordinator.begin(run, &job);
        tracing::info!(id = %job.id, tables = tables.len(), "backfill started");
    } else {
        tracing::info!(id = %job.id, table_index = job.table_index, rows = job.rows, "backfill resumed");
    }
    let mut rereads = 0_u64;
    let mut written = Instant::now();
    let mut progress = job.clone();
    while progress.table_index < plans.len() {
        let chunk_started = Instant::now();
        let (table, relation, key_columns) = &plans[progress.table_index];
        *seq += 1;
        let seq = *seq;
        coordinator.expect(seq, table);
        emit(&client, run, seq, "low").await?;
        let (rows, snapshot) = read_chunk(
            &mut client,
            table,
            relation,
            key_columns,
            &progress,
            job.chunk_rows,
        )
        .await?;
        let n = rows.len() as u64;
        let mut after = progress.clone();
        after.rows += n;
        if n < job.chunk_rows {
            after.table_index += 1;
            after.last_key = None;
        } else {
            after.last_key = rows.last().map(|r| {
                key_columns
                    .iter()
                    .map(|&c| r.get(c).cloned().flatten().unwrap_or_default())
                    .collect()
            });
        }
        coordinator.set_ready(Chunk {
            seq,
            table: table.clone(),
            relation: relation.clone(),
            key_columns: key_columns.clone(),
            key: cfg.routes.key_for(table),
            rows,
            snapshot,
            job: 0,
            after: after.clone(),
        });
        emit(&client, run, seq, "high").await?;
        let reread = coordinator.processed(seq).await;
        if let Some(xid) = reread {
            rereads += 1;
            if rereads == 1 || rereads.is_multiple_of(100) {
                tracing::info!(id = %job.id, %table, xid, rereads, "backfill chunk read again: transaction {xid} is in the stream but was not yet visible to the read (a commit waiting for a synchronous standby?)");
            }
        } else {
            rereads = 0;
            progress = after;
        }
        if written.elapsed() >= POLL {
            // `bridge backfill --restart` replaced the request: leave it to the next round.
            if log.read().await?.is_none_or(|current| current.id != job.id) {
                tracing::info!(id = %job.id, "backfill replaced by a new request");
                return Ok(());
            }
            if let Some(durable) = coordinator.durable() {
                log.write(&durable).await?;
            }
            written = Instant::now();
        }
        if reread.is_some() {
            tokio::time::sleep(REREAD_PAUSE).await;
        } else if job.rows_per_second > 0 && n > 0 {
            // A chunk's share of time counts from its start: reading and sending it are part
            // of it, so the rate is --rows-per-second, not less.
            let share = Duration::from_secs_f64(n as f64 / job.rows_per_second as f64);
            pause_until(coordinator, &client, chunk_started + share).await?;
        }
    }
    // Done once the last chunk is in Kinesis.
    loop {
        if let Some(durable) = coordinator.durable().filter(|d| d.table_index >= plans.len()) {
            let done = Job {
                state: JobState::Done,
                ..durable
            };
            log.write(&done).await?;
            tracing::info!(id = %done.id, rows = done.rows, "backfill done");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sleeps until `until`, trimming the unseen list every poll meanwhile (no chunk is in flight):
/// a slow `--rows-per-second` must not let it grow for minutes.
async fn pause_until(
    coordinator: &Coordinator,
    client: &tokio_postgres::Client,
    until: Instant,
) -> Result<(), BackfillError> {
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        tokio::time::sleep((until - now).min(POLL)).await;
        if Instant::now() < until {
            coordinator.observe(&current_snapshot(client).await?);
        }
    }
}

async fn emit(client: &tokio_postgres::Client, run: &str, seq: u64, edge: &str) -> Result<(), BackfillError> {
    client
        .execute(
            "SELECT pg_logical_emit_message(false, $1, $2)",
            &[&WATERMARK_PREFIX, &format!("{run} {seq} {edge}")],
        )
        .await?;
    Ok(())
}

/// The next chunk after `progress.last_key`, every column in its output function's text
/// (pgoutput's form), in primary-key order; and the snapshot it was read in.
async fn read_chunk(
    client: &mut tokio_postgres::Client,
    table: &TableName,
    relation: &Relation,
    key_columns: &[usize],
    progress: &Job,
    limit: u64,
) -> Result<(Vec<Vec<Option<String>>>, Snapshot), BackfillError> {
    let columns: Vec<String> = relation.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let keys: Vec<String> = key_columns
        .iter()
        .map(|&i| quote_ident(&relation.columns[i].name))
        .collect();
    let mut conditions = Vec::new();
    if let Some(last) = &progress.last_key {
        let literals: Vec<String> = last
            .iter()
            .map(|v| format!("'{}'", v.replace('\'', "''")))
            .collect();
        conditions.push(format!("({}) > ({})", keys.join(", "), literals.join(", ")));
    }
    if let Some(sql) = &progress.where_sql {
        conditions.push(format!("({sql})"));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {} LIMIT {limit}",
        columns.join(", "),
        table.quoted(),
        keys.join(", ")
    );
    // Repeatable read: the snapshot asked for first is the one the rows are read in.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let snapshot = current_snapshot(&tx).await?;
    let mut rows = Vec::new();
    for message in tx.simple_query(&sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            rows.push((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect());
        }
    }
    tx.commit().await?;
    Ok((rows, snapshot))
}

async fn publication_tables(
    client: &tokio_postgres::Client,
    publication: &str,
) -> Result<Vec<TableName>, BackfillError> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TableName {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect())
}

fn error_text(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map_or_else(|| err.to_string(), |db| db.message().to_owned())
}
