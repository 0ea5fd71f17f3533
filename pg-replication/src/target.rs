//! Where the bridge's Postgres is and who it connects as, parsed from `DATABASE_URL`.
//!
//! The password lives here and nowhere else (from the URL, `PGPASSWORD` or the password file); `Debug` and `Display` leave it out so it cannot
//! reach a log line or an error message.

use std::fmt;
use std::str::FromStr;

use std::path::PathBuf;

use tokio_postgres::config::{Host, SslMode as PgSslMode, TargetSessionAttrs};

use super::auth_policy::{AuthPolicy, Transport};
use super::error::ReplicationError;
use super::pgpass;
use super::session_attrs::SessionAttrs;
use super::tls::{SslMode, TlsSettings};

#[derive(Clone)]
pub struct PgTarget {
    /// For ordinary (non-replication) connections through `tokio-postgres`.
    pub config: tokio_postgres::Config,
    pub user: String,
    pub password: Option<Vec<u8>>,
    pub dbname: String,
    pub application_name: String,
    pub tls: TlsSettings,
    /// `require_auth`, and whether a cleartext password may travel unencrypted.
    pub auth: AuthPolicy,
    /// Which of the listed hosts a connection may settle on.
    pub session_attrs: SessionAttrs,
    /// Every host of a multi-host URL, in order, with its port.
    hosts: Vec<(Host, u16)>,
    /// The host this target connects to (the first; see [`PgTarget::candidates`]).
    host: Host,
    port: u16,
}

/// What a query connection (`tokio-postgres`) checks for `attrs`: a hot standby is read-only.
fn query_attrs(attrs: SessionAttrs) -> TargetSessionAttrs {
    match attrs {
        SessionAttrs::Any => TargetSessionAttrs::Any,
        SessionAttrs::ReadWrite | SessionAttrs::Primary => TargetSessionAttrs::ReadWrite,
        SessionAttrs::Standby => TargetSessionAttrs::ReadOnly,
    }
}

impl PgTarget {
    /// Parses a libpq-style URL (or `key=value` string). `sslmode` and `sslrootcert` (or
    /// `PGSSLMODE` / `PGSSLROOTCERT`) choose TLS; the password comes from the URL, else
    /// `PGPASSWORD`, else the password file (`PGPASSFILE` or `~/.pgpass`).
    pub fn from_url(url: &str, application_name: &str) -> Result<Self, ReplicationError> {
        let (rest, ssl) = split_tls_params(url);
        if !ssl.unsupported.is_empty() {
            return Err(ReplicationError::Config(format!(
                "{} not supported (client certificates and CRLs); use password authentication",
                ssl.unsupported.join(", ")
            )));
        }
        // tokio-postgres' own message can quote the URL; never pass it on.
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|_| {
            ReplicationError::Config(
                "cannot parse the database URL (expected postgres://user:password@host:port/dbname)".into(),
            )
        })?;
        let mode_value = ssl.mode.or_else(|| std::env::var("PGSSLMODE").ok());
        let mode = match &mode_value {
            Some(mode) => SslMode::parse(mode)?,
            None => SslMode::Prefer,
        };
        let require_auth = ssl.require_auth.or_else(|| std::env::var("PGREQUIREAUTH").ok());
        let auth = AuthPolicy::parse(require_auth.as_deref(), mode == SslMode::Disable)
            .map_err(|e| ReplicationError::Config(e.to_string()))?;
        match ssl
            .channel_binding
            .or_else(|| std::env::var("PGCHANNELBINDING").ok())
            .as_deref()
        {
            None | Some("prefer" | "disable") => {}
            Some("require") => {
                return Err(ReplicationError::Config(
                    "channel_binding=require is not supported: the replication connection does not \
                     implement SCRAM channel binding (SCRAM-SHA-256-PLUS); use sslmode=verify-full"
                        .into(),
                ))
            }
            Some(other) => {
                return Err(ReplicationError::Config(format!(
                    "channel_binding=`{other}` is not one of disable, prefer, require"
                )))
            }
        }
        let root_cert = ssl
            .root_cert
            .or_else(|| std::env::var("PGSSLROOTCERT").ok())
            .map(PathBuf::from);
        let tls = TlsSettings::new(mode, root_cert)?;
        config.ssl_mode(match tls.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        let user = match config.get_user() {
            Some(user) => user.to_owned(),
            None => std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into()),
        };
        config.user(&user);
        let dbname = config.get_dbname().map_or_else(|| user.clone(), str::to_owned);
        let session_attrs = SessionAttrs::parse(
            ssl.session_attrs
                .or_else(|| std::env::var("PGTARGETSESSIONATTRS").ok())
                .as_deref(),
        )?;
        config.target_session_attrs(query_attrs(session_attrs));
        let hosts = host_list(config.get_hosts(), config.get_ports());
        let (host, port) = hosts
            .first()
            .cloned()
            .unwrap_or((Host::Tcp("localhost".into()), 5432));
        let password = match config.get_password() {
            Some(p) => Some(p.to_vec()),
            None => std::env::var("PGPASSWORD")
                .ok()
                .map(String::into_bytes)
                .or_else(|| {
                    let host = match &host {
                        Host::Tcp(h) => h.clone(),
                        #[cfg(unix)]
                        Host::Unix(dir) => dir.display().to_string(),
                    };
                    let want = pgpass::Lookup {
                        host: &host,
                        port,
                        dbname: &dbname,
                        user: &user,
                    };
                    pgpass::default_path().and_then(|path| pgpass::find(&path, &want))
                }),
        };
        if let Some(p) = &password {
            config.password(p);
        }
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
            tls,
            auth,
            session_attrs,
            hosts,
            host,
            port,
        })
    }

    /// The same hosts and credentials, settling on what `attrs` asks for (the primary of a
    /// multi-host URL that names a standby for capture).
    pub fn with_session_attrs(&self, attrs: SessionAttrs) -> PgTarget {
        let mut target = self.clone();
        target.session_attrs = attrs;
        target.config.target_session_attrs(query_attrs(attrs));
        target
    }

    /// This target once per listed host, in order: what a connection tries until one accepts
    /// it and suits `target_session_attrs` (the password, resolved for the first host, is reused).
    pub fn candidates(&self) -> impl Iterator<Item = PgTarget> + '_ {
        self.hosts.iter().map(|(host, port)| PgTarget {
            host: host.clone(),
            port: *port,
            ..self.clone()
        })
    }

    pub(super) async fn open_socket(
        &self,
    ) -> Result<(Box<dyn super::connection_io::Io>, Transport), ReplicationError> {
        match &self.host {
            Host::Tcp(host) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), self.port))
                    .await
                    .map_err(|source| ReplicationError::Connect {
                        addr: self.to_string(),
                        source,
                    })?;
                stream.set_nodelay(true).map_err(ReplicationError::Io)?;
                match self.tls.client_config() {
                    Some(config) => self.start_tls(stream, host, config).await,
                    None => Ok((Box::new(stream), Transport::Plain)),
                }
            }
            // Like libpq, no TLS over a Unix socket: it never leaves the machine.
            #[cfg(unix)]
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", self.port));
                let stream = tokio::net::UnixStream::connect(&path).await.map_err(|source| {
                    ReplicationError::Connect {
                        addr: self.to_string(),
                        source,
                    }
                })?;
                Ok((Box::new(stream), Transport::Local))
            }
        }
    }

    /// SSLRequest, then the TLS handshake when the server agrees; plain text only under `prefer`.
    async fn start_tls(
        &self,
        mut stream: tokio::net::TcpStream,
        host: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<(Box<dyn super::connection_io::Io>, Transport), ReplicationError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut request = bytes::BytesMut::new();
        postgres_protocol::message::frontend::ssl_request(&mut request);
        stream.write_all(&request).await?;
        let answer = stream.read_u8().await?;
        match answer {
            b'S' => {}
            b'N' if !self.tls.mode.tls_required() => return Ok((Box::new(stream), Transport::Plain)),
            b'N' => {
                return Err(ReplicationError::Tls(format!(
                    "TLS to postgres at {self} failed (sslmode={}): the server does not accept TLS",
                    self.tls.mode.as_str()
                )))
            }
            other => {
                return Err(ReplicationError::Protocol(format!(
                    "unexpected answer {other:#x} to SSLRequest"
                )))
            }
        }
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| ReplicationError::Tls(format!("`{host}` is not a valid TLS server name")))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(
                |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(tls) => ReplicationError::Tls(format!(
                        "TLS to postgres at {self} failed (sslmode={}): {tls}",
                        self.tls.mode.as_str()
                    )),
                    // A reset mid-handshake is the network's doing: worth a retry.
                    None => ReplicationError::Io(e),
                },
            )?;
        Ok((Box::new(tls), Transport::Tls))
    }
}

/// The TLS parameters libpq knows and tokio-postgres does not.
#[derive(Default)]
struct TlsParams {
    mode: Option<String>,
    root_cert: Option<String>,
    /// libpq TLS options we do not implement (client certificates), named in the error.
    unsupported: Vec<String>,
    require_auth: Option<String>,
    channel_binding: Option<String>,
    session_attrs: Option<String>,
}

/// libpq's pairing of hosts and ports: one port for all, or one per host.
fn host_list(hosts: &[Host], ports: &[u16]) -> Vec<(Host, u16)> {
    let port = |i: usize| match ports.len() {
        0 => 5432,
        1 => ports[0],
        _ => ports.get(i).copied().unwrap_or(5432),
    };
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.clone(), port(i)))
        .collect()
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query (or a `key=value` string).
fn split_tls_params(url: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            params.mode = Some(value);
            true
        }
        "sslrootcert" => {
            params.root_cert = Some(value);
            true
        }
        "require_auth" => {
            params.require_auth = Some(value);
            true
        }
        "channel_binding" => {
            params.channel_binding = Some(value);
            true
        }
        // Handled here: tokio-postgres knows neither `primary` nor our host walk.
        "target_session_attrs" => {
            params.session_attrs = Some(value);
            true
        }
        "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
            params.unsupported.push(key.to_owned());
            true
        }
        _ => false,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                        !take(k, v.into_owned())
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        url.split_whitespace()
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k.trim(), v.trim_matches('\'').to_owned())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, params)
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
    fn takes_the_tls_parameters_out_of_the_url() {
        let (rest, p) = split_tls_params(
            "postgres://bob@db:5432/shop?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        );
        assert_eq!(rest, "postgres://bob@db:5432/shop?application_name=x");
        assert_eq!(p.mode.as_deref(), Some("verify-full"));
        assert_eq!(p.root_cert.as_deref(), Some("/tmp/ca.pem"));
        let (rest, p) = split_tls_params("host=db user=bob sslmode=disable");
        assert_eq!(rest, "host=db user=bob");
        assert_eq!(p.mode.as_deref(), Some("disable"));
    }

    #[test]
    fn a_bad_sslmode_is_named() {
        let err = PgTarget::from_url("postgres://bob:pw@db/x?sslmode=strict", "bridge")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslmode `strict`"), "{err}");
    }

    #[test]
    fn parse_errors_do_not_echo_the_url() {
        let err = PgTarget::from_url("postgres://bob:s3cr3t-pw@db:notaport/x", "bridge").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }
}
