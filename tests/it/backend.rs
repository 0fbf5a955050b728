//! Which storage backend the daemons under test use. The same test code is compiled twice:
//! as `it` (the embedded redb file) and as `it_postgres` (a PostgreSQL database per daemon on
//! one local cluster started for the whole test process from Debian's `postgresql` binaries).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use tally::store::pg::cluster::LocalCluster;

/// True in the `it_postgres` test binary.
pub fn postgres() -> bool {
    env!("CARGO_CRATE_NAME") == "it_postgres"
}

/// Ends a test early on PostgreSQL when what it checks is the redb file itself (its copy,
/// its lock, its control socket); the redb run of the same test still checks it.
macro_rules! redb_only {
    ($why:expr) => {
        if $crate::backend::postgres() {
            eprintln!("not applicable on PostgreSQL: {}", $why);
            return;
        }
    };
}
pub(crate) use redb_only;

/// Ends a test early on redb when it needs what only a shared database gives (several nodes).
macro_rules! postgres_only {
    ($why:expr) => {
        if !$crate::backend::postgres() {
            eprintln!("not applicable on redb: {}", $why);
            return;
        }
    };
}
pub(crate) use postgres_only;

struct Shared {
    cluster: LocalCluster,
    _dir: tempfile::TempDir,
}

static CLUSTER: OnceLock<Shared> = OnceLock::new();
static NEXT_DATABASE: AtomicU64 = AtomicU64::new(0);

fn cluster() -> &'static LocalCluster {
    &CLUSTER
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir for the PostgreSQL cluster");
            let cluster = LocalCluster::fast(dir.path()).unwrap_or_else(|e| {
                panic!("the PostgreSQL tests need Debian's postgresql package: {e}")
            });
            // Statics are never dropped: a watchdog stops the cluster once this process ends.
            cluster
                .stop_when_process_exits(std::process::id())
                .expect("watchdog");
            Shared { cluster, _dir: dir }
        })
        .cluster
}

/// A fresh, empty database on the shared cluster, as a `postgres://` URL.
pub fn fresh_database_url() -> String {
    let cluster = cluster();
    let name = format!("it_{}", NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
    cluster
        .create_database(&name)
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    cluster.url(&name)
}
