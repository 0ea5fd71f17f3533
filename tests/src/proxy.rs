//! A TCP proxy in front of an endpoint that a test can switch off: while down, every new
//! connection is closed at once and open ones are cut, as when a service is unreachable. It can
//! also *partition* silently: bytes stop flowing both ways but no socket is closed, as when a
//! network path drops packets (only a read deadline notices that). Its upstream can change
//! while it runs (`set_upstream`): open connections are cut and new ones go to the new
//! upstream, as a DNS name or a virtual IP follows a promoted database primary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub endpoint: String,
    up: Arc<AtomicBool>,
    partitioned: Arc<AtomicBool>,
    upstream: Arc<Mutex<String>>,
    /// Bumped to cut every open connection (an outage, a new upstream).
    cut_tx: watch::Sender<u64>,
    silence_tx: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

/// Holds sockets open, forwarding nothing, until the partition heals; then drops them (a
/// partitioned connection never recovers: the peers must notice and reconnect).
async fn hold_while(partitioned: &AtomicBool) {
    while partitioned.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Proxy {
    /// Proxies `127.0.0.1:<free port>` to `upstream` (host:port).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let up = Arc::new(AtomicBool::new(true));
        let partitioned = Arc::new(AtomicBool::new(false));
        let upstream = Arc::new(Mutex::new(upstream.to_owned()));
        let (cut_tx, cut_rx) = watch::channel(0u64);
        let (silence_tx, silence_rx) = watch::channel(0u64);
        let up_flag = up.clone();
        let partition_flag = partitioned.clone();
        let current = upstream.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up_flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                if partition_flag.load(Ordering::SeqCst) {
                    let partitioned = partition_flag.clone();
                    tokio::spawn(async move {
                        hold_while(&partitioned).await;
                        drop(client);
                    });
                    continue;
                }
                let mut cut = cut_rx.clone();
                let mut silence = silence_rx.clone();
                // Only outages and upstream changes that start after this connection cut it.
                cut.mark_unchanged();
                silence.mark_unchanged();
                // Read after marking: a change from here on cuts this connection, whichever
                // upstream it reached.
                let Ok(upstream) = current.lock().map(|u| u.clone()) else {
                    continue;
                };
                let partitioned = partition_flag.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                        _ = silence.changed() => hold_while(&partitioned).await,
                    }
                });
            }
        });
        Ok(Self {
            endpoint,
            up,
            partitioned,
            upstream,
            cut_tx,
            silence_tx,
            task,
        })
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut_tx.send_modify(|n| *n += 1);
        }
    }

    /// Starts or heals a silent partition: open connections stop forwarding (their sockets stay
    /// open until it heals), new ones are accepted and never forwarded.
    pub fn set_partitioned(&self, on: bool) {
        self.partitioned.store(on, Ordering::SeqCst);
        if on {
            self.silence_tx.send_modify(|n| *n += 1);
        }
    }

    /// Sends new connections to `upstream` (host:port) and cuts the open ones, which went to
    /// the old upstream: their peers reconnect, and reach the new one.
    pub fn set_upstream(&self, upstream: &str) {
        if let Ok(mut current) = self.upstream.lock() {
            *current = upstream.to_owned();
        }
        self.cut_tx.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
