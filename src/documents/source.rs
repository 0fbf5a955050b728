//! Where a document's parties come from. Today the buyer is the customer record as it is now
//! and the seller is empty; [`invoice_document`] is the one place to switch to the seller
//! settings and the buyer snapshot taken when the invoice was issued.

use redb::ReadTransaction;

use crate::billing::invoice::Invoice;
use crate::customers::{self, Customer};
use crate::store::keys::TenantId;
use crate::store::StoreError;

use super::model::{Document, Party, PartyTaxId, PostalAddress};

/// The locale of a customer without one: English, US conventions.
pub const DEFAULT_LOCALE: &str = "en-US";

/// The document of a stored invoice, addressed to its customer as the record reads now and
/// written in the customer's locale ([`DEFAULT_LOCALE`] when unset).
pub fn invoice_document(
    tx: &ReadTransaction,
    tenant: TenantId,
    invoice: &Invoice,
) -> Result<Document, StoreError> {
    let customer = customers::get(tx, tenant, invoice.customer)?;
    let locale = customer
        .as_ref()
        .and_then(|c| c.locale.clone())
        .unwrap_or_else(|| DEFAULT_LOCALE.to_string());
    let buyer = match &customer {
        Some(c) => buyer_party(c),
        None => Party {
            name: invoice.customer.display(customers::PREFIX),
            ..Party::default()
        },
    };
    Ok(Document::for_invoice(
        invoice,
        buyer,
        Party::default(),
        &locale,
    ))
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
        address: customer.address.as_ref().map(|a| PostalAddress {
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            city: a.city.clone(),
            postal_code: a.postal_code.clone(),
            region: a.region.clone(),
            country: a.country.clone(),
        }),
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
