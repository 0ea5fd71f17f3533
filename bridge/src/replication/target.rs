//! Where the bridge's Postgres is and who it connects as, parsed from `DATABASE_URL`.
//!
//! The password lives here and nowhere else; `Debug` and `Display` leave it out so it cannot
//! reach a log line or an error message.

use std::fmt;
use std::str::FromStr;

use tokio_postgres::config::{Host, SslMode};

use super::error::ReplicationError;

#[derive(Clone)]
pub struct PgTarget {
    /// For ordinary (non-replication) connections through `tokio-postgres`.
    pub config: tokio_postgres::Config,
    pub user: String,
    pub password: Option<Vec<u8>>,
    pub dbname: String,
    pub application_name: String,
    host: Host,
    port: u16,
}

impl PgTarget {
    pub fn from_url(url: &str, application_name: &str) -> Result<Self, ReplicationError> {
        // tokio-postgres' own message can quote the URL; never pass it on.
        let mut config = tokio_postgres::Config::from_str(url).map_err(|_| {
            ReplicationError::Config(
                "cannot parse the database URL (expected postgres://user:password@host:port/dbname)".into(),
            )
        })?;
        if matches!(config.get_ssl_mode(), SslMode::Require) {
            return Err(ReplicationError::Config(
                "sslmode=require is not supported yet; use sslmode=disable or prefer".into(),
            ));
        }
        let user = match config.get_user() {
            Some(user) => user.to_owned(),
            None => std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into()),
        };
        config.user(&user);
        let password = match config.get_password() {
            Some(p) => Some(p.to_vec()),
            None => std::env::var("PGPASSWORD").ok().map(String::into_bytes),
        };
        if let Some(p) = &password {
            config.password(p);
        }
        let dbname = config.get_dbname().map_or_else(|| user.clone(), str::to_owned);
        let host = config
            .get_hosts()
            .first()
            .cloned()
            .unwrap_or(Host::Tcp("localhost".into()));
        let port = config.get_ports().first().copied().unwrap_or(5432);
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        let application_name = config
            .get_application_name()
            .unwrap_or(application_name)
            .to_owned();
        Ok(Self {
            config,
            user,
            password,
            dbname,
            application_name,
            host,
            port,
        })
    }

    pub(super) async fn open_socket(&self) -> Result<Box<dyn super::connection_io::Io>, ReplicationError> {
        match &self.host {
            Host::Tcp(host) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), self.port))
                    .await
                    .map_err(|source| ReplicationError::Connect {
                        addr: self.to_string(),
                        source,
                    })?;
                stream.set_nodelay(true).map_err(ReplicationError::Io)?;
                Ok(Box::new(stream))
            }
            #[cfg(unix)]
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", self.port));
                let stream = tokio::net::UnixStream::connect(&path).await.map_err(|source| {
                    ReplicationError::Connect {
                        addr: self.to_string(),
                        source,
                    }
                })?;
                Ok(Box::new(stream))
            }
        }
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Tcp(host) => write!(f, "{}@{}:{}/{}", self.user, host, self.port, self.dbname),
            #[cfg(unix)]
            Host::Unix(dir) => write!(f, "{}@{}:{}/{}", self.user, dir.display(), self.port, self.dbname),
        }
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTarget({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_password() {
        let t = PgTarget::from_url("postgres://bob:s3cr3t-pw@db.example:6543/shop", "bridge").unwrap();
        assert_eq!(t.password.as_deref(), Some(&b"s3cr3t-pw"[..]));
        assert_eq!(t.to_string(), "bob@db.example:6543/shop");
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }

    #[test]
    fn parse_errors_do_not_echo_the_url() {
        let err = PgTarget::from_url("postgres://bob:s3cr3t-pw@db:notaport/x", "bridge").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }
}
