//! Schema migrations: the steps that bring a file written by an older Tally up to the schema
//! this binary writes. They live above the domain because each step rebuilds domain records;
//! the store only refuses an older file and runs the steps in one transaction
//! ([`store::upgrade`]).

use std::path::Path;

use crate::store::WriteTxn;

use crate::store::{self, OpenError, Store, StoreError};

/// Opens the database at `path`, migrating it first when an older Tally wrote it. Every
/// operator command and the daemon open files through here.
pub fn open(path: &Path, cache_size_bytes: usize) -> Result<Store, OpenError> {
    match Store::open(path, cache_size_bytes) {
        Err(OpenError::OlderSchema { .. }) => {
            store::upgrade(path, cache_size_bytes, steps)?;
            Store::open(path, cache_size_bytes)
        }
        other => other,
    }
}

/// Opens the store the configuration names: the PostgreSQL database of `database_url` when it
/// is set, else the redb file (migrated first when an older Tally wrote it).
pub fn open_configured(config: &crate::config::Config) -> Result<Store, OpenError> {
    if config.database_url.is_set() {
        let ca_file = &config.postgres.ca_file;
        open_postgres(&store::pg::PgOptions {
            url: config.database_url.0.clone(),
            pool_size: usize::try_from(config.postgres.pool_size).unwrap_or(usize::MAX),
            connect_timeout_ms: config.postgres.connect_timeout_ms,
            pool_wait_ms: config.postgres.pool_wait_ms,
            ca_file: (!ca_file.as_os_str().is_empty()).then(|| ca_file.clone()),
        })
    } else {
        open(&config.database_path, config.cache_size_bytes())
    }
}

/// Opens a PostgreSQL database, upgrading it first when an older Tally wrote it. Nodes that
/// start together may race to upgrade: the losers' transactions conflict, and they open again
/// (a few times) to find it done.
pub fn open_postgres(options: &store::pg::PgOptions) -> Result<Store, OpenError> {
    let mut attempts = 0;
    loop {
        match Store::open_postgres(options) {
            Err(OpenError::OlderSchema { .. }) if attempts < UPGRADE_ATTEMPTS => {
                attempts += 1;
                match store::upgrade_postgres(options, steps) {
                    Err(e) if attempts < UPGRADE_ATTEMPTS => {
                        tracing::warn!(error = %e, "schema upgrade did not commit; opening again");
                    }
                    other => other?,
                }
            }
            other => return other,
        }
    }
}

/// Upgrades tried by one node before it gives up (another node's concurrent upgrade makes
/// one conflict).
const UPGRADE_ATTEMPTS: u32 = 3;

/// Every step from schema `from` on, in order, inside the upgrading transaction.
fn steps(tx: &WriteTxn, from: u32) -> Result<(), StoreError> {
    if from < 2 {
        let rebuilt = crate::ingest::event::rebuild_stable_identities(tx)?;
        tx.delete_table(store::tables::LEGACY_EVENT_IDENTITIES)?;
        let minutes = crate::ingest::usage_layout::rebuild_minute_rollups(tx)?;
        tracing::info!(
            rebuilt,
            minutes,
            "schema 1 → 2: stable event identities re-keyed by client id, minute rollups built"
        );
    }
    if from < 3 {
        let payments = crate::payments::migrate::to_schema_3(tx)?;
        tracing::info!(
            payments,
            "schema 2 → 3: payments record superseded attempts and held money"
        );
    }
    if from < 4 {
        let subscriptions = crate::billing::migrate::to_schema_4(tx)?;
        tracing::info!(
            subscriptions,
            "schema 3 → 4: subscriptions record their plan phases and trial"
        );
    }
    if from < 5 {
        let c = crate::ingest::usage_layout::to_schema_5(tx)?;
        tracing::info!(
            days = c.days,
            hours = c.hours,
            minutes = c.minutes,
            distinct = c.distinct,
            "schema 4 → 5: usage rollups keyed time first, with day rollups"
        );
    }
    if from < 6 {
        // Packed rollups and events (`ingest::rollup_record`, `ingest::event_record`) are new
        // rows only: the rows already written read as they are (a rollup is packed when an
        // event next changes it), so the upgrade rewrites nothing. The version keeps an older
        // binary from misreading packed rows.
        tracing::info!("schema 5 → 6: usage rollups and events are packed from now on");
    }
    Ok(())
}
