//! Range scans over PostgreSQL, fetched lazily a page at a time from either end.

use std::collections::VecDeque;
use std::ops::Bound;

use super::{PgRead, PgWrite, RawRow};
use crate::store::StoreError;

/// Most rows fetched per round trip of a range scan.
pub const PAGE_ROWS: usize = 256;

/// Rows the first fetch of each end asks for: `first()`, `is_empty()` and `range(..).next()`
/// want one row, so a scan starts small and grows fourfold per fetch up to [`PAGE_ROWS`].
const FIRST_PAGE_ROWS: usize = 4;

/// Where a scan reads: the write transaction (which sees its own writes) or a snapshot.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// Inside a write transaction; its buffered writes to the table were sent first.
    Write(&'a PgWrite),
    /// Inside a read snapshot.
    Read(&'a PgRead),
}

impl Source<'_> {
    fn page(
        &self,
        table: &'static str,
        lower: &Bound<Vec<u8>>,
        upper: &Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<RawRow>, StoreError> {
        match self {
            Source::Write(tx) => tx.page(table, lower, upper, reverse, limit),
            Source::Read(tx) => tx.page(table, lower, upper, reverse, limit),
        }
    }
}

/// A double-ended range scan: the front and back each fetch pages toward each other and the
/// scan ends where they meet, so `.rev()`, `.next_back()` and mixing both read each row once.
pub struct Pages<'a> {
    source: Source<'a>,
    table: &'static str,
    /// Rows not yet fetched lie within `lower..upper`.
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    front: VecDeque<RawRow>,
    back: VecDeque<RawRow>,
    /// Rows the next fetch of the front and of the back asks for.
    front_rows: usize,
    back_rows: usize,
    /// Nothing is left to fetch between the buffers.
    exhausted: bool,
    failed: bool,
}

impl<'a> Pages<'a> {
    /// A scan of `lower..upper` of `table`; nothing is fetched until the first row is asked.
    pub fn new(
        source: Source<'a>,
        table: &'static str,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> Self {
        Self {
            source,
            table,
            lower,
            upper,
            front: VecDeque::new(),
            back: VecDeque::new(),
            front_rows: FIRST_PAGE_ROWS,
            back_rows: FIRST_PAGE_ROWS,
            exhausted: false,
            failed: false,
        }
    }

    fn fetch(&mut self, reverse: bool) -> Result<(), StoreError> {
        let limit = if reverse {
            &mut self.back_rows
        } else {
            &mut self.front_rows
        };
        let asked = *limit;
        *limit = (asked * 4).min(PAGE_ROWS);
        let rows = self
            .source
            .page(self.table, &self.lower, &self.upper, reverse, asked)?;
        if rows.len() < asked {
            self.exhausted = true;
        }
        if let Some((last, _)) = rows.last() {
            if reverse {
                self.upper = Bound::Excluded(last.clone());
            } else {
                self.lower = Bound::Excluded(last.clone());
            }
        }
        if reverse {
            self.back.extend(rows);
        } else {
            self.front.extend(rows);
        }
        Ok(())
    }

    fn take(&mut self, reverse: bool) -> Option<Result<RawRow, StoreError>> {
        if self.failed {
            return None;
        }
        loop {
            let own = if reverse {
                &mut self.back
            } else {
                &mut self.front
            };
            if let Some(row) = own.pop_front() {
                return Some(Ok(row));
            }
            if self.exhausted {
                // What the other end fetched and has not handed out yet is this end's too; the
                // row nearest this end sits at the far end of the other's buffer.
                let other = if reverse {
                    &mut self.front
                } else {
                    &mut self.back
                };
                return other.pop_back().map(Ok);
            }
            if let Err(e) = self.fetch(reverse) {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}

impl Iterator for Pages<'_> {
    type Item = Result<RawRow, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.take(false)
    }
}

impl DoubleEndedIterator for Pages<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.take(true)
    }
}
