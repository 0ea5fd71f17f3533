//! Durations as operators write them: `250ms`, `90s`, `15m`, `36h`, `7d`, `2w` — one syntax for
//! every flag of `bridge`, `shipping` and `legacy-sim`.
//!
//! Our own, not a crate's: the syntax is six units and a whole number, and the flags need what a
//! general parser does not give — a bare number read in the unit of the flag's old spelling
//! (`--stall-timeout-secs 120`, `--batch-linger-ms 10`), bounds, and whole seconds or days where
//! AWS takes nothing finer.

use std::time::Duration;

/// Why a duration was not understood (the text is quoted in each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}`: give a unit (ms, s, m, h, d or w), e.g. 30s")]
    NoUnit(String),
    #[error("`{0}`: expected a whole number before the unit, e.g. 30s")]
    NoNumber(String),
    #[error("`{text}`: unknown unit `{unit}` (ms, s, m, h, d or w)")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is too long")]
    TooLong(String),
    #[error("`{text}`: must be between {min} and {max}")]
    OutOfRange { text: String, min: String, max: String },
    #[error("`{text}`: must be a whole number of {unit}")]
    NotWhole { text: String, unit: &'static str },
}

/// A whole number and a unit (ms, s, m, h, d or w).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| DurationError::NoUnit(text.to_owned()))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| DurationError::NoNumber(text.to_owned()))?;
    if unit == "ms" {
        return Ok(Duration::from_millis(n));
    }
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: text.to_owned(),
                unit: unit.to_owned(),
            })
        }
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| DurationError::TooLong(text.to_owned()))
}

/// The unit a bare number is read in: the one of the flag's old spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bare {
    Millis,
    Seconds,
    Days,
}

impl Bare {
    fn of(self, n: u64) -> Option<Duration> {
        match self {
            Bare::Millis => Some(Duration::from_millis(n)),
            Bare::Seconds => Some(Duration::from_secs(n)),
            Bare::Days => n.checked_mul(86_400).map(Duration::from_secs),
        }
    }
}

/// What a duration flag accepts: the syntax of [`parse`], or a bare number in the unit of its
/// old spelling; between `min` and `max`; optionally a whole number of `whole` (AWS takes
/// seconds or days only, for some settings).
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    pub bare: Bare,
    pub min: Duration,
    pub max: Duration,
    pub whole: Option<Bare>,
}

impl Flag {
    pub const fn new(bare: Bare, min: Duration, max: Duration) -> Self {
        Self {
            bare,
            min,
            max,
            whole: None,
        }
    }

    /// Only whole seconds (or days): what the AWS setting behind the flag takes.
    pub const fn whole(mut self, unit: Bare) -> Self {
        self.whole = Some(unit);
        self
    }

    pub fn parse(&self, text: &str) -> Result<Duration, DurationError> {
        let trimmed = text.trim();
        let value = match trimmed.parse::<u64>() {
            Ok(n) => self
                .bare
                .of(n)
                .ok_or_else(|| DurationError::TooLong(trimmed.to_owned()))?,
            Err(_) => parse(trimmed)?,
        };
        if value < self.min || value > self.max {
            return Err(DurationError::OutOfRange {
                text: trimmed.to_owned(),
                min: format(self.min),
                max: format(self.max),
            });
        }
        let whole = match self.whole {
            Some(Bare::Seconds) => value.subsec_nanos() == 0,
            Some(Bare::Days) => value.subsec_nanos() == 0 && value.as_secs().is_multiple_of(86_400),
            Some(Bare::Millis) | None => true,
        };
        if !whole {
            let unit = if self.whole == Some(Bare::Days) {
                "days"
            } else {
                "seconds"
            };
            return Err(DurationError::NotWhole {
                text: trimmed.to_owned(),
                unit,
            });
        }
        Ok(value)
    }

    /// The clap value parser of this flag.
    pub fn parser(self) -> impl Fn(&str) -> Result<Duration, DurationError> + Clone + Send + Sync + 'static {
        move |text: &str| self.parse(text)
    }
}

/// `dlq list|redrive --hold` in both binaries: an SQS visibility timeout, 1 s to 12 h.
pub const DLQ_HOLD: Flag =
    Flag::new(Bare::Seconds, Duration::from_secs(1), Duration::from_secs(43_200)).whole(Bare::Seconds);

/// A duration in the largest unit that writes it whole: `1h`, `90s`, `250ms`, `0s`.
pub fn format(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    for (unit, size) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s != 0 && s.is_multiple_of(size) {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse("7d"), Ok(S(7 * 86_400)));
        assert_eq!(parse("90m"), Ok(S(5_400)));
        assert_eq!(parse("1h"), Ok(S(3_600)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2w"), Ok(S(14 * 86_400)));
        assert!(parse("7").unwrap_err().to_string().contains("unit"));
        assert!(parse("7y").unwrap_err().to_string().contains("unknown unit"));
        assert!(parse("d").is_err());
        assert!(parse("99999999999999999w")
            .unwrap_err()
            .to_string()
            .contains("too long"));
    }

    #[test]
    fn a_bare_number_is_read_in_the_old_spellings_unit() {
        let secs = Flag::new(Bare::Seconds, S(1), S(3600));
        assert_eq!(secs.parse("120"), Ok(S(120)));
        assert_eq!(secs.parse("2m"), Ok(S(120)));
        let millis = Flag::new(Bare::Millis, Duration::ZERO, S(60));
        assert_eq!(millis.parse("10"), Ok(Duration::from_millis(10)));
        assert_eq!(millis.parse("1s"), Ok(S(1)));
        let days = Flag::new(Bare::Days, S(86_400), S(36_500 * 86_400));
        assert_eq!(days.parse("14"), Ok(S(14 * 86_400)));
        assert_eq!(days.parse("2w"), Ok(S(14 * 86_400)));
    }

    #[test]
    fn bounds_and_whole_units_are_named_in_the_error() {
        let lease = Flag::new(Bare::Seconds, S(2), S(3600));
        let err = lease.parse("1s").unwrap_err().to_string();
        assert!(err.contains("between 2s and 1h"), "{err}");
        assert!(lease.parse("2h").is_err());
        let visibility = Flag::new(Bare::Seconds, S(1), S(43_200)).whole(Bare::Seconds);
        let err = visibility.parse("1500ms").unwrap_err().to_string();
        assert!(err.contains("whole number of seconds"), "{err}");
        assert_eq!(visibility.parse("12h"), Ok(S(43_200)));
        let retention = Flag::new(Bare::Days, Duration::ZERO, S(36_500 * 86_400)).whole(Bare::Days);
        assert!(retention
            .parse("36h")
            .unwrap_err()
            .to_string()
            .contains("whole number of days"));
        assert_eq!(retention.parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn formatting_picks_the_largest_whole_unit() {
        assert_eq!(format(S(3600)), "1h");
        assert_eq!(format(S(90)), "90s");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(S(14 * 86_400)), "2w");
        assert_eq!(format(S(45 * 86_400)), "45d");
    }
}
