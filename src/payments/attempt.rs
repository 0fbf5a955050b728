//! Attempts: opening one, the last check before the provider is called, superseding an attempt
//! that waits for the customer, and canceling one that was never sent.
//!
//! The rule these transitions keep: an invoice has at most one attempt that the provider may
//! still complete. A new attempt is refused while one is pending, processing or unknown; an
//! attempt waiting for customer action (`requires_action`) is superseded instead, and the new
//! attempt's job cancels it at the provider before charging (see `worker.rs`).

use crate::store::WriteTxn;

use super::payment::{
    attempts_of, by_invoice_key, load, load_invoice, psp_key, save, PayError, Payment,
    PaymentStatus, RecoveryPoint, CANCEL_JOB, EXECUTE_JOB, PREFIX,
};
use crate::billing::invoice::{Invoice, InvoiceStatus};
use crate::id::Id;
use crate::jobs::{self, Job};
use crate::store::keys::TenantId;
use crate::store::writer::Command;
use crate::store::{tables, StoreError};

/// Every attempt of an invoice, inside a write transaction.
pub fn attempts(tx: &WriteTxn, tenant: TenantId, invoice: Id) -> Result<Vec<Payment>, StoreError> {
    let index = tx.open_table(tables::PAYMENTS_BY_INVOICE)?;
    let payments = tx.open_table(tables::PAYMENTS)?;
    attempts_of(&index, &payments, tenant, invoice)
}

/// Creates the next attempt for an invoice and its job, inside the caller's transaction
/// (automatic collection and dunning).
pub fn create_attempt(
    tx: &WriteTxn,
    tenant: TenantId,
    invoice: &Invoice,
    psp: &str,
    payment_method: Option<String>,
    run_at_ms: i64,
    now_ms: i64,
) -> Result<Payment, StoreError> {
    open_attempt(
        tx,
        tenant,
        invoice,
        NewAttempt {
            psp,
            payment_method,
            supersedes: None,
            run_at_ms,
        },
        now_ms,
    )
}

/// What a new attempt is made of besides its invoice.
struct NewAttempt<'a> {
    psp: &'a str,
    payment_method: Option<String>,
    supersedes: Option<Id>,
    run_at_ms: i64,
}

/// Transition "attempt opened": the attempt and the job that will charge it, in one write.
fn open_attempt(
    tx: &WriteTxn,
    tenant: TenantId,
    invoice: &Invoice,
    new: NewAttempt<'_>,
    now_ms: i64,
) -> Result<Payment, StoreError> {
    let existing = attempts(tx, tenant, invoice.id)?;
    debug_assert!(
        existing
            .iter()
            .filter(|p| p.status.is_open())
            .all(|p| Some(p.id) == new.supersedes),
        "an invoice never has two open attempts"
    );
    let attempt = u32::try_from(existing.len())
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| StoreError::Corrupt("too many attempts for one invoice".into()))?;
    let payment = Payment {
        id: Id::generate_at(now_ms),
        tenant: tenant.0,
        invoice: invoice.id,
        customer: invoice.customer,
        attempt,
        amount_minor: invoice.amount_due_minor,
        currency: invoice.currency.clone(),
        status: PaymentStatus::Pending,
        recovery_point: RecoveryPoint::IntentRecorded,
        psp: new.psp.to_string(),
        psp_key: psp_key(tenant, invoice.id, attempt),
        provider_id: None,
        payment_method: new.payment_method,
        failure: None,
        entry: None,
        refunds: Vec::new(),
        scheduled_at_ms: new.run_at_ms,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        supersedes: new.supersedes,
        received_minor: None,
        received_currency: None,
        held_reason: None,
    };
    save(tx, &payment)?;
    tx.open_table(tables::PAYMENTS_BY_INVOICE)?.insert(
        by_invoice_key(tenant, invoice.id, attempt).as_slice(),
        payment.id.to_bytes().as_slice(),
    )?;
    let mut job = Job::new(tenant, EXECUTE_JOB, payment.id.display(PREFIX), now_ms);
    job.due_at_ms = new.run_at_ms;
    jobs::enqueue(tx, &job)?;
    Ok(payment)
}

/// `POST /v1/invoices/{id}/pay`: records an attempt and its job, unless one is under way. An
/// attempt waiting for customer action is superseded by the new one rather than left open
/// beside it.
#[derive(Clone)]
pub struct Pay {
    /// Whose.
    pub tenant: TenantId,
    /// Which invoice.
    pub invoice: Id,
    /// Payment method to charge.
    pub payment_method: Option<String>,
    /// The provider's name.
    pub psp: String,
    /// Now.
    pub now_ms: i64,
}

impl Command for Pay {
    type Output = Result<Payment, PayError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(invoice) = load_invoice(tx, self.tenant, self.invoice)? else {
            return Ok(Err(PayError::UnknownInvoice(
                self.invoice.display(crate::billing::invoice::PREFIX),
            )));
        };
        if invoice.status != InvoiceStatus::Finalized || invoice.amount_due_minor <= 0 {
            return Ok(Err(PayError::NotPayable {
                id: invoice.id.display(crate::billing::invoice::PREFIX),
                status: invoice.status.as_str(),
            }));
        }
        let open: Vec<Payment> = attempts(tx, self.tenant, invoice.id)?
            .into_iter()
            .filter(|p| p.status.is_open())
            .collect();
        if let Some(busy) = open
            .iter()
            .find(|p| p.status != PaymentStatus::RequiresAction)
        {
            return Ok(Err(PayError::InProgress(busy.id.display(PREFIX))));
        }
        let supersedes = open.last().map(|p| p.id);
        Ok(Ok(open_attempt(
            tx,
            self.tenant,
            &invoice,
            NewAttempt {
                psp: &self.psp,
                payment_method: self.payment_method,
                supersedes,
                run_at_ms: self.now_ms,
            },
            self.now_ms,
        )?))
    }
}

/// Whether the job may call the provider for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallDecision {
    /// Call (or call again, with the same key, after a crash or a lost reply).
    Call(Box<Payment>),
    /// The attempt it supersedes is still open at the provider: cancel that one first.
    CancelFirst {
        /// The attempt to charge afterwards.
        payment: Box<Payment>,
        /// The attempt to cancel.
        superseded: Box<Payment>,
    },
    /// Do not call: the attempt was canceled or settled, or its invoice no longer needs it
    /// (the attempt is canceled in the same write when it was never sent).
    Skip,
}

/// The last write before the provider is called: the recovery point moves to
/// `provider_called` only while the invoice still needs collecting and nothing else can
/// collect it. A void that commits first cancels the attempt and wins; a void that comes after
/// finds the attempt processing and is refused.
#[derive(Clone)]
pub struct MarkProviderCalled {
    /// Whose.
    pub tenant: TenantId,
    /// Which.
    pub id: Id,
    /// Now.
    pub now_ms: i64,
}

impl Command for MarkProviderCalled {
    type Output = CallDecision;

    fn apply(self, tx: &WriteTxn) -> Result<CallDecision, StoreError> {
        let Some(mut p) = load(tx, self.tenant, self.id)? else {
            return Ok(CallDecision::Skip);
        };
        if p.recovery_point != RecoveryPoint::IntentRecorded {
            // Already called once: only an unanswered call is repeated (same key).
            return Ok(
                if p.status.is_open() && p.status != PaymentStatus::RequiresAction {
                    CallDecision::Call(Box::new(p))
                } else {
                    CallDecision::Skip
                },
            );
        }
        if p.status != PaymentStatus::Pending {
            return Ok(CallDecision::Skip);
        }
        let invoice_open = load_invoice(tx, self.tenant, p.invoice)?
            .is_some_and(|i| i.status == InvoiceStatus::Finalized);
        if !invoice_open {
            cancel(tx, self.tenant, p.id, self.now_ms)?;
            return Ok(CallDecision::Skip);
        }
        if let Some(old) = p.supersedes {
            if let Some(superseded) = load(tx, self.tenant, old)?.filter(|o| o.status.is_open()) {
                return Ok(CallDecision::CancelFirst {
                    payment: Box::new(p),
                    superseded: Box::new(superseded),
                });
            }
        }
        // The method is fixed with the recovery point: every call under this attempt's key
        // sends the same request, whatever the customer's metadata says later.
        if p.payment_method.is_none() {
            p.payment_method = crate::customers::load_in_write(tx, self.tenant, p.customer)?
                .and_then(|c| c.metadata.get("psp_payment_method").cloned());
        }
        p.recovery_point = RecoveryPoint::ProviderCalled;
        p.status = PaymentStatus::Processing;
        p.updated_at_ms = self.now_ms;
        save(tx, &p)?;
        Ok(CallDecision::Call(Box::new(p)))
    }
}

/// Transition "attempt canceled": an attempt that was never sent is not needed any more.
pub fn cancel(tx: &WriteTxn, tenant: TenantId, id: Id, now_ms: i64) -> Result<(), StoreError> {
    if let Some(mut p) = load(tx, tenant, id)? {
        if p.status == PaymentStatus::Pending {
            debug_assert_eq!(p.recovery_point, RecoveryPoint::IntentRecorded);
            p.status = PaymentStatus::Canceled;
            p.updated_at_ms = now_ms;
            save(tx, &p)?;
        }
    }
    Ok(())
}

/// Transition "attempt superseded" (or canceled on request, `by` = `None`): the provider
/// confirmed that the intent waiting for the customer is canceled, so the attempt that replaces
/// it may be charged. A success the provider reports for it later is never booked as a second
/// payment (see `outcome.rs`).
pub fn supersede(
    tx: &WriteTxn,
    tenant: TenantId,
    old: Id,
    by: Option<Id>,
    now_ms: i64,
) -> Result<(), StoreError> {
    if let Some(mut p) = load(tx, tenant, old)? {
        if p.status.is_open() {
            p.status = PaymentStatus::Canceled;
            p.failure = Some(match by {
                Some(by) => (
                    "superseded".into(),
                    format!("replaced by payment {}", by.display(PREFIX)),
                ),
                None => (
                    "canceled".into(),
                    "canceled at the provider on request".into(),
                ),
            });
            p.updated_at_ms = now_ms;
            save(tx, &p)?;
        }
    }
    Ok(())
}

/// `POST /v1/payments/{id}/cancel`: an attempt that was never sent is canceled at once; one
/// that waits for the customer is canceled at the provider by a job (its outcome is recorded
/// like a superseded attempt's). An attempt that is settling or settled cannot be canceled.
#[derive(Clone)]
pub struct RequestCancel {
    /// Whose.
    pub tenant: TenantId,
    /// Which payment.
    pub payment: Id,
    /// Now.
    pub now_ms: i64,
}

impl Command for RequestCancel {
    type Output = Result<Payment, PayError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(p) = load(tx, self.tenant, self.payment)? else {
            return Ok(Err(PayError::UnknownPayment(self.payment.display(PREFIX))));
        };
        match p.status {
            PaymentStatus::Pending => {
                cancel(tx, self.tenant, p.id, self.now_ms)?;
            }
            PaymentStatus::RequiresAction => {
                let job = Job::new(self.tenant, CANCEL_JOB, p.id.display(PREFIX), self.now_ms);
                jobs::enqueue(tx, &job)?;
            }
            other => {
                return Ok(Err(PayError::NotCancelable(format!(
                    "payment {} is {}; only pending attempts and attempts waiting for the \
                     customer can be canceled",
                    p.id.display(PREFIX),
                    other.as_str()
                ))))
            }
        }
        Ok(load(tx, self.tenant, self.payment)?
            .ok_or_else(|| PayError::UnknownPayment(self.payment.display(PREFIX))))
    }
}

/// Transition "unexpected collection recorded": the provider reports an intent that names an
/// attempt but is not the one the attempt charged (made outside Tally, or a second intent). It
/// gets an attempt record of its own, with no job: what it collected is then booked like any
/// success (applied to the invoice if it matches and the invoice still needs it, held in
/// `suspense` otherwise), never folded into the attempt it names.
pub fn record_unexpected(
    tx: &WriteTxn,
    tenant: TenantId,
    named: &Payment,
    provider_id: &str,
    now_ms: i64,
) -> Result<Payment, StoreError> {
    if let Some(existing) = super::payment::by_provider_id(tx, tenant, provider_id)? {
        if let Some(p) = load(tx, tenant, existing)? {
            return Ok(p);
        }
    }
    let existing = attempts(tx, tenant, named.invoice)?;
    let attempt = u32::try_from(existing.len())
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| StoreError::Corrupt("too many attempts for one invoice".into()))?;
    let mut key = blake3::Hasher::new_derive_key("tally 2026-12 unexpected intent v1");
    key.update(&tenant.to_bytes());
    key.update(provider_id.as_bytes());
    let payment = Payment {
        id: Id::generate_at(now_ms),
        attempt,
        status: PaymentStatus::Processing,
        recovery_point: RecoveryPoint::ProviderCalled,
        psp_key: key.finalize().to_hex()[..48].to_string(),
        provider_id: Some(provider_id.to_string()),
        payment_method: None,
        failure: None,
        entry: None,
        refunds: Vec::new(),
        scheduled_at_ms: now_ms,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        supersedes: None,
        received_minor: None,
        received_currency: None,
        held_reason: None,
        ..named.clone()
    };
    save(tx, &payment)?;
    tx.open_table(tables::PAYMENTS_BY_INVOICE)?.insert(
        by_invoice_key(tenant, named.invoice, attempt).as_slice(),
        payment.id.to_bytes().as_slice(),
    )?;
    Ok(payment)
}
