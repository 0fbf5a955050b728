//! Updating a customer. It lives above `customers` because whether the currency may change
//! depends on billing: not once the customer has an invoice, nor while a subscription of theirs
//! is not canceled (its plan is priced in the current currency).

use crate::store::{ReadableTable, WriteTxn};

use super::subscription::{Subscription, SubscriptionStatus};
use crate::customers::{self, Changes, Customer, CustomerError};
use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{get_record, tables, StoreError};

/// Changes a customer's details. Everything is checked again here, inside the transaction: the
/// customer exists, its external id is not being changed, and a new currency is not locked.
/// An update that changes nothing writes nothing and answers the customer as it is.
#[derive(Clone)]
pub struct UpdateCustomer {
    /// Owner.
    pub tenant: TenantId,
    /// Which customer.
    pub id: Id,
    /// What to change.
    pub changes: Changes,
    /// Now.
    pub now_ms: i64,
}

impl Command for UpdateCustomer {
    type Output = Result<Customer, CustomerError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(current) = customers::load_in_write(tx, self.tenant, self.id)? else {
            return Ok(Err(CustomerError::Missing(
                self.id.display(customers::PREFIX),
            )));
        };
        if self
            .changes
            .external_id
            .as_ref()
            .is_some_and(|e| *e != current.external_id)
        {
            return Ok(Err(CustomerError::Immutable {
                field: "external_id",
            }));
        }
        let mut next = self.changes.applied_to(&current);
        if next == current {
            return Ok(Ok(current));
        }
        if next.tax_rates != current.tax_rates {
            if let Err(e) = crate::tax_rates::check_assignable(
                tx,
                self.tenant,
                &next.tax_rates,
                &current.tax_rates,
            )? {
                return Ok(Err(CustomerError::TaxRates(e)));
            }
        }
        if next.currency != current.currency {
            if let Some(reason) = currency_lock(tx, self.tenant, self.id)? {
                return Ok(Err(CustomerError::CurrencyLocked { reason }));
            }
        }
        next.version = current.version.saturating_add(1);
        customers::update::record_update(tx, self.tenant, &next, self.now_ms)?;
        Ok(Ok(next))
    }
}

/// Why the customer's currency cannot change, if it cannot: its first invoice, or its first
/// subscription that is not canceled.
pub fn currency_lock(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: Id,
) -> Result<Option<String>, StoreError> {
    let prefix = keys::tenant_id(tenant, customer).to_vec();
    let mut end = prefix.clone();
    end.extend_from_slice(&[0xFF; 17]);
    let invoices = tx.open_table(tables::INVOICES_BY_CUSTOMER)?;
    if let Some(entry) = invoices
        .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
        .next()
    {
        let (key, _) = entry?;
        let invoice = indexed_id(key.value())?;
        return Ok(Some(format!(
            "the customer has invoice {} in its currency",
            invoice.display(super::invoice::PREFIX)
        )));
    }
    let index = tx.open_table(tables::SUBSCRIPTIONS_BY_CUSTOMER)?;
    let subscriptions = tx.open_table(tables::SUBSCRIPTIONS)?;
    for entry in index.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
        let (key, _) = entry?;
        let id = indexed_id(key.value())?;
        let sub: Option<Subscription> = get_record(&subscriptions, keys::tenant_id(tenant, id))?;
        if let Some(sub) = sub.filter(|s| s.status != SubscriptionStatus::Canceled) {
            return Ok(Some(format!(
                "the customer has subscription {} ({}); cancel it first",
                sub.id.display(super::subscription::PREFIX),
                sub.status.as_str()
            )));
        }
    }
    Ok(None)
}

/// The second id of a (tenant, customer, id) index key.
fn indexed_id(key: &[u8]) -> Result<Id, StoreError> {
    key.get(24..40)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(Id::from_bytes)
        .ok_or_else(|| StoreError::Corrupt("malformed customer index key".into()))
}
