//! Payment attempts and refunds: their records, their state machine, and what each outcome
//! posts to the ledger.
//!
//! An attempt is recorded with its job in one write (`intent_recorded`); the worker marks it
//! `provider_called` before calling the provider with the attempt's deterministic key, and
//! records the answer (`outcome_recorded`) with its ledger entry in one more write. A crash
//! anywhere resumes from the last recovery point: the provider is called again with the same
//! key and answers with the same result, so there is one charge and one ledger entry.
//!
//! The same [`apply_outcome`] serves the synchronous path, provider webhooks and
//! reconciliation, so whichever arrives first wins and the others change nothing. States never
//! move backwards: a succeeded payment stays succeeded.
//!
//! This file holds the records and their storage; each state transition lives beside its
//! noun: opening, superseding and canceling attempts in `attempt.rs`, provider outcomes in
//! `outcome.rs`, refunds in `refund.rs`, voiding an invoice that has attempts in `void.rs`.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::billing::invoice::Invoice;
use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::{get_record, put_record, tables, StoreError};

pub use super::attempt::{cancel, create_attempt, MarkProviderCalled, Pay, RequestCancel};
pub use super::outcome::{apply_outcome, Dunning, Outcome, Received};
pub use super::refund::{apply_refund, RequestRefund};

/// The public id prefix of payments.
pub const PREFIX: &str = "pay";
/// The public id prefix of refunds.
pub const REFUND_PREFIX: &str = "re";
/// Job kind that charges an attempt.
pub const EXECUTE_JOB: &str = "payment.execute";
/// Job kind that performs a refund.
pub const REFUND_JOB: &str = "refund.execute";
/// Job kind that cancels an attempt waiting for customer action at the provider.
pub const CANCEL_JOB: &str = "payment.cancel";

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// Recorded, not yet sent.
    Pending,
    /// Sent; the provider is settling it.
    Processing,
    /// Collected.
    Succeeded,
    /// Declined or refused.
    Failed,
    /// The customer must act.
    RequiresAction,
    /// The provider did not answer; retried with the same key.
    Unknown,
    /// Not sent because the invoice no longer needed it, or canceled at the provider because
    /// a newer attempt superseded it.
    Canceled,
    /// The provider reported collecting an amount or currency other than the attempt's: the
    /// invoice is not paid, what was received sits in `suspense` for an operator. (New
    /// variants go last so stored records still decode.)
    NeedsReview,
    /// Collected, but no invoice could take it (the invoice was voided or already paid, or the
    /// attempt had been superseded): the money sits in `suspense` and is refunded
    /// automatically.
    Unapplied,
}

impl PaymentStatus {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Processing => "processing",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::RequiresAction => "requires_action",
            PaymentStatus::Unknown => "unknown",
            PaymentStatus::Canceled => "canceled",
            PaymentStatus::NeedsReview => "needs_review",
            PaymentStatus::Unapplied => "unapplied",
        }
    }

    /// Whether the provider may still change it.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            PaymentStatus::Pending
                | PaymentStatus::Processing
                | PaymentStatus::Unknown
                | PaymentStatus::RequiresAction
        )
    }

    /// Whether the provider holds money for it (so a refund is possible).
    pub fn is_collected(self) -> bool {
        matches!(
            self,
            PaymentStatus::Succeeded | PaymentStatus::NeedsReview | PaymentStatus::Unapplied
        )
    }

    /// Whether an attempt in this state has reached the provider and may still move money:
    /// an invoice with such an attempt cannot be voided.
    pub fn is_at_provider(self) -> bool {
        matches!(
            self,
            PaymentStatus::Processing | PaymentStatus::Unknown | PaymentStatus::RequiresAction
        )
    }
}

/// The last step an attempt durably completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecoveryPoint {
    /// The attempt and its job are recorded.
    IntentRecorded,
    /// The provider has been (or is being) called with the attempt's key.
    ProviderCalled,
    /// The provider's answer is recorded.
    OutcomeRecorded,
}

impl RecoveryPoint {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryPoint::IntentRecorded => "intent_recorded",
            RecoveryPoint::ProviderCalled => "provider_called",
            RecoveryPoint::OutcomeRecorded => "outcome_recorded",
        }
    }
}

/// A refund of (part of) a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// `re_…`.
    pub id: Id,
    /// Minor units.
    pub amount_minor: i64,
    /// pending, succeeded or failed.
    pub status: String,
    /// Idempotency key sent to the provider.
    pub psp_key: String,
    /// The provider's refund id.
    pub provider_id: Option<String>,
    /// The ledger entry of a succeeded refund.
    pub entry: Option<Id>,
    /// Created.
    pub created_at_ms: i64,
    /// Why it failed.
    pub failure: Option<String>,
}

/// A payment attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// `pay_…`.
    pub id: Id,
    /// Whose.
    pub tenant: u64,
    /// The invoice collected.
    pub invoice: Id,
    /// The customer charged.
    pub customer: Id,
    /// 1 for the first attempt, then one more per dunning retry.
    pub attempt: u32,
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// State.
    pub status: PaymentStatus,
    /// Recovery point.
    pub recovery_point: RecoveryPoint,
    /// The provider's name.
    pub psp: String,
    /// blake3(tenant, invoice, attempt): the provider idempotency key of every call.
    pub psp_key: String,
    /// The provider's id.
    pub provider_id: Option<String>,
    /// Payment method to charge.
    pub payment_method: Option<String>,
    /// Decline or error code and message.
    pub failure: Option<(String, String)>,
    /// The ledger entry of the collection.
    pub entry: Option<Id>,
    /// Refunds.
    pub refunds: Vec<Refund>,
    /// When the attempt runs (dunning attempts are scheduled).
    pub scheduled_at_ms: i64,
    /// Created.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
    /// The `requires_action` attempt this one replaces: it is canceled at the provider before
    /// this one is charged, so one invoice never has two chargeable intents.
    pub supersedes: Option<Id>,
    /// What the provider reported collecting (minor units), once it did.
    pub received_minor: Option<i64>,
    /// The currency of `received_minor`.
    pub received_currency: Option<String>,
    /// Why collected money was held in `suspense` instead of paying the invoice.
    pub held_reason: Option<String>,
}

impl Payment {
    /// Refunded so far (succeeded or pending refunds).
    pub fn refunded_minor(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.status != "failed")
            .map(|r| r.amount_minor)
            .sum()
    }

    /// What the provider holds for this payment: the amount it reported receiving, else the
    /// amount asked for.
    pub fn collected_minor(&self) -> i64 {
        self.received_minor.unwrap_or(self.amount_minor)
    }

    /// The currency of [`Payment::collected_minor`].
    pub fn collected_currency(&self) -> &str {
        self.received_currency.as_deref().unwrap_or(&self.currency)
    }
}

/// The deterministic provider key of an attempt.
pub fn psp_key(tenant: TenantId, invoice: Id, attempt: u32) -> String {
    let mut h = blake3::Hasher::new_derive_key("tally 2026-11 payment attempt key v1");
    h.update(&tenant.to_bytes());
    h.update(&invoice.to_bytes());
    h.update(&attempt.to_be_bytes());
    h.finalize().to_hex()[..48].to_string()
}

/// The deterministic provider key of a refund.
pub fn refund_key(tenant: TenantId, payment: Id, index: usize) -> String {
    let mut h = blake3::Hasher::new_derive_key("tally 2026-11 refund key v1");
    h.update(&tenant.to_bytes());
    h.update(&payment.to_bytes());
    h.update(&(index as u64).to_be_bytes());
    h.finalize().to_hex()[..48].to_string()
}

pub(super) fn by_invoice_key(tenant: TenantId, invoice: Id, attempt: u32) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, invoice).to_vec();
    key.extend_from_slice(&attempt.to_be_bytes());
    key
}

/// Loads a payment inside a write transaction.
pub fn load(tx: &WriteTxn, tenant: TenantId, id: Id) -> Result<Option<Payment>, StoreError> {
    let table = tx.open_table(tables::PAYMENTS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// Saves a payment inside a write transaction.
pub fn save(tx: &WriteTxn, payment: &Payment) -> Result<(), StoreError> {
    put_record(
        &mut tx.open_table(tables::PAYMENTS)?,
        &keys::tenant_id(TenantId(payment.tenant), payment.id),
        payment,
    )?;
    if let Some(pid) = &payment.provider_id {
        let key = keys::tenant_bytes(TenantId(payment.tenant), pid.as_bytes());
        tx.open_table(tables::PAYMENT_BY_PROVIDER)?
            .insert(key.as_slice(), payment.id.to_bytes().as_slice())?;
    }
    Ok(())
}

pub(super) fn load_invoice(
    tx: &WriteTxn,
    tenant: TenantId,
    id: Id,
) -> Result<Option<Invoice>, StoreError> {
    let table = tx.open_table(tables::INVOICES)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

pub(super) fn save_invoice(
    tx: &WriteTxn,
    tenant: TenantId,
    invoice: &Invoice,
) -> Result<(), StoreError> {
    put_record(
        &mut tx.open_table(tables::INVOICES)?,
        &keys::tenant_id(tenant, invoice.id),
        invoice,
    )
}

/// Every attempt of an invoice, in attempt order.
pub fn attempts_of(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    payments: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    invoice: Id,
) -> Result<Vec<Payment>, StoreError> {
    let lo = by_invoice_key(tenant, invoice, 0);
    let hi = by_invoice_key(tenant, invoice, u32::MAX);
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (_, v) = entry?;
        let id = <[u8; 16]>::try_from(v.value())
            .map(Id::from_bytes)
            .map_err(|_| StoreError::Corrupt("malformed payment index".into()))?;
        if let Some(p) = get_record::<Payment, _>(payments, keys::tenant_id(tenant, id))? {
            out.push(p);
        }
    }
    Ok(out)
}

/// Why a payment request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayError {
    /// No such invoice.
    #[error("no invoice {0}")]
    UnknownInvoice(String),
    /// The invoice is not collectible.
    #[error("invoice {id} is {status}; only finalized invoices with an amount due can be paid")]
    NotPayable {
        /// The invoice.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// An attempt is already under way.
    #[error("payment {0} for this invoice is already in progress")]
    InProgress(String),
    /// No such payment.
    #[error("no payment {0}")]
    UnknownPayment(String),
    /// The payment cannot be canceled in its state.
    #[error("{0}")]
    NotCancelable(String),
    /// The payment cannot be refunded (not succeeded, or the amount exceeds what remains).
    #[error("{0}")]
    NotRefundable(String),
}

/// One payment.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Payment>, StoreError> {
    let table = tx.open_table(tables::PAYMENTS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// The payment a provider id belongs to.
pub fn by_provider_id(
    tx: &WriteTxn,
    tenant: TenantId,
    provider_id: &str,
) -> Result<Option<Id>, StoreError> {
    let table = tx.open_table(tables::PAYMENT_BY_PROVIDER)?;
    let found = table
        .get(keys::tenant_bytes(tenant, provider_id.as_bytes()).as_slice())?
        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
        .map(Id::from_bytes);
    Ok(found)
}

/// A page of payments, optionally of one invoice.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    invoice: Option<Id>,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Payment>, bool), StoreError> {
    let payments = tx.open_table(tables::PAYMENTS)?;
    if let Some(invoice) = invoice {
        let index = tx.open_table(tables::PAYMENTS_BY_INVOICE)?;
        let all = attempts_of(&index, &payments, tenant, invoice)?;
        return Ok((all.into_iter().take(limit).collect(), false));
    }
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        Some(id) => {
            let mut k = keys::tenant_id(tenant, id).to_vec();
            k.push(0);
            k
        }
        None => start,
    };
    let mut out = Vec::new();
    for entry in payments.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        let (_, v) = entry?;
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(crate::store::codec::decode(v.value())?);
    }
    Ok((out, false))
}
