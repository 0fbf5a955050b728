//! Finding customers by a fragment of their external id, name or email.
//!
//! There is no text index: a search walks the tenant's customers in id order and keeps those
//! that contain the fragment. Each request examines at most a budget of rows, so a search over
//! a large tenant answers a short (even empty) page with a cursor that continues where the scan
//! stopped instead of reading every customer in one request.

use crate::store::ReadTxn;
use crate::store::ReadableTable;

use super::{decode, Customer};
use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::{tables, StoreError};

/// Customers one search request examines at most.
pub const SEARCH_SCAN_ROWS: usize = 10_000;

/// Longest search text, in characters.
pub const MAX_SEARCH_CHARS: usize = 255;

/// A search text, folded to lower case once so every row is compared the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needle(String);

impl Needle {
    /// The text to look for, compared without regard to case.
    pub fn new(text: &str) -> Self {
        Needle(text.to_lowercase())
    }

    /// Whether the customer's external id, name or email contains the text.
    pub fn matches(&self, c: &Customer) -> bool {
        let has = |field: &str| field.to_lowercase().contains(&self.0);
        has(&c.external_id)
            || c.name.as_deref().is_some_and(has)
            || c.email.as_deref().is_some_and(has)
    }
}

/// A page of the customers matching `needle`, in id (creation) order after `after`, examining
/// at most `budget` rows, and the cursor to continue from (`None` when nothing follows): the
/// last match returned, or the last row examined when the budget ran out first, so a search
/// that matches nothing for a long stretch still moves forward.
pub fn search(
    tx: &ReadTxn,
    tenant: TenantId,
    needle: &Needle,
    after: Option<Id>,
    limit: usize,
    budget: usize,
) -> Result<(Vec<Customer>, Option<Id>), StoreError> {
    let table = tx.open_table(tables::CUSTOMERS)?;
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        // The smallest key strictly after `after`.
        Some(id) => [keys::tenant_id(tenant, id).as_slice(), &[0]].concat(),
        None => start,
    };
    let mut out: Vec<Customer> = Vec::new();
    let mut last_examined = None;
    for (examined, entry) in table
        .range::<&[u8]>(lower.as_slice()..end.as_slice())?
        .enumerate()
    {
        if out.len() == limit {
            let cursor = out.last().map(|c| c.id);
            return Ok((out, cursor));
        }
        if examined == budget {
            return Ok((out, last_examined));
        }
        let (_, value) = entry?;
        let customer = decode(value.value())?;
        last_examined = Some(customer.id);
        if needle.matches(&customer) {
            out.push(customer);
        }
    }
    Ok((out, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::customers::{CreateCustomer, Customer};
    use crate::store::Store;

    const TENANT: TenantId = TenantId(1);

    fn add(store: &Store, external_id: &str, name: Option<&str>, email: Option<&str>) -> Customer {
        let mut customer = Customer::for_test(external_id, 1_700_000_000_000);
        customer.name = name.map(str::to_string);
        customer.email = email.map(str::to_string);
        store
            .apply_one(CreateCustomer {
                tenant: TENANT,
                customer,
            })
            .expect("store")
            .expect("customer")
    }

    #[test]
    fn a_search_matches_any_of_the_three_fields_without_regard_to_case() {
        let c = Customer {
            name: Some("Ünïcode Ltd".into()),
            email: Some("Billing@Example.COM".into()),
            ..Customer::for_test("ACME-42", 0)
        };
        for hit in ["acme", "-42", "ünïcode", "ÜNÏ", "example.com", "BILLING@"] {
            assert!(Needle::new(hit).matches(&c), "{hit}");
        }
        for miss in ["acme-43", "ltd.", "gmail"] {
            assert!(!Needle::new(miss).matches(&c), "{miss}");
        }
    }

    #[test]
    fn a_search_stops_at_its_budget_and_its_cursor_continues_where_it_stopped() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("t.redb"), 1 << 20).expect("store");
        let mut ids = Vec::new();
        for i in 0..7 {
            let name = if i % 3 == 0 { Some("Needle") } else { None };
            ids.push(add(&store, &format!("c{i}"), name, None).id);
        }
        let tx = store.read().expect("read");
        let needle = Needle::new("needle");
        // Matches are c0, c3, c6. A budget of 2 examines c0, c1.
        let (page, cursor) = search(&tx, TENANT, &needle, None, 10, 2).expect("search");
        assert_eq!(page.iter().map(|c| c.id).collect::<Vec<_>>(), vec![ids[0]]);
        assert_eq!(
            cursor,
            Some(ids[1]),
            "continues after the last row examined"
        );
        let (page, cursor) = search(&tx, TENANT, &needle, cursor, 10, 2).expect("search");
        assert_eq!(page.iter().map(|c| c.id).collect::<Vec<_>>(), vec![ids[3]]);
        assert_eq!(cursor, Some(ids[3]));
        // A full page ends at its last match.
        let (page, cursor) = search(&tx, TENANT, &needle, None, 1, 100).expect("search");
        assert_eq!(page.len(), 1);
        assert_eq!(cursor, Some(ids[0]));
        // Without a budget limit everything is found and nothing follows.
        let (page, cursor) = search(&tx, TENANT, &needle, None, 10, 100).expect("search");
        assert_eq!(page.len(), 3);
        assert_eq!(cursor, None);
        // Another tenant's customers are never examined.
        let (page, cursor) = search(&tx, TenantId(2), &needle, None, 10, 100).expect("search");
        assert!(page.is_empty() && cursor.is_none());
    }
}
