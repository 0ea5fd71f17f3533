//! The delivery record: how far delivery got, kept outside Postgres so that it survives the
//! slot (and the server) it was read from. Outbox recovery (`resync`) starts re-publishing from
//! its commit time minus `--resync-margin`.
//!
//! What is recorded is never ahead of the truth: the position is one capture acknowledged to
//! the slot (so Kinesis holds everything before it), and its time is a lower bound of the
//! commit time of anything after it (see `Progress`). A record written late only makes the
//! next resync re-publish more. It is written at most every `EVERY`, and once more on shutdown.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::slot_marker::{self, MarkerError};
use crate::lsn::Lsn;

/// How often the record is rewritten while the position moves.
const EVERY: Duration = Duration::from_secs(5);

/// Microseconds from the Unix epoch to Postgres' epoch (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Which database a position belongs to: LSNs of another system (a restore, a new cluster) or
/// of another timeline (a promoted standby) do not compare with ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `IDENTIFY_SYSTEM`'s systemid: shared by a primary and its physical standbys.
    pub system: String,
    pub timeline: u32,
}

/// How far delivery got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub lsn: Lsn,
    /// Server time (µs since 2000-01-01), no later than the commit of anything after `lsn`.
    pub commit_time: i64,
    pub identity: Identity,
}

impl Delivered {
    /// The tag value: `lsn=0/16B3748 time=<µs since the Unix epoch> system=<id> timeline=<n>`.
    pub fn to_tag(&self) -> String {
        format!(
            "lsn={} time={} system={} timeline={}",
            self.lsn,
            self.commit_time + PG_EPOCH_MICROS,
            self.identity.system,
            self.identity.timeline
        )
    }

    pub fn from_tag(value: &str) -> Option<Self> {
        let field = |name: &str| super::slot_marker::tag_field(value, name);
        Some(Self {
            lsn: field("lsn")?.parse().ok()?,
            commit_time: field("time")?.parse::<i64>().ok()? - PG_EPOCH_MICROS,
            identity: Identity {
                system: field("system")?.to_owned(),
                timeline: field("timeline")?.parse().ok()?,
            },
        })
    }

    /// The commit time on the wall clock.
    pub fn committed_at(&self) -> DateTime<Utc> {
        pg_time(self.commit_time)
    }
}

/// Server time (µs since 2000-01-01) as a point in time.
pub fn pg_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros + PG_EPOCH_MICROS).unwrap_or_default()
}

/// A point in time as server time (µs since 2000-01-01).
pub fn to_pg_time(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros() - PG_EPOCH_MICROS
}

/// The last resync, as `bridge status` shows it; `running` until every re-published row is
/// in Kinesis, so a resync cut short is done again on the next start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResyncState {
    pub running: bool,
    /// When it started (µs since the Unix epoch).
    pub started: i64,
    /// Rows whose `occurred_at` is at or after this (µs since the Unix epoch) were re-published.
    pub window_from: i64,
    pub rows: u64,
    /// The new slot's consistent point (once known).
    pub lsn: Option<Lsn>,
    /// Why: `missing`, `lost`, `invalidated`, `other-system`, `unfinished`.
    pub reason: String,
    /// Server time (µs since 2000-01-01) just before the new slot was made: the delivery
    /// record's time once the resync is done.
    pub since: Option<i64>,
    /// How far the re-publishing got: Kinesis holds every row up to here.
    pub cursor: Option<ResyncCursor>,
}

/// A point in the resync's read order `(occurred_at, ctid)`: every row before it, and the row
/// at it, is in Kinesis. `ctid` means something only while the table's file is the same one
/// (`VACUUM FULL`, `CLUSTER` rewrite it), so the file is kept too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResyncCursor {
    /// The row's `occurred_at`, µs since the Unix epoch.
    pub occurred_at: i64,
    /// The row's `ctid` (block, offset).
    pub ctid: (u32, u16),
    /// `pg_relation_filenode` of the outbox when the row was read.
    pub filenode: u32,
}

impl ResyncCursor {
    fn to_tag(self) -> String {
        format!(
            "at={} ctid={}/{} file={}",
            self.occurred_at, self.ctid.0, self.ctid.1, self.filenode
        )
    }

    fn from_tag(value: &str) -> Option<Self> {
        let field = |name: &str| super::slot_marker::tag_field(value, name);
        let (block, offset) = field("ctid")?.split_once('/')?;
        Some(Self {
            occurred_at: field("at")?.parse().ok()?,
            ctid: (block.parse().ok()?, offset.parse().ok()?),
            filenode: field("file")?.parse().ok()?,
        })
    }

    /// `ctid`'s text form, `(block,offset)`, as Postgres reads it.
    pub fn tid(&self) -> String {
        format!("({},{})", self.ctid.0, self.ctid.1)
    }

    /// Reads `(block,offset)`.
    pub fn parse_tid(text: &str) -> Option<(u32, u16)> {
        let (block, offset) = text.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
        Some((block.parse().ok()?, offset.parse().ok()?))
    }
}

impl ResyncState {
    pub fn to_tag(&self) -> String {
        let mut tag = format!(
            "state={} started={} from={} rows={} lsn={} reason={}",
            if self.running { "running" } else { "done" },
            self.started,
            self.window_from,
            self.rows,
            self.lsn.map_or_else(|| "none".to_owned(), |l| l.to_string()),
            self.reason
        );
        if let Some(since) = self.since {
            tag.push_str(&format!(" since={since}"));
        }
        if let Some(cursor) = self.cursor {
            tag.push(' ');
            tag.push_str(&cursor.to_tag());
        }
        tag
    }

    pub fn from_tag(value: &str) -> Option<Self> {
        let field = |name: &str| super::slot_marker::tag_field(value, name);
        Some(Self {
            running: field("state")? == "running",
            started: field("started")?.parse().ok()?,
            window_from: field("from")?.parse().ok()?,
            rows: field("rows")?.parse().ok()?,
            lsn: field("lsn").and_then(|l| l.parse().ok()),
            reason: field("reason").unwrap_or("unknown").to_owned(),
            since: field("since").and_then(|s| s.parse().ok()),
            cursor: ResyncCursor::from_tag(value),
        })
    }
}

/// Where the records live: tags on the Kinesis stream (see `slot_marker`).
#[derive(Clone, Debug)]
pub struct DeliveryLog {
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    slot: String,
}

impl DeliveryLog {
    pub fn new(kinesis: aws_sdk_kinesis::Client, stream: &str, slot: &str) -> Self {
        Self {
            kinesis,
            stream: stream.into(),
            slot: slot.into(),
        }
    }

    pub fn kinesis(&self) -> &aws_sdk_kinesis::Client {
        &self.kinesis
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    fn delivered_key(&self) -> String {
        format!("outbox-bridge.delivered.{}", self.slot)
    }

    fn resync_key(&self) -> String {
        format!("outbox-bridge.resync.{}", self.slot)
    }

    pub async fn read(&self) -> Result<Option<Delivered>, MarkerError> {
        let value = slot_marker::read_tag(&self.kinesis, &self.stream, &self.delivered_key()).await?;
        Ok(value.as_deref().and_then(Delivered::from_tag))
    }

    pub async fn write(&self, delivered: &Delivered) -> Result<(), MarkerError> {
        slot_marker::write_tag(
            &self.kinesis,
            &self.stream,
            &self.delivered_key(),
            &delivered.to_tag(),
        )
        .await
    }

    pub async fn read_resync(&self) -> Result<Option<ResyncState>, MarkerError> {
        let value = slot_marker::read_tag(&self.kinesis, &self.stream, &self.resync_key()).await?;
        Ok(value.as_deref().and_then(ResyncState::from_tag))
    }

    pub async fn write_resync(&self, state: &ResyncState) -> Result<(), MarkerError> {
        slot_marker::write_tag(&self.kinesis, &self.stream, &self.resync_key(), &state.to_tag()).await
    }
}

/// What the streaming loop reports: the acknowledged progress and the server it belongs to.
pub struct Reports {
    pub progress: watch::Sender<Progress>,
    pub identity: watch::Sender<Option<Identity>>,
}

impl Reports {
    pub fn new() -> Self {
        Self {
            progress: watch::Sender::new(Progress::default()),
            identity: watch::Sender::new(None),
        }
    }

    /// The latest delivery position, once the server it belongs to and a time are known.
    pub fn current(&self) -> Option<Delivered> {
        let identity = self.identity.borrow().clone()?;
        let progress = *self.progress.borrow();
        (progress.commit_time() != 0).then_some(Delivered {
            lsn: progress.flushed(),
            commit_time: progress.commit_time(),
            identity,
        })
    }
}

impl Default for Reports {
    fn default() -> Self {
        Self::new()
    }
}

/// Rewrites the record while the position moves, at most every `EVERY`, until shutdown. A
/// failed write is retried at the next change: a stale record costs duplicates, not events.
pub async fn record(log: DeliveryLog, reports: std::sync::Arc<Reports>, shutdown: CancellationToken) {
    let mut changes = reports.progress.subscribe();
    let mut written: Option<Delivered> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let Some(current) = reports.current() else {
            continue;
        };
        if written.as_ref() == Some(&current) {
            continue;
        }
        match log.write(&current).await {
            Ok(()) => written = Some(current),
            Err(error) => tracing::warn!(error = %error, "cannot write the delivery record; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let d = Delivered {
            lsn: Lsn(0x16B_3748),
            commit_time: 817_000_000_123_456,
            identity: Identity {
                system: "7312345678901234567".into(),
                timeline: 2,
            },
        };
        let tag = d.to_tag();
        assert!(
            !tag.contains(':'),
            "kinesis tag values may not hold a colon: {tag}"
        );
        assert_eq!(Delivered::from_tag(&tag), Some(d.clone()));
        assert_eq!(to_pg_time(d.committed_at()), d.commit_time);
        let r = ResyncState {
            running: true,
            started: 1,
            window_from: 2,
            rows: 3,
            lsn: None,
            reason: "missing".into(),
            since: None,
            cursor: None,
        };
        assert_eq!(ResyncState::from_tag(&r.to_tag()), Some(r.clone()));
        let midway = ResyncState {
            lsn: Some(Lsn(0x16B_3748)),
            since: Some(817_000_000_123_456),
            cursor: Some(ResyncCursor {
                occurred_at: 1_765_000_000_123_456,
                ctid: (4_000_000_000, 65_000),
                filenode: 16_385,
            }),
            ..r.clone()
        };
        let tag = midway.to_tag();
        assert!(!tag.contains(':') && !tag.contains(','), "{tag}");
        assert_eq!(ResyncState::from_tag(&tag), Some(midway));
        assert_eq!(ResyncCursor::parse_tid("(12,7)"), Some((12, 7)));
        assert_eq!(ResyncCursor::parse_tid("12,7"), None);
        let done = ResyncState {
            running: false,
            lsn: Some(Lsn(5)),
            ..r
        };
        assert_eq!(ResyncState::from_tag(&done.to_tag()), Some(done));
        assert_eq!(Delivered::from_tag("created at 0/1"), None);
    }
}
