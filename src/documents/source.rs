//! Where a document's parties come from: the buyer and seller snapshotted onto the invoice when
//! it was issued (so later edits of the customer or the tenant's settings never change an issued
//! document), with the logo the invoice was issued with. An invoice issued before snapshots
//! existed falls back to the customer record as it reads now and an empty seller.

use crate::store::ReadTxn;

use crate::billing::invoice::Invoice;
use crate::billing::snapshot::{Buyer, Seller};
use crate::customers::{self, Customer};
use crate::store::keys::TenantId;
use crate::store::{tables, StoreError};

use super::model::{
    DocLine, Document, DocumentKind, Logo, LogoType, Party, PartyTaxId, PostalAddress,
};

/// The locale of a customer without one: English, US conventions.
pub const DEFAULT_LOCALE: &str = "en-US";

/// The document of a stored invoice, addressed and written as it was issued.
pub fn invoice_document(
    tx: &ReadTxn,
    tenant: TenantId,
    invoice: &Invoice,
) -> Result<Document, StoreError> {
    let (buyer, locale) = match &invoice.buyer {
        Some(b) => (snapshot_buyer(b, invoice), b.locale.clone()),
        None => {
            let customer = customers::get(tx, tenant, invoice.customer)?;
            let buyer = match &customer {
                Some(c) => buyer_party(c),
                None => Party {
                    name: invoice.customer.display(customers::PREFIX),
                    ..Party::default()
                },
            };
            (buyer, customer.and_then(|c| c.locale))
        }
    };
    let locale = locale.unwrap_or_else(|| DEFAULT_LOCALE.to_string());
    let seller = invoice
        .seller
        .as_ref()
        .map(seller_party)
        .unwrap_or_default();
    let mut doc = Document::for_invoice(invoice, buyer, seller, &locale);
    if let Some(s) = &invoice.seller {
        doc.footer = s.invoice_footer.clone();
        doc.payment_instructions = s.payment_instructions.clone();
        doc.logo = issued_logo(tx, tenant, s)?;
    }
    Ok(doc)
}

/// The document of a credit note: the parties, locale and logo of the invoice it corrects, the
/// lines it credits (or one line for an amount), its net, tax and total, and its reason.
pub fn credit_note_document(
    tx: &ReadTxn,
    tenant: TenantId,
    note: &crate::credit_notes::CreditNote,
    invoice: &Invoice,
) -> Result<Document, StoreError> {
    let mut doc = invoice_document(tx, tenant, invoice)?;
    let corrects = invoice
        .number
        .clone()
        .unwrap_or_else(|| invoice.id.display(crate::billing::invoice::PREFIX));
    doc.kind = DocumentKind::CreditNote;
    doc.number = Some(note.number.clone());
    doc.status = "issued".into();
    doc.issued_at_ms = note.created_at_ms;
    let credited_line = |description: String, amount_minor: i64| DocLine {
        description,
        period_start_ms: invoice.period_start_ms,
        period_end_ms: invoice.period_end_ms,
        quantity: String::new(),
        unit_price: String::new(),
        amount_minor,
        tax_label: None,
    };
    doc.lines = if note.lines.is_empty() {
        vec![credited_line(
            format!("Credit on invoice {corrects}"),
            note.net_minor,
        )]
    } else {
        note.lines
            .iter()
            .map(|(index, amount)| {
                let what = usize::try_from(*index)
                    .ok()
                    .and_then(|i| invoice.lines.get(i))
                    .map_or_else(String::new, |l| l.description.clone());
                credited_line(format!("Credit: {what}"), *amount)
            })
            .collect()
    };
    doc.tax_rows = Vec::new();
    doc.subtotal_minor = note.net_minor;
    doc.tax_minor = note.tax_minor;
    doc.total_minor = note.amount_minor;
    doc.credits_applied_minor = 0;
    doc.amount_due_minor = note.amount_minor;
    doc.notes = std::iter::once(format!("Corrects invoice {corrects}."))
        .chain(note.reason.clone())
        .collect();
    Ok(doc)
}

/// The logo the invoice was issued with, if its bytes are kept.
fn issued_logo(
    tx: &ReadTxn,
    tenant: TenantId,
    seller: &Seller,
) -> Result<Option<Logo>, StoreError> {
    let Some(reference) = &seller.logo else {
        return Ok(None);
    };
    let table = tx.open_table(tables::LOGOS)?;
    let Some(stored) = crate::tenant_settings::logo(&table, tenant, &reference.blake3)? else {
        return Ok(None);
    };
    let media_type = match stored.media_type.as_str() {
        "image/png" => LogoType::Png,
        "image/svg+xml" => LogoType::Svg,
        _ => return Ok(None),
    };
    Ok(Some(Logo {
        media_type,
        bytes: stored.data,
    }))
}

fn address(a: &crate::customers::details::Address) -> PostalAddress {
    PostalAddress {
        line1: a.line1.clone(),
        line2: a.line2.clone(),
        city: a.city.clone(),
        postal_code: a.postal_code.clone(),
        region: a.region.clone(),
        country: a.country.clone(),
    }
}

/// The buyer as snapshotted at issue.
fn snapshot_buyer(b: &Buyer, invoice: &Invoice) -> Party {
    Party {
        name: b
            .name
            .clone()
            .or_else(|| b.legal_name.clone())
            .unwrap_or_else(|| invoice.customer.display(customers::PREFIX)),
        legal_name: b.legal_name.clone(),
        email: b.email.clone(),
        address: b.address.as_ref().map(address),
        tax_ids: b
            .tax_ids
            .iter()
            .map(|t| PartyTaxId {
                kind: t.kind.clone(),
                value: t.value.clone(),
            })
            .collect(),
    }
}

/// The seller as snapshotted at issue.
fn seller_party(s: &Seller) -> Party {
    Party {
        name: s.legal_name.clone().unwrap_or_default(),
        legal_name: s.legal_name.clone(),
        email: s.email.clone(),
        address: s.address.as_ref().map(address),
        tax_ids: s
            .tax_id
            .iter()
            .map(|t| PartyTaxId {
                kind: t.kind.clone(),
                value: t.value.clone(),
            })
            .collect(),
    }
}

/// A customer as the buyer: its name (the external id when it has none), legal name, email,
/// address and tax ids.
pub fn buyer_party(customer: &Customer) -> Party {
    Party {
        name: customer
            .name
            .clone()
            .unwrap_or_else(|| customer.external_id.clone()),
        legal_name: customer.legal_name.clone(),
        email: customer.email.clone(),
        address: customer.address.as_ref().map(address),
        tax_ids: customer
            .tax_ids
            .iter()
            .map(|t| PartyTaxId {
                kind: t.kind.clone(),
                value: t.value.clone(),
            })
            .collect(),
    }
}
