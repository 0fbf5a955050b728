//! Alerts below HTTP, through the real watcher: the firings of any usage sequence equal a
//! recomputation from the events, and balance thresholds fire, recover and fire again.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::json;

use super::firing::{self, Firing};
use super::window::calendar_month;
use super::{Alert, AlertKind, ArchiveAlert, CreateAlert};
use crate::config::IngestConfig;
use crate::decimal::Stored;
use crate::id::Id;
use crate::ingest::event::IngestBatch;
use crate::ingest::meter::{Aggregation, CreateMeter, Meter};
use crate::ingest::parse::{parse_body, Context, Format};
use crate::ledger::grant::{Category, ConsumeCredits, CreateGrant, Funding, Grant, GrantStatus};
use crate::store::{tables, Store, TenantId};

const TENANT: TenantId = TenantId(1);
/// 2027-01-30T00:00:00Z: a few days before a month boundary.
const START_MS: i64 = 1_801_267_200_000;
const HOUR_MS: i64 = 3_600_000;
/// Billing as the daemon's defaults have it, without collection.
const POLICY: crate::billing::run::Policy = crate::billing::run::Policy {
    grace_ms: 0,
    auto_collect: None,
    adjust_window_ms: 35 * 24 * HOUR_MS,
    chunk_periods: 500,
    trial_notice_ms: 3 * 24 * HOUR_MS,
};

fn store() -> (tempfile::TempDir, Store, Id) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("a.redb"), 1 << 22).expect("open");
    store.set_watcher(Arc::new(crate::watch::Watch {
        policy: POLICY,
        interim_min_interval_ms: 0,
    }));
    let customer = crate::customers::create_for_test(&store, TENANT, "c1", START_MS).id;
    (dir, store, customer)
}

fn sum_meter(store: &Store) -> Meter {
    let meter = Meter {
        id: Id::generate(),
        key: "tokens".into(),
        name: None,
        event_type: "t".into(),
        aggregation: Aggregation::Sum,
        value_property: Some("v".into()),
        unique_property: None,
        created_at_ms: START_MS,
        backfilled_events: 0,
        backfill_skipped_events: 0,
    };
    store
        .apply_one(CreateMeter {
            tenant: TENANT,
            meter: meter.clone(),
            chunk_events: crate::ingest::backfill::DEFAULT_CHUNK_EVENTS,
        })
        .expect("store")
        .expect("meter");
    meter
}

fn alert(customer: Option<Id>, kind: AlertKind, thresholds: &[i64]) -> Alert {
    Alert {
        id: Id::generate(),
        customer,
        kind,
        thresholds: thresholds
            .iter()
            .map(|t| Stored(Decimal::from(*t)))
            .collect(),
        name: None,
        created_at_ms: START_MS,
        archived_at_ms: None,
    }
}

fn create(store: &Store, alert: &Alert) {
    store
        .apply_one(CreateAlert {
            policy: POLICY,
            tenant: TENANT,
            alert: alert.clone(),
        })
        .expect("create");
}

fn firings(store: &Store, alert: Id) -> Vec<Firing> {
    let tx = store.read().expect("read");
    firing::all_of(
        &tx.open_table(tables::ALERT_FIRINGS).expect("t"),
        TENANT,
        alert,
    )
    .expect("firings")
}

fn ingest(store: &Store, now_ms: i64, events: &[(i64, i64)]) {
    let config = IngestConfig::default();
    let ctx = Context {
        tenant: TENANT,
        now_ms,
        config: &config,
    };
    let batch: Vec<serde_json::Value> = events
        .iter()
        .map(|(ts, v)| json!({"customer": "c1", "type": "t", "timestamp": crate::clock::rfc3339(*ts), "properties": {"v": v.to_string()}}))
        .collect();
    let events = parse_body(json!({ "events": batch }), Format::Native, &ctx).expect("shape");
    store
        .apply_one(IngestBatch {
            tenant: TENANT,
            events,
            now_ms,
            idempotency_key: None,
        })
        .expect("ingest");
}

/// One write of the random sequence: when it is received, and its events (age, value).
#[derive(Debug, Clone)]
struct Write {
    advance_hours: i64,
    events: Vec<(i64, i64)>,
}

fn writes() -> impl Strategy<Value = Vec<Write>> {
    proptest::collection::vec(
        (
            0i64..30,
            proptest::collection::vec((0i64..(40 * HOUR_MS), 1i64..40), 0..4),
        )
            .prop_map(|(advance_hours, events)| Write {
                advance_hours,
                events,
            }),
        1..30,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the sequence (backdated events, month boundaries crossed), the firings are
    /// exactly the (window, threshold) pairs some write's recomputed usage reached, each with
    /// the value of the first write that reached it.
    #[test]
    fn usage_firings_equal_a_recomputation(writes in writes()) {
        let (_dir, store, customer) = store();
        let meter = sum_meter(&store);
        let thresholds = [10, 25, 60, 100];
        let a = alert(Some(customer), AlertKind::UsageExceeded { meter: meter.id }, &thresholds);
        create(&store, &a);
        let mut now = START_MS;
        let mut all: Vec<(i64, i64)> = Vec::new();
        let mut expected: BTreeMap<(i64, u8), Decimal> = BTreeMap::new();
        for w in writes {
            now += w.advance_hours * HOUR_MS;
            let events: Vec<(i64, i64)> = w.events.iter().map(|(age, v)| (now - age, *v)).collect();
            if events.is_empty() {
                continue;
            }
            ingest(&store, now, &events);
            all.extend(events.iter().copied());
            // The windows of the write's time and of its first and last event timestamps.
            let first = events.iter().map(|e| e.0).min().expect("events");
            let last = events.iter().map(|e| e.0).max().expect("events");
            let mut instants = vec![first, last, now];
            instants.sort_unstable();
            instants.dedup();
            for instant in instants {
                let window = calendar_month(instant).expect("window");
                let usage: i64 = all
                    .iter()
                    .filter(|(ts, _)| window.start_ms <= *ts && *ts < window.end_ms)
                    .map(|(_, v)| v)
                    .sum();
                for (i, t) in thresholds.iter().enumerate() {
                    if usage >= *t {
                        expected.entry((window.start_ms, i as u8)).or_insert(Decimal::from(usage));
                    }
                }
            }
        }
        let got: BTreeMap<(i64, u8), Decimal> = firings(&store, a.id)
            .into_iter()
            .map(|f| ((f.window_start_ms, f.threshold_index), f.value.0))
            .collect();
        prop_assert_eq!(got.len(), firings(&store, a.id).len(), "one firing per window and threshold");
        prop_assert_eq!(got, expected);
    }
}

fn grant(store: &Store, customer: Id, amount_minor: i64, now_ms: i64) {
    store
        .apply_one(CreateGrant {
            tenant: TENANT,
            grant: Grant {
                id: Id::generate(),
                customer,
                currency: "USD".into(),
                amount_minor,
                category: Category::Promotional,
                funding: Funding::PromotionalExpense,
                priority: 0,
                effective_at_ms: now_ms,
                expires_at_ms: None,
                created_at_ms: now_ms,
                status: GrantStatus::Active,
                closed_at_ms: None,
                issue_entry: Id::generate(),
                close_entry: None,
            },
            reason: "test".into(),
            origin: format!("grant-{}", Id::generate().0),
        })
        .expect("store")
        .expect("grant");
}

fn burn(store: &Store, customer: Id, amount_minor: i64, now_ms: i64) {
    store
        .apply_one(ConsumeCredits {
            tenant: TENANT,
            customer,
            currency: "USD".into(),
            amount_minor,
            now_ms,
            entry_id: Id::generate(),
            origin: format!("burn-{}", Id::generate().0),
        })
        .expect("store")
        .expect("burn");
}

fn notifications_of(store: &Store, event_type: &str) -> usize {
    let tx = store.read().expect("read");
    let table = tx.open_table(tables::NOTIFICATIONS).expect("t");
    crate::store::ReadableTable::iter(&table)
        .expect("iter")
        .filter(|e| {
            let (_, v) = e.as_ref().expect("row");
            let n: crate::notifications::outbox::Notification =
                crate::store::codec::decode(v.value()).expect("decode");
            n.event_type == event_type
        })
        .count()
}

#[test]
fn a_balance_alert_fires_on_a_drop_recovers_on_a_grant_and_fires_again() {
    let (_dir, store, customer) = store();
    grant(&store, customer, 1_000, START_MS);
    let below = alert(
        None,
        AlertKind::CreditBalanceBelow { currency: None },
        &[100, 500],
    );
    let depleted = alert(
        Some(customer),
        AlertKind::CreditBalanceDepleted { currency: None },
        &[],
    );
    create(&store, &below);
    create(&store, &depleted);
    assert!(firings(&store, below.id).is_empty());
    // 1000 → 50: both thresholds at once, the higher first.
    burn(&store, customer, 950, START_MS + 1);
    let fired = firings(&store, below.id);
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_eq!(fired[0].threshold_index, 1, "500 is crossed first");
    assert_eq!(fired[1].threshold_index, 0);
    assert_eq!(fired[0].value.0, Decimal::from(50));
    assert_eq!(fired[0].currency.as_deref(), Some("USD"));
    // A further drop fires nothing new.
    burn(&store, customer, 10, START_MS + 2);
    assert_eq!(firings(&store, below.id).len(), 2);
    // Depleted at zero.
    burn(&store, customer, 40, START_MS + 3);
    assert_eq!(firings(&store, depleted.id).len(), 1);
    // A grant of 200: back above 100 (recovered, re-armed) and above 0, still below 500.
    grant(&store, customer, 200, START_MS + 4);
    let fired = firings(&store, below.id);
    assert_eq!(fired.len(), 2);
    let low = fired.iter().find(|f| f.threshold_index == 0).expect("100");
    assert_eq!(
        low.recovered,
        Some((START_MS + 4, Stored(Decimal::from(200))))
    );
    assert!(fired
        .iter()
        .any(|f| f.threshold_index == 1 && f.recovered.is_none()));
    assert_eq!(notifications_of(&store, "credit_balance.recovered"), 2);
    // The next drop below 100 fires again, once.
    burn(&store, customer, 150, START_MS + 5);
    burn(&store, customer, 10, START_MS + 6);
    let fired = firings(&store, below.id);
    assert_eq!(fired.len(), 3, "{fired:?}");
    assert_eq!(fired[2].threshold_index, 0);
    assert_eq!(fired[2].window_start_ms, START_MS + 4);
    assert_eq!(notifications_of(&store, "alert.triggered"), 4);
}

#[test]
fn an_archived_alert_stops_firing() {
    let (_dir, store, customer) = store();
    let meter = sum_meter(&store);
    let a = alert(None, AlertKind::UsageExceeded { meter: meter.id }, &[5, 50]);
    create(&store, &a);
    ingest(&store, START_MS, &[(START_MS, 10)]);
    assert_eq!(firings(&store, a.id).len(), 1);
    store
        .apply_one(ArchiveAlert {
            tenant: TENANT,
            id: a.id,
            now_ms: START_MS + 1,
        })
        .expect("store")
        .expect("archive");
    ingest(&store, START_MS + 2, &[(START_MS + 2, 100)]);
    assert_eq!(firings(&store, a.id).len(), 1);
    let _ = customer;
}

fn balance_of(store: &Store, customer: Id) -> i64 {
    let tx = store.read().expect("read");
    let grants = tx.open_table(tables::GRANTS).expect("t");
    let by_customer = tx.open_table(tables::GRANTS_BY_CUSTOMER).expect("t");
    let balances = tx.open_table(tables::BALANCES).expect("t");
    crate::ledger::grant::of_customer(&grants, &by_customer, TENANT, customer)
        .expect("grants")
        .iter()
        .map(|g| crate::ledger::grant::remaining(&balances, TENANT, g).expect("remaining"))
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the grants and burns, each balance threshold fired once per drop below it and
    /// recovered once per rise back to it, exactly as a model of the rule recomputes from the
    /// balance after each write.
    #[test]
    fn balance_firings_equal_a_recomputation(
        ops in proptest::collection::vec((any::<bool>(), 1i64..400), 1..30),
    ) {
        let (_dir, store, customer) = store();
        let thresholds = [50, 200, 300];
        let a = alert(Some(customer), AlertKind::CreditBalanceBelow { currency: None }, &thresholds);
        create(&store, &a);
        // A new alert on a customer without credits fires at once (0 is below every threshold).
        let mut fired = [true; 3];
        let mut fires = [1usize; 3];
        let mut recoveries = [0usize; 3];
        let mut now = START_MS;
        for (is_grant, amount) in ops {
            now += 1;
            if is_grant {
                grant(&store, customer, amount, now);
            } else {
                let left = balance_of(&store, customer);
                if left == 0 {
                    continue;
                }
                burn(&store, customer, amount.min(left), now);
            }
            let b = balance_of(&store, customer);
            for (i, t) in thresholds.iter().enumerate() {
                if !fired[i] && b < *t {
                    fired[i] = true;
                    fires[i] += 1;
                } else if fired[i] && b >= *t {
                    fired[i] = false;
                    recoveries[i] += 1;
                }
            }
        }
        let got = firings(&store, a.id);
        for i in 0..3 {
            let of: Vec<&Firing> = got.iter().filter(|f| usize::from(f.threshold_index) == i).collect();
            prop_assert_eq!(of.len(), fires[i], "fires of threshold {}", i);
            prop_assert_eq!(of.iter().filter(|f| f.recovered.is_some()).count(), recoveries[i]);
            prop_assert!(of.iter().all(|f| f.value.0 < Decimal::from(thresholds[i])));
        }
        prop_assert_eq!(notifications_of(&store, "alert.triggered"), fires.iter().sum::<usize>());
        prop_assert_eq!(notifications_of(&store, "credit_balance.recovered"), recoveries.iter().sum::<usize>());
    }
}

#[test]
fn a_backdated_event_fires_in_the_window_it_falls_in() {
    let (_dir, store, customer) = store();
    let meter = sum_meter(&store);
    let a = alert(
        Some(customer),
        AlertKind::UsageExceeded { meter: meter.id },
        &[10],
    );
    create(&store, &a);
    // 2027-02-01T00:00:00Z = START_MS + 2 days; received 30 s after midnight, timestamped 1 min before.
    let feb = START_MS + 48 * HOUR_MS;
    ingest(&store, feb + 30_000, &[(feb - 60_000, 15)]);
    let got = firings(&store, a.id);
    assert_eq!(
        got.len(),
        1,
        "January usage reached 15 >= 10 but fired: {got:?}"
    );
}

#[test]
fn usage_after_a_subscription_ended_does_not_fire_the_same_usage_again() {
    use crate::billing::period::Interval;
    use crate::billing::plan::{CreatePlan, Plan};
    use crate::billing::subscription::{CreateSubscription, Subscription};
    let (_dir, store, customer) = store();
    let meter = sum_meter(&store);
    let plan = Plan {
        id: Id::generate(),
        code: "m".into(),
        name: "M".into(),
        currency: "USD".into(),
        interval: Interval::Month,
        interval_count: 1,
        fixed_fee: None,
        charges: Vec::new(),
        created_at_ms: START_MS,
        bill_usage_in_trial: false,
        threshold_minor: None,
        minimum_minor: None,
        version: 1,
        previous_version: None,
    };
    let plan_id = plan.id;
    store
        .apply_one(CreatePlan {
            tenant: TENANT,
            plan,
        })
        .expect("store")
        .expect("plan");
    // Anchored 2027-01-30; it ends 2027-01-31 (a cancellation).
    let mut sub = Subscription::new(
        Id::generate(),
        customer,
        plan_id,
        START_MS,
        START_MS,
        START_MS,
    );
    sub.ends_at_ms = Some(START_MS + 24 * HOUR_MS);
    store
        .apply_one(CreateSubscription {
            tenant: TENANT,
            subscription: sub,
        })
        .expect("store")
        .expect("subscription");
    let a = alert(
        Some(customer),
        AlertKind::UsageExceeded { meter: meter.id },
        &[100],
    );
    create(&store, &a);
    ingest(&store, START_MS + HOUR_MS, &[(START_MS + HOUR_MS, 150)]);
    assert_eq!(firings(&store, a.id).len(), 1);
    // After the end: one more unit, same calendar month.
    ingest(
        &store,
        START_MS + 26 * HOUR_MS,
        &[(START_MS + 26 * HOUR_MS, 1)],
    );
    let got = firings(&store, a.id);
    assert_eq!(
        got.len(),
        1,
        "the same 150 units fired twice: {:#?}",
        got.iter()
            .map(|f| (f.window_start_ms, f.window_end_ms, f.value.0))
            .collect::<Vec<_>>()
    );
}

#[test]
fn spend_fires_once_per_billing_period_of_its_subscriptions() {
    use crate::billing::period::Interval;
    use crate::billing::plan::{Charge, CreatePlan, Plan};
    use crate::billing::pricing::Model;
    use crate::billing::subscription::{CreateSubscription, Subscription};
    let (_dir, store, customer) = store();
    let meter = sum_meter(&store);
    let mk = |code: &str, charges: Vec<Charge>| Plan {
        id: Id::generate(),
        code: code.into(),
        name: code.into(),
        currency: "USD".into(),
        interval: Interval::Month,
        interval_count: 1,
        fixed_fee: None,
        charges,
        created_at_ms: START_MS - 40 * 24 * HOUR_MS,
        bill_usage_in_trial: false,
        threshold_minor: None,
        minimum_minor: None,
        version: 1,
        previous_version: None,
    };
    let base = mk("base", Vec::new());
    let usage_plan = mk(
        "usage",
        vec![Charge {
            meter: meter.id,
            model: Model::PerUnit {
                unit_price: Stored(Decimal::ONE),
            },
            free_units: Stored(Decimal::ZERO),
        }],
    );
    let (b, u) = (base.id, usage_plan.id);
    store
        .apply_one(CreatePlan {
            tenant: TENANT,
            plan: base,
        })
        .expect("s")
        .expect("p");
    store
        .apply_one(CreatePlan {
            tenant: TENANT,
            plan: usage_plan,
        })
        .expect("s")
        .expect("p");
    // Oldest: anchored 2027-01-01. Second: anchored 2027-01-15.
    let jan1 = START_MS - 29 * 24 * HOUR_MS;
    let jan15 = START_MS - 15 * 24 * HOUR_MS;
    let s1 = Subscription::new(Id::generate(), customer, b, jan1, jan1, jan1);
    store
        .apply_one(CreateSubscription {
            tenant: TENANT,
            subscription: s1,
        })
        .expect("s")
        .expect("sub");
    let s2 = Subscription::new(Id::generate(), customer, u, jan15, jan15, jan15);
    store
        .apply_one(CreateSubscription {
            tenant: TENANT,
            subscription: s2,
        })
        .expect("s")
        .expect("sub");
    let a = alert(
        Some(customer),
        AlertKind::SpendExceeded { currency: None },
        &[5000],
    );
    create(&store, &a);
    ingest(&store, START_MS, &[(START_MS, 60)]);
    let first = firings(&store, a.id);
    assert_eq!(first.len(), 1, "{first:?}");
    // 2027-02-02: the usage subscription's period (Jan 15 - Feb 15) still holds the same 60.
    let feb2 = START_MS + 3 * 24 * HOUR_MS;
    ingest(&store, feb2, &[(feb2, 1)]);
    let got = firings(&store, a.id);
    assert_eq!(
        got.len(),
        1,
        "fired again for the same spend: {:#?}",
        got.iter()
            .map(|f| (f.window_start_ms, f.value.0))
            .collect::<Vec<_>>()
    );
}
