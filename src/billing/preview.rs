//! The upcoming invoice: the next period to close, computed from a read snapshot exactly as a
//! billing run would compute it now, without writing anything.

use crate::store::ReadTxn;

use super::invoice::{self, InvoiceKind, Line, Sources, Spec};
use super::plan::Plan;
use super::run::Policy;
use super::subscription::{self, Subscription, SubscriptionStatus};
use crate::ingest::event::current_seq;
use crate::store::keys::TenantId;
use crate::store::{tables, StoreError};

/// A draft invoice for one subscription.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The subscription.
    pub subscription: Subscription,
    /// Its plan.
    pub plan: Plan,
    /// What would be invoiced.
    pub spec: Spec,
    /// The lines as of now.
    pub lines: Vec<Line>,
    /// Their taxes at the customer's rates as of now.
    pub taxes: super::tax::Taxes,
}

/// Drafts of every running subscription of a customer.
pub fn upcoming(
    tx: &ReadTxn,
    tenant: TenantId,
    customer: crate::id::Id,
    policy: &Policy,
) -> Result<Vec<Result<Draft, invoice::InvoiceError>>, StoreError> {
    let events = crate::ingest::event_record::EventTable::new(
        tx.open_table(tables::EVENTS)?,
        tx.open_table(tables::PROPERTY_DICTIONARIES)?,
    );
    let by_customer = tx.open_table(tables::EVENTS_BY_CUSTOMER)?;
    let billed = tx.open_table(tables::BILLED_USAGE)?;
    let meters = tx.open_table(tables::METERS)?;
    let plans = tx.open_table(tables::PLANS)?;
    let cutoff = current_seq(&tx.open_table(tables::META)?)?;
    let discounts = tx.open_table(tables::DISCOUNTS)?;
    let discounts_by_target = tx.open_table(tables::DISCOUNTS_BY_TARGET)?;
    let now_ms = crate::clock::now_ms();

    let src = Sources {
        events: &events,
        by_customer: &by_customer,
        billed: &billed,
        meters: &meters,
    };
    let mut out = Vec::new();
    for sub in subscription::of_customer(tx, tenant, customer)? {
        if sub.status == SubscriptionStatus::Canceled {
            continue;
        }
        let Some(plan) = super::plan::load(&plans, tenant, sub.plan)? else {
            continue;
        };
        let Some(period) = sub.period(&plan, sub.periods_closed) else {
            continue;
        };
        let plans_of = subscription::plans_of(&plans, tenant, &sub)?;
        let mut spec = super::run::spec_for(
            &sub,
            &plan,
            period,
            InvoiceKind::Period,
            policy,
            cutoff,
            plans_of,
        );
        spec.discounts = crate::billing::discount::in_effect(
            &discounts,
            &discounts_by_target,
            tenant,
            &sub,
            &plan,
            now_ms,
        )?;
        let lines = match invoice::compute(&src, tenant, &sub, &plan, &spec)? {
            Ok(lines) => lines,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        // What interim invoices of the period billed is deducted, as the closing invoice will.
        let earlier: Vec<invoice::Invoice> = super::progressive::interims_of(
            &tx.open_table(tables::INVOICES)?,
            &tx.open_table(tables::INVOICE_BY_PERIOD)?,
            tenant,
            sub.id,
            period.start_ms,
        )?
        .into_iter()
        .filter(|i| i.status != invoice::InvoiceStatus::Void)
        .collect();
        let full_taxes = super::tax::preview(tx, tenant, customer, &lines, &plan.currency)?;
        let lines = match super::progressive::deduct_lines(&lines, &earlier) {
            Ok(lines) => lines,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        let exponent = crate::currency::minor_unit_exponent(&plan.currency).unwrap_or(2);
        let taxes = full_taxes
            .and_then(|t| super::progressive::deduct_taxes(t, &earlier, &lines, exponent));
        out.push(taxes.map(|taxes| Draft {
            subscription: sub,
            plan,
            spec,
            lines,
            taxes,
        }));
    }
    Ok(out)
}
