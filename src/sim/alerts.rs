//! Alerts in the simulation: a step that creates usage and balance alerts or touches both
//! customers' usage and checks that every crossed threshold has its firing, and the invariant
//! that every firing crossed its threshold, exists once per (alert, customer, window,
//! threshold) and has its one `alert.triggered` notification.

use crate::store::ReadableTable;

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde_json::json;

use super::world::{Violation, World};
use crate::alerts::firing::{self, Firing};
use crate::alerts::window;
use crate::alerts::{Alert, AlertKind, CreateAlert};
use crate::decimal::Stored;
use crate::id::Id;
use crate::store::{codec, keys, tables};

fn err(e: impl std::fmt::Display) -> Violation {
    e.to_string()
}

/// Creates a usage or balance alert, or sends one event for each customer and checks at once
/// that every usage threshold crossed now has its firing.
pub fn step(world: &mut World, note: &mut String) -> Result<(), Violation> {
    match world.rng.below(12) {
        0..=2 => create_usage(world, note),
        3..=4 => create_balance(world, note),
        5 => create_spend(world, note),
        6 => create_quota(world, note),
        _ => touch_and_check(world, note),
    }
}

fn thresholds(world: &mut World, most: i64, step: i64) -> Vec<Stored> {
    let n = world.rng.range_i64(1, most);
    let mut level = 0;
    (0..n)
        .map(|_| {
            level += world.rng.range_i64(1, step);
            Stored(Decimal::from(level))
        })
        .collect()
}

fn customer(world: &mut World) -> Option<Id> {
    if world.rng.chance(40) {
        return None;
    }
    let i = world.rng.pick(world.model.customers.len())?;
    Some(world.model.customers[i])
}

fn create(world: &mut World, alert: Alert, note: &mut String) -> Result<(), Violation> {
    note.push_str(&format!(
        "{} for {} at {:?}",
        alert.kind.as_str(),
        alert.customer.map_or("every customer".to_string(), |c| c
            .display(crate::customers::PREFIX)),
        alert
            .thresholds
            .iter()
            .map(|t| t.0.to_string())
            .collect::<Vec<_>>()
    ));
    world.submit(CreateAlert {
        policy: super::ops::POLICY,
        tenant: world.tenant,
        alert,
    })?;
    Ok(())
}

fn create_usage(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let key = if world.rng.chance(50) {
        "calls"
    } else {
        "tokens"
    };
    let meter = {
        let tx = world.read()?;
        crate::ingest::meter::by_key(&tx, world.tenant, key)
            .map_err(err)?
            .ok_or_else(|| format!("the simulation's meter {key} is missing"))?
    };
    let (most, step) = if key == "calls" { (4, 6) } else { (4, 60) };
    let now = world.now();
    let alert = Alert {
        id: Id::generate_at(now),
        customer: customer(world),
        kind: AlertKind::UsageExceeded { meter: meter.id },
        thresholds: thresholds(world, most, step),
        name: None,
        created_at_ms: now,
        archived_at_ms: None,
    };
    create(world, alert, note)
}

fn create_balance(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let now = world.now();
    let depleted = world.rng.chance(30);
    let alert = Alert {
        id: Id::generate_at(now),
        customer: customer(world),
        kind: if depleted {
            AlertKind::CreditBalanceDepleted { currency: None }
        } else {
            AlertKind::CreditBalanceBelow { currency: None }
        },
        thresholds: if depleted {
            Vec::new()
        } else {
            thresholds(world, 3, 2_000)
        },
        name: None,
        created_at_ms: now,
        archived_at_ms: None,
    };
    create(world, alert, note)
}

fn create_spend(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let now = world.now();
    let alert = Alert {
        id: Id::generate_at(now),
        customer: customer(world),
        kind: AlertKind::SpendExceeded { currency: None },
        thresholds: thresholds(world, 4, 40),
        name: None,
        created_at_ms: now,
        archived_at_ms: None,
    };
    create(world, alert, note)
}

/// An `entitlement_exhausted` alert on the simulation's metered feature, once it exists.
fn create_quota(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let Some(feature) = super::entitlements::feature_id(world)? else {
        note.push_str("no feature yet");
        return Ok(());
    };
    let now = world.now();
    let alert = Alert {
        id: Id::generate_at(now),
        customer: customer(world),
        kind: AlertKind::EntitlementExhausted { feature },
        thresholds: thresholds(world, 3, 60),
        name: None,
        created_at_ms: now,
        archived_at_ms: None,
    };
    create(world, alert, note)
}

/// A spend or entitlement alert's values for `customer` now, each with its window start:
/// recomputed from a read snapshot, independently of the watcher.
fn recomputed(
    world: &World,
    alert: &Alert,
    customer: Id,
    now: i64,
) -> Result<Vec<(Decimal, i64)>, Violation> {
    let tx = world.read()?;
    match alert.kind {
        AlertKind::SpendExceeded { .. } => {
            let drafts = crate::billing::draft::of_customer(
                &*tx,
                world.tenant,
                customer,
                now,
                &super::ops::POLICY,
            )
            .map_err(err)?;
            let mut per_period: BTreeMap<i64, i64> = BTreeMap::new();
            for d in drafts.iter().flatten() {
                *per_period.entry(d.period.start_ms).or_insert(0) += d.amount_minor;
            }
            Ok(per_period
                .into_iter()
                .map(|(start, amount)| (Decimal::from(amount), start))
                .collect())
        }
        AlertKind::EntitlementExhausted { feature } => {
            let tables = crate::entitlements::check::ReadTables::open(&tx).map_err(err)?;
            let answer =
                crate::entitlements::check::check(&tables, world.tenant, customer, feature, now)
                    .map_err(err)?;
            let Some(m) = answer.and_then(|a| a.metered) else {
                return Ok(Vec::new());
            };
            let allowance = m.usage + m.remaining;
            let share = if m.usage >= allowance {
                Decimal::ONE_HUNDRED
            } else {
                m.usage * Decimal::ONE_HUNDRED / allowance
            };
            Ok(vec![(share, m.window.start_ms)])
        }
        _ => Ok(Vec::new()),
    }
}

/// Every spend and entitlement threshold crossed now has its firing in its window.
fn check_derived(world: &World, alerts: &[Alert], now: i64) -> Result<usize, Violation> {
    let mut checked = 0;
    for alert in alerts.iter().filter(|a| a.archived_at_ms.is_none()) {
        for customer in &world.model.customers {
            if alert.customer.is_some_and(|c| c != *customer) {
                continue;
            }
            for (value, start_ms) in recomputed(world, alert, *customer, now)? {
                for (i, t) in alert.thresholds.iter().enumerate() {
                    if !alert.crossed(value, t.0) {
                        continue;
                    }
                    checked += 1;
                    let identity = firing::identity(
                        world.tenant,
                        alert.id,
                        *customer,
                        start_ms,
                        u8::try_from(i).unwrap_or(u8::MAX),
                    );
                    let tx = world.read()?;
                    let keys = tx.open_table(tables::ALERT_FIRING_KEYS).map_err(err)?;
                    if keys.get(identity.as_slice()).map_err(err)?.is_none() {
                        return Err(format!(
                            "alert {} ({}) for {}: value {value} crossed threshold {} in the window from {} without a firing",
                            alert.id.display(crate::alerts::PREFIX),
                            alert.kind.as_str(),
                            customer.display(crate::customers::PREFIX),
                            t.0,
                            crate::clock::rfc3339(start_ms)
                        ));
                    }
                }
            }
        }
    }
    Ok(checked)
}

fn touch_and_check(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let now = world.now();
    let mut events = Vec::new();
    for external in ["alice", "bob"] {
        world.model.next_event += 1;
        events.push(json!({
            "id": format!("e{}", world.model.next_event), "source": "sim", "customer": external,
            "type": "call", "timestamp": crate::clock::rfc3339(now),
            "properties": {"tokens": world.rng.range_i64(1, 40)},
        }));
    }
    super::ops::send_events(world, events, note)?;
    let tx = world.read()?;
    let (alerts, _) = crate::alerts::list(&tx, world.tenant, None, usize::MAX).map_err(err)?;
    let firing_keys = tx.open_table(tables::ALERT_FIRING_KEYS).map_err(err)?;
    let usage_tables = (
        tx.open_table(tables::SUBSCRIPTIONS_BY_CUSTOMER)
            .map_err(err)?,
        tx.open_table(tables::SUBSCRIPTIONS).map_err(err)?,
        tx.open_table(tables::PLANS).map_err(err)?,
    );
    let mut checked = 0;
    for alert in alerts.iter().filter(|a| a.archived_at_ms.is_none()) {
        let AlertKind::UsageExceeded { meter } = alert.kind else {
            continue;
        };
        let Some(meter) = crate::ingest::meter::get(&tx, world.tenant, meter).map_err(err)? else {
            return Err("an alert's meter vanished".into());
        };
        for customer in &world.model.customers {
            if alert.customer.is_some_and(|c| c != *customer) {
                continue;
            }
            let Some(w) = window::usage_window(
                &usage_tables.0,
                &usage_tables.1,
                &usage_tables.2,
                world.tenant,
                *customer,
                now,
            )
            .map_err(err)?
            else {
                continue;
            };
            let acc = crate::ingest::usage::usage(
                &tx,
                world.tenant,
                &meter,
                *customer,
                w.start_ms,
                w.end_ms,
            )
            .map_err(err)?;
            let Ok(Some(value)) = acc.value(meter.aggregation) else {
                continue;
            };
            for (i, t) in alert.thresholds.iter().enumerate() {
                if !alert.crossed(value, t.0) {
                    continue;
                }
                checked += 1;
                let identity = firing::identity(
                    world.tenant,
                    alert.id,
                    *customer,
                    w.start_ms,
                    u8::try_from(i).unwrap_or(u8::MAX),
                );
                if firing_keys.get(identity.as_slice()).map_err(err)?.is_none() {
                    return Err(format!(
                        "alert {} for {}: usage {value} crossed threshold {} in the window from {} without a firing",
                        alert.id.display(crate::alerts::PREFIX),
                        customer.display(crate::customers::PREFIX),
                        t.0,
                        crate::clock::rfc3339(w.start_ms)
                    ));
                }
            }
        }
    }
    drop((firing_keys, usage_tables, tx));
    let derived = check_derived(world, &alerts, now)?;
    note.push_str(&format!(
        "; {checked} crossed usage thresholds and {derived} spend or entitlement thresholds have their firing"
    ));
    Ok(())
}

/// Every firing crossed its threshold, exists once per (alert, customer, window, threshold)
/// and once in the identity index, and has one `alert.triggered` (unless purged).
pub fn check(world: &World) -> Result<(), Violation> {
    let tx = world.read()?;
    let (alerts, _) = crate::alerts::list(&tx, world.tenant, None, usize::MAX).map_err(err)?;
    let firings_table = tx.open_table(tables::ALERT_FIRINGS).map_err(err)?;
    let mut seen = BTreeSet::new();
    let mut firing_ids = BTreeMap::new();
    for alert in &alerts {
        for f in firing::all_of(&firings_table, world.tenant, alert.id).map_err(err)? {
            sound(alert, &f)?;
            if !seen.insert((f.alert, f.customer, f.window_start_ms, f.threshold_index)) {
                return Err(format!(
                    "alert {} fired threshold {} twice for one window",
                    alert.id.display(crate::alerts::PREFIX),
                    f.threshold_index
                ));
            }
            firing_ids.insert(f.id, f.triggered_at_ms);
        }
    }
    let (start, end) = keys::tenant_range(world.tenant);
    let identities = tx
        .open_table(tables::ALERT_FIRING_KEYS)
        .map_err(err)?
        .range::<&[u8]>(start.as_slice()..end.as_slice())
        .map_err(err)?
        .count();
    if identities != seen.len() {
        return Err(format!(
            "{identities} firing identities for {} firings",
            seen.len()
        ));
    }
    let notifications = tx.open_table(tables::NOTIFICATIONS).map_err(err)?;
    let mut triggered: BTreeMap<Id, usize> = BTreeMap::new();
    for entry in notifications
        .range::<&[u8]>(start.as_slice()..end.as_slice())
        .map_err(err)?
    {
        let (_, v) = entry.map_err(err)?;
        let n: crate::notifications::outbox::Notification =
            codec::decode(v.value()).map_err(err)?;
        if n.event_type == "alert.triggered" {
            *triggered.entry(n.subject.id).or_insert(0) += 1;
        }
    }
    let cutoff_ms = world.notification_cutoff_ms();
    for (id, at_ms) in firing_ids {
        let found = triggered.get(&id).copied().unwrap_or(0);
        if !(found == 1 || (at_ms < cutoff_ms && found == 0)) {
            return Err(format!(
                "firing {} has {found} alert.triggered notifications",
                id.display(firing::PREFIX)
            ));
        }
    }
    Ok(())
}

/// A firing's value crossed its threshold, which is the alert's own.
fn sound(alert: &Alert, f: &Firing) -> Result<(), Violation> {
    let expected = match alert.kind {
        AlertKind::CreditBalanceDepleted { .. } => Some(Decimal::ZERO),
        _ => alert
            .thresholds
            .get(usize::from(f.threshold_index))
            .map(|t| t.0),
    };
    if expected != Some(f.threshold.0) || !alert.crossed(f.value.0, f.threshold.0) {
        return Err(format!(
            "firing {} of alert {}: value {} against threshold {} ({:?} expected)",
            f.id.display(firing::PREFIX),
            alert.id.display(crate::alerts::PREFIX),
            f.value.0,
            f.threshold.0,
            expected
        ));
    }
    Ok(())
}
