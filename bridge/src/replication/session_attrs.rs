//! libpq's `target_session_attrs` for a multi-host connection string: which of the listed
//! servers a connection may settle on. Capture needs the primary (logical slots live there), so
//! only `any`, `read-write` and `primary` are accepted.

use super::connection::ReplicationConnection;
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
}

impl SessionAttrs {
    pub fn parse(value: Option<&str>) -> Result<Self, ReplicationError> {
        match value.map(str::trim) {
            None | Some("" | "any") => Ok(Self::Any),
            Some("read-write") => Ok(Self::ReadWrite),
            Some("primary") => Ok(Self::Primary),
            Some(other @ ("read-only" | "standby" | "prefer-standby")) => {
                Err(ReplicationError::Config(format!(
                    "target_session_attrs={other} is not supported: the bridge reads from the primary \
                 (use read-write or primary)"
                )))
            }
            Some(other) => Err(ReplicationError::Config(format!(
                "target_session_attrs=`{other}` is not one of any, read-write, primary"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::ReadWrite => "read-write",
            Self::Primary => "primary",
        }
    }

    /// Whether the server behind `conn` is one this connection may settle on.
    pub async fn accepts(self, conn: &mut ReplicationConnection) -> Result<bool, ReplicationError> {
        let (sql, wanted) = match self {
            Self::Any => return Ok(true),
            Self::ReadWrite => ("SHOW transaction_read_only", "off"),
            Self::Primary => ("SELECT pg_is_in_recovery()", "f"),
        };
        let rows = conn.simple_query(sql).await?;
        Ok(rows
            .first()
            .and_then(|row| row.first())
            .and_then(Option::as_deref)
            == Some(wanted))
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
        let standby = SessionAttrs::parse(Some("standby")).unwrap_err().to_string();
        assert!(standby.contains("reads from the primary"), "{standby}");
        assert!(SessionAttrs::parse(Some("sometimes")).is_err());
    }
}
