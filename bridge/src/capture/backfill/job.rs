//! A backfill request and how far it got, kept in a tag on the stream.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Requested,
    Running,
    Done,
    Failed,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, Self::Requested | Self::Running)
    }
}

/// A backfill request and how far it got (what is durable in Kinesis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    /// Empty: every table of the publication (`--all`).
    pub tables: Vec<TableName>,
    pub where_sql: Option<String>,
    pub chunk_rows: u64,
    /// 0: as fast as capture takes them.
    pub rows_per_second: u64,
    pub state: JobState,
    /// The table being read (index into the resolved list).
    pub table_index: usize,
    /// The primary key of the last row sent of that table.
    pub last_key: Option<Vec<String>>,
    pub rows: u64,
    /// Why it failed.
    pub reason: Option<String>,
}

impl Job {
    pub fn to_tag(&self) -> String {
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join("+")
            }
        };
        format!(
            "id={} state={} tables={} where={} chunk={} rps={} at={} last={} rows={} reason={}",
            enc(&self.id),
            self.state.as_str(),
            if self.tables.is_empty() {
                "all".to_owned()
            } else {
                list(self.tables.iter().map(|t| enc(&t.to_string())).collect())
            },
            self.where_sql.as_deref().map_or_else(|| "-".to_owned(), enc),
            self.chunk_rows,
            self.rows_per_second,
            self.table_index,
            list(self.last_key.iter().flatten().map(|k| enc(k)).collect()),
            self.rows,
            self.reason.as_deref().map_or_else(|| "-".to_owned(), enc),
        )
    }

    pub fn from_tag(value: &str) -> Option<Self> {
        let field = |name: &str| super::slot_marker::tag_field(value, name);
        let opt = |text: &str| (text != "-").then(|| dec(text)).flatten();
        let tables = match field("tables")? {
            "all" => Vec::new(),
            list => list
                .split('+')
                .map(|t| dec(t)?.parse().ok())
                .collect::<Option<Vec<TableName>>>()?,
        };
        let last = field("last")?;
        Some(Self {
            id: dec(field("id")?)?,
            tables,
            where_sql: opt(field("where")?),
            chunk_rows: field("chunk")?.parse().ok()?,
            rows_per_second: field("rps")?.parse().ok()?,
            state: match field("state")? {
                "requested" => JobState::Requested,
                "running" => JobState::Running,
                "done" => JobState::Done,
                _ => JobState::Failed,
            },
            table_index: field("at")?.parse().ok()?,
            last_key: (last != "-")
                .then(|| last.split('+').map(dec).collect::<Option<Vec<_>>>())
                .flatten(),
            rows: field("rows")?.parse().ok()?,
            reason: field("reason").and_then(opt),
        })
    }
}

/// Where the job lives: a tag on the stream.
#[derive(Clone, Debug)]
pub struct BackfillLog {
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    key: String,
}

impl BackfillLog {
    pub fn new(kinesis: aws_sdk_kinesis::Client, stream: &str, slot: &str) -> Self {
        Self {
            kinesis,
            stream: stream.into(),
            key: format!("outbox-bridge.backfill.{slot}"),
        }
    }

    pub async fn read(&self) -> Result<Option<Job>, MarkerError> {
        let value = slot_marker::read_tag(&self.kinesis, &self.stream, &self.key).await?;
        Ok(value.as_deref().and_then(Job::from_tag))
    }

    pub async fn write(&self, job: &Job) -> Result<(), MarkerError> {
        slot_marker::write_tag(&self.kinesis, &self.stream, &self.key, &job.to_tag()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_read_back_as_written_in_tag_characters() {
        let job = Job {
            id: "a1b2".into(),
            tables: vec![
                "public.customers".parse().unwrap(),
                "public.orders".parse().unwrap(),
            ],
            where_sql: Some("created_at >= '2026-11-01' AND id % 2 = 0".into()),
            chunk_rows: 500,
            rows_per_second: 1000,
            state: JobState::Running,
            table_index: 1,
            last_key: Some(vec!["it's+a key".into(), "7".into()]),
            rows: 1234,
            reason: None,
        };
        let tag = job.to_tag();
        assert!(
            tag.chars()
                .all(|c| c.is_ascii_alphanumeric() || " _./=+-%@".contains(c)),
            "{tag}"
        );
        assert_eq!(Job::from_tag(&tag), Some(job.clone()));
        let all = Job {
            tables: Vec::new(),
            where_sql: None,
            last_key: None,
            state: JobState::Failed,
            reason: Some("no primary key: x".into()),
            ..job
        };
        assert_eq!(Job::from_tag(&all.to_tag()), Some(all));
    }
}
