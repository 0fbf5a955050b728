//! One-off grants of extra allowance on a metered feature.
//!
//! **The grant rule.** A grant adds its amount to the limit of the one reset window containing
//! its `effective_at`, from `effective_at` until `expires_at` or that window's end, whichever
//! comes first. Put as a test at an instant `at` whose window is `W`: a grant counts when
//! `W.start ≤ effective_at ≤ at` and (`expires_at` is unset or `at < expires_at`). A grant
//! starting exactly at a reset therefore belongs to the new window only, and no grant is ever
//! counted in two windows; a grant that should last longer is several grants.

use crate::store::{ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::entitlement::{assignable_feature, EntitlementError};
use super::window::Window;
use crate::decimal::Stored;
use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "entg";

/// A grant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `entg_…`.
    pub id: Id,
    /// Who receives it.
    pub customer: Id,
    /// Which feature.
    pub feature: Id,
    /// Extra allowance, > 0, in the meter's unit.
    pub amount: Stored,
    /// From (inclusive).
    pub effective_at_ms: i64,
    /// Until (exclusive), if earlier than the end of its window.
    pub expires_at_ms: Option<i64>,
    /// Created.
    pub created_at_ms: i64,
}

impl Grant {
    /// Whether the grant adds to the limit at `at_ms`, whose reset window is `window` (the rule
    /// in this module's documentation).
    pub fn counts_at(&self, window: Window, at_ms: i64) -> bool {
        window.start_ms <= self.effective_at_ms
            && self.effective_at_ms <= at_ms
            && self.expires_at_ms.is_none_or(|e| at_ms < e)
    }
}

/// The key of a grant: (tenant, customer, feature, grant id), so a check reads one feature's
/// grants as one short range and a listing reads a customer's as another.
pub fn key(tenant: TenantId, customer: Id, feature: Id, grant: Id) -> [u8; 56] {
    let mut key = [0u8; 56];
    key[..24].copy_from_slice(&keys::tenant_id(tenant, customer));
    key[24..40].copy_from_slice(&feature.to_bytes());
    key[40..].copy_from_slice(&grant.to_bytes());
    key
}

/// Creates a grant (amount and times checked by the caller): the customer must exist and the
/// feature must be assignable.
#[derive(Clone)]
pub struct CreateGrant {
    /// Owner.
    pub tenant: TenantId,
    /// `feat_…` or key.
    pub feature: String,
    /// The grant; its `feature` is set from the reference.
    pub grant: Grant,
}

impl Command for CreateGrant {
    type Output = Result<Grant, EntitlementError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let mut grant = self.grant;
        if crate::customers::load_in_write(tx, self.tenant, grant.customer)?.is_none() {
            return Ok(Err(EntitlementError::UnknownCustomer(
                grant.customer.display(crate::customers::PREFIX),
            )));
        }
        match assignable_feature(tx, self.tenant, &self.feature, "feature".into())? {
            Ok(f) => grant.feature = f.id,
            Err(e) => return Ok(Err(e)),
        }
        put_record(
            &mut tx.open_table(tables::ENTITLEMENT_GRANTS)?,
            &key(self.tenant, grant.customer, grant.feature, grant.id),
            &grant,
        )?;
        Ok(Ok(grant))
    }
}

/// Visits the grants of (customer, feature), or of every feature when `feature` is `None`, in
/// key order.
pub fn for_each(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    customer: Id,
    feature: Option<Id>,
    mut visit: impl FnMut(Grant),
) -> Result<(), StoreError> {
    let (lo, hi) = match feature {
        Some(f) => (
            key(tenant, customer, f, Id(0)),
            key(tenant, customer, f, Id(u128::MAX)),
        ),
        None => (
            key(tenant, customer, Id(0), Id(0)),
            key(tenant, customer, Id(u128::MAX), Id(u128::MAX)),
        ),
    };
    for entry in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (_, value) = entry?;
        visit(codec::decode(value.value())?);
    }
    Ok(())
}

#[cfg(test)]
mod rule_tests {
    use super::*;

    fn grant(effective_at_ms: i64, expires_at_ms: Option<i64>) -> Grant {
        Grant {
            id: Id(1),
            customer: Id(2),
            feature: Id(3),
            amount: Stored(rust_decimal::Decimal::ONE),
            effective_at_ms,
            expires_at_ms,
            created_at_ms: 0,
        }
    }

    #[test]
    fn a_grant_belongs_to_the_one_window_containing_its_start() {
        let first = Window {
            start_ms: 0,
            end_ms: 100,
        };
        let second = Window {
            start_ms: 100,
            end_ms: 200,
        };
        let at_reset = grant(100, None);
        assert!(!at_reset.counts_at(first, 99), "not before it starts");
        assert!(at_reset.counts_at(second, 100));
        assert!(at_reset.counts_at(second, 199));
        let early = grant(50, Some(150));
        assert!(!early.counts_at(first, 49));
        assert!(early.counts_at(first, 50));
        assert!(early.counts_at(first, 99));
        assert!(
            !early.counts_at(second, 100),
            "never carried into the next window"
        );
        let expiring = grant(10, Some(20));
        assert!(expiring.counts_at(first, 19));
        assert!(!expiring.counts_at(first, 20));
    }
}
