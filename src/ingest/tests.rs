//! Property tests of ingest below HTTP: whatever the duplicates and the batching, usage equals
//! the aggregation of the de-duplicated events, for every aggregation, over any range.

use crate::store::ReadableTable;

use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::json;

use super::event::{IngestBatch, Status};
use super::meter::{Aggregation, CreateMeter, Meter};
use super::parse::{parse_body, Context, Format};
use super::usage;
use crate::config::IngestConfig;
use crate::id::Id;
use crate::store::{Store, TenantId};

pub(super) const NOW_MS: i64 = 1_800_000_000_000;
pub(super) const TENANT: TenantId = TenantId(1);

/// One distinct event of the model.
#[derive(Debug, Clone)]
struct Base {
    stable: bool,
    value: Decimal,
    user: u8,
    /// Seconds before NOW; distinct per event so `latest` has no ties.
    age_secs: i64,
}

/// Seconds before NOW: mostly within ten hours (minute and hour edges), some within three days
/// (whole days inside a range).
fn age() -> impl Strategy<Value = i64> {
    prop_oneof![3 => 0i64..36_000, 1 => 0i64..260_000]
}

fn bases() -> impl Strategy<Value = Vec<Base>> {
    proptest::collection::vec((any::<bool>(), -5_000i64..5_000, 0u8..6, age()), 1..25).prop_map(
        |raw| {
            let mut seen = std::collections::HashSet::new();
            raw.into_iter()
                .filter(|(_, _, _, age)| seen.insert(*age))
                .map(|(stable, cents, user, age_secs)| Base {
                    stable,
                    value: Decimal::new(cents, 2),
                    user,
                    age_secs,
                })
                .collect()
        },
    )
}

fn event_json(index: usize, base: &Base) -> serde_json::Value {
    let ts = crate::clock::rfc3339(NOW_MS - base.age_secs * 1000);
    let mut event = json!({
        "customer": "c1",
        "type": "t",
        "timestamp": ts,
        "properties": {"v": base.value.to_string(), "user": format!("u{}", base.user), "n": index},
    });
    if base.stable {
        event["id"] = json!(format!("id-{index}"));
    }
    event
}

pub(super) fn meter(key: &str, aggregation: Aggregation) -> Meter {
    Meter {
        id: Id::generate(),
        key: key.into(),
        name: None,
        event_type: "t".into(),
        aggregation,
        value_property: aggregation.needs_value().then(|| "v".to_string()),
        unique_property: (aggregation == Aggregation::UniqueCount).then(|| "user".to_string()),
        created_at_ms: NOW_MS,
        backfilled_events: 0,
        backfill_skipped_events: 0,
    }
}

pub(super) const AGGREGATIONS: [Aggregation; 6] = [
    Aggregation::Count,
    Aggregation::Sum,
    Aggregation::Max,
    Aggregation::Min,
    Aggregation::UniqueCount,
    Aggregation::Latest,
];

fn expected(aggregation: Aggregation, events: &[&Base]) -> Option<Decimal> {
    let values = events.iter().map(|b| b.value);
    match aggregation {
        Aggregation::Count => Some(Decimal::from(events.len() as u64)),
        Aggregation::Sum => Some(values.sum()),
        Aggregation::Max => values.max(),
        Aggregation::Min => values.min(),
        Aggregation::UniqueCount => {
            let users: std::collections::BTreeSet<u8> = events.iter().map(|b| b.user).collect();
            Some(Decimal::from(users.len() as u64))
        }
        Aggregation::Latest => events.iter().min_by_key(|b| b.age_secs).map(|b| b.value),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn usage_equals_the_aggregation_of_distinct_events(
        bases in bases(),
        picks in proptest::collection::vec(any::<proptest::sample::Index>(), 1..80),
        cuts in proptest::collection::vec(1usize..12, 1..20),
        range in (age(), age()),
        late_meter in any::<bool>(),
        as_one_run in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.redb"), 1 << 22).expect("open");
        crate::customers::create_for_test(&store, TENANT, "c1", NOW_MS);
        let meters: Vec<Meter> = AGGREGATIONS
            .iter()
            .map(|a| meter(a.as_str(), *a))
            .collect();
        let create_meters = |store: &Store| {
            for m in &meters {
                store.apply_one(CreateMeter { tenant: TENANT, meter: m.clone(), chunk_events: crate::ingest::backfill::DEFAULT_CHUNK_EVENTS })
                    .expect("store").expect("meter");
            }
        };
        if !late_meter {
            create_meters(&store);
        }
        // The stream: every base at least once, then random repeats, in random batches.
        let mut stream: Vec<usize> = (0..bases.len()).collect();
        stream.extend(picks.iter().map(|p| p.index(bases.len())));
        let config = IngestConfig::default();
        let ctx = Context { tenant: TENANT, now_ms: NOW_MS, config: &config };
        let mut position = 0;
        let mut commands = Vec::new();
        for cut in cuts.iter().cycle() {
            if position >= stream.len() {
                break;
            }
            let end = (position + cut).min(stream.len());
            let batch: Vec<serde_json::Value> = stream[position..end]
                .iter()
                .map(|&i| event_json(i, &bases[i]))
                .collect();
            let events = parse_body(json!({"events": batch}), Format::Native, &ctx).expect("shape");
            commands.push(IngestBatch { tenant: TENANT, events, now_ms: NOW_MS, idempotency_key: None });
            position = end;
        }
        // Either one transaction per request, or every request in one run of one transaction
        // (as the writer groups neighbours): the outcome must be the same.
        let statuses: Vec<Status> = if as_one_run {
            store.apply_run(commands).expect("ingest").into_iter().flatten().collect()
        } else {
            commands
                .into_iter()
                .flat_map(|c| store.apply_one(c).expect("ingest"))
                .collect()
        };
        let mut accepted = 0;
        for s in &statuses {
            prop_assert!(!matches!(s, Status::Rejected(_) | Status::Conflict { .. }), "{s:?}");
            if matches!(s, Status::Accepted { .. }) {
                accepted += 1;
            }
        }
        prop_assert_eq!(accepted, bases.len(), "each distinct event accepted exactly once");
        if late_meter {
            create_meters(&store);
        }
        let tx = store.read().expect("read");
        let customer = crate::customers::by_external_id(&tx, TENANT, "c1")
            .expect("read").expect("customer").id;
        let (a, b) = (range.0.min(range.1), range.0.max(range.1) + 1);
        let (from_ms, to_ms) = (NOW_MS - b * 1000, NOW_MS - a * 1000 + 1);
        let in_range: Vec<&Base> = bases
            .iter()
            .filter(|e| {
                let ts = NOW_MS - e.age_secs * 1000;
                ts >= from_ms && ts < to_ms
            })
            .collect();
        let all: Vec<&Base> = bases.iter().collect();
        for m in &meters {
            let whole = usage::usage(&tx, TENANT, m, customer, NOW_MS - 300_000_000, NOW_MS + 1)
                .expect("usage").value(m.aggregation).expect("in range");
            prop_assert_eq!(whole, expected(m.aggregation, &all), "{:?} whole", m.aggregation);
            let part = usage::usage(&tx, TENANT, m, customer, from_ms, to_ms)
                .expect("usage").value(m.aggregation).expect("in range");
            prop_assert_eq!(part, expected(m.aggregation, &in_range), "{:?} range", m.aggregation);
        }
    }
}

#[test]
fn derived_identities_respect_the_window_and_bucket_edges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("d.redb"), 1 << 22).expect("open");
    crate::customers::create_for_test(&store, TENANT, "c1", NOW_MS);
    let config = IngestConfig::default();
    let ctx = Context {
        tenant: TENANT,
        now_ms: NOW_MS,
        config: &config,
    };
    let send = |ts_ms: i64, marker: &str| -> Status {
        let body = json!({"customer": "c1", "type": "t", "timestamp": crate::clock::rfc3339(ts_ms),
                          "properties": {"m": marker}});
        let events = parse_body(body, Format::Native, &ctx).expect("shape");
        store
            .apply_one(IngestBatch {
                tenant: TENANT,
                events,
                now_ms: NOW_MS,
                idempotency_key: None,
            })
            .expect("ingest")
            .remove(0)
    };
    // Bucket edges are multiples of the 60 s window.
    let edge = (NOW_MS - 3_600_000).div_euclid(60_000) * 60_000;
    let accepted = |s: &Status| matches!(s, Status::Accepted { .. });
    let duplicate = |s: &Status| matches!(s, Status::Duplicate { .. });
    // 10 s apart: one event.
    assert!(accepted(&send(edge + 5_000, "a")));
    assert!(duplicate(&send(edge + 15_000, "a")));
    // Two windows apart: two events.
    assert!(accepted(&send(edge + 125_000, "a")));
    // Straddling a bucket edge by a second each side: one event.
    assert!(accepted(&send(edge + 600_000 - 1_000, "b")));
    assert!(duplicate(&send(edge + 600_000 + 1_000, "b")));
    // Another payload at the same instant is another event.
    assert!(accepted(&send(edge + 5_000, "c")));
}

#[test]
fn a_schema_1_database_gets_its_stable_identities_rebuilt_on_open() {
    use crate::store::tables;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.redb");
    let config = IngestConfig::default();
    let ctx = Context {
        tenant: TENANT,
        now_ms: NOW_MS,
        config: &config,
    };
    let send = |store: &Store, id: &str| -> Status {
        let body = json!({"id": id, "customer": "c1", "type": "t"});
        let events = parse_body(body, Format::Native, &ctx).expect("shape");
        store
            .apply_one(IngestBatch {
                tenant: TENANT,
                events,
                now_ms: NOW_MS,
                idempotency_key: None,
            })
            .expect("ingest")
            .remove(0)
    };
    {
        let store = Store::open(&path, 1 << 22).expect("open");
        crate::customers::create_for_test(&store, TENANT, "c1", NOW_MS);
        store
            .apply_one(CreateMeter {
                tenant: TENANT,
                meter: meter("calls", Aggregation::Count),
                chunk_events: crate::ingest::backfill::DEFAULT_CHUNK_EVENTS,
            })
            .expect("store")
            .expect("meter");
        assert!(matches!(send(&store, "a"), Status::Accepted { .. }));
        assert!(matches!(send(&store, "b"), Status::Accepted { .. }));
        // Turn the file into what schema 1 left: a hashed index under the old name, no new one,
        // and no minute rollups (nor any rollup in the time-first layout of schema 5).
        let tx = store.begin_write().expect("write");
        tx.delete_table(tables::EVENT_IDS).expect("drop index");
        tx.delete_table(tables::USAGE_ROLLUPS)
            .expect("drop rollups");
        tx.delete_table(tables::USAGE_DISTINCT)
            .expect("drop distinct values");
        tx.open_table(tables::LEGACY_EVENT_IDENTITIES)
            .expect("legacy")
            .insert([0u8; 24].as_slice(), [0u8; 16].as_slice())
            .expect("legacy row");
        tx.open_table(tables::META)
            .expect("meta")
            .insert("schema_version", 1u32.to_be_bytes().as_slice())
            .expect("version");
        tx.commit().expect("commit");
    }
    let store = crate::migrate::open(&path, 1 << 22).expect("reopen migrates");
    assert!(matches!(send(&store, "a"), Status::Duplicate { .. }));
    assert!(matches!(send(&store, "b"), Status::Duplicate { .. }));
    assert!(matches!(send(&store, "c"), Status::Accepted { .. }));
    let tx = store.read().expect("read");
    // A range whose edges are partial hours of whole minutes reads the minute rollups rebuilt
    // by the schema 2 step and re-keyed by the schema 5 step.
    let calls = crate::ingest::meter::by_key(&tx, TENANT, "calls")
        .expect("read")
        .expect("meter");
    let customer = crate::customers::by_external_id(&tx, TENANT, "c1")
        .expect("read")
        .expect("customer")
        .id;
    let minute = usage::minute_start(NOW_MS);
    let counted = usage::usage(
        &tx,
        TENANT,
        &calls,
        customer,
        minute - 60_000,
        minute + 120_000,
    )
    .expect("usage")
    .value(Aggregation::Count)
    .expect("in range");
    assert_eq!(counted, Some(Decimal::from(3)));
    let meta = tx.open_table(tables::META).expect("meta");
    let version = meta.get("schema_version").expect("get").expect("version");
    assert_eq!(
        version.value(),
        crate::store::SCHEMA_VERSION.to_be_bytes().as_slice()
    );
    assert!(
        tx.open_table(tables::LEGACY_EVENT_IDENTITIES).is_err(),
        "the legacy index is gone"
    );
}

/// Derived identities beyond the horizon go, tenant by tenant and in bounded passes; those an
/// accepted event could still match stay and keep deduplicating; the events themselves stay.
#[test]
fn derived_identities_beyond_the_horizon_are_purged_and_the_rest_still_dedupe() {
    use crate::ingest::purge::PurgeDerivedIdentities;
    use crate::store::tables;

    const DAY_MS: i64 = 24 * 3600 * 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("purge.redb"), 1 << 22).expect("open");
    let config = IngestConfig::default();
    let tenants = [TenantId(1), TenantId(2), TenantId(u64::MAX)];
    for tenant in tenants {
        crate::customers::create_for_test(&store, tenant, "c1", NOW_MS);
    }
    // Events without ids (derived identities), received at `now_ms` with a timestamp `age_ms`
    // before it.
    let send = |tenant: TenantId, n: usize, now_ms: i64, age_ms: i64| {
        let ctx = Context {
            tenant,
            now_ms,
            config: &config,
        };
        let body = json!({"events": [{"customer": "c1", "type": "t",
            "timestamp": crate::clock::rfc3339(now_ms - age_ms), "properties": {"n": n}}]});
        let events = parse_body(body, Format::Native, &ctx).expect("shape");
        store
            .apply_one(IngestBatch {
                tenant,
                events,
                now_ms,
                idempotency_key: None,
            })
            .expect("ingest")
            .remove(0)
    };
    let old_ms = NOW_MS - 100 * DAY_MS;
    for tenant in tenants {
        for n in 0..3 {
            assert!(matches!(
                send(tenant, n, old_ms, 0),
                Status::Accepted { .. }
            ));
            assert!(matches!(
                send(tenant, 100 + n, NOW_MS, 1_000),
                Status::Accepted { .. }
            ));
        }
    }
    let rows = |store: &Store| {
        let tx = store.read().expect("read");
        tx.open_table(tables::EVENT_DERIVED)
            .expect("index")
            .len()
            .expect("len")
    };
    assert_eq!(rows(&store), 18);
    let horizon_ms = config.derived_identity_horizon_ms(NOW_MS);
    assert!(old_ms < horizon_ms && NOW_MS - config.max_backdate_secs as i64 * 1000 > horizon_ms);
    // Passes of two rows: 2 + 2 + 2 + 2 + 1 of the nine old rows, then nothing.
    let mut passes = Vec::new();
    loop {
        let purged = store
            .apply_one(PurgeDerivedIdentities {
                horizon_ms,
                limit: 2,
            })
            .expect("purge");
        passes.push(purged);
        if purged < 2 {
            break;
        }
    }
    assert_eq!(passes, vec![2, 2, 2, 2, 1]);
    assert_eq!(rows(&store), 9, "the recent identities stay");
    for tenant in tenants {
        for n in 0..3 {
            assert!(
                matches!(
                    send(tenant, 100 + n, NOW_MS, 1_000),
                    Status::Duplicate { .. }
                ),
                "a recent retry still deduplicates"
            );
        }
    }
    let tx = store.read().expect("read");
    let events = tx.open_table(tables::EVENTS).expect("events");
    assert_eq!(events.len().expect("len"), 18, "the events themselves stay");
}

/// Every anomaly row of the tenant, oldest first, with the customer (whose id differs from
/// store to store) checked to be `c1` and blanked.
fn anomalies_of(store: &Store) -> Vec<super::anomaly::Anomaly> {
    let tx = store.read().expect("read");
    let c1 = crate::customers::by_external_id(&tx, TENANT, "c1")
        .expect("read")
        .expect("customer")
        .id;
    let (mut rows, more) = super::anomaly::list(
        &tx,
        TENANT,
        &super::anomaly::Filter::default(),
        None,
        usize::MAX,
    )
    .expect("list");
    assert_eq!(more, None);
    rows.reverse();
    for row in &mut rows {
        assert_eq!(row.customer, c1, "the original's customer");
        row.customer = Id(0);
    }
    rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Duplicates and conflicts, in-batch or across requests, stable or derived: applied as one
    /// run (as the writer groups requests) or one request at a time, the anomalies written are
    /// the same, one per duplicate or conflict answered, each naming the original answered.
    #[test]
    fn anomalies_written_in_a_run_equal_those_written_one_by_one(
        stream in proptest::collection::vec((0u8..5, 0u8..2, any::<bool>()), 1..60),
        cuts in proptest::collection::vec(1usize..8, 1..12),
        keyed in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let stores: Vec<Store> = ["run", "alone"]
            .iter()
            .map(|name| {
                let store = Store::open(&dir.path().join(format!("{name}.redb")), 1 << 22)
                    .expect("open");
                crate::customers::create_for_test(&store, TENANT, "c1", NOW_MS);
                store
            })
            .collect();
        let config = IngestConfig::default();
        let ctx = Context { tenant: TENANT, now_ms: NOW_MS, config: &config };
        let mut commands = Vec::new();
        let mut position = 0;
        for (n, cut) in cuts.iter().cycle().enumerate() {
            if position >= stream.len() {
                break;
            }
            let end = (position + cut).min(stream.len());
            let batch: Vec<serde_json::Value> = stream[position..end]
                .iter()
                .map(|&(id, variant, stable)| {
                    let mut e = json!({"customer": "c1", "type": "t",
                        "timestamp": crate::clock::rfc3339(NOW_MS - i64::from(id) * 1000),
                        "properties": {"v": variant, "id": id}});
                    if stable {
                        e["id"] = json!(format!("id-{id}"));
                    }
                    e
                })
                .collect();
            let events = parse_body(json!({"events": batch}), Format::Native, &ctx).expect("shape");
            commands.push(IngestBatch {
                tenant: TENANT,
                events,
                now_ms: NOW_MS,
                idempotency_key: keyed.then(|| format!("key-{n}")),
            });
            position = end;
        }
        let run: Vec<Status> = stores[0]
            .apply_run(commands.clone())
            .expect("ingest")
            .into_iter()
            .flatten()
            .collect();
        let alone: Vec<Status> = commands
            .into_iter()
            .flat_map(|c| stores[1].apply_one(c).expect("ingest"))
            .collect();
        prop_assert_eq!(&run, &alone);
        let written = anomalies_of(&stores[0]);
        prop_assert_eq!(&written, &anomalies_of(&stores[1]));
        let answered: Vec<(super::anomaly::AnomalyKind, Id)> = run
            .iter()
            .filter_map(|s| match s {
                Status::Duplicate { id, .. } => Some((super::anomaly::AnomalyKind::Duplicate, *id)),
                Status::Conflict { id, .. } => Some((super::anomaly::AnomalyKind::Conflict, *id)),
                _ => None,
            })
            .collect();
        let recorded: Vec<(super::anomaly::AnomalyKind, Id)> =
            written.iter().map(|a| (a.kind, a.original)).collect();
        prop_assert_eq!(answered, recorded);
        for a in &written {
            prop_assert_eq!(
                a.properties.is_some(),
                a.kind == super::anomaly::AnomalyKind::Conflict,
                "properties are kept for conflicts only"
            );
            prop_assert_eq!(a.idempotency_key.is_some(), keyed);
        }
    }
}
