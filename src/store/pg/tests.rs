//! Tests of the PostgreSQL backend against a local cluster: the schema and its refusals, the
//! same operations giving the same answers on redb and PostgreSQL, conflicts between nodes,
//! and round trips that do not grow with a batch.

use std::ops::Bound;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;

use super::cluster::LocalCluster;
use super::PgOptions;
use crate::store::writer::{self, Command, WriterLimits};
use crate::store::{tables, Backend, OpenError, ReadableTable, Store, StoreError, WriteTxn};

/// The test binary's cluster (shared with the simulation's PostgreSQL run).
fn cluster() -> Option<&'static LocalCluster> {
    super::cluster::shared_for_tests()
}

/// A fresh database's URL.
fn database(cluster: &LocalCluster, name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let db = format!("{name}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    cluster.create_database(&db).expect("create database");
    cluster.url(&db)
}

fn options(url: &str) -> PgOptions {
    PgOptions {
        url: url.to_string(),
        pool_size: 4,
        connect_timeout_ms: 5_000,
        pool_wait_ms: 5_000,
        ca_file: None,
    }
}

fn open(url: &str) -> Store {
    Store::open_postgres(&options(url)).expect("open postgres")
}

fn open_err(url: &str) -> OpenError {
    match Store::open_postgres(&options(url)) {
        Ok(_) => panic!("{url} must be refused"),
        Err(e) => e,
    }
}

#[test]
fn creates_the_schema_once_and_refuses_what_it_cannot_use() {
    let Some(cluster) = cluster() else { return };
    let url = database(cluster, "schema");
    drop(open(&url));
    let db = url.rsplit('/').next().and_then(|s| s.split('?').next());
    let db = db.expect("db name");
    let tables = cluster
        .psql(
            db,
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'tally\\_%'",
        )
        .expect("count tables");
    let expected =
        tables::TEXT_TABLES.len() + tables::BYTES_TABLES.len() + tables::SET_TABLES.len();
    assert_eq!(tables.trim(), expected.to_string());
    drop(open(&url));

    cluster
        .psql(
            db,
            "UPDATE tally_meta SET v = '\\x00000063'::bytea WHERE k = 'schema_version'::bytea",
        )
        .expect("bump version");
    let err = open_err(&url);
    assert!(
        matches!(err, OpenError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    cluster
        .psql(
            db,
            "UPDATE tally_meta SET v = '\\x00000001'::bytea WHERE k = 'schema_version'::bytea",
        )
        .expect("lower version");
    let err = open_err(&url);
    assert!(
        matches!(err, OpenError::OlderSchema { found: 1, .. }),
        "{err}"
    );

    let other = database(cluster, "foreign");
    let other_db = other.rsplit('/').next().and_then(|s| s.split('?').next());
    cluster
        .psql(other_db.expect("db"), "CREATE TABLE invoices (id int)")
        .expect("foreign table");
    let err = open_err(&other);
    assert!(matches!(err, OpenError::NotTally(..)), "{err}");
}

#[test]
fn connection_failures_are_one_clear_line_without_the_password() {
    let Some(cluster) = cluster() else { return };
    let url = database(cluster, "auth");
    let db = url.rsplit('/').next().and_then(|s| s.split('?').next());
    let db = db.expect("db");
    let _ = cluster.psql(
        "postgres",
        "DO $$ BEGIN CREATE ROLE tally_pw LOGIN PASSWORD 'right-horse'; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    );
    let port = cluster.port();
    let wrong = format!("postgres://tally_pw:wrong-battery@127.0.0.1:{port}/{db}?sslmode=disable");
    let message = open_err(&wrong).to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(!message.contains("wrong-battery"), "{message}");
    assert!(!message.contains('\n'), "{message}");

    let unknown = cluster.url("no_such_database");
    let message = open_err(&unknown).to_string();
    assert!(message.contains("does not exist"), "{message}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let refused = format!("postgres://u:hunter2@127.0.0.1:{closed_port}/x?sslmode=disable");
    let message = open_err(&refused).to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{closed_port}")),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!message.contains('\n'), "{message}");

    let message = open_err("postgres://u:hunter2@[bad/x").to_string();
    assert!(message.contains("invalid PostgreSQL URL"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

fn key(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

fn show(row: Option<(Vec<u8>, Vec<u8>)>) -> String {
    format!("{row:?}")
}

type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn collect<'a>(
    range: impl Iterator<
        Item = Result<crate::store::table::Row<'a, &'static [u8], &'static [u8]>, StoreError>,
    >,
) -> Rows {
    range
        .map(|r| {
            let (k, v) = r.expect("row");
            (k.value().to_vec(), v.value().to_vec())
        })
        .collect()
}

/// Alternates front and back until the scan ends, recording which end gave each row.
fn mixed(
    mut range: crate::store::Range<'_, &'static [u8], &'static [u8]>,
    pattern: &[bool],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let back = pattern[i % pattern.len()];
        i += 1;
        let row = if back {
            range.next_back()
        } else {
            range.next()
        };
        match row {
            Some(r) => {
                let (k, _) = r.expect("row");
                out.push(format!("{}{:?}", if back { "B" } else { "F" }, k.value()));
            }
            None => break,
        }
    }
    out
}

/// Runs one fixed sequence of operations and records every answer.
fn script(store: &Store) -> Vec<String> {
    let mut log = Vec::new();
    let n = 700u32;
    let tx = store.begin_write().expect("begin");
    {
        let mut t = tx.open_table(tables::EVENTS).expect("open");
        // Out of order, so the order of answers comes from the store.
        for i in (0..n).rev().step_by(2).chain((0..n).step_by(2)) {
            t.insert(key(i * 3).as_slice(), format!("v{i}").as_bytes())
                .expect("insert");
        }
        log.push(format!(
            "{:?}",
            t.get(key(9).as_slice())
                .expect("get")
                .map(|g| g.value().to_vec())
        ));
        log.push(format!(
            "{:?}",
            t.get(key(10).as_slice()).expect("get").is_some()
        ));
        let all = collect(t.iter().expect("iter"));
        log.push(format!("{} {:?} {:?}", all.len(), all.first(), all.last()));
        let back = collect(t.range::<&[u8]>(..).expect("range").rev());
        log.push(format!("{} {:?}", back.len(), back.first()));
        let lo = key(30);
        let hi = key(1900);
        let mid = collect(
            t.range::<&[u8]>(lo.as_slice()..hi.as_slice())
                .expect("range"),
        );
        log.push(format!("{} {:?} {:?}", mid.len(), mid.first(), mid.last()));
        let mid_rev = collect(
            t.range::<&[u8]>(lo.as_slice()..=hi.as_slice())
                .expect("range")
                .rev(),
        );
        log.push(format!("{} {:?}", mid_rev.len(), mid_rev.first()));
        log.extend(mixed(t.iter().expect("iter"), &[false, true, true]));
        log.extend(mixed(
            t.range::<&[u8]>((
                Bound::Excluded(lo.as_slice()),
                Bound::Included(hi.as_slice()),
            ))
            .expect("range"),
            &[true, false],
        ));
        log.push(show(
            t.first()
                .expect("first")
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec())),
        ));
        log.push(show(
            t.last()
                .expect("last")
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec())),
        ));
        log.push(format!("len {}", t.len().expect("len")));
        // Removes, delete then re-insert, read-your-writes.
        for i in (0..n).step_by(7) {
            t.remove(key(i * 3).as_slice()).expect("remove");
        }
        t.remove(key(21).as_slice()).expect("remove");
        t.insert(key(21).as_slice(), b"again".as_slice())
            .expect("reinsert");
        t.insert(key(24).as_slice(), b"short-lived".as_slice())
            .expect("put");
        t.remove(key(24).as_slice()).expect("then delete");
        log.push(format!(
            "{:?}",
            t.get(key(21).as_slice())
                .expect("get")
                .map(|g| g.value().to_vec())
        ));
        log.push(format!(
            "{:?}",
            t.get(key(24).as_slice()).expect("get").is_some()
        ));
        log.push(format!("len {}", t.len().expect("len")));
        let after = collect(t.iter().expect("iter"));
        log.push(format!("{} {:?}", after.len(), &after[..3]));
        let mut set = tx.open_table(tables::JOURNAL_BY_TIME).expect("set");
        for i in 0..5u32 {
            set.insert(key(i).as_slice(), ()).expect("set insert");
        }
        log.push(format!("set {}", set.iter().expect("iter").count()));
        let mut meta = tx.open_table(tables::META).expect("meta");
        meta.insert("zz", b"1".as_slice()).expect("meta");
        log.push(format!(
            "{:?}",
            meta.get("zz").expect("get").map(|g| g.value().to_vec())
        ));
        log.push(format!(
            "{:?}",
            meta.get("schema_version")
                .expect("get")
                .map(|g| g.value().to_vec())
        ));
    }
    tx.commit().expect("commit");

    // Abort discards.
    let tx = store.begin_write().expect("begin");
    {
        let mut t = tx.open_table(tables::EVENTS).expect("open");
        t.insert(key(1).as_slice(), b"never".as_slice())
            .expect("insert");
        t.remove(key(0).as_slice()).expect("remove");
        log.push(format!("inside {}", t.len().expect("len")));
    }
    tx.abort().expect("abort");

    // Prefetch then get, present and absent keys.
    let tx = store.begin_write().expect("begin");
    {
        let t = tx.open_table(tables::EVENTS).expect("open");
        let keys: Vec<[u8; 4]> = (0..40).map(key).collect();
        t.prefetch(keys.iter().map(|k| k.as_slice()))
            .expect("prefetch");
        for k in &keys {
            log.push(format!(
                "{:?}",
                t.get(k.as_slice())
                    .expect("get")
                    .map(|g| g.value().to_vec())
            ));
        }
    }
    tx.commit().expect("commit");

    // Many at once: in the order asked, absent keys as None, a key asked twice answered twice,
    // a row written earlier in this transaction seen.
    let tx = store.begin_write().expect("begin");
    {
        let mut t = tx.open_table(tables::EVENTS).expect("open");
        t.insert(key(7).as_slice(), b"fresh".as_slice())
            .expect("insert");
        let keys: Vec<[u8; 4]> = [9, 7, 10, 9, 1800, 0].map(key).to_vec();
        let asked: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let got = t.get_many(&asked).expect("get_many");
        log.push(format!(
            "many {:?}",
            got.iter()
                .map(|g| g.as_ref().map(|g| g.value().to_vec()))
                .collect::<Vec<_>>()
        ));
    }
    tx.abort().expect("abort");

    // A snapshot sees the committed state only.
    let read = store.read().expect("read");
    let t = read.open_table(tables::EVENTS).expect("open");
    let keys: Vec<[u8; 4]> = [9, 7, 10, 9, 1800, 0].map(key).to_vec();
    let asked: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    log.push(format!(
        "snapshot many {:?}",
        t.get_many(&asked)
            .expect("get_many")
            .iter()
            .map(|g| g.as_ref().map(|g| g.value().to_vec()))
            .collect::<Vec<_>>()
    ));
    log.push(format!(
        "none {}",
        t.get_many::<&[u8]>(&[]).expect("get_many").len()
    ));
    log.push(format!(
        "{:?}",
        t.get(key(1).as_slice()).expect("get").is_some()
    ));
    log.push(format!(
        "{:?}",
        t.get(key(0).as_slice())
            .expect("get")
            .map(|g| g.value().to_vec())
    ));
    let all = collect(t.iter().expect("iter"));
    log.push(format!("{} {:?} {:?}", all.len(), all.first(), all.last()));
    log.push(format!("{}", collect(t.iter().expect("iter").rev()).len()));
    log.extend(mixed(t.iter().expect("iter"), &[true, true, false]));
    log.push(format!(
        "len {} empty {}",
        t.len().expect("len"),
        t.is_empty().expect("empty")
    ));
    log
}

#[test]
fn the_same_operations_give_the_same_answers_on_redb_and_postgres() {
    let Some(cluster) = cluster() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let redb = Store::open(&dir.path().join("c.redb"), 1 << 20).expect("redb");
    let pg = open(&database(cluster, "conformance"));
    let expected = script(&redb);
    let got = script(&pg);
    assert!(expected.len() > 700, "the script reads more than one page");
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(e, g, "answer {i} differs");
    }
    assert_eq!(expected.len(), got.len());
}

/// One step of a random sequence over one table.
#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    Get(u8),
    Range(u8, u8, bool),
    Prefetch(Vec<u8>),
    Len,
    Commit,
    Abort,
    SnapshotRange(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..24).prop_map(Op::Delete),
        2 => (0u8..24).prop_map(Op::Get),
        2 => (0u8..24, 0u8..24, any::<bool>()).prop_map(|(a, b, r)| Op::Range(a, b, r)),
        1 => proptest::collection::vec(0u8..24, 0..6).prop_map(Op::Prefetch),
        1 => Just(Op::Len),
        1 => Just(Op::Commit),
        1 => Just(Op::Abort),
        1 => any::<bool>().prop_map(Op::SnapshotRange),
    ]
}

fn run_ops(store: &Store, ops: &[Op]) -> Vec<String> {
    let table = tables::SIM_PSP;
    let tx = store.begin_write().expect("begin");
    tx.delete_table(table).expect("clear");
    tx.open_table(table).expect("recreate");
    tx.commit().expect("commit");
    let mut log = Vec::new();
    let mut tx: Option<WriteTxn> = None;
    for op in ops {
        match op {
            Op::Commit => {
                if let Some(t) = tx.take() {
                    t.commit().expect("commit");
                }
                continue;
            }
            Op::Abort => {
                if let Some(t) = tx.take() {
                    t.abort().expect("abort");
                }
                continue;
            }
            Op::SnapshotRange(rev) => {
                let read = store.read().expect("read");
                let t = read.open_table(table).expect("open");
                let it = t.iter().expect("iter");
                let rows: Rows = if *rev { collect(it.rev()) } else { collect(it) };
                log.push(format!("snap {rows:?}"));
                continue;
            }
            _ => {}
        }
        let w = tx.get_or_insert_with(|| store.begin_write().expect("begin"));
        let mut t = w.open_table(table).expect("open");
        match op {
            Op::Put(k, v) => t.insert([*k].as_slice(), [*v].as_slice()).expect("put"),
            Op::Delete(k) => t.remove([*k].as_slice()).expect("delete"),
            Op::Get(k) => log.push(format!(
                "get {:?}",
                t.get([*k].as_slice())
                    .expect("get")
                    .map(|g| g.value().to_vec())
            )),
            Op::Range(a, b, rev) => {
                let (lo, hi) = ([*a.min(b)], [*a.max(b)]);
                let it = t
                    .range::<&[u8]>(lo.as_slice()..hi.as_slice())
                    .expect("range");
                let rows: Rows = if *rev { collect(it.rev()) } else { collect(it) };
                log.push(format!("range {rows:?}"));
            }
            Op::Prefetch(keys) => t
                .prefetch(
                    keys.iter()
                        .map(|k| [*k])
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|k| k.as_slice()),
                )
                .expect("prefetch"),
            Op::Len => log.push(format!("len {}", t.len().expect("len"))),
            Op::Commit | Op::Abort | Op::SnapshotRange(_) => {}
        }
    }
    if let Some(t) = tx.take() {
        t.commit().expect("commit");
    }
    let read = store.read().expect("read");
    let t = read.open_table(table).expect("open");
    log.push(format!("final {:?}", collect(t.iter().expect("iter"))));
    log
}

fn shared_stores() -> Option<&'static (Store, Store, tempfile::TempDir)> {
    static STORES: OnceLock<Option<(Store, Store, tempfile::TempDir)>> = OnceLock::new();
    STORES
        .get_or_init(|| {
            let cluster = cluster()?;
            let dir = tempfile::tempdir().expect("tempdir");
            let redb = Store::open(&dir.path().join("p.redb"), 1 << 20).expect("redb");
            let pg = open(&database(cluster, "property"));
            Some((redb, pg, dir))
        })
        .as_ref()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_agree_on_both_backends(ops in proptest::collection::vec(op(), 1..40)) {
        let Some((redb, pg, _dir)) = shared_stores() else { return Ok(()) };
        prop_assert_eq!(run_ops(redb, &ops), run_ops(pg, &ops));
    }
}

fn read_counter(tx: &WriteTxn) -> u64 {
    let meta = tx.open_table(tables::META).expect("meta");
    let value = meta
        .get("test_counter")
        .expect("get")
        .map(|g| g.value().to_vec());
    value
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

#[test]
fn two_nodes_that_read_then_write_one_row_conflict() {
    let Some(cluster) = cluster() else { return };
    let url = database(cluster, "conflict");
    let (a, b) = (open(&url), open(&url));
    let (ta, tb) = (a.begin_write().expect("a"), b.begin_write().expect("b"));
    for tx in [&ta, &tb] {
        let n = read_counter(tx);
        tx.open_table(tables::META)
            .expect("meta")
            .insert("test_counter", (n + 1).to_be_bytes().as_slice())
            .expect("put");
    }
    ta.commit().expect("the first commits");
    let second = tb.commit();
    assert!(matches!(second, Err(StoreError::Conflict)), "{second:?}");
    // Applied again, the second sees the first.
    let tb = b.begin_write().expect("b again");
    assert_eq!(read_counter(&tb), 1);
    tb.abort().expect("abort");
    // Both stores still serve.
    assert!(a.read().is_ok() && b.read().is_ok());
}

/// Increments a counter in `meta`: reads then writes the same row, so concurrent nodes conflict.
#[derive(Clone)]
struct Increment;

impl Command for Increment {
    type Output = u64;
    fn apply(self, tx: &WriteTxn) -> Result<u64, StoreError> {
        crate::store::next_counter(tx, "test_counter")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_incrementing_one_counter_lose_no_acknowledged_increment() {
    let Some(cluster) = cluster() else { return };
    let url = database(cluster, "writers");
    let limits = WriterLimits {
        queue_capacity: 256,
        max_batch_size: 8,
        max_batch_wait: Duration::from_millis(1),
    };
    let mut handles = Vec::new();
    let mut joins = Vec::new();
    let mut stores = Vec::new();
    for _ in 0..2 {
        let store = Arc::new(open(&url));
        let (handle, join) = writer::spawn(Arc::clone(&store), limits).expect("spawn");
        handles.push(Arc::new(handle));
        joins.push(join);
        stores.push(store);
    }
    let mut tasks = Vec::new();
    for i in 0..120usize {
        let handle = Arc::clone(&handles[i % 2]);
        tasks.push(tokio::spawn(async move { handle.submit(Increment).await }));
    }
    let mut acknowledged = 0u64;
    let mut values = Vec::new();
    for task in tasks {
        if let Ok(value) = task.await.expect("task") {
            acknowledged += 1;
            values.push(value);
        }
    }
    drop(handles);
    for join in joins {
        join.join().expect("writer stops");
    }
    let tx = stores[0].begin_write().expect("begin");
    assert_eq!(read_counter(&tx), acknowledged);
    tx.abort().expect("abort");
    values.sort_unstable();
    values.dedup();
    assert_eq!(
        values.len() as u64,
        acknowledged,
        "every increment saw its own value"
    );
    assert!(
        acknowledged >= 100,
        "conflicts are retried: {acknowledged} of 120"
    );
}

fn pg_of(store: &Store) -> &super::PgStore {
    match &store.backend {
        Backend::Pg(pg) => pg,
        Backend::Redb(_) => panic!("not postgres"),
    }
}

/// Round trips of one transaction that prefetches `n` keys and writes `n` rows.
fn batch_round_trips(store: &Store, n: u32, offset: u32) -> u64 {
    let tx = store.begin_write().expect("begin");
    {
        let mut t = tx.open_table(tables::EVENTS).expect("open");
        let keys: Vec<[u8; 4]> = (offset..offset + n).map(key).collect();
        t.prefetch(keys.iter().map(|k| k.as_slice()))
            .expect("prefetch");
        for k in &keys {
            assert!(t.get(k.as_slice()).expect("get").is_none());
            t.insert(k.as_slice(), b"row".as_slice()).expect("insert");
        }
    }
    tx.commit().expect("commit");
    pg_of(store).last_write_round_trips()
}

#[test]
fn round_trips_do_not_grow_with_the_batch() {
    let Some(cluster) = cluster() else { return };
    let store = open(&database(cluster, "trips"));
    // The first transaction also prepares the statements on this connection.
    batch_round_trips(&store, 3, 0);
    let small = batch_round_trips(&store, 10, 100);
    let large = batch_round_trips(&store, 2_000, 10_000);
    assert_eq!(small, large, "round trips for 10 rows vs 2000 rows");
    // BEGIN with the prefetch, then the multi-row upsert with COMMIT.
    assert_eq!(small, 2);
}

#[test]
fn a_failed_statement_ends_the_transaction_without_hanging() {
    let Some(cluster) = cluster() else { return };
    let url = database(cluster, "failed");
    let store = open(&url);
    let db = url.rsplit('/').next().and_then(|s| s.split('?').next());
    cluster
        .psql(db.expect("db"), "DROP TABLE tally_sim_psp")
        .expect("drop a table");
    let tx = store.begin_write().expect("begin");
    let first = tx
        .open_table(tables::SIM_PSP)
        .expect("open")
        .get(b"k".as_slice())
        .err();
    assert!(matches!(first, Some(StoreError::Postgres(_))), "{first:?}");
    let second = tx
        .open_table(tables::META)
        .expect("open")
        .get("format")
        .err();
    assert!(
        matches!(second, Some(StoreError::Postgres(_))),
        "{second:?}"
    );
    assert!(tx.commit().is_err(), "a failed transaction never commits");
    // The connection is reused cleanly.
    let tx = store.begin_write().expect("begin again");
    assert!(tx
        .open_table(tables::META)
        .expect("open")
        .get("format")
        .expect("get")
        .is_some());
    tx.abort().expect("abort");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_ended_are_replaced() {
    let Some(cluster) = cluster() else { return };
    let url = database(cluster, "terminated");
    let db = url
        .rsplit('/')
        .next()
        .and_then(|s| s.split('?').next())
        .expect("db")
        .to_string();
    let store = Arc::new(open(&url));
    let limits = WriterLimits {
        queue_capacity: 16,
        max_batch_size: 4,
        max_batch_wait: Duration::from_millis(1),
    };
    let (handle, join) = writer::spawn(Arc::clone(&store), limits).expect("spawn");
    assert_eq!(handle.submit(Increment).await, Ok(1));
    drop(store.read().expect("a pooled read"));
    cluster
        .psql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{db}'"
            ),
        )
        .expect("terminate");
    let mut acknowledged = 1u64;
    let mut ok = false;
    for _ in 0..5 {
        if handle.submit(Increment).await.is_ok() {
            acknowledged += 1;
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "the writer connects again");
    let read = store.read().expect("a read on a fresh connection");
    let meta = read.open_table(tables::META).expect("meta");
    let value = meta
        .get("test_counter")
        .expect("get")
        .map(|g| g.value().to_vec());
    assert_eq!(value, Some(acknowledged.to_be_bytes().to_vec()));
    drop(handle);
    join.join().expect("writer stops");
}

#[test]
fn several_hosts_are_tried_in_order() {
    let Some(cluster) = cluster() else { return };
    let url = database(cluster, "hosts");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let multi = url.replacen(
        "127.0.0.1:",
        &format!("127.0.0.1:{closed_port},127.0.0.1:"),
        1,
    );
    let store = open(&multi);
    assert!(store.read().is_ok());
}

fn sh(script: &str, dir: &std::path::Path) {
    let status = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("sh");
    assert!(status.success(), "{script}");
}

#[test]
fn tls_verifies_the_server_against_the_ca_file() {
    let Some(cluster) = cluster() else { return };
    let url = database(cluster, "tls");
    let dir = tempfile::tempdir().expect("tempdir").keep();
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
           -subj /CN=tally-test-ca && \
         openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
           -subj /CN=127.0.0.1 && \
         printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && \
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
           -out server.pem -days 2 -extfile san.ext && chmod 0600 server.key && \
         if [ \"$(id -u)\" = 0 ]; then chown -R postgres: .; fi",
        &dir,
    );
    for setting in [
        format!("ssl_cert_file = '{}'", dir.join("server.pem").display()),
        format!("ssl_key_file = '{}'", dir.join("server.key").display()),
        "ssl = on".to_string(),
    ] {
        cluster
            .psql("postgres", &format!("ALTER SYSTEM SET {setting}"))
            .expect("alter system");
    }
    cluster
        .psql("postgres", "SELECT pg_reload_conf()")
        .expect("reload");
    std::thread::sleep(Duration::from_millis(500));
    let tls_url = url.replace("sslmode=disable", "sslmode=require");
    let mut with_ca = options(&tls_url);
    with_ca.ca_file = Some(dir.join("ca.pem"));
    let store = Store::open_postgres(&with_ca).expect("TLS with the CA file");
    let mut conn = pg_of(&store).shared.writer_conn().expect("conn");
    let rows = conn
        .query(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .expect("pg_stat_ssl");
    assert!(rows[0].get::<_, bool>(0), "the connection is encrypted");

    // The system's roots do not know this CA: refused, in one line.
    let message = open_err(&tls_url).to_string();
    assert!(
        message.contains("cannot connect to PostgreSQL at 127.0.0.1:"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");

    let mut missing = options(&tls_url);
    missing.ca_file = Some(dir.join("nope.pem"));
    let message = match Store::open_postgres(&missing) {
        Ok(_) => panic!("a missing CA file must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("CA file"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ingest path prefetches what a batch reads: a run of 10 events and a run of 400 events
/// (new and duplicate, over many customers and hours) cost the same round trips.
#[test]
fn an_ingest_batch_costs_the_same_round_trips_whatever_its_size() {
    use crate::ingest::event::IngestBatch;
    use crate::ingest::meter::{Aggregation, CreateMeter, Meter};
    use crate::ingest::parse::{parse_body, Context, Format};
    use crate::store::TenantId;
    const NOW_MS: i64 = 1_800_000_000_000;
    const TENANT: TenantId = TenantId(1);
    let Some(cluster) = cluster() else { return };
    let store = open(&database(cluster, "ingest_trips"));
    for c in 0..40 {
        crate::customers::create_for_test(&store, TENANT, &format!("c{c}"), NOW_MS);
    }
    for (key, aggregation) in [("calls", Aggregation::Count), ("tokens", Aggregation::Sum)] {
        let meter = Meter {
            id: crate::id::Id::generate(),
            key: key.into(),
            name: None,
            event_type: "t".into(),
            aggregation,
            value_property: (key == "tokens").then(|| "tokens".to_string()),
            unique_property: None,
            created_at_ms: NOW_MS,
            backfilled_events: 0,
            backfill_skipped_events: 0,
        };
        store
            .apply_one(CreateMeter {
                tenant: TENANT,
                meter,
                chunk_events: crate::ingest::backfill::DEFAULT_CHUNK_EVENTS,
            })
            .expect("store")
            .expect("meter");
    }
    let config = crate::config::IngestConfig::default();
    let batch = |from: usize, n: usize| {
        let ctx = Context {
            tenant: TENANT,
            now_ms: NOW_MS,
            config: &config,
        };
        let events: Vec<serde_json::Value> = (from..from + n)
            .map(|i| {
                serde_json::json!({"id": format!("e{i}"), "customer": format!("c{}", i % 40),
                    "type": "t", "properties": {"tokens": i},
                    "timestamp": crate::clock::rfc3339(NOW_MS - 60_000 * (i as i64 % 300))})
            })
            .collect();
        IngestBatch {
            tenant: TENANT,
            events: parse_body(
                serde_json::json!({ "events": events }),
                Format::Native,
                &ctx,
            )
            .expect("a well-formed batch"),
            now_ms: NOW_MS,
            idempotency_key: None,
        }
    };
    let trips = |command: IngestBatch| {
        store.apply_one(command).expect("ingest");
        store.last_write_round_trips().expect("postgres")
    };
    // Warm the connection's prepared statements first (new events, then duplicates).
    trips(batch(10_000, 5));
    trips(batch(10_000, 5));
    let small = trips(batch(0, 10));
    let large = trips(batch(10, 400));
    let duplicates = trips(batch(0, 400));
    assert!(small > 0);
    assert_eq!(large, small, "400 new events cost what 10 do");
    assert!(
        duplicates <= small,
        "400 duplicates cost {duplicates}, 10 events {small}"
    );
}
