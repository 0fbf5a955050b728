//! Where features meet: minimum commitments, discounts, trials, plan changes, voids and
//! currency changes, each case a regression test of a bug found where two of them met.

use super::change::{ChangeRequest, ChangeSubscription, Effective};
use super::coupon::{AppliesTo, Coupon, CreateCoupon, Duration, Off};
use super::customer_update::UpdateCustomer;
use super::discount::{ApplyDiscount, Target};
use super::invoice::{self, Invoice, InvoiceKind, LineKind};
use super::period::{Interval, DAY_MS};
use super::phase::Proration;
use super::plan::{CreatePlan, FeeTiming, FixedFee, Plan};
use super::run::{BillingRun, CancelSubscription, Policy};
use super::subscription::{CreateSubscription, Subscription};
use super::verify::verify_invoice;
use crate::decimal::Stored;
use crate::id::Id;
use crate::store::{Store, TenantId};

const TENANT: TenantId = TenantId(1);
const T0: i64 = 1_799_971_200_000;
const POLICY: Policy = Policy {
    trial_notice_ms: DAY_MS,
    grace_ms: 0,
    auto_collect: None,
    adjust_window_ms: 35 * DAY_MS,
    chunk_periods: 50,
};

struct W {
    _dir: tempfile::TempDir,
    store: Store,
    customer: Id,
    plans: Vec<Plan>,
}

fn plan(code: &str, currency: &str, fee: i64, timing: FeeTiming, minimum: Option<i64>) -> Plan {
    Plan {
        id: Id::generate(),
        code: code.into(),
        name: code.into(),
        currency: currency.into(),
        interval: Interval::Day,
        interval_count: 1,
        fixed_fee: (fee > 0).then_some(FixedFee {
            amount_minor: fee,
            timing,
        }),
        charges: Vec::new(),
        created_at_ms: T0,
        bill_usage_in_trial: false,
        threshold_minor: None,
        minimum_minor: minimum,
        version: 1,
        previous_version: None,
    }
}

fn world(plans: Vec<Plan>) -> W {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("r.redb"), 1 << 22).expect("open");
    let customer = crate::customers::create_for_test(&store, TENANT, "c", T0).id;
    for p in &plans {
        store
            .apply_one(CreatePlan {
                tenant: TENANT,
                plan: p.clone(),
            })
            .expect("store")
            .expect("plan");
    }
    W {
        _dir: dir,
        store,
        customer,
        plans,
    }
}

fn subscribe(w: &W, plan: usize, trial_end: Option<i64>, minimum: Option<i64>) -> Id {
    let mut sub = Subscription::new(Id::generate(), w.customer, w.plans[plan].id, T0, T0, T0);
    if let Some(t) = trial_end {
        sub = sub.with_trial(t);
    }
    sub.minimum_minor = minimum;
    let id = sub.id;
    w.store
        .apply_one(CreateSubscription {
            tenant: TENANT,
            subscription: sub,
        })
        .expect("store")
        .expect("subscription");
    id
}

fn coupon(w: &W, code: &str, off: Off, duration: Duration) {
    w.store
        .apply_one(CreateCoupon {
            tenant: TENANT,
            coupon: Coupon {
                id: Id::generate(),
                code: code.into(),
                name: None,
                off,
                duration,
                max_redemptions: None,
                redeem_by_ms: None,
                applies_to: AppliesTo::default(),
                times_redeemed: 0,
                created_at_ms: T0,
            },
        })
        .expect("store")
        .expect("coupon");
}

fn redeem(w: &W, code: &str, target: Target, at_ms: i64) {
    w.store
        .apply_one(ApplyDiscount {
            tenant: TENANT,
            id: Id::generate_at(at_ms),
            coupon: code.into(),
            target,
            now_ms: at_ms,
        })
        .expect("store")
        .expect("redeemed");
}

fn percent(text: &str) -> Off {
    Off::Percent(Stored(crate::decimal::parse(text).expect("decimal")))
}

fn run(w: &W, as_of: i64) {
    let r = w
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
    assert!(r.complete);
    assert_eq!(r.skipped_count, 0, "{:?}", r.skipped);
}

fn invoices(w: &W) -> Vec<Invoice> {
    let tx = w.store.read().expect("read");
    let mut all = invoice::list(&tx, TENANT, None, None, 500).expect("list").0;
    all.sort_by_key(|i| (i.period_start_ms, i.issued_at_ms));
    all
}

fn cancel(w: &W, sub: Id, immediately: bool, now_ms: i64) {
    w.store
        .apply_one(CancelSubscription {
            tenant: TENANT,
            id: sub,
            immediately,
            now_ms,
            policy: POLICY,
            origin: "test".into(),
        })
        .expect("store")
        .expect("canceled");
}

fn verify_all(w: &W) -> Vec<Result<(), String>> {
    let tx = w.store.read().expect("read");
    invoices(w)
        .iter()
        .map(|inv| verify_invoice(&tx, TENANT, inv).expect("verify"))
        .collect()
}

/// README: "no fixed fee is billed for the trial, and usage only when the plan says". A
/// minimum commitment still bills the trial's periods.
#[test]
fn a_trial_owes_no_minimum_commitment() {
    let w = world(vec![plan(
        "basic",
        "USD",
        1000,
        FeeTiming::InAdvance,
        Some(800),
    )]);
    subscribe(&w, 0, Some(T0 + 2 * DAY_MS), None);
    run(&w, T0 + 2 * DAY_MS);
    let all = invoices(&w);
    let trial: Vec<&Invoice> = all
        .iter()
        .filter(|i| i.period_end_ms <= T0 + 2 * DAY_MS && i.kind == InvoiceKind::Period)
        .collect();
    let minimum_in_trial: i64 = trial
        .iter()
        .flat_map(|i| &i.lines)
        .filter(|l| l.kind == LineKind::MinimumCommitment)
        .map(|l| l.amount_minor)
        .sum();
    assert_eq!(minimum_in_trial, 0, "a trial owes no minimum commitment");
}

/// A `once` coupon redeemed at sign-up on a trialing subscription is spent on the free trial.
#[test]
fn a_once_coupon_redeemed_in_a_trial_discounts_the_first_paid_period() {
    let w = world(vec![plan("basic", "USD", 1000, FeeTiming::InArrears, None)]);
    let sub = subscribe(&w, 0, Some(T0 + 2 * DAY_MS), None);
    coupon(&w, "WELCOME", percent("50"), Duration::Once);
    redeem(&w, "WELCOME", Target::Subscription(sub), T0 + 1000);
    run(&w, T0 + 4 * DAY_MS);
    let all = invoices(&w);
    let discounted: i64 = all
        .iter()
        .flat_map(|i| &i.lines)
        .filter(|l| l.kind == LineKind::Discount)
        .map(|l| l.amount_minor)
        .sum();
    assert_eq!(discounted, -500, "the first paid day gets its 50%");
}

/// In-advance fee and a minimum equal to it: each closing invoice counts the NEXT period's
/// fee toward its own minimum, so the last period (its fee billed in advance) is trued up in
/// full once more.
#[test]
fn a_fee_billed_in_advance_counts_towards_its_own_periods_minimum() {
    let w = world(vec![plan(
        "basic",
        "USD",
        1000,
        FeeTiming::InAdvance,
        Some(1000),
    )]);
    let sub = subscribe(&w, 0, None, None);
    run(&w, T0);
    cancel(&w, sub, false, T0 + DAY_MS + 1000);
    run(&w, T0 + 3 * DAY_MS);
    let all = invoices(&w);
    let billed: i64 = all.iter().map(|i| i.subtotal_minor).sum();
    assert_eq!(
        billed, 2000,
        "two days, each its fee of 10.00 (= the minimum)"
    );
}

/// Immediate cancellation: the unused in-advance fee credited back lowers what counts toward
/// the prorated minimum, which then charges it again.
#[test]
fn the_minimum_after_an_immediate_cancellation_counts_the_fee_used() {
    let w = world(vec![plan(
        "basic",
        "USD",
        1000,
        FeeTiming::InAdvance,
        Some(1000),
    )]);
    let sub = subscribe(&w, 0, None, None);
    run(&w, T0);
    cancel(&w, sub, true, T0 + DAY_MS / 4);
    let all = invoices(&w);
    let billed: i64 = all.iter().map(|i| i.subtotal_minor).sum();
    // 6 hours: the fee for them is 2.50 and so is the prorated minimum.
    assert_eq!(billed, 250);
}

/// An amount-off coupon redeemed on a customer in USD keeps taking its amount off after the
/// customer's currency changed (the lock does not look at discounts), now in EUR.
#[test]
fn an_amount_off_coupon_never_applies_in_another_currency() {
    let w = world(vec![plan("eur", "EUR", 1000, FeeTiming::InArrears, None)]);
    coupon(
        &w,
        "FIVE",
        Off::Amount {
            amount_minor: 500,
            currency: "USD".into(),
        },
        Duration::Forever,
    );
    redeem(&w, "FIVE", Target::Customer(w.customer), T0);
    let changed = w
        .store
        .apply_one(UpdateCustomer {
            tenant: TENANT,
            id: w.customer,
            changes: crate::customers::Changes {
                currency: Some("EUR".into()),
                ..Default::default()
            },
            now_ms: T0 + 1,
        })
        .expect("store");
    assert!(changed.is_ok(), "{changed:?}");
    subscribe(&w, 0, None, None);
    run(&w, T0 + DAY_MS);
    let all = invoices(&w);
    assert!(
        all.iter()
            .flat_map(|i| &i.lines)
            .all(|l| l.kind != LineKind::Discount),
        "a USD amount must not come off a EUR invoice"
    );
}

/// A repeating coupon for 2 periods: an invoice_now change splits day 0 in two, and day 1
/// loses its discount.
#[test]
fn a_reissue_keeps_the_discounts_of_the_invoice_it_replaces() {
    let w = world(vec![plan("basic", "USD", 1000, FeeTiming::InArrears, None)]);
    let sub = subscribe(&w, 0, None, None);
    coupon(&w, "HALF", percent("50"), Duration::Forever);
    let discount = Id::generate_at(T0 + 1000);
    w.store
        .apply_one(ApplyDiscount {
            tenant: TENANT,
            id: discount,
            coupon: "HALF".into(),
            target: Target::Subscription(sub),
            now_ms: T0 + 1000,
        })
        .expect("store")
        .expect("redeemed");
    run(&w, T0 + DAY_MS);
    let original = invoices(&w).remove(0);
    assert_eq!(original.subtotal_minor, 500);
    w.store
        .apply_one(super::discount::RemoveDiscount {
            tenant: TENANT,
            id: discount,
            now_ms: T0 + DAY_MS + 10,
        })
        .expect("store")
        .expect("removed");
    w.store
        .apply_one(crate::payments::void::VoidInvoice {
            tenant: TENANT,
            id: original.id,
            now_ms: T0 + DAY_MS + 20,
            origin: "test".into(),
        })
        .expect("store")
        .expect("voided");
    run(&w, T0 + DAY_MS + 30);
    let reissued = invoices(&w)
        .into_iter()
        .find(|i| i.replaces == Some(original.id))
        .expect("re-issue");
    assert_eq!(reissued.subtotal_minor, 500, "the period's discount stays");
}

fn change_to(w: &W, sub: Id, plan: usize, effective: Effective, proration: Proration, now_ms: i64) {
    w.store
        .apply_one(ChangeSubscription {
            tenant: TENANT,
            id: sub,
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
        .expect("changed");
}

/// A prorated downgrade: the credit for the in-advance fee lowers what counts toward the
/// period's minimum, so the true-up bills the credited money again.
#[test]
fn a_prorated_downgrades_credit_is_not_undone_by_the_minimum() {
    let w = world(vec![
        plan("basic", "USD", 1000, FeeTiming::InAdvance, None),
        plan("free", "USD", 0, FeeTiming::InArrears, None),
    ]);
    let sub = subscribe(&w, 0, None, Some(1000));
    run(&w, T0);
    change_to(
        &w,
        sub,
        1,
        Effective::Now,
        Proration::Prorate,
        T0 + DAY_MS / 4,
    );
    run(&w, T0 + DAY_MS);
    let all = invoices(&w);
    let day0: i64 = all.iter().map(|i| i.subtotal_minor).sum();
    assert_eq!(
        day0, 1000,
        "day 0 owes its minimum of 10.00, already paid in advance"
    );
}

/// The other way: a period whose own charges fall short is not trued up because the next
/// period's in-advance fee, on the same invoice, counts toward it.
#[test]
fn the_next_periods_advance_fee_does_not_meet_this_periods_minimum() {
    let w = world(vec![
        plan("free", "USD", 0, FeeTiming::InArrears, None),
        plan("basic", "USD", 1000, FeeTiming::InAdvance, None),
    ]);
    let sub = subscribe(&w, 0, None, Some(1000));
    change_to(
        &w,
        sub,
        1,
        Effective::PeriodEnd,
        Proration::Prorate,
        T0 + 1000,
    );
    run(&w, T0 + DAY_MS);
    let all = invoices(&w);
    let day0 = all.iter().find(|i| i.period_start_ms == T0).expect("day 0");
    assert!(
        day0.lines
            .iter()
            .any(|l| l.kind == LineKind::MinimumCommitment),
        "day 0 billed nothing of its own: it owes its 10.00 minimum"
    );
}

/// In advance: the opening invoice (period 0's fee) and the invoice closing period 0 (which
/// carries period 1's fee) both count as period 0, so a `once` coupon discounts two fees, and
/// an amount-off coupon comes off twice.
#[test]
fn a_once_coupon_discounts_one_fee_on_an_in_advance_plan() {
    let w = world(vec![plan("basic", "USD", 1000, FeeTiming::InAdvance, None)]);
    let sub = subscribe(&w, 0, None, None);
    coupon(&w, "ONCE", percent("50"), Duration::Once);
    redeem(&w, "ONCE", Target::Subscription(sub), T0 - 1000);
    run(&w, T0 + 2 * DAY_MS);
    let all = invoices(&w);
    let discounted: i64 = all
        .iter()
        .flat_map(|i| &i.lines)
        .filter(|l| l.kind == LineKind::Discount)
        .map(|l| l.amount_minor)
        .sum();
    assert_eq!(discounted, -500, "one period's fee, once");
}

/// Discount and minimum on split parts and a final invoice after plan changes: every invoice
/// re-derives.
#[test]
fn verify_matches_after_changes_a_split_and_an_immediate_cancel_with_discounts_and_a_minimum() {
    let w = world(vec![
        plan("basic", "USD", 1000, FeeTiming::InAdvance, Some(1500)),
        plan("pro", "USD", 3000, FeeTiming::InArrears, Some(4000)),
        plan("mid", "USD", 2000, FeeTiming::InAdvance, None),
    ]);
    let sub = subscribe(&w, 0, None, None);
    coupon(&w, "TEN", percent("10"), Duration::Forever);
    coupon(
        &w,
        "AMT",
        Off::Amount {
            amount_minor: 300,
            currency: "USD".into(),
        },
        Duration::Repeating(2),
    );
    redeem(&w, "TEN", Target::Subscription(sub), T0 + 1000);
    redeem(&w, "AMT", Target::Customer(w.customer), T0 + 2000);
    run(&w, T0);
    change_to(
        &w,
        sub,
        1,
        Effective::Now,
        Proration::InvoiceNow,
        T0 + DAY_MS / 4,
    );
    change_to(
        &w,
        sub,
        2,
        Effective::Now,
        Proration::Prorate,
        T0 + DAY_MS / 2,
    );
    run(&w, T0 + DAY_MS);
    change_to(
        &w,
        sub,
        1,
        Effective::Now,
        Proration::InvoiceNow,
        T0 + DAY_MS + DAY_MS / 3,
    );
    cancel(&w, sub, true, T0 + DAY_MS + DAY_MS / 2);
    let results = verify_all(&w);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

#[test]
fn a_format_whose_literal_text_repeats_a_number_passes_over_it() {
    let w = world(vec![plan("daily", "USD", 1000, FeeTiming::InArrears, None)]);
    let take = |at_ms: i64| {
        let tx = w.store.begin_write().expect("write");
        let n = super::numbering::next(&tx, TENANT, super::numbering::Sequence::Invoice, at_ms)
            .expect("number");
        tx.commit().expect("commit");
        n.text
    };
    let first = take(T0);
    assert!(first.ends_with("-000001"), "{first}");
    // The year moves into the literal text: the counter without a year starts at 1 again and
    // would render the same text.
    let year = super::numbering::year_of(T0);
    let changes = crate::tenant_settings::Changes {
        invoice_number_format: Some(Some(format!("{{prefix}}-{year}-{{seq:06}}"))),
        ..Default::default()
    };
    w.store
        .apply_one(crate::tenant_settings::UpdateSettings {
            tenant: TENANT,
            changes,
            now_ms: T0,
        })
        .expect("store");
    let second = take(T0 + 1);
    assert_ne!(second, first, "no text is given twice");
    assert!(second.ends_with("-000002"), "{second}");
}
