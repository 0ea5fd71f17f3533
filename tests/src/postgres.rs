//! A throwaway Postgres: initdb in a temp dir, `wal_level=logical`, a free loopback port,
//! password authentication (SCRAM), stopped and removed on drop.
//!
//! `initdb` and `postgres` refuse to run as root, so as root they run as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use tokio_postgres::NoTls;

pub const SUPERUSER_PASSWORD: &str = "stack-superuser-pw";

pub struct TestPostgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    pub port: u16,
}

#[derive(Clone, Copy, Debug)]
pub enum StopMode {
    Fast,
    Immediate,
}

impl TestPostgres {
    pub fn start() -> anyhow::Result<Self> {
        let bindir = bindir()?;
        let dir = tempfile::Builder::new().prefix("outbox-pg-").tempdir()?;
        let port = crate::free_port()?;
        let pg = Self { dir, bindir, port };
        std::fs::write(pg.dir.path().join("pwfile"), SUPERUSER_PASSWORD)?;
        if running_as_root() {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(pg.dir.path()))?;
        }
        pg.as_owner(&pg.bindir.join("initdb"), |c| {
            c.arg("-D").arg(pg.data()).args([
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ]);
            c.arg(format!("--pwfile={}", pg.dir.path().join("pwfile").display()));
        })?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data().join("postgresql.conf"))
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(
                    f,
                    "wal_level = logical\nmax_replication_slots = 20\nmax_wal_senders = 20\n\
                     listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
                     fsync = off\nfull_page_writes = off\nshared_buffers = 64MB\nmax_connections = 100\n\
                     wal_sender_timeout = 10s",
                    pg.dir.path().display()
                )
            })?;
        pg.start_server()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start_server(&self) -> anyhow::Result<()> {
        self.as_owner(&self.bindir.join("pg_ctl"), |c| {
            c.arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-w", "start"]);
        })
        .with_context(|| {
            format!(
                "postgres did not start; see {}",
                self.dir.path().join("server.log").display()
            )
        })
    }

    pub fn stop(&self, mode: StopMode) -> anyhow::Result<()> {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        self.as_owner(&self.bindir.join("pg_ctl"), |c| {
            c.arg("-D").arg(self.data()).args(["-w", "-m", mode, "stop"]);
        })
    }

    pub fn restart(&self, mode: StopMode) -> anyhow::Result<()> {
        self.stop(mode)?;
        self.start_server()
    }

    /// Puts `line` first in `pg_hba.conf` (it wins over initdb's lines) and reloads.
    pub async fn prepend_hba(&self, line: &str) -> anyhow::Result<()> {
        let path = self.data().join("pg_hba.conf");
        let current = std::fs::read_to_string(&path)?;
        std::fs::write(&path, format!("{line}\n{current}"))?;
        self.client()
            .await?
            .execute("SELECT pg_reload_conf()", &[])
            .await?;
        Ok(())
    }

    /// Turns TLS on with this certificate and key, and makes `hba` the whole of `pg_hba.conf`
    /// (the superuser keeps a plain-text line so the test's own client needs no TLS); restarts.
    pub fn enable_tls(&self, cert: &crate::tls::ServerCert, hba: &str) -> anyhow::Result<()> {
        let data = self.data();
        std::fs::write(data.join("server.crt"), &cert.cert_pem)?;
        std::fs::write(data.join("server.key"), &cert.key_pem)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // Postgres refuses a key others may read.
            std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all scram-sha-256\nhost all postgres 127.0.0.1/32 scram-sha-256\n{hba}\n"),
        )?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(
                    f,
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
                )
            })?;
        if running_as_root() {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(&data))?;
        }
        self.restart(StopMode::Fast)
    }

    /// A client program of the same PostgreSQL installation (`pg_recvlogical`, `psql`).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// The superuser's URL.
    pub fn url(&self) -> String {
        self.url_as("postgres", SUPERUSER_PASSWORD)
    }

    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/postgres", self.port)
    }

    /// A superuser query connection, driven on its own task.
    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.url(), NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn as_owner(&self, program: &Path, args: impl FnOnce(&mut Command)) -> anyhow::Result<()> {
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        args(&mut cmd);
        run(&mut cmd)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self.stop(StopMode::Immediate);
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .context("pg_config not found: install PostgreSQL (scripts/bootstrap does) or set PG_BINDIR")?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // Debian's pg_config may come from the client package; the server binaries sit in the versioned dir.
    if dir.join("initdb").exists() {
        return Ok(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .context("no initdb found: install the PostgreSQL server (scripts/bootstrap does)")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}
