//! The PostgreSQL the simulation's two-node run uses: one throwaway local cluster per test
//! binary (stopped when the process exits), and a fresh database for every seed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::world::Deployment;
use crate::store::pg::cluster::{find_binaries, LocalCluster};

/// The test binary's cluster, started on first use; `None` (having said why) when no
/// PostgreSQL binaries are installed and `REQUIRE_POSTGRES` is not set.
pub fn cluster() -> Option<&'static LocalCluster> {
    static CLUSTER: OnceLock<Option<LocalCluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            if find_binaries().is_none() {
                assert!(
                    std::env::var_os("REQUIRE_POSTGRES").is_none(),
                    "REQUIRE_POSTGRES is set but no PostgreSQL binaries (initdb, pg_ctl) were found"
                );
                eprintln!(
                    "sim_postgres skipped: no PostgreSQL binaries (initdb, pg_ctl) on this \
                     machine; install the postgresql package to run it"
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

/// A fresh, empty database on the cluster for `seed`.
pub fn fresh_database(seed: u64) -> Result<Deployment, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let cluster = cluster().ok_or("no PostgreSQL cluster")?;
    let name = format!("sim_{seed}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    cluster
        .create_database(&name)
        .map_err(|e| format!("cannot create database {name}: {e}"))?;
    Ok(Deployment::Postgres {
        url: cluster.url(&name),
    })
}
