//! The upcoming invoice: the next period to close, computed from a read snapshot exactly as a
//! billing run would compute it now, without writing anything.

use redb::ReadTransaction;

use super::invoice::{self, InvoiceKind, Line, Sources, Spec};
use super::plan::Plan;
use super::run::Policy;
use super::subscription::{self, Subscription, SubscriptionStatus};
use crate::ingest::event::current_seq;
use crate::store::keys::{self, TenantId};
use crate::store::{get_record, tables, StoreError};

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
}

/// Drafts of every running subscription of a customer.
pub fn upcoming(
    tx: &ReadTransaction,
    tenant: TenantId,
    customer: crate::id::Id,
    policy: &Policy,
) -> Result<Vec<Result<Draft, invoice::InvoiceError>>, StoreError> {
    let events = tx.open_table(tables::EVENTS)?;
    let by_customer = tx.open_table(tables::EVENTS_BY_CUSTOMER)?;
    let billed = tx.open_table(tables::BILLED_USAGE)?;
    let meters = tx.open_table(tables::METERS)?;
    let plans = tx.open_table(tables::PLANS)?;
    let cutoff = current_seq(&tx.open_table(tables::META)?)?;
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
        let Some(plan) = get_record::<Plan, _>(&plans, keys::tenant_id(tenant, sub.plan))? else {
            continue;
        };
        let Some(period) = sub.period(&plan, sub.periods_closed) else {
            continue;
        };
        let plans_of = subscription::plans_of(&plans, tenant, &sub)?;
        let spec = super::run::spec_for(
            &sub,
            &plan,
            period,
            InvoiceKind::Period,
            policy,
            cutoff,
            plans_of,
        );
        out.push(
            invoice::compute(&src, tenant, &sub, &plan, &spec)?.map(|lines| Draft {
                subscription: sub,
                plan,
                spec,
                lines,
            }),
        );
    }
    Ok(out)
}
