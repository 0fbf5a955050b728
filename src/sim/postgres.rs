//! The PostgreSQL the simulation's two-node run uses: one throwaway local cluster per test
//! binary (stopped when the process exits), and a fresh database for every seed.

use std::sync::atomic::{AtomicU64, Ordering};

use super::world::Deployment;
use crate::store::pg::cluster::LocalCluster;

/// The test binary's cluster, started on first use; `None` (having said why) when no
/// PostgreSQL binaries are installed and `REQUIRE_POSTGRES` is not set.
pub fn cluster() -> Option<&'static LocalCluster> {
    crate::store::pg::cluster::shared_for_tests()
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
