//! What a benchmark drives: one daemon on a temporary redb file (the default), one or several
//! daemons sharing a PostgreSQL database (a local cluster the benchmark starts, or a database
//! the user names), or a daemon already running elsewhere.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

use crate::store::pg::cluster::LocalCluster;

/// Where the daemons keep their data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A redb file in the run's temporary folder.
    Redb,
    /// A PostgreSQL cluster started for the run in its temporary folder (fsync on).
    LocalPostgres,
    /// An existing, empty PostgreSQL database.
    Postgres(String),
}

impl Backend {
    /// How the report names it (never a URL: it may hold a password).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Redb => "redb",
            Self::LocalPostgres => "postgresql (local cluster, fsync on)",
            Self::Postgres(_) => "postgresql (--database-url)",
        }
    }
}

/// The most daemons one run starts.
pub const MAX_NODES: usize = 16;

/// The daemons under test. Clients spread over `bases`; fixtures and checks use the first.
pub struct Target {
    /// The first node's base URL.
    pub base: String,
    /// Every node's base URL (one entry when there is one node).
    pub bases: Vec<String>,
    /// An API key valid on every node.
    pub key: String,
    children: Vec<Child>,
    cluster: Option<LocalCluster>,
    dir: Option<PathBuf>,
    /// The redb file, when the run started a daemon on one.
    pub file: Option<PathBuf>,
}

impl Drop for Target {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The daemons are gone before their database stops, and both before the folder goes.
        if let Some(mut cluster) = self.cluster.take() {
            let _ = cluster.stop();
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Target {
    /// A daemon someone else runs.
    pub fn remote(url: &str, key: &str) -> Self {
        let base = url.trim_end_matches('/').to_string();
        Self {
            bases: vec![base.clone()],
            base,
            key: key.to_string(),
            children: Vec::new(),
            cluster: None,
            dir: None,
            file: None,
        }
    }

    /// Another handle on the same first node that owns nothing (for a task of its own).
    pub fn clone_remote(&self) -> Self {
        Self::remote(&self.base, &self.key)
    }

    /// Starts `nodes` daemons (this binary) on a fresh database of `backend`, one after the
    /// other, so the first creates the schema and the default tenant and the others join.
    pub fn start(backend: &Backend, nodes: usize) -> anyhow::Result<Self> {
        if !(1..=MAX_NODES).contains(&nodes) {
            bail!("--nodes must be a number from 1 to {MAX_NODES}");
        }
        if nodes > 1 && *backend == Backend::Redb {
            bail!("--nodes above 1 needs --postgres or --database-url: a redb file has one daemon");
        }
        let dir = std::env::temp_dir().join(format!(
            "tally-bench-{}",
            crate::id::Id::generate().display("run")
        ));
        std::fs::create_dir_all(&dir)?;
        let mut target = Self {
            base: String::new(),
            bases: Vec::new(),
            key: String::new(),
            children: Vec::new(),
            cluster: None,
            dir: Some(dir.clone()),
            file: (*backend == Backend::Redb).then(|| dir.join("bench.redb")),
        };
        let storage = match backend {
            Backend::Redb => format!("database_path = \"{}\"", dir.join("bench.redb").display()),
            Backend::Postgres(url) => format!("database_url = {}", toml_string(url)),
            Backend::LocalPostgres => {
                let cluster = LocalCluster::start(&dir.join("postgres"))
                    .context("cannot start a local PostgreSQL cluster")?;
                cluster
                    .create_database("tally_bench")
                    .context("cannot create the benchmark database")?;
                let url = cluster.url("tally_bench");
                target.cluster = Some(cluster);
                format!("database_url = {}", toml_string(&url))
            }
        };
        for node in 0..nodes {
            let config = dir.join(format!("node-{node}.toml"));
            std::fs::write(&config, node_config(&storage))?;
            let (child, base, key) = spawn(&config)?;
            target.children.push(child);
            target.bases.push(base);
            if let Some(key) = key {
                target.key = key;
            }
        }
        if target.key.is_empty() {
            bail!("the first daemon printed no API key: is the database empty?");
        }
        target.base = target.bases[0].clone();
        Ok(target)
    }

    /// Bytes the redb file occupies on disk (allocated blocks, not its apparent length).
    pub fn allocated_bytes(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(self.file.as_ref()?).ok()?;
        Some(meta.blocks() * 512)
    }

    /// Room per table in the redb file, from a read-only snapshot beside the daemon.
    pub fn space(&self) -> Option<Vec<crate::store::space::TableSpace>> {
        let (_db, _store, tx) = crate::store::backup::read_snapshot(self.file.as_ref()?).ok()?;
        crate::store::space::measure(&tx).ok()
    }

    /// The largest peak resident set of the daemons this run started, KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.children
            .iter()
            .filter_map(|c| peak_rss_of(c.id()))
            .max()
    }
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One node's configuration: everything but the storage line is the same on every node.
fn node_config(storage: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n{storage}\n[log]\nlevel = \"warn\"\n[billing]\nscheduler_interval_ms = 0\ngrace_secs = 0\n[writer]\nqueue_capacity = 65536\n[notifications]\nallow_http = true\nallow_private_targets = true\n"
    )
}

/// Starts one daemon with `config` and waits until it listens; returns it, its base URL and
/// the API key it printed (only the node that created the default tenant prints one).
fn spawn(config: &Path) -> anyhow::Result<(Child, String, Option<String>)> {
    let log = config.with_extension("log");
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let mut command = Command::new(exe);
    // The temporary configuration is the whole truth: no TALLY_* override of the caller's
    // environment may point the daemon elsewhere.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TALLY_") {
            command.env_remove(&name);
        }
    }
    let mut child = command
        .args(["--config", config.to_str().unwrap_or_default(), "serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log)?))
        .spawn()
        .context("cannot start the daemon")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut key = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(k) = line.split("(shown once): ").nth(1) {
            key = Some(k.trim().to_string());
        }
        if let Some(addr) = line.strip_prefix("tally: listening on ") {
            return Ok((child, addr.trim().to_string(), key));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    bail!("the daemon exited before listening: {}", said.trim())
}

fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_nodes_need_a_shared_database() {
        let err = Target::start(&Backend::Redb, 3)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--postgres")));
        let err = Target::start(&Backend::Redb, 0)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--nodes")));
    }

    #[test]
    fn a_database_url_is_quoted_for_toml() {
        assert_eq!(
            toml_string(r#"postgres://a"b\c"#),
            r#""postgres://a\"b\\c""#
        );
        assert!(node_config("database_url = \"x\"").contains("\ndatabase_url = \"x\"\n"));
    }
}
