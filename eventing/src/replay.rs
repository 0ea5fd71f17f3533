//! Replay for one consumer, the AWS-native way: an EventBridge replay from the bus's archive to
//! one rule only (`Destination.FilterArns`), so a consumer that joins late (or lost its state)
//! catches up and no other consumer sees the events again. `bridge replay` and `shipping
//! rebuild` both use it.
//!
//! EventBridge writes an event to the archive some time after the bus took it (AWS advises
//! waiting ten minutes before a replay): a replay that reaches up to now may miss the newest
//! events. [`replay_settled`] replays again, once the archive has caught up, the stretch that may
//! not have been archived when the first replay read it.

use std::time::Duration;

use aws_sdk_eventbridge::types::{ReplayDestination, ReplayState};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::DateTime as AwsTime;
use chrono::{DateTime, Utc};

/// The archive `bridge setup` makes for a bus.
pub fn archive_name(bus: &str) -> String {
    format!("{bus}-archive")
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{step} failed ({code})")]
    Call {
        step: &'static str,
        code: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the replay {name} ended {state}: {reason}")]
    Ended {
        name: String,
        state: String,
        reason: String,
    },
}

fn call<E>(step: &'static str) -> impl FnOnce(E) -> ReplayError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |err| ReplayError::Call {
        step,
        code: err.code().unwrap_or("unknown").to_owned(),
        source: Box::new(err),
    }
}

/// What to replay: the archive's events of [since, until] to one rule of the bus.
#[derive(Clone, Debug)]
pub struct Request {
    pub bus: String,
    pub archive: String,
    pub rule: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// The state [`replay_settled`] reports while it waits for the archive to catch up (with the
/// time it waits for).
pub const WAITING_FOR_ARCHIVE: &str = "WAITING_FOR_ARCHIVE";

/// [`replay`], then — when `until` is within `lag` of the first replay's start, so that events
/// of `[start - lag, until]` may not have been archived yet — once `until + lag` has passed, that
/// stretch again. Its events may be replayed twice (consumers absorb duplicates); none that
/// reached the bus by `until` is missed. Returns the replays' names.
pub async fn replay_settled(
    client: &aws_sdk_eventbridge::Client,
    req: &Request,
    lag: Duration,
    mut progress: impl FnMut(&str, Option<DateTime<Utc>>),
) -> Result<Vec<String>, ReplayError> {
    let lag = chrono::Duration::from_std(lag).unwrap_or(chrono::Duration::MAX);
    let started = Utc::now();
    let mut names = vec![replay_named(client, req, "", &mut progress).await?];
    let Some(tail) = unsettled_tail(req, started, lag) else {
        return Ok(names);
    };
    let settled_at = req
        .until
        .checked_add_signed(lag)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    progress(WAITING_FOR_ARCHIVE, Some(settled_at));
    if let Ok(wait) = (settled_at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    names.push(replay_named(client, &tail, "-tail", &mut progress).await?);
    Ok(names)
}

/// What of `req` a replay started at `started` may have missed, for an archive `lag` behind the
/// bus: `[max(since, started - lag), until]`, or nothing when `until` was archived by then.
fn unsettled_tail(req: &Request, started: DateTime<Utc>, lag: chrono::Duration) -> Option<Request> {
    let archived_by = started
        .checked_sub_signed(lag)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    (req.until > archived_by).then(|| Request {
        since: req.since.max(archived_by),
        ..req.clone()
    })
}

/// Starts the replay and follows it to the end; `progress` hears each state and how far it got.
pub async fn replay(
    client: &aws_sdk_eventbridge::Client,
    req: &Request,
    mut progress: impl FnMut(&str, Option<DateTime<Utc>>),
) -> Result<String, ReplayError> {
    replay_named(client, req, "", &mut progress).await
}

/// [`replay`], its name ending in `suffix` (replays of one rule within a second need two names).
async fn replay_named(
    client: &aws_sdk_eventbridge::Client,
    req: &Request,
    suffix: &str,
    mut progress: impl FnMut(&str, Option<DateTime<Utc>>),
) -> Result<String, ReplayError> {
    let bus_arn = client
        .describe_event_bus()
        .name(&req.bus)
        .send()
        .await
        .map_err(call("DescribeEventBus"))?
        .arn()
        .unwrap_or_default()
        .to_owned();
    let archive_arn = client
        .describe_archive()
        .archive_name(&req.archive)
        .send()
        .await
        .map_err(call("DescribeArchive (run `bridge setup` to create the archive)"))?
        .archive_arn()
        .unwrap_or_default()
        .to_owned();
    let rule_arn = client
        .describe_rule()
        .name(&req.rule)
        .event_bus_name(&req.bus)
        .send()
        .await
        .map_err(call("DescribeRule"))?
        .arn()
        .unwrap_or_default()
        .to_owned();
    // Names: letters, digits, `.-_`, at most 64.
    let rule: String = req
        .rule
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let name = format!("{rule}-{}{suffix}", Utc::now().format("%Y%m%d%H%M%S"));
    let destination = ReplayDestination::builder()
        .arn(bus_arn)
        .filter_arns(rule_arn)
        .build()
        .map_err(|e| ReplayError::Call {
            step: "StartReplay",
            code: "InvalidRequest".into(),
            source: Box::new(e),
        })?;
    client
        .start_replay()
        .replay_name(&name)
        .event_source_arn(archive_arn)
        .event_start_time(AwsTime::from_millis(req.since.timestamp_millis()))
        .event_end_time(AwsTime::from_millis(req.until.timestamp_millis()))
        .destination(destination)
        .send()
        .await
        .map_err(call("StartReplay"))?;
    loop {
        let out = client
            .describe_replay()
            .replay_name(&name)
            .send()
            .await
            .map_err(call("DescribeReplay"))?;
        let state = out.state().cloned().unwrap_or(ReplayState::Starting);
        let last = out
            .event_last_replayed_time()
            .and_then(|t| DateTime::from_timestamp_millis(t.to_millis().ok()?));
        progress(state.as_str(), last);
        match state {
            ReplayState::Completed => return Ok(name),
            ReplayState::Failed | ReplayState::Cancelled => {
                return Err(ReplayError::Ended {
                    name,
                    state: state.as_str().to_owned(),
                    reason: out.state_reason().unwrap_or("no reason given").to_owned(),
                })
            }
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// Why a time was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Neither RFC 3339 nor a duration (the duration's own complaint, with the alternative).
    #[error("{0}; or an RFC 3339 time (2026-11-29T10:00:00Z)")]
    NotATime(crate::duration::DurationError),
    #[error("`{0}` is too long ago")]
    TooLong(String),
}

/// `2026-11-29T10:00:00Z`, or a duration before now: `90m`, `1h`, `7d`.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, TimeError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = crate::duration::parse(text).map_err(TimeError::NotATime)?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| TimeError::TooLong(text.to_owned()))?;
    Ok(Utc::now() - ago)
}

#[cfg(test)]
mod tests {
    use super::{parse_time, unsettled_tail, Request};
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn the_tail_replayed_again_is_what_the_archive_may_not_have_had() {
        let at = |m: u32| Utc.with_ymd_and_hms(2026, 11, 29, 10, m, 0).unwrap();
        let req = Request {
            bus: "b".into(),
            archive: "a".into(),
            rule: "r".into(),
            since: at(0),
            until: at(30),
        };
        let lag = Duration::minutes(10);
        // Started right at `until`: the last ten minutes again.
        let tail = unsettled_tail(&req, at(30), lag).unwrap();
        assert_eq!((tail.since, tail.until), (at(20), at(30)));
        // A window shorter than the lag: all of it again.
        let tail = unsettled_tail(&req, at(5), lag).unwrap();
        assert_eq!((tail.since, tail.until), (at(0), at(30)));
        // `until` long archived when the replay started: nothing more.
        assert!(unsettled_tail(&req, at(45), lag).is_none());
        assert!(unsettled_tail(&req, at(30), Duration::zero()).is_none());
    }

    #[test]
    fn times_read_as_operators_write_them() {
        let at = parse_time("2026-11-29T10:00:00Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-29T10:00:00+00:00");
        let ago = chrono::Utc::now() - parse_time("1h").unwrap();
        assert!((ago.num_seconds() - 3600).abs() <= 2);
        assert!(parse_time("1y").is_err());
        assert!(parse_time("2w").is_ok());
        assert!(parse_time("yesterday").is_err());
    }
}
