//! Refunds: requested with their job in one write, settled by the provider's answer or its
//! webhooks, matched by the provider's refund ids and amounts.
//!
//! A refund is booked only when the provider says that refund succeeded: the job's reply, a
//! `refund.updated` / `charge.refund.updated` event naming it, or a `charge.refunded` event
//! whose list (or, without a list, whose total) accounts for it exactly. A refund the provider
//! is still settling stays `pending`; one it refused becomes `failed` and frees its amount.

use crate::store::WriteTxn;

use super::outcome::payment_links;
use super::payment::{load, refund_key, save, PayError, Payment, PaymentStatus, Refund};
use super::payment::{PREFIX, REFUND_JOB, REFUND_PREFIX};
use super::top_up_refund;
use crate::id::Id;
use crate::jobs::{self, Job};
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::ledger::journal::{self, Draft, Posting};
use crate::store::keys::TenantId;
use crate::store::writer::Command;
use crate::store::StoreError;

/// Requests a refund: recorded with its job in one write.
#[derive(Clone)]
pub struct RequestRefund {
    /// Whose.
    pub tenant: TenantId,
    /// Which payment.
    pub payment: Id,
    /// Amount (default: what remains refundable).
    pub amount_minor: Option<i64>,
    /// Now.
    pub now_ms: i64,
}

impl Command for RequestRefund {
    type Output = Result<Payment, PayError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        self.record(tx, true)
    }
}

impl RequestRefund {
    /// Records the refund without a provider job: for refunds the provider already made (its
    /// webhook reports them).
    pub fn apply_without_job(self, tx: &WriteTxn) -> Result<Result<Payment, PayError>, StoreError> {
        self.record(tx, false)
    }

    /// Transition "refund requested": only money the provider holds can be refunded, and never
    /// more than it holds net of the refunds not yet refused.
    pub(super) fn record(
        self,
        tx: &WriteTxn,
        with_job: bool,
    ) -> Result<Result<Payment, PayError>, StoreError> {
        let Some(mut p) = load(tx, self.tenant, self.payment)? else {
            return Ok(Err(PayError::UnknownPayment(self.payment.display(PREFIX))));
        };
        if !p.status.is_collected() {
            return Ok(Err(PayError::NotRefundable(format!(
                "payment {} is {}; only collected payments can be refunded",
                p.id.display(PREFIX),
                p.status.as_str()
            ))));
        }
        if p.status != PaymentStatus::Succeeded && p.entry.is_none() {
            return Ok(Err(PayError::NotRefundable(format!(
                "payment {} holds {} {} that could not be booked; refund it at the provider \
                 and record it with a journal entry",
                p.id.display(PREFIX),
                p.collected_minor(),
                p.collected_currency()
            ))));
        }
        let mut left = p.collected_minor().saturating_sub(p.refunded_minor());
        if with_job {
            // A top-up's payment is refundable up to its grant's unused credit.
            if let Some(credit) = top_up_refund::credit_of(tx, self.tenant, &p)? {
                left = left.min(credit.refundable_minor(&p));
            }
        }
        let amount = self.amount_minor.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Ok(Err(PayError::NotRefundable(format!(
                "the refund must be between 1 and the {left} still refundable (a top-up's \
                 payment: up to its grant's unused credit)"
            ))));
        }
        let refund = Refund {
            id: Id::generate_at(self.now_ms),
            amount_minor: amount,
            status: "pending".into(),
            psp_key: refund_key(self.tenant, p.id, p.refunds.len()),
            provider_id: None,
            entry: None,
            created_at_ms: self.now_ms,
            failure: None,
        };
        if with_job {
            let payload = format!(
                "{}:{}",
                p.id.display(PREFIX),
                refund.id.display(REFUND_PREFIX)
            );
            jobs::enqueue(tx, &Job::new(self.tenant, REFUND_JOB, payload, self.now_ms))?;
        }
        p.refunds.push(refund);
        p.updated_at_ms = self.now_ms;
        save(tx, &p)?;
        Ok(Ok(p))
    }
}

/// What the provider says about one refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The money went back.
    Succeeded {
        /// The provider's refund id.
        provider_id: String,
    },
    /// Accepted, still settling: the provider's id is kept, nothing is booked yet.
    Pending {
        /// The provider's refund id.
        provider_id: String,
    },
    /// Refused or canceled.
    Failed {
        /// The provider's refund id, if it made one.
        provider_id: Option<String>,
        /// Why.
        reason: String,
    },
}

/// Records a refund's outcome and, when it succeeded, its entry: revenue (or `suspense`, for
/// money that never paid an invoice) debited, the collected cash (PSP clearing) credited.
/// A refund recorded as failed may still succeed later (the provider has the last word); a
/// succeeded refund never changes again.
pub fn apply_refund(
    tx: &WriteTxn,
    tenant: TenantId,
    payment: Id,
    refund: Id,
    outcome: RefundOutcome,
    now_ms: i64,
    origin: &str,
) -> Result<(), StoreError> {
    let Some(mut p) = load(tx, tenant, payment)? else {
        return Ok(());
    };
    let Some(index) = p.refunds.iter().position(|r| r.id == refund) else {
        return Ok(());
    };
    if p.refunds[index].status == "succeeded" {
        return match outcome {
            RefundOutcome::Failed { reason, .. } => {
                reverse_refund(tx, tenant, &mut p, index, now_ms, origin, reason)
            }
            _ => Ok(()),
        };
    }
    match outcome {
        RefundOutcome::Succeeded { provider_id } => {
            let Some(entry) = post_refund(tx, tenant, &mut p, index, now_ms, origin, 1)? else {
                return Ok(());
            };
            let r = &mut p.refunds[index];
            r.status = "succeeded".into();
            r.provider_id = Some(provider_id);
            r.entry = Some(entry);
            r.failure = None;
            let effect = format!(
                "{}:refunded:{}",
                p.id.display(PREFIX),
                p.refunds[index].id.display(REFUND_PREFIX)
            );
            p.updated_at_ms = now_ms;
            crate::notifications::outbox::emit(
                tx,
                tenant,
                crate::notifications::outbox::Effect {
                    event_type: "payment.refunded",
                    effect,
                    customer: Some(p.customer),
                    kind: "payment",
                    id: p.id,
                    record: &p,
                },
                now_ms,
            )?;
        }
        RefundOutcome::Pending { provider_id } => {
            let r = &mut p.refunds[index];
            r.provider_id.get_or_insert(provider_id);
        }
        RefundOutcome::Failed {
            provider_id,
            reason,
        } => {
            let r = &mut p.refunds[index];
            if r.status != "pending" {
                return Ok(());
            }
            r.status = "failed".into();
            r.failure = Some(reason);
            if r.provider_id.is_none() {
                r.provider_id = provider_id;
            }
        }
    }
    p.updated_at_ms = now_ms;
    save(tx, &p)
}

/// Transition "refund failed after succeeding": the provider can still fail a refund it
/// reported succeeded (the bank returned it). The money is back at the provider, so the refund
/// entry is reversed and the refund reads `failed` with the reason.
fn reverse_refund(
    tx: &WriteTxn,
    tenant: TenantId,
    p: &mut Payment,
    index: usize,
    now_ms: i64,
    origin: &str,
    reason: String,
) -> Result<(), StoreError> {
    let entry = post_refund(tx, tenant, p, index, now_ms, origin, -1)?;
    let r = &mut p.refunds[index];
    r.status = "failed".into();
    r.failure = Some(format!("reversed after succeeding: {reason}"));
    r.entry = entry.or(r.entry);
    tracing::warn!(
        payment = %p.id.display(PREFIX),
        refund = %p.refunds[index].id.display(REFUND_PREFIX),
        "the provider failed a refund it had reported succeeded; its entry is reversed"
    );
    p.updated_at_ms = now_ms;
    save(tx, p)
}

/// Posts a refund's entry (`sign` 1) or its reversal (`sign` -1). `None` when the ledger
/// refuses it (an amount or currency it cannot hold): the refund's state is not changed then,
/// and the refusal is logged, never a batch-aborting storage error.
fn post_refund(
    tx: &WriteTxn,
    tenant: TenantId,
    p: &mut Payment,
    index: usize,
    now_ms: i64,
    origin: &str,
    sign: i64,
) -> Result<Option<Id>, StoreError> {
    let amount = p.refunds[index].amount_minor.saturating_mul(sign);
    let currency = p.collected_currency().to_string();
    let source = if p.status == PaymentStatus::Succeeded {
        SystemAccount::Revenue
    } else {
        SystemAccount::Suspense
    };
    let mut links = payment_links(p);
    let credit = top_up_refund::credit_of(tx, tenant, p)?;
    let postings = match (&credit, sign > 0) {
        (Some(credit), true) => {
            links.grant = credit.grant.as_ref().map(|g| g.id);
            let (legs, shortfall) = credit.legs(amount, &currency);
            if shortfall > 0 {
                let reason = top_up_refund::shortfall_reason(p, index, shortfall);
                tracing::warn!(payment = %p.id.display(PREFIX), reason = %reason, "refund held for review");
                p.held_reason = Some(reason);
            }
            legs
        }
        (Some(credit), false) => {
            links.grant = credit.grant.as_ref().map(|g| g.id);
            let original = p.refunds[index].entry;
            match original {
                Some(entry) => credit
                    .reversal_legs(tx, tenant, entry)?
                    .ok_or_else(|| StoreError::Corrupt("refund entry missing".into()))?,
                None => return Ok(None),
            }
        }
        (None, _) => refund_postings(tx, tenant, p, source, amount, &currency)?,
    };
    let entry_id = Id::generate_at(now_ms);
    let draft = Draft {
        id: entry_id,
        kind: if sign > 0 {
            "refund"
        } else {
            "refund_reversal"
        }
        .into(),
        reason: format!(
            "refund {} of payment {}",
            p.refunds[index].id.display(REFUND_PREFIX),
            p.id.display(PREFIX)
        ),
        links,
        origin: origin.to_string(),
        postings,
    };
    if let Err(e) = journal::post(tx, tenant, now_ms, draft)? {
        tracing::error!(payment = %p.id.display(PREFIX), error = %e, "refund entry refused");
        return Ok(None);
    }
    Ok(Some(entry_id))
}

/// A refund's legs: the provider's clearing gives the money back; revenue (or suspense) takes
/// it, less the invoice's tax share, which `tax_payable` takes back: amount × tax / total of
/// the invoice, rounded once, half away from zero.
fn refund_postings(
    tx: &WriteTxn,
    tenant: TenantId,
    p: &Payment,
    source: SystemAccount,
    amount: i64,
    currency: &str,
) -> Result<Vec<Posting>, StoreError> {
    let tax = if source == SystemAccount::Revenue {
        let invoice = {
            let invoices = tx.open_table(crate::store::tables::INVOICES)?;
            crate::store::get_record::<crate::billing::invoice::Invoice, _>(
                &invoices,
                crate::store::keys::tenant_id(tenant, p.invoice),
            )?
        };
        invoice.map_or(0, |i| tax_share(amount, i.tax_minor, i.total_minor))
    } else {
        0
    };
    let mut legs = vec![
        (source, amount.saturating_sub(tax)),
        (SystemAccount::TaxPayable, tax),
        (SystemAccount::PspClearing, -amount),
    ];
    legs.retain(|(_, a)| *a != 0);
    Ok(legs
        .into_iter()
        .map(|(account, amount_minor)| Posting {
            account: AccountRef::System(account),
            currency: currency.to_string(),
            amount_minor,
        })
        .collect())
}

/// The tax part of `amount` of an invoice with `tax_minor` in `total_minor`, rounded once,
/// half away from zero; 0 when the invoice has no positive total.
pub fn tax_share(amount: i64, tax_minor: i64, total_minor: i64) -> i64 {
    if total_minor <= 0 || tax_minor == 0 {
        return 0;
    }
    let share = i128::from(amount) * i128::from(tax_minor);
    let total = i128::from(total_minor);
    let rounded = (share.abs() * 2 + total) / (total * 2);
    let signed = if share < 0 { -rounded } else { rounded };
    i64::try_from(signed).unwrap_or(0)
}

/// One refund object as the provider describes it (a webhook's refund, or an item of a
/// charge's refund list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRefund {
    /// The provider's refund id.
    pub provider_id: String,
    /// Minor units.
    pub amount_minor: i64,
    /// `pending`, `succeeded`, `failed`, `canceled`, `requires_action`.
    pub status: String,
    /// The Tally refund it names in its metadata, if any.
    pub tally_refund: Option<Id>,
}

/// What matching a provider refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// A Tally refund moved (or was already where the provider says).
    Applied,
    /// The provider's refund disagrees with the Tally refund it names; nothing changed.
    Mismatch(String),
    /// A refund made at the provider directly could not be recorded.
    Refused(String),
}

/// Applies one provider refund to the payment's refunds: matched by the Tally id in its
/// metadata or by the provider's refund id, and booked only with the amount the Tally refund
/// asked for. A succeeded refund that names no Tally refund was made at the provider directly
/// and is recorded as one more (once: its provider id identifies it).
pub fn apply_provider_refund(
    tx: &WriteTxn,
    tenant: TenantId,
    payment: Id,
    refund: &ProviderRefund,
    now_ms: i64,
    origin: &str,
) -> Result<Matched, StoreError> {
    let Some(p) = load(tx, tenant, payment)? else {
        return Ok(Matched::Refused("unknown payment".into()));
    };
    let found = p.refunds.iter().find(|r| {
        Some(r.id) == refund.tally_refund
            || r.provider_id.as_deref() == Some(refund.provider_id.as_str())
    });
    let outcome = match refund.status.as_str() {
        "succeeded" => RefundOutcome::Succeeded {
            provider_id: refund.provider_id.clone(),
        },
        "failed" | "canceled" => RefundOutcome::Failed {
            provider_id: Some(refund.provider_id.clone()),
            reason: format!("the provider reports the refund {}", refund.status),
        },
        _ => RefundOutcome::Pending {
            provider_id: refund.provider_id.clone(),
        },
    };
    if let Some(r) = found {
        if r.amount_minor != refund.amount_minor {
            return Ok(Matched::Mismatch(format!(
                "refund {} is {} but the provider's {} is {}",
                r.id.display(REFUND_PREFIX),
                r.amount_minor,
                refund.provider_id,
                refund.amount_minor
            )));
        }
        apply_refund(tx, tenant, payment, r.id, outcome, now_ms, origin)?;
        return Ok(Matched::Applied);
    }
    if refund.status != "succeeded" {
        // Not ours and not settled: nothing to book until it succeeds.
        return Ok(Matched::Applied);
    }
    record_external(tx, tenant, payment, refund, now_ms, origin)
}

/// A refund made at the provider directly: recorded and booked in one step.
fn record_external(
    tx: &WriteTxn,
    tenant: TenantId,
    payment: Id,
    refund: &ProviderRefund,
    now_ms: i64,
    origin: &str,
) -> Result<Matched, StoreError> {
    let requested = RequestRefund {
        tenant,
        payment,
        amount_minor: Some(refund.amount_minor),
        now_ms,
    }
    .apply_without_job(tx)?;
    let mut p = match requested {
        Ok(p) => p,
        Err(e) => return Ok(Matched::Refused(e.to_string())),
    };
    let Some(r) = p.refunds.last_mut() else {
        return Ok(Matched::Refused("the refund was not recorded".into()));
    };
    r.provider_id = Some(refund.provider_id.clone());
    let id = r.id;
    save(tx, &p)?;
    apply_refund(
        tx,
        tenant,
        payment,
        id,
        RefundOutcome::Succeeded {
            provider_id: refund.provider_id.clone(),
        },
        now_ms,
        origin,
    )?;
    Ok(Matched::Applied)
}

/// Reads a `charge.refunded` total when the event carries no refund list. A total cannot say
/// which refund moved (it also counts refunds the provider is still settling), so nothing is
/// booked from it: the refunds' own events (`refund.created`, `refund.updated`,
/// `charge.refund.updated`) and the refund jobs settle them by id. The answer says whether the
/// total agrees with what Tally booked, for the log.
pub fn check_refunded_total(
    tx: &WriteTxn,
    tenant: TenantId,
    payment: Id,
    amount_refunded_minor: i64,
) -> Result<Matched, StoreError> {
    let Some(p) = load(tx, tenant, payment)? else {
        return Ok(Matched::Refused("unknown payment".into()));
    };
    let booked: i64 = p
        .refunds
        .iter()
        .filter(|r| r.status == "succeeded")
        .map(|r| r.amount_minor)
        .sum();
    Ok(if booked == amount_refunded_minor {
        Matched::Applied
    } else {
        Matched::Mismatch(format!(
            "the provider reports {amount_refunded_minor} refunded, Tally has booked {booked}; \
             the refunds' own events settle the difference"
        ))
    })
}

#[cfg(test)]
mod tax_share_tests {
    use super::tax_share;

    #[test]
    fn the_tax_share_of_a_refund_rounds_once_half_away_from_zero() {
        assert_eq!(tax_share(1190, 190, 1190), 190);
        assert_eq!(tax_share(500, 190, 1190), 80); // 79.83…
        assert_eq!(tax_share(-500, 190, 1190), -80);
        assert_eq!(tax_share(5, 1, 10), 1); // 0.5 → 1
        assert_eq!(tax_share(500, 0, 1190), 0);
        assert_eq!(tax_share(500, 190, 0), 0);
    }
}
