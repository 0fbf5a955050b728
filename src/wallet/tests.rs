//! Top-ups and auto-recharge against a real store: the grant exists exactly when the payment
//! succeeded, and auto-recharge fires once per crossing within its daily cap.

use redb::WriteTransaction;

use super::auto_recharge::{self, SetRule};
use super::record::{self, TopUp, TopUpStatus, Trigger};
use super::top_up::{CreateTopUp, NewTopUp};
use crate::id::Id;
use crate::ledger::grant::{self, Category, CreateGrant, Funding, Grant, GrantStatus, VoidGrant};
use crate::payments::outcome::{apply_outcome, Dunning, Outcome};
use crate::store::writer::Command;
use crate::store::{Store, StoreError, TenantId};

const TENANT: TenantId = TenantId(1);
const T0: i64 = 1_799_971_200_000;
const DAY_MS: i64 = 86_400_000;

struct W {
    _dir: tempfile::TempDir,
    store: Store,
    customer: Id,
}

fn world() -> W {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("w.redb"), 1 << 22).expect("open");
    let customer = crate::customers::create_for_test(&store, TENANT, "c", T0).id;
    W {
        _dir: dir,
        store,
        customer,
    }
}

/// Evaluates the customer's rule at an instant, as the watcher does after a balance touch.
#[derive(Clone)]
struct Evaluate {
    customer: Id,
    at_ms: i64,
}

impl Command for Evaluate {
    type Output = Option<TopUp>;

    fn apply(self, tx: &WriteTransaction) -> Result<Self::Output, StoreError> {
        auto_recharge::evaluate(tx, TENANT, self.customer, self.at_ms)
    }
}

/// A provider's report about a payment.
#[derive(Clone)]
struct Report {
    payment: Id,
    outcome: Outcome,
    at_ms: i64,
}

impl Command for Report {
    type Output = ();

    fn apply(self, tx: &WriteTransaction) -> Result<Self::Output, StoreError> {
        let dunning = Dunning {
            retry_delays_ms: vec![DAY_MS],
        };
        apply_outcome(
            tx,
            TENANT,
            self.payment,
            self.outcome,
            &dunning,
            self.at_ms,
            "test",
        )?;
        Ok(())
    }
}

fn succeeded() -> Outcome {
    Outcome::Succeeded {
        provider_id: None,
        received: None,
    }
}

fn new_top_up(w: &W, amount_minor: i64, at_ms: i64) -> TopUp {
    w.store
        .apply_one(CreateTopUp(NewTopUp {
            tenant: TENANT,
            customer: w.customer,
            currency: None,
            amount_minor,
            paid: true,
            category: Category::Paid,
            expires_at_ms: None,
            payment_method: None,
            psp: "simulated".into(),
            trigger: Trigger::Api,
            now_ms: at_ms,
            origin: "test".into(),
        }))
        .expect("store")
        .expect("top-up")
}

fn top_up(w: &W, id: Id) -> TopUp {
    let tx = w.store.read().expect("read");
    record::get(&tx, TENANT, id).expect("get").expect("top-up")
}

fn grants(w: &W) -> Vec<Grant> {
    let tx = w.store.read().expect("read");
    grant::of_customer(
        &tx.open_table(crate::store::tables::GRANTS).expect("t"),
        &tx.open_table(crate::store::tables::GRANTS_BY_CUSTOMER)
            .expect("t"),
        TENANT,
        w.customer,
    )
    .expect("grants")
}

fn promo_grant(w: &W, amount_minor: i64, at_ms: i64) -> Id {
    let g = Grant {
        id: Id::generate_at(at_ms),
        customer: w.customer,
        currency: "USD".into(),
        amount_minor,
        category: Category::Promotional,
        funding: Funding::PromotionalExpense,
        priority: 0,
        effective_at_ms: at_ms,
        expires_at_ms: None,
        created_at_ms: at_ms,
        status: GrantStatus::Active,
        closed_at_ms: None,
        issue_entry: Id::generate_at(at_ms),
        close_entry: None,
    };
    w.store
        .apply_one(CreateGrant {
            tenant: TENANT,
            grant: g,
            reason: "test".into(),
            origin: "test".into(),
        })
        .expect("store")
        .expect("grant")
        .id
}

fn void_grant(w: &W, id: Id, at_ms: i64) {
    w.store
        .apply_one(VoidGrant {
            tenant: TENANT,
            grant: id,
            entry_id: Id::generate_at(at_ms),
            now_ms: at_ms,
            origin: "test".into(),
        })
        .expect("store")
        .expect("void");
}

fn books_verify(w: &W) {
    let tx = w.store.read().expect("read");
    let report = crate::ledger::verify::verify(&tx, Some(TENANT), &mut |_, _| {}).expect("verify");
    assert_eq!(report.violation, None);
}

fn set_rule(w: &W, max_per_day: u32, at_ms: i64) -> auto_recharge::Set {
    w.store
        .apply_one(SetRule {
            tenant: TENANT,
            customer: w.customer,
            currency: None,
            below_minor: 1000,
            amount_minor: 2000,
            max_per_day,
            enabled: true,
            payment_method: None,
            psp: "simulated".into(),
            now_ms: at_ms,
        })
        .expect("store")
        .expect("rule")
}

fn evaluate(w: &W, at_ms: i64) -> Option<TopUp> {
    w.store
        .apply_one(Evaluate {
            customer: w.customer,
            at_ms,
        })
        .expect("store")
}

fn settle(w: &W, t: &TopUp, outcome: Outcome, at_ms: i64) {
    w.store
        .apply_one(Report {
            payment: t.payment.expect("payment"),
            outcome,
            at_ms,
        })
        .expect("store");
}

#[test]
fn a_success_reported_twice_issues_one_grant_funded_by_prepayments() {
    let w = world();
    let t = new_top_up(&w, 5000, T0);
    assert_eq!(t.status, TopUpStatus::Pending);
    assert!(
        grants(&w).is_empty(),
        "no credit before the payment succeeds"
    );
    settle(&w, &t, succeeded(), T0 + 1);
    settle(&w, &t, succeeded(), T0 + 2);
    let after = top_up(&w, t.id);
    assert_eq!(after.status, TopUpStatus::Succeeded);
    let g = grants(&w);
    assert_eq!(g.len(), 1);
    assert_eq!(Some(g[0].id), after.grant);
    assert_eq!(g[0].amount_minor, 5000);
    assert_eq!(g[0].funding, Funding::Prepayment);
    books_verify(&w);
}

#[test]
fn a_decline_fails_the_top_up_and_a_void_before_sending_does_too() {
    let w = world();
    let declined = new_top_up(&w, 800, T0);
    settle(
        &w,
        &declined,
        Outcome::Failed {
            provider_id: None,
            code: "card_declined".into(),
            message: "no".into(),
        },
        T0 + 1,
    );
    assert_eq!(top_up(&w, declined.id).status, TopUpStatus::Failed);
    // A success reported after the decline finds the invoice void: no grant (it is refunded).
    settle(&w, &declined, succeeded(), T0 + 2);
    assert_eq!(top_up(&w, declined.id).status, TopUpStatus::Failed);
    let voided = new_top_up(&w, 900, T0 + 3);
    w.store
        .apply_one(crate::payments::void::VoidInvoice {
            tenant: TENANT,
            id: voided.invoice.expect("invoice"),
            now_ms: T0 + 4,
            origin: "test".into(),
        })
        .expect("store")
        .expect("void");
    let after = top_up(&w, voided.id);
    assert_eq!(after.status, TopUpStatus::Failed);
    assert_eq!(after.failure.as_deref(), Some("invoice voided"));
    assert!(grants(&w).is_empty());
    books_verify(&w);
}

#[test]
fn auto_recharge_fires_once_per_crossing_and_re_arms_when_the_balance_recovers() {
    let w = world();
    let promo = promo_grant(&w, 1500, T0);
    let set = set_rule(&w, 5, T0);
    assert!(set.fired.is_none(), "1500 is not below 1000");
    assert!(set.rule.armed);
    // The balance drops below the threshold: one top-up, however often it is evaluated.
    void_grant(&w, promo, T0 + 10);
    let fired = evaluate(&w, T0 + 10).expect("fires");
    assert_eq!(fired.trigger, Trigger::AutoRecharge);
    assert_eq!(fired.amount_minor, 2000);
    assert!(evaluate(&w, T0 + 11).is_none());
    // Settled: its grant brings the balance back to 2000, which re-arms the rule.
    settle(&w, &fired, succeeded(), T0 + 12);
    assert!(evaluate(&w, T0 + 12).is_none());
    let tx = w.store.read().expect("read");
    let rule = auto_recharge::get(&tx, TENANT, w.customer)
        .expect("get")
        .expect("rule");
    drop(tx);
    assert!(rule.armed);
    assert_eq!(rule.pending, None);
    // The next crossing fires again.
    let grant = top_up(&w, fired.id).grant.expect("grant");
    void_grant(&w, grant, T0 + 20);
    let second = evaluate(&w, T0 + 20).expect("fires again");
    assert_ne!(second.id, fired.id);
    books_verify(&w);
}

#[test]
fn auto_recharge_respects_max_per_day_and_resumes_the_next_utc_day() {
    let w = world();
    let day0 = T0 - T0.rem_euclid(DAY_MS);
    let set = set_rule(&w, 1, day0 + 1000);
    let first = set.fired.expect("an empty wallet fires at once");
    settle(&w, &first, succeeded(), day0 + 2000);
    // Re-armed by the recovery, below again, but today's one top-up was started.
    assert!(evaluate(&w, day0 + 2500).is_none());
    void_grant(&w, top_up(&w, first.id).grant.expect("grant"), day0 + 3000);
    assert!(evaluate(&w, day0 + 3000).is_none());
    assert!(evaluate(&w, day0 + DAY_MS - 1).is_none());
    let next = evaluate(&w, day0 + DAY_MS).expect("a new UTC day");
    assert_ne!(next.id, first.id);
    assert!(evaluate(&w, day0 + DAY_MS + 1).is_none());
}

#[test]
fn a_declined_auto_top_up_does_not_fire_again_until_the_balance_recovers() {
    let w = world();
    let set = set_rule(&w, 10, T0);
    let first = set.fired.expect("fires");
    settle(
        &w,
        &first,
        Outcome::Failed {
            provider_id: None,
            code: "card_declined".into(),
            message: "no".into(),
        },
        T0 + 1,
    );
    assert!(evaluate(&w, T0 + 2).is_none());
    assert!(evaluate(&w, T0 + 3).is_none());
    // A manual top-up brings the balance back: re-armed, and the next drop fires.
    let manual = new_top_up(&w, 5000, T0 + 4);
    settle(&w, &manual, succeeded(), T0 + 5);
    assert!(evaluate(&w, T0 + 5).is_none());
    void_grant(&w, top_up(&w, manual.id).grant.expect("grant"), T0 + 6);
    assert!(evaluate(&w, T0 + 6).is_some());
}
