//! A throwaway Postgres: initdb in a temp dir, `wal_level=logical`, a free loopback port,
//! password authentication (SCRAM), stopped and removed on drop.
//!
//! `initdb` and `postgres` refuse to run as root, so as root they run as the `postgres` user.
//!
//! A primary can clone itself into a physical streaming standby (`start_standby`: a file copy
//! between `pg_backup_start` and `pg_backup_stop`, on a physical slot named after it) that a
//! failover test later promotes (`promote`). A standby is a `TestPostgres` like any other: its
//! own port, socket directory and log, stopped on drop. Logical slots are not copied to a
//! standby; before 17 nothing syncs them, so after a promotion the new primary has none.
//!
//! Any major from 14 on: `PG_BINDIR` names the server's binaries (initdb, pg_ctl, postgres are
//! all the harness runs), else the distribution's newest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
    /// A server of the default major (`PG_BINDIR`, else the distribution's).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_in(bindir()?)
    }

    /// A server from the binaries in `bindir` (see [`bindir_of_major`]).
    pub fn start_in(bindir: PathBuf) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("outbox-pg-").tempdir()?;
        let port = crate::free_port()?;
        let pg = Self { dir, bindir, port };
        std::fs::write(pg.dir.path().join("pwfile"), SUPERUSER_PASSWORD)?;
        if running_as_root() {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(pg.dir.path()))?;
        }
        pg.as_owner(&pg.bindir.join("initdb"), |c| {
            c.arg("-D").arg(pg.data_dir()).args([
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
            .open(pg.data_dir().join("postgresql.conf"))
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

    /// The cluster's data directory (owned by `postgres` when the tests run as root).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Clones this running primary into a physical streaming standby named `name` (its
    /// `application_name` in `pg_stat_replication`, and the name of the physical slot it
    /// streams from), starts it on its own free port, and returns once the primary reports it
    /// `streaming`. The standby is a hot standby: it takes read-only queries.
    ///
    /// The clone is a file copy between `pg_backup_start` and `pg_backup_stop` (a base backup
    /// without `pg_basebackup`, which the server builds of other majors lack, and which cannot
    /// copy a newer server than itself); the slot keeps the WAL the standby still needs.
    pub async fn start_standby(&self, name: &str) -> anyhow::Result<TestPostgres> {
        self.clone_standby(name, "", self.port).await
    }

    /// [`TestPostgres::start_standby`] that logical decoding can run on (16+): with
    /// `hot_standby_feedback`, so the primary keeps the catalog rows its slots still need.
    pub async fn start_standby_for_decoding(&self, name: &str) -> anyhow::Result<TestPostgres> {
        self.clone_standby(name, "hot_standby_feedback = on", self.port)
            .await
    }

    /// [`TestPostgres::start_standby`] that keeps copies of the primary's failover slots
    /// (PostgreSQL 17+: `sync_replication_slots`, with the `hot_standby_feedback` it needs).
    pub async fn start_standby_syncing_slots(&self, name: &str) -> anyhow::Result<TestPostgres> {
        self.start_standby_syncing_slots_via(name, self.port).await
    }

    /// [`TestPostgres::start_standby_syncing_slots`] reaching this primary through `port` on
    /// loopback (a proxy the test can cut: the standby then receives no more WAL).
    pub async fn start_standby_syncing_slots_via(
        &self,
        name: &str,
        port: u16,
    ) -> anyhow::Result<TestPostgres> {
        self.clone_standby(
            name,
            "sync_replication_slots = on\nhot_standby_feedback = on",
            port,
        )
        .await
    }

    async fn clone_standby(&self, name: &str, settings: &str, upstream: u16) -> anyhow::Result<TestPostgres> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("a standby name is letters, digits and underscores, not {name:?}");
        }
        let dir = tempfile::Builder::new().prefix("outbox-pg-standby-").tempdir()?;
        let port = crate::free_port()?;
        let standby = Self {
            dir,
            bindir: self.bindir.clone(),
            port,
        };
        let client = self.client().await?;
        client
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&name],
            )
            .await?;
        let major = self.major().await?;
        let (start, stop) = if major >= 15 {
            (
                "SELECT pg_backup_start($1, true)::text",
                "SELECT labelfile FROM pg_backup_stop(true)",
            )
        } else {
            (
                "SELECT pg_start_backup($1, true, false)::text",
                "SELECT labelfile FROM pg_stop_backup(false, true)",
            )
        };
        client.query_one(start, &[&name]).await?;
        let copied = self.copy_data_to(&standby);
        let label: String = client.query_one(stop, &[]).await?.get(0);
        copied?;
        let data = standby.data_dir();
        std::fs::write(data.join("backup_label"), label)?;
        std::fs::write(data.join("standby.signal"), "")?;
        // Later lines win over the copied ones (the primary's port and socket directory). A
        // status every second keeps `replay_lsn` on the primary current.
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(
                    f,
                    "port = {port}\nunix_socket_directories = '{}'\nhot_standby = on\n\
                     wal_receiver_status_interval = 1s\nprimary_slot_name = '{name}'\n\
                     primary_conninfo = 'host=127.0.0.1 port={} user=postgres password={SUPERUSER_PASSWORD} \
                     application_name={name} dbname=postgres'\n{settings}",
                    standby.dir.path().display(),
                    upstream
                )
            })?;
        // Its own name as its `cluster_name` (what capture leaves out of --synchronous-standby),
        // in the file that wins over a `cluster_name` the primary set with ALTER SYSTEM.
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.auto.conf"))
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(f, "cluster_name = '{name}'")
            })?;
        if running_as_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(standby.dir.path()))?;
        }
        standby.start_server()?;
        crate::wait::until(
            &format!("standby {name} streaming"),
            Duration::from_secs(60),
            || async {
                let streaming = client
                    .query_opt(
                        "SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
                        &[&name],
                    )
                    .await?;
                Ok(streaming.map(|_| ()))
            },
        )
        .await
        .with_context(|| format!("see {}", standby.log_path().display()))?;
        Ok(standby)
    }

    /// The data directory copied into `standby`'s, without what belongs to the running server
    /// and what a base backup leaves out (its pid file, its WAL — the standby streams what it
    /// needs —, its slots, its statistics' and sorts' scratch files). The server keeps writing
    /// meanwhile: a file that vanishes during the copy was one of those, and is skipped.
    fn copy_data_to(&self, standby: &TestPostgres) -> anyhow::Result<()> {
        const LEFT_OUT: [&str; 6] = [
            "postmaster.pid",
            "postmaster.opts",
            "pg_wal",
            "pg_replslot",
            "pg_stat_tmp",
            "pgsql_tmp",
        ];
        const EMPTY: [&str; 4] = ["pg_wal", "pg_replslot", "pg_stat_tmp", "pg_wal/archive_status"];
        fn copy_dir(from: &Path, to: &Path, top: bool) -> std::io::Result<()> {
            std::fs::create_dir_all(to)?;
            std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())?;
            for entry in std::fs::read_dir(from)? {
                let entry = entry?;
                let name = entry.file_name();
                if LEFT_OUT.contains(&name.to_string_lossy().as_ref()) && (top || name == "pgsql_tmp") {
                    continue;
                }
                let (source, target) = (entry.path(), to.join(&name));
                let copied = match entry.file_type()? {
                    t if t.is_dir() => copy_dir(&source, &target, false),
                    _ => std::fs::copy(&source, &target).map(|_| ()),
                };
                match copied {
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    other => other?,
                }
            }
            Ok(())
        }
        let data = standby.data_dir();
        copy_dir(&self.data_dir(), &data, true)?;
        for dir in EMPTY {
            std::fs::create_dir_all(data.join(dir))?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            // Postgres refuses a data directory others may read.
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// The server's major version (14, 15, …).
    pub async fn major(&self) -> anyhow::Result<u32> {
        let num: i32 = self
            .client()
            .await?
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await?
            .get(0);
        Ok(u32::try_from(num / 10_000)?)
    }

    /// Promotes this standby to a primary and returns once it takes writes.
    pub async fn promote(&self) -> anyhow::Result<()> {
        self.as_owner(&self.bindir.join("pg_ctl"), |c| {
            c.arg("-D").arg(self.data_dir()).args(["-w", "promote"]);
        })
        .with_context(|| format!("promotion failed; see {}", self.log_path().display()))?;
        crate::wait::until(
            "the promoted standby out of recovery",
            Duration::from_secs(60),
            || async {
                let Ok(client) = self.client().await else {
                    return Ok(None);
                };
                let recovering: bool = client.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0);
                Ok((!recovering).then_some(()))
            },
        )
        .await
    }

    /// Waits until the standby `name` has replayed everything this primary had written when
    /// called (as the standby last reported it, at least once a second).
    pub async fn wait_standby_caught_up(&self, name: &str) -> anyhow::Result<()> {
        let client = self.client().await?;
        let target: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        crate::wait::until(
            &format!("standby {name} to replay up to {target}"),
            Duration::from_secs(60),
            || async {
                let rows = client
                    .query(
                        "SELECT replay_lsn >= $1::text::pg_lsn FROM pg_stat_replication \
                         WHERE application_name = $2",
                        &[&target, &name],
                    )
                    .await?;
                let caught_up = rows.iter().any(|r| r.get::<_, Option<bool>>(0) == Some(true));
                Ok(caught_up.then_some(()))
            },
        )
        .await
    }

    fn start_server(&self) -> anyhow::Result<()> {
        self.as_owner(&self.bindir.join("pg_ctl"), |c| {
            c.arg("-D")
                .arg(self.data_dir())
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
            c.arg("-D").arg(self.data_dir()).args(["-w", "-m", mode, "stop"]);
        })
    }

    /// Starts the server again after [`TestPostgres::stop`].
    pub fn start_again(&self) -> anyhow::Result<()> {
        self.start_server()
    }

    pub fn restart(&self, mode: StopMode) -> anyhow::Result<()> {
        self.stop(mode)?;
        self.start_server()
    }

    /// Puts `line` first in `pg_hba.conf` (it wins over initdb's lines) and reloads.
    pub async fn prepend_hba(&self, line: &str) -> anyhow::Result<()> {
        let path = self.data_dir().join("pg_hba.conf");
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
        let data = self.data_dir();
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

    /// A client program (`pg_recvlogical`): the server's own installation's, else the
    /// distribution's (the npm server builds of other majors carry no client programs; the
    /// replication protocol they speak is the same).
    pub fn bin(&self, name: &str) -> PathBuf {
        let own = self.bindir.join(name);
        if own.exists() {
            return own;
        }
        distribution_bindir()
            .ok()
            .map(|dir| dir.join(name))
            .filter(|p| p.exists())
            .unwrap_or(own)
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

/// How [`drop_slot`] treats a reader still attached to the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotReader {
    /// The reader was stopped: wait (with a deadline) until the server has released the slot.
    /// A client's exit is not the server's release: the walsender lets go a moment later.
    Stopped,
    /// Simulate losing the slot under a live reader: terminate the walsender holding it first.
    Terminate,
}

/// Drops the logical slot `name` the way an operator must: only once no walsender holds it.
/// `pg_drop_replication_slot` fails with "is active for PID n" while one does, so dropping
/// straight after stopping capture races the walsender's own exit.
pub async fn drop_slot(
    client: &tokio_postgres::Client,
    name: &str,
    reader: SlotReader,
) -> anyhow::Result<()> {
    let deadline = Duration::from_secs(30);
    crate::wait::until(
        &format!("slot {name} to be released and dropped"),
        deadline,
        || async {
            let row = client
                .query_opt(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                    &[&name],
                )
                .await?;
            let Some(row) = row else {
                bail!("there is no slot {name} to drop");
            };
            if let Some(pid) = row.get::<_, Option<i32>>(0) {
                if reader == SlotReader::Stopped {
                    return Ok(None);
                }
                // The reader reconnects within moments: drop in the gap its walsender leaves.
                client.execute("SELECT pg_terminate_backend($1)", &[&pid]).await?;
                for _ in 0..100 {
                    match client
                        .execute("SELECT pg_drop_replication_slot($1)", &[&name])
                        .await
                    {
                        Ok(_) => return Ok(Some(())),
                        Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err(err) => return Err(err.into()),
                    }
                }
                return Ok(None);
            }
            // The slot may be taken again between the check and the drop (a reader reconnecting):
            // then the drop fails with "is active", and the next round looks again.
            match client
                .execute("SELECT pg_drop_replication_slot($1)", &[&name])
                .await
            {
                Ok(_) => Ok(Some(())),
                Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => Ok(None),
                Err(err) => Err(err.into()),
            }
        },
    )
    .await
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

/// The bin directory of PostgreSQL `major`: the distribution's when it is that major, else the
/// pinned server build `scripts/lib/postgres-majors` installs (`scripts/bootstrap` runs it).
pub fn bindir_of_major(major: u32) -> anyhow::Result<PathBuf> {
    let dist = distribution_bindir()?;
    if major_of(&dist)? == major {
        return Ok(dist);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/postgres-majors");
    let out = Command::new(&script)
        .args(["bindir", &major.to_string()])
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "PostgreSQL {major} is not one of the pinned majors: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    anyhow::ensure!(
        dir.join("postgres").exists(),
        "PostgreSQL {major} is not installed in {} (scripts/bootstrap installs it)",
        dir.display()
    );
    Ok(dir)
}

/// The major of the server in `bindir` (`postgres --version`).
fn major_of(bindir: &Path) -> anyhow::Result<u32> {
    let out = Command::new(bindir.join("postgres")).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.split('.').next()?.parse().ok())
        .with_context(|| format!("cannot read the major from `{}`", text.trim()))
}

fn bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    distribution_bindir()
}

/// The distribution's PostgreSQL: `pg_config`'s bin directory, else the newest under
/// /usr/lib/postgresql.
fn distribution_bindir() -> anyhow::Result<PathBuf> {
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
