//! Plans: what a subscription pays. A plan is immutable (there is no update); a new price is a
//! new plan with a new code, so every invoice can name the exact version it was priced with.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::period::Interval;
use super::pricing::Model;
use crate::decimal::Stored;
use crate::id::Id;
use crate::store::keys::{self, tenant_bytes, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "pln";

/// When the fixed fee is invoiced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeeTiming {
    /// At the start of the period it pays for.
    InAdvance,
    /// With the period's usage, after it ends.
    InArrears,
}

impl FeeTiming {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            FeeTiming::InAdvance => "in_advance",
            FeeTiming::InArrears => "in_arrears",
        }
    }
}

/// A recurring fixed fee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedFee {
    /// Per period, minor units.
    pub amount_minor: i64,
    /// When it is invoiced.
    pub timing: FeeTiming,
}

/// A usage charge on one meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// The meter.
    pub meter: Id,
    /// The pricing model.
    pub model: Model,
    /// Units free each period.
    pub free_units: Stored,
}

/// A plan as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// `pln_…`.
    pub id: Id,
    /// Unique per tenant.
    pub code: String,
    /// Display name.
    pub name: String,
    /// ISO 4217; customers on it must be billed in it.
    pub currency: String,
    /// Period unit.
    pub interval: Interval,
    /// Units per period.
    pub interval_count: u32,
    /// Optional fixed fee.
    pub fixed_fee: Option<FixedFee>,
    /// Usage charges.
    pub charges: Vec<Charge>,
    /// Created.
    pub created_at_ms: i64,
    /// Whether usage during a subscription's trial is billed (the fixed fee never is).
    pub bill_usage_in_trial: bool,
}

/// A plan as stored by schema 3 and earlier; schema 4's migration rewrites each into [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanV3 {
    /// `pln_…`.
    pub id: Id,
    /// Unique per tenant.
    pub code: String,
    /// Display name.
    pub name: String,
    /// ISO 4217.
    pub currency: String,
    /// Period unit.
    pub interval: Interval,
    /// Units per period.
    pub interval_count: u32,
    /// Optional fixed fee.
    pub fixed_fee: Option<FixedFee>,
    /// Usage charges.
    pub charges: Vec<Charge>,
    /// Created.
    pub created_at_ms: i64,
}

impl From<PlanV3> for Plan {
    fn from(old: PlanV3) -> Self {
        Plan {
            id: old.id,
            code: old.code,
            name: old.name,
            currency: old.currency,
            interval: old.interval,
            interval_count: old.interval_count,
            fixed_fee: old.fixed_fee,
            charges: old.charges,
            created_at_ms: old.created_at_ms,
            bill_usage_in_trial: false,
        }
    }
}

/// Why a plan was not created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The code is taken.
    #[error("a plan with code {code:?} already exists ({existing}); plans are immutable, so a new price needs a new code")]
    Exists {
        /// The code.
        code: String,
        /// The plan that has it.
        existing: String,
    },
    /// A charge names a meter that does not exist.
    #[error("charge {index}: no meter {meter}")]
    UnknownMeter {
        /// Which charge.
        index: usize,
        /// The meter reference.
        meter: String,
    },
}

/// Creates a plan.
#[derive(Clone)]
pub struct CreatePlan {
    /// Owner.
    pub tenant: TenantId,
    /// The plan.
    pub plan: Plan,
}

impl Command for CreatePlan {
    type Output = Result<Plan, PlanError>;

    fn apply(self, tx: &WriteTransaction) -> Result<Self::Output, StoreError> {
        let code_key = tenant_bytes(self.tenant, self.plan.code.as_bytes());
        let mut by_code = tx.open_table(tables::PLAN_BY_CODE)?;
        let existing = by_code
            .get(code_key.as_slice())?
            .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
            .map(Id::from_bytes);
        if let Some(existing) = existing {
            return Ok(Err(PlanError::Exists {
                code: self.plan.code,
                existing: existing.display(PREFIX),
            }));
        }
        {
            let meters = tx.open_table(tables::METERS)?;
            for (index, charge) in self.plan.charges.iter().enumerate() {
                if meters
                    .get(keys::tenant_id(self.tenant, charge.meter).as_slice())?
                    .is_none()
                {
                    return Ok(Err(PlanError::UnknownMeter {
                        index,
                        meter: charge.meter.display(crate::ingest::meter::PREFIX),
                    }));
                }
            }
        }
        put_record(
            &mut tx.open_table(tables::PLANS)?,
            &keys::tenant_id(self.tenant, self.plan.id),
            &self.plan,
        )?;
        by_code.insert(code_key.as_slice(), self.plan.id.to_bytes().as_slice())?;
        Ok(Ok(self.plan))
    }
}

/// One plan.
pub fn get(tx: &ReadTransaction, tenant: TenantId, id: Id) -> Result<Option<Plan>, StoreError> {
    let table = tx.open_table(tables::PLANS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// A page of plans.
pub fn list(
    tx: &ReadTransaction,
    tenant: TenantId,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Plan>, bool), StoreError> {
    let table = tx.open_table(tables::PLANS)?;
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
