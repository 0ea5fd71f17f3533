//! Durations as operators write them: `90s`, `15m`, `36h`, `7d`, `2w`.

use std::time::Duration;

/// Why a duration was not understood (the text is quoted in each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}`: give a unit (s, m, h, d or w), e.g. 7d")]
    NoUnit(String),
    #[error("`{0}`: expected a whole number before the unit, e.g. 7d")]
    NoNumber(String),
    #[error("`{text}`: unknown unit `{unit}` (s, m, h, d or w)")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is too long")]
    TooLong(String),
}

/// A whole number and a unit (s, m, h, d or w).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| DurationError::NoUnit(text.to_owned()))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| DurationError::NoNumber(text.to_owned()))?;
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
