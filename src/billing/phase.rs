//! Phases: the history of a subscription's plans. A plan change never edits a phase; it ends the
//! one in effect at the change instant and starts another, so every instant of a subscription's
//! life has exactly one plan, and an invoice line names its plan by the instant it starts at.
//!
//! Within one billing period the phases cut the period into *segments* (usage is priced per
//! segment by its own plan) and, for the fixed fee, into *pieces*: a change made with
//! [`Proration::None`] does not start a new piece, so the period's fee stays what it was.

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// The public id prefix of a plan change.
pub const CHANGE_PREFIX: &str = "chg";

/// Most phases one subscription may have (each change adds one): bounds the work of every
/// period computation.
pub const MAX_PHASES: usize = 100;

/// How a plan change treats the fixed fee of the period it falls in. The caller chooses; Tally
/// never guesses upgrade or downgrade from prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proration {
    /// Each plan pays for the seconds it was in effect; the credit and charge lines go on the
    /// next invoice of the period.
    Prorate,
    /// No proration lines: the period's fee stays that of the plan it started with; the new
    /// plan's fee starts with the next period. Usage is still priced by the plan in effect.
    None,
    /// Like `Prorate`, but the part of the period before the change is invoiced at once: the
    /// period is split at the change instant.
    InvoiceNow,
}

impl Proration {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Proration::Prorate => "prorate",
            Proration::None => "none",
            Proration::InvoiceNow => "invoice_now",
        }
    }

    /// Parses the API name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "prorate" => Some(Proration::Prorate),
            "none" => Some(Proration::None),
            "invoice_now" => Some(Proration::InvoiceNow),
            _ => None,
        }
    }
}

/// One plan over a span of a subscription's life: from `start_ms` to the next phase's start
/// (or the subscription's end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// The plan in effect.
    pub plan: Id,
    /// When it takes effect (inclusive).
    pub start_ms: i64,
    /// How the change into it treated the period's fee (the first phase: `Prorate`).
    pub proration: Proration,
    /// The change that made it (`chg_…`); `None` for the first phase.
    pub change: Option<Id>,
    /// When the change was requested.
    pub requested_at_ms: i64,
}

/// A span of one period under one plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The plan.
    pub plan: Id,
    /// Start (inclusive).
    pub start_ms: i64,
    /// End (exclusive).
    pub end_ms: i64,
}

/// The phase in effect at `at_ms`: the last one starting at or before it (the first phase for
/// instants before the subscription starts). `phases` is never empty and ordered by start.
pub fn at(phases: &[Phase], at_ms: i64) -> &Phase {
    debug_assert!(!phases.is_empty());
    let after = phases.partition_point(|p| p.start_ms <= at_ms);
    &phases[after.saturating_sub(1)]
}

/// The usage segments of `[start_ms, end_ms)`: one per phase overlapping it, in order.
pub fn segments(phases: &[Phase], start_ms: i64, end_ms: i64) -> Vec<Span> {
    let mut out = Vec::new();
    for (i, phase) in phases.iter().enumerate() {
        let phase_end = phases.get(i + 1).map_or(i64::MAX, |n| n.start_ms);
        let s = phase.start_ms.max(start_ms);
        let e = phase_end.min(end_ms);
        if s < e {
            out.push(Span {
                plan: phase.plan,
                start_ms: s,
                end_ms: e,
            });
        }
    }
    // Before the first phase (never inside a period) the first phase's plan applies.
    if out.is_empty() && start_ms < end_ms {
        out.push(Span {
            plan: at(phases, start_ms).plan,
            start_ms,
            end_ms,
        });
    }
    out
}

/// The fee pieces of `[start_ms, end_ms)`: the segments, except that a segment whose phase was
/// made with [`Proration::None`] extends the piece before it (keeping that piece's plan).
pub fn fee_pieces(phases: &[Phase], start_ms: i64, end_ms: i64) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for seg in segments(phases, start_ms, end_ms) {
        let phase = at(phases, seg.start_ms);
        match out.last_mut() {
            Some(prev) if phase.proration == Proration::None && phase.start_ms == seg.start_ms => {
                prev.end_ms = seg.end_ms;
            }
            _ => out.push(seg),
        }
    }
    out
}

/// The instants at which the period is split (changes made with [`Proration::InvoiceNow`]), in
/// order.
pub fn splits(phases: &[Phase]) -> impl Iterator<Item = i64> + '_ {
    phases
        .iter()
        .skip(1)
        .filter(|p| p.proration == Proration::InvoiceNow)
        .map(|p| p.start_ms)
}

/// The plans of every phase, each once, in first-use order.
pub fn plans(phases: &[Phase]) -> Vec<Id> {
    let mut out: Vec<Id> = Vec::new();
    for p in phases {
        if !out.contains(&p.plan) {
            out.push(p.plan);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(plan: Id, start_ms: i64, proration: Proration) -> Phase {
        Phase {
            plan,
            start_ms,
            proration,
            change: None,
            requested_at_ms: start_ms,
        }
    }

    #[test]
    fn segments_follow_the_phases_and_pieces_merge_changes_without_proration() {
        let (a, b, c) = (Id::generate(), Id::generate(), Id::generate());
        let phases = vec![
            phase(a, 0, Proration::Prorate),
            phase(b, 40, Proration::None),
            phase(c, 70, Proration::Prorate),
        ];
        let segs = segments(&phases, 10, 100);
        assert_eq!(
            segs.iter()
                .map(|s| (s.plan, s.start_ms, s.end_ms))
                .collect::<Vec<_>>(),
            vec![(a, 10, 40), (b, 40, 70), (c, 70, 100)]
        );
        let pieces = fee_pieces(&phases, 10, 100);
        assert_eq!(
            pieces
                .iter()
                .map(|s| (s.plan, s.start_ms, s.end_ms))
                .collect::<Vec<_>>(),
            vec![(a, 10, 70), (c, 70, 100)]
        );
        // A period that starts inside the `none` phase starts its own piece with that plan.
        let pieces = fee_pieces(&phases, 50, 100);
        assert_eq!(pieces[0].plan, b);
        assert_eq!(at(&phases, 69).plan, b);
        assert_eq!(at(&phases, 70).plan, c);
        assert_eq!(at(&phases, -5).plan, a);
    }
}
