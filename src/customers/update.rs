//! What an update changes, and how a changed customer is recorded: the new version and its
//! `customer.updated` notification in one write. The command that decides whether an update
//! may happen is `billing::customer_update` (the currency lock depends on billing).

use std::collections::BTreeMap;

use crate::store::WriteTxn;

use super::{Address, Customer, TaxId, PREFIX};
use crate::store::keys::{self, TenantId};
use crate::store::{put_record, tables, StoreError};

/// The fields an update sets; `None` leaves a field as it is, `Some(None)` clears an optional
/// one. Values are checked at entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Must equal the current external id when given (it never changes).
    pub external_id: Option<String>,
    /// Display name.
    pub name: Option<Option<String>>,
    /// Billing email.
    pub email: Option<Option<String>>,
    /// Replaces every pair.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Legal name.
    pub legal_name: Option<Option<String>>,
    /// Billing address.
    pub address: Option<Option<Address>>,
    /// Replaces every tax id.
    pub tax_ids: Option<Vec<TaxId>>,
    /// Locale.
    pub locale: Option<Option<String>>,
    /// ISO 4217 code; locked once money was billed in the current one.
    pub currency: Option<String>,
    /// Replaces the default tax rates.
    pub tax_rates: Option<Vec<crate::id::Id>>,
    /// Reverse charge.
    pub reverse_charge: Option<bool>,
}

impl Changes {
    /// `current` with these changes made (same version: the caller decides whether anything
    /// changed).
    pub fn applied_to(&self, current: &Customer) -> Customer {
        let mut next = current.clone();
        let set = |field: &mut Option<String>, value: &Option<Option<String>>| {
            if let Some(v) = value {
                field.clone_from(v);
            }
        };
        set(&mut next.name, &self.name);
        set(&mut next.email, &self.email);
        set(&mut next.legal_name, &self.legal_name);
        set(&mut next.locale, &self.locale);
        if let Some(metadata) = &self.metadata {
            next.metadata.clone_from(metadata);
        }
        if let Some(address) = &self.address {
            next.address.clone_from(address);
        }
        if let Some(tax_ids) = &self.tax_ids {
            next.tax_ids.clone_from(tax_ids);
        }
        if let Some(currency) = &self.currency {
            next.currency.clone_from(currency);
        }
        if let Some(tax_rates) = &self.tax_rates {
            next.tax_rates.clone_from(tax_rates);
        }
        if let Some(reverse_charge) = self.reverse_charge {
            next.reverse_charge = reverse_charge;
        }
        next
    }
}

/// Writes `customer` (its version already advanced) and records `customer.updated` under the
/// identity of that version, so the same update reported twice notifies once.
pub fn record_update(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: &Customer,
    now_ms: i64,
) -> Result<(), StoreError> {
    put_record(
        &mut tx.open_table(tables::CUSTOMERS)?,
        &keys::tenant_id(tenant, customer.id),
        customer,
    )?;
    crate::notifications::outbox::emit(
        tx,
        tenant,
        crate::notifications::outbox::Effect {
            event_type: "customer.updated",
            effect: format!(
                "{}:updated:v{}",
                customer.id.display(PREFIX),
                customer.version
            ),
            customer: Some(customer.id),
            kind: "customer",
            id: customer.id,
            record: customer,
        },
        now_ms,
    )
}
