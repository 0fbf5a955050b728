//! The global invariants. [`after_every_step`] holds at every step boundary, whatever is in
//! flight; [`at_rest`] holds once everything in flight has come to rest (the balances of the
//! provider and of the books can only agree when no reply, webhook or job is outstanding).

use crate::store::ReadableTable;

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::ops::{invoices, payments};
use super::provider::{Charge, Status};
use super::world::{Violation, World};
use crate::billing::invoice::{Billed, Invoice, InvoiceKind, InvoiceStatus, LineKind};
use crate::billing::pricing;
use crate::billing::subscription::Subscription;
use crate::id::Id;
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::payments::payment::{self, Payment, PaymentStatus};
use crate::store::{codec, get_record, keys, tables};

fn err(e: impl std::fmt::Display) -> Violation {
    e.to_string()
}

/// Whether provider charge `c` is attempt `p`'s: by Tally's key, or by the provider id Tally
/// recorded, or by the metadata naming it.
fn belongs(c: &Charge, p: &Payment) -> bool {
    c.key.as_deref() == Some(p.psp_key.as_str())
        || p.provider_id.as_deref() == Some(c.provider_id.as_str())
        || c.payment == p.id.display(payment::PREFIX)
}

/// The one payment that owns provider charge `c`: the attempt that recorded its provider id
/// (an intent recorded beside the attempt it names owns itself), else the attempt whose key
/// made it, else the attempt its metadata names.
fn owner<'a>(c: &Charge, payments: &'a [Payment]) -> Option<&'a Payment> {
    payments
        .iter()
        .find(|p| p.provider_id.as_deref() == Some(c.provider_id.as_str()))
        .or_else(|| {
            payments
                .iter()
                .find(|p| c.key.as_deref() == Some(p.psp_key.as_str()))
        })
        .or_else(|| {
            payments
                .iter()
                .find(|p| c.payment == p.id.display(payment::PREFIX))
        })
}

fn owns(c: &Charge, p: &Payment, payments: &[Payment]) -> bool {
    owner(c, payments).is_some_and(|o| o.id == p.id)
}

/// Whether `c` collected what attempt `p` asked for.
fn collects(c: &Charge, p: &Payment) -> bool {
    c.status == Status::Succeeded
        && c.amount_minor == p.amount_minor
        && c.currency.eq_ignore_ascii_case(&p.currency)
}

fn succeeded_refunds(p: &Payment) -> i64 {
    p.refunds
        .iter()
        .filter(|r| r.status == "succeeded")
        .map(|r| r.amount_minor)
        .sum()
}

/// Safety: true at every step boundary.
pub fn after_every_step(world: &World) -> Result<(), Violation> {
    books_verify(world)?;
    let invoices = invoices(world)?;
    if !world.invoices_verified(&invoices) {
        invoices_verify(world, &invoices)?;
        world.note_verified(&invoices);
    }
    billed_once(world, &invoices)?;
    super::coupons::check(world, &invoices)?;
    super::taxes::check(world, &invoices)?;
    super::wallet::check(world)?;
    super::alerts::check(world)?;
    super::entitlements::check(world)?;
    anomalies_recorded(world)?;
    super::api_keys::check(world)?;
    super::meters::check(world)?;
    let payments = payments(world)?;
    let charges = world.provider.charges();
    for p in &payments {
        if p.status == PaymentStatus::Succeeded
            && !charges.iter().any(|c| belongs(c, p) && collects(c, p))
        {
            return Err(format!(
                "payment {} ({} {}) is succeeded but the provider collected no such charge for it",
                p.id.display(payment::PREFIX),
                p.amount_minor,
                p.currency
            ));
        }
        let refunded_at_provider: i64 = charges
            .iter()
            .filter(|c| owns(c, p, &payments))
            .map(Charge::refunded_minor)
            .sum();
        let booked = succeeded_refunds(p);
        if booked > refunded_at_provider {
            return Err(format!(
                "payment {}: Tally booked {booked} of refunds, the provider refunded {refunded_at_provider}",
                p.id.display(payment::PREFIX)
            ));
        }
    }
    acknowledged(world, &invoices, &payments)
}

/// Every duplicate or conflict answered to a client has exactly one anomaly row naming the
/// original it answered with, and there is no other row (the simulation never runs the purge).
fn anomalies_recorded(world: &World) -> Result<(), Violation> {
    let tx = world.read()?;
    let (rows, more) = crate::ingest::anomaly::list(
        &tx,
        world.tenant,
        &crate::ingest::anomaly::Filter::default(),
        None,
        usize::MAX,
    )
    .map_err(err)?;
    let mut recorded: BTreeMap<Id, u64> = BTreeMap::new();
    for row in &rows {
        *recorded.entry(row.original).or_insert(0) += 1;
    }
    if more.is_some() || recorded != world.model.anomalies {
        return Err(format!(
            "anomaly rows per original event {recorded:?} differ from the duplicates and \
             conflicts answered {:?}",
            world.model.anomalies
        ));
    }
    Ok(())
}

/// Balances: true once nothing is in flight.
pub fn at_rest(world: &World) -> Result<(), Violation> {
    // On PostgreSQL the step checks skip invoices unchanged since they were last re-derived.
    if world.is_postgres() {
        invoices_verify(world, &invoices(world)?)?;
    }
    let payments = payments(world)?;
    let charges = world.provider.charges();
    // The provider's net collected for the tenant's payments equals psp_clearing: what it
    // collected with another amount or currency is at the provider too (held in suspense).
    let provider = world
        .provider
        .net_collected(|c| payments.iter().any(|p| belongs(c, p)));
    let tx = world.read()?;
    let balances = tx.open_table(tables::BALANCES).map_err(err)?;
    let mut currencies: Vec<String> = provider.keys().cloned().collect();
    currencies.extend(payments.iter().map(|p| p.currency.clone()));
    currencies.sort();
    currencies.dedup();
    for currency in currencies {
        let books = crate::ledger::journal::balance(
            &balances,
            world.tenant,
            &currency,
            AccountRef::System(SystemAccount::PspClearing),
        )
        .map_err(err)?;
        let collected = provider.get(&currency).copied().unwrap_or(0);
        if books != collected {
            let detail: Vec<String> = charges
                .iter()
                .map(|c| {
                    format!(
                        "{} {:?} {} {} refunded {}",
                        c.provider_id,
                        c.status,
                        c.amount_minor,
                        c.currency,
                        c.refunded_minor()
                    )
                })
                .chain(payments.iter().map(|p| {
                    format!(
                        "{} {} {} {:?} refunds {:?}",
                        p.id.display(payment::PREFIX),
                        p.amount_minor,
                        p.status.as_str(),
                        p.provider_id,
                        p.refunds
                            .iter()
                            .map(|r| (r.amount_minor, r.status.clone()))
                            .collect::<Vec<_>>()
                    )
                }))
                .collect();
            return Err(format!(
                "psp_clearing is {books} {currency} but the provider's net collected for the \
                 tenant is {collected}\n      {}",
                detail.join("\n      ")
            ));
        }
    }
    // Refunds booked equal refunds the provider made.
    for p in &payments {
        let made: i64 = charges
            .iter()
            .filter(|c| owns(c, p, &payments))
            .map(Charge::refunded_minor)
            .sum();
        let booked = succeeded_refunds(p);
        if booked != made {
            return Err(format!(
                "payment {}: Tally booked {booked} of refunds, the provider refunded {made}",
                p.id.display(payment::PREFIX)
            ));
        }
    }
    // No invoice collected more than its total (a void invoice owes nothing).
    let mut collected: BTreeMap<Id, i64> = BTreeMap::new();
    for p in payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Succeeded)
    {
        *collected.entry(p.invoice).or_insert(0) += p.amount_minor - succeeded_refunds(p);
    }
    for invoice in invoices(world)? {
        let net = collected.get(&invoice.id).copied().unwrap_or(0);
        let owed = match invoice.status {
            InvoiceStatus::Void => 0,
            _ => invoice.amount_due_minor,
        };
        if net > owed {
            return Err(format!(
                "invoice {} ({}, {} due) collected {net} net of refunds",
                invoice.id.display(crate::billing::invoice::PREFIX),
                invoice.status.as_str(),
                owed
            ));
        }
    }
    numbered_once(&invoices(world)?)?;
    notified_once(world, &payments)
}

/// Invoice numbers: in each sequence scope (a year, or none), the issued invoices' sequence
/// values are exactly 1..N, each once — voided invoices included, since they keep theirs —
/// and no two invoices share a number.
fn numbered_once(invoices: &[Invoice]) -> Result<(), Violation> {
    let mut scopes: BTreeMap<Option<i32>, Vec<u64>> = BTreeMap::new();
    let mut texts: BTreeMap<&str, Id> = BTreeMap::new();
    for invoice in invoices {
        let (Some(value), Some(text)) = (invoice.number_seq, invoice.number.as_deref()) else {
            return Err(format!(
                "invoice {} was issued without a number",
                invoice.id.display(crate::billing::invoice::PREFIX)
            ));
        };
        scopes.entry(invoice.number_year).or_default().push(value);
        if let Some(other) = texts.insert(text, invoice.id) {
            return Err(format!(
                "number {text} was given to {} and {}",
                other.display(crate::billing::invoice::PREFIX),
                invoice.id.display(crate::billing::invoice::PREFIX)
            ));
        }
    }
    for (year, mut values) in scopes {
        values.sort_unstable();
        let expected: Vec<u64> = (1..=values.len() as u64).collect();
        if values != expected {
            return Err(format!(
                "invoice numbers of scope {year:?} are {values:?}, not 1..={}",
                expected.len()
            ));
        }
    }
    Ok(())
}

/// The outbox: one `payment.succeeded` per collected payment, one `invoice.paid` per paid
/// invoice and one `customer.updated` per customer version after the first, never two, never
/// one for a payment that did not collect. An effect from before the retention cutoff may have
/// lost its notification to the purge: at most one then.
fn notified_once(world: &World, payments: &[Payment]) -> Result<(), Violation> {
    let cutoff_ms = world.notification_cutoff_ms();
    let tx = world.read()?;
    let table = tx.open_table(tables::NOTIFICATIONS).map_err(err)?;
    let (start, end) = keys::tenant_range(world.tenant);
    let mut subjects: BTreeMap<(String, Id), usize> = BTreeMap::new();
    for entry in table
        .range::<&[u8]>(start.as_slice()..end.as_slice())
        .map_err(err)?
    {
        let (_, v) = entry.map_err(err)?;
        let n: crate::notifications::outbox::Notification =
            codec::decode(v.value()).map_err(err)?;
        *subjects.entry((n.event_type, n.subject.id)).or_insert(0) += 1;
    }
    let count = |t: &str, id: Id| subjects.get(&(t.to_string(), id)).copied().unwrap_or(0);
    // Within the retention window a notification must be there; before it, it may be purged.
    let kept = |expected: usize, at_ms: i64, found: usize| {
        found == expected || (at_ms < cutoff_ms && found == 0)
    };
    for p in payments {
        let expected = usize::from(p.status == PaymentStatus::Succeeded);
        // A payment succeeds after it is created: created before the cutoff is the safe side.
        if !kept(expected, p.created_at_ms, count("payment.succeeded", p.id)) {
            return Err(format!(
                "payment {} is {} with {} payment.succeeded notifications",
                p.id.display(payment::PREFIX),
                p.status.as_str(),
                count("payment.succeeded", p.id)
            ));
        }
    }
    // One `customer.updated` per effective update: per version after the first, whatever was
    // retried or changed nothing.
    for id in &world.model.customers {
        let acknowledged = world.model.customer_versions.get(id).copied().unwrap_or(1);
        let stored = crate::customers::get(&tx, world.tenant, *id)
            .map_err(err)?
            .map_or(0, |c| c.version);
        let notified = count("customer.updated", *id);
        if stored != acknowledged || usize::try_from(stored.saturating_sub(1)) != Ok(notified) {
            return Err(format!(
                "customer {} is at version {stored} (acknowledged {acknowledged}) with {notified} \
                 customer.updated notifications",
                id.display(crate::customers::PREFIX)
            ));
        }
    }
    for invoice in invoices(world)? {
        let expected = usize::from(invoice.paid_at_ms.is_some());
        let paid_at_ms = invoice.paid_at_ms.unwrap_or(i64::MAX);
        if !kept(expected, paid_at_ms, count("invoice.paid", invoice.id)) {
            return Err(format!(
                "invoice {} ({}) has {} invoice.paid notifications",
                invoice.id.display(crate::billing::invoice::PREFIX),
                invoice.status.as_str(),
                count("invoice.paid", invoice.id)
            ));
        }
    }
    Ok(())
}

/// `tally verify`: the chain, every balance, every grant.
fn books_verify(world: &World) -> Result<(), Violation> {
    let tx = world.read()?;
    let report =
        crate::ledger::verify::verify(&tx, Some(world.tenant), &mut |_, _| {}).map_err(err)?;
    match report.violation {
        Some(v) => Err(format!("tally verify: {} ({:?})", v.reason, v.entry)),
        None => Ok(()),
    }
}

/// `tally invoice verify` of every invoice.
fn invoices_verify(world: &World, invoices: &[Invoice]) -> Result<(), Violation> {
    let tx = world.read()?;
    for invoice in invoices {
        if let Err(difference) =
            crate::billing::verify::verify_invoice(&tx, world.tenant, invoice).map_err(err)?
        {
            return Err(format!(
                "invoice verify {}: {difference}",
                invoice.id.display(crate::billing::invoice::PREFIX)
            ));
        }
    }
    Ok(())
}

/// Each period billed once net of voids, and for exactly what its final quantity costs (interim
/// invoices and the closing invoice together).
fn billed_once(world: &World, invoices: &[Invoice]) -> Result<(), Violation> {
    let live: Vec<&Invoice> = invoices
        .iter()
        .filter(|i| i.status != InvoiceStatus::Void)
        .collect();
    let mut charge_keys: BTreeMap<(Id, i64, i64, bool), Id> = BTreeMap::new();
    let mut usage_lines: BTreeMap<(Id, Id, i64), Id> = BTreeMap::new();
    let mut amounts: BTreeMap<(Id, Id, i64), i64> = BTreeMap::new();
    for invoice in &live {
        let key = (
            invoice.subscription,
            invoice.period_start_ms,
            invoice.period_end_ms,
            invoice.kind == InvoiceKind::Interim,
        );
        if let Some(other) = charge_keys.insert(key, invoice.id) {
            return Err(format!(
                "period {} of a subscription is billed by {} and {}",
                crate::clock::rfc3339(invoice.period_start_ms),
                other.display(crate::billing::invoice::PREFIX),
                invoice.id.display(crate::billing::invoice::PREFIX)
            ));
        }
        for line in &invoice.lines {
            let Some(meter) = line.meter else { continue };
            let key = (invoice.subscription, meter, line.period_start_ms);
            *amounts.entry(key).or_insert(0) += line.amount_minor;
            // Interim invoices (progressive billing) bill part of a running period's usage;
            // the closing invoice bills the rest, and the sum is checked below.
            let interim = invoice.kind == crate::billing::invoice::InvoiceKind::Interim;
            if line.kind == LineKind::Usage && !interim {
                if let Some(other) = usage_lines.insert(key, invoice.id) {
                    return Err(format!(
                        "usage of period {} is billed by {} and {}",
                        crate::clock::rfc3339(line.period_start_ms),
                        other.display(crate::billing::invoice::PREFIX),
                        invoice.id.display(crate::billing::invoice::PREFIX)
                    ));
                }
            }
        }
    }
    // Everything billed for a (subscription, meter, period) adds up to the price of the
    // quantity billed in total, rounded once.
    let tx = world.read()?;
    let billed = tx.open_table(tables::BILLED_USAGE).map_err(err)?;
    let subs = tx.open_table(tables::SUBSCRIPTIONS).map_err(err)?;
    let plans = tx.open_table(tables::PLANS).map_err(err)?;
    let (start, end) = keys::tenant_range(world.tenant);
    for entry in billed
        .range::<&[u8]>(start.as_slice()..end.as_slice())
        .map_err(err)?
    {
        let (k, v) = entry.map_err(err)?;
        let k = k.value();
        let id_at = |at: usize| -> Option<Id> {
            Some(Id::from_bytes(k.get(at..at + 16)?.try_into().ok()?))
        };
        let (Some(sub_id), Some(meter), Some(start_bytes)) = (
            id_at(8),
            id_at(24),
            k.get(40..48).and_then(|b| <[u8; 8]>::try_from(b).ok()),
        ) else {
            return Err("malformed billed usage key".into());
        };
        let period_start = crate::store::keys::time_from_bytes(start_bytes);
        let record: Billed = codec::decode(v.value()).map_err(err)?;
        let Some(sub) = get_record::<Subscription, _>(&subs, keys::tenant_id(world.tenant, sub_id))
            .map_err(err)?
        else {
            return Err("billed usage of a missing subscription".into());
        };
        // Priced by the plan in effect where the billed segment starts.
        let Some(plan) =
            crate::billing::plan::load(&plans, world.tenant, sub.plan_at(period_start))
                .map_err(err)?
        else {
            return Err("a subscription's plan is missing".into());
        };
        let Some(charge) = plan.charges.iter().find(|c| c.meter == meter) else {
            continue;
        };
        let Ok(priced) = pricing::price(&charge.model, charge.free_units.0, record.quantity.0, 2)
        else {
            continue;
        };
        let sum = amounts
            .get(&(sub_id, meter, period_start))
            .copied()
            .unwrap_or(0);
        if sum != priced.amount_minor {
            let name = crate::ingest::meter::get(&tx, world.tenant, meter)
                .map_err(err)?
                .map_or_else(|| meter.display(crate::ingest::meter::PREFIX), |m| m.key);
            return Err(format!(
                "period {} of meter {name} is billed {sum} in total, but its quantity {} costs {} \
                 rounded once",
                crate::clock::rfc3339(period_start),
                Decimal::normalize(&record.quantity.0),
                priced.amount_minor
            ));
        }
    }
    Ok(())
}

/// Every acknowledged write is present, once.
fn acknowledged(
    world: &World,
    invoices: &[Invoice],
    payments: &[Payment],
) -> Result<(), Violation> {
    let model = &world.model;
    let tx = world.read()?;
    let events = tx.open_table(tables::EVENTS).map_err(err)?;
    let (start, end) = keys::tenant_range(world.tenant);
    let stored = events
        .range::<&[u8]>(start.as_slice()..end.as_slice())
        .map_err(err)?
        .count();
    if stored != model.events.len() {
        return Err(format!(
            "{} events acknowledged, {stored} stored",
            model.events.len()
        ));
    }
    for (client, (id, body)) in &model.events {
        // Read back through the record's decoder (packed, properties compressed against the
        // type's dictionary once it has one): exactly the canonical properties sent.
        let Some(stored) = crate::ingest::event::get(&tx, world.tenant, *id).map_err(err)? else {
            return Err(format!("acknowledged event {client} is missing"));
        };
        let sent = crate::identity::canonical_json(&body["properties"]);
        if stored.properties != sent {
            return Err(format!(
                "event {client} reads back {:?}, sent {sent:?}",
                stored.properties
            ));
        }
    }
    for id in &model.customers {
        if crate::customers::get(&tx, world.tenant, *id)
            .map_err(err)?
            .is_none()
        {
            return Err("an acknowledged customer is missing".into());
        }
    }
    for id in &model.grants {
        if crate::ledger::grant::get(&tx, world.tenant, *id)
            .map_err(err)?
            .is_none()
        {
            return Err("an acknowledged grant is missing".into());
        }
    }
    for id in &model.invoices {
        if !invoices.iter().any(|i| i.id == *id) {
            return Err(format!(
                "acknowledged invoice {} is missing",
                id.display(crate::billing::invoice::PREFIX)
            ));
        }
    }
    for id in &model.voided {
        if !invoices
            .iter()
            .any(|i| i.id == *id && i.status == InvoiceStatus::Void)
        {
            return Err(format!(
                "invoice {} was acknowledged void but is not",
                id.display(crate::billing::invoice::PREFIX)
            ));
        }
    }
    for id in &model.payments {
        if !payments.iter().any(|p| p.id == *id) {
            return Err(format!(
                "acknowledged payment {} is missing",
                id.display(payment::PREFIX)
            ));
        }
    }
    for (pay, refund) in &model.refunds {
        let present = payments
            .iter()
            .filter(|p| p.id == *pay)
            .flat_map(|p| p.refunds.iter())
            .filter(|r| r.id == *refund)
            .count();
        if present != 1 {
            return Err(format!(
                "acknowledged refund {} is present {present} times",
                refund.display(payment::REFUND_PREFIX)
            ));
        }
    }
    Ok(())
}
