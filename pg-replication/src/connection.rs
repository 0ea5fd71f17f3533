//! A replication-mode connection (`replication=database`) spoken over `postgres-protocol`'s codecs.
//!
//! Upstream `tokio-postgres` cannot stream `START_REPLICATION`, so this module owns the socket:
//! startup, authentication (cleartext, MD5, SCRAM-SHA-256), simple queries, and the CopyBoth
//! sub-protocol with its XLogData, keepalive and standby status messages. `postgres-protocol`'s
//! parser does not know the CopyBothResponse (`'W'`) tag, and CopyData is framed here too so its
//! payload can be handed on as a zero-copy `Bytes`.

use std::sync::atomic::{AtomicBool, Ordering};

use super::auth_policy::Transport;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connection_io::Io;
use super::error::ReplicationError;
use super::session_attrs::SessionAttrs;
use super::target::PgTarget;
use crate::lsn::Lsn;
use crate::sql::quote_ident;

/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// One message of the replication stream.
#[derive(Debug)]
pub enum StreamMessage {
    /// A chunk of decoded WAL: one pgoutput message.
    XLogData { start: Lsn, end: Lsn, data: Bytes },
    /// The server's keepalive: how far it has sent, its clock (µs since 2000-01-01), and
    /// whether it wants a status update now.
    Keepalive {
        wal_end: Lsn,
        server_time: i64,
        reply_requested: bool,
    },
    /// The server ended the copy (it is shutting down or the slot went away).
    CopyDone,
}

/// The unencrypted-connection warning is said once per process, not at every reconnect.
static UNENCRYPTED_WARNED: AtomicBool = AtomicBool::new(false);

pub struct ReplicationConnection {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

/// A raw backend frame, split before `postgres-protocol` sees it so `'W'` and `'d'` are ours.
enum Frame {
    CopyBothResponse,
    CopyData(Bytes),
    Other(backend::Message),
}

impl ReplicationConnection {
    /// Connects, authenticates and waits for the server to be ready.
    /// Connects to the first listed host that accepts and suits `target_session_attrs` (libpq's
    /// multi-host rule): after a failover, the new primary wherever it is in the list.
    pub async fn connect(target: &PgTarget) -> Result<Self, ReplicationError> {
        let mut last = None;
        for candidate in target.candidates() {
            let mut conn = match Self::connect_one(&candidate).await {
                Ok(conn) => conn,
                // Unreachable, or not up yet: the next host may be.
                Err(err) if err.is_retryable() => {
                    tracing::info!(host = %candidate, error = %err, "host not reachable, trying the next");
                    last = Some(err);
                    continue;
                }
                Err(err) => return Err(err),
            };
            if conn.suits(target.session_attrs).await? {
                return Ok(conn);
            }
            tracing::info!(host = %candidate, target_session_attrs = target.session_attrs.as_str(), "host does not suit target_session_attrs, trying the next");
            last = Some(ReplicationError::NoSuitableHost(format!(
                "{candidate} is not {}",
                target.session_attrs.as_str()
            )));
            let _ = conn.close().await;
        }
        Err(last.unwrap_or_else(|| ReplicationError::Config("the database URL names no host".into())))
    }

    /// Whether the server behind this connection is one `attrs` may settle on.
    async fn suits(&mut self, attrs: SessionAttrs) -> Result<bool, ReplicationError> {
        let Some((sql, wanted)) = attrs.check() else {
            return Ok(true);
        };
        let rows = self.simple_query(sql).await?;
        Ok(rows
            .first()
            .and_then(|row| row.first())
            .and_then(Option::as_deref)
            == Some(wanted))
    }

    async fn connect_one(target: &PgTarget) -> Result<Self, ReplicationError> {
        let (mut conn, transport) = Self::start(target, true).await?;
        let ready = async {
            conn.authenticate(target, transport, false).await?;
            conn.wait_ready().await
        };
        match ready.await {
            Ok(()) => Ok(conn),
            // "must be superuser or replication role to start walsender"
            Err(ReplicationError::Server { code, .. }) if code == "42501" => {
                Err(ReplicationError::Privilege(format!(
                    "the role `{user}` may not open a replication connection: it needs the REPLICATION \
                     attribute; as a superuser run: ALTER ROLE {role} REPLICATION;",
                    user = target.user,
                    role = quote_ident(&target.user),
                )))
            }
            Err(err) => Err(err),
        }
    }

    /// Looks at what an ordinary (query) connection would be asked to authenticate with, and
    /// refuses as [`connect`](Self::connect) would — without answering: the query connection's
    /// client (tokio-postgres) would send a cleartext password to whoever asks.
    pub async fn probe_auth(target: &PgTarget) -> Result<(), ReplicationError> {
        let mut last = None;
        for candidate in target.candidates() {
            match Self::start(&candidate, false).await {
                Ok((mut conn, transport)) => return conn.authenticate(&candidate, transport, true).await,
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| ReplicationError::Config("the database URL names no host".into())))
    }

    /// Opens the socket (TLS as configured) and sends the startup message.
    async fn start(target: &PgTarget, replication: bool) -> Result<(Self, Transport), ReplicationError> {
        let (io, transport) = target.open_socket().await?;
        if transport == Transport::Plain && !UNENCRYPTED_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(target = %target, sslmode = target.tls.mode.as_str(), "the connection to postgres is not encrypted (the server declined TLS)");
        }
        let mut conn = Self {
            io,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::new(),
        };
        let mut params = vec![
            ("user", target.user.as_str()),
            ("database", target.dbname.as_str()),
            ("application_name", target.application_name.as_str()),
            ("client_encoding", "UTF8"),
        ];
        // pgoutput sends values in the session's text form: pin it, so a server or database
        // configured for another DateStyle or TimeZone still yields ISO timestamps in UTC.
        params.extend(super::TEXT_SETTINGS);
        if replication {
            params.push(("replication", "database"));
        }
        frontend::startup_message(params, &mut conn.wbuf)?;
        conn.flush().await?;
        Ok((conn, transport))
    }

    /// Answers the server's authentication requests, each first checked against the target's
    /// policy. With `probe`, returns at the first request once it is acceptable, answering nothing.
    async fn authenticate(
        &mut self,
        target: &PgTarget,
        transport: Transport,
        probe: bool,
    ) -> Result<(), ReplicationError> {
        let password = || {
            target.password.as_deref().ok_or_else(|| {
                ReplicationError::Auth("the server asks for a password and none was given".into())
            })
        };
        let allow = |method: &str| {
            target
                .auth
                .check(method, transport)
                .map_err(|e| ReplicationError::Auth(e.to_string()))
        };
        let mut asked = false;
        loop {
            let frame = self.read_frame().await?;
            let method = match &frame {
                Frame::Other(backend::Message::AuthenticationOk) if !asked => Some("none"),
                Frame::Other(backend::Message::AuthenticationCleartextPassword) => Some("password"),
                Frame::Other(backend::Message::AuthenticationMd5Password(_)) => Some("md5"),
                Frame::Other(backend::Message::AuthenticationSasl(_)) => Some("scram-sha-256"),
                _ => None,
            };
            if let Some(method) = method {
                allow(method)?;
                asked = true;
                if probe {
                    return Ok(());
                }
            }
            match frame {
                Frame::Other(backend::Message::AuthenticationOk) => return Ok(()),
                Frame::Other(backend::Message::AuthenticationCleartextPassword) => {
                    frontend::password_message(password()?, &mut self.wbuf)?;
                    self.flush().await?;
                }
                Frame::Other(backend::Message::AuthenticationMd5Password(body)) => {
                    let hash = md5_hash(target.user.as_bytes(), password()?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)?;
                    self.flush().await?;
                }
                Frame::Other(backend::Message::AuthenticationSasl(body)) => {
                    let mut offered = body.mechanisms();
                    let mut scram_offered = false;
                    while let Some(mechanism) = offered.next()? {
                        scram_offered |= mechanism == sasl::SCRAM_SHA_256;
                    }
                    if !scram_offered {
                        return Err(ReplicationError::Auth(
                            "the server offers no SASL mechanism we speak".into(),
                        ));
                    }
                    self.scram(password()?).await?;
                }
                Frame::Other(backend::Message::ErrorResponse(body)) => return Err(server_error(&body)),
                Frame::Other(_) => {
                    return Err(ReplicationError::Auth(
                        "unsupported authentication request".into(),
                    ));
                }
                _ => {
                    return Err(ReplicationError::Protocol(
                        "copy data during authentication".into(),
                    ))
                }
            }
        }
    }

    async fn scram(&mut self, password: &[u8]) -> Result<(), ReplicationError> {
        let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut self.wbuf)?;
        self.flush().await?;
        match self.read_frame().await? {
            Frame::Other(backend::Message::AuthenticationSaslContinue(body)) => scram.update(body.data())?,
            Frame::Other(backend::Message::ErrorResponse(body)) => return Err(server_error(&body)),
            _ => return Err(ReplicationError::Auth("unexpected message during SCRAM".into())),
        }
        frontend::sasl_response(scram.message(), &mut self.wbuf)?;
        self.flush().await?;
        match self.read_frame().await? {
            Frame::Other(backend::Message::AuthenticationSaslFinal(body)) => scram
                .finish(body.data())
                .map_err(|e| ReplicationError::Auth(e.to_string())),
            Frame::Other(backend::Message::ErrorResponse(body)) => Err(server_error(&body)),
            _ => Err(ReplicationError::Auth(
                "unexpected message at the end of SCRAM".into(),
            )),
        }
    }

    async fn wait_ready(&mut self) -> Result<(), ReplicationError> {
        let mut failure = None;
        loop {
            // After a FATAL error the server closes the socket: report the error, not the EOF.
            let frame = match self.read_frame().await {
                Ok(frame) => frame,
                Err(err) => return Err(failure.unwrap_or(err)),
            };
            match frame {
                Frame::Other(backend::Message::ReadyForQuery(_)) => {
                    return failure.map_or(Ok(()), Err);
                }
                Frame::Other(backend::Message::ErrorResponse(body)) => failure = Some(server_error(&body)),
                _ => {}
            }
        }
    }

    /// Runs one replication command (`IDENTIFY_SYSTEM`, `TIMELINE_HISTORY`, …) and returns its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            match self.read_frame().await? {
                Frame::Other(backend::Message::DataRow(row)) => {
                    let buf = row.buffer();
                    let mut values = Vec::new();
                    let mut ranges = row.ranges();
                    while let Some(range) = ranges.next()? {
                        values.push(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(values);
                }
                Frame::Other(backend::Message::ErrorResponse(body)) => failure = Some(server_error(&body)),
                Frame::Other(backend::Message::ReadyForQuery(_)) => return failure.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    /// Sends `START_REPLICATION` and waits for the server to enter CopyBoth mode.
    pub async fn start_replication(
        &mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, String)],
    ) -> Result<(), ReplicationError> {
        let options = options
            .iter()
            .map(|(k, v)| format!("\"{k}\" '{}'", v.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} ({options})",
            quote_ident(slot)
        );
        frontend::query(&sql, &mut self.wbuf)?;
        self.flush().await?;
        loop {
            match self.read_frame().await? {
                Frame::CopyBothResponse => return Ok(()),
                Frame::Other(backend::Message::ErrorResponse(body)) => {
                    let err = server_error(&body);
                    // Drain up to ReadyForQuery so the error is the whole story.
                    let _ = self.wait_ready().await;
                    return Err(err);
                }
                Frame::Other(backend::Message::NoticeResponse(_)) => {}
                _ => return Err(ReplicationError::Protocol("expected CopyBothResponse".into())),
            }
        }
    }

    /// The next message of the replication stream. Cancel-safe: a partial frame stays buffered.
    pub async fn next_message(&mut self) -> Result<StreamMessage, ReplicationError> {
        loop {
            match self.read_frame().await? {
                Frame::CopyData(mut data) => {
                    if data.is_empty() {
                        return Err(ReplicationError::Protocol("empty CopyData".into()));
                    }
                    match data.get_u8() {
                        b'w' if data.len() >= 24 => {
                            let start = Lsn(data.get_u64());
                            let end = Lsn(data.get_u64());
                            let _server_time = data.get_i64();
                            return Ok(StreamMessage::XLogData { start, end, data });
                        }
                        b'k' if data.len() >= 17 => {
                            let wal_end = Lsn(data.get_u64());
                            let server_time = data.get_i64();
                            let reply_requested = data.get_u8() == 1;
                            return Ok(StreamMessage::Keepalive {
                                wal_end,
                                server_time,
                                reply_requested,
                            });
                        }
                        tag => {
                            return Err(ReplicationError::Protocol(format!(
                                "unknown CopyData tag {:?}",
                                char::from(tag)
                            )))
                        }
                    }
                }
                // The walsender ends the copy when it shuts down (CopyDone, then CommandComplete
                // and maybe ReadyForQuery): the stream is over, reconnecting may help.
                Frame::Other(
                    backend::Message::CopyDone
                    | backend::Message::CommandComplete(_)
                    | backend::Message::ReadyForQuery(_),
                ) => return Ok(StreamMessage::CopyDone),
                Frame::Other(backend::Message::ErrorResponse(body)) => return Err(server_error(&body)),
                Frame::Other(backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_)) => {}
                Frame::Other(_) | Frame::CopyBothResponse => {
                    return Err(ReplicationError::Protocol(
                        "unexpected message in CopyBoth mode".into(),
                    ))
                }
            }
        }
    }

    /// Sends a standby status update: `flush` is the last position whose changes are durable downstream.
    pub async fn send_status(&mut self, flush: Lsn, reply: bool) -> Result<(), ReplicationError> {
        let mut msg = BytesMut::with_capacity(34);
        msg.put_u8(b'r');
        msg.put_u64(flush.0); // written
        msg.put_u64(flush.0); // flushed
        msg.put_u64(flush.0); // applied
        msg.put_i64(now_pg_micros());
        msg.put_u8(u8::from(reply));
        frontend::CopyData::new(msg.freeze())?.write(&mut self.wbuf);
        self.flush().await?;
        Ok(())
    }

    /// Ends the copy and the session politely, so the walsender releases the slot at once.
    pub async fn close(mut self) -> Result<(), ReplicationError> {
        frontend::copy_done(&mut self.wbuf);
        frontend::terminate(&mut self.wbuf);
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ReplicationError> {
        self.io.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        self.io.flush().await?;
        Ok(())
    }

    async fn read_frame(&mut self) -> Result<Frame, ReplicationError> {
        loop {
            if self.rbuf.len() >= 5 {
                let tag = self.rbuf[0];
                let len = i32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
                let len = usize::try_from(len)
                    .map_err(|_| ReplicationError::Protocol("negative frame length".into()))?;
                if len < 4 {
                    return Err(ReplicationError::Protocol("frame length below 4".into()));
                }
                if self.rbuf.len() > len {
                    match tag {
                        b'd' => {
                            let mut frame = self.rbuf.split_to(1 + len).freeze();
                            frame.advance(5);
                            return Ok(Frame::CopyData(frame));
                        }
                        b'W' => {
                            self.rbuf.advance(1 + len);
                            return Ok(Frame::CopyBothResponse);
                        }
                        _ => {
                            if let Some(msg) = backend::Message::parse(&mut self.rbuf)? {
                                return Ok(Frame::Other(msg));
                            }
                        }
                    }
                } else {
                    self.rbuf.reserve(1 + len - self.rbuf.len());
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 8 * 1024 {
                self.rbuf.reserve(64 * 1024);
            }
            if self.io.read_buf(&mut self.rbuf).await? == 0 {
                return Err(ReplicationError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

fn server_error(body: &backend::ErrorResponseBody) -> ReplicationError {
    let (mut code, mut message, mut hint) = (String::new(), String::new(), None);
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = value,
            b'M' => message = value,
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    ReplicationError::Server { code, message, hint }
}

fn now_pg_micros() -> i64 {
    chrono::Utc::now().timestamp_micros() - PG_EPOCH_OFFSET_MICROS
}
