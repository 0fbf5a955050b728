//! Plans: what a subscription pays. A plan is immutable (there is no update); a new price is a
//! new version under the same code (a new plan record), so every invoice can name the exact
//! version it was priced with and existing subscriptions stay on theirs.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::period::Interval;
use super::pricing::Model;
use crate::decimal::Stored;
use crate::id::Id;
use crate::store::keys::{self, tenant_bytes, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, put_record, tables, StoreError};

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
    /// Minimum amount per full period, minor units (see [`super::minimum`]).
    pub minimum_minor: Option<i64>,
    /// 1 for the first plan of a code, previous + 1 for each new version.
    pub version: u32,
    /// The version this one replaces.
    pub previous_version: Option<Id>,
    /// Whether usage during a subscription's trial is billed (the fixed fee never is).
    pub bill_usage_in_trial: bool,
    /// Progressive billing: once a running period's usage not yet invoiced reaches this amount
    /// (minor units), an interim invoice bills it (see [`super::progressive`]).
    pub threshold_minor: Option<i64>,
}

/// A plan's record as written before progressive billing (no threshold).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct PlanV2 {
    id: Id,
    code: String,
    name: String,
    currency: String,
    interval: Interval,
    interval_count: u32,
    fixed_fee: Option<FixedFee>,
    charges: Vec<Charge>,
    created_at_ms: i64,
    minimum_minor: Option<i64>,
    version: u32,
    previous_version: Option<Id>,
    bill_usage_in_trial: bool,
}

/// A plan's record as written before versions and minimum commitments.
#[derive(Deserialize)]
struct PlanV1 {
    id: Id,
    code: String,
    name: String,
    currency: String,
    interval: Interval,
    interval_count: u32,
    fixed_fee: Option<FixedFee>,
    charges: Vec<Charge>,
    created_at_ms: i64,
}

/// Decodes a stored plan, of any layout (older records are version 1 without a minimum, or
/// without a threshold).
pub fn decode(bytes: &[u8]) -> Result<Plan, StoreError> {
    if let Ok(plan) = codec::decode::<Plan>(bytes) {
        return Ok(plan);
    }
    if let Ok(old) = codec::decode::<PlanV2>(bytes) {
        return Ok(Plan {
            id: old.id,
            code: old.code,
            name: old.name,
            currency: old.currency,
            interval: old.interval,
            interval_count: old.interval_count,
            fixed_fee: old.fixed_fee,
            charges: old.charges,
            created_at_ms: old.created_at_ms,
            minimum_minor: old.minimum_minor,
            version: old.version,
            previous_version: old.previous_version,
            bill_usage_in_trial: old.bill_usage_in_trial,
            threshold_minor: None,
        });
    }
    let old: PlanV1 = codec::decode(bytes)?;
    Ok(Plan {
        id: old.id,
        code: old.code,
        name: old.name,
        currency: old.currency,
        interval: old.interval,
        interval_count: old.interval_count,
        fixed_fee: old.fixed_fee,
        charges: old.charges,
        created_at_ms: old.created_at_ms,
        minimum_minor: None,
        version: 1,
        previous_version: None,
        bill_usage_in_trial: false,
        threshold_minor: None,
    })
}

/// One plan from the plans table of any transaction.
pub fn load(
    plans: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    id: Id,
) -> Result<Option<Plan>, StoreError> {
    match plans.get(keys::tenant_id(tenant, id).as_slice())? {
        Some(v) => decode(v.value()).map(Some),
        None => Ok(None),
    }
}

/// Why a plan was not created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The code is taken.
    #[error("a plan with code {code:?} already exists ({existing}); plans are immutable: a new price is a new version (POST /v1/plans/{{id}}/versions)")]
    Exists {
        /// The code.
        code: String,
        /// The plan that has it.
        existing: String,
    },
    /// No such plan (the version a new one would follow).
    #[error("no plan {0}")]
    Missing(String),
    /// A new version must follow the newest one of its code.
    #[error("plan {previous} is not the newest version of {code:?} ({newest} is); create the new version from it")]
    NotNewest {
        /// The code.
        code: String,
        /// The plan named.
        previous: String,
        /// The newest version.
        newest: String,
    },
    /// A charge names a meter that does not exist.
    #[error("charge {index}: no meter {meter}")]
    UnknownMeter {
        /// Which charge.
        index: usize,
        /// The meter reference.
        meter: String,
    },
    /// A charge names a meter whose backfill is still counting earlier events.
    #[error("charge {index}: meter {meter} is still counting the events stored before it (backfill_status running); retry when it is complete")]
    MeterBackfilling {
        /// Which charge.
        index: usize,
        /// The meter reference.
        meter: String,
    },
}

/// Creates a plan: the first version of a new code.
#[derive(Clone)]
pub struct CreatePlan {
    /// Owner.
    pub tenant: TenantId,
    /// The plan.
    pub plan: Plan,
}

/// The newest plan of a code, if the code is used.
fn newest_of(
    by_code: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    code: &str,
) -> Result<Option<Id>, StoreError> {
    Ok(by_code
        .get(tenant_bytes(tenant, code.as_bytes()).as_slice())?
        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
        .map(Id::from_bytes))
}

/// The first charge whose meter does not exist or cannot be billed yet (backfilling).
fn unknown_meter(
    tx: &WriteTxn,
    tenant: TenantId,
    plan: &Plan,
) -> Result<Option<PlanError>, StoreError> {
    let meters = tx.open_table(tables::METERS)?;
    for (index, charge) in plan.charges.iter().enumerate() {
        if meters
            .get(keys::tenant_id(tenant, charge.meter).as_slice())?
            .is_none()
        {
            return Ok(Some(PlanError::UnknownMeter {
                index,
                meter: charge.meter.display(crate::ingest::meter::PREFIX),
            }));
        }
        if crate::ingest::backfill::is_running_in(tx, tenant, charge.meter)? {
            return Ok(Some(PlanError::MeterBackfilling {
                index,
                meter: charge.meter.display(crate::ingest::meter::PREFIX),
            }));
        }
    }
    Ok(None)
}

/// Stores a plan and points its code at it (the newest version).
fn store_plan(tx: &WriteTxn, tenant: TenantId, plan: &Plan) -> Result<(), StoreError> {
    put_record(
        &mut tx.open_table(tables::PLANS)?,
        &keys::tenant_id(tenant, plan.id),
        plan,
    )?;
    tx.open_table(tables::PLAN_BY_CODE)?.insert(
        tenant_bytes(tenant, plan.code.as_bytes()).as_slice(),
        plan.id.to_bytes().as_slice(),
    )?;
    if plan.threshold_minor.is_some() {
        super::progressive::mark_threshold_plan(tx, tenant, plan.id)?;
    }
    Ok(())
}

impl Command for CreatePlan {
    type Output = Result<Plan, PlanError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let existing = newest_of(
            &tx.open_table(tables::PLAN_BY_CODE)?,
            self.tenant,
            &self.plan.code,
        )?;
        if let Some(existing) = existing {
            return Ok(Err(PlanError::Exists {
                code: self.plan.code,
                existing: existing.display(PREFIX),
            }));
        }
        if let Some(e) = unknown_meter(tx, self.tenant, &self.plan)? {
            return Ok(Err(e));
        }
        store_plan(tx, self.tenant, &self.plan)?;
        Ok(Ok(self.plan))
    }
}

/// Creates the next version of a plan: same code, version + 1, and the code then names it, so
/// new subscriptions by code get it while existing ones keep theirs.
#[derive(Clone)]
pub struct CreatePlanVersion {
    /// Owner.
    pub tenant: TenantId,
    /// The version it follows (must be the newest of its code).
    pub previous: Id,
    /// The new version; its code, version and previous version are set from `previous`.
    pub plan: Plan,
}

impl Command for CreatePlanVersion {
    type Output = Result<Plan, PlanError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(previous) = load(&tx.open_table(tables::PLANS)?, self.tenant, self.previous)?
        else {
            return Ok(Err(PlanError::Missing(self.previous.display(PREFIX))));
        };
        let newest = newest_of(
            &tx.open_table(tables::PLAN_BY_CODE)?,
            self.tenant,
            &previous.code,
        )?;
        if let Some(newest) = newest.filter(|n| *n != previous.id) {
            return Ok(Err(PlanError::NotNewest {
                code: previous.code,
                previous: previous.id.display(PREFIX),
                newest: newest.display(PREFIX),
            }));
        }
        let plan = Plan {
            code: previous.code,
            version: previous.version.saturating_add(1),
            previous_version: Some(previous.id),
            ..self.plan
        };
        if let Some(e) = unknown_meter(tx, self.tenant, &plan)? {
            return Ok(Err(e));
        }
        store_plan(tx, self.tenant, &plan)?;
        Ok(Ok(plan))
    }
}

/// One plan.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Plan>, StoreError> {
    load(&tx.open_table(tables::PLANS)?, tenant, id)
}

/// A page of plans, optionally only the versions of one code.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    code: Option<&str>,
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
        let plan = decode(value.value())?;
        if code.is_some_and(|c| c != plan.code) {
            continue;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(plan);
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout plans were stored in before versions and minimum commitments.
    #[derive(Serialize)]
    struct Legacy {
        id: Id,
        code: String,
        name: String,
        currency: String,
        interval: Interval,
        interval_count: u32,
        fixed_fee: Option<FixedFee>,
        charges: Vec<Charge>,
        created_at_ms: i64,
    }

    #[test]
    fn plans_stored_before_versions_still_decode_as_version_one() {
        let legacy = Legacy {
            id: Id::generate(),
            code: "pro".into(),
            name: "Pro".into(),
            currency: "USD".into(),
            interval: Interval::Month,
            interval_count: 1,
            fixed_fee: Some(FixedFee {
                amount_minor: 900,
                timing: FeeTiming::InAdvance,
            }),
            charges: Vec::new(),
            created_at_ms: 7,
        };
        let plan = decode(&codec::encode(&legacy).expect("encode")).expect("decode");
        assert_eq!((plan.id, plan.code.as_str()), (legacy.id, "pro"));
        assert_eq!(plan.fixed_fee, legacy.fixed_fee);
        assert_eq!(
            (plan.version, plan.previous_version, plan.minimum_minor),
            (1, None, None)
        );
        let next = Plan {
            version: 2,
            previous_version: Some(plan.id),
            minimum_minor: Some(0),
            ..plan
        };
        let bytes = codec::encode(&next).expect("encode");
        assert_eq!(decode(&bytes).expect("decode"), next);
    }

    #[test]
    fn plans_stored_before_thresholds_still_decode_without_one() {
        let old = PlanV2 {
            id: Id::generate(),
            code: "pro".into(),
            name: "Pro".into(),
            currency: "USD".into(),
            interval: Interval::Month,
            interval_count: 1,
            fixed_fee: None,
            charges: Vec::new(),
            created_at_ms: 7,
            minimum_minor: Some(100),
            version: 3,
            previous_version: Some(Id::generate()),
            bill_usage_in_trial: true,
        };
        let plan = decode(&codec::encode(&old).expect("encode")).expect("decode");
        assert_eq!(
            (
                plan.id,
                plan.minimum_minor,
                plan.version,
                plan.bill_usage_in_trial
            ),
            (old.id, Some(100), 3, true)
        );
        assert_eq!(plan.threshold_minor, None);
        let with = Plan {
            threshold_minor: Some(50_000),
            ..plan
        };
        let bytes = codec::encode(&with).expect("encode");
        assert_eq!(decode(&bytes).expect("decode"), with);
    }
}
