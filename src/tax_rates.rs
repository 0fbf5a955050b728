//! Tax rates: a named percentage, exclusive (added on top of a line) or inclusive (already in
//! the line's price). Rates never change once created, so an invoice that names one can always
//! be re-derived; archiving one only stops it being assigned to customers.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::decimal::Stored;
use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "txr";
/// The most default tax rates one customer may have.
pub const MAX_PER_CUSTOMER: usize = 5;

/// A tax rate as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxRate {
    /// `txr_…`.
    pub id: Id,
    /// What invoices print (`VAT`, `Sales tax`).
    pub display_name: String,
    /// In [0, 100], exact.
    pub percentage: Stored,
    /// Whether line prices already contain the tax.
    pub inclusive: bool,
    /// Free text: the state, province or authority it is owed to.
    pub jurisdiction: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// Created.
    pub created_at_ms: i64,
    /// When it stopped being assignable; customers that have it keep it.
    pub archived_at_ms: Option<i64>,
}

/// Why a tax rate command did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxRateError {
    /// No such rate.
    #[error("no tax rate {0}")]
    Missing(String),
}

/// Why a list of rates cannot become a customer's defaults.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unassignable {
    /// A rate does not exist.
    #[error("tax rate {0} does not exist")]
    Unknown(String),
    /// A rate is archived.
    #[error("tax rate {0} is archived")]
    Archived(String),
    /// An inclusive rate with any other rate: the line price cannot contain one tax and carry
    /// another on top, nor contain two computed separately.
    #[error("an inclusive tax rate must be a customer's only rate")]
    MixedInclusive,
    /// Too many, or one twice.
    #[error("at most {MAX_PER_CUSTOMER} distinct tax rates")]
    TooMany,
}

/// Creates a tax rate (the caller checked its fields).
#[derive(Clone)]
pub struct CreateTaxRate {
    /// Owner.
    pub tenant: TenantId,
    /// The rate, id and time assigned.
    pub rate: TaxRate,
}

impl Command for CreateTaxRate {
    type Output = TaxRate;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        put_record(
            &mut tx.open_table(tables::TAX_RATES)?,
            &keys::tenant_id(self.tenant, self.rate.id),
            &self.rate,
        )?;
        Ok(self.rate)
    }
}

/// Archives a tax rate; archiving an archived rate answers it as it is.
#[derive(Clone)]
pub struct ArchiveTaxRate {
    /// Owner.
    pub tenant: TenantId,
    /// Which rate.
    pub id: Id,
    /// Now.
    pub now_ms: i64,
}

impl Command for ArchiveTaxRate {
    type Output = Result<TaxRate, TaxRateError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let mut table = tx.open_table(tables::TAX_RATES)?;
        let key = keys::tenant_id(self.tenant, self.id);
        let Some(mut rate) = get_record::<TaxRate, _>(&table, key)? else {
            return Ok(Err(TaxRateError::Missing(self.id.display(PREFIX))));
        };
        if rate.archived_at_ms.is_none() {
            rate.archived_at_ms = Some(self.now_ms);
            put_record(&mut table, &key, &rate)?;
        }
        Ok(Ok(rate))
    }
}

/// One rate from any transaction's table.
pub fn load(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    id: Id,
) -> Result<Option<TaxRate>, StoreError> {
    get_record(table, keys::tenant_id(tenant, id))
}

/// One rate.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<TaxRate>, StoreError> {
    load(&tx.open_table(tables::TAX_RATES)?, tenant, id)
}

/// Checks, inside the writing transaction, that `ids` may be a customer's defaults: each
/// exists, those not in `kept` (already assigned) are not archived, and an inclusive rate
/// stands alone.
pub fn check_assignable(
    tx: &WriteTxn,
    tenant: TenantId,
    ids: &[Id],
    kept: &[Id],
) -> Result<Result<(), Unassignable>, StoreError> {
    let mut distinct = ids.to_vec();
    distinct.sort();
    distinct.dedup();
    if distinct.len() != ids.len() || ids.len() > MAX_PER_CUSTOMER {
        return Ok(Err(Unassignable::TooMany));
    }
    let table = tx.open_table(tables::TAX_RATES)?;
    let mut inclusive = false;
    for id in ids {
        let Some(rate) = load(&table, tenant, *id)? else {
            return Ok(Err(Unassignable::Unknown(id.display(PREFIX))));
        };
        if rate.archived_at_ms.is_some() && !kept.contains(id) {
            return Ok(Err(Unassignable::Archived(id.display(PREFIX))));
        }
        inclusive |= rate.inclusive;
    }
    if inclusive && ids.len() > 1 {
        return Ok(Err(Unassignable::MixedInclusive));
    }
    Ok(Ok(()))
}

/// A page of rates, in creation order.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<TaxRate>, bool), StoreError> {
    let table = tx.open_table(tables::TAX_RATES)?;
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
