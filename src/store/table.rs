//! Typed tables over ordered byte keys: the seam between the domain and the two backends.
//!
//! The domain names a table with a [`TableDef`] and reads and writes it through [`Table`] (inside
//! a write transaction) or [`ReadTable`] (inside a snapshot). Each is an enum over the embedded
//! redb file and PostgreSQL, so a call costs one `match`, not a virtual call, and the redb arm is
//! redb's own table. Keys and values keep redb's encodings (`&[u8]`, `&str`, `()`), whose byte
//! order is the order both backends sort by, so a range scan means the same on either.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use redb::{Key, ReadableTable as _, ReadableTableMetadata as _, Value};

use super::pg::{Pages, PgRead, PgWrite, Source};
use super::StoreError;

/// A table's name and the types of its keys and values; declared once in `store::tables`.
pub struct TableDef<K: Key + 'static, V: Value + 'static> {
    name: &'static str,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K: Key + 'static, V: Value + 'static> Clone for TableDef<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: Key + 'static, V: Value + 'static> Copy for TableDef<K, V> {}

impl<K: Key + 'static, V: Value + 'static> TableDef<K, V> {
    /// Declares a table. Names are unique across the schema (`store::tables` lists them all).
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            types: PhantomData,
        }
    }

    /// The table's name: the redb table, and `tally_<name>` in PostgreSQL.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The same table as redb declares it, for tools and tests that open a file directly.
    pub fn redb(self) -> redb::TableDefinition<'static, K, V> {
        redb::TableDefinition::new(self.name)
    }
}

/// A value read from a table: borrowed from redb's page, or owned bytes from PostgreSQL.
pub struct Guard<'a, V: Value + 'static>(GuardInner<'a, V>);

enum GuardInner<'a, V: Value + 'static> {
    Redb(redb::AccessGuard<'a, V>),
    Owned(Vec<u8>),
}

impl<'a, V: Value + 'static> Guard<'a, V> {
    fn owned(bytes: Vec<u8>) -> Self {
        Guard(GuardInner::Owned(bytes))
    }

    /// The decoded value, borrowed from the guard.
    #[inline]
    pub fn value(&self) -> V::SelfType<'_> {
        match &self.0 {
            GuardInner::Redb(guard) => guard.value(),
            GuardInner::Owned(bytes) => V::from_bytes(bytes),
        }
    }
}

/// One row of a range scan.
pub type Row<'a, K, V> = (Guard<'a, K>, Guard<'a, V>);

/// A range scan in key order; double-ended, so `.rev()` walks it backwards.
pub struct Range<'a, K: Key + 'static, V: Value + 'static>(RangeInner<'a, K, V>);

enum RangeInner<'a, K: Key + 'static, V: Value + 'static> {
    Redb(redb::Range<'a, K, V>),
    Pg(Pages<'a>, PhantomData<fn() -> (K, V)>),
}

impl<'a, K: Key + 'static, V: Value + 'static> Iterator for Range<'a, K, V> {
    type Item = Result<Row<'a, K, V>, StoreError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            RangeInner::Redb(range) => range.next().map(redb_row),
            RangeInner::Pg(pages, _) => pages.next().map(owned_row),
        }
    }
}

impl<K: Key + 'static, V: Value + 'static> DoubleEndedIterator for Range<'_, K, V> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            RangeInner::Redb(range) => range.next_back().map(redb_row),
            RangeInner::Pg(pages, _) => pages.next_back().map(owned_row),
        }
    }
}

type RedbRow<'a, K, V> = (redb::AccessGuard<'a, K>, redb::AccessGuard<'a, V>);

#[inline]
fn redb_row<'a, K: Key + 'static, V: Value + 'static>(
    row: Result<RedbRow<'a, K, V>, redb::StorageError>,
) -> Result<Row<'a, K, V>, StoreError> {
    let (k, v) = row?;
    Ok((Guard(GuardInner::Redb(k)), Guard(GuardInner::Redb(v))))
}

fn owned_row<'a, K: Key + 'static, V: Value + 'static>(
    row: Result<(Vec<u8>, Vec<u8>), StoreError>,
) -> Result<Row<'a, K, V>, StoreError> {
    let (k, v) = row?;
    Ok((Guard::owned(k), Guard::owned(v)))
}

/// What every table can do, in a write transaction or a snapshot. Mirrors redb's
/// `ReadableTable` so domain code reads the same on either backend.
pub trait ReadableTable<K: Key + 'static, V: Value + 'static> {
    /// The value under `key`.
    fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<Guard<'_, V>>, StoreError>;

    /// The values under `keys`, in their order: one round trip on PostgreSQL however many
    /// keys (callers bound how many they pass), a lookup each on redb. Loops that would read
    /// row after row (the events an index names) read them in chunks instead.
    fn get_many<'a, Q: Borrow<K::SelfType<'a>>>(
        &self,
        keys: &[Q],
    ) -> Result<Vec<Option<Guard<'_, V>>>, StoreError>;

    /// The rows whose keys fall in `range`, in key order.
    fn range<'a, KR>(
        &self,
        range: impl RangeBounds<KR> + 'a,
    ) -> Result<Range<'_, K, V>, StoreError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a;

    /// Every row, in key order.
    fn iter(&self) -> Result<Range<'_, K, V>, StoreError>;

    /// The row with the smallest key.
    fn first(&self) -> Result<Option<Row<'_, K, V>>, StoreError> {
        self.iter()?.next().transpose()
    }

    /// The row with the largest key.
    fn last(&self) -> Result<Option<Row<'_, K, V>>, StoreError> {
        self.iter()?.next_back().transpose()
    }

    /// How many rows the table holds (a full count on PostgreSQL: for tests and operators).
    fn len(&self) -> Result<u64, StoreError>;

    /// Whether the table holds no row.
    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.first()?.is_none())
    }
}

fn key_bytes<'a, K: Key + 'static>(key: impl Borrow<K::SelfType<'a>>) -> Vec<u8> {
    K::as_bytes(key.borrow()).as_ref().to_vec()
}

fn bound_bytes<'a, K: Key + 'static, KR: Borrow<K::SelfType<'a>> + 'a>(
    bound: Bound<&KR>,
) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(k) => Bound::Included(K::as_bytes(k.borrow()).as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(K::as_bytes(k.borrow()).as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn pg_range<'s, 'a, K: Key + 'static, V: Value + 'static, KR: Borrow<K::SelfType<'a>> + 'a>(
    source: Source<'s>,
    name: &'static str,
    range: impl RangeBounds<KR> + 'a,
) -> Range<'s, K, V> {
    let lower = bound_bytes::<K, KR>(range.start_bound());
    let upper = bound_bytes::<K, KR>(range.end_bound());
    Range(RangeInner::Pg(
        Pages::new(source, name, lower, upper),
        PhantomData,
    ))
}

/// A table opened inside a write transaction.
pub struct Table<'t, K: Key + 'static, V: Value + 'static>(TableInner<'t, K, V>);

enum TableInner<'t, K: Key + 'static, V: Value + 'static> {
    Redb(redb::Table<'t, K, V>),
    Pg {
        tx: &'t PgWrite,
        name: &'static str,
        types: PhantomData<fn() -> (K, V)>,
    },
}

impl<'t, K: Key + 'static, V: Value + 'static> Table<'t, K, V> {
    pub(crate) fn redb(table: redb::Table<'t, K, V>) -> Self {
        Table(TableInner::Redb(table))
    }

    pub(crate) fn pg(tx: &'t PgWrite, name: &'static str) -> Self {
        Table(TableInner::Pg {
            tx,
            name,
            types: PhantomData,
        })
    }

    /// Writes `value` under `key`, replacing what was there.
    #[inline]
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), StoreError> {
        match &mut self.0 {
            TableInner::Redb(table) => {
                table.insert(key, value)?;
                Ok(())
            }
            TableInner::Pg { tx, name, .. } => tx.put(
                name,
                key_bytes::<K>(key),
                V::as_bytes(value.borrow()).as_ref().to_vec(),
            ),
        }
    }

    /// Deletes the row under `key`, if any.
    #[inline]
    pub fn remove<'a>(&mut self, key: impl Borrow<K::SelfType<'a>>) -> Result<(), StoreError> {
        match &mut self.0 {
            TableInner::Redb(table) => {
                table.remove(key)?;
                Ok(())
            }
            TableInner::Pg { tx, name, .. } => tx.delete(name, key_bytes::<K>(key)),
        }
    }

    /// Reads the rows under `keys` ahead of the point reads that follow, in one round trip on
    /// PostgreSQL (nothing on redb, whose reads are local). Hot paths call it once per batch so
    /// their round trips do not grow with the batch.
    #[inline]
    pub fn prefetch<'a, I>(&self, keys: I) -> Result<(), StoreError>
    where
        I: IntoIterator,
        I::Item: Borrow<K::SelfType<'a>>,
    {
        match &self.0 {
            TableInner::Redb(_) => Ok(()),
            TableInner::Pg { tx, name, .. } => {
                let keys: Vec<Vec<u8>> = keys.into_iter().map(key_bytes::<K>).collect();
                tx.prefetch(name, &keys)
            }
        }
    }
}

impl<K: Key + 'static, V: Value + 'static> ReadableTable<K, V> for Table<'_, K, V> {
    #[inline]
    fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<Guard<'_, V>>, StoreError> {
        match &self.0 {
            TableInner::Redb(table) => Ok(table.get(key)?.map(|g| Guard(GuardInner::Redb(g)))),
            TableInner::Pg { tx, name, .. } => {
                Ok(tx.get(name, &key_bytes::<K>(key))?.map(Guard::owned))
            }
        }
    }

    fn get_many<'a, Q: Borrow<K::SelfType<'a>>>(
        &self,
        keys: &[Q],
    ) -> Result<Vec<Option<Guard<'_, V>>>, StoreError> {
        match &self.0 {
            TableInner::Redb(table) => keys
                .iter()
                .map(|key| Ok(table.get(key.borrow())?.map(|g| Guard(GuardInner::Redb(g)))))
                .collect(),
            TableInner::Pg { tx, name, .. } => {
                let keys: Vec<Vec<u8>> = keys.iter().map(|k| key_bytes::<K>(k.borrow())).collect();
                tx.prefetch(name, &keys)?;
                keys.iter()
                    .map(|key| Ok(tx.get(name, key)?.map(Guard::owned)))
                    .collect()
            }
        }
    }

    #[inline]
    fn range<'a, KR>(&self, range: impl RangeBounds<KR> + 'a) -> Result<Range<'_, K, V>, StoreError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        match &self.0 {
            TableInner::Redb(table) => Ok(Range(RangeInner::Redb(table.range(range)?))),
            TableInner::Pg { tx, name, .. } => {
                tx.flush_table(name)?;
                Ok(pg_range(Source::Write(tx), name, range))
            }
        }
    }

    #[inline]
    fn iter(&self) -> Result<Range<'_, K, V>, StoreError> {
        match &self.0 {
            TableInner::Redb(table) => Ok(Range(RangeInner::Redb(table.iter()?))),
            TableInner::Pg { tx, name, .. } => {
                tx.flush_table(name)?;
                Ok(pg_range::<K, V, K::SelfType<'_>>(
                    Source::Write(tx),
                    name,
                    ..,
                ))
            }
        }
    }

    fn len(&self) -> Result<u64, StoreError> {
        match &self.0 {
            TableInner::Redb(table) => Ok(table.len()?),
            TableInner::Pg { tx, name, .. } => tx.count(name),
        }
    }
}

/// A table opened in a snapshot: owns what it needs, so it can outlive the borrow it came from.
pub struct ReadTable<K: Key + 'static, V: Value + 'static>(ReadInner<K, V>);

enum ReadInner<K: Key + 'static, V: Value + 'static> {
    Redb(redb::ReadOnlyTable<K, V>),
    Pg {
        tx: Arc<PgRead>,
        name: &'static str,
        types: PhantomData<fn() -> (K, V)>,
    },
}

impl<K: Key + 'static, V: Value + 'static> ReadTable<K, V> {
    pub(crate) fn redb(table: redb::ReadOnlyTable<K, V>) -> Self {
        ReadTable(ReadInner::Redb(table))
    }

    pub(crate) fn pg(tx: Arc<PgRead>, name: &'static str) -> Self {
        ReadTable(ReadInner::Pg {
            tx,
            name,
            types: PhantomData,
        })
    }
}

impl<K: Key + 'static, V: Value + 'static> ReadableTable<K, V> for ReadTable<K, V> {
    #[inline]
    fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<Guard<'_, V>>, StoreError> {
        match &self.0 {
            ReadInner::Redb(table) => Ok(table.get(key)?.map(|g| Guard(GuardInner::Redb(g)))),
            ReadInner::Pg { tx, name, .. } => {
                Ok(tx.get(name, &key_bytes::<K>(key))?.map(Guard::owned))
            }
        }
    }

    fn get_many<'a, Q: Borrow<K::SelfType<'a>>>(
        &self,
        keys: &[Q],
    ) -> Result<Vec<Option<Guard<'_, V>>>, StoreError> {
        match &self.0 {
            ReadInner::Redb(table) => keys
                .iter()
                .map(|key| Ok(table.get(key.borrow())?.map(|g| Guard(GuardInner::Redb(g)))))
                .collect(),
            ReadInner::Pg { tx, name, .. } => {
                let keys: Vec<Vec<u8>> = keys.iter().map(|k| key_bytes::<K>(k.borrow())).collect();
                Ok(tx
                    .get_many(name, &keys)?
                    .into_iter()
                    .map(|value| value.map(Guard::owned))
                    .collect())
            }
        }
    }

    #[inline]
    fn range<'a, KR>(&self, range: impl RangeBounds<KR> + 'a) -> Result<Range<'_, K, V>, StoreError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        match &self.0 {
            ReadInner::Redb(table) => Ok(Range(RangeInner::Redb(redb::ReadableTable::range(
                table, range,
            )?))),
            ReadInner::Pg { tx, name, .. } => Ok(pg_range(Source::Read(tx), name, range)),
        }
    }

    #[inline]
    fn iter(&self) -> Result<Range<'_, K, V>, StoreError> {
        match &self.0 {
            ReadInner::Redb(table) => Ok(Range(RangeInner::Redb(table.iter()?))),
            ReadInner::Pg { tx, name, .. } => Ok(pg_range::<K, V, K::SelfType<'_>>(
                Source::Read(tx),
                name,
                ..,
            )),
        }
    }

    fn len(&self) -> Result<u64, StoreError> {
        match &self.0 {
            ReadInner::Redb(table) => Ok(table.len()?),
            ReadInner::Pg { tx, name, .. } => tx.count(name),
        }
    }
}
