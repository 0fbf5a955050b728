//! Evaluation: for a customer a write touched, compare each watching alert's current value with
//! its thresholds and record the firings (and balance recoveries) that are due, in the write's
//! own transaction.
//!
//! State-based: the firing rows themselves say what already fired in a window, so evaluating
//! twice, late, or after a skipped evaluation gives the same rows. Each alert type's value comes
//! from one match arm of [`current_value`].

use std::collections::{BTreeMap, HashMap};

use crate::store::{ReadableTable, WriteTxn};
use rust_decimal::Decimal;

use super::firing::{self, Firing};
use super::window::{self, Window};
use super::{index, Alert, AlertKind};
use crate::billing::draft::{self, Draft};
use crate::billing::invoice::InvoiceError;
use crate::billing::run::Policy;
use crate::decimal::Stored;
use crate::entitlements::check;
use crate::id::Id;
use crate::ingest::meter::Meter;
use crate::ingest::usage::{self, UsageTables};
use crate::ledger::grant;
use crate::store::keys::{self, TenantId};
use crate::store::{get_record, put_record, tables, StoreError};
use crate::watch::Touches;

/// What an alert's value is now, and the window its thresholds fire once in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The value compared with the thresholds.
    pub value: Decimal,
    /// The window; `None` for balances, whose thresholds re-arm when the value recovers.
    pub window: Option<Window>,
    /// The currency of a money value.
    pub currency: Option<String>,
}

/// What one customer's evaluation has already read, shared by the alerts that watch it.
struct Seen<'p> {
    policy: &'p Policy,
    window: Option<Option<Window>>,
    usage: HashMap<Id, Option<Decimal>>,
    balances: HashMap<String, Option<Decimal>>,
    currency: Option<Option<String>>,
    drafts: Option<Vec<Result<Draft, InvoiceError>>>,
}

impl<'p> Seen<'p> {
    fn new(policy: &'p Policy) -> Self {
        Seen {
            policy,
            window: None,
            usage: HashMap::new(),
            balances: HashMap::new(),
            currency: None,
            drafts: None,
        }
    }
}

/// One customer to evaluate: (tenant, customer, its alerts, the write's time, the instants
/// whose windows the write moved).
type Work = (TenantId, Id, Vec<Id>, i64, Vec<i64>);

/// Evaluates the alerts of every customer a round of the watcher touched: their usage alerts
/// on the meters whose usage changed, their balance alerts when their credits moved. The watch
/// index is read first, once, so a tenant without alerts costs one range read per round.
pub fn on_touches(tx: &WriteTxn, touches: &Touches, policy: &Policy) -> Result<(), StoreError> {
    let mut work: Vec<Work> = Vec::new();
    {
        let watch = tx.open_table(tables::ALERT_WATCH)?;
        let mut watched: BTreeMap<(TenantId, bool), bool> = BTreeMap::new();
        let mut watches = |tenant: TenantId, balance: bool| -> Result<bool, StoreError> {
            if let Some(known) = watched.get(&(tenant, balance)) {
                return Ok(*known);
            }
            let known = index::tenant_watches(&watch, tenant, balance)?;
            watched.insert((tenant, balance), known);
            Ok(known)
        };
        for (tenant, customer, usage) in touches.usage() {
            if !watches(tenant, false)? {
                continue;
            }
            let mut ids = Vec::new();
            for meter in &usage.meters {
                ids.extend(index::usage_alerts(&watch, tenant, *meter, customer)?);
            }
            ids.extend(index::any_usage_alerts(&watch, tenant, customer)?);
            work.push((tenant, customer, ids, usage.at_ms, usage.instants()));
        }
        for (tenant, customer, at_ms) in touches.balances() {
            if !watches(tenant, true)? {
                continue;
            }
            let ids = index::balance_alerts(&watch, tenant, customer)?;
            work.push((tenant, customer, ids, at_ms, vec![at_ms]));
        }
    }
    for (tenant, customer, ids, at_ms, instants) in work {
        evaluate_ids(tx, tenant, customer, &ids, at_ms, &instants, policy)?;
    }
    Ok(())
}

fn evaluate_ids(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: Id,
    ids: &[Id],
    at_ms: i64,
    instants: &[i64],
    policy: &Policy,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut alerts = Vec::with_capacity(ids.len());
    for id in ids {
        match super::load(&tx.open_table(tables::ALERTS)?, tenant, *id)? {
            Some(alert) if alert.archived_at_ms.is_none() => alerts.push(alert),
            _ => {}
        }
    }
    // Each instant's windows: the write's own, and those of backdated (or future-stamped)
    // events. Balances and drafts have no instant of their own: once, at the write's time.
    for &instant in instants {
        let mut seen = Seen::new(policy);
        for alert in &alerts {
            let per_instant = matches!(
                alert.kind,
                AlertKind::UsageExceeded { .. } | AlertKind::EntitlementExhausted { .. }
            );
            if per_instant || instant == at_ms {
                evaluate(tx, tenant, alert, customer, at_ms, instant, &mut seen)?;
            }
        }
    }
    Ok(())
}

/// Evaluates one alert for one customer (a new alert, at once).
pub fn one_alert(
    tx: &WriteTxn,
    tenant: TenantId,
    alert: &Alert,
    customer: Id,
    at_ms: i64,
    policy: &Policy,
) -> Result<(), StoreError> {
    evaluate(
        tx,
        tenant,
        alert,
        customer,
        at_ms,
        at_ms,
        &mut Seen::new(policy),
    )
}

/// Evaluates one alert for one customer: its values at `instant` (whose windows they belong
/// to) against its thresholds; firings carry the write's time `at_ms`.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    tx: &WriteTxn,
    tenant: TenantId,
    alert: &Alert,
    customer: Id,
    at_ms: i64,
    instant: i64,
    seen: &mut Seen<'_>,
) -> Result<(), StoreError> {
    if let AlertKind::SpendExceeded { .. } = alert.kind {
        for observed in spend(tx, tenant, alert, customer, at_ms, seen)? {
            if let Some(window) = observed.window {
                fire_in_window(tx, tenant, alert, customer, &observed, window, at_ms)?;
            }
        }
        return Ok(());
    }
    let Some(observed) = current_value(tx, tenant, alert, customer, instant, seen)? else {
        return Ok(());
    };
    match observed.window {
        Some(window) => fire_in_window(tx, tenant, alert, customer, &observed, window, at_ms),
        None => balance_thresholds(tx, tenant, alert, customer, &observed, at_ms),
    }
}

/// The one place each alert type's value at `at_ms` is read (spend, which has one value per
/// billing period, is [`spend`]).
fn current_value(
    tx: &WriteTxn,
    tenant: TenantId,
    alert: &Alert,
    customer: Id,
    at_ms: i64,
    seen: &mut Seen<'_>,
) -> Result<Option<Observed>, StoreError> {
    match &alert.kind {
        AlertKind::UsageExceeded { meter } => {
            let Some(window) = usage_window(tx, tenant, customer, at_ms, seen)? else {
                return Ok(None);
            };
            let value = match seen.usage.get(meter) {
                Some(v) => *v,
                None => {
                    let v = usage_in(tx, tenant, *meter, customer, window)?;
                    seen.usage.insert(*meter, v);
                    v
                }
            };
            Ok(value.map(|value| Observed {
                value,
                window: Some(window),
                currency: None,
            }))
        }
        AlertKind::SpendExceeded { .. } => Ok(None),
        AlertKind::EntitlementExhausted { feature } => {
            entitlement_used(tx, tenant, customer, *feature, at_ms)
        }
        AlertKind::CreditBalanceBelow { .. } | AlertKind::CreditBalanceDepleted { .. } => {
            let Some(currency) = watched_currency(tx, tenant, alert, customer, seen)? else {
                return Ok(None);
            };
            let value = match seen.balances.get(&currency) {
                Some(v) => *v,
                None => {
                    let v = credits_left(tx, tenant, customer, &currency, at_ms)?;
                    seen.balances.insert(currency.clone(), v);
                    v
                }
            };
            Ok(value.map(|value| Observed {
                value,
                window: None,
                currency: Some(currency),
            }))
        }
    }
}

/// `spend_exceeded`: per billing period, the amount of the customer's drafts of that period in
/// the watched currency (the upcoming invoices' amounts so far, before tax). Subscriptions on
/// the same period add up; each period is its own window, so a subscription whose period rolls
/// over starts afresh while another's continues.
fn spend(
    tx: &WriteTxn,
    tenant: TenantId,
    alert: &Alert,
    customer: Id,
    at_ms: i64,
    seen: &mut Seen<'_>,
) -> Result<Vec<Observed>, StoreError> {
    let Some(currency) = watched_currency(tx, tenant, alert, customer, seen)? else {
        return Ok(Vec::new());
    };
    let drafts = match seen.drafts.take() {
        Some(d) => d,
        None => draft::of_customer(tx, tenant, customer, at_ms, seen.policy)?,
    };
    let mut per_period: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for d in drafts.iter().flatten().filter(|d| d.currency == currency) {
        let sum = per_period
            .entry((d.period.start_ms, d.period.end_ms))
            .or_insert(0);
        *sum = sum.saturating_add(d.amount_minor);
    }
    seen.drafts = Some(drafts);
    Ok(per_period
        .into_iter()
        .map(|((start_ms, end_ms), amount)| Observed {
            value: Decimal::from(amount),
            window: Some(Window { start_ms, end_ms }),
            currency: Some(currency.clone()),
        })
        .collect())
}

/// `entitlement_exhausted`: the percentage of a metered entitlement's allowance (limit plus
/// the grants counted) used in its reset window; 100 once usage reaches the allowance (also
/// when the allowance is 0). Features that are not metered, or not granted, have no value.
fn entitlement_used(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: Id,
    feature: Id,
    at_ms: i64,
) -> Result<Option<Observed>, StoreError> {
    let tables = check::WriteTables::open(tx)?;
    let Some(answer) = check::check(&tables, tenant, customer, feature, at_ms)? else {
        return Ok(None);
    };
    let Some(metered) = answer.metered else {
        return Ok(None);
    };
    let allowance = metered.usage.checked_add(metered.remaining);
    let percent = match allowance {
        Some(a) if metered.usage >= a => Some(Decimal::ONE_HUNDRED),
        Some(a) => metered
            .usage
            .checked_mul(Decimal::ONE_HUNDRED)
            .and_then(|v| v.checked_div(a)),
        None => None,
    };
    Ok(percent.map(|value| Observed {
        value,
        window: Some(Window {
            start_ms: metered.window.start_ms,
            end_ms: metered.window.end_ms,
        }),
        currency: None,
    }))
}

fn usage_window(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: Id,
    at_ms: i64,
    seen: &mut Seen<'_>,
) -> Result<Option<Window>, StoreError> {
    if let Some(w) = seen.window {
        return Ok(w);
    }
    let w = window::usage_window(
        &tx.open_table(tables::SUBSCRIPTIONS_BY_CUSTOMER)?,
        &tx.open_table(tables::SUBSCRIPTIONS)?,
        &tx.open_table(tables::PLANS)?,
        tenant,
        customer,
        at_ms,
    )?;
    seen.window = Some(w);
    Ok(w)
}

/// The meter's usage of the customer in the window, from the rollups.
pub fn usage_in(
    tx: &WriteTxn,
    tenant: TenantId,
    meter: Id,
    customer: Id,
    window: Window,
) -> Result<Option<Decimal>, StoreError> {
    let Some(meter) = get_record::<Meter, _>(
        &tx.open_table(tables::METERS)?,
        keys::tenant_id(tenant, meter),
    )?
    else {
        tracing::warn!(meter = %meter.display(crate::ingest::meter::PREFIX), "an alert's meter is missing");
        return Ok(None);
    };
    let acc = usage::aggregate(
        &UsageTables::open_write(tx)?,
        tenant,
        &meter,
        customer,
        window.start_ms,
        window.end_ms,
    )?;
    match acc.value(meter.aggregation) {
        Ok(v) => Ok(v),
        Err(_) => {
            tracing::warn!(meter = %meter.key, "usage overflowed; the alert is not evaluated");
            Ok(None)
        }
    }
}

fn watched_currency(
    tx: &WriteTxn,
    tenant: TenantId,
    alert: &Alert,
    customer: Id,
    seen: &mut Seen<'_>,
) -> Result<Option<String>, StoreError> {
    let own = match &seen.currency {
        Some(c) => c.clone(),
        None => {
            let c = crate::customers::load_in_write(tx, tenant, customer)?.map(|c| c.currency);
            seen.currency = Some(c.clone());
            c
        }
    };
    let Some(own) = own else {
        return Ok(None);
    };
    Ok(alert.kind.currency_for(&own).map(str::to_string))
}

/// The credits a customer can draw at `at_ms` in `currency`: the remainders of its grants that
/// count then ([`grant::Grant::counts_at`]), as the balance endpoint adds them.
pub fn credits_left(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: Id,
    currency: &str,
    at_ms: i64,
) -> Result<Option<Decimal>, StoreError> {
    let grants = grant::of_customer(
        &tx.open_table(tables::GRANTS)?,
        &tx.open_table(tables::GRANTS_BY_CUSTOMER)?,
        tenant,
        customer,
    )?;
    let balances = tx.open_table(tables::BALANCES)?;
    let mut total: i64 = 0;
    for g in grants
        .iter()
        .filter(|g| g.currency == currency && g.counts_at(at_ms))
    {
        let Some(sum) = total.checked_add(grant::remaining(&balances, tenant, g)?) else {
            return Ok(None);
        };
        total = sum;
    }
    Ok(Some(Decimal::from(total)))
}

/// Usage-like alerts: each crossed threshold fires once in the window, in ascending order.
fn fire_in_window(
    tx: &WriteTxn,
    tenant: TenantId,
    alert: &Alert,
    customer: Id,
    observed: &Observed,
    window: Window,
    at_ms: i64,
) -> Result<(), StoreError> {
    for (i, threshold) in alert.thresholds.iter().enumerate() {
        if !alert.crossed(observed.value, threshold.0) {
            continue;
        }
        let index = u8::try_from(i).unwrap_or(u8::MAX);
        let identity = firing::identity(tenant, alert.id, customer, window.start_ms, index);
        if tx
            .open_table(tables::ALERT_FIRING_KEYS)?
            .get(identity.as_slice())?
            .is_some()
        {
            continue;
        }
        firing::record(
            tx,
            tenant,
            &new_firing(alert, customer, index, *threshold, observed, at_ms)
                .in_window(window.start_ms, Some(window.end_ms)),
        )?;
    }
    Ok(())
}

/// The thresholds of a balance alert, compared as a falling balance crosses them (highest
/// first); `credit_balance_depleted` has the one threshold 0.
fn balance_levels(alert: &Alert) -> Vec<Stored> {
    match alert.kind {
        AlertKind::CreditBalanceDepleted { .. } => vec![Stored(Decimal::ZERO)],
        _ => alert.thresholds.clone(),
    }
}

fn state_key(tenant: TenantId, alert: Id, customer: Id) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, alert).to_vec();
    key.extend_from_slice(&customer.to_bytes());
    key
}

/// Balance alerts: a crossed threshold fires once per arming; a fired threshold whose balance
/// is back at or above it records its recovery and re-arms (its next window starts then).
fn balance_thresholds(
    tx: &WriteTxn,
    tenant: TenantId,
    alert: &Alert,
    customer: Id,
    observed: &Observed,
    at_ms: i64,
) -> Result<(), StoreError> {
    let value = observed.value;
    let levels = balance_levels(alert);
    let key = state_key(tenant, alert.id, customer);
    let stored: Option<Vec<i64>> = get_record(&tx.open_table(tables::ALERT_STATE)?, &key)?;
    let mut armed_at = stored.unwrap_or_default();
    armed_at.resize(levels.len(), alert.created_at_ms);
    let mut changed = false;
    for (i, threshold) in levels.iter().enumerate().rev() {
        let index = u8::try_from(i).unwrap_or(u8::MAX);
        let since = armed_at[i];
        let identity = firing::identity(tenant, alert.id, customer, since, index);
        let existing = firing::find(tx, tenant, alert.id, &identity)?;
        let crossed = alert.crossed(value, threshold.0);
        match existing {
            None if crossed => firing::record(
                tx,
                tenant,
                &new_firing(alert, customer, index, *threshold, observed, at_ms)
                    .in_window(since, None),
            )?,
            Some(mut fired) if !crossed && fired.recovered.is_none() => {
                firing::recover(tx, tenant, &mut fired, Stored(value), at_ms)?;
                armed_at[i] = at_ms.max(since.saturating_add(1));
                changed = true;
            }
            _ => {}
        }
    }
    if changed {
        put_record(&mut tx.open_table(tables::ALERT_STATE)?, &key, &armed_at)?;
    }
    Ok(())
}

fn new_firing(
    alert: &Alert,
    customer: Id,
    index: u8,
    threshold: Stored,
    observed: &Observed,
    at_ms: i64,
) -> Firing {
    Firing {
        id: Id::generate_at(at_ms),
        alert: alert.id,
        customer,
        alert_type: alert.kind.as_str().to_string(),
        threshold_index: index,
        threshold,
        value: Stored(observed.value),
        currency: observed.currency.clone(),
        window_start_ms: 0,
        window_end_ms: None,
        triggered_at_ms: at_ms,
        recovered: None,
    }
}

impl Firing {
    fn in_window(mut self, start_ms: i64, end_ms: Option<i64>) -> Self {
        self.window_start_ms = start_ms;
        self.window_end_ms = end_ms;
        self
    }
}
