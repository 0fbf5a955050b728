//! Refunds of a top-up's payment: that money bought credit, so its refund takes the credit back.
//!
//! The rule: a refund of a top-up's payment closes up to its amount of the grant's unused remainder
//! (the grant's account is debited where another refund debits revenue: closing the credit to
//! `prepayments` and refunding from there, netted in one entry, so `prepayments` keeps holding only
//! the pending top-ups). Tally's own refunds ask for no more than that remainder, less the refunds
//! still pending, so the customer never keeps both the money and the credit. A refund made at the
//! provider directly cannot be refused: the part the grant no longer holds (credit already spent)
//! is debited to `suspense` and the payment's `held_reason` says so, for review; never to revenue.
//! A reversal (the provider failed a refund it had reported succeeded) negates the refund's entry:
//! the credit returns to the grant (to `prepayments`, owed to the customer, when the grant has
//! closed since) and `suspense` is cleared of the reviewed part.

use crate::store::WriteTxn;

use super::payment::{Payment, PaymentStatus, PREFIX, REFUND_PREFIX};
use crate::billing::invoice::InvoiceKind;
use crate::id::Id;
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::ledger::grant::{self, Grant, GrantStatus};
use crate::ledger::journal::{self, Posting};
use crate::store::keys::{self, TenantId};
use crate::store::{get_record, tables, StoreError};

/// The credit a collected top-up payment bought.
pub(super) struct Credit {
    /// The top-up's grant (`None` when the ledger refused it: the money is in `prepayments`).
    pub grant: Option<Grant>,
    /// What the grant still holds.
    pub remaining_minor: i64,
}

/// The credit `p` bought, when it is the succeeded payment of a top-up invoice.
pub(super) fn credit_of(
    tx: &WriteTxn,
    tenant: TenantId,
    p: &Payment,
) -> Result<Option<Credit>, StoreError> {
    if p.status != PaymentStatus::Succeeded {
        return Ok(None);
    }
    let invoice = super::payment::load_invoice(tx, tenant, p.invoice)?;
    if !invoice.is_some_and(|i| i.kind == InvoiceKind::TopUp) {
        return Ok(None);
    }
    let Some(top_up) = crate::wallet::record::of_invoice(tx, tenant, p.invoice)? else {
        return Ok(None);
    };
    let grant = match top_up.grant {
        Some(id) => {
            get_record::<Grant, _>(&tx.open_table(tables::GRANTS)?, keys::tenant_id(tenant, id))?
        }
        None => None,
    };
    let remaining_minor = match &grant {
        Some(g) if g.status == GrantStatus::Active => {
            grant::remaining(&tx.open_table(tables::BALANCES)?, tenant, g)?.max(0)
        }
        _ => 0,
    };
    Ok(Some(Credit {
        grant,
        remaining_minor,
    }))
}

impl Credit {
    /// What Tally may still refund of the payment: the grant's unused remainder less the
    /// refunds not settled yet (each will close its amount of it).
    pub fn refundable_minor(&self, p: &Payment) -> i64 {
        if self.grant.is_none() {
            return i64::MAX;
        }
        let pending: i64 = p
            .refunds
            .iter()
            .filter(|r| r.status == "pending")
            .map(|r| r.amount_minor)
            .fold(0, i64::saturating_add);
        self.remaining_minor.saturating_sub(pending).max(0)
    }

    /// The legs of a refund of `amount` and the part the grant could not cover.
    pub fn legs(&self, amount: i64, currency: &str) -> (Vec<Posting>, i64) {
        let (sources, shortfall) = match &self.grant {
            Some(g) => {
                let taken = amount.min(self.remaining_minor);
                let shortfall = amount.saturating_sub(taken);
                (
                    vec![
                        (g.account(), taken),
                        (AccountRef::System(SystemAccount::Suspense), shortfall),
                    ],
                    shortfall,
                )
            }
            None => (
                vec![(AccountRef::System(SystemAccount::Prepayments), amount)],
                0,
            ),
        };
        let mut legs: Vec<(AccountRef, i64)> = sources;
        legs.push((AccountRef::System(SystemAccount::PspClearing), -amount));
        legs.retain(|(_, a)| *a != 0);
        let postings = legs
            .into_iter()
            .map(|(account, amount_minor)| Posting {
                account,
                currency: currency.to_string(),
                amount_minor,
            })
            .collect();
        (postings, shortfall)
    }

    /// The legs of a reversal: the refund entry `entry` negated, a closed grant's part to
    /// `prepayments`. `None` when the entry is missing.
    pub fn reversal_legs(
        &self,
        tx: &WriteTxn,
        tenant: TenantId,
        entry: Id,
    ) -> Result<Option<Vec<Posting>>, StoreError> {
        let Some(original) = journal::get_in_write(tx, tenant, entry)? else {
            return Ok(None);
        };
        let active = self
            .grant
            .as_ref()
            .is_some_and(|g| g.status == GrantStatus::Active);
        Ok(Some(
            original
                .postings
                .into_iter()
                .map(|p| Posting {
                    account: match p.account {
                        AccountRef::Grant { .. } if !active => {
                            AccountRef::System(SystemAccount::Prepayments)
                        }
                        other => other,
                    },
                    currency: p.currency,
                    amount_minor: -p.amount_minor,
                })
                .collect(),
        ))
    }
}

/// Why a refund's shortfall went to `suspense`, kept on the payment for review.
pub(super) fn shortfall_reason(p: &Payment, index: usize, shortfall: i64) -> String {
    let r = &p.refunds[index];
    format!(
        "refund_exceeds_credit: refund {} of {} {} of top-up payment {}: its grant no longer held {shortfall}, debited to suspense for review",
        r.id.display(REFUND_PREFIX),
        r.amount_minor,
        p.collected_currency(),
        p.id.display(PREFIX)
    )
}
