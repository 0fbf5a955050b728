//! Property tests of billing: with duplicates and late arrivals across periods and billing runs
//! at arbitrary moments, every period's usage is billed exactly once in total, every invoice
//! re-derives from its inputs, and the ledger verifies.

use std::collections::BTreeMap;

use crate::store::ReadableTable;
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::json;

use super::invoice::{self, Invoice, LineKind};
use super::period::{Interval, DAY_MS};
use super::plan::{Charge, CreatePlan, FeeTiming, FixedFee, Plan};
use super::pricing::Model;
use super::run::{BillingRun, Policy};
use super::subscription::{CreateSubscription, Subscription, SubscriptionStatus};
use super::verify::verify_invoice;
use crate::decimal::Stored;
use crate::id::Id;
use crate::ingest::event::IngestBatch;
use crate::ingest::meter::{Aggregation, CreateMeter, Meter};
use crate::ingest::parse::{parse_body, Context, Format};
use crate::store::{codec, tables, Store, TenantId};

const TENANT: TenantId = TenantId(1);
/// Midnight UTC, so daily periods are calendar days.
const T0: i64 = 1_799_971_200_000;
const NOW: i64 = T0 + 5 * DAY_MS;
const POLICY: Policy = Policy {
    grace_ms: 0,
    auto_collect: None,
    adjust_window_ms: 35 * DAY_MS,
    trial_notice_ms: 3 * 86_400_000,
    chunk_periods: 2,
};

fn meter(key: &str, aggregation: Aggregation) -> Meter {
    Meter {
        id: Id::generate(),
        key: key.into(),
        name: None,
        event_type: "call".into(),
        aggregation,
        value_property: aggregation.needs_value().then(|| "v".to_string()),
        unique_property: (aggregation == Aggregation::UniqueCount).then(|| "u".to_string()),
        created_at_ms: T0,
        backfilled_events: 0,
        backfill_skipped_events: 0,
    }
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    meters: Vec<Meter>,
    customer: Id,
}

fn world() -> World {
    world_priced(Decimal::new(125, 2))
}

/// A world whose plan charges every meter `unit_price` per unit.
fn world_priced(unit_price: Decimal) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("b.redb"), 1 << 22).expect("open");
    let customer = crate::customers::create_for_test(&store, TENANT, "c", T0).id;
    let meters = vec![
        meter("calls", Aggregation::Count),
        meter("tokens", Aggregation::Sum),
        meter("peak", Aggregation::Max),
        meter("users", Aggregation::UniqueCount),
    ];
    for m in &meters {
        store
            .apply_one(CreateMeter {
                tenant: TENANT,
                meter: m.clone(),
                chunk_events: crate::ingest::backfill::DEFAULT_CHUNK_EVENTS,
            })
            .expect("store")
            .expect("meter");
    }
    let plan = Plan {
        id: Id::generate(),
        code: "p".into(),
        name: "P".into(),
        currency: "USD".into(),
        interval: Interval::Day,
        interval_count: 1,
        fixed_fee: Some(FixedFee {
            amount_minor: 500,
            timing: FeeTiming::InArrears,
        }),
        charges: meters
            .iter()
            .map(|m| Charge {
                meter: m.id,
                model: Model::PerUnit {
                    unit_price: Stored(unit_price),
                },
                free_units: Stored(Decimal::ZERO),
            })
            .collect(),
        created_at_ms: T0,
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
    store
        .apply_one(CreateSubscription {
            tenant: TENANT,
            subscription: Subscription::new(Id::generate(), customer, plan_id, T0, T0, T0),
        })
        .expect("store")
        .expect("subscription");
    World {
        _dir: dir,
        store,
        meters,
        customer,
    }
}

fn ingest(w: &World, events: &[(u32, i64, u32, u8)]) {
    let config = crate::config::IngestConfig::default();
    let ctx = Context {
        tenant: TENANT,
        now_ms: NOW,
        config: &config,
    };
    let body: Vec<serde_json::Value> = events
        .iter()
        .map(|(id, ts, v, u)| {
            json!({"id": format!("e{id}"), "customer": "c", "type": "call",
                   "timestamp": crate::clock::rfc3339(*ts), "properties": {"v": v, "u": u}})
        })
        .collect();
    let parsed = parse_body(json!({ "events": body }), Format::Native, &ctx).expect("shape");
    w.store
        .apply_one(IngestBatch {
            tenant: TENANT,
            events: parsed,
            now_ms: NOW,
            idempotency_key: None,
        })
        .expect("ingest");
}

/// A billing run, applied transaction after transaction (two periods each, so the scenarios
/// below also cross chunk boundaries) until it is complete.
fn run(w: &World, as_of: i64) {
    let id = Id::generate();
    for _ in 0..100 {
        let report = w
            .store
            .apply_one(BillingRun {
                tenant: TENANT,
                id,
                as_of_ms: as_of,
                now_ms: NOW,
                policy: POLICY,
                trigger: "test".into(),
                origin: "test".into(),
            })
            .expect("run");
        if report.complete {
            return;
        }
    }
    panic!("a run did not complete");
}

fn invoices(w: &World) -> Vec<Invoice> {
    let tx = w.store.read().expect("read");
    invoice::list(&tx, TENANT, None, None, 500).expect("list").0
}

/// A step of the scenario: ingest some events, or run billing as of the end of a day.
#[derive(Debug, Clone)]
enum Step {
    Ingest(Vec<(u32, i64, u32, u8)>),
    Run(i64),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    // Events: ids from a small pool (so duplicates happen), timestamps across days 0-2.
    let event = (0u32..30, 0i64..3 * DAY_MS, 1u32..50, 0u8..5)
        .prop_map(|(id, offset, v, u)| (id, T0 + offset, v, u));
    let step = prop_oneof![
        3 => proptest::collection::vec(event, 1..8).prop_map(Step::Ingest),
        1 => (1i64..4).prop_map(|day| Step::Run(T0 + day * DAY_MS)),
    ];
    proptest::collection::vec(step, 1..14)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_period_is_billed_exactly_once_in_total(steps in steps()) {
        let w = world();
        // The first delivery of an id defines the event; later ones are duplicates or conflicts.
        let mut first: BTreeMap<u32, (i64, u32, u8)> = BTreeMap::new();
        for step in &steps {
            match step {
                Step::Ingest(events) => {
                    for (id, ts, v, u) in events {
                        first.entry(*id).or_insert((*ts, *v, *u));
                    }
                    ingest(&w, events);
                }
                Step::Run(as_of) => run(&w, *as_of),
            }
        }
        // A last run after everything arrived: day 3 closes and carries every adjustment.
        run(&w, T0 + 4 * DAY_MS);
        let all = invoices(&w);
        for day in 0..3i64 {
            let (start, end) = (T0 + day * DAY_MS, T0 + (day + 1) * DAY_MS);
            let in_day: Vec<&(i64, u32, u8)> =
                first.values().filter(|(ts, _, _)| *ts >= start && *ts < end).collect();
            for m in &w.meters {
                let actual = match m.aggregation {
                    Aggregation::Count => Decimal::from(in_day.len() as u64),
                    Aggregation::Sum => in_day.iter().map(|(_, v, _)| Decimal::from(*v)).sum(),
                    Aggregation::Max => in_day.iter().map(|(_, v, _)| Decimal::from(*v)).max().unwrap_or(Decimal::ZERO),
                    Aggregation::UniqueCount => {
                        let users: std::collections::BTreeSet<u8> = in_day.iter().map(|(_, _, u)| *u).collect();
                        Decimal::from(users.len() as u64)
                    }
                    _ => unreachable!("not used in this plan"),
                };
                let billed: Decimal = all
                    .iter()
                    .flat_map(|i| i.lines.iter())
                    .filter(|l| l.meter == Some(m.id) && l.period_start_ms == start)
                    .filter(|l| matches!(l.kind, LineKind::Usage | LineKind::Adjustment))
                    .map(|l| l.quantity.0)
                    .sum();
                prop_assert_eq!(billed, actual, "meter {} day {}", m.key, day);
            }
            // Exactly one period invoice per day.
            let count = all.iter().filter(|i| i.period_start_ms == start && i.kind == invoice::InvoiceKind::Period).count();
            prop_assert_eq!(count, 1, "day {}", day);
        }
        let tx = w.store.read().expect("read");
        for inv in &all {
            prop_assert_eq!(verify_invoice(&tx, TENANT, inv).expect("verify"), Ok(()), "{}", inv.id.display("inv"));
        }
        let report = crate::ledger::verify::verify(&tx, None, &mut |_, _| {}).expect("verify");
        prop_assert!(report.violation.is_none(), "{:?}", report.violation);
        let _ = w.customer;
    }
}

/// The exact quantity of a meter over the first deliveries of the events of one day.
fn actual_quantity(m: &Meter, first: &BTreeMap<u32, (i64, u32, u8)>, start: i64) -> Decimal {
    let in_day: Vec<&(i64, u32, u8)> = first
        .values()
        .filter(|(ts, _, _)| *ts >= start && *ts < start + DAY_MS)
        .collect();
    match m.aggregation {
        Aggregation::Count => Decimal::from(in_day.len() as u64),
        Aggregation::Sum => in_day.iter().map(|(_, v, _)| Decimal::from(*v)).sum(),
        Aggregation::Max => in_day
            .iter()
            .map(|(_, v, _)| Decimal::from(*v))
            .max()
            .unwrap_or(Decimal::ZERO),
        Aggregation::UniqueCount => {
            let users: std::collections::BTreeSet<u8> = in_day.iter().map(|(_, _, u)| *u).collect();
            Decimal::from(users.len() as u64)
        }
        _ => unreachable!("not used in this plan"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// At half a cent per unit every single unit is a rounding edge: however on-time and late
    /// events and runs interleave, the minor amounts billed for a period's usage (its usage line
    /// plus every adjustment) add up to the rounding of its exact total.
    #[test]
    fn late_adjustments_bill_the_rounding_of_the_exact_total(steps in steps()) {
        let unit_price = Decimal::new(5, 3);
        let w = world_priced(unit_price);
        let mut first: BTreeMap<u32, (i64, u32, u8)> = BTreeMap::new();
        for step in &steps {
            match step {
                Step::Ingest(events) => {
                    for (id, ts, v, u) in events {
                        first.entry(*id).or_insert((*ts, *v, *u));
                    }
                    ingest(&w, events);
                }
                Step::Run(as_of) => run(&w, *as_of),
            }
        }
        run(&w, T0 + 4 * DAY_MS);
        let all = invoices(&w);
        for day in 0..3i64 {
            let start = T0 + day * DAY_MS;
            for m in &w.meters {
                let exact = actual_quantity(m, &first, start) * unit_price;
                let billed: i64 = all
                    .iter()
                    .flat_map(|i| i.lines.iter())
                    .filter(|l| l.meter == Some(m.id) && l.period_start_ms == start)
                    .filter(|l| matches!(l.kind, LineKind::Usage | LineKind::Adjustment))
                    .map(|l| l.amount_minor)
                    .sum();
                prop_assert_eq!(
                    billed,
                    super::pricing::to_minor(exact, 2).expect("in range"),
                    "meter {} day {}", m.key, day
                );
            }
        }
        let tx = w.store.read().expect("read");
        for inv in &all {
            prop_assert_eq!(verify_invoice(&tx, TENANT, inv).expect("verify"), Ok(()), "{}", inv.id.display("inv"));
        }
    }
}

#[test]
fn a_tampered_invoice_fails_verification() {
    let w = world();
    ingest(&w, &[(1, T0 + 1000, 7, 1), (2, T0 + 2000, 3, 2)]);
    run(&w, T0 + DAY_MS);
    let inv = invoices(&w).into_iter().next().expect("an invoice");
    {
        let tx = w.store.read().expect("read");
        assert_eq!(verify_invoice(&tx, TENANT, &inv).expect("verify"), Ok(()));
    }
    let mut tampered = inv.clone();
    let line = tampered
        .lines
        .iter_mut()
        .find(|l| l.kind == LineKind::Usage && l.events > 0)
        .expect("usage line");
    line.quantity = Stored(line.quantity.0 + Decimal::ONE);
    let tx = w.store.begin_write().expect("tx");
    {
        let mut table = tx.open_table(tables::INVOICES).expect("t");
        let key = crate::store::keys::tenant_id(TENANT, tampered.id);
        let bytes = codec::encode(&tampered).expect("encode");
        table
            .insert(key.as_slice(), bytes.as_slice())
            .expect("insert");
        assert!(table.get(key.as_slice()).expect("get").is_some());
    }
    tx.commit().expect("commit");
    let read = w.store.read().expect("read");
    let stored = invoice::get(&read, TENANT, tampered.id)
        .expect("get")
        .expect("invoice");
    let outcome = verify_invoice(&read, TENANT, &stored).expect("verify");
    assert!(outcome.is_err(), "tampering must be found");
}

#[test]
fn billing_runs_twice_never_duplicate_and_void_reissues_once() {
    let w = world();
    ingest(&w, &[(1, T0 + 1000, 7, 1)]);
    run(&w, T0 + DAY_MS);
    run(&w, T0 + DAY_MS);
    let all = invoices(&w);
    assert_eq!(all.len(), 1);
    let voided = w
        .store
        .apply_one(crate::payments::void::VoidInvoice {
            tenant: TENANT,
            id: all[0].id,
            now_ms: NOW,
            origin: "test".into(),
        })
        .expect("store")
        .expect("void");
    assert_eq!(voided.status, invoice::InvoiceStatus::Void);
    run(&w, T0 + DAY_MS);
    run(&w, T0 + DAY_MS);
    let all = invoices(&w);
    assert_eq!(all.len(), 2, "one re-issue");
    assert_eq!(all[1].replaces, Some(all[0].id));
    assert_eq!(all[0].replaced_by, Some(all[1].id));
    assert_eq!(all[1].subtotal_minor, all[0].subtotal_minor);
    let tx = w.store.read().expect("read");
    let report = crate::ledger::verify::verify(&tx, None, &mut |_, _| {}).expect("verify");
    assert!(report.violation.is_none(), "{:?}", report.violation);
    let revenue = crate::ledger::journal::balance(
        &tx.open_table(tables::BALANCES).expect("t"),
        TENANT,
        "USD",
        crate::ledger::account::AccountRef::System(crate::ledger::account::SystemAccount::Revenue),
    )
    .expect("balance");
    assert_eq!(
        revenue, -all[1].subtotal_minor,
        "the void reversed the first invoice"
    );
}

#[test]
fn immediate_cancel_prorates_the_fee_by_the_second() {
    let w = world();
    // A 30-day month (April 2027) with a 30.00 fee in arrears, cancelled 10 days in.
    let april = crate::clock::parse_rfc3339("2027-04-01T00:00:00Z").expect("time");
    let plan = Plan {
        id: Id::generate(),
        code: "monthly".into(),
        name: "Monthly".into(),
        currency: "USD".into(),
        interval: Interval::Month,
        interval_count: 1,
        fixed_fee: Some(FixedFee {
            amount_minor: 3000,
            timing: FeeTiming::InArrears,
        }),
        charges: Vec::new(),
        created_at_ms: april,
        bill_usage_in_trial: false,
        threshold_minor: None,
        minimum_minor: None,
        version: 1,
        previous_version: None,
    };
    let plan_id = plan.id;
    w.store
        .apply_one(CreatePlan {
            tenant: TENANT,
            plan,
        })
        .expect("store")
        .expect("plan");
    let sub_id = Id::generate();
    w.store
        .apply_one(CreateSubscription {
            tenant: TENANT,
            subscription: Subscription::new(sub_id, w.customer, plan_id, april, april, april),
        })
        .expect("store")
        .expect("subscription");
    let cancelled = w
        .store
        .apply_one(super::run::CancelSubscription {
            tenant: TENANT,
            id: sub_id,
            immediately: true,
            now_ms: april + 10 * DAY_MS,
            policy: POLICY,
            origin: "test".into(),
        })
        .expect("store")
        .expect("cancel");
    assert_eq!(cancelled.subscription.status, SubscriptionStatus::Canceled);
    assert_eq!(cancelled.invoices.len(), 1);
    let tx = w.store.read().expect("read");
    let inv = invoice::get(&tx, TENANT, cancelled.invoices[0])
        .expect("get")
        .expect("invoice");
    assert_eq!(inv.kind, invoice::InvoiceKind::Final);
    let fee = inv
        .lines
        .iter()
        .find(|l| l.kind == LineKind::FixedFee)
        .expect("fee line");
    assert_eq!(fee.amount_minor, 1000, "10 of 30 days");
    assert_eq!(fee.proration, Some((10 * DAY_MS, 30 * DAY_MS)));
    assert_eq!(verify_invoice(&tx, TENANT, &inv).expect("verify"), Ok(()));
    drop(tx);
    let again = w
        .store
        .apply_one(super::run::CancelSubscription {
            tenant: TENANT,
            id: sub_id,
            immediately: true,
            now_ms: april + 11 * DAY_MS,
            policy: POLICY,
            origin: "test".into(),
        })
        .expect("store");
    assert!(
        again.is_err(),
        "cancelling a cancelled subscription is refused"
    );
}

#[test]
fn an_immediate_cancel_refuses_a_backlog_larger_than_one_transaction() {
    let w = world();
    let sub = {
        let tx = w.store.read().expect("read");
        super::subscription::of_customer(&tx, TENANT, w.customer).expect("subs")[0].id
    };
    let cancel = |chunk_periods: u64| {
        w.store
            .apply_one(super::run::CancelSubscription {
                tenant: TENANT,
                id: sub,
                immediately: true,
                now_ms: T0 + 10 * DAY_MS + 1,
                policy: Policy {
                    chunk_periods,
                    ..POLICY
                },
                origin: "test".into(),
            })
            .expect("store")
    };
    // Ten closed days plus the current one: more than 5 per transaction is refused, unchanged.
    assert!(matches!(
        cancel(5),
        Err(super::subscription::SubscriptionError::Backlog { periods: 5, .. })
    ));
    assert!(invoices(&w).is_empty(), "nothing written");
    let done = cancel(11).expect("within the bound");
    assert_eq!(done.invoices.len(), 11);
}

/// A step of the numbering scenario: a billing run as of a day's end, voiding the n-th invoice
/// (modulo how many exist), or looking at the upcoming invoice (which must not take a number).
#[derive(Debug, Clone)]
enum NumberStep {
    Run(i64),
    Void(usize),
    Preview,
}

fn number_steps() -> impl Strategy<Value = Vec<NumberStep>> {
    let step = prop_oneof![
        3 => (1i64..5).prop_map(|day| NumberStep::Run(T0 + day * DAY_MS)),
        2 => (0usize..16).prop_map(NumberStep::Void),
        1 => Just(NumberStep::Preview),
    ];
    proptest::collection::vec(step, 1..20)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// However issues, voids and re-issues interleave, the invoices' numbers are 1..N each
    /// once, a voided invoice keeps its number and its re-issue has a new one.
    #[test]
    fn numbers_are_gapless_and_unique_across_issue_and_void(steps in number_steps()) {
        let w = world();
        ingest(&w, &[(1, T0 + 1000, 7, 1), (2, T0 + DAY_MS + 5, 3, 2)]);
        let mut numbers_before_void = BTreeMap::new();
        for step in &steps {
            match step {
                NumberStep::Run(as_of) => run(&w, *as_of),
                NumberStep::Void(n) => {
                    let all = invoices(&w);
                    if all.is_empty() {
                        continue;
                    }
                    let target = &all[n % all.len()];
                    let voided = w.store.apply_one(crate::payments::void::VoidInvoice {
                        tenant: TENANT,
                        id: target.id,
                        now_ms: NOW,
                        origin: "test".into(),
                    }).expect("store");
                    if let Ok(v) = voided {
                        numbers_before_void.insert(v.id, target.number.clone());
                    }
                }
                NumberStep::Preview => {
                    let before = invoices(&w).len();
                    let tx = w.store.read().expect("read");
                    let _ = super::preview::upcoming(&tx, TENANT, w.customer, &POLICY).expect("preview");
                    drop(tx);
                    prop_assert_eq!(invoices(&w).len(), before);
                }
            }
        }
        let all = invoices(&w);
        let mut seqs: Vec<u64> = all.iter().map(|i| i.number_seq.expect("numbered")).collect();
        seqs.sort_unstable();
        let expected: Vec<u64> = (1..=all.len() as u64).collect();
        prop_assert_eq!(seqs, expected);
        let texts: std::collections::BTreeSet<&str> =
            all.iter().map(|i| i.number.as_deref().expect("number")).collect();
        prop_assert_eq!(texts.len(), all.len());
        for inv in &all {
            let year = super::numbering::year_of(NOW);
            prop_assert_eq!(inv.number_year, Some(year));
            let text = format!("INV-{year}-{:06}", inv.number_seq.expect("seq"));
            prop_assert_eq!(inv.number.as_deref(), Some(text.as_str()));
            if let Some(before) = numbers_before_void.get(&inv.id) {
                prop_assert_eq!(&inv.number, before, "a void keeps the number");
            }
            if let Some(original) = inv.replaces.and_then(|r| all.iter().find(|i| i.id == r)) {
                prop_assert!(original.number != inv.number, "a re-issue has a new number");
            }
        }
    }
}
