//! Coupons in the simulation: a step that creates a coupon and redeems it on subscriptions and
//! customers (some applications replayed with their key), and the invariants it must keep.

use crate::store::ReadableTable;

use rust_decimal::Decimal;

use super::world::{Violation, World};
use crate::billing::coupon::{AppliesTo, Coupon, CreateCoupon, Duration, Off};
use crate::billing::discount::{self, ApplyDiscount, Discount, DiscountError, Target};
use crate::billing::invoice::{Invoice, LineKind};
use crate::decimal::Stored;
use crate::id::Id;
use crate::idempotency::{Idempotent, Outcome, StoredResponse};
use crate::store::{codec, keys, tables};

fn render(output: &Result<Discount, DiscountError>) -> StoredResponse {
    StoredResponse {
        status: 200,
        content_type: "text/plain".into(),
        body: match output {
            Ok(d) => d.id.display(discount::PREFIX),
            Err(e) => format!("error: {e}"),
        }
        .into_bytes(),
    }
}

fn body(outcome: &Outcome) -> Result<Vec<u8>, Violation> {
    match outcome {
        Outcome::Executed(r) | Outcome::Replayed(r) => Ok(r.body.clone()),
        Outcome::Mismatch => Err("a replayed redemption mismatched its own key".into()),
    }
}

fn new_coupon(world: &mut World, code: String) -> Coupon {
    let now = world.now();
    let off = if world.rng.chance(50) {
        Off::Percent(Stored(Decimal::from(world.rng.range_i64(1, 100))))
    } else {
        Off::Amount {
            amount_minor: world.rng.range_i64(100, 3_000),
            currency: "USD".into(),
        }
    };
    let duration = match world.rng.below(3) {
        0 => Duration::Once,
        1 => Duration::Repeating(1 + world.rng.below(3) as u32),
        _ => Duration::Forever,
    };
    Coupon {
        id: Id::generate_at(now),
        code,
        name: None,
        off,
        duration,
        max_redemptions: world.rng.chance(50).then(|| 1 + world.rng.below(2)),
        redeem_by_ms: None,
        applies_to: AppliesTo::default(),
        times_redeemed: 0,
        created_at_ms: now,
    }
}

/// Creates a coupon and applies it one to three times, each on a random subscription or
/// customer under its own key, now and then replayed with that key.
pub fn redeem(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let (subs, customers) = (
        world.model.subscriptions.clone(),
        world.model.customers.clone(),
    );
    let (Some(_), Some(_)) = (subs.first(), customers.first()) else {
        return Ok(());
    };
    world.model.next_key += 1;
    let code = format!("CPN{}", world.model.next_key);
    let coupon = new_coupon(world, code.clone());
    let tenant = world.tenant;
    world
        .submit(CreateCoupon { tenant, coupon })?
        .map_err(|e| e.to_string())?;
    let applications = 1 + world.rng.below(3);
    let mut answers = Vec::new();
    for _ in 0..applications {
        let target = match (world.rng.chance(50), world.rng.pick(subs.len())) {
            (true, Some(i)) => Target::Subscription(subs[i]),
            _ => Target::Customer(customers[world.rng.pick(customers.len()).unwrap_or(0)]),
        };
        world.model.next_key += 1;
        let key = format!("discount-{}", world.model.next_key);
        let now = world.now();
        let command = Idempotent {
            tenant,
            key: key.clone(),
            fingerprint: *blake3::hash(key.as_bytes()).as_bytes(),
            now_ms: now,
            retention_ms: 86_400_000,
            inner: ApplyDiscount {
                tenant,
                id: Id::generate_at(now),
                coupon: code.clone(),
                target,
                now_ms: now,
            },
            render,
        };
        let first = body(&world.submit_keyed(command.clone())?)?;
        if world.rng.chance(30) && body(&world.submit(command)?)? != first {
            return Err(format!("redemption {key} replayed with another answer"));
        }
        answers.push(String::from_utf8_lossy(&first).to_string());
    }
    note.push_str(&format!("{code}: {}", answers.join("; ")));
    Ok(())
}

/// Every coupon counts exactly its discounts (never more than allowed), and no invoice with a
/// discount is below zero.
pub fn check(world: &World, invoices: &[Invoice]) -> Result<(), Violation> {
    let tx = world.read()?;
    let (lo, hi) = keys::tenant_range(world.tenant);
    let discounts_table = tx
        .open_table(tables::DISCOUNTS)
        .map_err(|e| e.to_string())?;
    let mut discounts: Vec<Discount> = Vec::new();
    for entry in discounts_table
        .range::<&[u8]>(lo.as_slice()..hi.as_slice())
        .map_err(|e| e.to_string())?
    {
        let (_, value) = entry.map_err(|e| e.to_string())?;
        discounts.push(codec::decode(value.value()).map_err(|e| e.to_string())?);
    }
    let coupons = crate::billing::coupon::list(&tx, world.tenant, None, 10_000)
        .map_err(|e| e.to_string())?
        .0;
    for c in &coupons {
        let count = discounts.iter().filter(|d| d.coupon.id == c.id).count() as u64;
        if count != c.times_redeemed || c.max_redemptions.is_some_and(|m| count > m) {
            return Err(format!(
                "coupon {} counts {} redemptions (at most {:?}) and has {count} discounts",
                c.code, c.times_redeemed, c.max_redemptions
            ));
        }
    }
    for inv in invoices {
        // As the period computes it: a closing invoice after interim invoices carries the
        // period's whole discount against what is left, and may owe the customer.
        let inv = &super::progressive::whole(world, inv)?;
        if inv.lines.iter().any(|l| l.kind == LineKind::Discount) && inv.subtotal_minor < 0 {
            return Err(format!(
                "invoice {} with a discount totals {}",
                inv.id.display(crate::billing::invoice::PREFIX),
                inv.subtotal_minor
            ));
        }
    }
    Ok(())
}
