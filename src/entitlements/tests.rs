//! Property test of the check: under random usage across resets (events arriving out of
//! order, one backdated just before a reset after the reset has passed), random grants (one
//! starting exactly at a reset) and random instants, the check equals a recomputation from the
//! events and grants themselves, with windows computed independently here.

use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::json;

use super::check::{check, ReadTables, Source};
use super::entitlement::{SetEntitlement, Spec, SpecKind, Target};
use super::feature::{CreateFeature, Feature};
use super::grant::{CreateGrant, Grant};
use super::window::{Reset, DAY_MS};
use crate::billing::period::Interval;
use crate::billing::plan::{CreatePlan, Plan};
use crate::billing::subscription::{CreateSubscription, Subscription};
use crate::config::IngestConfig;
use crate::decimal::Stored;
use crate::id::Id;
use crate::ingest::event::IngestBatch;
use crate::ingest::meter::{Aggregation, CreateMeter, Meter};
use crate::ingest::parse::{parse_body, Context, Format};
use crate::store::{Store, TenantId};

const NOW_MS: i64 = 1_800_000_000_000;
const TENANT: TenantId = TenantId(1);
/// The subscription starts three days and a few odd hours before now, so its daily billing
/// periods do not fall on UTC midnights.
const START_MS: i64 = NOW_MS - 3 * DAY_MS - 5 * 3_600_000 - 17 * 60_000 - 1_234;

/// One event: milliseconds after the start, and its value.
type Usage = (i64, u8);

fn setup(store: &Store, reset: Reset, limit: i64, hard: bool) -> (Id, Id) {
    let customer = crate::customers::create_for_test(store, TENANT, "c1", START_MS - 1);
    let meter = Meter {
        id: Id::generate(),
        key: "tokens".into(),
        name: None,
        event_type: "t".into(),
        aggregation: Aggregation::Sum,
        value_property: Some("v".into()),
        unique_property: None,
        created_at_ms: START_MS - 1,
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
    let feature = Feature {
        id: Id::generate(),
        key: "gpt".into(),
        name: "GPT".into(),
        created_at_ms: START_MS - 1,
        archived_at_ms: None,
    };
    store
        .apply_one(CreateFeature {
            tenant: TENANT,
            feature: feature.clone(),
        })
        .expect("store")
        .expect("feature");
    let plan = Plan {
        id: Id::generate(),
        code: "daily".into(),
        name: "Daily".into(),
        currency: "USD".into(),
        interval: Interval::Day,
        interval_count: 1,
        fixed_fee: None,
        charges: Vec::new(),
        created_at_ms: START_MS - 1,
        minimum_minor: None,
        version: 1,
        previous_version: None,
        bill_usage_in_trial: false,
        threshold_minor: None,
    };
    store
        .apply_one(CreatePlan {
            tenant: TENANT,
            plan: plan.clone(),
        })
        .expect("store")
        .expect("plan");
    store
        .apply_one(SetEntitlement {
            tenant: TENANT,
            target: Target::Plan(plan.id),
            spec: Spec {
                feature: "gpt".into(),
                enabled: true,
                kind: SpecKind::Metered {
                    meter: "tokens".into(),
                    limit: Decimal::from(limit),
                    reset,
                    hard,
                },
            },
            now_ms: START_MS,
        })
        .expect("store")
        .expect("entitlement");
    let sub = Subscription::new(
        Id::generate(),
        customer.id,
        plan.id,
        START_MS,
        START_MS,
        START_MS,
    );
    store
        .apply_one(CreateSubscription {
            tenant: TENANT,
            subscription: sub,
        })
        .expect("store")
        .expect("subscription");
    (customer.id, feature.id)
}

fn ingest(store: &Store, events: &[Usage], first_index: usize) {
    let config = IngestConfig::default();
    let ctx = Context {
        tenant: TENANT,
        now_ms: NOW_MS,
        config: &config,
    };
    let body: Vec<serde_json::Value> = events
        .iter()
        .enumerate()
        .map(|(i, (offset, value))| {
            json!({
                "id": format!("e{}", first_index + i), "customer": "c1", "type": "t",
                "timestamp": crate::clock::rfc3339(START_MS + offset),
                "properties": {"v": value},
            })
        })
        .collect();
    let events = parse_body(json!({"events": body}), Format::Native, &ctx).expect("shape");
    store
        .apply_one(IngestBatch {
            tenant: TENANT,
            events,
            now_ms: NOW_MS,
            idempotency_key: None,
        })
        .expect("ingest");
}

/// The window containing `at`, computed here from first principles.
fn window_of(reset: Reset, at: i64) -> (i64, i64) {
    match reset {
        Reset::Day => {
            let s = at.div_euclid(DAY_MS) * DAY_MS;
            (s, s + DAY_MS)
        }
        Reset::BillingPeriod => {
            let s = START_MS + (at - START_MS).div_euclid(DAY_MS) * DAY_MS;
            (s, s + DAY_MS)
        }
        Reset::Month => {
            let s = crate::clock::month_start(at).expect("month");
            (s, crate::clock::add_months(s, 1).expect("month"))
        }
    }
}

fn resets() -> impl Strategy<Value = Reset> {
    prop_oneof![
        Just(Reset::Day),
        Just(Reset::BillingPeriod),
        Just(Reset::Month)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_check_equals_a_recomputation_from_the_events(
        reset in resets(),
        limit in 0i64..40,
        hard in any::<bool>(),
        events in proptest::collection::vec((0i64..(3 * DAY_MS), 1u8..6), 0..40),
        cuts in proptest::collection::vec(1usize..8, 1..10),
        grants in proptest::collection::vec((0i64..(3 * DAY_MS), 1u8..9, proptest::option::of(1i64..DAY_MS)), 0..5),
        instants in proptest::collection::vec(0i64..(3 * DAY_MS), 1..12),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("e.redb"), 1 << 22).expect("open");
        let (customer, feature) = setup(&store, reset, limit, hard);
        // A reset boundary inside the span (the second window's start).
        let boundary = window_of(reset, START_MS + DAY_MS + 1).0.max(START_MS + 1);
        let mut all: Vec<Usage> = events.clone();
        let mut position = 0;
        for cut in cuts.iter().cycle() {
            if position >= events.len() {
                break;
            }
            let end = (position + cut).min(events.len());
            ingest(&store, &events[position..end], position);
            position = end;
        }
        // Backdated after the reset passed: just before the boundary.
        let late = (boundary - 1 - START_MS, 4u8);
        ingest(&store, &[late], 10_000);
        all.push(late);
        // Grants, one starting exactly at the reset.
        let mut stated: Vec<(i64, Decimal, Option<i64>)> = grants
            .iter()
            .map(|(offset, amount, lasts)| (START_MS + offset, Decimal::from(*amount), lasts.map(|l| START_MS + offset + l)))
            .collect();
        stated.push((boundary, Decimal::from(5), None));
        for (i, (effective, amount, expires)) in stated.iter().enumerate() {
            store.apply_one(CreateGrant {
                tenant: TENANT,
                feature: "gpt".into(),
                grant: Grant {
                    id: Id(u128::try_from(i).expect("small") + 1),
                    customer,
                    feature: Id(0),
                    amount: Stored(*amount),
                    effective_at_ms: *effective,
                    expires_at_ms: *expires,
                    created_at_ms: NOW_MS,
                },
            }).expect("store").expect("grant");
        }
        let tx = store.read().expect("read");
        let tables = ReadTables::open(&tx).expect("tables");
        let mut ats: Vec<i64> = instants.iter().map(|o| START_MS + o).collect();
        ats.extend([boundary - 1, boundary, boundary + 1, NOW_MS]);
        for at in ats {
            let (start, end) = window_of(reset, at);
            let usage: Decimal = all
                .iter()
                .filter(|(o, _)| START_MS + o >= start && START_MS + o <= at)
                .map(|(_, v)| Decimal::from(*v))
                .sum();
            let granted: Decimal = stated
                .iter()
                .filter(|(e, _, x)| start <= *e && *e <= at && x.is_none_or(|x| at < x))
                .map(|(_, a, _)| *a)
                .sum();
            let total = Decimal::from(limit) + granted;
            let c = check(&tables, TENANT, customer, feature, at).expect("check").expect("found");
            let m = c.metered.as_ref().expect("metered");
            prop_assert_eq!(c.source, Source::Plan);
            prop_assert_eq!((m.window.start_ms, m.window.end_ms), (start, end), "window at {}", at);
            prop_assert_eq!(m.usage, usage, "usage at {}", at);
            prop_assert_eq!(m.remaining, total - usage, "remaining at {}", at);
            prop_assert_eq!(c.has_access, !(hard && usage >= total), "access at {}", at);
        }
        // Before the subscription started, nothing grants the feature.
        let before = check(&tables, TENANT, customer, feature, START_MS - 1).expect("check").expect("found");
        prop_assert_eq!((before.source, before.has_access), (Source::None, false));
    }
}

/// A plan on the daily schedule granting `specs`, created at `START_MS`.
fn plan_with(store: &Store, code: &str, specs: Vec<Spec>) -> Id {
    let plan = Plan {
        id: Id::generate(),
        code: code.into(),
        name: code.into(),
        currency: "USD".into(),
        interval: Interval::Day,
        interval_count: 1,
        fixed_fee: None,
        charges: Vec::new(),
        created_at_ms: START_MS,
        minimum_minor: None,
        version: 1,
        previous_version: None,
        bill_usage_in_trial: false,
        threshold_minor: None,
    };
    store
        .apply_one(CreatePlan {
            tenant: TENANT,
            plan: plan.clone(),
        })
        .expect("store")
        .expect("plan");
    for spec in specs {
        store
            .apply_one(SetEntitlement {
                tenant: TENANT,
                target: Target::Plan(plan.id),
                spec,
                now_ms: START_MS,
            })
            .expect("store")
            .expect("entitlement");
    }
    plan.id
}

fn spec(feature: &str, enabled: bool, kind: SpecKind) -> Spec {
    Spec {
        feature: feature.into(),
        enabled,
        kind,
    }
}

fn tokens_limit(limit: i64, reset: Reset, hard: bool) -> SpecKind {
    SpecKind::Metered {
        meter: "tokens".into(),
        limit: Decimal::from(limit),
        reset,
        hard,
    }
}

#[test]
fn several_subscriptions_add_their_limits_and_grant_access_if_any_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("s.redb"), 1 << 22).expect("open");
    // The first plan (and its subscription) from `setup`: gpt metered on tokens, 10 a day, hard.
    let (customer, gpt) = setup(&store, Reset::Day, 10, true);
    for key in ["sso", "seats"] {
        let f = Feature {
            id: Id::generate(),
            key: key.into(),
            name: key.into(),
            created_at_ms: START_MS,
            archived_at_ms: None,
        };
        store
            .apply_one(CreateFeature {
                tenant: TENANT,
                feature: f,
            })
            .expect("store")
            .expect("feature");
    }
    let second = plan_with(
        &store,
        "second",
        vec![
            spec("gpt", true, tokens_limit(5, Reset::Day, false)),
            spec("sso", true, SpecKind::Boolean),
            spec("seats", true, SpecKind::Static("{\"seats\":2}".into())),
        ],
    );
    // A third plan with another reset for gpt (left out), sso denied, seats another config.
    let third = plan_with(
        &store,
        "third",
        vec![
            spec("gpt", true, tokens_limit(1_000, Reset::Month, true)),
            spec("sso", false, SpecKind::Boolean),
            spec("seats", true, SpecKind::Static("{\"seats\":9}".into())),
        ],
    );
    for plan in [second, third] {
        let sub = Subscription::new(Id::generate(), customer, plan, START_MS, START_MS, START_MS);
        store
            .apply_one(CreateSubscription {
                tenant: TENANT,
                subscription: sub,
            })
            .expect("store")
            .expect("subscription");
    }
    ingest(
        &store,
        &[(DAY_MS + 5, 5), (DAY_MS + 6, 5), (DAY_MS + 7, 3)],
        0,
    );
    let tx = store.read().expect("read");
    let tables = ReadTables::open(&tx).expect("tables");
    let feature_id = |key: &str| {
        super::feature::find(&tx, TENANT, key)
            .expect("read")
            .expect("feature")
            .id
    };
    let at = START_MS + DAY_MS + 10;
    let c = check(&tables, TENANT, customer, gpt, at)
        .expect("check")
        .expect("found");
    let m = c.metered.expect("metered");
    // 10 (hard) + 5 (soft) on the same meter and reset; the monthly one is left out.
    assert_eq!(
        (m.limit, m.usage, m.remaining, m.hard),
        (
            Decimal::from(15),
            Decimal::from(13),
            Decimal::from(2),
            false
        )
    );
    assert!(c.has_access);
    let sso = check(&tables, TENANT, customer, feature_id("sso"), at)
        .expect("check")
        .expect("found");
    assert!(sso.has_access, "boolean is any");
    let seats = check(&tables, TENANT, customer, feature_id("seats"), at)
        .expect("check")
        .expect("found");
    assert_eq!(
        seats.config,
        Some(super::entitlement::Config::Static {
            value: "{\"seats\":2}".into()
        }),
        "the oldest granting subscription's config"
    );
}

/// Runs the check inside the writing transaction for every customer whose usage it touched,
/// as the `entitlement_exhausted` alert does.
struct CheckingWatcher {
    feature: Id,
    seen: std::sync::Mutex<Vec<(Decimal, bool)>>,
}

impl crate::store::Watcher for CheckingWatcher {
    fn before_commit(
        &self,
        tx: &crate::store::WriteTxn,
        notes: Vec<crate::store::touched::Touch>,
    ) -> Result<(), crate::store::StoreError> {
        let touches = crate::watch::Touches::from_notes(&notes);
        let tables = super::check::WriteTables::open(tx)?;
        for (tenant, customer, touch) in touches.usage() {
            if let Some(c) = check(&tables, tenant, customer, self.feature, touch.at_ms)? {
                let m = c.metered.expect("metered");
                if let Ok(mut seen) = self.seen.lock() {
                    seen.push((m.usage, c.has_access));
                }
            }
        }
        Ok(())
    }
}

#[test]
fn the_check_runs_inside_the_ingest_transaction_and_sees_its_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("w.redb"), 1 << 22).expect("open");
    let (_, feature) = setup(&store, Reset::Month, 8, true);
    let watcher = std::sync::Arc::new(CheckingWatcher {
        feature,
        seen: Default::default(),
    });
    store.set_watcher(watcher.clone());
    let now_offset = NOW_MS - START_MS - 1_000;
    ingest(&store, &[(now_offset, 5)], 0);
    ingest(&store, &[(now_offset + 1, 3)], 1);
    let seen = watcher.seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![(Decimal::from(5), true), (Decimal::from(8), false)]
    );
}
