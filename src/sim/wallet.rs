//! Prepaid wallets in the simulation: steps that buy or give credit and set auto-recharge
//! rules, and the invariants that tie top-ups, their invoices, payments and grants together.

use crate::store::ReadableTable;

use std::collections::BTreeMap;

use super::ops::{invoices, payments};
use super::world::{Violation, World};
use crate::billing::invoice::{InvoiceKind, InvoiceStatus};
use crate::id::Id;
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::ledger::grant::{Category, Funding, Grant};
use crate::payments::payment::PaymentStatus;
use crate::store::{codec, keys, tables};
use crate::wallet::auto_recharge::SetRule;
use crate::wallet::record::{TopUp, TopUpStatus, Trigger, PREFIX};
use crate::wallet::top_up::{CreateTopUp, NewTopUp, TopUpError};

/// The one daily cap every simulated rule has (rules are switched off, never deleted, so a
/// day's count is never reset).
const MAX_PER_DAY: u32 = 2;

const DAY_MS: i64 = 86_400_000;

/// Buys (mostly) or gives credit to a random customer; now and then an amount that must be
/// refused.
pub fn top_up(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let Some(c) = world.rng.pick(world.model.customers.len()) else {
        note.push_str("no customer");
        return Ok(());
    };
    let invalid = world.rng.chance(5);
    let amount_minor = if invalid {
        0
    } else {
        world.rng.range_i64(100, 5_000)
    };
    let paid = world.rng.chance(85);
    let now_ms = world.now();
    let created = world.submit(CreateTopUp(NewTopUp {
        tenant: world.tenant,
        customer: world.model.customers[c],
        currency: None,
        amount_minor,
        paid,
        category: if paid {
            Category::Paid
        } else {
            Category::Promotional
        },
        expires_at_ms: None,
        payment_method: None,
        psp: "stripe".into(),
        trigger: Trigger::Api,
        now_ms,
        origin: "sim".into(),
    }))?;
    note.push_str(&format!(
        "{amount_minor} {} to customer {c}",
        if paid { "paid" } else { "free" }
    ));
    match created {
        Ok(t) if invalid => Err(format!("top-up {} of 0 accepted", t.id.display(PREFIX))),
        Ok(t) => {
            note.push_str(&format!(" → {}", t.id.display(PREFIX)));
            Ok(())
        }
        Err(TopUpError::Amount) if invalid => {
            note.push_str(" → refused");
            Ok(())
        }
        Err(e) => {
            note.push_str(&format!(" → refused: {e}"));
            Ok(())
        }
    }
}

/// Sets (or switches off) a random customer's auto-recharge rule.
pub fn auto_recharge(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let Some(c) = world.rng.pick(world.model.customers.len()) else {
        note.push_str("no customer");
        return Ok(());
    };
    let below_minor = world.rng.range_i64(200, 1_500);
    let amount_minor = below_minor + world.rng.range_i64(0, 2_000);
    let enabled = world.rng.chance(85);
    let now_ms = world.now();
    let set = world.submit(SetRule {
        tenant: world.tenant,
        customer: world.model.customers[c],
        currency: None,
        below_minor,
        amount_minor,
        max_per_day: MAX_PER_DAY,
        enabled,
        payment_method: None,
        psp: "stripe".into(),
        now_ms,
    })?;
    note.push_str(&format!(
        "customer {c}: below {below_minor} buy {amount_minor}{}",
        if enabled { "" } else { " (off)" }
    ));
    match set {
        Ok(s) => {
            if let Some(t) = s.fired {
                note.push_str(&format!(" → fired {}", t.id.display(PREFIX)));
            }
        }
        Err(e) => note.push_str(&format!(" → refused: {e}")),
    }
    Ok(())
}

fn top_ups(world: &World) -> Result<Vec<TopUp>, Violation> {
    let tx = world.read()?;
    let table = tx.open_table(tables::TOP_UPS).map_err(|e| e.to_string())?;
    let (start, end) = keys::tenant_range(world.tenant);
    let mut out = Vec::new();
    for entry in table
        .range::<&[u8]>(start.as_slice()..end.as_slice())
        .map_err(|e| e.to_string())?
    {
        let (_, v) = entry.map_err(|e| e.to_string())?;
        out.push(codec::decode(v.value()).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn grants(world: &World) -> Result<BTreeMap<Id, Grant>, Violation> {
    let tx = world.read()?;
    let table = tx.open_table(tables::GRANTS).map_err(|e| e.to_string())?;
    let (start, end) = keys::tenant_range(world.tenant);
    let mut out = BTreeMap::new();
    for entry in table
        .range::<&[u8]>(start.as_slice()..end.as_slice())
        .map_err(|e| e.to_string())?
    {
        let (_, v) = entry.map_err(|e| e.to_string())?;
        let g: Grant = codec::decode(v.value()).map_err(|e| e.to_string())?;
        out.insert(g.id, g);
    }
    Ok(out)
}

/// Safety, after every step: a succeeded top-up has exactly one grant of its amount and a paid
/// invoice with one succeeded payment; a failed or pending one has none; no prepayment grant
/// exists without its top-up; `prepayments` holds exactly the pending top-ups; auto-recharge
/// keeps at most one pending top-up per customer and its daily cap.
pub fn check(world: &World) -> Result<(), Violation> {
    let all = top_ups(world)?;
    let grants = grants(world)?;
    let invoices: BTreeMap<Id, _> = invoices(world)?.into_iter().map(|i| (i.id, i)).collect();
    let payments = payments(world)?;
    let mut pending_minor: BTreeMap<String, i64> = BTreeMap::new();
    let mut referenced = Vec::new();
    for t in &all {
        let name = t.id.display(PREFIX);
        match (t.status, t.grant) {
            (TopUpStatus::Succeeded, Some(g)) => {
                let grant = grants
                    .get(&g)
                    .ok_or_else(|| format!("top-up {name} names a missing grant"))?;
                let funding = if t.paid {
                    Funding::Prepayment
                } else {
                    Funding::PromotionalExpense
                };
                if grant.amount_minor != t.amount_minor
                    || grant.currency != t.currency
                    || grant.customer != t.customer
                    || grant.funding != funding
                {
                    return Err(format!(
                        "top-up {name} of {} {} has grant of {} {} ({:?})",
                        t.amount_minor,
                        t.currency,
                        grant.amount_minor,
                        grant.currency,
                        grant.funding
                    ));
                }
                referenced.push(g);
            }
            (TopUpStatus::Pending | TopUpStatus::Failed, None) => {}
            (status, grant) => {
                return Err(format!(
                    "top-up {name} is {} with grant {grant:?}",
                    status.as_str()
                ))
            }
        }
        if !t.paid {
            continue;
        }
        let invoice = t
            .invoice
            .and_then(|i| invoices.get(&i))
            .ok_or_else(|| format!("paid top-up {name} has no invoice"))?;
        let expected = match t.status {
            TopUpStatus::Pending => InvoiceStatus::Finalized,
            TopUpStatus::Succeeded => InvoiceStatus::Paid,
            TopUpStatus::Failed => InvoiceStatus::Void,
        };
        if invoice.kind != InvoiceKind::TopUp
            || invoice.status != expected
            || invoice.total_minor != t.amount_minor
        {
            return Err(format!(
                "top-up {name} is {} but its invoice is {} {} of {}",
                t.status.as_str(),
                invoice.kind.as_str(),
                invoice.status.as_str(),
                invoice.total_minor
            ));
        }
        let collected = payments
            .iter()
            .filter(|p| p.invoice == invoice.id && p.status == PaymentStatus::Succeeded)
            .count();
        if collected != usize::from(t.status == TopUpStatus::Succeeded) {
            return Err(format!(
                "top-up {name} is {} with {collected} succeeded payments",
                t.status.as_str()
            ));
        }
        if t.status == TopUpStatus::Pending {
            *pending_minor.entry(t.currency.clone()).or_insert(0) += t.amount_minor;
        }
    }
    referenced.sort();
    if referenced.windows(2).any(|w| w[0] == w[1]) {
        return Err("two top-ups name one grant".into());
    }
    for g in grants.values().filter(|g| g.funding == Funding::Prepayment) {
        if referenced.binary_search(&g.id).is_err() {
            return Err(format!(
                "prepayment grant {} belongs to no top-up",
                g.id.display(crate::ledger::grant::PREFIX)
            ));
        }
    }
    prepayments_hold_the_pending(world, &pending_minor)?;
    auto_recharge_bounds(&all)
}

/// `prepayments` is minus the pending top-ups' amounts, per currency (a top-up's grant cannot
/// be voided, and refunds of its payment take the grant's credit, not `prepayments`).
fn prepayments_hold_the_pending(
    world: &World,
    pending_minor: &BTreeMap<String, i64>,
) -> Result<(), Violation> {
    let tx = world.read()?;
    let balances = tx.open_table(tables::BALANCES).map_err(|e| e.to_string())?;
    for currency in ["USD", "EUR"] {
        let books = crate::ledger::journal::balance(
            &balances,
            world.tenant,
            currency,
            AccountRef::System(SystemAccount::Prepayments),
        )
        .map_err(|e| e.to_string())?;
        let pending = pending_minor.get(currency).copied().unwrap_or(0);
        if books != -pending {
            return Err(format!(
                "prepayments is {books} {currency} with {pending} of pending top-ups"
            ));
        }
    }
    Ok(())
}

/// At most one pending auto top-up per customer, at most the cap per customer and UTC day.
fn auto_recharge_bounds(all: &[TopUp]) -> Result<(), Violation> {
    let mut pending: BTreeMap<Id, usize> = BTreeMap::new();
    let mut daily: BTreeMap<(Id, i64), u32> = BTreeMap::new();
    for t in all.iter().filter(|t| t.trigger == Trigger::AutoRecharge) {
        if t.status == TopUpStatus::Pending {
            *pending.entry(t.customer).or_insert(0) += 1;
        }
        *daily
            .entry((t.customer, t.created_at_ms.div_euclid(DAY_MS)))
            .or_insert(0) += 1;
    }
    if let Some((c, n)) = pending.iter().find(|(_, n)| **n > 1) {
        return Err(format!(
            "customer {} has {n} pending auto top-ups",
            c.display(crate::customers::PREFIX)
        ));
    }
    if let Some(((c, day), n)) = daily.iter().find(|(_, n)| **n > MAX_PER_DAY) {
        return Err(format!(
            "customer {} had {n} auto top-ups on day {day}, over the cap of {MAX_PER_DAY}",
            c.display(crate::customers::PREFIX)
        ));
    }
    Ok(())
}
