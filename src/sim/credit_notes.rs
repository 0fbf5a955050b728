//! Credit notes in the simulation: a step that credits part of a finalized or paid invoice
//! (a paid one sometimes by refunding its payment), at most what is left of its total.

use super::ops::invoices;
use super::world::{Violation, World};
use crate::billing::invoice::InvoiceStatus;
use crate::credit_notes::{CreateCreditNote, Credited};
use crate::id::Id;

/// Credits a random part of a random finalized or paid invoice.
pub fn create(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let open: Vec<_> = invoices(world)?
        .into_iter()
        .filter(|i| {
            matches!(i.status, InvoiceStatus::Finalized | InvoiceStatus::Paid)
                && i.total_minor > i.credited_minor
        })
        .collect();
    let Some(index) = world.rng.pick(open.len()) else {
        note.push_str("no invoice to credit");
        return Ok(());
    };
    let invoice = &open[index];
    let left = invoice.total_minor - invoice.credited_minor;
    // Now and then a unit more than is left, which must be refused.
    let amount = if world.rng.chance(10) {
        left + 1
    } else {
        world.rng.range_i64(1, left)
    };
    let refund = invoice.status == InvoiceStatus::Paid && world.rng.chance(50);
    note.push_str(&format!(
        "{} {amount} of {left} left{}",
        invoice.id.display(crate::billing::invoice::PREFIX),
        if refund { " (refund)" } else { "" }
    ));
    let now_ms = world.now();
    let created = world.submit(CreateCreditNote {
        tenant: world.tenant,
        invoice: invoice.id,
        credited: Credited::Amount(amount),
        currency: None,
        reason: None,
        refund,
        id: Id::generate_at(now_ms),
        now_ms,
        origin: "sim".into(),
    })?;
    match created {
        Ok(c) if amount <= left => note.push_str(&format!(" → {}", c.number)),
        Ok(c) => {
            return Err(format!(
                "credit note {} took {amount} with {left} left",
                c.number
            ))
        }
        Err(e) => note.push_str(&format!(" → refused: {e}")),
    }
    Ok(())
}
