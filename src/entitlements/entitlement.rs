//! Entitlements: what a plan version (or a customer's override) grants for one feature, and
//! the commands that set and remove them.
//!
//! A request names features and meters by id or key; [`resolve`] turns each [`Spec`] into a
//! stored [`Entitlement`] inside the writing transaction, so a feature or meter created in the
//! same batch is seen and an unknown one writes nothing.

use crate::store::{ReadableTable, WriteTxn};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::feature::{self, Feature};
use super::window::Reset;
use crate::billing::plan::{self, Plan, PlanError};
use crate::decimal::Stored;
use crate::id::Id;
use crate::ingest::meter::{self, Aggregation, Meter};
use crate::store::keys::{self, tenant_bytes, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// Largest canonical JSON of a `static` entitlement's config, in bytes.
pub const MAX_STATIC_BYTES: usize = 4096;
/// Most entitlements in one plan body.
pub const MAX_PER_PLAN: usize = 100;

/// What an entitlement grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Config {
    /// Access, nothing more.
    Boolean,
    /// Access with a configuration value (canonical JSON text, e.g. `{"seats":5}`).
    Static {
        /// Canonical JSON.
        value: String,
    },
    /// Access while the usage of a meter in the current reset window is below a limit.
    Metered {
        /// The meter (count, sum or unique_count).
        meter: Id,
        /// Allowance per window, ≥ 0.
        limit: Stored,
        /// When usage starts again from zero.
        reset: Reset,
        /// Whether reaching the limit removes access (hard) or only reports it (soft).
        hard: bool,
    },
}

impl Config {
    /// The API name of its type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Config::Boolean => "boolean",
            Config::Static { .. } => "static",
            Config::Metered { .. } => "metered",
        }
    }
}

/// An entitlement as stored, for a plan version or as a customer's override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// The feature.
    pub feature: Id,
    /// False denies the feature (an override that takes a plan's access away).
    pub enabled: bool,
    /// What it grants.
    pub config: Config,
    /// Last set.
    pub updated_at_ms: i64,
}

/// An entitlement as a request states it: feature and meter by id or key, values checked for
/// shape (non-negative decimal limit, canonical JSON) but not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// `feat_…` or key.
    pub feature: String,
    /// False denies the feature.
    pub enabled: bool,
    /// The type and its fields.
    pub kind: SpecKind,
}

/// The typed part of a [`Spec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecKind {
    /// Access.
    Boolean,
    /// Access with a canonical JSON config.
    Static(String),
    /// Metered access.
    Metered {
        /// `mtr_…` or key.
        meter: String,
        /// ≥ 0.
        limit: Decimal,
        /// Reset.
        reset: Reset,
        /// Hard or soft.
        hard: bool,
    },
}

/// Why an entitlement command did nothing; every variant names the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntitlementError {
    /// No such feature.
    #[error("{field}: no feature {reference:?}")]
    UnknownFeature {
        /// Request field.
        field: String,
        /// What the request named.
        reference: String,
    },
    /// The feature is archived.
    #[error("{field}: feature {reference:?} is archived")]
    FeatureArchived {
        /// Request field.
        field: String,
        /// What the request named.
        reference: String,
    },
    /// No such meter.
    #[error("{field}: no meter {reference:?}")]
    UnknownMeter {
        /// Request field.
        field: String,
        /// What the request named.
        reference: String,
    },
    /// The meter is still counting the events stored before it.
    #[error("{field}: meter {meter:?} is still counting the events stored before it (backfill_status running); retry when it is complete")]
    MeterBackfilling {
        /// Request field.
        field: String,
        /// The meter key.
        meter: String,
    },
    /// The meter's aggregation is not a usage that accumulates over a window.
    #[error("{field}: meter {meter:?} aggregates by {aggregation}; only count, sum and unique_count meters can be limited")]
    NotLimitable {
        /// Request field.
        field: String,
        /// The meter key.
        meter: String,
        /// Its aggregation.
        aggregation: &'static str,
    },
    /// One feature twice in one body.
    #[error("{field}: the feature appears twice")]
    DuplicateFeature {
        /// Request field.
        field: String,
    },
    /// The plan does not exist.
    #[error("no plan {0}")]
    UnknownPlan(String),
    /// The customer does not exist.
    #[error("no customer {0}")]
    UnknownCustomer(String),
    /// Nothing to remove.
    #[error("no entitlement to {0} is set there")]
    NotSet(String),
}

impl EntitlementError {
    /// The request field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            EntitlementError::UnknownFeature { field, .. }
            | EntitlementError::FeatureArchived { field, .. }
            | EntitlementError::UnknownMeter { field, .. }
            | EntitlementError::MeterBackfilling { field, .. }
            | EntitlementError::NotLimitable { field, .. }
            | EntitlementError::DuplicateFeature { field } => Some(field),
            EntitlementError::UnknownPlan(_) => Some("plan"),
            EntitlementError::UnknownCustomer(_) => Some("customer"),
            EntitlementError::NotSet(_) => Some("feature"),
        }
    }
}

/// Whether a meter's quantity is a usage that accumulates over a window (and can be limited):
/// max, min and latest are levels, not consumption.
pub fn limitable(aggregation: Aggregation) -> bool {
    matches!(
        aggregation,
        Aggregation::Count | Aggregation::Sum | Aggregation::UniqueCount
    )
}

/// Joins a field prefix (`entitlements.2`, or empty) and a field name.
fn at(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A feature that may be named by a new entitlement, override or grant, from its reference, or
/// the error naming `field`.
pub fn assignable_feature(
    tx: &WriteTxn,
    tenant: TenantId,
    reference: &str,
    field: String,
) -> Result<Result<Feature, EntitlementError>, StoreError> {
    let found = feature::resolve(
        &tx.open_table(tables::FEATURES)?,
        &tx.open_table(tables::FEATURE_BY_KEY)?,
        tenant,
        reference,
    )?;
    Ok(match found {
        None => Err(EntitlementError::UnknownFeature {
            field,
            reference: reference.to_string(),
        }),
        Some(f) if f.archived_at_ms.is_some() => Err(EntitlementError::FeatureArchived {
            field,
            reference: reference.to_string(),
        }),
        Some(f) => Ok(f),
    })
}

fn find_meter(
    tx: &WriteTxn,
    tenant: TenantId,
    reference: &str,
) -> Result<Option<Meter>, StoreError> {
    let meters = tx.open_table(tables::METERS)?;
    if let Some(id) = Id::parse(reference, meter::PREFIX) {
        if let Some(m) = get_record(&meters, keys::tenant_id(tenant, id))? {
            return Ok(Some(m));
        }
    }
    let by_key = tx.open_table(tables::METER_BY_KEY)?;
    let id = by_key
        .get(tenant_bytes(tenant, reference.as_bytes()).as_slice())?
        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
        .map(Id::from_bytes);
    match id {
        Some(id) => get_record(&meters, keys::tenant_id(tenant, id)),
        None => Ok(None),
    }
}

/// Resolves a spec inside the writing transaction: the feature exists and is not archived, a
/// metered one's meter exists and can be limited. `prefix` is the spec's place in the request
/// (`entitlements.0`, or empty), for the field an error names. Writes nothing.
pub fn resolve(
    tx: &WriteTxn,
    tenant: TenantId,
    spec: &Spec,
    prefix: &str,
    now_ms: i64,
) -> Result<Result<Entitlement, EntitlementError>, StoreError> {
    let feature = match assignable_feature(tx, tenant, &spec.feature, at(prefix, "feature"))? {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    let config = match &spec.kind {
        SpecKind::Boolean => Config::Boolean,
        SpecKind::Static(value) => Config::Static {
            value: value.clone(),
        },
        SpecKind::Metered {
            meter,
            limit,
            reset,
            hard,
        } => {
            let Some(m) = find_meter(tx, tenant, meter)? else {
                return Ok(Err(EntitlementError::UnknownMeter {
                    field: at(prefix, "meter"),
                    reference: meter.clone(),
                }));
            };
            if crate::ingest::backfill::is_running_in(tx, tenant, m.id)? {
                return Ok(Err(EntitlementError::MeterBackfilling {
                    field: at(prefix, "meter"),
                    meter: m.key,
                }));
            }
            if !limitable(m.aggregation) {
                return Ok(Err(EntitlementError::NotLimitable {
                    field: at(prefix, "meter"),
                    meter: m.key,
                    aggregation: m.aggregation.as_str(),
                }));
            }
            Config::Metered {
                meter: m.id,
                limit: Stored(*limit),
                reset: *reset,
                hard: *hard,
            }
        }
    };
    Ok(Ok(Entitlement {
        feature: feature.id,
        enabled: spec.enabled,
        config,
        updated_at_ms: now_ms,
    }))
}

/// Resolves every spec of a plan body (`entitlements.{i}`), refusing a feature named twice.
pub fn resolve_all(
    tx: &WriteTxn,
    tenant: TenantId,
    specs: &[Spec],
    now_ms: i64,
) -> Result<Result<Vec<Entitlement>, EntitlementError>, StoreError> {
    let mut out: Vec<Entitlement> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let prefix = format!("entitlements.{i}");
        let e = match resolve(tx, tenant, spec, &prefix, now_ms)? {
            Ok(e) => e,
            Err(err) => return Ok(Err(err)),
        };
        if out.iter().any(|o| o.feature == e.feature) {
            return Ok(Err(EntitlementError::DuplicateFeature {
                field: at(&prefix, "feature"),
            }));
        }
        out.push(e);
    }
    Ok(Ok(out))
}

/// Who an entitlement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A plan version (`pln_…`).
    Plan(Id),
    /// A customer's override (`cus_…`).
    Customer(Id),
}

impl Target {
    fn table(self) -> crate::store::TableDef<&'static [u8], &'static [u8]> {
        match self {
            Target::Plan(_) => tables::PLAN_ENTITLEMENTS,
            Target::Customer(_) => tables::ENTITLEMENT_OVERRIDES,
        }
    }

    fn owner(self) -> Id {
        match self {
            Target::Plan(id) | Target::Customer(id) => id,
        }
    }

    /// Checks that the plan or customer exists.
    fn exists(
        self,
        tx: &WriteTxn,
        tenant: TenantId,
    ) -> Result<Result<(), EntitlementError>, StoreError> {
        Ok(match self {
            Target::Plan(id) => match plan::load(&tx.open_table(tables::PLANS)?, tenant, id)? {
                Some(_) => Ok(()),
                None => Err(EntitlementError::UnknownPlan(id.display(plan::PREFIX))),
            },
            Target::Customer(id) => match crate::customers::load_in_write(tx, tenant, id)? {
                Some(_) => Ok(()),
                None => Err(EntitlementError::UnknownCustomer(
                    id.display(crate::customers::PREFIX),
                )),
            },
        })
    }
}

/// The key of the entitlement of (plan or customer, feature).
pub fn key(tenant: TenantId, owner: Id, feature: Id) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..24].copy_from_slice(&keys::tenant_id(tenant, owner));
    key[24..].copy_from_slice(&feature.to_bytes());
    key
}

/// Sets (creates or replaces) the entitlement of a plan version or a customer to one feature.
#[derive(Clone)]
pub struct SetEntitlement {
    /// Owner.
    pub tenant: TenantId,
    /// Plan or customer.
    pub target: Target,
    /// What to set.
    pub spec: Spec,
    /// Now.
    pub now_ms: i64,
}

impl Command for SetEntitlement {
    type Output = Result<Entitlement, EntitlementError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        if let Err(e) = self.target.exists(tx, self.tenant)? {
            return Ok(Err(e));
        }
        let entitlement = match resolve(tx, self.tenant, &self.spec, "", self.now_ms)? {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        put_record(
            &mut tx.open_table(self.target.table())?,
            &key(self.tenant, self.target.owner(), entitlement.feature),
            &entitlement,
        )?;
        Ok(Ok(entitlement))
    }
}

/// Removes the entitlement of a plan version or a customer's override to one feature.
#[derive(Clone)]
pub struct RemoveEntitlement {
    /// Owner.
    pub tenant: TenantId,
    /// Plan or customer.
    pub target: Target,
    /// `feat_…` or key.
    pub feature: String,
}

impl Command for RemoveEntitlement {
    type Output = Result<Entitlement, EntitlementError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        if let Err(e) = self.target.exists(tx, self.tenant)? {
            return Ok(Err(e));
        }
        let found = feature::resolve(
            &tx.open_table(tables::FEATURES)?,
            &tx.open_table(tables::FEATURE_BY_KEY)?,
            self.tenant,
            &self.feature,
        )?;
        let Some(f) = found else {
            return Ok(Err(EntitlementError::UnknownFeature {
                field: "feature".into(),
                reference: self.feature,
            }));
        };
        let mut table = tx.open_table(self.target.table())?;
        let row = key(self.tenant, self.target.owner(), f.id);
        let removed = table
            .get(row.as_slice())?
            .map(|v| codec::decode::<Entitlement>(v.value()))
            .transpose()?;
        if removed.is_some() {
            table.remove(row.as_slice())?;
        }
        Ok(removed.ok_or(EntitlementError::NotSet(f.key)))
    }
}

/// Why a plan with entitlements was not created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanEntitlementsError {
    /// The plan itself was refused.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// One of its entitlements was refused.
    #[error(transparent)]
    Entitlement(#[from] EntitlementError),
}

/// A plan command (a new plan or a new version) together with the version's entitlements: the
/// entitlements are checked first, then the plan command runs, then they are written, so an
/// error in either writes nothing.
#[derive(Clone)]
pub struct WithEntitlements<C> {
    /// Owner.
    pub tenant: TenantId,
    /// `CreatePlan` or `CreatePlanVersion`.
    pub inner: C,
    /// The body's entitlements; `None` (the field absent) copies those of `inherit_from`.
    pub specs: Option<Vec<Spec>>,
    /// The version a new version follows.
    pub inherit_from: Option<Id>,
    /// Now.
    pub now_ms: i64,
}

impl<C> Command for WithEntitlements<C>
where
    C: Command<Output = Result<Plan, PlanError>> + Clone,
{
    type Output = Result<Plan, PlanEntitlementsError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let entitlements = match &self.specs {
            Some(specs) => match resolve_all(tx, self.tenant, specs, self.now_ms)? {
                Ok(e) => e,
                Err(e) => return Ok(Err(e.into())),
            },
            None => match self.inherit_from {
                Some(previous) => of_owner(
                    &tx.open_table(tables::PLAN_ENTITLEMENTS)?,
                    self.tenant,
                    previous,
                )?,
                None => Vec::new(),
            },
        };
        let plan = match self.inner.apply(tx)? {
            Ok(p) => p,
            Err(e) => return Ok(Err(e.into())),
        };
        let mut table = tx.open_table(tables::PLAN_ENTITLEMENTS)?;
        for e in &entitlements {
            put_record(&mut table, &key(self.tenant, plan.id, e.feature), e)?;
        }
        Ok(Ok(plan))
    }
}

/// The entitlements of a plan version or a customer's overrides, in feature id order.
pub fn of_owner(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    owner: Id,
) -> Result<Vec<Entitlement>, StoreError> {
    let lo = key(tenant, owner, Id(0));
    let hi = key(tenant, owner, Id(u128::MAX));
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (_, value) = entry?;
        out.push(codec::decode(value.value())?);
    }
    Ok(out)
}

/// The entitlement of one owner to one feature.
pub fn get(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    owner: Id,
    feature: Id,
) -> Result<Option<Entitlement>, StoreError> {
    get_record(table, key(tenant, owner, feature))
}
