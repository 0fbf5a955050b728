//! The invoice of a prepaid wallet top-up: one "Prepaid credit" line, numbered like any other
//! invoice, and no usage, discounts, minimum, credits or tax.
//!
//! Why no tax: the credit a top-up buys pays later invoices whose totals already carry their
//! tax (credits are drawn against the total), so taxing the top-up too would tax one supply
//! twice. Why `prepayments` and not revenue: nothing has been supplied yet; the amount becomes
//! the grant's liability when the payment succeeds and revenue only when an invoice uses it.
//!
//! The invoice's `subscription` field holds the top-up's id (a top-up invoice bills no
//! subscription), so its charge key (top-up, issue instant) is unique per top-up.

use crate::store::WriteTxn;
use rust_decimal::Decimal;

use super::invoice::{self, Invoice, InvoiceError, InvoiceKind, InvoiceStatus, Line, LineKind};
use super::snapshot::Issued;
use crate::decimal::Stored;
use crate::id::Id;
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::ledger::journal::{self, Draft, Links, Posting};
use crate::store::keys::TenantId;
use crate::store::StoreError;

/// The description of a top-up invoice's one line.
pub const LINE_DESCRIPTION: &str = "Prepaid credit";

/// What a top-up invoice bills.
#[derive(Debug, Clone)]
pub struct TopUpInvoice<'a> {
    /// The top-up (`tup_…`); stored in the invoice's `subscription` field.
    pub top_up: Id,
    /// Who pays.
    pub customer: Id,
    /// ISO 4217 (the customer's).
    pub currency: &'a str,
    /// Positive minor units.
    pub amount_minor: i64,
    /// Issue instant.
    pub now_ms: i64,
    /// The intent.
    pub origin: &'a str,
}

/// The one line of a top-up invoice.
pub fn line(amount_minor: i64, currency: &str, at_ms: i64) -> Line {
    let exponent = crate::currency::minor_unit_exponent(currency).unwrap_or(2);
    Line {
        kind: LineKind::PrepaidCredit,
        description: LINE_DESCRIPTION.to_string(),
        meter: None,
        period_start_ms: at_ms,
        period_end_ms: at_ms,
        quantity: Stored(Decimal::ONE),
        quantity_before: None,
        quantity_after: None,
        proration: None,
        unit_price: Some(Stored(Decimal::new(amount_minor, u32::from(exponent)))),
        tiers: Vec::new(),
        amount_exact: Stored(Decimal::new(amount_minor, u32::from(exponent))),
        amount_minor,
        events: 0,
        events_digest: [0; 32],
    }
}

/// Issues a top-up invoice in the caller's transaction: its number, both parties, the entry
/// (customer's receivable debited, `prepayments` credited), `invoice.finalized`. The checks
/// (a positive, postable amount) come before the first write.
pub fn issue(
    tx: &WriteTxn,
    tenant: TenantId,
    spec: &TopUpInvoice<'_>,
) -> Result<Result<Invoice, InvoiceError>, StoreError> {
    if spec.amount_minor <= 0 || spec.amount_minor > journal::MAX_AMOUNT_MINOR {
        return Ok(Err(InvoiceError::OutOfRange));
    }
    let id = Id::generate_at(spec.now_ms);
    let entry = Id::generate_at(spec.now_ms);
    let draft = Draft {
        id: entry,
        kind: "invoice".into(),
        reason: format!("top-up invoice {} issued", id.display(invoice::PREFIX)),
        links: Links {
            customer: Some(spec.customer),
            invoice: Some(id),
            ..Links::default()
        },
        origin: spec.origin.to_string(),
        postings: vec![
            Posting {
                account: AccountRef::Receivable {
                    customer: spec.customer,
                },
                currency: spec.currency.to_string(),
                amount_minor: spec.amount_minor,
            },
            Posting {
                account: AccountRef::System(SystemAccount::Prepayments),
                currency: spec.currency.to_string(),
                amount_minor: -spec.amount_minor,
            },
        ],
    };
    if let Err(e) = journal::post(tx, tenant, spec.now_ms, draft)? {
        return Ok(Err(InvoiceError::Ledger(e.to_string())));
    }
    let issued = Issued::take(tx, tenant, spec.customer, spec.now_ms)?;
    let mut inv = Invoice {
        id,
        subscription: spec.top_up,
        customer: spec.customer,
        plan: Id(0),
        currency: spec.currency.to_string(),
        kind: InvoiceKind::TopUp,
        status: InvoiceStatus::Finalized,
        period_start_ms: spec.now_ms,
        period_end_ms: spec.now_ms,
        lines: vec![line(spec.amount_minor, spec.currency, spec.now_ms)],
        subtotal_minor: spec.amount_minor,
        credits: Vec::new(),
        credits_applied_minor: 0,
        amount_due_minor: spec.amount_minor,
        issued_at_ms: spec.now_ms,
        events_through: 0,
        inputs_digest: [0; 32],
        entries: vec![entry],
        replaces: None,
        replaced_by: None,
        billing_run: None,
        voided_at_ms: None,
        paid_at_ms: None,
        number: Some(issued.number.text),
        number_seq: Some(issued.number.value),
        number_year: issued.number.year,
        buyer: Some(issued.buyer),
        seller: Some(issued.seller),
        tax_lines: Vec::new(),
        tax_minor: 0,
        total_minor: spec.amount_minor,
        reverse_charge: false,
        notes: Vec::new(),
        credited_minor: 0,
        credited_due_minor: 0,
        credit_notes: Vec::new(),
    };
    inv.inputs_digest = invoice::inputs_digest(&inv);
    invoice::store_invoice(tx, tenant, &inv)?;
    invoice::emit_invoice(
        tx,
        tenant,
        &inv,
        "invoice.finalized",
        "finalized",
        spec.now_ms,
    )?;
    Ok(Ok(inv))
}

/// `tally invoice verify` of a top-up invoice: its one line, totals and (absent) tax and
/// credits follow from the amount alone.
pub fn verify(inv: &Invoice) -> Result<(), String> {
    let expected = line(inv.total_minor, &inv.currency, inv.period_start_ms);
    if inv.lines != [expected] {
        return Err("a top-up invoice has exactly one prepaid credit line of its total".into());
    }
    if inv.subtotal_minor != inv.total_minor || inv.tax_minor != 0 || !inv.tax_lines.is_empty() {
        return Err(format!(
            "subtotal {} and tax {} of a top-up invoice of {}",
            inv.subtotal_minor, inv.tax_minor, inv.total_minor
        ));
    }
    if !inv.credits.is_empty() || inv.credits_applied_minor != 0 {
        return Err("a top-up invoice draws no credits".into());
    }
    if inv.inputs_digest != invoice::inputs_digest(inv) {
        return Err("the inputs digest differs".into());
    }
    Ok(())
}
