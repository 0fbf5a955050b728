//! A throwaway PostgreSQL cluster on 127.0.0.1 for tests, benchmarks and trying Tally out:
//! `initdb` into a folder, `pg_ctl start` on a free port, stopped hard when dropped.
//!
//! The superuser `postgres` connects without a password from 127.0.0.1; every other role
//! needs its password (so a wrong password can be shown to fail). When run as root (which
//! `initdb` refuses), the binaries run as the `postgres` user.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why a local cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No `initdb`/`pg_ctl` on PATH or under `/usr/lib/postgresql/*/bin`.
    #[error("no PostgreSQL binaries found (install the `postgresql` package)")]
    NoBinaries,
    /// A command failed.
    #[error("{0}")]
    Command(String),
}

/// A running local cluster; stopped (immediately, no checkpoint) when dropped.
pub struct LocalCluster {
    bin: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
}

/// The folder holding `initdb` and `pg_ctl`: PATH first, else the highest Debian version.
pub fn find_binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    if let Some(dir) = on_path {
        // Debian links only some tools onto PATH; use the real folder when it is a link.
        return Some(
            std::fs::canonicalize(dir.join("initdb"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or(dir),
        );
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Runs `tool` from the PostgreSQL binaries in `bin` (as the `postgres` user when `as_postgres`:
/// initdb and the server refuse root), returning its stdout or one error line with its output.
pub fn run_tool(
    bin: &Path,
    as_postgres: bool,
    tool: &str,
    args: &[&std::ffi::OsStr],
) -> Result<String, ClusterError> {
    let program = bin.join(tool);
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ClusterError::Command(format!("cannot run {}: {e}", program.display())))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(ClusterError::Command(format!(
            "{tool} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        )))
    }
}

/// Whether this process runs as root (the PostgreSQL binaries then run as `postgres`).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| ClusterError::Command(format!("no free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| ClusterError::Command(format!("no free port: {e}")))
}

impl LocalCluster {
    /// Creates a cluster in `dir/data` and starts it with `fsync` on.
    pub fn start(dir: &Path) -> Result<Self, ClusterError> {
        Self::start_with(dir, true)
    }

    /// Like [`LocalCluster::start`] with `fsync` off: faster, for tests only (a crash of the
    /// machine may lose what it acknowledged).
    pub fn fast(dir: &Path) -> Result<Self, ClusterError> {
        Self::start_with(dir, false)
    }

    fn start_with(dir: &Path, fsync: bool) -> Result<Self, ClusterError> {
        let bin = find_binaries().ok_or(ClusterError::NoBinaries)?;
        let mut cluster = Self {
            bin,
            dir: dir.to_path_buf(),
            data: dir.join("data"),
            port: free_port()?,
            as_postgres: is_root(),
            running: false,
        };
        cluster.init()?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync={} \
             -c max_connections=200",
            cluster.port,
            cluster.dir.display(),
            if fsync { "on" } else { "off" }
        );
        let log = cluster.dir.join("postgres.log");
        cluster.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-D".as_ref(),
                cluster.data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ],
        )?;
        cluster.running = true;
        Ok(cluster)
    }

    fn init(&self) -> Result<(), ClusterError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            ClusterError::Command(format!("cannot create {}: {e}", self.dir.display()))
        })?;
        if self.as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.dir)
                .status()
                .map_err(|e| ClusterError::Command(format!("chown: {e}")))?;
            if !status.success() {
                return Err(ClusterError::Command(format!(
                    "chown of {} failed",
                    self.dir.display()
                )));
            }
        }
        self.run(
            "initdb",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
        )?;
        let hba = "local all all trust\n\
                   host all postgres 127.0.0.1/32 trust\n\
                   host all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(self.data.join("pg_hba.conf"), hba)
            .map_err(|e| ClusterError::Command(format!("cannot write pg_hba.conf: {e}")))
    }

    /// Runs one of the cluster's binaries (as `postgres` when this process is root).
    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<String, ClusterError> {
        run_tool(&self.bin, self.as_postgres, tool, args)
    }

    /// The port the cluster listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for the superuser on database `db` (no TLS: the cluster is local).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Runs SQL as the superuser on database `db` with `psql`; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, ClusterError> {
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-X".as_ref(),
                "-q".as_ref(),
                "-A".as_ref(),
                "-t".as_ref(),
                "-v".as_ref(),
                "ON_ERROR_STOP=1".as_ref(),
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-d".as_ref(),
                db.as_ref(),
                "-c".as_ref(),
                sql.as_ref(),
            ],
        )
    }

    /// Creates an empty database.
    pub fn create_database(&self, name: &str) -> Result<(), ClusterError> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))
            .map(|_| ())
    }

    /// Stops the server hard (`pg_ctl stop -m immediate`), as a crash would.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-w".as_ref(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
            ],
        )
        .map(|_| ())
    }

    /// Stops the cluster and deletes its folder once the process with `pid` has exited
    /// (a static cluster shared by a test binary is never dropped).
    pub fn stop_when_process_exits(&self, pid: u32) -> Result<(), ClusterError> {
        let pg_ctl = self.bin.join("pg_ctl");
        let prefix = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {prefix}'{}' stop -m immediate -D '{}' >/dev/null 2>&1; rm -rf '{}'",
            pg_ctl.display(),
            self.data.display(),
            self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|_| ())
            .map_err(|e| ClusterError::Command(format!("cannot watch process {pid}: {e}")))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The cluster a test binary shares, started on first use and stopped when the process ends;
/// `None` (having said why) when no PostgreSQL binaries are installed, a failure when
/// `REQUIRE_POSTGRES` is set (CI installs them).
#[cfg(test)]
pub fn shared_for_tests() -> Option<&'static LocalCluster> {
    static CLUSTER: std::sync::OnceLock<Option<LocalCluster>> = std::sync::OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            if find_binaries().is_none() {
                assert!(
                    std::env::var_os("REQUIRE_POSTGRES").is_none(),
                    "REQUIRE_POSTGRES is set but no PostgreSQL binaries (initdb, pg_ctl) were found"
                );
                eprintln!(
                    "skipped: no PostgreSQL binaries (initdb, pg_ctl) on this machine; install \
                     the postgresql package to run it"
                );
                return None;
            }
            let dir = tempfile::tempdir().expect("tempdir").keep();
            let cluster = LocalCluster::fast(&dir).expect("start the local PostgreSQL cluster");
            // Statics are never dropped: a watchdog stops the cluster once this process ends.
            cluster
                .stop_when_process_exits(std::process::id())
                .expect("watch the test process");
            Some(cluster)
        })
        .as_ref()
}
