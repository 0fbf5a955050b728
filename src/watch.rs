//! The watcher: acts on what a transaction changed before it commits.
//!
//! Ingest and the ledger note which customers' usage and credit balances they changed
//! ([`crate::store::touched`]); the writer hands the notes of a whole batch to [`Watch`] inside
//! the batch's transaction. Progressive billing, alerts and auto-recharge evaluate those
//! customers there, so a threshold's firing, its notification and the invoice or top-up it
//! starts commit together with the write that crossed it, or not at all.
//!
//! Every evaluator is state-based: it compares the current value with what has not yet fired
//! in the current window, never "the value before this batch" with "the value after". A missed
//! evaluation (a watcher that panicked, a dropped note) is therefore caught up by the
//! customer's next change, and a repeated one finds its firing already recorded.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::WriteTxn;

use crate::id::Id;
use crate::store::keys::TenantId;
use crate::store::touched::{self, Touch, Touched};
use crate::store::{StoreError, Watcher};

/// How many rounds one transaction evaluates: the writes of one round (an interim invoice
/// burning credits) are evaluated in the next; a chain longer than this is left to the
/// customers' next change.
pub const MAX_ROUNDS: usize = 4;

/// A customer's usage changed: which meters, the latest command time that changed it, and the
/// first and last event timestamps counted (a backdated event changes an earlier window).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTouch {
    /// The meters whose usage changed.
    pub meters: BTreeSet<Id>,
    /// The latest time of the commands that changed it.
    pub at_ms: i64,
    /// The earliest and latest timestamps of the events counted.
    pub span_ms: (i64, i64),
}

impl UsageTouch {
    /// The instants whose windows the change may have moved: the write's time and the first
    /// and last event timestamps, each once, in order. A batch spanning more than two windows
    /// of one customer (a backfill) has its middle windows evaluated by later writes into
    /// them only.
    pub fn instants(&self) -> Vec<i64> {
        let mut out = vec![self.span_ms.0, self.span_ms.1, self.at_ms];
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// What one round evaluates, deduplicated per customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touches {
    usage: BTreeMap<(TenantId, Id), UsageTouch>,
    balance: BTreeMap<(TenantId, Id), i64>,
}

impl Touches {
    /// Groups notes per customer, keeping the latest time of each.
    pub fn from_notes(notes: &[Touch]) -> Self {
        let mut out = Touches::default();
        for n in notes {
            let key = (n.tenant, n.customer);
            match n.what {
                Touched::Usage { meter } => {
                    let entry = out.usage.entry(key).or_insert_with(|| UsageTouch {
                        meters: BTreeSet::new(),
                        at_ms: n.at_ms,
                        span_ms: n.span_ms,
                    });
                    entry.meters.insert(meter);
                    entry.at_ms = entry.at_ms.max(n.at_ms);
                    entry.span_ms = (
                        entry.span_ms.0.min(n.span_ms.0),
                        entry.span_ms.1.max(n.span_ms.1),
                    );
                }
                Touched::Balance => {
                    let at = out.balance.entry(key).or_insert(n.at_ms);
                    *at = (*at).max(n.at_ms);
                }
            }
        }
        out
    }

    /// Customers whose usage changed, in (tenant, customer) order.
    pub fn usage(&self) -> impl Iterator<Item = (TenantId, Id, &UsageTouch)> {
        self.usage.iter().map(|(&(t, c), u)| (t, c, u))
    }

    /// Customers whose credit balance changed, with the latest time, in (tenant, customer)
    /// order.
    pub fn balances(&self) -> impl Iterator<Item = (TenantId, Id, i64)> + '_ {
        self.balance.iter().map(|(&(t, c), &at)| (t, c, at))
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.usage.is_empty() && self.balance.is_empty()
    }
}

/// Runs every evaluator over one round's touches, in the order their effects feed each
/// other: progressive billing may issue an invoice that burns credits, which balance alerts
/// and auto-recharge then see.
pub fn evaluate(tx: &WriteTxn, touches: &Touches, watch: &Watch) -> Result<(), StoreError> {
    crate::billing::progressive::on_touches(
        tx,
        touches,
        watch.policy.auto_collect,
        watch.interim_min_interval_ms,
    )?;
    crate::alerts::on_touches(tx, touches, &watch.policy)?;
    crate::wallet::auto_recharge::on_touches(tx, touches)?;
    Ok(())
}

/// The daemon's [`Watcher`]: evaluates the batch's touches, then what the evaluation itself
/// touched, for at most [`MAX_ROUNDS`] rounds.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// The billing policy evaluators follow as billing runs do: interim invoices are collected
    /// through `auto_collect`, drafts (`spend_exceeded`) are computed like the upcoming
    /// invoice.
    pub policy: crate::billing::run::Policy,
    /// The shortest time between two interim invoices of a subscription
    /// (`billing.interim_min_interval_secs`).
    pub interim_min_interval_ms: i64,
}

impl Watcher for Watch {
    fn before_commit(&self, tx: &WriteTxn, notes: Vec<Touch>) -> Result<(), StoreError> {
        let mut notes = notes;
        for _ in 0..MAX_ROUNDS {
            if notes.is_empty() {
                return Ok(());
            }
            evaluate(tx, &Touches::from_notes(&notes), self)?;
            notes = touched::take();
        }
        if !notes.is_empty() {
            metrics::counter!("tally_watch_rounds_exhausted_total").increment(1);
            tracing::warn!(
                left = notes.len(),
                "evaluation chain longer than {MAX_ROUNDS} rounds; the rest waits for the customers' next change"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_group_per_customer_with_the_latest_time() {
        let t = TenantId(1);
        let note = |customer, what, at_ms| Touch {
            tenant: t,
            customer: Id(customer),
            what,
            at_ms,
            span_ms: (at_ms - 1, at_ms),
        };
        let touches = Touches::from_notes(&[
            note(1, Touched::Usage { meter: Id(10) }, 5),
            note(2, Touched::Balance, 7),
            note(1, Touched::Usage { meter: Id(11) }, 3),
            note(1, Touched::Usage { meter: Id(10) }, 9),
            note(2, Touched::Balance, 4),
        ]);
        let usage: Vec<_> = touches.usage().collect();
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].1, Id(1));
        assert_eq!(usage[0].2.meters, BTreeSet::from([Id(10), Id(11)]));
        assert_eq!(usage[0].2.at_ms, 9);
        assert_eq!(usage[0].2.span_ms, (2, 9));
        assert_eq!(usage[0].2.instants(), vec![2, 9]);
        assert_eq!(touches.balances().collect::<Vec<_>>(), vec![(t, Id(2), 7)]);
        assert!(!touches.is_empty());
        assert!(Touches::from_notes(&[]).is_empty());
    }
}
