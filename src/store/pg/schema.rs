//! Creating Tally's schema in an empty database, or checking an existing one, in one
//! transaction: the same format marker and version as the redb file.

use std::path::PathBuf;

use super::client::Conn;
use super::sql;
use crate::store::{tables, OpenError, StoreError, FORMAT_MARKER, SCHEMA_VERSION};

/// Held (for the transaction) by every node creating or checking the schema, so nodes starting
/// together do not race to create the same tables. Correctness never depends on it.
const SCHEMA_LOCK_KEY: i64 = 0x7461_6c6c_7900;

/// Every Tally table name.
pub(crate) fn table_names() -> impl Iterator<Item = &'static str> {
    tables::TEXT_TABLES
        .iter()
        .map(|t| t.name())
        .chain(tables::BYTES_TABLES.iter().map(|t| t.name()))
        .chain(tables::SET_TABLES.iter().map(|t| t.name()))
}

/// How [`ensure`] treats an existing database's schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// Refuse one this binary does not write (older or newer).
    Current,
    /// Accept an older one, for the upgrade that follows; still refuse a newer one.
    OlderToUpgrade,
}

/// Creates and stamps the schema in an empty database, or checks that it is a Tally database
/// this binary can use (creating any table a newer minor version added).
pub(crate) fn ensure(conn: &mut Conn, target: &str, version: Version) -> Result<(), OpenError> {
    let io =
        |e: StoreError| OpenError::Postgres(format!("cannot prepare the schema at {target}: {e}"));
    conn.batch(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY});"
    ))
    .map_err(io)?;
    let result = check_and_create(conn, target, version);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.batch(end).map_err(io);
    result.and(ended)
}

fn check_and_create(conn: &mut Conn, target: &str, version: Version) -> Result<(), OpenError> {
    let io =
        |e: StoreError| OpenError::Postgres(format!("cannot prepare the schema at {target}: {e}"));
    let path = || PathBuf::from(format!("postgres://{target}"));
    let existing: Vec<String> = conn
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema()",
            &[],
        )
        .map_err(io)?
        .iter()
        .filter_map(|row| row.try_get::<_, String>(0).ok())
        .collect();
    let meta = sql::table_name(tables::META.name());
    let meta_exists = existing.contains(&meta);
    if !meta_exists && !existing.is_empty() {
        return Err(OpenError::NotTally(
            path(),
            "it has tables but no Tally format marker".into(),
        ));
    }
    if meta_exists {
        match check_version(conn, target) {
            Err(OpenError::OlderSchema { .. }) if version == Version::OlderToUpgrade => {}
            other => other?,
        }
    }
    let create: String = table_names().map(sql::create).collect();
    conn.batch(&create).map_err(io)?;
    if !meta_exists {
        let keys = vec![
            b"format".to_vec(),
            b"schema_version".to_vec(),
            tables::META_EVENT_TYPES_RECORDED.as_bytes().to_vec(),
        ];
        let values = vec![
            FORMAT_MARKER.to_vec(),
            SCHEMA_VERSION.to_be_bytes().to_vec(),
            vec![1u8],
        ];
        let step = sql::upsert(conn, tables::META.name(), &keys, &values).map_err(io)?;
        sql::first_error(conn.pipeline(vec![step])).map_err(io)?;
    }
    Ok(())
}

fn check_version(conn: &mut Conn, target: &str) -> Result<(), OpenError> {
    let io =
        |e: StoreError| OpenError::Postgres(format!("cannot read the schema at {target}: {e}"));
    let path = PathBuf::from(format!("postgres://{target}"));
    let meta = tables::META.name();
    let marker = sql::get(conn, meta, b"format").map_err(io)?;
    match marker {
        None => Err(OpenError::NotTally(
            path,
            "the meta table has no format marker".into(),
        )),
        Some(m) if m != FORMAT_MARKER => Err(OpenError::NotTally(
            path,
            "the format marker is not Tally's".into(),
        )),
        Some(_) => {
            let found = sql::get(conn, meta, b"schema_version")
                .map_err(io)?
                .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| OpenError::NotTally(path.clone(), "no schema version".into()))?;
            if found > SCHEMA_VERSION {
                return Err(OpenError::NewerSchema { path, found });
            }
            if found < SCHEMA_VERSION {
                return Err(OpenError::OlderSchema { path, found });
            }
            Ok(())
        }
    }
}
