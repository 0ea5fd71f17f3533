//! The container health check's client: asks a process's own health endpoint (`/livez`,
//! `/readyz`, legacy-sim's `/healthz`) on its listen address. The images carry no curl, and a
//! request this small needs no HTTP client library; every binary's `healthcheck` uses it.

/// Why the health endpoint did not answer 200.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("nothing answers on {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {addr} within {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("unhealthy ({status}): {body}")]
    Unhealthy { status: String, body: String },
}

/// Asks `path` (`/livez`, `/readyz`) of a server listening on `listen` (a wildcard address is
/// asked on loopback). For container health checks: the images carry no curl, and a request
/// this small needs no HTTP client library linked into every service.
pub async fn probe(listen: &str, path: &str, timeout: std::time::Duration) -> Result<(), ProbeError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = match listen.rsplit_once(':') {
        Some(("0.0.0.0" | "[::]" | "", port)) => format!("127.0.0.1:{port}"),
        _ => listen.to_owned(),
    };
    let ask = async {
        let mut conn = tokio::net::TcpStream::connect(&addr).await?;
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| ProbeError::Timeout {
            addr: addr.clone(),
            secs: timeout.as_secs(),
        })?
        .map_err(|source| ProbeError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let status = answer.lines().next().unwrap_or_default().to_owned();
    if status.split_whitespace().nth(1) == Some("200") {
        return Ok(());
    }
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim()
        .to_owned();
    Err(ProbeError::Unhealthy { status, body })
}
