//! The schema 4 → 5 usage layout change on both backends: usage written in the new layout is
//! turned back into schema 4's (rollups keyed meter first, no days, distinct values per hour)
//! and the version set to 4; opening it again converts it, and every answer is the same.

use rust_decimal::Decimal;
use serde_json::json;

use super::event::IngestBatch;
use super::meter::{CreateMeter, Meter};
use super::parse::{parse_body, Context, Format};
use super::tests::{meter, AGGREGATIONS, NOW_MS, TENANT};
use super::usage;
use crate::config::IngestConfig;
use crate::store::{codec, tables, ReadableTable, Store};

/// Events of one customer over three days, two a minute apart now and then, values and users
/// varying.
fn ingest(store: &Store) {
    let config = IngestConfig::default();
    let ctx = Context {
        tenant: TENANT,
        now_ms: NOW_MS,
        config: &config,
    };
    let events: Vec<serde_json::Value> = (0..240i64)
        .map(|i| {
            let ts = NOW_MS - 3 * usage::DAY_MS + i * 1_087_000 + (i % 7) * 61_000;
            json!({"id": format!("e{i}"), "customer": "c1", "type": "t",
                   "timestamp": crate::clock::rfc3339(ts),
                   "properties": {"v": format!("{}.{}", (i * 37) % 500 - 250, i % 10),
                                  "user": format!("u{}", i % 13)}})
        })
        .collect();
    for chunk in events.chunks(40) {
        let batch = parse_body(json!({ "events": chunk }), Format::Native, &ctx).expect("shape");
        store
            .apply_one(IngestBatch {
                tenant: TENANT,
                events: batch,
                now_ms: NOW_MS,
                idempotency_key: None,
            })
            .expect("ingest");
    }
}

/// Ranges with whole days, partial days, hours, minutes and milliseconds at their edges.
fn ranges() -> Vec<(i64, i64)> {
    let day0 = usage::Grain::Day.start(NOW_MS - 3 * usage::DAY_MS);
    vec![
        (0, NOW_MS + 1),
        (day0, day0 + 4 * usage::DAY_MS),
        (day0 + usage::DAY_MS, day0 + 2 * usage::DAY_MS),
        (
            day0 + 5 * usage::HOUR_MS + 17_123,
            day0 + 2 * usage::DAY_MS + 7 * usage::HOUR_MS + 1,
        ),
        (
            day0 + 30 * usage::HOUR_MS + 59_000,
            day0 + 31 * usage::HOUR_MS + 61_000,
        ),
        (
            day0 + 50 * usage::HOUR_MS,
            day0 + 50 * usage::HOUR_MS + 5 * usage::MINUTE_MS,
        ),
    ]
}

fn answers(store: &Store, meters: &[Meter]) -> Vec<Option<Decimal>> {
    let tx = store.read().expect("read");
    let customer = crate::customers::by_external_id(&tx, TENANT, "c1")
        .expect("read")
        .expect("customer")
        .id;
    let mut out = Vec::new();
    for m in meters {
        for (from_ms, to_ms) in ranges() {
            let acc = usage::usage(&tx, TENANT, m, customer, from_ms, to_ms).expect("usage");
            out.push(acc.value(m.aggregation).expect("in range"));
            out.push(Some(Decimal::from(acc.events())));
        }
    }
    out
}

/// Rewrites the usage tables as schema 4 kept them and stamps the file version 4.
fn downgrade(store: &Store) {
    let tx = store.begin_write().expect("write");
    {
        let rollups = tx.open_table(tables::USAGE_ROLLUPS).expect("rollups");
        let mut hourly = tx.open_table(tables::LEGACY_USAGE_HOURLY).expect("hourly");
        let mut minutely = tx
            .open_table(tables::LEGACY_USAGE_MINUTELY)
            .expect("minutely");
        for entry in rollups.iter().expect("iter") {
            let (key, value) = entry.expect("row");
            let key = key.value();
            let legacy = legacy(key);
            // Schema 4 wrote bincode records.
            let rollup = super::rollup_record::decode(value.value()).expect("rollup");
            let value = codec::encode(&rollup).expect("encode");
            match key[8] {
                b'h' => hourly.insert(legacy.as_slice(), value.as_slice()),
                b'm' => minutely.insert(legacy.as_slice(), value.as_slice()),
                _ => Ok(()),
            }
            .expect("insert");
        }
        let distinct = tx.open_table(tables::USAGE_DISTINCT).expect("distinct");
        let mut uniques = tx
            .open_table(tables::LEGACY_USAGE_UNIQUES)
            .expect("uniques");
        for entry in distinct.iter().expect("iter") {
            let (key, _) = entry.expect("row");
            let key = key.value();
            if key[8] == b'h' {
                let mut legacy = legacy(key);
                legacy.extend_from_slice(&key[49..]);
                uniques.insert(legacy.as_slice(), ()).expect("insert");
            }
        }
    }
    tx.delete_table(tables::USAGE_ROLLUPS).expect("drop");
    tx.delete_table(tables::USAGE_DISTINCT).expect("drop");
    tx.open_table(tables::META)
        .expect("meta")
        .insert("schema_version", 4u32.to_be_bytes().as_slice())
        .expect("version");
    tx.commit().expect("commit");
}

/// (tenant, grain, bucket, meter, customer) → (tenant, meter, customer, bucket).
fn legacy(key: &[u8]) -> Vec<u8> {
    let mut out = key[..8].to_vec();
    out.extend_from_slice(&key[17..49]);
    out.extend_from_slice(&key[9..17]);
    out
}

fn meters(store: &Store) -> Vec<Meter> {
    AGGREGATIONS
        .iter()
        .map(|a| {
            let m = meter(a.as_str(), *a);
            store
                .apply_one(CreateMeter {
                    tenant: TENANT,
                    meter: m.clone(),
                    chunk_events: super::backfill::DEFAULT_CHUNK_EVENTS,
                })
                .expect("store")
                .expect("meter");
            m
        })
        .collect()
}

fn round_trip(store: Store, reopen: impl FnOnce() -> Store) {
    crate::customers::create_for_test(&store, TENANT, "c1", NOW_MS);
    let meters = meters(&store);
    ingest(&store);
    let before = answers(&store, &meters);
    assert!(before.iter().any(|a| a.is_some_and(|d| d > Decimal::ONE)));
    downgrade(&store);
    drop(store);
    let store = reopen();
    assert_eq!(
        answers(&store, &meters),
        before,
        "the same answers after the upgrade"
    );
    let tx = store.read().expect("read");
    let days = tx
        .open_table(tables::USAGE_ROLLUPS)
        .expect("rollups")
        .iter()
        .expect("iter")
        .filter(|e| e.as_ref().is_ok_and(|(k, _)| k.value()[8] == b'd'))
        .count();
    assert!(days >= 4 * AGGREGATIONS.len(), "days were summed: {days}");
}

#[test]
fn a_schema_4_redb_file_is_converted_to_the_time_first_layout_with_the_same_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("u.redb");
    let store = Store::open(&path, 1 << 22).expect("open");
    round_trip(store, || {
        crate::migrate::open(&path, 1 << 22).expect("reopen upgrades")
    });
}

#[test]
fn a_schema_4_postgres_database_is_converted_to_the_time_first_layout_with_the_same_answers() {
    let Some(cluster) = crate::store::pg::cluster::shared_for_tests() else {
        return;
    };
    cluster.create_database("layout_upgrade").expect("database");
    let options = crate::store::pg::PgOptions {
        url: cluster.url("layout_upgrade"),
        pool_size: 4,
        connect_timeout_ms: 5_000,
        pool_wait_ms: 5_000,
        ca_file: None,
    };
    let store = Store::open_postgres(&options).expect("open");
    // A schema 4 database has its usage tables; this one was created by schema 5.
    for table in ["usage_hourly", "usage_minutely", "usage_uniques"] {
        cluster
            .psql(
                "layout_upgrade",
                &format!("CREATE TABLE tally_{table} (k bytea PRIMARY KEY, v bytea NOT NULL);"),
            )
            .expect("legacy table");
    }
    round_trip(store, || {
        assert!(matches!(
            Store::open_postgres(&options),
            Err(crate::store::OpenError::OlderSchema { .. })
        ));
        crate::migrate::open_postgres(&options).expect("reopen upgrades")
    });
}
