//! Coupons through billing runs: discounts over several periods, the minimum commitment's
//! true-up after them, removal, and verification of the invoices they produce.

use super::coupon::{AppliesTo, Coupon, CreateCoupon, Duration, Off};
use super::discount::{ApplyDiscount, DiscountError, RemoveDiscount, Target};
use super::invoice::{self, Invoice, LineKind};
use super::period::{Interval, DAY_MS};
use super::plan::{CreatePlan, FeeTiming, FixedFee, Plan};
use super::run::{BillingRun, Policy};
use super::subscription::{CreateSubscription, Subscription};
use super::verify::verify_invoice;
use crate::decimal::Stored;
use crate::id::Id;
use crate::store::{Store, TenantId};

const TENANT: TenantId = TenantId(1);
/// Midnight UTC, so daily periods are calendar days.
const T0: i64 = 1_799_971_200_000;
const POLICY: Policy = Policy {
    trial_notice_ms: 3 * 86_400_000,
    grace_ms: 0,
    auto_collect: None,
    adjust_window_ms: 35 * DAY_MS,
    chunk_periods: 50,
};

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    sub: Id,
}

/// A daily plan with a 10.00 fee in arrears and `minimum_minor`, and one subscription from T0.
fn world(minimum_minor: Option<i64>) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("c.redb"), 1 << 22).expect("open");
    let customer = crate::customers::create_for_test(&store, TENANT, "c", T0).id;
    let plan = Plan {
        id: Id::generate(),
        code: "daily".into(),
        name: "Daily".into(),
        currency: "USD".into(),
        interval: Interval::Day,
        interval_count: 1,
        fixed_fee: Some(FixedFee {
            amount_minor: 1000,
            timing: FeeTiming::InArrears,
        }),
        charges: Vec::new(),
        created_at_ms: T0,
        bill_usage_in_trial: false,
        threshold_minor: None,
        minimum_minor,
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
    let sub = Id::generate();
    store
        .apply_one(CreateSubscription {
            tenant: TENANT,
            subscription: Subscription::new(sub, customer, plan_id, T0, T0, T0),
        })
        .expect("store")
        .expect("subscription");
    World {
        _dir: dir,
        store,
        sub,
    }
}

fn coupon(w: &World, code: &str, off: Off, duration: Duration) {
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

fn redeem(w: &World, code: &str, at_ms: i64) -> Result<Id, DiscountError> {
    w.store
        .apply_one(ApplyDiscount {
            tenant: TENANT,
            id: Id::generate_at(at_ms),
            coupon: code.into(),
            target: Target::Subscription(w.sub),
            now_ms: at_ms,
        })
        .expect("store")
        .map(|d| d.id)
}

fn percent(text: &str) -> Off {
    Off::Percent(Stored(crate::decimal::parse(text).expect("decimal")))
}

fn run(w: &World, as_of: i64) {
    w.store
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
}

fn invoices(w: &World) -> Vec<Invoice> {
    let tx = w.store.read().expect("read");
    invoice::list(&tx, TENANT, None, None, 500).expect("list").0
}

/// (kind, description, amount) of every line.
fn lines(inv: &Invoice) -> Vec<(LineKind, String, i64)> {
    inv.lines
        .iter()
        .map(|l| (l.kind, l.description.clone(), l.amount_minor))
        .collect()
}

fn assert_verifies(w: &World) {
    let tx = w.store.read().expect("read");
    for inv in invoices(w) {
        assert_eq!(
            verify_invoice(&tx, TENANT, &inv).expect("verify"),
            Ok(()),
            "{}",
            inv.id.display("inv")
        );
    }
}

#[test]
fn once_repeating_and_forever_across_four_periods_with_a_minimum() {
    let w = world(Some(900));
    coupon(&w, "ONCE", percent("10"), Duration::Once);
    coupon(&w, "REP3", percent("10"), Duration::Repeating(3));
    coupon(
        &w,
        "EVER",
        Off::Amount {
            amount_minor: 100,
            currency: "USD".into(),
        },
        Duration::Forever,
    );
    for code in ["ONCE", "REP3", "EVER"] {
        redeem(&w, code, T0 + 3_600_000).expect("redeemed");
    }
    run(&w, T0 + 4 * DAY_MS);
    let all = invoices(&w);
    assert_eq!(all.len(), 4);
    let fee = (LineKind::FixedFee, "Daily (in arrears)".to_string(), 1000);
    let once = (
        LineKind::Discount,
        "Coupon ONCE (10% off)".to_string(),
        -100,
    );
    let rep3 = |amount| {
        (
            LineKind::Discount,
            "Coupon REP3 (10% off)".to_string(),
            amount,
        )
    };
    let ever = (
        LineKind::Discount,
        "Coupon EVER (1.00 USD off)".to_string(),
        -100,
    );
    let minimum = |amount| {
        (
            LineKind::MinimumCommitment,
            "Minimum commitment (9.00 for the period)".to_string(),
            amount,
        )
    };
    // Period 0: 10.00 − 1.00 (10%) − 0.90 (10% of what remains) − 1.00 = 7.10; the minimum
    // of 9.00 adds 1.90.
    assert_eq!(
        lines(&all[0]),
        [fee.clone(), once, rep3(-90), ever.clone(), minimum(190)]
    );
    assert_eq!(all[0].subtotal_minor, 900);
    for inv in &all[1..3] {
        assert_eq!(
            lines(inv),
            [fee.clone(), rep3(-100), ever.clone(), minimum(100)]
        );
    }
    assert_eq!(lines(&all[3]), [fee.clone(), ever.clone()]);
    assert_eq!(
        all[3].subtotal_minor, 900,
        "exactly the minimum: no true-up"
    );
    assert_verifies(&w);
}

#[test]
fn a_discount_starts_with_the_period_it_is_redeemed_in_and_removal_stops_it() {
    let w = world(None);
    coupon(&w, "ONCE", percent("50"), Duration::Once);
    coupon(&w, "EVER", percent("20"), Duration::Forever);
    // Redeemed during period 1, after period 0 ended: period 0 is not discounted.
    redeem(&w, "ONCE", T0 + DAY_MS + 1).expect("redeemed");
    run(&w, T0 + 2 * DAY_MS);
    let all = invoices(&w);
    assert_eq!(
        all.iter().map(|i| i.subtotal_minor).collect::<Vec<_>>(),
        [1000, 500]
    );
    // The same coupon twice on one subscription is refused, and nothing is counted.
    assert!(matches!(
        redeem(&w, "ONCE", T0 + 2 * DAY_MS),
        Err(DiscountError::AlreadyActive { .. })
    ));
    let ever = redeem(&w, "EVER", T0 + 2 * DAY_MS + 1).expect("redeemed");
    run(&w, T0 + 3 * DAY_MS);
    w.store
        .apply_one(RemoveDiscount {
            tenant: TENANT,
            id: ever,
            now_ms: T0 + 3 * DAY_MS + 1,
        })
        .expect("store")
        .expect("removed");
    run(&w, T0 + 4 * DAY_MS);
    let all = invoices(&w);
    assert_eq!(
        all.iter().map(|i| i.subtotal_minor).collect::<Vec<_>>(),
        [1000, 500, 800, 1000],
        "period 2 discounted by EVER; period 3 invoiced after its removal"
    );
    assert_verifies(&w);
    let tx = w.store.read().expect("read");
    let coupons = super::coupon::list(&tx, TENANT, None, 10).expect("list").0;
    assert_eq!(
        coupons.iter().map(|c| c.times_redeemed).collect::<Vec<_>>(),
        [1, 1]
    );
}

#[test]
fn a_verified_invoice_whose_discount_is_tampered_with_fails() {
    let w = world(Some(900));
    coupon(&w, "HALF", percent("50"), Duration::Forever);
    redeem(&w, "HALF", T0).expect("redeemed");
    run(&w, T0 + DAY_MS);
    let inv = invoices(&w).remove(0);
    assert_eq!(inv.subtotal_minor, 900);
    let mut tampered = inv.clone();
    tampered
        .lines
        .retain(|l| l.kind != LineKind::MinimumCommitment);
    tampered.subtotal_minor = 500;
    tampered.amount_due_minor = 500;
    // Consistent in itself (the digest matches its content): only re-deriving the discount
    // and minimum lines shows the minimum is missing.
    tampered.inputs_digest = invoice::inputs_digest(&tampered);
    let tx = w.store.read().expect("read");
    assert!(verify_invoice(&tx, TENANT, &tampered)
        .expect("verify")
        .is_err());
}
