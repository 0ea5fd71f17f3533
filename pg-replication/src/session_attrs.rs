//! libpq's `target_session_attrs` for a multi-host connection string: which of the listed
//! servers a connection may settle on. Capture's slot lives on one server: the primary
//! (`read-write`, `primary`) or, on 16+, a hot standby (`standby`); `prefer-standby` and
//! `read-only` could land on either, so they are refused.

use super::error::ReplicationError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionAttrs {
    /// The first server that accepts the connection.
    #[default]
    Any,
    /// One that accepts writes (`transaction_read_only` is off).
    ReadWrite,
    /// One that is not in recovery.
    Primary,
    /// One in recovery: a hot standby (logical decoding there needs 16+).
    Standby,
}

impl SessionAttrs {
    pub fn parse(value: Option<&str>) -> Result<Self, ReplicationError> {
        match value.map(str::trim) {
            None | Some("" | "any") => Ok(Self::Any),
            Some("read-write") => Ok(Self::ReadWrite),
            Some("primary") => Ok(Self::Primary),
            Some("standby") => Ok(Self::Standby),
            Some(other @ ("read-only" | "prefer-standby")) => Err(ReplicationError::Config(format!(
                "target_session_attrs={other} is not supported: capture's slot lives on one server \
                 (use primary, or standby to read from a hot standby on PostgreSQL 16+)"
            ))),
            Some(other) => Err(ReplicationError::Config(format!(
                "target_session_attrs=`{other}` is not one of any, read-write, primary, standby"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::ReadWrite => "read-write",
            Self::Primary => "primary",
            Self::Standby => "standby",
        }
    }

    /// The query whose one value tells whether a server suits, and the value that does;
    /// `None`: every server does.
    pub fn check(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Any => None,
            Self::ReadWrite => Some(("SHOW transaction_read_only", "off")),
            Self::Primary => Some(("SELECT pg_is_in_recovery()", "f")),
            Self::Standby => Some(("SELECT pg_is_in_recovery()", "t")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_libpq_accepts_for_a_primary() {
        assert_eq!(SessionAttrs::parse(None).ok(), Some(SessionAttrs::Any));
        assert_eq!(
            SessionAttrs::parse(Some("read-write")).ok(),
            Some(SessionAttrs::ReadWrite)
        );
        assert_eq!(
            SessionAttrs::parse(Some("primary")).ok(),
            Some(SessionAttrs::Primary)
        );
        assert_eq!(
            SessionAttrs::parse(Some("standby")).ok(),
            Some(SessionAttrs::Standby)
        );
        let either = SessionAttrs::parse(Some("prefer-standby"))
            .unwrap_err()
            .to_string();
        assert!(either.contains("lives on one server"), "{either}");
        assert!(SessionAttrs::parse(Some("sometimes")).is_err());
    }
}
