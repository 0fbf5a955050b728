//! Document numbers: every finalized invoice gets the next value of its tenant's invoice
//! sequence, inside the write transaction that issues it, so a number is never skipped (the
//! counter and the invoice commit together or not at all) nor given twice (one writer). Drafts
//! and previews never call [`next`]; a voided invoice keeps its number and its re-issue takes a
//! new one. Credit notes count in a sequence of their own.
//!
//! When the tenant's format contains `{year}`, the sequence restarts at 1 every calendar year
//! (UTC year of the issue instant): the year in the number keeps numbers distinct, and
//! "INV-2027-000001" reads as the first invoice of 2027. Without `{year}` one sequence runs
//! forever. Each (kind, year) scope has its own counter, so switching formats never reuses a
//! value within a scope; and no text is ever given twice: should a new format render a text
//! another counter already gave (its literal digits spell a year, say), that value is passed
//! over, leaving the only gap a number sequence can have.

use crate::store::{ReadableTable, WriteTxn};

use crate::store::keys::TenantId;
use crate::store::{tables, StoreError};
use crate::tenant_settings;

/// Which sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// Invoices (`invoice_prefix`, default `INV`).
    Invoice,
    /// Credit notes (`credit_note_prefix`, default `CN`).
    CreditNote,
}

impl Sequence {
    fn tag(self) -> u8 {
        match self {
            Sequence::Invoice => 1,
            Sequence::CreditNote => 2,
        }
    }
}

/// A number given out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number {
    /// The formatted number (`INV-2026-000042`).
    pub text: String,
    /// Its value in its sequence (42), from 1 in each scope.
    pub value: u64,
    /// The year the sequence restarts in, when the format holds `{year}`.
    pub year: Option<i32>,
}

/// The UTC calendar year of an instant (1970 for an instant out of range, which the clock
/// never gives).
pub fn year_of(at_ms: i64) -> i32 {
    jiff::Timestamp::from_millisecond(at_ms)
        .map(|ts| i32::from(ts.to_zoned(jiff::tz::TimeZone::UTC).year()))
        .unwrap_or(1970)
}

fn counter_key(tenant: TenantId, sequence: Sequence, year: Option<i32>) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[..8].copy_from_slice(&tenant.to_bytes());
    key[8] = sequence.tag();
    let scope = year.map_or(0, |y| (y as u32) ^ (1 << 31));
    key[9..].copy_from_slice(&scope.to_be_bytes());
    key
}

/// Takes the next number of `sequence` for a document issued at `at_ms`, in the caller's
/// transaction, formatted with the tenant's current prefix and format.
pub fn next(
    tx: &WriteTxn,
    tenant: TenantId,
    sequence: Sequence,
    at_ms: i64,
) -> Result<Number, StoreError> {
    let settings = tenant_settings::load_in_write(tx, tenant)?;
    let format = settings.number_format();
    let prefix = match sequence {
        Sequence::Invoice => settings.invoice_prefix(),
        Sequence::CreditNote => settings.credit_note_prefix(),
    };
    let calendar_year = year_of(at_ms);
    let year = format.has_year().then_some(calendar_year);
    let key = counter_key(tenant, sequence, year);
    let mut counters = tx.open_table(tables::NUMBER_SEQUENCES)?;
    let last = counters
        .get(key.as_slice())?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let mut texts = tx.open_table(tables::NUMBER_TEXTS)?;
    let mut value = last;
    // Only a format change can make a text repeat, and then for as many values as the other
    // counter gave: the bound is a corruption guard, not a business limit.
    for _ in 0..1_000_000 {
        value = value
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("a number sequence overflowed".into()))?;
        let text = format.render(prefix, calendar_year, value);
        let text_key = crate::store::keys::tenant_bytes(tenant, text.as_bytes());
        if texts.get(text_key.as_slice())?.is_some() {
            continue;
        }
        texts.insert(text_key.as_slice(), ())?;
        counters.insert(key.as_slice(), value.to_be_bytes().as_slice())?;
        return Ok(Number { text, value, year });
    }
    Err(StoreError::Corrupt(
        "no unused number text within a million values".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    const JAN_2026_MS: i64 = 1_767_225_600_000;
    const JAN_2027_MS: i64 = 1_798_761_600_000;

    fn with_tx<T>(store: &Store, f: impl FnOnce(&WriteTxn) -> T) -> T {
        let tx = store.begin_write().expect("write");
        let out = f(&tx);
        tx.commit().expect("commit");
        out
    }

    #[test]
    fn years_are_utc_calendar_years() {
        assert_eq!(year_of(JAN_2026_MS), 2026);
        assert_eq!(year_of(JAN_2026_MS - 1), 2025);
        assert_eq!(year_of(JAN_2027_MS), 2027);
    }

    #[test]
    fn sequences_count_per_tenant_kind_and_year() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("n.redb"), 1 << 22).expect("open");
        let (a, b) = (TenantId(1), TenantId(2));
        let texts = with_tx(&store, |tx| {
            let mut out = Vec::new();
            for (tenant, seq, at) in [
                (a, Sequence::Invoice, JAN_2026_MS),
                (a, Sequence::Invoice, JAN_2026_MS + 1),
                (b, Sequence::Invoice, JAN_2026_MS),
                (a, Sequence::CreditNote, JAN_2026_MS),
                (a, Sequence::Invoice, JAN_2027_MS),
            ] {
                out.push(next(tx, tenant, seq, at).expect("next").text);
            }
            out
        });
        assert_eq!(
            texts,
            [
                "INV-2026-000001",
                "INV-2026-000002",
                "INV-2026-000001",
                "CN-2026-000001",
                "INV-2027-000001"
            ]
        );
    }

    #[test]
    fn an_aborted_transaction_gives_its_number_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("n.redb"), 1 << 22).expect("open");
        let t = TenantId(1);
        {
            let tx = store.begin_write().expect("write");
            next(&tx, t, Sequence::Invoice, JAN_2026_MS).expect("next");
            tx.abort().expect("abort");
        }
        let n = with_tx(&store, |tx| next(tx, t, Sequence::Invoice, JAN_2026_MS)).expect("next");
        assert_eq!(n.value, 1);
        assert_eq!(n.year, Some(2026));
    }
}
