//! Property and scenario tests of plan changes, trials and resumption: whatever changes (any
//! plans, instants and proration) and usage happen, each plan's fixed fee is billed for exactly
//! the time it was in effect, each event is priced by the plan in effect when it happened,
//! nothing is billed twice, and every invoice re-derives.

use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::json;

use super::change::{ChangeRequest, ChangeSubscription, Effective, EndTrial, ResumeSubscription};
use super::invoice::{self, Invoice, LineKind};
use super::period::{Interval, DAY_MS};
use super::phase::Proration;
use super::plan::{Charge, CreatePlan, FeeTiming, FixedFee, Plan};
use super::pricing::Model;
use super::run::{BillingRun, CancelSubscription, Policy};
use super::subscription::{self, CreateSubscription, Subscription, SubscriptionError};
use super::verify::verify_invoice;
use crate::decimal::Stored;
use crate::id::Id;
use crate::ingest::event::IngestBatch;
use crate::ingest::meter::{Aggregation, CreateMeter, Meter};
use crate::ingest::parse::{parse_body, Context, Format};
use crate::store::{Store, TenantId};

const TENANT: TenantId = TenantId(1);
/// Midnight UTC.
const T0: i64 = 1_799_971_200_000;
/// The horizon: changes and usage happen in the four days before it.
const H: i64 = T0 + 4 * DAY_MS;
const POLICY: Policy = Policy {
    grace_ms: 0,
    auto_collect: None,
    adjust_window_ms: 35 * DAY_MS,
    trial_notice_ms: DAY_MS,
    chunk_periods: 50,
};

/// (code, fee minor, timing, cents per call).
const PLANS: [(&str, i64, FeeTiming, i64); 4] = [
    ("basic", 1000, FeeTiming::InAdvance, 10),
    ("pro", 3000, FeeTiming::InAdvance, 5),
    ("metered", 2000, FeeTiming::InArrears, 20),
    ("free", 0, FeeTiming::InArrears, 1),
];

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    plans: Vec<Plan>,
    sub: Id,
}

fn world(trial_end: Option<i64>) -> World {
    world_with(trial_end, None)
}

/// A world whose subscription may have its own minimum commitment.
fn world_with(trial_end: Option<i64>, minimum_minor: Option<i64>) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("c.redb"), 1 << 22).expect("open");
    let customer = crate::customers::create_for_test(&store, TENANT, "c", T0).id;
    let meter = Meter {
        id: Id::generate(),
        key: "calls".into(),
        name: None,
        event_type: "call".into(),
        aggregation: Aggregation::Count,
        value_property: None,
        unique_property: None,
        created_at_ms: T0,
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
    let plans: Vec<Plan> = PLANS
        .iter()
        .map(|(code, fee, timing, cents)| Plan {
            id: Id::generate(),
            code: (*code).into(),
            name: (*code).into(),
            currency: "USD".into(),
            interval: Interval::Day,
            interval_count: 1,
            fixed_fee: (*fee > 0).then_some(FixedFee {
                amount_minor: *fee,
                timing: *timing,
            }),
            charges: vec![Charge {
                meter: meter.id,
                model: Model::PerUnit {
                    unit_price: Stored(Decimal::new(*cents, 2)),
                },
                free_units: Stored(Decimal::ZERO),
            }],
            created_at_ms: T0,
            bill_usage_in_trial: false,
            threshold_minor: None,
            minimum_minor: None,
            version: 1,
            previous_version: None,
        })
        .collect();
    for plan in &plans {
        store
            .apply_one(CreatePlan {
                tenant: TENANT,
                plan: plan.clone(),
            })
            .expect("store")
            .expect("plan");
    }
    let mut sub = Subscription::new(Id::generate(), customer, plans[0].id, T0, T0, T0);
    if let Some(t) = trial_end {
        sub = sub.with_trial(t);
    }
    sub.minimum_minor = minimum_minor;
    let sub_id = sub.id;
    store
        .apply_one(CreateSubscription {
            tenant: TENANT,
            subscription: sub,
        })
        .expect("store")
        .expect("subscription");
    World {
        _dir: dir,
        store,
        plans,
        sub: sub_id,
    }
}

fn ingest(w: &World, events: &[(u32, i64)]) {
    let config = crate::config::IngestConfig::default();
    let ctx = Context {
        tenant: TENANT,
        now_ms: H + DAY_MS,
        config: &config,
    };
    let body: Vec<serde_json::Value> = events
        .iter()
        .map(|(id, ts)| {
            json!({"id": format!("e{id}"), "customer": "c", "type": "call",
                   "timestamp": crate::clock::rfc3339(*ts)})
        })
        .collect();
    let parsed = parse_body(json!({ "events": body }), Format::Native, &ctx).expect("shape");
    w.store
        .apply_one(IngestBatch {
            tenant: TENANT,
            events: parsed,
            now_ms: H + DAY_MS,
            idempotency_key: None,
        })
        .expect("ingest");
}

fn run(w: &World, as_of: i64) {
    let report = w
        .store
        .apply_one(BillingRun {
            tenant: TENANT,
            id: Id::generate(),
            as_of_ms: as_of,
            now_ms: as_of,
            policy: POLICY,
            trigger: "test".into(),
            origin: "test".into(),
        })
        .expect("run");
    assert!(report.complete);
}

fn change(
    w: &World,
    plan: usize,
    effective: Effective,
    proration: Proration,
    now_ms: i64,
) -> Result<super::change::Changed, SubscriptionError> {
    w.store
        .apply_one(ChangeSubscription {
            tenant: TENANT,
            id: w.sub,
            request: ChangeRequest {
                plan: w.plans[plan].id,
                effective,
                proration,
                change: Id::generate_at(now_ms),
                now_ms,
            },
            policy: POLICY,
            origin: "test".into(),
        })
        .expect("store")
}

/// Cancels the world's subscription at `now_ms`, at once or at the period's end.
fn cancel(
    w: &World,
    immediately: bool,
    now_ms: i64,
) -> Result<super::run::Cancellation, SubscriptionError> {
    w.store
        .apply_one(CancelSubscription {
            tenant: TENANT,
            id: w.sub,
            immediately,
            now_ms,
            policy: POLICY,
            origin: "test".into(),
        })
        .expect("store")
}

/// The fee and fee-credit amounts of these invoices, in order.
fn fee_amounts(invoices: &[Invoice]) -> Vec<i64> {
    invoices
        .iter()
        .flat_map(|i| i.lines.iter())
        .filter(|l| matches!(l.kind, LineKind::FixedFee | LineKind::FeeCredit))
        .map(|l| l.amount_minor)
        .collect()
}

fn invoices(w: &World) -> Vec<Invoice> {
    let tx = w.store.read().expect("read");
    invoice::list(&tx, TENANT, None, None, 500).expect("list").0
}

fn sub(w: &World) -> Subscription {
    let tx = w.store.read().expect("read");
    subscription::get(&tx, TENANT, w.sub)
        .expect("read")
        .expect("sub")
}

fn verify_all(w: &World) {
    let tx = w.store.read().expect("read");
    for inv in invoices(w) {
        assert_eq!(
            verify_invoice(&tx, TENANT, &inv).expect("verify"),
            Ok(()),
            "{}",
            inv.id.display("inv")
        );
    }
    let report = crate::ledger::verify::verify(&tx, None, &mut |_, _| {}).expect("verify");
    assert!(report.violation.is_none(), "{:?}", report.violation);
}

/// One step: at instant `at` (increasing), ingest events stamped before it, run billing, or
/// change the plan (effective now or at period end).
#[derive(Debug, Clone)]
enum Step {
    Ingest(Vec<u32>),
    Run,
    Change(usize, bool, Proration),
}

fn steps() -> impl Strategy<Value = Vec<(i64, Step)>> {
    let step = prop_oneof![
        3 => proptest::collection::vec(any::<u32>(), 1..6).prop_map(Step::Ingest),
        1 => Just(Step::Run),
        3 => (0usize..4, any::<bool>(), prop_oneof![Just(Proration::Prorate), Just(Proration::InvoiceNow)])
            .prop_map(|(p, end, pr)| Step::Change(p, end, pr)),
    ];
    proptest::collection::vec((1i64..4 * DAY_MS, step), 1..16).prop_map(|mut v| {
        v.sort_by_key(|(at, _)| *at);
        v.into_iter().map(|(at, s)| (T0 + at, s)).collect()
    })
}

/// The fee each plan owes for `[from, to)` of a day, exact.
fn fee_owed(plan: &Plan, from: i64, to: i64) -> Decimal {
    plan.fixed_fee.as_ref().map_or(Decimal::ZERO, |f| {
        Decimal::from(f.amount_minor) * Decimal::from(to - from) / Decimal::from(DAY_MS)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn every_plan_pays_for_its_time_and_every_event_at_its_price(steps in steps()) {
        let w = world(None);
        let mut events: Vec<(u32, i64)> = Vec::new();
        let mut next_event = 0u32;
        for (at, step) in &steps {
            match step {
                Step::Ingest(offsets) => {
                    // Stamped anywhere from the start to now: on time or late.
                    let batch: Vec<(u32, i64)> = offsets
                        .iter()
                        .map(|o| {
                            next_event += 1;
                            (next_event, T0 + i64::from(*o) % (*at - T0))
                        })
                        .collect();
                    ingest(&w, &batch);
                    events.extend(batch);
                }
                Step::Run => run(&w, *at),
                Step::Change(plan, at_end, proration) => {
                    let effective = if *at_end { Effective::PeriodEnd } else { Effective::Now };
                    let _ = change(&w, *plan, effective, *proration, *at);
                }
            }
        }
        let last = steps.last().map_or(T0, |(at, _)| *at);
        // Let any change scheduled for a period end take effect before the horizon.
        let s = sub(&w);
        prop_assume!(s.phases.last().is_some_and(|p| p.start_ms < H));
        run(&w, H.max(last));
        let s = sub(&w);
        let all = invoices(&w);
        let plan_of = |id: Id| w.plans.iter().find(|p| p.id == id).expect("plan");
        // Fees: the integral of each phase's fee over its time before the horizon, plus the
        // next period billed in advance by the plan in effect at the horizon.
        let mut expected = Decimal::ZERO;
        for (i, ph) in s.phases.iter().enumerate() {
            let end = s.phases.get(i + 1).map_or(H, |n| n.start_ms).min(H);
            if ph.start_ms < end {
                expected += fee_owed(plan_of(ph.plan), ph.start_ms, end);
            }
        }
        let at_h = plan_of(s.plan_at(H));
        if at_h.fixed_fee.as_ref().is_some_and(|f| f.timing == FeeTiming::InAdvance) {
            expected += fee_owed(at_h, H, H + DAY_MS);
        }
        let fee_lines: Vec<&invoice::Line> = all
            .iter()
            .flat_map(|i| i.lines.iter())
            .filter(|l| matches!(l.kind, LineKind::FixedFee | LineKind::FeeCredit))
            .collect();
        let billed: i64 = fee_lines.iter().map(|l| l.amount_minor).sum();
        let diff = (Decimal::from(billed) - expected).abs();
        prop_assert!(
            diff <= Decimal::from(fee_lines.len() as u64),
            "fees billed {} expected {} ({} lines)", billed, expected, fee_lines.len()
        );
        // Usage: every event once, at the price of the plan in effect when it happened.
        let expected_usage: i64 = events
            .iter()
            .map(|(_, ts)| {
                let plan = plan_of(s.plan_at(*ts));
                PLANS.iter().find(|p| p.0 == plan.code).map_or(0, |p| p.3)
            })
            .sum();
        let usage: i64 = all
            .iter()
            .flat_map(|i| i.lines.iter())
            .filter(|l| matches!(l.kind, LineKind::Usage | LineKind::Adjustment))
            .map(|l| l.amount_minor)
            .sum();
        prop_assert_eq!(usage, expected_usage);
        let counted: Decimal = all
            .iter()
            .flat_map(|i| i.lines.iter())
            .filter(|l| matches!(l.kind, LineKind::Usage | LineKind::Adjustment))
            .map(|l| l.quantity.0)
            .sum();
        prop_assert_eq!(counted, Decimal::from(events.len() as u64), "each event counted once");
        // No period twice: charge keys are distinct by construction; periods do not overlap.
        let mut spans: Vec<(i64, i64)> = all
            .iter()
            .filter(|i| i.kind != invoice::InvoiceKind::Opening)
            .map(|i| (i.period_start_ms, i.period_end_ms))
            .collect();
        spans.sort();
        prop_assert!(spans.windows(2).all(|p| p[0].1 <= p[1].0), "{:?}", spans);
        verify_all(&w);
    }
}

#[test]
fn an_upgrade_with_prorate_credits_the_old_fee_and_charges_the_new_on_the_next_invoice() {
    let w = world(None);
    run(&w, T0);
    // Basic (10.00 in advance) → pro (30.00 in advance) at 06:00 on day 0.
    let at = T0 + DAY_MS / 4;
    change(&w, 1, Effective::Now, Proration::Prorate, at).expect("change");
    ingest(&w, &[(1, T0 + 1000), (2, at + 1000), (3, at + 2000)]);
    run(&w, T0 + DAY_MS);
    let all = invoices(&w);
    let day0 = all
        .iter()
        .find(|i| i.kind == invoice::InvoiceKind::Period && i.period_start_ms == T0)
        .expect("day 0 invoice");
    let lines: Vec<(LineKind, i64)> = day0
        .lines
        .iter()
        .map(|l| (l.kind, l.amount_minor))
        .collect();
    assert_eq!(
        lines,
        vec![
            (LineKind::Usage, 10),       // one call on basic
            (LineKind::Usage, 10),       // two calls on pro
            (LineKind::FixedFee, 2250),  // pro for the 18 hours left
            (LineKind::FeeCredit, -750), // basic's unused 18 hours
            (LineKind::FixedFee, 3000),  // day 1 on pro, in advance
        ]
    );
    verify_all(&w);
}

#[test]
fn invoice_now_splits_the_period_and_bills_the_old_part_at_once() {
    let w = world(None);
    run(&w, T0);
    let at = T0 + DAY_MS / 2;
    ingest(&w, &[(1, T0 + 1000)]);
    let done = change(&w, 2, Effective::Now, Proration::InvoiceNow, at).expect("change");
    assert_eq!(done.invoices.len(), 1);
    let all = invoices(&w);
    let first = all
        .iter()
        .find(|i| i.id == done.invoices[0])
        .expect("issued");
    assert_eq!((first.period_start_ms, first.period_end_ms), (T0, at));
    let lines: Vec<(LineKind, i64)> = first
        .lines
        .iter()
        .map(|l| (l.kind, l.amount_minor))
        .collect();
    // Basic's usage, basic's unused half day credited; metered bills in arrears.
    assert_eq!(
        lines,
        vec![(LineKind::Usage, 10), (LineKind::FeeCredit, -500)]
    );
    run(&w, T0 + DAY_MS);
    let second = invoices(&w)
        .into_iter()
        .find(|i| i.period_start_ms == at)
        .expect("second part");
    assert_eq!(second.period_end_ms, T0 + DAY_MS);
    let fee: Vec<i64> = second
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::FixedFee)
        .map(|l| l.amount_minor)
        .collect();
    assert_eq!(fee, vec![1000], "metered's half day in arrears");
    verify_all(&w);
}

#[test]
fn a_change_without_proration_keeps_the_period_fee_and_prices_usage_by_plan() {
    let w = world(None);
    run(&w, T0);
    let at = T0 + DAY_MS / 2;
    change(&w, 1, Effective::Now, Proration::None, at).expect("change");
    ingest(&w, &[(1, T0 + 1000), (2, at + 1000)]);
    run(&w, T0 + DAY_MS);
    let day0 = invoices(&w)
        .into_iter()
        .find(|i| i.kind == invoice::InvoiceKind::Period && i.period_start_ms == T0)
        .expect("day 0");
    let lines: Vec<(LineKind, i64)> = day0
        .lines
        .iter()
        .map(|l| (l.kind, l.amount_minor))
        .collect();
    // Basic's call at 10, pro's at 5; no proration lines; day 1 in advance on pro.
    assert_eq!(
        lines,
        vec![
            (LineKind::Usage, 10),
            (LineKind::Usage, 5),
            (LineKind::FixedFee, 3000)
        ]
    );
    verify_all(&w);
}

#[test]
fn a_scheduled_change_can_be_canceled_and_bad_changes_write_nothing() {
    let w = world(None);
    let now = T0 + 1000;
    change(&w, 1, Effective::PeriodEnd, Proration::Prorate, now).expect("scheduled");
    assert_eq!(sub(&w).phases.len(), 2);
    assert!(matches!(
        change(&w, 2, Effective::Now, Proration::Prorate, now + 1),
        Err(SubscriptionError::ChangeScheduled { .. })
    ));
    w.store
        .apply_one(super::change::CancelScheduledChange {
            tenant: TENANT,
            id: w.sub,
            now_ms: now + 2,
        })
        .expect("store")
        .expect("canceled");
    assert_eq!(sub(&w).phases.len(), 1);
    let before = sub(&w);
    assert!(matches!(
        change(&w, 0, Effective::Now, Proration::Prorate, now + 3),
        Err(SubscriptionError::AlreadyOnPlan(..))
    ));
    assert!(matches!(
        change(
            &w,
            1,
            Effective::At(T0 - DAY_MS),
            Proration::Prorate,
            now + 3
        ),
        Err(SubscriptionError::EffectiveTooEarly { .. })
    ));
    assert_eq!(sub(&w), before, "refusals write nothing");
}

#[test]
fn a_trial_bills_no_fee_and_converts_from_its_end() {
    let trial_end = T0 + 2 * DAY_MS;
    let w = world(Some(trial_end));
    ingest(&w, &[(1, T0 + 1000)]);
    run(&w, trial_end - DAY_MS / 2);
    let s = sub(&w);
    assert!(s.trial_notice_sent, "notice within a day of the end");
    run(&w, trial_end);
    let all = invoices(&w);
    let billed: i64 = all.iter().map(|i| i.subtotal_minor).sum();
    // No usage and no fee in the trial; the first paid day billed in advance at its end.
    assert_eq!(billed, 1000);
    let tx = w.store.read().expect("read");
    let (notes, _) = crate::notifications::outbox::list(
        &tx,
        TENANT,
        &crate::notifications::outbox::Filter {
            event_type: Some("subscription.trial_will_end".into()),
            customer: None,
            from_ms: None,
            to_ms: None,
        },
        None,
        10,
        1000,
    )
    .expect("list");
    assert_eq!(notes.len(), 1, "the notice is recorded once");
    drop(tx);
    verify_all(&w);
}

#[test]
fn ending_a_trial_early_bills_from_that_instant() {
    let w = world(Some(T0 + 10 * DAY_MS));
    let now = T0 + DAY_MS / 2;
    let done = w
        .store
        .apply_one(EndTrial {
            tenant: TENANT,
            id: w.sub,
            now_ms: now,
            policy: POLICY,
            origin: "test".into(),
        })
        .expect("store")
        .expect("ended");
    assert_eq!(done.invoices.len(), 1);
    let inv = &invoices(&w)[0];
    assert_eq!((inv.period_start_ms, inv.period_end_ms), (T0, now));
    let fee: Vec<(i64, i64)> = inv
        .lines
        .iter()
        .map(|l| (l.period_start_ms, l.amount_minor))
        .collect();
    assert_eq!(
        fee,
        vec![(now, 1000)],
        "the first paid day, from now, in advance"
    );
    assert_eq!(sub(&w).anchor_ms, now);
    verify_all(&w);
}

#[test]
fn a_cancellation_at_period_end_can_be_resumed_before_it() {
    let w = world(None);
    let now = T0 + 1000;
    cancel(&w, false, now).expect("canceling");
    let resume = |at: i64| {
        w.store
            .apply_one(ResumeSubscription {
                tenant: TENANT,
                id: w.sub,
                now_ms: at,
            })
            .expect("store")
    };
    let s = resume(now + 1).expect("resumed").subscription;
    assert_eq!(s.status, super::subscription::SubscriptionStatus::Active);
    assert_eq!(s.ends_at_ms, None);
    assert!(matches!(
        resume(now + 2),
        Err(SubscriptionError::NotCanceling(_))
    ));
    run(&w, T0 + 2 * DAY_MS);
    // It kept billing: opening, day 0 (carrying day 1), day 1 (carrying day 2).
    assert_eq!(invoices(&w).len(), 3);
}

#[test]
fn a_negative_invoice_becomes_a_credit_balance_the_next_invoice_draws_on() {
    let w = world(None);
    run(&w, T0);
    // Basic's 10.00 was billed in advance for day 0; at 06:00 it moves to free (no fee): 7.50
    // unused, nothing charged.
    change(&w, 3, Effective::Now, Proration::Prorate, T0 + DAY_MS / 4).expect("change");
    run(&w, T0 + DAY_MS);
    let day0 = invoices(&w)
        .into_iter()
        .find(|i| i.kind == invoice::InvoiceKind::Period)
        .expect("day 0");
    assert_eq!(day0.subtotal_minor, -750);
    assert_eq!(day0.amount_due_minor, 0, "nothing is due on a credit");
    assert_eq!(day0.status, invoice::InvoiceStatus::Paid);
    // Day 1's 60 calls on free cost 0.60: drawn from the 7.50 balance.
    let calls: Vec<(u32, i64)> = (0..60)
        .map(|i| (100 + i, T0 + DAY_MS + 1000 + i64::from(i)))
        .collect();
    ingest(&w, &calls);
    run(&w, T0 + 2 * DAY_MS);
    let day1 = invoices(&w)
        .into_iter()
        .find(|i| i.period_start_ms == T0 + DAY_MS)
        .expect("day 1");
    assert_eq!(day1.subtotal_minor, 60);
    assert_eq!(day1.credits_applied_minor, 60);
    assert_eq!(day1.amount_due_minor, 0);
    verify_all(&w);
}

#[test]
fn ending_a_trial_after_some_of_its_periods_closed_keeps_them_and_bills_every_paid_day() {
    let trial_end = T0 + 5 * DAY_MS / 2;
    let w = world(Some(trial_end));
    run(&w, T0 + 6 * DAY_MS / 10); // closes the trial's first part, [0, 0.5 d)
    let now = T0 + 8 * DAY_MS / 10;
    let done = w
        .store
        .apply_one(EndTrial {
            tenant: TENANT,
            id: w.sub,
            now_ms: now,
            policy: POLICY,
            origin: "test".into(),
        })
        .expect("store")
        .expect("ended");
    assert_eq!(
        done.invoices.len(),
        1,
        "the trial's last part closes at once"
    );
    run(&w, T0 + 28 * DAY_MS / 10);
    let all = invoices(&w);
    let mut spans: Vec<(i64, i64)> = all
        .iter()
        .map(|i| (i.period_start_ms - T0, i.period_end_ms - T0))
        .collect();
    spans.sort();
    let tenth = DAY_MS / 10;
    assert_eq!(
        spans,
        vec![
            (0, 5 * tenth),
            (5 * tenth, 8 * tenth),
            (8 * tenth, 18 * tenth),
            (18 * tenth, 28 * tenth)
        ],
        "the invoiced trial part keeps its bounds; paid days follow from the end"
    );
    let fees: i64 = all.iter().map(|i| i.subtotal_minor).sum();
    // Paid days [0.8, 1.8), [1.8, 2.8) and [2.8, 3.8) in advance.
    assert_eq!(fees, 3000);
    verify_all(&w);
}

fn preview(
    w: &World,
    plan: usize,
    effective: Effective,
    proration: Proration,
    now_ms: i64,
) -> super::change::Preview {
    let tx = w.store.read().expect("read");
    let s = subscription::get(&tx, TENANT, w.sub)
        .expect("read")
        .expect("sub");
    let req = ChangeRequest {
        plan: w.plans[plan].id,
        effective,
        proration,
        change: Id::generate_at(now_ms),
        now_ms,
    };
    super::change::preview(&tx, TENANT, &s, &req, &POLICY)
        .expect("store")
        .expect("previewed")
}

/// (kind, amount, start, end) of each line.
fn shape(lines: &[invoice::Line]) -> Vec<(LineKind, i64, i64, i64)> {
    lines
        .iter()
        .map(|l| (l.kind, l.amount_minor, l.period_start_ms, l.period_end_ms))
        .collect()
}

#[test]
fn a_preview_equals_the_invoice_billed_at_period_end_and_with_a_coupon_and_a_minimum() {
    let w = world_with(None, Some(5000));
    run(&w, T0);
    ingest(&w, &[(1, T0 + 1000)]);
    // A 10 % coupon for ever, and a subscription minimum far above the day's charges.
    w.store
        .apply_one(super::coupon::CreateCoupon {
            tenant: TENANT,
            coupon: super::coupon::Coupon {
                id: Id::generate(),
                code: "TEN".into(),
                name: None,
                off: super::coupon::Off::Percent(Stored(Decimal::new(10, 0))),
                duration: super::coupon::Duration::Forever,
                max_redemptions: None,
                redeem_by_ms: None,
                applies_to: super::coupon::AppliesTo::default(),
                times_redeemed: 0,
                created_at_ms: T0,
            },
        })
        .expect("store")
        .expect("coupon");
    w.store
        .apply_one(super::discount::ApplyDiscount {
            tenant: TENANT,
            id: Id::generate_at(T0 + 2000),
            coupon: "TEN".into(),
            target: super::discount::Target::Subscription(w.sub),
            now_ms: T0 + 2000,
        })
        .expect("store")
        .expect("discount");
    // Downgrade to metered at the period's end: the closing invoice carries no advance fee.
    let now = T0 + DAY_MS / 3;
    let seen = preview(&w, 2, Effective::PeriodEnd, Proration::Prorate, now);
    assert_eq!(seen.effective_at_ms, T0 + DAY_MS);
    change(&w, 2, Effective::PeriodEnd, Proration::Prorate, now).expect("scheduled");
    run(&w, T0 + DAY_MS);
    let day0 = invoices(&w)
        .into_iter()
        .find(|i| i.kind == invoice::InvoiceKind::Period && i.period_start_ms == T0)
        .expect("day 0");
    assert_eq!(shape(&seen.lines), shape(&day0.lines), "period end");
    assert!(day0.lines.iter().any(|l| l.kind == LineKind::Discount));
    assert!(day0
        .lines
        .iter()
        .any(|l| l.kind == LineKind::MinimumCommitment));
    // An upgrade now with invoice_now, previewed then made: the part invoice equals it.
    let now = T0 + DAY_MS + DAY_MS / 2;
    ingest(&w, &[(2, T0 + DAY_MS + 1000)]);
    let seen = preview(&w, 1, Effective::Now, Proration::InvoiceNow, now);
    assert!(seen.immediate);
    let done = change(&w, 1, Effective::Now, Proration::InvoiceNow, now).expect("changed");
    let part = invoices(&w)
        .into_iter()
        .find(|i| i.id == done.invoices[done.invoices.len() - 1])
        .expect("part");
    assert_eq!(shape(&seen.lines), shape(&part.lines), "invoice now");
    assert!(part.lines.iter().any(|l| l.kind == LineKind::Discount));
    verify_all(&w);
}

#[test]
fn a_scheduled_change_taking_effect_is_recorded_once() {
    let w = world(None);
    run(&w, T0);
    change(&w, 1, Effective::PeriodEnd, Proration::Prorate, T0 + 1000).expect("scheduled");
    let updated = |w: &World| {
        let tx = w.store.read().expect("read");
        crate::notifications::outbox::list(
            &tx,
            TENANT,
            &crate::notifications::outbox::Filter {
                event_type: Some("subscription.updated".into()),
                customer: None,
                from_ms: None,
                to_ms: None,
            },
            None,
            10,
            1000,
        )
        .expect("list")
        .0
        .len()
    };
    assert_eq!(updated(&w), 1, "the request");
    run(&w, T0 + DAY_MS);
    assert_eq!(updated(&w), 2, "the change in effect");
    run(&w, T0 + DAY_MS + 1000);
    assert_eq!(updated(&w), 2, "once");
    assert_eq!(sub(&w).plan, w.plans[1].id);
}

/// Two `invoice_now` changes close the parts of a day before 06:00 and 06:00–12:00; an
/// immediate cancellation stamped 05:00 is applied after them (a clock behind the one that
/// stamped the changes). It ends the subscription where the invoiced parts end, keeps the phase
/// the 06:00–12:00 invoice was priced by, and every invoice still re-derives: each plan paid
/// for its own time once.
#[test]
fn an_immediate_cancellation_stamped_before_invoiced_changes_ends_where_they_end() {
    let w = world(None);
    run(&w, T0);
    let (six, noon) = (T0 + DAY_MS / 4, T0 + DAY_MS / 2);
    // Basic (10.00 in advance) → metered (20.00 in arrears) → free.
    change(&w, 2, Effective::Now, Proration::InvoiceNow, six).expect("to metered");
    change(&w, 3, Effective::Now, Proration::InvoiceNow, noon).expect("to free");
    let canceled = cancel(&w, true, T0 + 5 * DAY_MS / 24).expect("canceled");
    assert!(canceled.invoices.is_empty(), "everything was invoiced");
    let s = sub(&w);
    assert_eq!(s.status, super::subscription::SubscriptionStatus::Canceled);
    assert_eq!(s.ends_at_ms, Some(noon));
    assert_eq!(s.plan_at(six), w.plans[2].id, "metered's phase stays");
    run(&w, H);
    let all = invoices(&w);
    assert_eq!(all.len(), 3, "opening, [00:00, 06:00), [06:00, 12:00)");
    // Basic for 6 hours (10.00 − 7.50 unused), metered for 6 hours (5.00), once each.
    assert_eq!(fee_amounts(&all), vec![1000, -750, 500]);
    verify_all(&w);
}

/// A cancellation at period end whose end has passed, before a run closed that period: the
/// subscription has ended, so an immediate cancellation is refused and writes nothing (it
/// would move the end later and credit the next day's fee, never billed). The run then closes
/// the last period and bills nothing after the end.
#[test]
fn an_immediate_cancellation_after_the_end_of_one_at_period_end_is_refused() {
    let w = world(None);
    run(&w, T0);
    let canceling = cancel(&w, false, T0 + 1000)
        .expect("canceling")
        .subscription;
    assert_eq!(canceling.ends_at_ms, Some(T0 + DAY_MS));
    assert!(matches!(
        cancel(&w, true, T0 + DAY_MS + DAY_MS / 2),
        Err(SubscriptionError::AlreadyCanceled(_))
    ));
    assert_eq!(sub(&w), canceling, "nothing written");
    run(&w, H);
    let s = sub(&w);
    assert_eq!(s.status, super::subscription::SubscriptionStatus::Canceled);
    assert_eq!(s.ends_at_ms, Some(T0 + DAY_MS));
    let all = invoices(&w);
    assert!(all.iter().all(|i| i.period_end_ms <= T0 + DAY_MS));
    assert_eq!(fee_amounts(&all), vec![1000], "day 0, in advance, once");
    verify_all(&w);
}
