//! Credit notes: the correction of an issued invoice, never an edit of it. A credit note takes
//! back part or all of an invoice's total (tax included), at most what earlier credit notes
//! left, and is numbered from the credit-note sequence in the same write.
//!
//! Its amount splits into tax and net like a refund's: tax = amount × the invoice's tax / its
//! total, rounded once, half away from zero. Where the money goes:
//! - an unpaid (finalized) invoice: what it credits comes off the amount due (the receivable);
//!   a part the invoice no longer owes (credits paid it) becomes a credit balance;
//! - a paid invoice: a credit balance (a paid credit grant funded by the receivable, as a
//!   negative invoice's), or with `refund` a refund of its payment, whose entry is then the
//!   reversal (revenue and `tax_payable` by the same split, when the provider confirms it).
//!
//! It lives above billing and payments because it reads the invoice's attempts and may refund.

use crate::store::ReadableTable;
use crate::store::{ReadTxn, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::billing::invoice::{self, Invoice, InvoiceStatus, LineKind};
use crate::billing::numbering::{self, Sequence};
use crate::billing::tax;
use crate::id::Id;
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::ledger::grant::{self, Grant, GrantStatus};
use crate::ledger::journal::{self, Draft, Links, Posting};
use crate::payments::payment::{PaymentStatus, PREFIX as PAYMENT_PREFIX};
use crate::payments::refund::{tax_share, RequestRefund};
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "cn";
/// Most lines one credit note names.
pub const MAX_LINES: usize = 100;
/// Longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A credit note as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNote {
    /// `cn_…`.
    pub id: Id,
    /// Its number (`CN-2026-000001`), from the credit-note sequence.
    pub number: String,
    /// The number's value in its sequence.
    pub number_seq: u64,
    /// The year the sequence restarted in, when the format holds `{year}`.
    pub number_year: Option<i32>,
    /// The invoice it corrects.
    pub invoice: Id,
    /// The invoice's number.
    pub invoice_number: Option<String>,
    /// Whose.
    pub customer: Id,
    /// The invoice's currency.
    pub currency: String,
    /// Lines credited: (line index, amount before exclusive tax); empty for an amount.
    pub lines: Vec<(u32, i64)>,
    /// What it credits, tax included.
    pub amount_minor: i64,
    /// Its tax share.
    pub tax_minor: i64,
    /// The amount less its tax.
    pub net_minor: i64,
    /// Why.
    pub reason: Option<String>,
    /// Taken off the amount due (unpaid invoices).
    pub due_reduced_minor: i64,
    /// The credit balance it left, if any.
    pub grant: Option<Id>,
    /// The payment and refund it asked for, if any.
    pub refund: Option<(Id, Id)>,
    /// Journal entries it posted (a refund's entry is posted by the refund).
    pub entries: Vec<Id>,
    /// Created.
    pub created_at_ms: i64,
}

/// What is credited: lines of the invoice or an amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credited {
    /// (line index, amount before exclusive tax), each at most the line's amount.
    Lines(Vec<(u32, i64)>),
    /// An amount, tax included.
    Amount(i64),
}

/// Why a credit note was not created (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditNoteError {
    /// No such invoice.
    #[error("no invoice {0}")]
    MissingInvoice(String),
    /// The invoice is a draft, void or uncollectible.
    #[error("invoice {id} is {status}; only finalized or paid invoices can be credited")]
    WrongState {
        /// The invoice.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// The currency differs from the invoice's.
    #[error("the invoice is in {0}")]
    Currency(String),
    /// A line index is not a creditable line, or its amount exceeds the line's.
    #[error("{detail}")]
    Line {
        /// The field (`lines.2.line`).
        field: String,
        /// Why.
        detail: String,
    },
    /// More than the invoice has left to credit.
    #[error("{amount} is more than the {remaining} left to credit on the invoice")]
    AboveRemaining {
        /// The credit note's amount.
        amount: i64,
        /// What remains.
        remaining: i64,
    },
    /// An attempt is at the provider with the amount due as it is.
    #[error("payment {0} of the invoice is at the provider; credit it once that attempt settles")]
    PaymentInProgress(String),
    /// `refund` on an invoice that is not paid, or with no payment that can take it.
    #[error("{0}")]
    NotRefundable(String),
    /// The ledger refused an entry.
    #[error("ledger: {0}")]
    Ledger(String),
    /// A top-up invoice: what it sold is a credit grant, which a credit note would not take
    /// back (void an unpaid one; a paid one's credit is the customer's).
    #[error(
        "invoice {0} is a prepaid top-up; top-up invoices are not credited (void an unpaid one)"
    )]
    TopUp(String),
}

/// `POST /v1/invoices/{id}/credit-notes`.
#[derive(Clone)]
pub struct CreateCreditNote {
    /// Owner.
    pub tenant: TenantId,
    /// The invoice.
    pub invoice: Id,
    /// What is credited.
    pub credited: Credited,
    /// Must equal the invoice's currency when given.
    pub currency: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Refund the invoice's payment instead of leaving a credit balance.
    pub refund: bool,
    /// Its id.
    pub id: Id,
    /// Now.
    pub now_ms: i64,
    /// The intent.
    pub origin: String,
}

impl Command for CreateCreditNote {
    type Output = Result<CreditNote, CreditNoteError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(mut inv) = ({
            let table = tx.open_table(tables::INVOICES)?;
            get_record::<Invoice, _>(&table, keys::tenant_id(self.tenant, self.invoice))?
        }) else {
            return Ok(Err(CreditNoteError::MissingInvoice(
                self.invoice.display(invoice::PREFIX),
            )));
        };
        let plan = match self.check(tx, &inv)? {
            Ok(plan) => plan,
            Err(e) => return Ok(Err(e)),
        };
        self.write(tx, &mut inv, plan)
    }
}

/// What a checked credit note will do.
struct Plan {
    amount: i64,
    tax: i64,
    due_reduced: i64,
    to_grant: i64,
    refund_from: Option<Id>,
}

/// A refund requested through a payment directly (`POST /v1/payments/{id}/refund`): on top of
/// the payment's own limit, what the invoice's credit notes gave back (as a credit balance or a
/// refund) and the earlier direct refunds may never exceed the invoice's total, so the same
/// money never goes back twice.
#[derive(Clone)]
pub struct RefundPayment {
    /// The refund as asked.
    pub request: RequestRefund,
}

impl Command for RefundPayment {
    type Output = Result<crate::payments::payment::Payment, crate::payments::payment::PayError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        use crate::payments::payment::PayError;
        let req = self.request;
        let Some(p) = crate::payments::payment::load(tx, req.tenant, req.payment)? else {
            return req.apply(tx);
        };
        let invoice = {
            let table = tx.open_table(tables::INVOICES)?;
            get_record::<Invoice, _>(&table, keys::tenant_id(req.tenant, p.invoice))?
        };
        let Some(inv) = invoice.filter(|i| !i.credit_notes.is_empty()) else {
            return req.apply(tx);
        };
        let attempts = crate::payments::attempt::attempts(tx, req.tenant, inv.id)?;
        let refunded: i64 = attempts.iter().map(|a| a.refunded_minor()).sum();
        let direct = refunded
            .saturating_sub(refunded_by_notes(tx, req.tenant, &inv)?)
            .max(0);
        let room = inv
            .total_minor
            .saturating_sub(inv.credited_minor)
            .saturating_sub(direct)
            .max(0);
        let left = p.collected_minor().saturating_sub(p.refunded_minor());
        let amount = req.amount_minor.unwrap_or(left.min(room));
        if amount > room {
            return Ok(Err(PayError::NotRefundable(format!(
                "invoice {} has {room} left to give back: its credit notes gave back the rest",
                inv.id.display(invoice::PREFIX)
            ))));
        }
        RequestRefund {
            amount_minor: Some(amount),
            ..req
        }
        .apply(tx)
    }
}

/// What the invoice's credit notes refunded through its payments.
fn refunded_by_notes(tx: &WriteTxn, tenant: TenantId, inv: &Invoice) -> Result<i64, StoreError> {
    let table = tx.open_table(tables::CREDIT_NOTES)?;
    let mut total = 0i64;
    for id in &inv.credit_notes {
        if let Some(note) = get_record::<CreditNote, _>(&table, keys::tenant_id(tenant, *id))? {
            if note.refund.is_some() {
                total = total.saturating_add(note.amount_minor);
            }
        }
    }
    Ok(total)
}

impl CreateCreditNote {
    /// Every check, before the first write.
    fn check(
        &self,
        tx: &WriteTxn,
        inv: &Invoice,
    ) -> Result<Result<Plan, CreditNoteError>, StoreError> {
        if inv.kind == invoice::InvoiceKind::TopUp {
            return Ok(Err(CreditNoteError::TopUp(inv.id.display(invoice::PREFIX))));
        }
        if !matches!(inv.status, InvoiceStatus::Finalized | InvoiceStatus::Paid) {
            return Ok(Err(CreditNoteError::WrongState {
                id: inv.id.display(invoice::PREFIX),
                status: inv.status.as_str(),
            }));
        }
        if self.currency.as_ref().is_some_and(|c| *c != inv.currency) {
            return Ok(Err(CreditNoteError::Currency(inv.currency.clone())));
        }
        let amount = match amount_of(inv, &self.credited) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let attempts = crate::payments::attempt::attempts(tx, self.tenant, inv.id)?;
        // Money refunded through the payment directly (not by a credit note) was given back
        // already: a credit note may not give it back a second time.
        let refunded: i64 = attempts.iter().map(|p| p.refunded_minor()).sum();
        let by_notes = refunded_by_notes(tx, self.tenant, inv)?;
        let direct = refunded.saturating_sub(by_notes).max(0);
        let remaining = inv
            .total_minor
            .saturating_sub(inv.credited_minor)
            .saturating_sub(direct)
            .max(0);
        if amount > remaining {
            return Ok(Err(CreditNoteError::AboveRemaining { amount, remaining }));
        }
        let (due_reduced, to_grant, refund_from) = if inv.status == InvoiceStatus::Finalized {
            if self.refund {
                return Ok(Err(CreditNoteError::NotRefundable(
                    "only a paid invoice's payment can be refunded".into(),
                )));
            }
            if let Some(busy) = attempts.iter().find(|p| p.status.is_at_provider()) {
                return Ok(Err(CreditNoteError::PaymentInProgress(
                    busy.id.display(PAYMENT_PREFIX),
                )));
            }
            let due = amount.min(inv.amount_due_minor);
            (due, amount - due, None)
        } else if self.refund {
            let payment = attempts.iter().find(|p| {
                p.status == PaymentStatus::Succeeded
                    && p.collected_minor().saturating_sub(p.refunded_minor()) >= amount
            });
            match payment {
                Some(p) => (0, 0, Some(p.id)),
                None => {
                    return Ok(Err(CreditNoteError::NotRefundable(format!(
                        "no payment of the invoice has {amount} left to refund"
                    ))))
                }
            }
        } else {
            (0, amount, None)
        };
        Ok(Ok(Plan {
            amount,
            tax: tax_share(amount, inv.tax_minor, inv.total_minor),
            due_reduced,
            to_grant,
            refund_from,
        }))
    }

    /// The writes: number, entries, grant or refund, the invoice, the note and its event.
    fn write(
        self,
        tx: &WriteTxn,
        inv: &mut Invoice,
        plan: Plan,
    ) -> Result<Result<CreditNote, CreditNoteError>, StoreError> {
        let mut entries = Vec::new();
        let links = Links {
            customer: Some(inv.customer),
            invoice: Some(inv.id),
            ..Links::default()
        };
        let label = self.id.display(PREFIX);
        let mut refund = None;
        if let Some(payment) = plan.refund_from {
            let refunded = RequestRefund {
                tenant: self.tenant,
                payment,
                amount_minor: Some(plan.amount),
                now_ms: self.now_ms,
            }
            .apply(tx)?;
            match refunded {
                Ok(p) => refund = p.refunds.last().map(|r| (payment, r.id)),
                Err(e) => return Ok(Err(CreditNoteError::NotRefundable(e.to_string()))),
            }
        } else {
            let net = plan.amount - plan.tax;
            let postings: Vec<Posting> = [
                (AccountRef::System(SystemAccount::Revenue), net),
                (AccountRef::System(SystemAccount::TaxPayable), plan.tax),
                (
                    AccountRef::Receivable {
                        customer: inv.customer,
                    },
                    -plan.amount,
                ),
            ]
            .into_iter()
            .filter(|(_, a)| *a != 0)
            .map(|(account, amount_minor)| Posting {
                account,
                currency: inv.currency.clone(),
                amount_minor,
            })
            .collect();
            let entry = Id::generate_at(self.now_ms);
            let draft = Draft {
                id: entry,
                kind: "credit_note".into(),
                reason: format!(
                    "credit note {label} of invoice {}",
                    inv.id.display(invoice::PREFIX)
                ),
                links: links.clone(),
                origin: self.origin.clone(),
                postings,
            };
            if let Err(e) = journal::post(tx, self.tenant, self.now_ms, draft)? {
                return Ok(Err(CreditNoteError::Ledger(e.to_string())));
            }
            entries.push(entry);
        }
        let mut grant_id = None;
        if plan.to_grant > 0 {
            let entry = Id::generate_at(self.now_ms);
            let grant = Grant {
                id: Id::generate_at(self.now_ms),
                customer: inv.customer,
                currency: inv.currency.clone(),
                amount_minor: plan.to_grant,
                category: grant::Category::Paid,
                funding: grant::Funding::Receivable,
                priority: 0,
                effective_at_ms: self.now_ms,
                expires_at_ms: None,
                created_at_ms: self.now_ms,
                status: GrantStatus::Active,
                closed_at_ms: None,
                issue_entry: entry,
                close_entry: None,
            };
            let reason = format!("credit balance from credit note {label}");
            // After the credit note's entry, so it cannot refuse the credit note (that would
            // leave the entry without its note): should the ledger refuse the grant, the
            // receivable keeps the credit, as a negative invoice's does, and it is logged.
            match grant::issue(tx, self.tenant, grant, reason, self.origin.clone())? {
                Ok(g) => {
                    grant_id = Some(g.id);
                    entries.push(entry);
                }
                Err(e) => tracing::warn!(
                    credit_note = %label,
                    error = %e,
                    "credit balance not granted: the ledger refused its entry"
                ),
            }
        }
        let number = numbering::next(tx, self.tenant, Sequence::CreditNote, self.now_ms)?;
        let note = CreditNote {
            id: self.id,
            number: number.text,
            number_seq: number.value,
            number_year: number.year,
            invoice: inv.id,
            invoice_number: inv.number.clone(),
            customer: inv.customer,
            currency: inv.currency.clone(),
            lines: match &self.credited {
                Credited::Lines(l) => l.clone(),
                Credited::Amount(_) => Vec::new(),
            },
            amount_minor: plan.amount,
            tax_minor: plan.tax,
            net_minor: plan.amount - plan.tax,
            reason: self.reason.clone(),
            due_reduced_minor: plan.due_reduced,
            grant: grant_id,
            refund,
            entries,
            created_at_ms: self.now_ms,
        };
        self.update_invoice(tx, inv, &note)?;
        put_record(
            &mut tx.open_table(tables::CREDIT_NOTES)?,
            &keys::tenant_id(self.tenant, note.id),
            &note,
        )?;
        crate::notifications::outbox::emit(
            tx,
            self.tenant,
            crate::notifications::outbox::Effect {
                event_type: "credit_note.created",
                effect: format!("{label}:created"),
                customer: Some(note.customer),
                kind: "credit_note",
                id: note.id,
                record: &note,
            },
            self.now_ms,
        )?;
        Ok(Ok(note))
    }

    /// The invoice records what was credited; an unpaid one owes less (its unsent attempts,
    /// made for the amount due as it was, are canceled) and is paid once it owes nothing.
    fn update_invoice(
        &self,
        tx: &WriteTxn,
        inv: &mut Invoice,
        note: &CreditNote,
    ) -> Result<(), StoreError> {
        inv.credited_minor = inv.credited_minor.saturating_add(note.amount_minor);
        inv.credited_due_minor = inv
            .credited_due_minor
            .saturating_add(note.due_reduced_minor);
        inv.amount_due_minor = inv.amount_due_minor.saturating_sub(note.due_reduced_minor);
        inv.credit_notes.push(note.id);
        if note.due_reduced_minor > 0 {
            // An unsent attempt asks for the amount due as it was: canceled, as a void does.
            for p in crate::payments::attempt::attempts(tx, self.tenant, inv.id)?
                .iter()
                .filter(|p| p.status == PaymentStatus::Pending)
            {
                crate::payments::attempt::cancel(tx, self.tenant, p.id, self.now_ms)?;
            }
        }
        if inv.status == InvoiceStatus::Finalized && inv.amount_due_minor == 0 {
            inv.status = InvoiceStatus::Paid;
            inv.paid_at_ms = Some(self.now_ms);
            invoice::emit_invoice(tx, self.tenant, inv, "invoice.paid", "paid", self.now_ms)?;
        }
        put_record(
            &mut tx.open_table(tables::INVOICES)?,
            &keys::tenant_id(self.tenant, inv.id),
            &*inv,
        )
    }
}

/// The amount a credit note takes back, tax included: an amount as given; lines by their
/// amounts plus the exclusive tax the invoice charged on them.
fn amount_of(inv: &Invoice, credited: &Credited) -> Result<i64, CreditNoteError> {
    let lines = match credited {
        Credited::Amount(a) => return Ok(*a),
        Credited::Lines(lines) => lines,
    };
    let exponent = crate::currency::minor_unit_exponent(&inv.currency).unwrap_or(2);
    let mut total = 0i64;
    for (i, (index, amount)) in lines.iter().enumerate() {
        let field = format!("lines.{i}.line");
        let line = inv
            .lines
            .get(*index as usize)
            .filter(|l| l.amount_minor > 0 && l.kind != LineKind::Discount);
        let Some(line) = line else {
            return Err(CreditNoteError::Line {
                field,
                detail: format!("the invoice has no line {index} with an amount to credit"),
            });
        };
        if *amount > line.amount_minor {
            return Err(CreditNoteError::Line {
                field: format!("lines.{i}.amount_minor"),
                detail: format!("line {index} is {} at most", line.amount_minor),
            });
        }
        let mut with_tax = *amount;
        for t in inv.tax_lines.iter().filter(|t| !t.inclusive) {
            let exact = crate::billing::pricing::from_minor(*amount, exponent);
            let on_top = tax::line_tax(exact, t.percentage.0, false, exponent).map_err(|_| {
                CreditNoteError::Line {
                    field: format!("lines.{i}.amount_minor"),
                    detail: "out of range".into(),
                }
            })?;
            with_tax = with_tax.saturating_add(on_top);
        }
        total = total.saturating_add(with_tax);
    }
    Ok(total)
}

/// One credit note.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<CreditNote>, StoreError> {
    get_record(
        &tx.open_table(tables::CREDIT_NOTES)?,
        keys::tenant_id(tenant, id),
    )
}

/// A page of credit notes, in creation order, optionally of one invoice.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    invoice: Option<Id>,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<CreditNote>, bool), StoreError> {
    let table = tx.open_table(tables::CREDIT_NOTES)?;
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
    for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        let (_, value) = entry?;
        let note: CreditNote = codec::decode(value.value())?;
        if invoice.is_some_and(|i| i != note.invoice) {
            continue;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(note);
    }
    Ok((out, false))
}
