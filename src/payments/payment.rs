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

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::billing::invoice::{Invoice, InvoiceStatus};
use crate::id::Id;
use crate::jobs::{self, Job};
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::ledger::journal::{self, Draft, Links, Posting};
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{get_record, put_record, tables, StoreError};

/// The public id prefix of payments.
pub const PREFIX: &str = "pay";
/// The public id prefix of refunds.
pub const REFUND_PREFIX: &str = "re";
/// Job kind that charges an attempt.
pub const EXECUTE_JOB: &str = "payment.execute";
/// Job kind that performs a refund.
pub const REFUND_JOB: &str = "refund.execute";

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
    /// Not sent because the invoice no longer needed it.
    Canceled,
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

fn by_invoice_key(tenant: TenantId, invoice: Id, attempt: u32) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, invoice).to_vec();
    key.extend_from_slice(&attempt.to_be_bytes());
    key
}

/// Loads a payment inside a write transaction.
pub fn load(
    tx: &WriteTransaction,
    tenant: TenantId,
    id: Id,
) -> Result<Option<Payment>, StoreError> {
    let table = tx.open_table(tables::PAYMENTS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// Saves a payment inside a write transaction.
pub fn save(tx: &WriteTransaction, payment: &Payment) -> Result<(), StoreError> {
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

fn load_invoice(
    tx: &WriteTransaction,
    tenant: TenantId,
    id: Id,
) -> Result<Option<Invoice>, StoreError> {
    let table = tx.open_table(tables::INVOICES)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

fn save_invoice(
    tx: &WriteTransaction,
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
    /// The payment cannot be refunded (not succeeded, or the amount exceeds what remains).
    #[error("{0}")]
    NotRefundable(String),
}

/// Creates the next attempt for an invoice and its job, inside the caller's transaction.
#[allow(clippy::too_many_arguments)]
pub fn create_attempt(
    tx: &WriteTransaction,
    tenant: TenantId,
    invoice: &Invoice,
    psp: &str,
    payment_method: Option<String>,
    run_at_ms: i64,
    now_ms: i64,
) -> Result<Payment, StoreError> {
    let attempt = {
        let index = tx.open_table(tables::PAYMENTS_BY_INVOICE)?;
        let payments = tx.open_table(tables::PAYMENTS)?;
        attempts_of(&index, &payments, tenant, invoice.id)?.len() as u32 + 1
    };
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
        psp: psp.to_string(),
        psp_key: psp_key(tenant, invoice.id, attempt),
        provider_id: None,
        payment_method,
        failure: None,
        entry: None,
        refunds: Vec::new(),
        scheduled_at_ms: run_at_ms,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    };
    save(tx, &payment)?;
    tx.open_table(tables::PAYMENTS_BY_INVOICE)?.insert(
        by_invoice_key(tenant, invoice.id, attempt).as_slice(),
        payment.id.to_bytes().as_slice(),
    )?;
    let mut job = Job::new(tenant, EXECUTE_JOB, payment.id.display(PREFIX), now_ms);
    job.due_at_ms = run_at_ms;
    jobs::enqueue(tx, &job)?;
    Ok(payment)
}

/// `POST /v1/invoices/{id}/pay`: records an attempt and its job, unless one is under way.
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

    fn apply(self, tx: &WriteTransaction) -> Result<Self::Output, StoreError> {
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
        let open = {
            let index = tx.open_table(tables::PAYMENTS_BY_INVOICE)?;
            let payments = tx.open_table(tables::PAYMENTS)?;
            attempts_of(&index, &payments, self.tenant, invoice.id)?
                .into_iter()
                .find(|p| p.status.is_open() && p.status != PaymentStatus::RequiresAction)
        };
        if let Some(open) = open {
            return Ok(Err(PayError::InProgress(open.id.display(PREFIX))));
        }
        Ok(Ok(create_attempt(
            tx,
            self.tenant,
            &invoice,
            &self.psp,
            self.payment_method,
            self.now_ms,
            self.now_ms,
        )?))
    }
}

/// Marks the recovery point before the provider is called.
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
    type Output = Option<Payment>;

    fn apply(self, tx: &WriteTransaction) -> Result<Option<Payment>, StoreError> {
        let Some(mut p) = load(tx, self.tenant, self.id)? else {
            return Ok(None);
        };
        if p.recovery_point == RecoveryPoint::IntentRecorded {
            p.recovery_point = RecoveryPoint::ProviderCalled;
            p.status = PaymentStatus::Processing;
            p.updated_at_ms = self.now_ms;
            save(tx, &p)?;
        }
        Ok(Some(p))
    }
}

/// What the provider said, from any channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Collected.
    Succeeded {
        /// The provider's id.
        provider_id: Option<String>,
    },
    /// Declined.
    Failed {
        /// The provider's id.
        provider_id: Option<String>,
        /// Code.
        code: String,
        /// Message.
        message: String,
    },
    /// Settling.
    Processing {
        /// The provider's id.
        provider_id: Option<String>,
    },
    /// Waiting for the customer.
    RequiresAction {
        /// The provider's id.
        provider_id: Option<String>,
    },
    /// No answer (timeout): retried with the same key.
    Unknown,
}

/// Dunning: delays of the attempts after the first, in order.
#[derive(Debug, Clone)]
pub struct Dunning {
    /// Delay before attempt 2, 3, … (ms).
    pub retry_delays_ms: Vec<i64>,
}

/// Applies a provider outcome: state, recovery point, ledger, invoice, dunning. Idempotent and
/// monotone: the second report of an outcome changes nothing; a terminal state never reopens
/// (except that a later success beats a decline, as providers allow).
pub fn apply_outcome(
    tx: &WriteTransaction,
    tenant: TenantId,
    payment: Id,
    outcome: Outcome,
    dunning: &Dunning,
    now_ms: i64,
    origin: &str,
) -> Result<Option<Payment>, StoreError> {
    let Some(mut p) = load(tx, tenant, payment)? else {
        return Ok(None);
    };
    let adopt = |p: &mut Payment, id: &Option<String>| {
        if p.provider_id.is_none() {
            p.provider_id.clone_from(id);
        }
    };
    match outcome {
        Outcome::Succeeded { provider_id } => {
            if p.status == PaymentStatus::Succeeded {
                return Ok(Some(p));
            }
            adopt(&mut p, &provider_id);
            let entry_id = Id::generate_at(now_ms);
            let draft = Draft {
                id: entry_id,
                kind: "payment".into(),
                reason: format!(
                    "payment {} collected through {}",
                    p.id.display(PREFIX),
                    p.psp
                ),
                links: Links {
                    customer: Some(p.customer),
                    invoice: Some(p.invoice),
                    payment: Some(p.id),
                    ..Links::default()
                },
                origin: origin.to_string(),
                postings: vec![
                    Posting {
                        account: AccountRef::System(SystemAccount::PspClearing),
                        currency: p.currency.clone(),
                        amount_minor: p.amount_minor,
                    },
                    Posting {
                        account: AccountRef::Receivable {
                            customer: p.customer,
                        },
                        currency: p.currency.clone(),
                        amount_minor: -p.amount_minor,
                    },
                ],
            };
            if let Err(e) = journal::post(tx, tenant, now_ms, draft)? {
                return Err(StoreError::Corrupt(format!("payment entry refused: {e}")));
            }
            p.entry = Some(entry_id);
            p.status = PaymentStatus::Succeeded;
            p.failure = None;
            if let Some(mut invoice) = load_invoice(tx, tenant, p.invoice)? {
                if matches!(
                    invoice.status,
                    InvoiceStatus::Finalized | InvoiceStatus::Uncollectible
                ) {
                    if invoice.status == InvoiceStatus::Uncollectible {
                        // Collected after all: the bad debt becomes a receivable again, which
                        // this payment has just settled.
                        write_off(tx, tenant, &mut invoice, now_ms, origin, WriteOff::Reverse)?;
                    }
                    invoice.status = InvoiceStatus::Paid;
                    invoice.paid_at_ms = Some(now_ms);
                    save_invoice(tx, tenant, &invoice)?;
                }
            }
        }
        Outcome::Failed {
            provider_id,
            code,
            message,
        } => {
            if matches!(
                p.status,
                PaymentStatus::Succeeded | PaymentStatus::Failed | PaymentStatus::Canceled
            ) {
                return Ok(Some(p));
            }
            adopt(&mut p, &provider_id);
            p.status = PaymentStatus::Failed;
            p.failure = Some((code, message));
            if let Some(mut invoice) = load_invoice(tx, tenant, p.invoice)? {
                if invoice.status == InvoiceStatus::Finalized {
                    let next = usize::try_from(p.attempt)
                        .ok()
                        .and_then(|a| dunning.retry_delays_ms.get(a - 1));
                    match next {
                        Some(delay) => {
                            let method = p.payment_method.clone();
                            create_attempt(
                                tx,
                                tenant,
                                &invoice,
                                &p.psp.clone(),
                                method,
                                now_ms + delay,
                                now_ms,
                            )?;
                        }
                        None => {
                            write_off(tx, tenant, &mut invoice, now_ms, origin, WriteOff::Post)?;
                            invoice.status = InvoiceStatus::Uncollectible;
                            save_invoice(tx, tenant, &invoice)?;
                        }
                    }
                }
            }
        }
        Outcome::Processing { provider_id } => {
            if !p.status.is_open() {
                return Ok(Some(p));
            }
            adopt(&mut p, &provider_id);
            p.status = PaymentStatus::Processing;
        }
        Outcome::RequiresAction { provider_id } => {
            if !p.status.is_open() {
                return Ok(Some(p));
            }
            adopt(&mut p, &provider_id);
            p.status = PaymentStatus::RequiresAction;
        }
        Outcome::Unknown => {
            if p.status.is_open() {
                p.status = PaymentStatus::Unknown;
            }
            p.updated_at_ms = now_ms;
            save(tx, &p)?;
            return Ok(Some(p));
        }
    }
    p.recovery_point = RecoveryPoint::OutcomeRecorded;
    p.updated_at_ms = now_ms;
    save(tx, &p)?;
    Ok(Some(p))
}

/// Which way a write-off entry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOff {
    /// Dunning gave up: bad debt takes the receivable.
    Post,
    /// A late success: the receivable comes back from bad debt.
    Reverse,
}

/// Posts (or reverses) the write-off of what an uncollectible invoice owes: the `bad_debt`
/// expense takes the customer's receivable, so the receivable shows only what can still be
/// collected and the books show what was lost. Recorded on the invoice's entries.
fn write_off(
    tx: &WriteTransaction,
    tenant: TenantId,
    invoice: &mut Invoice,
    now_ms: i64,
    origin: &str,
    direction: WriteOff,
) -> Result<(), StoreError> {
    let amount_minor = invoice.amount_due_minor;
    if amount_minor <= 0 {
        return Ok(());
    }
    let (sign, kind, reason) = match direction {
        WriteOff::Post => (1, "invoice_write_off", "written off as uncollectible"),
        WriteOff::Reverse => (
            -1,
            "invoice_write_off_reversal",
            "collected after its write-off",
        ),
    };
    let entry_id = Id::generate_at(now_ms);
    let draft = Draft {
        id: entry_id,
        kind: kind.into(),
        reason: format!(
            "invoice {} {reason}",
            invoice.id.display(crate::billing::invoice::PREFIX)
        ),
        links: Links {
            customer: Some(invoice.customer),
            invoice: Some(invoice.id),
            ..Links::default()
        },
        origin: origin.to_string(),
        postings: vec![
            Posting {
                account: AccountRef::System(SystemAccount::BadDebt),
                currency: invoice.currency.clone(),
                amount_minor: sign * amount_minor,
            },
            Posting {
                account: AccountRef::Receivable {
                    customer: invoice.customer,
                },
                currency: invoice.currency.clone(),
                amount_minor: -sign * amount_minor,
            },
        ],
    };
    if let Err(e) = journal::post(tx, tenant, now_ms, draft)? {
        return Err(StoreError::Corrupt(format!("write-off entry refused: {e}")));
    }
    invoice.entries.push(entry_id);
    Ok(())
}

/// Cancels an attempt whose invoice no longer needs collecting.
pub fn cancel(
    tx: &WriteTransaction,
    tenant: TenantId,
    id: Id,
    now_ms: i64,
) -> Result<(), StoreError> {
    if let Some(mut p) = load(tx, tenant, id)? {
        if matches!(p.status, PaymentStatus::Pending) {
            p.status = PaymentStatus::Canceled;
            p.updated_at_ms = now_ms;
            save(tx, &p)?;
        }
    }
    Ok(())
}

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

    fn apply(self, tx: &WriteTransaction) -> Result<Self::Output, StoreError> {
        self.record(tx, true)
    }
}

impl RequestRefund {
    /// Records the refund without a provider job: for refunds the provider already made (its
    /// webhook reports them).
    pub fn apply_without_job(
        self,
        tx: &WriteTransaction,
    ) -> Result<Result<Payment, PayError>, StoreError> {
        self.record(tx, false)
    }

    fn record(
        self,
        tx: &WriteTransaction,
        with_job: bool,
    ) -> Result<Result<Payment, PayError>, StoreError> {
        let Some(mut p) = load(tx, self.tenant, self.payment)? else {
            return Ok(Err(PayError::UnknownPayment(self.payment.display(PREFIX))));
        };
        if p.status != PaymentStatus::Succeeded {
            return Ok(Err(PayError::NotRefundable(format!(
                "payment {} is {}; only succeeded payments can be refunded",
                p.id.display(PREFIX),
                p.status.as_str()
            ))));
        }
        let left = p.amount_minor - p.refunded_minor();
        let amount = self.amount_minor.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Ok(Err(PayError::NotRefundable(format!(
                "the refund must be between 1 and the {left} still refundable"
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
            let job = Job::new(
                self.tenant,
                REFUND_JOB,
                format!(
                    "{}:{}",
                    p.id.display(PREFIX),
                    refund.id.display(REFUND_PREFIX)
                ),
                self.now_ms,
            );
            jobs::enqueue(tx, &job)?;
        }
        p.refunds.push(refund);
        p.updated_at_ms = self.now_ms;
        save(tx, &p)?;
        Ok(Ok(p))
    }
}

/// Records a refund's outcome and, when it succeeded, its reversal: revenue debited, the
/// collected cash (PSP clearing) credited.
pub fn apply_refund(
    tx: &WriteTransaction,
    tenant: TenantId,
    payment: Id,
    refund: Id,
    result: Result<String, String>,
    now_ms: i64,
    origin: &str,
) -> Result<(), StoreError> {
    let Some(mut p) = load(tx, tenant, payment)? else {
        return Ok(());
    };
    let Some(index) = p.refunds.iter().position(|r| r.id == refund) else {
        return Ok(());
    };
    if p.refunds[index].status != "pending" {
        return Ok(());
    }
    match result {
        Ok(provider_id) => {
            let amount = p.refunds[index].amount_minor;
            let entry_id = Id::generate_at(now_ms);
            let draft = Draft {
                id: entry_id,
                kind: "refund".into(),
                reason: format!(
                    "refund {} of payment {}",
                    refund.display(REFUND_PREFIX),
                    p.id.display(PREFIX)
                ),
                links: Links {
                    customer: Some(p.customer),
                    invoice: Some(p.invoice),
                    payment: Some(p.id),
                    ..Links::default()
                },
                origin: origin.to_string(),
                postings: vec![
                    Posting {
                        account: AccountRef::System(SystemAccount::Revenue),
                        currency: p.currency.clone(),
                        amount_minor: amount,
                    },
                    Posting {
                        account: AccountRef::System(SystemAccount::PspClearing),
                        currency: p.currency.clone(),
                        amount_minor: -amount,
                    },
                ],
            };
            if let Err(e) = journal::post(tx, tenant, now_ms, draft)? {
                return Err(StoreError::Corrupt(format!("refund entry refused: {e}")));
            }
            let r = &mut p.refunds[index];
            r.status = "succeeded".into();
            r.provider_id = Some(provider_id);
            r.entry = Some(entry_id);
        }
        Err(reason) => {
            let r = &mut p.refunds[index];
            r.status = "failed".into();
            r.failure = Some(reason);
        }
    }
    p.updated_at_ms = now_ms;
    save(tx, &p)
}

/// One payment.
pub fn get(tx: &ReadTransaction, tenant: TenantId, id: Id) -> Result<Option<Payment>, StoreError> {
    let table = tx.open_table(tables::PAYMENTS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// The payment a provider id belongs to.
pub fn by_provider_id(
    tx: &WriteTransaction,
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
    tx: &ReadTransaction,
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
