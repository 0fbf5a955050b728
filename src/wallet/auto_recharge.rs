//! Auto-recharge: a customer's rule "when my credit in this currency falls below `below_minor`,
//! top it up by `amount_minor`, at most `max_per_day` times a UTC day".
//!
//! Evaluation is state-based: [`evaluate`] compares the customer's available credit with the
//! rule's threshold and the rule's state row, and is safe to run any number of times.
//!
//! - **armed** → the balance is below the threshold, no auto top-up is pending and fewer than
//!   `max_per_day` were started today: one top-up is created through [`top_up::create`] (the
//!   API's function) and the rule becomes **fired**, in the same write. A crash before that
//!   commit loses both; after it, both exist: one top-up per crossing whatever restarts.
//! - **fired** → nothing until its own top-up succeeds or the balance is back at or above the
//!   threshold (a manual top-up, a grant), either of which re-arms the rule. A top-up that fails
//!   (declined, or canceled with no other attempt) does not re-arm it: the next one waits for the
//!   balance to recover, never a retry storm. One waiting for the customer stops blocking the
//!   rule after [`REQUIRES_ACTION_BOUND_MS`].
//!
//! The state outlives a delete (the row is kept, marked deleted), so re-creating the rule
//! neither fires twice for one crossing nor resets the day's count; the day only moves forward.
//!
//! The amount must be at least the threshold, so one successful top-up always brings an
//! exhausted wallet back to the threshold and re-arms the rule ("an auto-recharge below its
//! own threshold" is refused).

use crate::store::{ReadTxn, WriteTxn};
use serde::{Deserialize, Serialize};

use super::record::{self, TopUp, TopUpStatus, Trigger};
use super::top_up::{self, NewTopUp, MAX_TOP_UP_MINOR};
use crate::id::Id;
use crate::ledger::grant::{self, Category};
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{get_record, put_record, tables, StoreError};

/// The largest `max_per_day`.
pub const MAX_PER_DAY: u32 = 100;

const DAY_MS: i64 = 86_400_000;

/// How long an auto top-up waiting for the customer (`requires_action`) blocks its rule.
pub const REQUIRES_ACTION_BOUND_MS: i64 = DAY_MS;

/// A customer's rule and its state, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Whose wallet.
    pub customer: Id,
    /// ISO 4217 (the customer's).
    pub currency: String,
    /// Top up when the available credit is below this.
    pub below_minor: i64,
    /// The top-up's amount (at least `below_minor`).
    pub amount_minor: i64,
    /// Top-ups started per UTC day, at most.
    pub max_per_day: u32,
    /// Off keeps the rule but never fires.
    pub enabled: bool,
    /// The payment method charged (the provider's default when `None`).
    pub payment_method: Option<String>,
    /// The provider that collects (the daemon's, when the rule was set).
    pub psp: String,
    /// Created.
    pub created_at_ms: i64,
    /// Last changed by its owner.
    pub updated_at_ms: i64,
    /// State: may fire (true) or fired for the current crossing (false).
    pub armed: bool,
    /// State: the UTC day (days since the epoch) `started_today` counts.
    pub day: i64,
    /// State: top-ups started on `day`.
    pub started_today: u32,
    /// State: the auto top-up not yet succeeded or failed.
    pub pending: Option<Id>,
    /// State: the last top-up it started.
    pub last_top_up: Option<Id>,
    /// Deleted by its owner: gone for the API and never evaluated, but its state is kept so
    /// that re-creating the rule neither fires again for the same crossing nor resets the
    /// day's count.
    pub deleted: bool,
}

/// Why a rule was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The customer does not exist.
    #[error("no customer with id {0}")]
    UnknownCustomer(String),
    /// A currency other than the customer's.
    #[error("currency {got} is not the customer's currency {expected}")]
    CurrencyMismatch {
        /// The customer's.
        expected: String,
        /// The one asked for.
        got: String,
    },
    /// The top-up would leave the wallet below the rule's own threshold.
    #[error("amount_minor {amount} is below the rule's own threshold below_minor {below}: one top-up must bring an empty wallet back to the threshold")]
    BelowThreshold {
        /// The amount.
        amount: i64,
        /// The threshold.
        below: i64,
    },
}

/// What setting a rule asks for.
#[derive(Debug, Clone)]
pub struct SetRule {
    /// Owner.
    pub tenant: TenantId,
    /// Whose wallet.
    pub customer: Id,
    /// `None`: the customer's.
    pub currency: Option<String>,
    /// Threshold, 1..=[`MAX_TOP_UP_MINOR`].
    pub below_minor: i64,
    /// Top-up amount, `below_minor..=MAX_TOP_UP_MINOR`.
    pub amount_minor: i64,
    /// 1..=[`MAX_PER_DAY`].
    pub max_per_day: u32,
    /// On or off.
    pub enabled: bool,
    /// Charged by its top-ups.
    pub payment_method: Option<String>,
    /// The provider.
    pub psp: String,
    /// Now.
    pub now_ms: i64,
}

/// What a rule's evaluation at setting time did.
#[derive(Debug, Clone)]
pub struct Set {
    /// The rule as stored.
    pub rule: Rule,
    /// The top-up it started at once (the wallet was already below the threshold).
    pub fired: Option<TopUp>,
}

/// `POST /v1/customers/{id}/auto-recharge`: creates or replaces the rule (its state is kept,
/// also across a delete: a rule that already fired for this crossing does not fire again, and
/// the day's count stands), then evaluates it.
impl Command for SetRule {
    type Output = Result<Set, RuleError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(customer) = crate::customers::load_in_write(tx, self.tenant, self.customer)?
        else {
            return Ok(Err(RuleError::UnknownCustomer(
                self.customer.display(crate::customers::PREFIX),
            )));
        };
        let currency = self
            .currency
            .clone()
            .unwrap_or_else(|| customer.currency.clone());
        if currency != customer.currency {
            return Ok(Err(RuleError::CurrencyMismatch {
                expected: customer.currency,
                got: currency,
            }));
        }
        if self.amount_minor < self.below_minor {
            return Ok(Err(RuleError::BelowThreshold {
                amount: self.amount_minor,
                below: self.below_minor,
            }));
        }
        let previous = load(tx, self.tenant, self.customer)?;
        let rule = Rule {
            customer: self.customer,
            currency,
            below_minor: self.below_minor,
            amount_minor: self.amount_minor,
            max_per_day: self.max_per_day,
            enabled: self.enabled,
            payment_method: self.payment_method.clone(),
            psp: self.psp.clone(),
            created_at_ms: previous.as_ref().map_or(self.now_ms, |r| r.created_at_ms),
            updated_at_ms: self.now_ms,
            armed: previous.as_ref().is_none_or(|r| r.armed),
            day: previous.as_ref().map_or(0, |r| r.day),
            started_today: previous.as_ref().map_or(0, |r| r.started_today),
            pending: previous.as_ref().and_then(|r| r.pending),
            last_top_up: previous.as_ref().and_then(|r| r.last_top_up),
            deleted: false,
        };
        save(tx, self.tenant, &rule)?;
        let fired = evaluate(tx, self.tenant, self.customer, self.now_ms)?;
        let rule = load(tx, self.tenant, self.customer)?
            .ok_or_else(|| StoreError::Corrupt("auto-recharge rule vanished".into()))?;
        Ok(Ok(Set { rule, fired }))
    }
}

/// `DELETE /v1/customers/{id}/auto-recharge`: removes the rule for the API and from
/// evaluation, keeping its state for a re-created rule; the removed rule, if any.
#[derive(Debug, Clone)]
pub struct DeleteRule {
    /// Owner.
    pub tenant: TenantId,
    /// Whose wallet.
    pub customer: Id,
}

impl Command for DeleteRule {
    type Output = Option<Rule>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(removed) = load(tx, self.tenant, self.customer)?.filter(|r| !r.deleted) else {
            return Ok(None);
        };
        save(
            tx,
            self.tenant,
            &Rule {
                deleted: true,
                ..removed.clone()
            },
        )?;
        Ok(Some(removed))
    }
}

fn save(tx: &WriteTxn, tenant: TenantId, rule: &Rule) -> Result<(), StoreError> {
    put_record(
        &mut tx.open_table(tables::AUTO_RECHARGE)?,
        &keys::tenant_id(tenant, rule.customer),
        rule,
    )
}

fn load(tx: &WriteTxn, tenant: TenantId, customer: Id) -> Result<Option<Rule>, StoreError> {
    get_record(
        &tx.open_table(tables::AUTO_RECHARGE)?,
        keys::tenant_id(tenant, customer),
    )
}

/// A customer's rule (not a deleted one), from a read snapshot.
pub fn get(tx: &ReadTxn, tenant: TenantId, customer: Id) -> Result<Option<Rule>, StoreError> {
    Ok(get_record::<Rule, _>(
        &tx.open_table(tables::AUTO_RECHARGE)?,
        keys::tenant_id(tenant, customer),
    )?
    .filter(|r| !r.deleted))
}

/// The credit a customer can use now in `currency`: the remainders of its grants that count
/// at `at_ms` ([`grant::Grant::counts_at`]: those that committed before this write count
/// whatever its stamp).
pub fn available_minor(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: Id,
    currency: &str,
    at_ms: i64,
) -> Result<i64, StoreError> {
    let grants = grant::of_customer(
        &tx.open_table(tables::GRANTS)?,
        &tx.open_table(tables::GRANTS_BY_CUSTOMER)?,
        tenant,
        customer,
    )?;
    let balances = tx.open_table(tables::BALANCES)?;
    let mut sum = 0i64;
    for g in grants
        .iter()
        .filter(|g| g.currency == currency && g.counts_at(at_ms))
    {
        sum = sum.saturating_add(grant::remaining(&balances, tenant, g)?);
    }
    Ok(sum)
}

/// The watcher's entry: evaluates the rule of every customer whose credit balance the batch
/// moved (one point read for a customer without a rule).
pub fn on_touches(tx: &WriteTxn, touches: &crate::watch::Touches) -> Result<(), StoreError> {
    for (tenant, customer, at_ms) in touches.balances() {
        evaluate(tx, tenant, customer, at_ms)?;
    }
    Ok(())
}

/// Evaluates a customer's rule at `at_ms` (see the module doc), in the caller's transaction;
/// returns the top-up it started, if any. Cheap when the customer has no rule: one point read.
pub fn evaluate(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: Id,
    at_ms: i64,
) -> Result<Option<TopUp>, StoreError> {
    let Some(mut rule) = load(tx, tenant, customer)? else {
        return Ok(None);
    };
    if !rule.enabled || rule.deleted {
        return Ok(None);
    }
    let before = rule.clone();
    release_pending(tx, tenant, &mut rule, at_ms)?;
    let fired = if available_minor(tx, tenant, customer, &rule.currency, at_ms)? >= rule.below_minor
    {
        rule.armed = true;
        None
    } else {
        fire(tx, tenant, &mut rule, at_ms)?
    };
    if rule != before {
        save(tx, tenant, &rule)?;
    }
    Ok(fired)
}

/// Frees the rule of its pending top-up once that one is settled: its success re-arms the rule
/// (a new crossing may follow at once, even if the grant was drained in the write that issued
/// it); a failure does not. An auto top-up still waiting for the customer
/// (`requires_action`) [`REQUIRES_ACTION_BOUND_MS`] after it started stops blocking the rule,
/// which then behaves as after a decline (it may still succeed and grant its credit).
fn release_pending(
    tx: &WriteTxn,
    tenant: TenantId,
    rule: &mut Rule,
    at_ms: i64,
) -> Result<(), StoreError> {
    let Some(pending) = rule.pending else {
        return Ok(());
    };
    let Some(t) = record::load(tx, tenant, pending)? else {
        rule.pending = None;
        return Ok(());
    };
    match t.status {
        TopUpStatus::Succeeded => {
            rule.pending = None;
            rule.armed = true;
        }
        TopUpStatus::Failed => rule.pending = None,
        TopUpStatus::Pending => {
            if waits_too_long(tx, tenant, &t, at_ms)? {
                rule.pending = None;
            }
        }
    }
    Ok(())
}

/// Whether a pending top-up's payment has waited for the customer past the bound.
fn waits_too_long(
    tx: &WriteTxn,
    tenant: TenantId,
    t: &TopUp,
    at_ms: i64,
) -> Result<bool, StoreError> {
    if at_ms.saturating_sub(t.created_at_ms) < REQUIRES_ACTION_BOUND_MS {
        return Ok(false);
    }
    let Some(payment) = t.payment else {
        return Ok(false);
    };
    Ok(crate::payments::payment::load(tx, tenant, payment)?
        .is_some_and(|p| p.status == crate::payments::payment::PaymentStatus::RequiresAction))
}

/// The wallet is below the threshold: fire if armed, nothing pending and today's cap allows.
fn fire(
    tx: &WriteTxn,
    tenant: TenantId,
    rule: &mut Rule,
    at_ms: i64,
) -> Result<Option<TopUp>, StoreError> {
    if !rule.armed || rule.pending.is_some() {
        return Ok(None);
    }
    // The day only moves forward: a command stamped before the current day (commands are
    // not committed in time order around midnight) counts against the current day.
    let day = at_ms.div_euclid(DAY_MS);
    if day > rule.day {
        rule.day = day;
        rule.started_today = 0;
    }
    if rule.started_today >= rule.max_per_day {
        return Ok(None);
    }
    let new = NewTopUp {
        tenant,
        customer: rule.customer,
        currency: Some(rule.currency.clone()),
        amount_minor: rule.amount_minor.min(MAX_TOP_UP_MINOR),
        paid: true,
        category: Category::Paid,
        expires_at_ms: None,
        payment_method: rule.payment_method.clone(),
        psp: rule.psp.clone(),
        trigger: Trigger::AutoRecharge,
        now_ms: at_ms,
        origin: format!(
            "auto_recharge:{}",
            rule.customer.display(crate::customers::PREFIX)
        ),
    };
    // One attempt per crossing, whatever its outcome.
    rule.armed = false;
    match top_up::create(tx, &new)? {
        Ok(t) => {
            rule.started_today = rule.started_today.saturating_add(1);
            rule.pending = Some(t.id);
            rule.last_top_up = Some(t.id);
            Ok(Some(t))
        }
        Err(e) => {
            tracing::warn!(
                customer = %rule.customer.display(crate::customers::PREFIX),
                error = %e,
                "auto-recharge top-up refused"
            );
            Ok(None)
        }
    }
}
