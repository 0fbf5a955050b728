//! Customers: who is billed. `external_id` is the tenant's own name for the customer (its user
//! or account id) and is unique per tenant, so usage events can name customers without knowing
//! Tally's ids.

use std::collections::BTreeMap;

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::store::codec::{self, CodecError};
use crate::store::keys::{self, tenant_bytes, TenantId};
use crate::store::writer::Command;
use crate::store::{put_record, tables, StoreError};

pub mod details;
pub mod search;
pub mod update;

pub use details::{Address, TaxId};
pub use update::Changes;

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
    /// The registered name invoices are addressed to, when it differs from `name`.
    pub legal_name: Option<String>,
    /// Billing address.
    pub address: Option<Address>,
    /// Tax registrations printed on invoices, at most [`details::MAX_TAX_IDS`].
    pub tax_ids: Vec<TaxId>,
    /// BCP 47 language tag for documents and messages (`en`, `de-DE`).
    pub locale: Option<String>,
    /// 1 when created, one more per update that changed something: names each update once
    /// (its `customer.updated` notification is keyed by it).
    pub version: u64,
    /// Default tax rates of its invoices, at most [`crate::tax_rates::MAX_PER_CUSTOMER`].
    pub tax_rates: Vec<Id>,
    /// With a tax id: its invoices carry no tax and the reverse-charge note.
    pub reverse_charge: bool,
}

/// A customer as records written before tax rates existed hold it ([`decode`] falls back to
/// it the same way as to [`CustomerV1`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerV2 {
    /// Tally's id.
    pub id: Id,
    /// The tenant's id.
    pub external_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Billing email.
    pub email: Option<String>,
    /// ISO 4217 currency.
    pub currency: String,
    /// String pairs.
    pub metadata: BTreeMap<String, String>,
    /// When it was created.
    pub created_at_ms: i64,
    /// Registered name.
    pub legal_name: Option<String>,
    /// Billing address.
    pub address: Option<Address>,
    /// Tax registrations.
    pub tax_ids: Vec<TaxId>,
    /// Language tag.
    pub locale: Option<String>,
    /// Update counter.
    pub version: u64,
}

impl From<CustomerV2> for Customer {
    fn from(old: CustomerV2) -> Self {
        Customer {
            id: old.id,
            external_id: old.external_id,
            name: old.name,
            email: old.email,
            currency: old.currency,
            metadata: old.metadata,
            created_at_ms: old.created_at_ms,
            legal_name: old.legal_name,
            address: old.address,
            tax_ids: old.tax_ids,
            locale: old.locale,
            version: old.version,
            tax_rates: Vec::new(),
            reverse_charge: false,
        }
    }
}

/// A customer as records written before billing details existed hold it. New fields are
/// appended after these, so such a record never decodes as a [`Customer`] (bincode runs out of
/// bytes) and [`decode`] falls back to this layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerV1 {
    /// Tally's id.
    pub id: Id,
    /// The tenant's id.
    pub external_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Billing email.
    pub email: Option<String>,
    /// ISO 4217 currency.
    pub currency: String,
    /// String pairs.
    pub metadata: BTreeMap<String, String>,
    /// When it was created.
    pub created_at_ms: i64,
}

impl From<CustomerV1> for Customer {
    fn from(old: CustomerV1) -> Self {
        Customer {
            id: old.id,
            external_id: old.external_id,
            name: old.name,
            email: old.email,
            currency: old.currency,
            metadata: old.metadata,
            created_at_ms: old.created_at_ms,
            legal_name: None,
            address: None,
            tax_ids: Vec::new(),
            locale: None,
            version: 1,
            tax_rates: Vec::new(),
            reverse_charge: false,
        }
    }
}

impl Customer {
    /// A new customer (version 1) with only the required fields; the caller sets the rest.
    pub fn new(id: Id, external_id: String, currency: String, created_at_ms: i64) -> Self {
        Customer {
            id,
            external_id,
            name: None,
            email: None,
            currency,
            metadata: BTreeMap::new(),
            created_at_ms,
            legal_name: None,
            address: None,
            tax_ids: Vec::new(),
            locale: None,
            version: 1,
            tax_rates: Vec::new(),
            reverse_charge: false,
        }
    }
}

/// Decodes a stored customer, in today's layout or the one before it: the one way customer
/// records (the table's and those notifications hold) are read.
pub fn decode(bytes: &[u8]) -> Result<Customer, CodecError> {
    match codec::decode::<Customer>(bytes) {
        Ok(customer) => Ok(customer),
        Err(current) => codec::decode::<CustomerV2>(bytes)
            .map(Customer::from)
            .or_else(|_| codec::decode::<CustomerV1>(bytes).map(Customer::from))
            .map_err(|_| current),
    }
}

/// One customer from any transaction's customers table.
pub fn get_customer(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    id: Id,
) -> Result<Option<Customer>, StoreError> {
    match table.get(keys::tenant_id(tenant, id).as_slice())? {
        Some(guard) => Ok(Some(decode(guard.value())?)),
        None => Ok(None),
    }
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
    /// No such customer.
    #[error("no customer {0}")]
    Missing(String),
    /// The request would change a field that never changes.
    #[error("{field} cannot change once the customer exists")]
    Immutable {
        /// The field.
        field: &'static str,
    },
    /// The default tax rates cannot be assigned.
    #[error("tax_rates: {0}")]
    TaxRates(crate::tax_rates::Unassignable),
    /// The currency cannot change: money was, or is being, billed in it.
    #[error("currency cannot change: {reason}")]
    CurrencyLocked {
        /// Why, naming the invoice or subscription.
        reason: String,
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

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
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
        if let Err(e) =
            crate::tax_rates::check_assignable(tx, self.tenant, &self.customer.tax_rates, &[])?
        {
            return Ok(Err(CustomerError::TaxRates(e)));
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
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Customer>, StoreError> {
    let table = tx.open_table(tables::CUSTOMERS)?;
    get_customer(&table, tenant, id)
}

/// One customer, inside a write transaction (for commands that read what they act on).
pub fn load_in_write(
    tx: &crate::store::WriteTxn,
    tenant: TenantId,
    id: Id,
) -> Result<Option<Customer>, StoreError> {
    let table = tx.open_table(tables::CUSTOMERS)?;
    get_customer(&table, tenant, id)
}

/// The customer with this external id, if any.
pub fn by_external_id(
    tx: &ReadTxn,
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
    tx: &ReadTxn,
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
        out.push(decode(value.value())?);
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
        Customer::new(
            Id::generate(),
            external_id.into(),
            "USD".into(),
            created_at_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::customer_update::UpdateCustomer;
    use crate::store::Store;

    const TENANT: TenantId = TenantId(1);

    /// The customer record as it was stored before billing details existed.
    #[derive(Serialize)]
    struct OldLayout {
        id: Id,
        external_id: String,
        name: Option<String>,
        email: Option<String>,
        currency: String,
        metadata: BTreeMap<String, String>,
        created_at_ms: i64,
    }

    /// Writes raw record bytes, as an older binary did.
    #[derive(Clone)]
    struct PutRaw {
        id: Id,
        external_id: String,
        bytes: Vec<u8>,
    }

    impl Command for PutRaw {
        type Output = ();

        fn apply(self, tx: &WriteTxn) -> Result<(), StoreError> {
            tx.open_table(tables::CUSTOMERS)?.insert(
                keys::tenant_id(TENANT, self.id).as_slice(),
                self.bytes.as_slice(),
            )?;
            tx.open_table(tables::CUSTOMER_BY_EXTERNAL)?.insert(
                tenant_bytes(TENANT, self.external_id.as_bytes()).as_slice(),
                self.id.to_bytes().as_slice(),
            )?;
            Ok(())
        }
    }

    #[test]
    fn a_record_from_before_tax_rates_decodes_without_rates() {
        let before = CustomerV2 {
            id: Id::generate(),
            external_id: "v2".into(),
            name: None,
            email: Some("a@b.c".into()),
            currency: "EUR".into(),
            metadata: BTreeMap::new(),
            created_at_ms: 1_700_000_000_000,
            legal_name: Some("V2 GmbH".into()),
            address: None,
            tax_ids: vec![TaxId {
                kind: "eu_vat".into(),
                value: "DE123456789".into(),
            }],
            locale: Some("de-DE".into()),
            version: 4,
        };
        let bytes = codec::encode(&before).expect("encode");
        assert!(codec::decode::<Customer>(&bytes).is_err());
        let read = decode(&bytes).expect("decodes");
        assert_eq!(read, Customer::from(before));
        assert!(read.tax_rates.is_empty() && !read.reverse_charge);
        assert_eq!(read.version, 4);
        assert_eq!(read.tax_ids.len(), 1);
    }

    #[test]
    fn a_record_in_the_old_layout_decodes_with_version_one_and_updates_in_the_new() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("t.redb"), 1 << 20).expect("store");
        let old = OldLayout {
            id: Id::generate(),
            external_id: "legacy".into(),
            name: Some("Legacy Ltd".into()),
            email: None,
            currency: "EUR".into(),
            metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
            created_at_ms: 1_700_000_000_000,
        };
        let bytes = codec::encode(&old).expect("encode");
        assert!(
            codec::decode::<Customer>(&bytes).is_err(),
            "the old layout never reads as the new one"
        );
        let expected = Customer {
            name: Some("Legacy Ltd".into()),
            metadata: old.metadata.clone(),
            ..Customer::new(old.id, "legacy".into(), "EUR".into(), old.created_at_ms)
        };
        assert_eq!(decode(&bytes).expect("decodes"), expected);
        store
            .apply_one(PutRaw {
                id: old.id,
                external_id: old.external_id.clone(),
                bytes,
            })
            .expect("put");
        let tx = store.read().expect("read");
        assert_eq!(
            get(&tx, TENANT, old.id).expect("get"),
            Some(expected.clone())
        );
        assert_eq!(
            by_external_id(&tx, TENANT, "legacy").expect("by external id"),
            Some(expected.clone())
        );
        assert_eq!(
            list(&tx, TENANT, None, 10).expect("list").0,
            vec![expected.clone()]
        );
        drop(tx);
        let updated = store
            .apply_one(UpdateCustomer {
                tenant: TENANT,
                id: old.id,
                changes: Changes {
                    locale: Some(Some("de-DE".into())),
                    ..Changes::default()
                },
                now_ms: 1_700_000_001_000,
            })
            .expect("store")
            .expect("updated");
        assert_eq!(updated.version, 2);
        assert_eq!(updated.locale.as_deref(), Some("de-DE"));
        let tx = store.read().expect("read");
        let bytes = tx
            .open_table(tables::CUSTOMERS)
            .expect("table")
            .get(keys::tenant_id(TENANT, old.id).as_slice())
            .expect("get")
            .expect("present")
            .value()
            .to_vec();
        assert_eq!(
            codec::decode::<Customer>(&bytes).expect("new layout"),
            updated
        );
    }

    #[test]
    fn an_update_that_changes_nothing_keeps_the_version() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("t.redb"), 1 << 20).expect("store");
        let c = create_for_test(&store, TENANT, "same", 1_700_000_000_000);
        let update = |changes: Changes| {
            store
                .apply_one(UpdateCustomer {
                    tenant: TENANT,
                    id: c.id,
                    changes,
                    now_ms: 1_700_000_001_000,
                })
                .expect("store")
        };
        let same = update(Changes {
            currency: Some("USD".into()),
            name: Some(None),
            external_id: Some("same".into()),
            ..Changes::default()
        });
        assert_eq!(same, Ok(c.clone()));
        let moved = update(Changes {
            external_id: Some("other".into()),
            name: Some(Some("x".into())),
            ..Changes::default()
        });
        assert_eq!(
            moved,
            Err(CustomerError::Immutable {
                field: "external_id"
            })
        );
        let tx = store.read().expect("read");
        assert_eq!(get(&tx, TENANT, c.id).expect("get"), Some(c));
    }
}
