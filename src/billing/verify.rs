//! `tally invoice verify`: re-derives a stored invoice from the stored data it was computed from
//! and reports a match or the first difference.

use crate::store::ReadTxn;
use crate::store::ReadableTable;
use rust_decimal::Decimal;

use super::discount;
use super::invoice::{self, Invoice, InvoiceKind, Line, LineKind};
use super::plan::Plan;
use super::pricing;
use super::subscription::{self, Subscription};
use crate::ingest::meter::Meter;
use crate::ingest::usage;
use crate::ledger::journal;
use crate::store::keys::{self, TenantId};
use crate::store::{get_record, tables, StoreError};

/// Verifies one invoice; `Ok(Err(difference))` names the first mismatch. An invoice of a period
/// that interim invoices billed part of is re-derived with what it deducted added back: the sum
/// must be what the period computes from the events (see [`super::progressive`]).
pub fn verify_invoice(
    tx: &ReadTxn,
    tenant: TenantId,
    stored: &Invoice,
) -> Result<Result<(), String>, StoreError> {
    if stored.kind == InvoiceKind::TopUp {
        return Ok(super::top_up::verify(stored));
    }
    let cumulative = super::progressive::cumulative_of(
        &tx.open_table(tables::INVOICES)?,
        &tx.open_table(tables::INVOICE_BY_PERIOD)?,
        tenant,
        stored,
    )?;
    let invoice = &match cumulative {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("with the interim invoices it deducted: {e}"))),
    };
    let plans = tx.open_table(tables::PLANS)?;
    let meters = tx.open_table(tables::METERS)?;
    let events = crate::ingest::event_record::EventTable::new(
        tx.open_table(tables::EVENTS)?,
        tx.open_table(tables::PROPERTY_DICTIONARIES)?,
    );
    let by_customer = tx.open_table(tables::EVENTS_BY_CUSTOMER)?;
    let subs = tx.open_table(tables::SUBSCRIPTIONS)?;
    let Some(sub) =
        get_record::<Subscription, _>(&subs, keys::tenant_id(tenant, invoice.subscription))?
    else {
        return Ok(Err("its subscription no longer exists".into()));
    };
    let exponent = crate::currency::minor_unit_exponent(&invoice.currency).unwrap_or(2);
    for (i, line) in invoice.lines.iter().enumerate() {
        let at = format!("line {i} ({})", line.description);
        // Each line is priced by the plan of the phase in effect where it starts.
        let plan_id = sub.plan_at(line.period_start_ms);
        let Some(plan) = super::plan::load(&plans, tenant, plan_id)? else {
            return Ok(Err(format!("{at}: its plan no longer exists")));
        };
        match line.kind {
            LineKind::Usage | LineKind::Adjustment => {
                let Some(meter_id) = line.meter else {
                    return Ok(Err(format!("{at}: no meter")));
                };
                let Some(charge) = plan.charges.iter().find(|c| c.meter == meter_id) else {
                    return Ok(Err(format!("{at}: the plan has no charge for its meter")));
                };
                let Some(meter) =
                    get_record::<Meter, _>(&meters, keys::tenant_id(tenant, meter_id))?
                else {
                    return Ok(Err(format!("{at}: its meter no longer exists")));
                };
                let (acc, digest) = usage::aggregate_events(
                    &by_customer,
                    &events,
                    tenant,
                    &meter,
                    invoice.customer,
                    line.period_start_ms,
                    line.period_end_ms,
                    invoice.events_through,
                )?;
                let quantity = acc
                    .value(meter.aggregation)
                    .map_err(|_| StoreError::Corrupt("usage out of range".into()))?
                    .unwrap_or(Decimal::ZERO);
                if digest != line.events_digest || acc.events() != line.events {
                    return Ok(Err(format!(
                        "{at}: the events counted differ ({} stored, {} now)",
                        line.events,
                        acc.events()
                    )));
                }
                let expected_minor = if line.kind == LineKind::Usage {
                    if quantity != line.quantity.0 {
                        return Ok(Err(format!(
                            "{at}: quantity {} but the events give {quantity}",
                            line.quantity.0
                        )));
                    }
                    pricing::price(&charge.model, charge.free_units.0, quantity, exponent)
                        .map_err(|_| StoreError::Corrupt("price out of range".into()))?
                        .amount_minor
                } else {
                    let (Some(before), Some(after)) = (line.quantity_before, line.quantity_after)
                    else {
                        return Ok(Err(format!("{at}: adjustment without quantities")));
                    };
                    let change = pricing::price_change(
                        &charge.model,
                        charge.free_units.0,
                        before.0,
                        after.0,
                        exponent,
                    )
                    .map_err(|_| StoreError::Corrupt("price out of range".into()))?;
                    if after.0 != quantity || line.quantity.0 != change.quantity {
                        return Ok(Err(format!(
                            "{at}: adjusted quantity {} but the events give {quantity}",
                            after.0
                        )));
                    }
                    // Adjustments issued before 0.3.0 billed round(after − before); they are
                    // checked by the rule they were made with (the line does not record it).
                    let legacy = pricing::to_minor(change.exact, exponent).ok();
                    if legacy == Some(line.amount_minor) {
                        line.amount_minor
                    } else {
                        change.amount_minor
                    }
                };
                if expected_minor != line.amount_minor {
                    return Ok(Err(format!(
                        "{at}: amount {} but the plan prices it at {expected_minor}",
                        line.amount_minor
                    )));
                }
            }
            // Checked together below, from the other lines.
            LineKind::Discount | LineKind::MinimumCommitment | LineKind::PrepaidCredit => {}
            LineKind::FixedFee | LineKind::FeeCredit => {
                let Some(fee) = &plan.fixed_fee else {
                    return Ok(Err(format!("{at}: the plan has no fixed fee")));
                };
                let (num, den) = line.proration.unwrap_or((1, 1));
                let sign = if line.kind == LineKind::FeeCredit {
                    -1
                } else {
                    1
                };
                let expected = pricing::from_minor(fee.amount_minor, exponent)
                    .checked_mul(Decimal::from(num))
                    .and_then(|v| v.checked_div(Decimal::from(den.max(1))))
                    .and_then(|v| v.checked_mul(Decimal::from(sign)))
                    .and_then(|exact| pricing::to_minor(exact, exponent).ok())
                    .ok_or_else(|| StoreError::Corrupt("fee out of range".into()))?;
                if expected != line.amount_minor {
                    return Ok(Err(format!(
                        "{at}: amount {} but the plan's fee gives {expected}",
                        line.amount_minor
                    )));
                }
            }
        }
    }
    let Some(plan) = super::plan::load(&plans, tenant, invoice.plan)? else {
        return Ok(Err("its plan no longer exists".into()));
    };
    if let Err(difference) = verify_derived_lines(tx, tenant, invoice, &plan, exponent)? {
        return Ok(Err(difference));
    }
    let subtotal = invoice
        .lines
        .iter()
        .try_fold(0i64, |acc, l| acc.checked_add(l.amount_minor))
        .ok_or_else(|| StoreError::Corrupt("subtotal out of range".into()))?;
    if subtotal != invoice.subtotal_minor {
        return Ok(Err(format!(
            "subtotal {} but the lines sum to {subtotal}",
            invoice.subtotal_minor
        )));
    }
    // Taxed on its own lines when the tax terms changed since the interim invoices it deducted.
    let taxed = if super::progressive::taxed_alone(
        &tx.open_table(tables::INVOICES)?,
        &tx.open_table(tables::INVOICE_BY_PERIOD)?,
        tenant,
        stored,
    )? {
        stored
    } else {
        invoice
    };
    if let Err(difference) = verify_taxes(taxed, exponent) {
        return Ok(Err(difference));
    }
    // The ledger and the amounts owed are the stored invoice's own.
    let invoice = stored;
    let credits: i64 = invoice.credits.iter().map(|(_, a)| a).sum();
    if credits != invoice.credits_applied_minor
        || invoice.amount_due_minor
            != (invoice.total_minor - credits).max(0) - invoice.credited_due_minor
    {
        return Ok(Err("credits applied or amount due do not add up".into()));
    }
    // The credits drawn must be exactly what the ledger recorded for this invoice.
    let ids = tx.open_table(tables::JOURNAL_IDS)?;
    let mut drawn_in_ledger: Vec<(crate::id::Id, i64)> = Vec::new();
    for entry_id in &invoice.entries {
        if ids
            .get(keys::tenant_id(tenant, *entry_id).as_slice())?
            .is_none()
        {
            return Ok(Err(format!(
                "journal entry {} is missing",
                entry_id.display(journal::PREFIX)
            )));
        }
        if let Some(entry) = journal::get(tx, tenant, *entry_id)? {
            if entry.kind == "credits_applied" {
                for p in &entry.postings {
                    if let crate::ledger::account::AccountRef::Grant { grant, .. } = p.account {
                        drawn_in_ledger.push((grant, p.amount_minor));
                    }
                }
            }
        }
    }
    if drawn_in_ledger != invoice.credits {
        return Ok(Err(
            "the credits on the invoice differ from the ledger's entry".into(),
        ));
    }
    if invoice::inputs_digest(invoice) != invoice.inputs_digest {
        return Ok(Err(
            "the inputs digest does not match the invoice's content".into(),
        ));
    }
    Ok(Ok(()))
}

/// The discount and minimum-commitment lines, derived again from the invoice's other lines,
/// the discounts in effect when it was issued and the plan's minimum, as a billing run does.
fn verify_derived_lines(
    tx: &ReadTxn,
    tenant: TenantId,
    invoice: &Invoice,
    plan: &Plan,
    exponent: u8,
) -> Result<Result<(), String>, StoreError> {
    let derived = |l: &Line| matches!(l.kind, LineKind::Discount | LineKind::MinimumCommitment);
    let stored: Vec<&Line> = invoice.lines.iter().filter(|l| derived(l)).collect();
    if matches!(invoice.kind, InvoiceKind::Adjustment | InvoiceKind::Interim) {
        return Ok(if stored.is_empty() {
            Ok(())
        } else {
            Err("an adjustment or interim invoice carries discount or minimum lines".into())
        });
    }
    let Some(sub) = subscription::get(tx, tenant, invoice.subscription)? else {
        return Ok(Err("its subscription no longer exists".into()));
    };
    let Some(period) = invoice_period(&sub, plan, invoice) else {
        return Ok(Err(
            "its period is not in the subscription's schedule".into()
        ));
    };
    let active = discount::in_effect(
        &tx.open_table(tables::DISCOUNTS)?,
        &tx.open_table(tables::DISCOUNTS_BY_TARGET)?,
        tenant,
        &sub,
        plan,
        invoice::discounts_as_of(
            &tx.open_table(tables::INVOICES)?,
            tenant,
            invoice.issued_at_ms,
            invoice.replaces,
        )?,
    )?;
    let mut lines: Vec<Line> = invoice
        .lines
        .iter()
        .filter(|l| !derived(l))
        .cloned()
        .collect();
    let base = lines.len();
    let out_of_range = |_| StoreError::Corrupt("discount out of range".into());
    // As computed: discounts and the minimum follow the plan in effect at the period's end.
    let closing_id = sub.plan_at(period.end_ms.saturating_sub(1).max(period.start_ms));
    let Some(closing) = super::plan::load(&tx.open_table(tables::PLANS)?, tenant, closing_id)?
    else {
        return Ok(Err("the plan of its period's end no longer exists".into()));
    };
    lines.extend(
        discount::lines(&lines, &closing.code, &period, &active, exponent).map_err(out_of_range)?,
    );
    let plans = subscription::plans_of(&tx.open_table(tables::PLANS)?, tenant, &sub)?;
    let advance_prebilled = period.index > 0 || sub.opening_invoiced;
    match invoice::minimum_true_up(
        &sub,
        &plans,
        invoice.kind,
        &period,
        advance_prebilled,
        &lines,
        exponent,
    ) {
        Ok(true_up) => lines.extend(true_up),
        Err(e) => return Ok(Err(format!("its minimum commitment: {e}"))),
    }
    let expected: Vec<&Line> = lines[base..].iter().collect();
    if expected.len() != stored.len() {
        return Ok(Err(format!(
            "{} discount and minimum lines, but its discounts and plan give {}",
            stored.len(),
            expected.len()
        )));
    }
    for (got, want) in stored.iter().zip(&expected) {
        if got.kind != want.kind
            || got.amount_minor != want.amount_minor
            || got.description != want.description
        {
            return Ok(Err(format!(
                "line {:?}: amount {} but its discounts and plan give {:?} of {}",
                got.description, got.amount_minor, want.description, want.amount_minor
            )));
        }
    }
    Ok(Ok(()))
}

/// The schedule period an invoice was computed for (an opening invoice: the whole first
/// period; otherwise its own, possibly truncated, span).
fn invoice_period(
    sub: &subscription::Subscription,
    plan: &Plan,
    invoice: &Invoice,
) -> Option<subscription::Period> {
    let p = sub
        .period_at(plan, invoice.period_start_ms)
        .or_else(|| discount::first_period(sub, plan, invoice.period_start_ms))?;
    if p.start_ms != invoice.period_start_ms {
        return None;
    }
    Some(subscription::Period {
        end_ms: if invoice.kind == InvoiceKind::Opening {
            p.end_ms
        } else {
            invoice.period_end_ms
        },
        ..p
    })
}

/// The taxes re-derived from the invoice's lines and the rates it copied at issue: each rate's
/// sums, the tax, the total and the reverse-charge note.
fn verify_taxes(invoice: &Invoice, exponent: u8) -> Result<(), String> {
    let taxes = super::tax::compute(
        &invoice.lines,
        &invoice.tax_lines,
        invoice.reverse_charge,
        exponent,
    )
    .map_err(|e| format!("taxes: {e}"))?;
    if taxes.lines != invoice.tax_lines {
        return Err("the tax per rate differs from the lines' rounded taxes".into());
    }
    if taxes.tax_minor != invoice.tax_minor || taxes.notes != invoice.notes {
        return Err(format!(
            "tax {} but the lines' rounded taxes sum to {}",
            invoice.tax_minor, taxes.tax_minor
        ));
    }
    let total = invoice.subtotal_minor.checked_add(taxes.exclusive_minor);
    if total != Some(invoice.total_minor) {
        return Err(format!(
            "total {} but the subtotal plus exclusive tax is {}",
            invoice.total_minor,
            total.map_or_else(|| "out of range".to_string(), |t| t.to_string())
        ));
    }
    Ok(())
}
