//! Voiding an invoice where collection meets it.
//!
//! The rule: an invoice whose attempt has reached the provider (processing, unknown, or waiting
//! for the customer) cannot be voided: the provider may still collect it, and a voided invoice
//! must never be paid. The void is refused with `payment_in_progress` until that attempt
//! settles (its job, a webhook or a reconciliation records the outcome) or is canceled. An
//! attempt that was never sent is canceled in the void's own write, so the job that would have
//! sent it finds it canceled and calls nobody. Should the provider report a success for a
//! voided invoice all the same, the money is held as `unapplied` and refunded (`outcome.rs`).

use crate::store::WriteTxn;

use super::attempt;
use super::payment::{PaymentStatus, PREFIX};
use crate::billing::invoice::{self, Invoice, InvoiceError};
use crate::id::Id;
use crate::store::keys::TenantId;
use crate::store::writer::Command;
use crate::store::StoreError;

/// `POST /v1/invoices/{id}/void`: voids a finalized invoice (see [`invoice::void`]) unless a
/// payment attempt is at the provider.
#[derive(Clone)]
pub struct VoidInvoice {
    /// Owner.
    pub tenant: TenantId,
    /// Which invoice.
    pub id: Id,
    /// Now.
    pub now_ms: i64,
    /// The intent.
    pub origin: String,
}

impl Command for VoidInvoice {
    type Output = Result<Invoice, InvoiceError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let attempts = attempt::attempts(tx, self.tenant, self.id)?;
        if let Some(busy) = attempts.iter().find(|p| p.status.is_at_provider()) {
            return Ok(Err(InvoiceError::PaymentInProgress {
                id: self.id.display(invoice::PREFIX),
                payment: busy.id.display(PREFIX),
                status: busy.status.as_str(),
            }));
        }
        let voided = invoice::void(tx, self.tenant, self.id, self.now_ms, &self.origin)?;
        if let Ok(inv) = &voided {
            crate::wallet::settle::voided(tx, self.tenant, inv, "invoice voided", self.now_ms)?;
        }
        if voided.is_ok() {
            for p in attempts
                .iter()
                .filter(|p| p.status == PaymentStatus::Pending)
            {
                attempt::cancel(tx, self.tenant, p.id, self.now_ms)?;
            }
        }
        Ok(voided)
    }
}
