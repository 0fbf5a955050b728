//! What the provider said about an attempt, from any channel (the job's reply, a webhook, a
//! reconciliation), and the transition it causes.
//!
//! [`apply_outcome`] is idempotent and monotone: the second report of an outcome changes
//! nothing, and a state that holds money never reopens. Each outcome has its own transition
//! function with its precondition; a success goes one of three ways:
//!
//! - **collected**: the amount and currency are the attempt's and its invoice still needs them
//!   → `psp_clearing` debit, receivable credit, invoice paid;
//! - **held for review**: the provider reports another amount or currency → what was really
//!   received goes to `suspense`, the payment is `needs_review`, the invoice stays unpaid;
//! - **unapplied**: the invoice was voided or already paid, or the attempt had been superseded
//!   → the money goes to `suspense`, the payment is `unapplied`, and a refund of all of it is
//!   requested in the same write.

use crate::store::WriteTxn;

use super::attempt::{self, create_attempt};
use super::payment::{load, load_invoice, save, save_invoice, Payment, PaymentStatus, PREFIX};
use super::refund::RequestRefund;
use super::write_off::{write_off, WriteOff};
use crate::billing::invoice::{emit_invoice, InvoiceKind, InvoiceStatus};
use crate::id::Id;
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::ledger::journal::{self, Draft, Links, Posting, MAX_AMOUNT_MINOR};
use crate::store::keys::TenantId;
use crate::store::StoreError;

/// Dunning: delays of the attempts after the first, in order.
#[derive(Debug, Clone)]
pub struct Dunning {
    /// Delay before attempt 2, 3, … (ms).
    pub retry_delays_ms: Vec<i64>,
}

/// What the provider reports having collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217, upper case.
    pub currency: String,
}

/// What the provider said, from any channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Collected.
    Succeeded {
        /// The provider's id.
        provider_id: Option<String>,
        /// What it reports collecting; `None` when the channel does not say (then the
        /// attempt's own amount, which the provider was asked for under the attempt's key).
        received: Option<Received>,
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
    /// Canceled at the provider (by Tally superseding it, on request, or in the provider's
    /// dashboard): it can never collect. Ends like a cancel Tally asked for, with no dunning,
    /// whichever of the cancel's own record and this report arrives first.
    Canceled {
        /// The provider's id.
        provider_id: Option<String>,
        /// The provider's reason.
        reason: String,
    },
    /// No answer (timeout): retried with the same key.
    Unknown,
}

/// Applies a provider outcome: state, recovery point, ledger, invoice, dunning.
pub fn apply_outcome(
    tx: &WriteTxn,
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
    let step = Step {
        tx,
        tenant,
        now_ms,
        origin,
    };
    if let Some(other) = other_intent(&p, &outcome).map(str::to_string) {
        // The report is about an intent that is not this attempt's: it never changes this
        // attempt. A collection is money all the same, recorded beside it.
        return match outcome {
            Outcome::Succeeded { received, .. } => {
                let mut beside = attempt::record_unexpected(tx, tenant, &p, &other, now_ms)?;
                succeeded(&step, &mut beside, None, received)?;
                beside.recovery_point = super::payment::RecoveryPoint::OutcomeRecorded;
                beside.updated_at_ms = now_ms;
                save(tx, &beside)?;
                Ok(Some(beside))
            }
            _ => Ok(Some(p)),
        };
    }
    let changed = match outcome {
        Outcome::Succeeded {
            provider_id,
            received,
        } => succeeded(&step, &mut p, provider_id, received)?,
        Outcome::Failed {
            provider_id,
            code,
            message,
        } => failed(&step, &mut p, provider_id, (code, message), dunning)?,
        Outcome::Processing { provider_id } => {
            still_open(&mut p, provider_id, PaymentStatus::Processing)
        }
        Outcome::Canceled {
            provider_id,
            reason,
        } => {
            let changed = canceled(&mut p, provider_id, reason);
            if changed {
                cancel_top_up(&step, &mut p)?;
            }
            changed
        }
        Outcome::RequiresAction { provider_id } => {
            still_open(&mut p, provider_id, PaymentStatus::RequiresAction)
        }
        Outcome::Unknown => {
            if p.status.is_open() {
                p.status = PaymentStatus::Unknown;
            }
            p.updated_at_ms = now_ms;
            save(tx, &p)?;
            return Ok(Some(p));
        }
    };
    if changed {
        p.recovery_point = super::payment::RecoveryPoint::OutcomeRecorded;
        p.updated_at_ms = now_ms;
        save(tx, &p)?;
    }
    Ok(Some(p))
}

/// The provider id a report names when it is not the attempt's own intent (the attempt
/// already knows another one).
fn other_intent<'a>(p: &Payment, outcome: &'a Outcome) -> Option<&'a str> {
    let reported = match outcome {
        Outcome::Succeeded { provider_id, .. }
        | Outcome::Failed { provider_id, .. }
        | Outcome::Processing { provider_id }
        | Outcome::RequiresAction { provider_id }
        | Outcome::Canceled { provider_id, .. } => provider_id.as_deref()?,
        Outcome::Unknown => return None,
    };
    match &p.provider_id {
        Some(own) if own != reported => Some(reported),
        _ => None,
    }
}

/// What every transition needs besides the payment.
struct Step<'a> {
    tx: &'a WriteTxn,
    tenant: TenantId,
    now_ms: i64,
    origin: &'a str,
}

fn adopt(p: &mut Payment, id: Option<String>) {
    if p.provider_id.is_none() {
        p.provider_id = id;
    }
}

/// How far an open attempt has come: a report never moves it back (a late
/// `requires_action` after `processing` changes nothing).
fn progress(status: PaymentStatus) -> u8 {
    match status {
        PaymentStatus::Pending => 0,
        PaymentStatus::Unknown => 1,
        PaymentStatus::RequiresAction => 2,
        _ => 3,
    }
}

/// Processing or waiting for the customer: only an open attempt moves, and once the provider
/// has reported on it, only forward (`processing` while only sent is Tally's own mark).
fn still_open(p: &mut Payment, provider_id: Option<String>, status: PaymentStatus) -> bool {
    let reported = p.recovery_point == super::payment::RecoveryPoint::OutcomeRecorded;
    if !p.status.is_open() || (reported && progress(status) < progress(p.status)) {
        return false;
    }
    adopt(p, provider_id);
    p.status = status;
    true
}

/// Transition "canceled at the provider": an open attempt closes without dunning; the invoice
/// stays open for a new attempt or a void.
fn canceled(p: &mut Payment, provider_id: Option<String>, reason: String) -> bool {
    if !p.status.is_open() {
        return false;
    }
    adopt(p, provider_id);
    p.status = PaymentStatus::Canceled;
    p.failure = Some(("canceled".into(), reason));
    true
}

/// A canceled attempt of a top-up with no other open attempt: nothing will collect it, so the
/// top-up fails like a decline (its invoice voided), rather than staying pending for ever.
fn cancel_top_up(step: &Step<'_>, p: &mut Payment) -> Result<(), StoreError> {
    let Some(invoice) = load_invoice(step.tx, step.tenant, p.invoice)? else {
        return Ok(());
    };
    if invoice.kind != InvoiceKind::TopUp || invoice.status != InvoiceStatus::Finalized {
        return Ok(());
    }
    let others_open = attempt::attempts(step.tx, step.tenant, p.invoice)?
        .iter()
        .any(|o| o.id != p.id && o.status.is_open());
    if others_open {
        return Ok(());
    }
    // Saved first so the void sees this attempt closed.
    p.recovery_point = super::payment::RecoveryPoint::OutcomeRecorded;
    p.updated_at_ms = step.now_ms;
    save(step.tx, p)?;
    let reason = p.failure.as_ref().map_or_else(
        || "canceled".to_string(),
        |(_, why)| format!("canceled: {why}"),
    );
    crate::wallet::settle::declined(
        step.tx,
        step.tenant,
        &invoice,
        &reason,
        step.now_ms,
        step.origin,
    )?;
    Ok(())
}

/// Transition "succeeded": collected, held for review, or unapplied (see the module doc).
fn succeeded(
    step: &Step<'_>,
    p: &mut Payment,
    provider_id: Option<String>,
    received: Option<Received>,
) -> Result<bool, StoreError> {
    if p.status.is_collected() {
        return Ok(false);
    }
    adopt(p, provider_id);
    let received = received.unwrap_or_else(|| Received {
        amount_minor: p.amount_minor,
        currency: p.currency.clone(),
    });
    p.received_minor = Some(received.amount_minor);
    p.received_currency = Some(received.currency.clone());
    p.failure = None;
    if received.amount_minor != p.amount_minor || received.currency != p.currency {
        let reason = format!(
            "amount_mismatch: the provider reported {} {} collected for an attempt of {} {}",
            received.amount_minor, received.currency, p.amount_minor, p.currency
        );
        hold(step, p, PaymentStatus::NeedsReview, reason)?;
        return Ok(true);
    }
    let invoice = load_invoice(step.tx, step.tenant, p.invoice)?;
    let takes = p.status != PaymentStatus::Canceled
        && invoice.as_ref().is_some_and(|i| {
            matches!(
                i.status,
                InvoiceStatus::Finalized | InvoiceStatus::Uncollectible
            )
        });
    if !takes {
        let reason = match (&invoice, p.status) {
            (_, PaymentStatus::Canceled) => "superseded: the attempt had been canceled".into(),
            (Some(i), _) => format!(
                "invoice_{}: the invoice needed no payment",
                i.status.as_str()
            ),
            (None, _) => "invoice_missing".into(),
        };
        hold(step, p, PaymentStatus::Unapplied, reason)?;
        refund_unapplied(step, p)?;
        return Ok(true);
    }
    collect(step, p)?;
    Ok(true)
}

/// Transition "collected": the attempt pays its invoice.
fn collect(step: &Step<'_>, p: &mut Payment) -> Result<(), StoreError> {
    let entry_id = Id::generate_at(step.now_ms);
    let draft = Draft {
        id: entry_id,
        kind: "payment".into(),
        reason: format!(
            "payment {} collected through {}",
            p.id.display(PREFIX),
            p.psp
        ),
        links: payment_links(p),
        origin: step.origin.to_string(),
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
    if let Err(e) = journal::post(step.tx, step.tenant, step.now_ms, draft)? {
        return Err(StoreError::Corrupt(format!("payment entry refused: {e}")));
    }
    p.entry = Some(entry_id);
    p.status = PaymentStatus::Succeeded;
    let Some(mut invoice) = load_invoice(step.tx, step.tenant, p.invoice)? else {
        return Ok(());
    };
    if invoice.status == InvoiceStatus::Uncollectible {
        // Collected after all: the bad debt becomes a receivable again, which this payment
        // has just settled.
        write_off(
            step.tx,
            step.tenant,
            &mut invoice,
            step.now_ms,
            step.origin,
            WriteOff::Reverse,
        )?;
    }
    invoice.status = InvoiceStatus::Paid;
    invoice.paid_at_ms = Some(step.now_ms);
    save_invoice(step.tx, step.tenant, &invoice)?;
    emit_invoice(
        step.tx,
        step.tenant,
        &invoice,
        "invoice.paid",
        "paid",
        step.now_ms,
    )?;
    emit_payment(step, p, "payment.succeeded", "succeeded")?;
    // A top-up's credit exists from the write that records its payment, whatever channel
    // reported it.
    crate::wallet::settle::paid(
        step.tx,
        step.tenant,
        &invoice,
        p.id,
        step.now_ms,
        step.origin,
    )?;
    // A dunning attempt that was scheduled but never sent is not needed any more.
    for other in attempt::attempts(step.tx, step.tenant, p.invoice)? {
        if other.id != p.id && other.status == PaymentStatus::Pending {
            attempt::cancel(step.tx, step.tenant, other.id, step.now_ms)?;
        }
    }
    Ok(())
}

/// Transitions "held for review" and "unapplied": what the provider really received goes to
/// `suspense` (when it is a postable amount in a known currency), never to the invoice.
fn hold(
    step: &Step<'_>,
    p: &mut Payment,
    status: PaymentStatus,
    reason: String,
) -> Result<(), StoreError> {
    debug_assert!(matches!(
        status,
        PaymentStatus::NeedsReview | PaymentStatus::Unapplied
    ));
    p.status = status;
    let amount = p.collected_minor();
    let currency = p.collected_currency().to_string();
    let postable = amount > 0 && amount <= MAX_AMOUNT_MINOR && crate::currency::is_known(&currency);
    if !postable {
        p.held_reason = Some(format!(
            "{reason}; nothing posted: {amount} {currency} is not a postable amount"
        ));
        return Ok(());
    }
    let entry_id = Id::generate_at(step.now_ms);
    let draft = Draft {
        id: entry_id,
        kind: "payment_held".into(),
        reason: format!(
            "payment {} held in suspense: {reason}",
            p.id.display(PREFIX)
        ),
        links: payment_links(p),
        origin: step.origin.to_string(),
        postings: vec![
            Posting {
                account: AccountRef::System(SystemAccount::PspClearing),
                currency: currency.clone(),
                amount_minor: amount,
            },
            Posting {
                account: AccountRef::System(SystemAccount::Suspense),
                currency,
                amount_minor: -amount,
            },
        ],
    };
    if let Err(e) = journal::post(step.tx, step.tenant, step.now_ms, draft)? {
        return Err(StoreError::Corrupt(format!("held entry refused: {e}")));
    }
    p.entry = Some(entry_id);
    p.held_reason = Some(reason);
    tracing::warn!(
        payment = %p.id.display(PREFIX),
        status = p.status.as_str(),
        reason = p.held_reason.as_deref().unwrap_or_default(),
        "collected money held in suspense"
    );
    Ok(())
}

/// An unapplied payment is refunded in full, requested in the write that recorded it.
fn refund_unapplied(step: &Step<'_>, p: &mut Payment) -> Result<(), StoreError> {
    if p.entry.is_none() {
        return Ok(());
    }
    // The payment is saved first so the refund request sees its collected state.
    p.recovery_point = super::payment::RecoveryPoint::OutcomeRecorded;
    p.updated_at_ms = step.now_ms;
    save(step.tx, p)?;
    let requested = RequestRefund {
        tenant: step.tenant,
        payment: p.id,
        amount_minor: None,
        now_ms: step.now_ms,
    }
    .record(step.tx, true)?;
    if let Ok(after) = requested {
        *p = after;
    }
    Ok(())
}

/// Transition "failed": declined; dunning schedules the next attempt, or gives up and writes
/// the invoice off, unless another attempt of the invoice is still open.
fn failed(
    step: &Step<'_>,
    p: &mut Payment,
    provider_id: Option<String>,
    failure: (String, String),
    dunning: &Dunning,
) -> Result<bool, StoreError> {
    if !p.status.is_open() {
        return Ok(false);
    }
    adopt(p, provider_id);
    p.status = PaymentStatus::Failed;
    p.failure = Some(failure);
    p.recovery_point = super::payment::RecoveryPoint::OutcomeRecorded;
    p.updated_at_ms = step.now_ms;
    // Saved before dunning looks at the invoice's attempts, so it sees this one closed.
    save(step.tx, p)?;
    emit_payment(step, p, "payment.failed", "failed")?;
    let Some(mut invoice) = load_invoice(step.tx, step.tenant, p.invoice)? else {
        return Ok(true);
    };
    if invoice.status != InvoiceStatus::Finalized {
        return Ok(true);
    }
    emit_invoice(
        step.tx,
        step.tenant,
        &invoice,
        "invoice.payment_failed",
        &format!("payment_failed:{}", p.id.display(PREFIX)),
        step.now_ms,
    )?;
    let others_open = attempt::attempts(step.tx, step.tenant, p.invoice)?
        .iter()
        .any(|o| o.id != p.id && o.status.is_open());
    if others_open {
        return Ok(true);
    }
    if invoice.kind == InvoiceKind::TopUp {
        // A top-up is not dunned: it fails now, and its invoice is voided (see `wallet::settle`).
        let reason = p.failure.as_ref().map_or_else(
            || "declined".to_string(),
            |(code, _)| format!("declined: {code}"),
        );
        crate::wallet::settle::declined(
            step.tx,
            step.tenant,
            &invoice,
            &reason,
            step.now_ms,
            step.origin,
        )?;
        return Ok(true);
    }
    let next = usize::try_from(p.attempt)
        .ok()
        .and_then(|a| a.checked_sub(1))
        .and_then(|a| dunning.retry_delays_ms.get(a));
    match next {
        Some(delay) => {
            create_attempt(
                step.tx,
                step.tenant,
                &invoice,
                &p.psp.clone(),
                p.payment_method.clone(),
                step.now_ms.saturating_add(*delay),
                step.now_ms,
            )?;
        }
        None => {
            write_off(
                step.tx,
                step.tenant,
                &mut invoice,
                step.now_ms,
                step.origin,
                WriteOff::Post,
            )?;
            invoice.status = InvoiceStatus::Uncollectible;
            save_invoice(step.tx, step.tenant, &invoice)?;
            emit_invoice(
                step.tx,
                step.tenant,
                &invoice,
                "invoice.uncollectible",
                "uncollectible",
                step.now_ms,
            )?;
        }
    }
    Ok(true)
}

/// Records a payment's transition in the outbox.
fn emit_payment(
    step: &Step<'_>,
    p: &Payment,
    event_type: &str,
    effect: &str,
) -> Result<(), StoreError> {
    crate::notifications::outbox::emit(
        step.tx,
        step.tenant,
        crate::notifications::outbox::Effect {
            event_type,
            effect: format!("{}:{effect}", p.id.display(PREFIX)),
            customer: Some(p.customer),
            kind: "payment",
            id: p.id,
            record: p,
        },
        step.now_ms,
    )
}

/// The links of a payment's entries.
pub(super) fn payment_links(p: &Payment) -> Links {
    Links {
        customer: Some(p.customer),
        invoice: Some(p.invoice),
        payment: Some(p.id),
        ..Links::default()
    }
}
