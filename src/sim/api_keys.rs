//! API keys in the simulation: keys created (some read-only) and revoked, sometimes by another
//! tenant (which must change nothing), and the invariant that every acknowledged key
//! authenticates exactly while it is not revoked, as the tenant and with the access it was
//! created with — across crashes too.

use super::world::{Violation, World};
use crate::store::TenantId;
use crate::tenants::{self, CreateTenantKey, RevokeTenantKey, KEY_ID_PREFIX};

/// A key the simulation was told was created.
#[derive(Debug, Clone)]
pub struct SimKey {
    /// The secret, as the first reply carried it.
    pub secret: String,
    /// Its public id.
    pub id: crate::id::Id,
    /// Whether it was made read-only.
    pub read_only: bool,
    /// Whether a revoke of it was acknowledged.
    pub revoked: bool,
}

/// Creates a key (a third of them read-only), or revokes one of ours, or tries to revoke one
/// of ours as another tenant.
pub fn step(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let count = world.model.api_keys.len();
    match world.rng.range_i64(0, 3) {
        0 | 1 if count < 12 => create(world, note),
        _ => match world.rng.pick(count) {
            Some(k) => revoke(world, k, note),
            None => create(world, note),
        },
    }
}

fn create(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let mut key = tenants::generate_key().map_err(|e| e.to_string())?;
    key.read_only = world.rng.chance(33);
    key.label = format!("sim-{}", world.model.api_keys.len());
    let secret = key.secret.clone();
    let now_ms = world.now();
    let created = world.submit(CreateTenantKey {
        tenant: world.tenant,
        key,
        now_ms,
    })?;
    let created = created.map_err(|e| format!("creating a valid key was refused: {e}"))?;
    note.push_str(&format!(
        "created {}{}",
        created.id.display(KEY_ID_PREFIX),
        if created.read_only {
            " (read-only)"
        } else {
            ""
        }
    ));
    world.model.api_keys.push(SimKey {
        secret,
        id: created.id,
        read_only: created.read_only,
        revoked: false,
    });
    Ok(())
}

fn revoke(world: &mut World, k: usize, note: &mut String) -> Result<(), Violation> {
    let id = world.model.api_keys[k].id;
    let foreign = world.rng.chance(25);
    let tenant = if foreign {
        TenantId(world.tenant.0 + 1)
    } else {
        world.tenant
    };
    let now_ms = world.now();
    let answer = world.submit(RevokeTenantKey {
        tenant,
        key_id: id,
        now_ms,
    })?;
    note.push_str(&format!(
        "revoke {}{}",
        id.display(KEY_ID_PREFIX),
        if foreign { " as another tenant" } else { "" }
    ));
    match (foreign, answer) {
        (true, Ok(_)) => Err(format!(
            "another tenant revoked key {}",
            id.display(KEY_ID_PREFIX)
        )),
        (true, Err(_)) => Ok(()),
        (false, Ok(key)) if key.revoked_at_ms.is_some() => {
            world.model.api_keys[k].revoked = true;
            Ok(())
        }
        (false, other) => Err(format!(
            "revoking our own key {} answered {other:?}",
            id.display(KEY_ID_PREFIX)
        )),
    }
}

/// Every acknowledged key authenticates exactly while not revoked, for our tenant, with its
/// access.
pub fn check(world: &World) -> Result<(), Violation> {
    let tx = world.read()?;
    for key in &world.model.api_keys {
        let found = tenants::authenticate(&tx, &key.secret).map_err(|e| e.to_string())?;
        let expected = (!key.revoked).then_some((world.tenant, key.id, key.read_only));
        let got = found.map(|p| (p.tenant, p.key_id, p.read_only));
        if got != expected {
            return Err(format!(
                "key {} authenticates as {got:?}, expected {expected:?}",
                key.id.display(KEY_ID_PREFIX)
            ));
        }
    }
    Ok(())
}
