//! Customers: who is billed. `external_id` is the tenant's own name for the customer (its user
//! or account id) and is unique per tenant, so usage events can name customers without knowing
//! Tally's ids.

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::store::keys::{self, tenant_bytes, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "cus";
/// Longest `external_id`, in bytes.
pub const MAX_EXTERNAL_ID_BYTES: usize = 255;
/// Longest `name` or `email`, in characters.
pub const MAX_TEXT_CHARS: usize = 512;
/// Most metadata entries, and the longest key and value.
pub const MAX_METADATA_ENTRIES: usize = 50;
/// Longest metadata key, in characters.
pub const MAX_METADATA_KEY_CHARS: usize = 40;
/// Longest metadata value, in characters.
pub const MAX_METADATA_VALUE_CHARS: usize = 500;

/// A customer as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Tally's id.
    pub id: Id,
    /// The tenant's id for this customer; unique per tenant.
    pub external_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Billing email.
    pub email: Option<String>,
    /// ISO 4217 currency this customer is billed in.
    pub currency: String,
    /// Free-form string pairs for the tenant's own use.
    pub metadata: BTreeMap<String, String>,
    /// When it was created.
    pub created_at_ms: i64,
}

/// Why a customer command did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    /// Another customer of this tenant has the external id.
    #[error("a customer with external_id {external_id:?} already exists ({existing})")]
    Exists {
        /// The duplicate external id.
        external_id: String,
        /// The customer that has it, as `cus_…`.
        existing: String,
    },
}

/// Creates a customer unless its external id is taken.
#[derive(Clone)]
pub struct CreateCustomer {
    /// Owner.
    pub tenant: TenantId,
    /// The complete record (id and time assigned by the caller).
    pub customer: Customer,
}

impl Command for CreateCustomer {
    type Output = Result<Customer, CustomerError>;

    fn apply(self, tx: &WriteTransaction) -> Result<Self::Output, StoreError> {
        let index_key = tenant_bytes(self.tenant, self.customer.external_id.as_bytes());
        let mut index = tx.open_table(tables::CUSTOMER_BY_EXTERNAL)?;
        let existing = index
            .get(index_key.as_slice())?
            .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
            .map(Id::from_bytes);
        if let Some(existing) = existing {
            return Ok(Err(CustomerError::Exists {
                external_id: self.customer.external_id,
                existing: existing.display(PREFIX),
            }));
        }
        let mut customers = tx.open_table(tables::CUSTOMERS)?;
        put_record(
            &mut customers,
            &keys::tenant_id(self.tenant, self.customer.id),
            &self.customer,
        )?;
        index.insert(index_key.as_slice(), self.customer.id.to_bytes().as_slice())?;
        drop((index, customers));
        crate::notifications::outbox::emit(
            tx,
            self.tenant,
            crate::notifications::outbox::Effect {
                event_type: "customer.created",
                effect: format!("{}:created", self.customer.id.display(PREFIX)),
                customer: Some(self.customer.id),
                kind: "customer",
                id: self.customer.id,
                record: &self.customer,
            },
            self.customer.created_at_ms,
        )?;
        Ok(Ok(self.customer))
    }
}

/// One customer of a tenant, if it exists (another tenant's id is simply absent).
pub fn get(tx: &ReadTransaction, tenant: TenantId, id: Id) -> Result<Option<Customer>, StoreError> {
    let table = tx.open_table(tables::CUSTOMERS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// One customer, inside a write transaction (for commands that read what they act on).
pub fn load_in_write(
    tx: &redb::WriteTransaction,
    tenant: TenantId,
    id: Id,
) -> Result<Option<Customer>, StoreError> {
    let table = tx.open_table(tables::CUSTOMERS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// The customer with this external id, if any.
pub fn by_external_id(
    tx: &ReadTransaction,
    tenant: TenantId,
    external_id: &str,
) -> Result<Option<Customer>, StoreError> {
    let index = tx.open_table(tables::CUSTOMER_BY_EXTERNAL)?;
    let id = index
        .get(tenant_bytes(tenant, external_id.as_bytes()).as_slice())?
        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
        .map(Id::from_bytes);
    match id {
        Some(id) => match get(tx, tenant, id)? {
            Some(c) => Ok(Some(c)),
            None => Err(StoreError::Corrupt(format!(
                "external id {external_id:?} points at missing {}",
                id.display(PREFIX)
            ))),
        },
        None => Ok(None),
    }
}

/// A page of customers in id (creation) order after `after`, and whether more follow.
pub fn list(
    tx: &ReadTransaction,
    tenant: TenantId,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Customer>, bool), StoreError> {
    let table = tx.open_table(tables::CUSTOMERS)?;
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        Some(id) => {
            let mut k = keys::tenant_id(tenant, id).to_vec();
            // The smallest key strictly after `id`.
            k.push(0);
            k
        }
        None => start,
    };
    let mut out = Vec::with_capacity(limit.min(512));
    let mut has_more = false;
    for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        let (_, value) = entry?;
        if out.len() == limit {
            has_more = true;
            break;
        }
        out.push(codec::decode(value.value())?);
    }
    Ok((out, has_more))
}

/// Creates a USD customer directly in `store`, below HTTP; returns it. Unit and property tests
/// of ingest, billing, the ledger and storage all start from one.
#[cfg(test)]
pub(crate) fn create_for_test(
    store: &crate::store::Store,
    tenant: TenantId,
    external_id: &str,
    created_at_ms: i64,
) -> Customer {
    store
        .apply_one(CreateCustomer {
            tenant,
            customer: Customer::for_test(external_id, created_at_ms),
        })
        .expect("store")
        .expect("customer")
}

#[cfg(test)]
impl Customer {
    /// A USD customer with only the required fields.
    pub(crate) fn for_test(external_id: &str, created_at_ms: i64) -> Self {
        Customer {
            id: Id::generate(),
            external_id: external_id.into(),
            name: None,
            email: None,
            currency: "USD".into(),
            metadata: BTreeMap::new(),
            created_at_ms,
        }
    }
}
