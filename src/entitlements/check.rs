//! The entitlement check: may this customer use this feature at this instant, and how much of
//! a metered allowance is left.
//!
//! **Which entitlement applies.** A customer's override of the feature, if set, replaces its
//! plans' entitlements (source `override`); it applies while the customer has at least one
//! subscription running at the instant. Otherwise every subscription running then whose plan
//! (the phase in effect then) has an entitlement to the feature grants it (source `plan`); with
//! none, there is no access (source `none`).
//!
//! **Several subscriptions.** The oldest granting subscription (id order) decides the type, and
//! for `metered` the meter and the reset; the entitlements of the other granting subscriptions
//! of the same type (same meter and reset, for `metered`) combine with it: access is granted
//! when any of them is enabled (boolean is "any"), metered limits add up, the limit is hard only
//! when every combined entitlement is hard (a soft one promises access), and a `static` config
//! is the oldest enabled subscription's. Entitlements of another type are left out. A
//! `billing_period` window is the period of the oldest combined subscription whose
//! entitlement is enabled (the same one that gives the static config).
//!
//! **Metered.** Usage is the meter's quantity for the customer over the reset window containing
//! the instant, counting events timestamped from the window's start up to and including the
//! instant, read from the rollups by [`crate::ingest::usage::aggregate`] (events are read only
//! at partial-minute edges). Grants follow the rule of [`super::grant`]. `remaining` is
//! `limit + grants − usage`; a hard limit removes access once usage ≥ limit + grants, a soft
//! one keeps access and reports `remaining ≤ 0`.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use rust_decimal::Decimal;

use super::entitlement::{self, Config, Entitlement};
use super::feature::Feature;
use super::grant::{self, Grant};
use super::window::{self, Reset, Window};
use crate::billing::plan;
use crate::billing::subscription::Subscription;
use crate::decimal::Stored;
use crate::id::Id;
use crate::ingest::meter::Meter;
use crate::ingest::usage::{self, UsageTables};
use crate::store::keys::{self, TenantId};
use crate::store::{codec, get_record, tables, StoreError};

/// Where the entitlement that answered came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The plans of the customer's running subscriptions.
    Plan,
    /// The customer's override.
    Override,
    /// Nothing grants the feature.
    None,
}

impl Source {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Plan => "plan",
            Source::Override => "override",
            Source::None => "none",
        }
    }
}

/// The state of a metered entitlement in the window containing the instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metered {
    /// The meter counted.
    pub meter: Id,
    /// The reset rule.
    pub reset: Reset,
    /// Whether reaching the limit removes access.
    pub hard: bool,
    /// The reset window containing the instant; usage resets at its end.
    pub window: Window,
    /// Usage in the window up to the instant.
    pub usage: Decimal,
    /// The entitlement's limit (summed over combined subscriptions), grants excluded.
    pub limit: Decimal,
    /// The grants counted at the instant.
    pub grants: Vec<Grant>,
    /// `limit + Σ grants − usage`.
    pub remaining: Decimal,
}

/// The answer of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The feature asked about.
    pub feature: Feature,
    /// Where the answer came from.
    pub source: Source,
    /// The entitlement that applies (combined over subscriptions), if any.
    pub config: Option<Config>,
    /// May the customer use the feature now.
    pub has_access: bool,
    /// For a metered entitlement, its usage and allowance.
    pub metered: Option<Metered>,
}

/// The tables a check reads, from a read snapshot or the writing transaction (`B` a bytes
/// table, `S` a set table). The alert evaluator builds them from the ingest transaction.
pub struct CheckTables<B, S> {
    /// Customers.
    pub customers: B,
    /// Features.
    pub features: B,
    /// Subscriptions.
    pub subscriptions: B,
    /// Subscriptions by customer.
    pub subscriptions_by_customer: S,
    /// Plans.
    pub plans: B,
    /// Plan entitlements.
    pub plan_entitlements: B,
    /// Customer overrides.
    pub overrides: B,
    /// Grants.
    pub grants: B,
    /// Meters.
    pub meters: B,
    /// What usage reads.
    pub usage: UsageTables<B, S, S, B>,
}

/// A check's tables over a read snapshot.
pub type ReadTables = CheckTables<
    crate::store::ReadTable<&'static [u8], &'static [u8]>,
    crate::store::ReadTable<&'static [u8], ()>,
>;

/// A check's tables inside the writing transaction.
pub type WriteTables<'t> = CheckTables<
    crate::store::Table<'t, &'static [u8], &'static [u8]>,
    crate::store::Table<'t, &'static [u8], ()>,
>;

impl ReadTables {
    /// Opens them on a read snapshot.
    pub fn open(tx: &ReadTxn) -> Result<Self, StoreError> {
        Ok(CheckTables {
            customers: tx.open_table(tables::CUSTOMERS)?,
            features: tx.open_table(tables::FEATURES)?,
            subscriptions: tx.open_table(tables::SUBSCRIPTIONS)?,
            subscriptions_by_customer: tx.open_table(tables::SUBSCRIPTIONS_BY_CUSTOMER)?,
            plans: tx.open_table(tables::PLANS)?,
            plan_entitlements: tx.open_table(tables::PLAN_ENTITLEMENTS)?,
            overrides: tx.open_table(tables::ENTITLEMENT_OVERRIDES)?,
            grants: tx.open_table(tables::ENTITLEMENT_GRANTS)?,
            meters: tx.open_table(tables::METERS)?,
            usage: UsageTables::open(tx)?,
        })
    }
}

impl<'t> WriteTables<'t> {
    /// Opens them inside the writing transaction; none of these tables may be open elsewhere
    /// in it at the time (redb refuses a table opened twice).
    pub fn open(tx: &'t WriteTxn) -> Result<Self, StoreError> {
        Ok(CheckTables {
            customers: tx.open_table(tables::CUSTOMERS)?,
            features: tx.open_table(tables::FEATURES)?,
            subscriptions: tx.open_table(tables::SUBSCRIPTIONS)?,
            subscriptions_by_customer: tx.open_table(tables::SUBSCRIPTIONS_BY_CUSTOMER)?,
            plans: tx.open_table(tables::PLANS)?,
            plan_entitlements: tx.open_table(tables::PLAN_ENTITLEMENTS)?,
            overrides: tx.open_table(tables::ENTITLEMENT_OVERRIDES)?,
            grants: tx.open_table(tables::ENTITLEMENT_GRANTS)?,
            meters: tx.open_table(tables::METERS)?,
            usage: UsageTables::open_write(tx)?,
        })
    }
}

/// Checks one feature for one customer at `at_ms`: `None` when the customer or the feature does
/// not exist.
pub fn check<B, S>(
    t: &CheckTables<B, S>,
    tenant: TenantId,
    customer: Id,
    feature: Id,
    at_ms: i64,
) -> Result<Option<Check>, StoreError>
where
    B: ReadableTable<&'static [u8], &'static [u8]>,
    S: ReadableTable<&'static [u8], ()>,
{
    if t.customers
        .get(keys::tenant_id(tenant, customer).as_slice())?
        .is_none()
    {
        return Ok(None);
    }
    let Some(feature) = get_record::<Feature, _>(&t.features, keys::tenant_id(tenant, feature))?
    else {
        return Ok(None);
    };
    let subs = running_subscriptions(t, tenant, customer, at_ms)?;
    evaluate(t, tenant, customer, feature, &subs, at_ms).map(Some)
}

/// Checks every feature of the tenant (archived ones included) for one customer at `at_ms`, in
/// feature creation order: `None` when the customer does not exist.
pub fn check_all<B, S>(
    t: &CheckTables<B, S>,
    tenant: TenantId,
    customer: Id,
    at_ms: i64,
) -> Result<Option<Vec<Check>>, StoreError>
where
    B: ReadableTable<&'static [u8], &'static [u8]>,
    S: ReadableTable<&'static [u8], ()>,
{
    if t.customers
        .get(keys::tenant_id(tenant, customer).as_slice())?
        .is_none()
    {
        return Ok(None);
    }
    let subs = running_subscriptions(t, tenant, customer, at_ms)?;
    let (start, end) = keys::tenant_range(tenant);
    let mut out = Vec::new();
    for entry in t
        .features
        .range::<&[u8]>(start.as_slice()..end.as_slice())?
    {
        let (_, value) = entry?;
        let feature: Feature = codec::decode(value.value())?;
        out.push(evaluate(t, tenant, customer, feature, &subs, at_ms)?);
    }
    Ok(Some(out))
}

/// The customer's subscriptions running at `at_ms` (started, not yet ended), in id order.
fn running_subscriptions<B, S>(
    t: &CheckTables<B, S>,
    tenant: TenantId,
    customer: Id,
    at_ms: i64,
) -> Result<Vec<Subscription>, StoreError>
where
    B: ReadableTable<&'static [u8], &'static [u8]>,
    S: ReadableTable<&'static [u8], ()>,
{
    let prefix = keys::tenant_id(tenant, customer);
    let mut lo = [0u8; 40];
    lo[..24].copy_from_slice(&prefix);
    let mut hi = [0xFFu8; 40];
    hi[..24].copy_from_slice(&prefix);
    let mut out = Vec::new();
    for entry in t
        .subscriptions_by_customer
        .range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
    {
        let (key, _) = entry?;
        let id = key
            .value()
            .get(24..40)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Id::from_bytes)
            .ok_or_else(|| StoreError::Corrupt("malformed subscription index key".into()))?;
        let Some(sub) =
            get_record::<Subscription, _>(&t.subscriptions, keys::tenant_id(tenant, id))?
        else {
            continue;
        };
        if sub.start_at_ms <= at_ms && sub.ends_at_ms.is_none_or(|e| at_ms < e) {
            out.push(sub);
        }
    }
    Ok(out)
}

/// Whether two entitlements combine (see the module documentation).
fn compatible(a: &Config, b: &Config) -> bool {
    match (a, b) {
        (Config::Boolean, Config::Boolean) | (Config::Static { .. }, Config::Static { .. }) => true,
        (
            Config::Metered {
                meter: m1,
                reset: r1,
                ..
            },
            Config::Metered {
                meter: m2,
                reset: r2,
                ..
            },
        ) => m1 == m2 && r1 == r2,
        _ => false,
    }
}

fn no_access(feature: Feature) -> Check {
    Check {
        feature,
        source: Source::None,
        config: None,
        has_access: false,
        metered: None,
    }
}

fn evaluate<B, S>(
    t: &CheckTables<B, S>,
    tenant: TenantId,
    customer: Id,
    feature: Feature,
    subs: &[Subscription],
    at_ms: i64,
) -> Result<Check, StoreError>
where
    B: ReadableTable<&'static [u8], &'static [u8]>,
    S: ReadableTable<&'static [u8], ()>,
{
    let Some(first_sub) = subs.first() else {
        return Ok(no_access(feature));
    };
    let (source, granting): (Source, Vec<(&Subscription, Entitlement)>) =
        match entitlement::get(&t.overrides, tenant, customer, feature.id)? {
            Some(o) => (Source::Override, vec![(first_sub, o)]),
            None => {
                let mut granting = Vec::new();
                for sub in subs {
                    let plan = sub.plan_at(at_ms);
                    if let Some(e) =
                        entitlement::get(&t.plan_entitlements, tenant, plan, feature.id)?
                    {
                        granting.push((sub, e));
                    }
                }
                (Source::Plan, granting)
            }
        };
    let Some(first) = granting.first() else {
        return Ok(no_access(feature));
    };
    let group: Vec<&(&Subscription, Entitlement)> = granting
        .iter()
        .filter(|g| compatible(&g.1.config, &first.1.config))
        .collect();
    let enabled: Vec<&(&Subscription, Entitlement)> =
        group.iter().copied().filter(|g| g.1.enabled).collect();
    let lead = enabled.first().copied().unwrap_or(first);
    let any_enabled = !enabled.is_empty();
    let mut check = Check {
        feature,
        source,
        config: Some(lead.1.config.clone()),
        has_access: any_enabled,
        metered: None,
    };
    if let Config::Metered { meter, reset, .. } = lead.1.config {
        let mut limit = Decimal::ZERO;
        let mut hard = any_enabled;
        for (_, e) in &enabled {
            if let Config::Metered {
                limit: l, hard: h, ..
            } = &e.config
            {
                limit = limit.checked_add(l.0).unwrap_or(Decimal::MAX);
                hard &= *h;
            }
        }
        let state = metered(
            t,
            tenant,
            customer,
            &check.feature,
            lead.0,
            meter,
            reset,
            hard,
            limit,
            at_ms,
        )?;
        check.has_access = any_enabled && !(state.hard && state.usage >= state.limit_with_grants());
        check.config = Some(Config::Metered {
            meter,
            limit: Stored(limit),
            reset,
            hard,
        });
        check.metered = Some(state);
    }
    Ok(check)
}

impl Metered {
    /// The limit plus the grants counted.
    pub fn limit_with_grants(&self) -> Decimal {
        self.grants
            .iter()
            .try_fold(self.limit, |acc, g| acc.checked_add(g.amount.0))
            .unwrap_or(Decimal::MAX)
    }
}

#[allow(clippy::too_many_arguments)]
fn metered<B, S>(
    t: &CheckTables<B, S>,
    tenant: TenantId,
    customer: Id,
    feature: &Feature,
    sub: &Subscription,
    meter: Id,
    reset: Reset,
    hard: bool,
    limit: Decimal,
    at_ms: i64,
) -> Result<Metered, StoreError>
where
    B: ReadableTable<&'static [u8], &'static [u8]>,
    S: ReadableTable<&'static [u8], ()>,
{
    let window = match reset {
        Reset::Day => Some(window::day(at_ms)),
        Reset::Month => window::month(at_ms),
        Reset::BillingPeriod => match plan::load(&t.plans, tenant, sub.plan_at(at_ms))? {
            Some(p) => window::containing(reset, at_ms, sub, &p),
            None => window::month(at_ms),
        },
    }
    .unwrap_or(Window {
        start_ms: at_ms,
        end_ms: at_ms.saturating_add(1),
    });
    let Some(m) = get_record::<Meter, _>(&t.meters, keys::tenant_id(tenant, meter))? else {
        return Err(StoreError::Corrupt(
            "an entitlement names a missing meter".into(),
        ));
    };
    let to_ms = at_ms.saturating_add(1).min(window.end_ms);
    let usage = match usage::aggregate(&t.usage, tenant, &m, customer, window.start_ms, to_ms)?
        .value(m.aggregation)
    {
        Ok(v) => v.unwrap_or(Decimal::ZERO),
        Err(_) => Decimal::MAX,
    };
    let mut grants = Vec::new();
    grant::for_each(&t.grants, tenant, customer, Some(feature.id), |g| {
        if g.counts_at(window, at_ms) {
            grants.push(g);
        }
    })?;
    let mut state = Metered {
        meter,
        reset,
        hard,
        window,
        usage,
        limit,
        grants,
        remaining: Decimal::ZERO,
    };
    state.remaining = state
        .limit_with_grants()
        .checked_sub(usage)
        .unwrap_or(Decimal::MIN);
    Ok(state)
}
