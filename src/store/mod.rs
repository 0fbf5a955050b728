//! The redb handle, its schema check, and the error types of everything that touches storage.
//!
//! Reads open their own MVCC snapshot through [`Store::read`] and never wait for the writer.
//! Writes go through [`writer`], the single task that owns every write transaction.

pub mod backup;
mod backup_copy;
pub mod codec;
#[cfg(test)]
pub(crate) mod fault;
pub mod keys;
pub mod pg;
pub mod restore;
pub mod space;
pub mod table;
pub mod tables;
pub mod touched;
pub mod transfer;
pub mod txn;
pub mod writer;
pub mod writer_stats;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable as _, TableHandle};

pub use codec::CodecError;
pub use keys::TenantId;
pub use table::{Guard, Range, ReadTable, ReadableTable, Table, TableDef};
pub use txn::{ReadTxn, WriteTxn};

/// The schema this binary writes. A database with a larger number was written by a newer Tally
/// and is refused rather than misread.
pub const SCHEMA_VERSION: u32 = 6;

/// The marker stored under `meta["format"]` that tells a Tally database from any other redb file.
const FORMAT_MARKER: &[u8] = b"tally";

/// A failure inside a read or write transaction.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb reported an error (I/O, corruption, a closed database).
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    /// A stored record could not be decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The database is being reopened after a failed commit.
    #[error("the database is reopening after a storage error")]
    Reopening,
    /// A stored invariant does not hold (a dangling index entry, a malformed key).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// PostgreSQL failed or could not be reached (a lost connection, a failed statement, a
    /// commit whose outcome is unknown); the batch fails and the writer reconnects.
    #[error("postgres: {0}")]
    Postgres(String),
    /// PostgreSQL could not serialize the transaction with a concurrent one (serialization
    /// failure or deadlock): nothing was written, and applying the batch again is safe.
    #[error("the transaction conflicted with a concurrent one")]
    Conflict,
}

impl StoreError {
    /// Whether the backend itself failed (as opposed to the data), so the writer must reopen or
    /// reconnect before the next batch.
    pub fn is_backend_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Storage(_) | StoreError::Reopening | StoreError::Postgres(_)
        )
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Storage(e.into())
            }
        }
    )*};
}
storage_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);

/// Why the database file could not be opened as a Tally database.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process (usually a running `tally serve`) holds the file.
    #[error("database {0} is in use by another process (is `tally serve` running?)")]
    InUse(PathBuf),
    /// The file exists but is not a redb database, or is a redb database of another program.
    #[error("{0} is not a Tally database: {1}")]
    NotTally(PathBuf, String),
    /// The file was written by a newer Tally.
    #[error("database {path} has schema version {found}; this binary supports up to {SCHEMA_VERSION}: upgrade tally")]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
    },
    /// The file was written by an older Tally: it opens after [`upgrade`] (the `migrate`
    /// module, above the domain, knows the steps).
    #[error(
        "database {path} has schema version {found}; it must be migrated to {SCHEMA_VERSION} first"
    )]
    OlderSchema {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
    },
    /// The folder could not be created, or another storage failure.
    #[error("cannot open database {0}: {1}")]
    Io(PathBuf, String),
    /// PostgreSQL could not be reached or refused the connection (a bad URL, a refused port,
    /// a wrong password, an unknown database): one line naming the host, port and cause, never
    /// the password.
    #[error("{0}")]
    Postgres(String),
}

/// The database handle shared by the writer and every reader: the embedded redb file, or a
/// PostgreSQL database that several nodes may share.
pub struct Store {
    backend: Backend,
    /// Evaluates what each transaction touched before it commits (alerts and the like).
    watcher: OnceLock<Arc<dyn Watcher>>,
}

enum Backend {
    Redb(RedbFile),
    Pg(pg::PgStore),
}

/// The redb file and the snapshot shared by readers.
struct RedbFile {
    path: PathBuf,
    cache_size_bytes: usize,
    backing: Backing,
    db: RwLock<Option<Arc<Database>>>,
    /// The snapshot of the latest commit, published by the writer before it acknowledges that
    /// commit and shared by every reader until the next one. Beginning a read transaction
    /// takes file-range locks (system calls) in redb's single-writer mode; sharing one per
    /// commit makes a read cost no system call, and publishing before acknowledging keeps
    /// read-your-writes: a client that got its reply reads a snapshot that includes its write.
    /// PostgreSQL has no such share: another node may have committed since, so every read
    /// begins its own snapshot there.
    snapshot: RwLock<Option<Arc<ReadTxn>>>,
}

/// Acts on what a transaction changed, inside that transaction, before it commits: what it
/// writes commits with the changes that caused it or not at all. Implemented above the domain
/// (`crate::watch`); the store only calls it.
pub trait Watcher: Send + Sync {
    /// Called once per transaction with every [`touched::Touch`] noted since it began (possibly
    /// none). Notes made by its own writes are available through [`touched::take`]. A storage
    /// error aborts the transaction.
    fn before_commit(&self, tx: &WriteTxn, touches: Vec<touched::Touch>) -> Result<(), StoreError>;
}

impl Store {
    /// Opens (creating if needed, with its folder) the database at `path` and checks its schema.
    pub fn open(path: &Path, cache_size_bytes: usize) -> Result<Self, OpenError> {
        Self::open_backed(path, cache_size_bytes, Backing::File)
    }

    /// Connects to a PostgreSQL database, creating Tally's schema in an empty one or checking
    /// an existing one.
    pub fn open_postgres(options: &pg::PgOptions) -> Result<Self, OpenError> {
        Ok(Self {
            backend: Backend::Pg(pg::PgStore::connect(options)?),
            watcher: OnceLock::new(),
        })
    }

    /// Opens the store over a backend that fails the I/O operations `faults` arms, so tests can
    /// check what a failed write, read or fsync does to acknowledged and unacknowledged writes.
    #[cfg(test)]
    pub(crate) fn open_faulty(
        path: &Path,
        cache_size_bytes: usize,
        faults: Arc<fault::Faults>,
    ) -> Result<Self, OpenError> {
        Self::open_backed(path, cache_size_bytes, Backing::Faulty(faults))
    }

    fn open_backed(
        path: &Path,
        cache_size_bytes: usize,
        backing: Backing,
    ) -> Result<Self, OpenError> {
        let db = open_database(path, cache_size_bytes, &backing)?;
        Ok(Self {
            backend: Backend::Redb(RedbFile {
                path: path.to_path_buf(),
                cache_size_bytes,
                backing,
                db: RwLock::new(Some(Arc::new(db))),
                snapshot: RwLock::new(None),
            }),
            watcher: OnceLock::new(),
        })
    }

    /// Installs the watcher every later transaction of the writer (and of [`Store::apply_one`])
    /// hands its touches to. Only the first call counts: the daemon sets it once at start-up.
    pub fn set_watcher(&self, watcher: Arc<dyn Watcher>) {
        let _ = self.watcher.set(watcher);
    }

    /// The installed watcher, if any.
    pub(crate) fn watcher(&self) -> Option<&Arc<dyn Watcher>> {
        self.watcher.get()
    }

    /// Hands what `tx` touched to the watcher (if any) and stops collecting.
    pub(crate) fn watch(&self, tx: &WriteTxn) -> Result<(), StoreError> {
        let touches = touched::take();
        let result = match self.watcher() {
            Some(w) => w.before_commit(tx, touches),
            None => Ok(()),
        };
        touched::end();
        result
    }

    /// The file this store lives in; empty on PostgreSQL.
    pub fn path(&self) -> &Path {
        match &self.backend {
            Backend::Redb(file) => &file.path,
            Backend::Pg(_) => Path::new(""),
        }
    }

    /// Whether this store is a PostgreSQL database (shared by several nodes, so in-process
    /// caches of its rows are not authoritative).
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Pg(_))
    }

    /// Round trips the last write transaction cost on PostgreSQL (None on redb).
    pub fn last_write_round_trips(&self) -> Option<u64> {
        match &self.backend {
            Backend::Pg(pg) => Some(pg.last_write_round_trips()),
            Backend::Redb(_) => None,
        }
    }

    /// The redb handle, or `Reopening` while the writer replaces it. Only redb-specific paths
    /// (backups, schema steps, tests) use it; PostgreSQL has none.
    pub fn database(&self) -> Result<Arc<Database>, StoreError> {
        match &self.backend {
            Backend::Redb(file) => file.database(),
            Backend::Pg(_) => Err(StoreError::Postgres(
                "this operation needs the embedded redb backend".into(),
            )),
        }
    }

    /// Begins a write transaction. The daemon's requests write through the writer; this is for
    /// the writer itself, operator commands and start-up work.
    pub fn begin_write(&self) -> Result<WriteTxn, StoreError> {
        match &self.backend {
            Backend::Redb(file) => Ok(WriteTxn::redb(file.database()?.begin_write()?)),
            Backend::Pg(pg) => Ok(WriteTxn::pg(pg.begin_write()?)),
        }
    }

    /// A consistent snapshot for reads, at least as new as every acknowledged write; never
    /// blocks on the writer.
    pub fn read(&self) -> Result<Arc<ReadTxn>, StoreError> {
        match &self.backend {
            Backend::Redb(file) => file.read(),
            Backend::Pg(pg) => Ok(Arc::new(ReadTxn::pg(pg.begin_read()?))),
        }
    }

    /// Replaces the shared snapshot with one of the latest commit. The writer calls it after
    /// every commit and before replying; on failure the shared snapshot is dropped and readers
    /// begin their own until the next publish.
    pub fn publish_snapshot(&self) {
        if let Backend::Redb(file) = &self.backend {
            let fresh = file
                .database()
                .and_then(|db| Ok(db.begin_read()?))
                .ok()
                .map(|tx| Arc::new(ReadTxn::redb(tx)));
            file.replace_snapshot(fresh);
        }
    }

    /// Drops the shared snapshot so readers begin their own: after a commit made outside the
    /// writer, and before the handle is reopened.
    pub fn forget_snapshot(&self) {
        if let Backend::Redb(file) = &self.backend {
            file.replace_snapshot(None);
        }
    }

    /// Runs one command in its own write transaction and commits it. Used by operator commands
    /// and start-up work that run without the writer task; the daemon's request paths go through
    /// the writer instead. On PostgreSQL a conflict with another node applies it again.
    pub fn apply_one<C: writer::Command>(&self, command: C) -> Result<C::Output, StoreError> {
        let mut outputs = self.apply_run(vec![command])?;
        outputs
            .pop()
            .ok_or_else(|| StoreError::Corrupt("a command returned no output".into()))
    }

    /// Runs adjacent commands of one type as a single run in one transaction, exactly as the
    /// writer groups them within a batch; tests use it to check that a run equals its commands
    /// one by one.
    pub fn apply_run<C: writer::Command>(
        &self,
        commands: Vec<C>,
    ) -> Result<Vec<C::Output>, StoreError> {
        // Spare copies only on PostgreSQL, where a conflict applies the run again; the first
        // attempt always applies the originals (a copy of some commands means something else,
        // such as a job completion's copy recording a retry).
        let spare = self.is_postgres().then(|| commands.clone());
        let mut result = self.apply_run_once(commands);
        let mut attempt = 0u32;
        while let (Err(StoreError::Conflict), Some(spare)) = (&result, &spare) {
            if attempt >= writer::MAX_CONFLICT_RETRIES {
                break;
            }
            attempt += 1;
            writer::conflict_backoff(attempt);
            result = self.apply_run_once(spare.clone());
        }
        result
    }

    fn apply_run_once<C: writer::Command>(
        &self,
        commands: Vec<C>,
    ) -> Result<Vec<C::Output>, StoreError> {
        let tx = self.begin_write()?;
        touched::begin();
        let outputs = C::apply_run(commands, &tx);
        let outputs = outputs.and_then(|o| self.watch(&tx).map(|()| o));
        touched::end();
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(e) => {
                let _ = tx.abort();
                return Err(e);
            }
        };
        tx.commit()?;
        self.forget_snapshot();
        Ok(outputs)
    }

    /// Replaces the handle after a failed commit: redb refuses writes on a handle whose commit
    /// failed and repairs the file when it is opened again; PostgreSQL connects again.
    pub fn reopen(&self) -> Result<(), OpenError> {
        match &self.backend {
            Backend::Redb(file) => file.reopen(),
            Backend::Pg(pg) => pg
                .reconnect()
                .map_err(|e| OpenError::Postgres(e.to_string())),
        }
    }
}

impl RedbFile {
    fn database(&self) -> Result<Arc<Database>, StoreError> {
        let guard = match self.db.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.clone().ok_or(StoreError::Reopening)
    }

    fn read(&self) -> Result<Arc<ReadTxn>, StoreError> {
        {
            let guard = match self.snapshot.read() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some(snapshot) = guard.as_ref() {
                return Ok(Arc::clone(snapshot));
            }
        }
        Ok(Arc::new(ReadTxn::redb(self.database()?.begin_read()?)))
    }

    fn replace_snapshot(&self, fresh: Option<Arc<ReadTxn>>) {
        let previous = {
            let mut guard = match self.snapshot.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::replace(&mut *guard, fresh)
        };
        // The old snapshot ends here unless a reader still holds it (outside the lock).
        drop(previous);
    }

    fn reopen(&self) -> Result<(), OpenError> {
        self.replace_snapshot(None);
        let mut guard = match self.db.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(old) = guard.take() {
            // Readers hold the Arc only for the moment it takes to begin a transaction; wait
            // (bounded) for them so the file lock is released before we open it again.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(old);
        }
        let db = open_database(&self.path, self.cache_size_bytes, &self.backing)?;
        *guard = Some(Arc::new(db));
        Ok(())
    }
}

/// What the database file is accessed through.
enum Backing {
    /// The file itself (redb's file backend).
    File,
    /// The file behind a backend that fails armed operations (tests only).
    #[cfg(test)]
    Faulty(Arc<fault::Faults>),
}

fn open_database(
    path: &Path,
    cache_size_bytes: usize,
    backing: &Backing,
) -> Result<Database, OpenError> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .map_err(|e| OpenError::Io(path.to_path_buf(), e.to_string()))?;
        }
    }
    // Single-writer mode: one process writes; a read-only handle (`tally backup`) may share the
    // file and read a consistent snapshot while the daemon serves.
    let mut builder = Database::builder();
    builder
        .set_cache_size(cache_size_bytes)
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
    let opened = match backing {
        Backing::File => builder.create(path),
        #[cfg(test)]
        Backing::Faulty(faults) => fault::FaultyBackend::create(path, Arc::clone(faults))
            .and_then(|backend| builder.create_with_backend(backend)),
    };
    let db = opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse(path.to_path_buf()),
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
            OpenError::NotTally(path.to_path_buf(), reason)
        }
        redb::DatabaseError::UpgradeRequired(v) => OpenError::NotTally(
            path.to_path_buf(),
            format!("redb file format {v} needs an upgrade"),
        ),
        other => OpenError::Io(path.to_path_buf(), other.to_string()),
    })?;
    check_schema(path, &db)?;
    Ok(db)
}

/// Initialises an empty file, or checks that an existing one is a Tally database this binary
/// can read; also creates any table a newer minor version added.
fn check_schema(path: &Path, db: &Database) -> Result<(), OpenError> {
    let io = |e: StoreError| OpenError::Io(path.to_path_buf(), e.to_string());
    let tx = db.begin_write().map_err(|e| io(e.into()))?;
    let existing_tables = tx
        .list_tables()
        .map_err(|e| io(e.into()))?
        .map(|t| t.name().to_string())
        .collect::<Vec<_>>();
    {
        let meta_exists = existing_tables.iter().any(|n| n == tables::META.name());
        if !meta_exists && !existing_tables.is_empty() {
            return Err(OpenError::NotTally(
                path.to_path_buf(),
                "it has tables but no Tally format marker".into(),
            ));
        }
        let mut meta = tx
            .open_table(tables::META.redb())
            .map_err(|e| io(e.into()))?;
        let marker = meta
            .get("format")
            .map_err(|e| io(e.into()))?
            .map(|v| v.value().to_vec());
        match marker {
            None if meta_exists => {
                return Err(OpenError::NotTally(
                    path.to_path_buf(),
                    "the meta table has no format marker".into(),
                ))
            }
            None => {
                meta.insert("format", FORMAT_MARKER)
                    .map_err(|e| io(e.into()))?;
                meta.insert("schema_version", SCHEMA_VERSION.to_be_bytes().as_slice())
                    .map_err(|e| io(e.into()))?;
                meta.insert(tables::META_EVENT_TYPES_RECORDED, [1u8].as_slice())
                    .map_err(|e| io(e.into()))?;
            }
            Some(m) if m != FORMAT_MARKER => {
                return Err(OpenError::NotTally(
                    path.to_path_buf(),
                    "the format marker is not Tally's".into(),
                ))
            }
            Some(_) => {
                let found = meta
                    .get("schema_version")
                    .map_err(|e| io(e.into()))?
                    .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
                    .map(u32::from_be_bytes)
                    .ok_or_else(|| {
                        OpenError::NotTally(path.to_path_buf(), "no schema version".into())
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(OpenError::NewerSchema {
                        path: path.to_path_buf(),
                        found,
                    });
                }
                if found < SCHEMA_VERSION {
                    return Err(OpenError::OlderSchema {
                        path: path.to_path_buf(),
                        found,
                    });
                }
            }
        }
    }
    tables::create_all(&tx).map_err(|e| io(e.into()))?;
    tx.commit().map_err(|e| io(e.into()))?;
    Ok(())
}

/// Brings a file written by an older schema up to [`SCHEMA_VERSION`]: `steps` runs with the
/// version found, inside one write transaction that also records the new version and creates
/// every table, so the file is either wholly old or wholly new. The store knows no step; the
/// `migrate` module (above the domain) supplies them. A file already current is left alone.
pub fn upgrade(
    path: &Path,
    cache_size_bytes: usize,
    steps: impl FnOnce(&WriteTxn, u32) -> Result<(), StoreError>,
) -> Result<(), OpenError> {
    let io = |e: StoreError| OpenError::Io(path.to_path_buf(), e.to_string());
    let mut builder = Database::builder();
    builder.set_cache_size(cache_size_bytes);
    let db = builder.create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse(path.to_path_buf()),
        other => OpenError::Io(path.to_path_buf(), other.to_string()),
    })?;
    let tx = db.begin_write().map_err(|e| io(e.into()))?;
    let found = {
        let meta = tx
            .open_table(tables::META.redb())
            .map_err(|e| io(e.into()))?;
        let version = meta
            .get("schema_version")
            .map_err(|e| io(e.into()))?
            .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
            .map(u32::from_be_bytes);
        version
            .ok_or_else(|| OpenError::NotTally(path.to_path_buf(), "no schema version".into()))?
    };
    if found >= SCHEMA_VERSION {
        return Ok(());
    }
    let tx = WriteTxn::redb(tx);
    steps(&tx, found).map_err(io)?;
    let Some(tx) = tx.into_redb() else {
        return Err(io(StoreError::Corrupt(
            "a redb upgrade lost its transaction".into(),
        )));
    };
    tx.open_table(tables::META.redb())
        .map_err(|e| io(e.into()))?
        .insert("schema_version", SCHEMA_VERSION.to_be_bytes().as_slice())
        .map_err(|e| io(e.into()))?;
    tables::create_all(&tx).map_err(|e| io(e.into()))?;
    tx.commit().map_err(|e| io(e.into()))
}

/// [`upgrade`] for a PostgreSQL database: the same steps in one `SERIALIZABLE` transaction
/// that also records the new version, after creating the tables this version adds. Every node
/// must run this binary before it serves: an older node still running writes the old layout.
/// Nodes starting together race safely: one commits, the others fail with a conflict and find
/// the schema current when they open again.
pub fn upgrade_postgres(
    options: &pg::PgOptions,
    steps: impl FnOnce(&WriteTxn, u32) -> Result<(), StoreError>,
) -> Result<(), OpenError> {
    let pg = pg::PgStore::connect_to_upgrade(options)?;
    let io = |e: StoreError| {
        OpenError::Postgres(format!("cannot upgrade the schema at {}: {e}", pg.target()))
    };
    let tx = WriteTxn::pg(pg.begin_write().map_err(io)?);
    let found = {
        let meta = tx.open_table(tables::META).map_err(io)?;
        let version = meta.get("schema_version").map_err(io)?;
        version
            .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| io(StoreError::Corrupt("no schema version".into())))?
    };
    if found >= SCHEMA_VERSION {
        return tx.abort().map_err(io);
    }
    steps(&tx, found).map_err(io)?;
    tx.open_table(tables::META)
        .map_err(io)?
        .insert("schema_version", SCHEMA_VERSION.to_be_bytes().as_slice())
        .map_err(io)?;
    tx.commit().map_err(io)
}

/// Reads and decodes one record.
pub fn get_record<T, K>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: K,
) -> Result<Option<T>, StoreError>
where
    T: serde::de::DeserializeOwned,
    K: AsRef<[u8]>,
{
    match table.get(key.as_ref())? {
        Some(guard) => Ok(Some(codec::decode(guard.value())?)),
        None => Ok(None),
    }
}

/// Encodes and writes one record.
pub fn put_record<T: serde::Serialize>(
    table: &mut Table<&'static [u8], &'static [u8]>,
    key: &[u8],
    value: &T,
) -> Result<(), StoreError> {
    let bytes = codec::encode(value)?;
    table.insert(key, bytes.as_slice())?;
    Ok(())
}

/// Reads a `u64` counter from `meta`, increments it, and returns the new value.
pub fn next_counter(tx: &WriteTxn, name: &str) -> Result<u64, StoreError> {
    let mut meta = tx.open_table(tables::META)?;
    let current = meta
        .get(name)?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let next = current
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt(format!("counter {name} overflowed")))?;
    meta.insert(name, next.to_be_bytes().as_slice())?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_other_files_and_newer_schemas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, vec![b'x'; 8192]).expect("write");
        let err = Store::open(&text, 1 << 20).err().expect("must refuse");
        assert!(
            matches!(err, OpenError::NotTally(..) | OpenError::Io(..)),
            "{err}"
        );

        let foreign = dir.path().join("foreign.redb");
        {
            let db = Database::create(&foreign).expect("create");
            let tx = db.begin_write().expect("tx");
            {
                let t: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("other");
                tx.open_table(t)
                    .expect("open")
                    .insert("a", &1)
                    .expect("insert");
            }
            tx.commit().expect("commit");
        }
        let err = Store::open(&foreign, 1 << 20).err().expect("must refuse");
        assert!(matches!(err, OpenError::NotTally(..)), "{err}");

        let newer = dir.path().join("newer.redb");
        drop(Store::open(&newer, 1 << 20).expect("fresh"));
        {
            let db = Database::create(&newer).expect("open");
            let tx = db.begin_write().expect("tx");
            tx.open_table(tables::META.redb())
                .expect("meta")
                .insert("schema_version", 99u32.to_be_bytes().as_slice())
                .expect("insert");
            tx.commit().expect("commit");
        }
        let err = Store::open(&newer, 1 << 20).err().expect("must refuse");
        assert!(
            matches!(err, OpenError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_second_handle_is_refused_as_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/t.redb");
        let _first = Store::open(&path, 1 << 20).expect("first");
        let err = Store::open(&path, 1 << 20).err().expect("second");
        assert!(matches!(err, OpenError::InUse(_)), "{err}");
    }
}
