//! Consistent backups and restores of the database file.
//!
//! A backup copies every table from one read transaction (one MVCC snapshot) into a new redb
//! file, so it is consistent even while the daemon keeps writing: the daemon opens its file in
//! redb's single-writer mode, which lets a read-only handle in another process share it.
//!
//! A backup is complete only when its last write transaction has committed: that transaction
//! stores a completion marker in `meta` holding every table's row count and a blake3 digest of
//! everything copied. A backup killed part way leaves a file without the marker; restore
//! recomputes the counts and the digest and refuses any file whose marker is absent or
//! disagrees.

use std::collections::BTreeMap;
use std::path::Path;

use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};

use super::backup_copy::{self as copy, Batch, Message, Target};
use super::{tables, OpenError, ReadTxn, ReadableTable, StoreError, TableDef};

/// The `meta` key of a backup's completion marker. It is never copied from the source (a
/// restored database still holds the marker of the backup it came from).
pub const COMPLETION_KEY: &str = "backup_completion";

/// Why a backup or restore stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target exists; backups never overwrite.
    #[error("{0} already exists; choose a new file")]
    Exists(String),
    /// The file is not a backup that finished, or its content changed since.
    #[error("{file} is not a complete backup: {reason}; nothing was restored")]
    Incomplete {
        /// The file.
        file: String,
        /// What is missing or disagrees.
        reason: String,
    },
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Opening failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// File system failure.
    #[error("{0}")]
    Io(String),
    /// The thread writing the copy stopped; its own error says why.
    #[error("the backup's writer stopped")]
    WriterGone,
}

/// What a finished backup holds, as its completion marker records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// Rows per table (the marker itself not counted).
    pub rows: BTreeMap<String, u64>,
    /// blake3 (hex) over every table's name and rows, in table order.
    pub digest: String,
    /// When the backup finished.
    pub completed_at_ms: i64,
}

impl Completion {
    /// Rows in all tables.
    pub fn total_rows(&self) -> u64 {
        self.rows.values().sum()
    }
}

/// Counts and digests rows as they are copied or re-read: a tag byte, then length-prefixed
/// fields, so no two different contents hash alike. The bytes gather in a buffer that is
/// hashed [`HASH_BUFFER_BYTES`] at a time: blake3 hashes a long input several chunks at once,
/// a row's few bytes one at a time (the digest is the same either way).
struct Content {
    hasher: blake3::Hasher,
    buffer: Vec<u8>,
    rows: BTreeMap<String, u64>,
    table: String,
    in_table: u64,
}

/// Bytes gathered before they are hashed.
const HASH_BUFFER_BYTES: usize = 64 << 10;

impl Content {
    fn new() -> Self {
        Self {
            hasher: blake3::Hasher::new_derive_key("tally 2026 backup content v1"),
            buffer: Vec::with_capacity(HASH_BUFFER_BYTES * 2),
            rows: BTreeMap::new(),
            table: String::new(),
            in_table: 0,
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.buffer
            .extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        self.buffer.extend_from_slice(bytes);
    }

    fn begin_table(&mut self, name: &str) {
        self.end_table();
        self.buffer.push(b'T');
        self.field(name.as_bytes());
        self.table = name.to_string();
    }

    fn row(&mut self, key: &[u8], value: &[u8]) {
        self.buffer.push(b'R');
        self.field(key);
        self.field(value);
        self.in_table += 1;
        if self.buffer.len() >= HASH_BUFFER_BYTES {
            self.hash_buffer();
        }
    }

    fn hash_buffer(&mut self) {
        self.hasher.update(&self.buffer);
        self.buffer.clear();
    }

    fn end_table(&mut self) {
        if !self.table.is_empty() {
            self.rows
                .insert(std::mem::take(&mut self.table), self.in_table);
        }
        self.in_table = 0;
    }

    fn finish(mut self, completed_at_ms: i64) -> Completion {
        self.end_table();
        self.hash_buffer();
        Completion {
            rows: self.rows,
            digest: self.hasher.finalize().to_hex().to_string(),
            completed_at_ms,
        }
    }
}

/// Rows in every table of a snapshot (for progress).
pub fn count_rows(tx: &ReadTxn) -> Result<u64, StoreError> {
    let mut total = 0;
    for t in tables::TEXT_TABLES {
        total += tx.open_table(*t)?.len()?;
    }
    for t in tables::BYTES_TABLES {
        total += tx.open_table(*t)?.len()?;
    }
    for t in tables::SET_TABLES {
        total += tx.open_table(*t)?.len()?;
    }
    Ok(total)
}

/// A batch goes to the writing half at this many rows or bytes, whichever comes first.
const BATCH_ROWS: usize = 20_000;
const BATCH_BYTES: usize = 8 << 20;

/// Batches in flight between the halves: reading runs at most this far ahead of writing, so
/// a backup holds a bounded amount of memory however large the database.
const QUEUE_BATCHES: usize = 2;

/// Cache of the new file: the copy is written in key order and never read back while being
/// written, so a large cache would only hold pages nobody reads again.
const COPY_CACHE_BYTES: usize = 64 << 20;

/// Copies a snapshot into a new file at `out`; the last write transaction stores the
/// completion marker. Returns what the marker says. This thread reads and hashes; another
/// writes the copy.
pub fn snapshot(
    tx: &ReadTxn,
    out: &Path,
    now_ms: i64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Completion, BackupError> {
    if out.exists() {
        return Err(BackupError::Exists(out.display().to_string()));
    }
    let total = count_rows(tx)?;
    let db = redb::Builder::new()
        .set_cache_size(COPY_CACHE_BYTES)
        .create(out)
        .map_err(|e| BackupError::Store(e.into()))?;
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE_BATCHES);
        let writer = scope.spawn(move || copy::write(db, receiver));
        let mut feed = Feed {
            sender,
            batch: None,
            content: Content::new(),
            copied: 0,
            total,
            progress,
        };
        let read = feed.all(tx).and_then(|()| feed.finish(now_ms));
        drop(feed.sender);
        let written = writer
            .join()
            .map_err(|_| BackupError::Io("the backup's writer panicked".into()))?;
        match (read, written) {
            // The writer stopped first: its error is the cause.
            (Err(BackupError::WriterGone), written) => written.and(Err(BackupError::WriterGone)),
            (read, written) => {
                let completion = read?;
                written?;
                Ok(completion)
            }
        }
    })
}

/// The reading half of a backup: reads every table in order, hashes each row and sends the
/// rows in batches to the writing half.
struct Feed<'p> {
    sender: std::sync::mpsc::SyncSender<Message>,
    batch: Option<Batch>,
    content: Content,
    copied: u64,
    total: u64,
    progress: &'p mut dyn FnMut(u64, u64),
}

impl Feed<'_> {
    fn all(&mut self, tx: &ReadTxn) -> Result<(), BackupError> {
        walk(tx, &mut |visit| match visit {
            Visit::Table(target) => self.begin(target),
            Visit::Row(key, value) => self.row(key, value),
        })?;
        self.send()
    }

    /// Starts a table: the previous table's last rows go, and the new table is created in the
    /// copy even if it has no rows.
    fn begin(&mut self, target: Target) -> Result<(), BackupError> {
        self.send()?;
        self.content.begin_table(target.name());
        self.batch = Some(Batch::new(target));
        Ok(())
    }

    fn row(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackupError> {
        self.content.row(key, value);
        let batch = self
            .batch
            .as_mut()
            .ok_or_else(|| BackupError::Io("a row came before its table".into()))?;
        batch.push(key, value)?;
        if batch.rows() >= BATCH_ROWS || batch.bytes() >= BATCH_BYTES {
            let target = batch.target();
            self.send()?;
            self.batch = Some(Batch::new(target));
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), BackupError> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        self.copied += batch.rows() as u64;
        self.sender
            .send(Message::Rows(batch))
            .map_err(|_| BackupError::WriterGone)?;
        (self.progress)(self.copied, self.total);
        Ok(())
    }

    /// The marker goes into the last transaction: it exists only if everything before it
    /// committed.
    fn finish(&mut self, now_ms: i64) -> Result<Completion, BackupError> {
        self.send()?;
        let completion = std::mem::replace(&mut self.content, Content::new()).finish(now_ms);
        let marker = serde_json::to_vec(&completion)
            .map_err(|e| BackupError::Io(format!("cannot encode the completion marker: {e}")))?;
        self.sender
            .send(Message::Finish(marker))
            .map_err(|_| BackupError::WriterGone)?;
        Ok(completion)
    }
}

fn is_marker(table: &TableDef<&'static str, &'static [u8]>, key: &str) -> bool {
    table.name() == tables::META.name() && key == COMPLETION_KEY
}

/// What [`walk`] meets, in order.
enum Visit<'a> {
    /// The next table begins.
    Table(Target),
    /// A row of the current table (a set's rows have an empty value).
    Row(&'a [u8], &'a [u8]),
}

/// Every table of a snapshot and its rows in key order, the completion marker left out: the
/// one traversal that both the copy and its check hash, so both see the same stream.
fn walk(
    tx: &ReadTxn,
    visit: &mut dyn FnMut(Visit<'_>) -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    for t in tables::TEXT_TABLES {
        visit(Visit::Table(Target::Text(*t)))?;
        for entry in tx.open_table(*t)?.iter()? {
            let (k, v) = entry?;
            if !is_marker(t, k.value()) {
                visit(Visit::Row(k.value().as_bytes(), v.value()))?;
            }
        }
    }
    for t in tables::BYTES_TABLES {
        visit(Visit::Table(Target::Bytes(*t)))?;
        for entry in tx.open_table(*t)?.iter()? {
            let (k, v) = entry?;
            visit(Visit::Row(k.value(), v.value()))?;
        }
    }
    for t in tables::SET_TABLES {
        visit(Visit::Table(Target::Set(*t)))?;
        for entry in tx.open_table(*t)?.iter()? {
            let (k, _) = entry?;
            visit(Visit::Row(k.value(), &[]))?;
        }
    }
    Ok(())
}

/// Re-reads every table of a snapshot the way [`snapshot`] wrote it.
fn content_of(tx: &ReadTxn, now_ms: i64) -> Result<Completion, BackupError> {
    let mut content = Content::new();
    walk(tx, &mut |visit| {
        match visit {
            Visit::Table(target) => content.begin_table(target.name()),
            Visit::Row(key, value) => content.row(key, value),
        }
        Ok(())
    })?;
    Ok(content.finish(now_ms))
}

/// Checks that `file` is a backup that finished and is unchanged since: its completion marker
/// is present and agrees with the rows and digest recomputed from the file. Opens the file
/// read-only, so checking never alters it.
pub fn check_complete(file: &Path) -> Result<Completion, BackupError> {
    let incomplete = |reason: String| BackupError::Incomplete {
        file: file.display().to_string(),
        reason,
    };
    let db = open_read_only(file).map_err(|e| incomplete(format!("it cannot be opened ({e})")))?;
    let tx = db
        .begin_read()
        .map_err(|e| incomplete(format!("it cannot be read ({e})")))?;
    let marker = tx
        .open_table(tables::META.redb())
        .and_then(|meta| Ok(meta.get(COMPLETION_KEY)?.map(|v| v.value().to_vec())))
        .map_err(|e| incomplete(format!("it has no readable meta table ({e})")))?
        .ok_or_else(|| {
            incomplete("it has no completion marker (the backup did not finish)".into())
        })?;
    let recorded: Completion = serde_json::from_slice(&marker)
        .map_err(|e| incomplete(format!("its completion marker is unreadable ({e})")))?;
    let found = content_of(&ReadTxn::redb(tx), recorded.completed_at_ms)
        .map_err(|e| incomplete(format!("it cannot be read in full ({e})")))?;
    let names: std::collections::BTreeSet<&String> =
        recorded.rows.keys().chain(found.rows.keys()).collect();
    for name in names {
        let (want, got) = (recorded.rows.get(name), found.rows.get(name));
        if want != got {
            let show = |n: Option<&u64>| n.map_or_else(|| "no table".to_string(), u64::to_string);
            return Err(incomplete(format!(
                "table {name} has {} rows where the marker says {}",
                show(got),
                show(want)
            )));
        }
    }
    if found.digest != recorded.digest {
        return Err(incomplete(
            "its content differs from what the backup wrote (digest mismatch)".into(),
        ));
    }
    Ok(recorded)
}

/// Cache of a database opened read-only by a tool: backups, checks and reports read each page
/// about once, so a cache larger than this would only cost memory (redb's default is 1 GiB).
pub const READ_ONLY_CACHE_BYTES: usize = 64 << 20;

/// Opens a database read-only next to a running daemon (which holds it in single-writer mode).
pub fn open_read_only(path: &Path) -> Result<redb::ReadOnlyDatabase, OpenError> {
    redb::Builder::new()
        .set_cache_size(READ_ONLY_CACHE_BYTES)
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
        .open_read_only(path)
        .map_err(|e| OpenError::Io(path.to_path_buf(), e.to_string()))
}

/// A read transaction on `path`, whether or not a daemon is running.
pub fn read_snapshot(
    path: &Path,
) -> Result<
    (
        Option<redb::ReadOnlyDatabase>,
        Option<super::Store>,
        ReadTxn,
    ),
    BackupError,
> {
    match super::Store::open(path, READ_ONLY_CACHE_BYTES) {
        Ok(store) => {
            let tx = ReadTxn::redb(
                store
                    .database()?
                    .begin_read()
                    .map_err(|e| BackupError::Store(e.into()))?,
            );
            Ok((None, Some(store), tx))
        }
        // A running daemon holds it, or an older Tally wrote it: copy it as it is (a restore
        // migrates the copy), never change the source.
        Err(OpenError::InUse(_) | OpenError::OlderSchema { .. }) => {
            let db = open_read_only(path)?;
            let tx = db.begin_read().map_err(|e| BackupError::Store(e.into()))?;
            Ok((Some(db), None, ReadTxn::redb(tx)))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with `rows` events (values of a few hundred bytes) and a few big values.
    fn source(dir: &Path, rows: u32) -> super::super::Store {
        let store = super::super::Store::open(&dir.join("source.redb"), 1 << 20).expect("open");
        let db = store.database().expect("redb");
        let tx = db.begin_write().expect("write");
        {
            let mut events = tx.open_table(tables::EVENTS.redb()).expect("events");
            for i in 0..rows {
                let value = vec![(i % 251) as u8; 100 + (i % 300) as usize];
                events
                    .insert(i.to_be_bytes().as_slice(), value.as_slice())
                    .expect("insert");
            }
            let mut dictionaries = tx
                .open_table(tables::PROPERTY_DICTIONARIES.redb())
                .expect("dictionaries");
            for i in 0..3u8 {
                let big = vec![i; 3 << 20];
                dictionaries
                    .insert([i].as_slice(), big.as_slice())
                    .expect("big");
            }
        }
        tx.commit().expect("commit");
        store
    }

    #[test]
    fn a_copy_holds_every_row_and_checks_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Over two batches by rows, and the big values over one batch by bytes.
        let rows = BATCH_ROWS as u32 * 2 + 17;
        let store = source(dir.path(), rows);
        let tx = ReadTxn::redb(store.database().expect("redb").begin_read().expect("read"));
        let out = dir.path().join("copy.redb");
        let mut reports = Vec::new();
        let made =
            snapshot(&tx, &out, 7, &mut |done, total| reports.push((done, total))).expect("backup");
        assert_eq!(made.rows.get("events"), Some(&u64::from(rows)));
        assert_eq!(made.rows.get("property_dictionaries"), Some(&3));
        assert_eq!(made.total_rows(), count_rows(&tx).expect("count"));
        assert!(
            reports.windows(2).all(|w| w[0].0 <= w[1].0),
            "progress only grows"
        );
        assert_eq!(reports.last().map(|r| r.0), Some(made.total_rows()));
        assert_eq!(check_complete(&out).expect("complete"), made);
        // Every table exists in the copy, empty ones too, with the same rows.
        let copy = open_read_only(&out).expect("copy");
        let copy_tx = copy.begin_read().expect("read");
        for t in tables::BYTES_TABLES {
            let (a, b) = (
                tx.open_table(*t).expect("source").len().expect("len"),
                redb::ReadableTableMetadata::len(&copy_tx.open_table(t.redb()).expect("copy"))
                    .expect("len"),
            );
            assert_eq!(a, b, "{}", t.name());
        }
        assert!(matches!(
            snapshot(&tx, &out, 8, &mut |_, _| {}),
            Err(BackupError::Exists(_))
        ));
    }

    #[test]
    fn gathering_bytes_before_hashing_keeps_the_digest_of_earlier_backups() {
        let mut content = Content::new();
        let mut direct = blake3::Hasher::new_derive_key("tally 2026 backup content v1");
        let field = |h: &mut blake3::Hasher, b: &[u8]| {
            h.update(&(b.len() as u64).to_be_bytes());
            h.update(b);
        };
        for table in ["a", "b"] {
            content.begin_table(table);
            direct.update(b"T");
            field(&mut direct, table.as_bytes());
            for i in 0..5_000u32 {
                let value = vec![7u8; (i % 97) as usize];
                content.row(&i.to_be_bytes(), &value);
                direct.update(b"R");
                field(&mut direct, &i.to_be_bytes());
                field(&mut direct, &value);
            }
        }
        let done = content.finish(1);
        assert_eq!(done.digest, direct.finalize().to_hex().to_string());
        assert_eq!(done.rows.get("a"), Some(&5_000));
    }

    #[test]
    fn a_writer_that_fails_leaves_no_completion_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("copy.redb");
        let db = redb::Database::create(&out).expect("create");
        let (sender, receiver) = std::sync::mpsc::sync_channel(2);
        let mut bad = Batch::new(Target::Text(tables::META));
        bad.push(&[0xff, 0xfe], b"x").expect("push");
        sender.send(Message::Rows(bad)).expect("send");
        sender.send(Message::Finish(b"{}".to_vec())).expect("send");
        assert!(copy::write(db, receiver).is_err(), "a key that is not text");
        let err = check_complete(&out).expect_err("never complete");
        assert!(matches!(err, BackupError::Incomplete { .. }), "{err}");
    }

    #[test]
    fn a_reader_that_stops_early_leaves_the_writer_without_a_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("copy.redb");
        let db = redb::Database::create(&out).expect("create");
        let (sender, receiver) = std::sync::mpsc::sync_channel(2);
        let mut rows = Batch::new(Target::Bytes(tables::EVENTS));
        rows.push(b"k", b"v").expect("push");
        sender.send(Message::Rows(rows)).expect("send");
        drop(sender);
        assert!(copy::write(db, receiver).is_err());
        assert!(check_complete(&out).is_err());
    }
}
