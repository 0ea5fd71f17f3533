//! What can go wrong on the replication connection, and whether trying again can help.

use std::io;

/// Errors of the replication connection. [`ReplicationError::is_retryable`] is the one place
/// that decides whether reconnecting can help.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot connect to postgres at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("connection to postgres lost")]
    Io(#[from] io::Error),
    #[error("no message from postgres for {secs} s: the connection is taken for dead (a network that drops packets without closing it)")]
    Silent { secs: u64 },
    #[error("postgres said: {message} (SQLSTATE {code}){}", hint.as_deref().map(|h| format!("; hint: {h}")).unwrap_or_default())]
    Server {
        code: String,
        message: String,
        hint: Option<String>,
    },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("unexpected replication protocol message: {0}")]
    Protocol(String),
    #[error("cannot decode pgoutput message: {0}")]
    Decode(String),
    #[error("the postgres URL is not usable: {0}")]
    Config(String),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Privilege(String),
    /// Every listed host was reached, none suits `target_session_attrs` (mid-failover, no
    /// primary yet): worth another round.
    #[error("no listed host suits target_session_attrs: {0}")]
    NoSuitableHost(String),
}

impl ReplicationError {
    /// Connection trouble and server shutdowns are worth a reconnect; bad credentials, missing
    /// objects, lost WAL and protocol confusion are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Io(_) | Self::Silent { .. } | Self::NoSuitableHost(_) => true,
            Self::Server { code, .. } => retryable_sqlstate(code),
            // A refused certificate will be refused again: that needs a person, not a retry.
            Self::Auth(_)
            | Self::Protocol(_)
            | Self::Decode(_)
            | Self::Config(_)
            | Self::Tls(_)
            | Self::Privilege(_) => false,
        }
    }

    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Whether a Postgres error (by SQLSTATE) is worth a reconnect: the one list both the
/// replication and the query connection use.
pub fn retryable_sqlstate(code: &str) -> bool {
    // object_in_use: the slot is still held by a previous walsender (or a twin bridge).
    code == "55006"
        // admin_shutdown, crash_shutdown, cannot_connect_now: a restarting server.
        || matches!(code, "57P01" | "57P02" | "57P03")
        // too_many_connections, and the connection_exception class.
        || code == "53300"
        || code.starts_with("08")
}
