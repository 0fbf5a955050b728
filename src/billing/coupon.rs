//! Coupons: a reusable discount definition (percent or amount off, for how many periods, on
//! what). Redeeming one on a subscription or customer makes a discount
//! ([`super::discount`]); the coupon only counts its redemptions.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::decimal::Stored;
use crate::id::Id;
use crate::store::keys::{self, tenant_bytes, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "cpn";

/// The most periods a repeating coupon may last.
pub const MAX_DURATION_PERIODS: u32 = 120;

/// What a coupon takes off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Off {
    /// A percentage of the eligible lines, in (0, 100].
    Percent(Stored),
    /// A fixed amount per invoice, in one currency.
    Amount {
        /// Minor units.
        amount_minor: i64,
        /// ISO 4217; only customers billed in it may redeem the coupon.
        currency: String,
    },
}

/// For how many periods a discount applies, counted from the period it starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Duration {
    /// The first period only.
    Once,
    /// The first N periods.
    Repeating(u32),
    /// Every period.
    Forever,
}

impl Duration {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Duration::Once => "once",
            Duration::Repeating(_) => "repeating",
            Duration::Forever => "forever",
        }
    }

    /// Whether the period `offset` periods after the first one is covered.
    pub fn covers(self, offset: u64) -> bool {
        match self {
            Duration::Once => offset == 0,
            Duration::Repeating(n) => offset < u64::from(n),
            Duration::Forever => true,
        }
    }
}

/// What a coupon is limited to; empty lists do not restrict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliesTo {
    /// Plan codes (every version of a plan shares its code).
    pub plans: Vec<String>,
    /// Meters: only usage lines of these meters are discounted.
    pub meters: Vec<Id>,
}

/// A coupon as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    /// `cpn_…`.
    pub id: Id,
    /// Unique per tenant; what customers type.
    pub code: String,
    /// Display name.
    pub name: Option<String>,
    /// What it takes off.
    pub off: Off,
    /// For how many periods.
    pub duration: Duration,
    /// Redemptions allowed in total.
    pub max_redemptions: Option<u64>,
    /// No redemption after this instant.
    pub redeem_by_ms: Option<i64>,
    /// What it is limited to.
    pub applies_to: AppliesTo,
    /// Redemptions so far (each one a discount record).
    pub times_redeemed: u64,
    /// Created.
    pub created_at_ms: i64,
}

/// Why a coupon was not created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CouponError {
    /// The code is taken.
    #[error("a coupon with code {code:?} already exists ({existing})")]
    Exists {
        /// The code.
        code: String,
        /// The coupon that has it.
        existing: String,
    },
}

/// The coupon id a code names, in any transaction.
pub fn id_by_code(
    by_code: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    code: &str,
) -> Result<Option<Id>, StoreError> {
    Ok(by_code
        .get(tenant_bytes(tenant, code.as_bytes()).as_slice())?
        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
        .map(Id::from_bytes))
}

/// Creates a coupon; its code must be new for the tenant.
#[derive(Clone)]
pub struct CreateCoupon {
    /// Owner.
    pub tenant: TenantId,
    /// The coupon.
    pub coupon: Coupon,
}

impl Command for CreateCoupon {
    type Output = Result<Coupon, CouponError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let mut by_code = tx.open_table(tables::COUPON_BY_CODE)?;
        if let Some(existing) = id_by_code(&by_code, self.tenant, &self.coupon.code)? {
            return Ok(Err(CouponError::Exists {
                code: self.coupon.code,
                existing: existing.display(PREFIX),
            }));
        }
        put_record(
            &mut tx.open_table(tables::COUPONS)?,
            &keys::tenant_id(self.tenant, self.coupon.id),
            &self.coupon,
        )?;
        by_code.insert(
            tenant_bytes(self.tenant, self.coupon.code.as_bytes()).as_slice(),
            self.coupon.id.to_bytes().as_slice(),
        )?;
        Ok(Ok(self.coupon))
    }
}

/// One coupon by id or code, in a write transaction (redemption reads and counts it there).
pub fn load_by_ref(
    tx: &WriteTxn,
    tenant: TenantId,
    reference: &str,
) -> Result<Option<Coupon>, StoreError> {
    let coupons = tx.open_table(tables::COUPONS)?;
    if let Some(id) = Id::parse(reference, PREFIX) {
        if let Some(c) = get_record(&coupons, keys::tenant_id(tenant, id))? {
            return Ok(Some(c));
        }
    }
    let by_code = tx.open_table(tables::COUPON_BY_CODE)?;
    match id_by_code(&by_code, tenant, reference)? {
        Some(id) => get_record(&coupons, keys::tenant_id(tenant, id)),
        None => Ok(None),
    }
}

/// Saves a coupon inside a write transaction.
pub fn save(tx: &WriteTxn, tenant: TenantId, coupon: &Coupon) -> Result<(), StoreError> {
    put_record(
        &mut tx.open_table(tables::COUPONS)?,
        &keys::tenant_id(tenant, coupon.id),
        coupon,
    )
}

/// One coupon.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Coupon>, StoreError> {
    let table = tx.open_table(tables::COUPONS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// A page of coupons, in creation order.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Coupon>, bool), StoreError> {
    let table = tx.open_table(tables::COUPONS)?;
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
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(codec::decode(value.value())?);
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_cover_their_periods() {
        assert!(Duration::Once.covers(0));
        assert!(!Duration::Once.covers(1));
        assert!(Duration::Repeating(3).covers(2));
        assert!(!Duration::Repeating(3).covers(3));
        assert!(Duration::Forever.covers(u64::MAX));
    }
}
