//! Entitlements in the simulation: a step that sets the plans' entitlement to a metered
//! feature, overrides or un-overrides it for a customer, or grants a customer extra allowance
//! (under an idempotency key, now and then replayed); and the invariant that the check equals a
//! recomputation from the acknowledged events and the stored grants.

use rust_decimal::Decimal;

use super::world::{Violation, World};
use crate::entitlements::check::{check as run_check, ReadTables, Source};
use crate::entitlements::entitlement::{RemoveEntitlement, SetEntitlement, Spec, SpecKind, Target};
use crate::entitlements::feature::{self, CreateFeature, Feature};
use crate::entitlements::grant::{self, CreateGrant, Grant};
use crate::entitlements::window::{self, Reset};
use crate::id::Id;
use crate::idempotency::{Idempotent, Outcome, StoredResponse};
use crate::store::tables;

/// The feature's key.
const FEATURE: &str = "quota";
/// The customers' external ids, by their index in the model (as the ingest steps send them).
const EXTERNAL: [&str; 2] = ["alice", "bob"];

fn render(
    output: &Result<Grant, crate::entitlements::entitlement::EntitlementError>,
) -> StoredResponse {
    StoredResponse {
        status: 200,
        content_type: "text/plain".into(),
        body: match output {
            Ok(g) => g.id.display(grant::PREFIX),
            Err(e) => format!("error: {e}"),
        }
        .into_bytes(),
    }
}

fn random_spec(world: &mut World) -> Spec {
    let kind = if world.rng.chance(10) {
        SpecKind::Boolean
    } else {
        let reset = [Reset::BillingPeriod, Reset::Day, Reset::Month][world.rng.below(3) as usize];
        SpecKind::Metered {
            meter: "tokens".into(),
            limit: Decimal::from(world.rng.range_i64(0, 400)),
            reset,
            hard: world.rng.chance(50),
        }
    };
    Spec {
        feature: FEATURE.into(),
        enabled: world.rng.chance(90),
        kind,
    }
}

/// Creates the feature once, then sets the plans' entitlement, overrides one customer's, removes
/// an override, or grants extra allowance.
pub fn step(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let now = world.now();
    let tenant = world.tenant;
    if feature::find(&*world.read()?, tenant, FEATURE)
        .map_err(|e| e.to_string())?
        .is_none()
    {
        let f = Feature {
            id: Id::generate_at(now),
            key: FEATURE.into(),
            name: "Quota".into(),
            created_at_ms: now,
            archived_at_ms: None,
        };
        world
            .submit(CreateFeature { tenant, feature: f })?
            .map_err(|e| e.to_string())?;
    }
    let Some(c) = world.rng.pick(world.model.customers.len()) else {
        return Ok(());
    };
    let customer = world.model.customers[c];
    match world.rng.below(4) {
        0 => {
            for plan in world.model.plans.clone() {
                let spec = random_spec(world);
                note.push_str(&format!("plan entitlement {:?}; ", spec.kind));
                world
                    .submit(SetEntitlement {
                        tenant,
                        target: Target::Plan(plan),
                        spec,
                        now_ms: now,
                    })?
                    .map_err(|e| e.to_string())?;
            }
        }
        1 => {
            let spec = random_spec(world);
            note.push_str(&format!("override for {} {:?}", EXTERNAL[c % 2], spec.kind));
            world
                .submit(SetEntitlement {
                    tenant,
                    target: Target::Customer(customer),
                    spec,
                    now_ms: now,
                })?
                .map_err(|e| e.to_string())?;
        }
        2 => {
            let removed = world.submit(RemoveEntitlement {
                tenant,
                target: Target::Customer(customer),
                feature: FEATURE.into(),
            })?;
            note.push_str(&format!(
                "override of {} removed: {}",
                EXTERNAL[c % 2],
                removed.is_ok()
            ));
        }
        _ => grant_once(world, customer, note)?,
    }
    Ok(())
}

/// A grant under its own key, now and then replayed: one grant per key, whatever the replays.
fn grant_once(world: &mut World, customer: Id, note: &mut String) -> Result<(), Violation> {
    let now = world.now();
    world.model.next_key += 1;
    let key = format!("entitlement-grant-{}", world.model.next_key);
    let effective_at_ms = now - world.rng.range_i64(0, 2 * window::DAY_MS);
    let expires_at_ms = world
        .rng
        .chance(40)
        .then(|| effective_at_ms + world.rng.range_i64(1, window::DAY_MS));
    let command = Idempotent {
        tenant: world.tenant,
        key: key.clone(),
        fingerprint: *blake3::hash(key.as_bytes()).as_bytes(),
        now_ms: now,
        retention_ms: 86_400_000,
        inner: CreateGrant {
            tenant: world.tenant,
            feature: FEATURE.into(),
            grant: Grant {
                id: Id::generate_at(now),
                customer,
                feature: Id(0),
                amount: crate::decimal::Stored(Decimal::from(world.rng.range_i64(1, 100))),
                effective_at_ms,
                expires_at_ms,
                created_at_ms: now,
            },
        },
        render,
    };
    let body = |o: &Outcome| match o {
        Outcome::Executed(r) | Outcome::Replayed(r) => {
            Ok(String::from_utf8_lossy(&r.body).to_string())
        }
        Outcome::Mismatch => Err("a replayed grant mismatched its own key".to_string()),
    };
    let first = body(&world.submit_keyed(command.clone())?)?;
    if world.rng.chance(30) && body(&world.submit(command)?)? != first {
        return Err(format!("grant {key} replayed with another answer"));
    }
    let id = Id::parse(&first, grant::PREFIX).ok_or(format!("grant {key} failed: {first}"))?;
    world.model.entitlement_grants.insert(id);
    note.push_str(&format!("grant {first}"));
    Ok(())
}

/// The tokens of a customer's acknowledged events timestamped in `[from_ms, to_ms]`, or `None`
/// when the sum leaves the decimal range (the extreme-values profile).
fn tokens(world: &World, external: &str, from_ms: i64, to_ms: i64) -> Option<Decimal> {
    let mut sum = Decimal::ZERO;
    for (_, body) in world.model.events.values() {
        let ts = body["timestamp"]
            .as_str()
            .and_then(crate::clock::parse_rfc3339)?;
        if body["customer"] != external || ts < from_ms || ts > to_ms {
            continue;
        }
        if let Ok(v) = crate::decimal::from_json(&body["properties"]["tokens"]) {
            sum = sum.checked_add(v)?;
        }
    }
    Some(sum)
}

/// Every acknowledged grant is stored once, and for each customer the check at now equals a
/// recomputation: usage from the acknowledged events in the window it reports (a calendar day
/// or month for those resets, containing now), grants by the rule, remaining and hard access.
pub fn check(world: &World) -> Result<(), Violation> {
    let tx = world.read()?;
    let Some(f) = feature::find(&tx, world.tenant, FEATURE).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let grants_table = tx
        .open_table(tables::ENTITLEMENT_GRANTS)
        .map_err(|e| e.to_string())?;
    let tables = ReadTables::open(&tx).map_err(|e| e.to_string())?;
    let now = world.now();
    let mut stored = std::collections::BTreeSet::new();
    for (i, customer) in world.model.customers.iter().enumerate() {
        let mut grants = Vec::new();
        grant::for_each(&grants_table, world.tenant, *customer, Some(f.id), |g| {
            grants.push(g)
        })
        .map_err(|e| e.to_string())?;
        stored.extend(grants.iter().map(|g| g.id));
        let c = run_check(&tables, world.tenant, *customer, f.id, now)
            .map_err(|e| e.to_string())?
            .ok_or("the check found no customer or feature")?;
        let Some(m) = c.metered.as_ref().filter(|_| c.source != Source::None) else {
            continue;
        };
        let w = m.window;
        let calendar = match m.reset {
            Reset::Day => Some(window::day(now)),
            Reset::Month => window::month(now),
            Reset::BillingPeriod => None,
        };
        if !w.contains(now) || calendar.is_some_and(|cw| cw != w) {
            return Err(format!(
                "window {w:?} of {:?} does not contain {now}",
                m.reset
            ));
        }
        let Some(usage) = tokens(world, EXTERNAL[i % 2], w.start_ms, now) else {
            continue;
        };
        let granted: Decimal = grants
            .iter()
            .filter(|g| w.start_ms <= g.effective_at_ms && g.effective_at_ms <= now)
            .filter(|g| g.expires_at_ms.is_none_or(|e| now < e))
            .map(|g| g.amount.0)
            .sum();
        let total = m.limit + granted;
        if m.usage != usage || m.remaining != total - usage {
            return Err(format!(
                "check for {}: usage {} remaining {}, recomputed usage {usage} remaining {}",
                EXTERNAL[i % 2],
                m.usage,
                m.remaining,
                total - usage
            ));
        }
        if c.has_access && m.hard && usage >= total {
            return Err(format!("{} has access past a hard limit", EXTERNAL[i % 2]));
        }
    }
    if stored != world.model.entitlement_grants {
        return Err(format!(
            "{} grants acknowledged, {} stored",
            world.model.entitlement_grants.len(),
            stored.len()
        ));
    }
    Ok(())
}

/// The simulation's metered feature, once a step created it.
pub fn feature_id(world: &World) -> Result<Option<Id>, Violation> {
    let tx = world.read()?;
    Ok(feature::find(&tx, world.tenant, FEATURE)
        .map_err(|e| e.to_string())?
        .map(|f| f.id))
}
