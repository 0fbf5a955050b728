//! Top-ups and auto-recharge against a real store: the grant exists exactly when the payment
//! succeeded, and auto-recharge fires once per crossing within its daily cap.

use crate::store::WriteTxn;

use super::auto_recharge::{self, SetRule};
use super::record::{self, TopUp, TopUpStatus, Trigger};
use super::top_up::{CreateTopUp, NewTopUp};
use crate::id::Id;
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::ledger::grant::{self, Category, CreateGrant, Funding, Grant, GrantStatus, VoidGrant};
use crate::payments::outcome::{apply_outcome, Dunning, Outcome};
use crate::payments::payment::Payment;
use crate::payments::refund::{self, ProviderRefund, RefundOutcome, RequestRefund};
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

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
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

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
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

/// Any write, as a command (the steps the tests drive directly).
#[derive(Clone)]
struct Run<F>(F);

impl<F, O> Command for Run<F>
where
    F: Fn(&WriteTxn) -> Result<O, StoreError> + Clone + Send + 'static,
    O: Send + 'static,
{
    type Output = O;

    fn apply(self, tx: &WriteTxn) -> Result<O, StoreError> {
        (self.0)(tx)
    }
}

/// Spends `amount_minor` of the customer's credit, as an invoice drawing on it would.
fn spend(w: &W, amount_minor: i64, at_ms: i64) {
    w.store
        .apply_one(grant::ConsumeCredits {
            tenant: TENANT,
            customer: w.customer,
            currency: "USD".into(),
            amount_minor,
            now_ms: at_ms,
            entry_id: Id::generate_at(at_ms),
            origin: "test".into(),
        })
        .expect("store")
        .expect("consumed");
}

fn balance(w: &W, account: AccountRef) -> i64 {
    let tx = w.store.read().expect("read");
    let balances = tx.open_table(crate::store::tables::BALANCES).expect("t");
    crate::ledger::journal::balance(&balances, TENANT, "USD", account).expect("balance")
}

fn payment(w: &W, id: Id) -> Payment {
    let tx = w.store.read().expect("read");
    crate::payments::payment::get(&tx, TENANT, id)
        .expect("get")
        .expect("payment")
}

fn provider_refund(
    w: &W,
    payment: Id,
    provider_id: &str,
    amount_minor: i64,
    status: &str,
    at_ms: i64,
) {
    let r = ProviderRefund {
        provider_id: provider_id.into(),
        amount_minor,
        status: status.into(),
        tally_refund: None,
    };
    let matched = w
        .store
        .apply_one(Run(move |tx: &WriteTxn| {
            refund::apply_provider_refund(tx, TENANT, payment, &r, at_ms, "test")
        }))
        .expect("store");
    assert_eq!(matched, refund::Matched::Applied);
}

fn remaining(w: &W, grant_id: Id) -> i64 {
    let g = grants(w)
        .into_iter()
        .find(|g| g.id == grant_id)
        .expect("grant");
    balance(w, g.account()).saturating_neg()
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
    spend(&w, 2000, T0 + 20);
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
    spend(&w, 2000, day0 + 3000);
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
    spend(&w, 5000, T0 + 6);
    assert!(evaluate(&w, T0 + 6).is_some());
}

fn paid_top_up(w: &W, amount_minor: i64, at_ms: i64) -> (TopUp, Id) {
    let t = new_top_up(w, amount_minor, at_ms);
    settle(w, &t, succeeded(), at_ms + 1);
    let grant = top_up(w, t.id).grant.expect("granted");
    (t, grant)
}

#[test]
fn a_provider_refund_of_a_top_up_takes_the_credit_back_and_holds_the_spent_part_for_review() {
    let w = world();
    let (t, grant) = paid_top_up(&w, 5000, T0);
    let pay = t.payment.expect("payment");
    // Partly refunded at the provider while the credit is unused: the grant gives it back.
    provider_refund(&w, pay, "re_1", 1000, "succeeded", T0 + 10);
    assert_eq!(remaining(&w, grant), 4000);
    assert_eq!(balance(&w, AccountRef::System(SystemAccount::Revenue)), 0);
    // 3000 of the credit is spent; the rest of the payment is refunded: 1000 from the grant,
    // 3000 the customer already used goes to review, never to revenue.
    spend(&w, 3000, T0 + 20);
    provider_refund(&w, pay, "re_2", 4000, "succeeded", T0 + 30);
    assert_eq!(remaining(&w, grant), 0);
    assert_eq!(balance(&w, AccountRef::System(SystemAccount::Revenue)), 0);
    assert_eq!(
        balance(&w, AccountRef::System(SystemAccount::Suspense)),
        3000
    );
    assert!(payment(&w, pay)
        .held_reason
        .is_some_and(|r| r.starts_with("refund_exceeds_credit")));
    // The provider fails the second refund after all: its entry is reversed exactly.
    provider_refund(&w, pay, "re_2", 4000, "failed", T0 + 40);
    assert_eq!(remaining(&w, grant), 1000);
    assert_eq!(balance(&w, AccountRef::System(SystemAccount::Suspense)), 0);
    assert_eq!(balance(&w, AccountRef::System(SystemAccount::Revenue)), 0);
    assert_eq!(
        balance(&w, AccountRef::System(SystemAccount::Prepayments)),
        0
    );
    books_verify(&w);
}

fn request_refund(w: &W, pay: Id, amount_minor: i64, at_ms: i64) -> Result<Payment, String> {
    w.store
        .apply_one(RequestRefund {
            tenant: TENANT,
            payment: pay,
            amount_minor: Some(amount_minor),
            now_ms: at_ms,
        })
        .expect("store")
        .map_err(|e| e.to_string())
}

#[test]
fn a_top_up_payment_is_refundable_up_to_the_unused_credit_and_its_grant_is_not_voidable() {
    let w = world();
    let (t, grant) = paid_top_up(&w, 5000, T0);
    let pay = t.payment.expect("payment");
    spend(&w, 2000, T0 + 10);
    assert!(request_refund(&w, pay, 3001, T0 + 20).is_err());
    let p = request_refund(&w, pay, 2000, T0 + 21).expect("refundable");
    // A pending refund counts against the credit: 1000 more at most.
    assert!(request_refund(&w, pay, 1001, T0 + 22).is_err());
    let refund_id = p.refunds[0].id;
    w.store
        .apply_one(Run(move |tx: &WriteTxn| {
            refund::apply_refund(
                tx,
                TENANT,
                pay,
                refund_id,
                RefundOutcome::Succeeded {
                    provider_id: "re_1".into(),
                },
                T0 + 30,
                "test",
            )
        }))
        .expect("store");
    assert_eq!(remaining(&w, grant), 1000);
    assert_eq!(balance(&w, AccountRef::System(SystemAccount::Revenue)), 0);
    assert_eq!(balance(&w, AccountRef::System(SystemAccount::Suspense)), 0);
    // The credit is taken back by refunding, never stranded by a void.
    let voided = w
        .store
        .apply_one(VoidGrant {
            tenant: TENANT,
            grant,
            entry_id: Id::generate_at(T0 + 40),
            now_ms: T0 + 40,
            origin: "test".into(),
        })
        .expect("store");
    assert!(voided.is_err());
    assert_eq!(remaining(&w, grant), 1000);
    assert_eq!(
        balance(&w, AccountRef::System(SystemAccount::Prepayments)),
        0
    );
    books_verify(&w);
}

fn rule(w: &W) -> Option<auto_recharge::Rule> {
    let tx = w.store.read().expect("read");
    auto_recharge::get(&tx, TENANT, w.customer).expect("get")
}

fn auto_top_ups(w: &W) -> Vec<TopUp> {
    let tx = w.store.read().expect("read");
    record::list(&tx, TENANT, w.customer, None, 500)
        .expect("list")
        .0
        .into_iter()
        .filter(|t| t.trigger == Trigger::AutoRecharge)
        .collect()
}

fn delete_rule(w: &W) {
    w.store
        .apply_one(auto_recharge::DeleteRule {
            tenant: TENANT,
            customer: w.customer,
        })
        .expect("store")
        .expect("a rule");
}

#[test]
fn deleting_and_re_creating_a_rule_keeps_its_crossing_and_its_daily_count() {
    let w = world();
    let day0 = T0 - T0.rem_euclid(DAY_MS);
    let first = set_rule(&w, 1, day0 + 1000)
        .fired
        .expect("an empty wallet fires at once");
    delete_rule(&w);
    assert!(rule(&w).is_none(), "a deleted rule is gone for the API");
    let again = set_rule(&w, 1, day0 + 2000);
    assert!(
        again.fired.is_none(),
        "the same crossing, its top-up pending"
    );
    assert_eq!(again.rule.pending, Some(first.id));
    assert_eq!(again.rule.started_today, 1);
    // Declined: the re-created rule waits for a recovery, and today's cap is spent anyway.
    settle(
        &w,
        &first,
        Outcome::Failed {
            provider_id: None,
            code: "card_declined".into(),
            message: "no".into(),
        },
        day0 + 3000,
    );
    delete_rule(&w);
    assert!(set_rule(&w, 1, day0 + 4000).fired.is_none());
    assert!(evaluate(&w, day0 + 5000).is_none());
    assert_eq!(auto_top_ups(&w).len(), 1);
}

#[test]
fn the_rule_re_arms_when_its_own_top_up_succeeds_even_if_drained_in_the_same_write() {
    let w = world();
    let first = set_rule(&w, 5, T0).fired.expect("fires");
    let pay = first.payment.expect("payment");
    // The grant and a draw of all of it commit in one write: the rule never sees the
    // recovered balance, yet its top-up succeeded.
    w.store
        .apply_one(Run(move |tx: &WriteTxn| {
            apply_outcome(
                tx,
                TENANT,
                pay,
                succeeded(),
                &Dunning {
                    retry_delays_ms: vec![],
                },
                T0 + 10,
                "test",
            )?;
            grant::consume(
                tx,
                TENANT,
                first.customer,
                "USD",
                2000,
                T0 + 10,
                Id::generate_at(T0 + 10),
                crate::ledger::journal::Links::default(),
                "test".into(),
            )?
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(())
        }))
        .expect("store");
    let second = evaluate(&w, T0 + 20).expect("re-armed by its success: a new crossing");
    assert_ne!(second.id, first.id);
}

#[test]
fn a_canceled_auto_top_up_fails_and_frees_the_rule() {
    let w = world();
    let first = set_rule(&w, 5, T0).fired.expect("fires");
    settle(
        &w,
        &first,
        Outcome::Canceled {
            provider_id: None,
            reason: "abandoned".into(),
        },
        T0 + 10,
    );
    let after = top_up(&w, first.id);
    assert_eq!(after.status, TopUpStatus::Failed);
    // Like a decline: free again once the balance recovers, then the next drop fires.
    let manual = new_top_up(&w, 5000, T0 + 20);
    settle(&w, &manual, succeeded(), T0 + 21);
    assert!(evaluate(&w, T0 + 21).is_none());
    spend(&w, 5000, T0 + 30);
    assert!(evaluate(&w, T0 + 30).is_some());
}

#[test]
fn an_auto_top_up_waiting_for_the_customer_blocks_the_rule_for_a_bounded_time() {
    let w = world();
    let first = set_rule(&w, 5, T0).fired.expect("fires");
    settle(
        &w,
        &first,
        Outcome::RequiresAction { provider_id: None },
        T0 + 10,
    );
    let manual = new_top_up(&w, 5000, T0 + 20);
    settle(&w, &manual, succeeded(), T0 + 21);
    spend(&w, 5000, T0 + 30);
    assert!(
        evaluate(&w, T0 + 30).is_none(),
        "still waiting for the customer"
    );
    let late = T0 + DAY_MS + 1;
    let manual = new_top_up(&w, 5000, late);
    settle(&w, &manual, succeeded(), late + 1);
    assert!(evaluate(&w, late + 1).is_none());
    spend(&w, 5000, late + 2);
    assert!(
        evaluate(&w, late + 2).is_some(),
        "past the bound the rule fires again"
    );
}

#[test]
fn a_paid_top_up_settled_after_its_expiry_is_granted_its_whole_lifetime() {
    let w = world();
    let t = w
        .store
        .apply_one(CreateTopUp(NewTopUp {
            tenant: TENANT,
            customer: w.customer,
            currency: None,
            amount_minor: 3000,
            paid: true,
            category: Category::Paid,
            expires_at_ms: Some(T0 + 1000),
            payment_method: None,
            psp: "simulated".into(),
            trigger: Trigger::Api,
            now_ms: T0,
            origin: "test".into(),
        }))
        .expect("store")
        .expect("top-up");
    settle(&w, &t, succeeded(), T0 + 5000);
    let g = grants(&w);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].expires_at_ms, Some(T0 + 6000));
    assert!(g[0].usable_at(T0 + 5000));
}

#[test]
fn an_evaluation_stamped_before_midnight_counts_against_the_current_day() {
    let w = world();
    let day1 = T0 - T0.rem_euclid(DAY_MS) + DAY_MS;
    let first = set_rule(&w, 1, day1 + 1000).fired.expect("fires");
    settle(&w, &first, succeeded(), day1 + 2000);
    assert!(evaluate(&w, day1 + 2000).is_none());
    spend(&w, 2000, day1 + 3000);
    // A command stamped just before midnight, committed after the day's fire.
    assert!(evaluate(&w, day1 - 1000).is_none());
    assert!(evaluate(&w, day1 + 4000).is_none());
    assert_eq!(auto_top_ups(&w).len(), 1);
    assert!(evaluate(&w, day1 + DAY_MS).is_some());
}
