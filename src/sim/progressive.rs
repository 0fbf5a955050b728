//! Progressive billing in the simulation: a step that evaluates one customer as a usage touch
//! would, so interim invoices meet voids, payments, credit notes, plan changes and crashes. The
//! invariant that interim plus closing invoices equal the period's full computation is checked
//! with every invoice: `verify` re-derives each one with what it deducted added back.

use super::ops::POLICY;
use super::world::{Violation, World};
use crate::billing::invoice::Invoice;
use crate::billing::progressive::EvaluateProgressive;
use crate::store::tables;

/// Evaluates a random customer's running periods against their plans' thresholds.
pub fn evaluate(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let Some(index) = world.rng.pick(world.model.customers.len()) else {
        note.push_str("no customer");
        return Ok(());
    };
    let customer = world.model.customers[index];
    let at_ms = world.now();
    let issued = world.submit(EvaluateProgressive {
        tenant: world.tenant,
        customer,
        at_ms,
        rules: crate::billing::progressive::Rules {
            auto_collect: POLICY.auto_collect,
            min_interval_ms: 0,
        },
        origin: "sim".into(),
    })?;
    note.push_str(&customer.display(crate::customers::PREFIX));
    for id in issued {
        note.push_str(&format!(
            " → interim {}",
            id.display(crate::billing::invoice::PREFIX)
        ));
    }
    Ok(())
}

/// An invoice as its period computes it: with what it deducted from interim invoices added
/// back. The per-invoice rules (each line's tax rounded once, a discount never below zero) hold
/// for this; what the invoice itself bills is that minus what the interim invoices billed.
pub fn whole(world: &World, invoice: &Invoice) -> Result<Invoice, Violation> {
    let tx = world.read()?;
    let invoices = tx.open_table(tables::INVOICES).map_err(|e| e.to_string())?;
    let by_period = tx
        .open_table(tables::INVOICE_BY_PERIOD)
        .map_err(|e| e.to_string())?;
    crate::billing::progressive::cumulative_of(&invoices, &by_period, world.tenant, invoice)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// What an invoice's taxes are computed on: [`whole`], or the invoice itself when it was taxed
/// on its own lines (the tax terms changed since the interim invoices it deducted).
pub fn taxed(world: &World, invoice: &Invoice) -> Result<Invoice, Violation> {
    let alone = {
        let tx = world.read()?;
        let invoices = tx.open_table(tables::INVOICES).map_err(|e| e.to_string())?;
        let by_period = tx
            .open_table(tables::INVOICE_BY_PERIOD)
            .map_err(|e| e.to_string())?;
        crate::billing::progressive::taxed_alone(&invoices, &by_period, world.tenant, invoice)
            .map_err(|e| e.to_string())?
    };
    if alone {
        return Ok(invoice.clone());
    }
    whole(world, invoice)
}
