//! What a write transaction changed that someone may be watching.
//!
//! Alerts, auto-recharge and progressive billing must act in the very commit that crossed a
//! threshold, yet ingest and the ledger sit below them and cannot call them. So the lower
//! layers only *note* what they changed — a customer's usage of a meter, a customer's credit
//! balance — and the writer hands the notes of the whole batch to the store's
//! [`Watcher`](super::Watcher) before it commits, inside the same transaction.
//!
//! The notes live in a thread-local list that exists only while a transaction collects them
//! (the writer thread, or [`super::Store::apply_one`]); elsewhere [`note`] does nothing. The
//! list is cleared at the start of every attempt, so the notes of an aborted transaction never
//! reach the next one.

use std::cell::RefCell;

use super::keys::TenantId;
use crate::id::Id;

/// What changed for a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Touched {
    /// An event counted by this meter was stored for the customer.
    Usage {
        /// The meter.
        meter: Id,
    },
    /// One of the customer's credit grant accounts moved.
    Balance,
}

/// One note: who, what, and the writing command's own time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    /// The tenant.
    pub tenant: TenantId,
    /// The customer.
    pub customer: Id,
    /// What changed.
    pub what: Touched,
    /// The instant of the command that changed it (its receipt or effect time), never a clock
    /// read by the writer, so evaluation is reproducible.
    pub at_ms: i64,
    /// The instants the change concerns, first and last: the timestamps of the events counted
    /// (a backdated event changes an earlier window), or `at_ms` twice for a balance.
    pub span_ms: (i64, i64),
}

/// The most notes one transaction keeps: past it, further notes are dropped and counted, so a
/// runaway writer cannot grow memory without bound (evaluation is state-based, so a dropped
/// note is caught up by the customer's next one).
pub const MAX_NOTES: usize = 1 << 20;

thread_local! {
    static NOTES: RefCell<Option<Vec<Touch>>> = const { RefCell::new(None) };
}

/// Records a change, if this thread is collecting. Consecutive notes of one customer and
/// subject (the events of one customer in a batch) are kept as one, their times merged.
pub fn note(touch: Touch) {
    NOTES.with(|notes| {
        let mut notes = notes.borrow_mut();
        let Some(list) = notes.as_mut() else {
            return;
        };
        if let Some(last) = list.last_mut() {
            if (last.tenant, last.customer, last.what) == (touch.tenant, touch.customer, touch.what)
            {
                last.at_ms = last.at_ms.max(touch.at_ms);
                last.span_ms = (
                    last.span_ms.0.min(touch.span_ms.0),
                    last.span_ms.1.max(touch.span_ms.1),
                );
                return;
            }
        }
        if list.len() >= MAX_NOTES {
            metrics::counter!("tally_watch_notes_dropped_total").increment(1);
            return;
        }
        list.push(touch);
    });
}

/// Starts collecting on this thread, dropping anything an earlier attempt left.
pub fn begin() {
    NOTES.with(|notes| *notes.borrow_mut() = Some(Vec::new()));
}

/// Takes what was noted since [`begin`] (or the last `take`), and keeps collecting: what the
/// watcher itself writes is noted for its next round.
pub fn take() -> Vec<Touch> {
    NOTES.with(|notes| {
        notes
            .borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    })
}

/// Stops collecting on this thread.
pub fn end() {
    NOTES.with(|notes| *notes.borrow_mut() = None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(customer: u128) -> Touch {
        Touch {
            tenant: TenantId(1),
            customer: Id(customer),
            what: Touched::Balance,
            at_ms: 5,
            span_ms: (5, 5),
        }
    }

    #[test]
    fn notes_are_kept_only_while_collecting_and_repeats_once() {
        note(touch(1));
        assert!(take().is_empty(), "nothing is kept outside a transaction");
        begin();
        note(touch(1));
        note(touch(1));
        note(touch(2));
        note(touch(1));
        assert_eq!(take(), vec![touch(1), touch(2), touch(1)]);
        let mut early = touch(3);
        early.span_ms = (1, 1);
        note(touch(3));
        note(early);
        let mut merged = touch(3);
        merged.span_ms = (1, 5);
        assert_eq!(take(), vec![merged], "times of one subject merge");
        note(touch(3));
        assert_eq!(take(), vec![touch(3)], "collecting continues after a take");
        begin();
        assert!(take().is_empty(), "a new attempt starts empty");
        note(touch(4));
        end();
        assert!(take().is_empty());
    }
}
