//! What a top-up's payment outcome does, called by `payments` in the write that records it:
//! a success issues the grant (once: the top-up's `grant` field is the key), a decline or a
//! void fails the top-up with no grant.
//!
//! A declined top-up is not dunned: the same write voids its invoice (the `prepayments` credit
//! is reversed, nothing was supplied, so nothing is written off as bad debt) and records
//! `top_up.failed`. A success the provider reports later for that attempt finds the invoice
//! void and is refunded automatically, like any payment of a voided invoice.

use crate::store::WriteTxn;

use super::record::{self, TopUp, TopUpStatus, PREFIX};
use crate::billing::invoice::{self, Invoice, InvoiceKind};
use crate::id::Id;
use crate::ledger::grant::{self, Funding, Grant, GrantStatus};
use crate::store::keys::TenantId;
use crate::store::StoreError;

/// The expiry of a top-up's grant issued at `now_ms`: the top-up's `expires_at`, or, when its
/// payment settled late, the same lifetime from the grant (`now_ms` + `expires_at` − created):
/// paid credit is never granted already expired or with less time than was bought.
pub fn grant_expiry(top_up: &TopUp, now_ms: i64) -> Option<i64> {
    top_up.expires_at_ms.map(|expires| {
        let lifetime_ms = expires.saturating_sub(top_up.created_at_ms);
        expires.max(now_ms.saturating_add(lifetime_ms))
    })
}

/// The grant a top-up issues, funded by `funding` (`prepayments` for a paid top-up).
pub fn grant_of(top_up: &TopUp, funding: Funding, now_ms: i64) -> Grant {
    Grant {
        id: Id::generate_at(now_ms),
        customer: top_up.customer,
        currency: top_up.currency.clone(),
        amount_minor: top_up.amount_minor,
        category: top_up.category,
        funding,
        priority: 0,
        effective_at_ms: now_ms,
        expires_at_ms: grant_expiry(top_up, now_ms),
        created_at_ms: now_ms,
        status: GrantStatus::Active,
        closed_at_ms: None,
        issue_entry: Id::generate_at(now_ms),
        close_entry: None,
    }
}

/// Issues a top-up's grant and marks it succeeded (`top_up.succeeded`), unless it has one.
/// Returns whether the grant was issued.
pub fn grant(
    tx: &WriteTxn,
    tenant: TenantId,
    top_up: &mut TopUp,
    funding: Funding,
    now_ms: i64,
    origin: &str,
) -> Result<Result<(), grant::GrantError>, StoreError> {
    if top_up.grant.is_some() {
        return Ok(Ok(()));
    }
    let g = grant_of(top_up, funding, now_ms);
    let reason = format!(
        "{} credit of top-up {}",
        top_up.category.as_str(),
        top_up.id.display(PREFIX)
    );
    let issued = match grant::issue(tx, tenant, g, reason, origin.to_string())? {
        Ok(g) => g,
        Err(e) => return Ok(Err(e)),
    };
    top_up.grant = Some(issued.id);
    top_up.status = TopUpStatus::Succeeded;
    top_up.failure = None;
    top_up.settled_at_ms = Some(now_ms);
    record::save(tx, tenant, top_up)?;
    record::emit(tx, tenant, top_up, "top_up.succeeded", now_ms)?;
    Ok(Ok(()))
}

/// Step "invoice paid" of a top-up invoice: the grant, funded by the payment (the receivable
/// it settled was credited to `prepayments`, which the grant now debits).
pub fn paid(
    tx: &WriteTxn,
    tenant: TenantId,
    inv: &Invoice,
    payment: Id,
    now_ms: i64,
    origin: &str,
) -> Result<(), StoreError> {
    if inv.kind != InvoiceKind::TopUp {
        return Ok(());
    }
    let Some(mut top_up) = record::of_invoice(tx, tenant, inv.id)? else {
        return Ok(());
    };
    top_up.payment = Some(payment);
    if let Err(e) = grant(tx, tenant, &mut top_up, Funding::Prepayment, now_ms, origin)? {
        // Cannot refuse the payment it follows: the amount stays in `prepayments`.
        tracing::error!(top_up = %top_up.id.display(PREFIX), error = %e, "top-up grant refused");
    }
    Ok(())
}

/// Step "invoice voided" of a top-up invoice: a pending top-up fails with `reason`.
pub fn voided(
    tx: &WriteTxn,
    tenant: TenantId,
    inv: &Invoice,
    reason: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    if inv.kind != InvoiceKind::TopUp {
        return Ok(());
    }
    let Some(mut top_up) = record::of_invoice(tx, tenant, inv.id)? else {
        return Ok(());
    };
    if top_up.status != TopUpStatus::Pending {
        return Ok(());
    }
    top_up.status = TopUpStatus::Failed;
    top_up.failure = Some(reason.to_string());
    top_up.settled_at_ms = Some(now_ms);
    record::save(tx, tenant, &top_up)?;
    record::emit(tx, tenant, &top_up, "top_up.failed", now_ms)
}

/// Transition "declined" of a top-up invoice (instead of dunning): the invoice is voided and
/// the top-up fails, in the write that recorded the decline. Returns the voided invoice, or
/// `None` when the void was refused (logged; the invoice stays open).
pub fn declined(
    tx: &WriteTxn,
    tenant: TenantId,
    inv: &Invoice,
    reason: &str,
    now_ms: i64,
    origin: &str,
) -> Result<Option<Invoice>, StoreError> {
    match invoice::void(tx, tenant, inv.id, now_ms, origin)? {
        Ok(voided) => {
            self::voided(tx, tenant, &voided, reason, now_ms)?;
            Ok(Some(voided))
        }
        Err(e) => {
            tracing::warn!(invoice = %inv.id.display(invoice::PREFIX), error = %e, "declined top-up invoice not voided");
            Ok(None)
        }
    }
}
