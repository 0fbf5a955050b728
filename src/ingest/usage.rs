//! Usage: rollups per day, hour and minute kept in the same commit as the events, and exact
//! aggregation over any time range.
//!
//! A rollup row holds, for one (meter, customer, bucket), the count, sum, min, max and latest
//! value of the events in that bucket; `unique_count` keeps the hashes of the distinct values
//! per day and per hour in a second table, because distinct counts do not add across buckets.
//! A query over a range reads the rollups of the whole days inside it, the whole hours of the
//! partial days at its edges, the whole minutes of the partial hours, and the individual
//! events of the partial minutes at the very edges, so any range is exact and a month costs
//! about 30 day reads plus at most 46 hour and 118 minute reads.
//!
//! Keys are time first: (tenant, grain, bucket start, meter, customer). The rows one commit
//! updates (the current minute, hour and day of every active customer and meter) are then
//! neighbours on a few pages instead of one page per customer, which is what a copy-on-write
//! commit pays for. A query reads its buckets by point lookups instead of one range, bounded
//! by the customer's first and last event.

use std::collections::HashSet;

use crate::store::{ReadTable, ReadTxn, ReadableTable, Table, WriteTxn};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::event::Event;
use super::event_record::{Dictionary, EventTable};
use super::meter::{Aggregation, Contribution, Meter, ValueError};
use super::properties_dictionary::Dictionaries;
use crate::decimal::Stored;
use crate::id::Id;
use crate::store::keys::{self, time_bytes, TenantId};
use crate::store::{tables, StoreError};

/// One day in milliseconds: the coarsest rollup grain (UTC days).
pub const DAY_MS: i64 = 86_400_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// One minute in milliseconds: the finest rollup grain, used at a query's edges.
pub const MINUTE_MS: i64 = 60_000;

/// The aggregate of one (meter, customer, bucket).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollup {
    /// Events counted.
    pub count: u64,
    /// Sum of values (value meters).
    pub sum: Stored,
    /// Smallest value.
    pub min: Option<Stored>,
    /// Largest value.
    pub max: Option<Stored>,
    /// (timestamp, event id, value) of the latest event.
    pub latest: Option<(i64, u128, Stored)>,
}

impl Rollup {
    /// Adds another bucket's aggregate to this one; `Err` (and `self` unchanged) when the sum
    /// would leave the decimal range.
    pub fn merge(&mut self, other: &Rollup) -> Result<(), SumOverflow> {
        let sum = self.sum.0.checked_add(other.sum.0).ok_or(SumOverflow)?;
        let count = self.count.checked_add(other.count).ok_or(SumOverflow)?;
        self.count = count;
        self.sum = Stored(sum);
        if let Some(m) = other.min {
            self.min = Some(Stored(self.min.map_or(m.0, |x| x.0.min(m.0))));
        }
        if let Some(m) = other.max {
            self.max = Some(Stored(self.max.map_or(m.0, |x| x.0.max(m.0))));
        }
        if let Some((ts, id, v)) = other.latest {
            if self
                .latest
                .is_none_or(|(lts, lid, _)| (ts, id) > (lts, lid))
            {
                self.latest = Some((ts, id, v));
            }
        }
        Ok(())
    }
}

/// A rollup's sum (or count) that would leave its exact range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a usage sum would leave the exact decimal range")]
pub struct SumOverflow;

/// The start of the hour containing `ms`.
pub fn hour_start(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The start of the minute containing `ms`.
pub fn minute_start(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// A rollup bucket size. Its tag sorts the grains apart inside one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grain {
    /// UTC days.
    Day,
    /// Hours.
    Hour,
    /// Minutes.
    Minute,
}

impl Grain {
    /// Coarsest first: the order a query descends in.
    pub const ALL: [Grain; 3] = [Grain::Day, Grain::Hour, Grain::Minute];

    fn tag(self) -> u8 {
        match self {
            Grain::Day => b'd',
            Grain::Hour => b'h',
            Grain::Minute => b'm',
        }
    }

    fn len_ms(self) -> i64 {
        match self {
            Grain::Day => DAY_MS,
            Grain::Hour => HOUR_MS,
            Grain::Minute => MINUTE_MS,
        }
    }

    /// The start of the bucket containing `ms`.
    pub fn start(self, ms: i64) -> i64 {
        ms.div_euclid(self.len_ms()) * self.len_ms()
    }

    /// Whether distinct values are kept per bucket of this grain (minutes keep none: a
    /// `unique_count` query reads the events of its partial hours).
    fn keeps_distinct(self) -> bool {
        self != Grain::Minute
    }
}

/// Bytes of a rollup key: tenant, grain tag, bucket start, meter, customer.
const ROLLUP_KEY_LEN: usize = 8 + 1 + 8 + 16 + 16;

/// The key of one rollup row: (tenant, grain, bucket start, meter, customer).
pub fn rollup_key(
    tenant: TenantId,
    grain: Grain,
    bucket_ms: i64,
    meter: Id,
    customer: Id,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(ROLLUP_KEY_LEN + 16);
    key.extend_from_slice(&tenant.to_bytes());
    key.push(grain.tag());
    key.extend_from_slice(&time_bytes(grain.start(bucket_ms)));
    key.extend_from_slice(&meter.to_bytes());
    key.extend_from_slice(&customer.to_bytes());
    key
}

/// The rollup keys an event of `customer` at `timestamp_ms` updates for `meter` (what
/// [`RollupCache::plan`] reads), so a batch can read them ahead in one round trip.
pub fn rollup_keys(tenant: TenantId, meter: Id, customer: Id, timestamp_ms: i64) -> [Vec<u8>; 3] {
    Grain::ALL.map(|g| rollup_key(tenant, g, timestamp_ms, meter, customer))
}

/// The by-customer event index key: (tenant, customer, timestamp, event id).
pub fn by_customer_key(tenant: TenantId, customer: Id, timestamp_ms: i64, event: Id) -> Vec<u8> {
    let mut key = Vec::with_capacity(48);
    key.extend_from_slice(&tenant.to_bytes());
    key.extend_from_slice(&customer.to_bytes());
    key.extend_from_slice(&time_bytes(timestamp_ms));
    key.extend_from_slice(&event.to_bytes());
    key
}

/// The rollup writes one event causes for one meter, computed before anything is written.
#[derive(Debug, Clone)]
pub struct PlannedRollup {
    rows: [(Vec<u8>, Rollup); 3],
    distinct: Vec<Vec<u8>>,
}

/// One event's contribution as a rollup of one event.
pub(crate) fn single(contribution: &Contribution, timestamp_ms: i64, event: Id) -> Rollup {
    let mut one = Rollup {
        count: 1,
        ..Rollup::default()
    };
    if let Contribution::Value(value) = contribution {
        one.sum = Stored(*value);
        one.min = Some(Stored(*value));
        one.max = Some(Stored(*value));
        one.latest = Some((timestamp_ms, event.0, Stored(*value)));
    }
    one
}

/// Why an event's contribution cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the daily sum of meter {meter:?} would exceed the exact decimal range")]
pub struct Overflow {
    /// The meter's key.
    pub meter: String,
}

/// Rollups changed by a run of events, held in memory and written once at the end: a thousand
/// events of one customer-hour then cost one rollup write instead of a thousand.
#[derive(Debug, Default)]
pub struct RollupCache {
    dirty: std::collections::BTreeMap<Vec<u8>, Rollup>,
}

impl RollupCache {
    fn current(
        &self,
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
        key: Vec<u8>,
    ) -> Result<(Vec<u8>, Rollup), StoreError> {
        let rollup = match self.dirty.get(&key) {
            Some(r) => r.clone(),
            None => match table.get(key.as_slice())? {
                Some(v) => super::rollup_record::decode(v.value())?,
                None => Rollup::default(),
            },
        };
        Ok((key, rollup))
    }

    /// Computes the new rollups (day, hour and minute) for one event and meter from the
    /// current state (this run's earlier events included), or the overflow that rejects the
    /// event. Writes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &self,
        rollups: &impl ReadableTable<&'static [u8], &'static [u8]>,
        distinct: &impl ReadableTable<&'static [u8], ()>,
        tenant: TenantId,
        meter: &Meter,
        customer: Id,
        timestamp_ms: i64,
        event: Id,
        contribution: &Contribution,
    ) -> Result<Result<PlannedRollup, Overflow>, StoreError> {
        let one = single(contribution, timestamp_ms, event);
        let mut new_distinct = Vec::new();
        let mut rows = Vec::with_capacity(3);
        for (grain, key) in
            Grain::ALL
                .into_iter()
                .zip(rollup_keys(tenant, meter.id, customer, timestamp_ms))
        {
            if let (Contribution::Unique(hash), true) = (contribution, grain.keeps_distinct()) {
                let mut k = key.clone();
                k.extend_from_slice(hash);
                if distinct.get(k.as_slice())?.is_none() {
                    new_distinct.push(k);
                }
            }
            let mut row = self.current(rollups, key)?;
            if row.1.merge(&one).is_err() {
                return Ok(Err(Overflow {
                    meter: meter.key.clone(),
                }));
            }
            rows.push(row);
        }
        let rows: [(Vec<u8>, Rollup); 3] = rows
            .try_into()
            .map_err(|_| StoreError::Corrupt("a rollup plan lost a grain".into()))?;
        Ok(Ok(PlannedRollup {
            rows,
            distinct: new_distinct,
        }))
    }

    /// Records a planned rollup: the rollups in memory, a new distinct value in its table at
    /// once (so the run's later events see it).
    pub fn write(
        &mut self,
        distinct: &mut crate::store::Table<&'static [u8], ()>,
        planned: PlannedRollup,
    ) -> Result<(), StoreError> {
        for k in &planned.distinct {
            distinct.insert(k.as_slice(), ())?;
        }
        for (key, rollup) in planned.rows {
            self.dirty.insert(key, rollup);
        }
        Ok(())
    }

    /// Writes every changed rollup, in key order. Must run before the transaction commits.
    pub fn flush(
        self,
        rollups: &mut crate::store::Table<'_, &'static [u8], &'static [u8]>,
    ) -> Result<(), StoreError> {
        for (key, rollup) in self.dirty {
            rollups.insert(
                key.as_slice(),
                super::rollup_record::encode(&rollup).as_slice(),
            )?;
        }
        Ok(())
    }
}

/// A stored event and what it contributes to a meter, or why the meter cannot count it.
pub(crate) type StoredContribution = (Event, Result<Contribution, ValueError>);

/// A stored event (encoded) and what it contributes to `meter`: `None` when it is of another
/// type, an error inside when the meter cannot count it (a missing or non-numeric value).
pub(crate) fn stored_contribution(
    meter: &Meter,
    encoded: &[u8],
    dictionary: &impl Dictionary,
) -> Result<Option<StoredContribution>, StoreError> {
    let event = super::event_record::decode(encoded, dictionary)?;
    if event.event_type != meter.event_type {
        return Ok(None);
    }
    let properties: serde_json::Value = serde_json::from_str(&event.properties)
        .map_err(|e| StoreError::Corrupt(format!("stored event properties: {e}")))?;
    let contribution = meter.contribution(&properties);
    Ok(Some((event, contribution)))
}

/// What one pass of a new meter's backfill did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillPass {
    /// Events counted.
    pub counted: u64,
    /// Events of the type skipped for lack of a usable value.
    pub skipped: u64,
    /// The last event key examined (where the next pass starts).
    pub last_key: Option<Vec<u8>>,
    /// Whether the pass reached the tenant's last event.
    pub finished: bool,
}

/// Counts for a new meter up to `limit` of the tenant's stored events after `after_key` (in
/// key order): those stored before the meter existed (sequence number at most `through_seq`;
/// later ones were counted by ingest as they arrived). Every examined event costs one unit of
/// `limit`, of the meter's type or not, so a pass is bounded whatever the store holds.
pub fn backfill_pass(
    tx: &WriteTxn,
    tenant: TenantId,
    meter: &Meter,
    after_key: Option<&[u8]>,
    through_seq: u64,
    limit: u64,
) -> Result<BackfillPass, StoreError> {
    let events = tx.open_table(tables::EVENTS)?;
    let dictionaries = Dictionaries::new(tx.open_table(tables::PROPERTY_DICTIONARIES)?);
    let dictionary = |t: &str| dictionaries.ready(tenant, t);
    let mut rollups = tx.open_table(tables::USAGE_ROLLUPS)?;
    let mut distinct = tx.open_table(tables::USAGE_DISTINCT)?;
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after_key {
        Some(k) => {
            let mut next = k.to_vec();
            next.push(0);
            next
        }
        None => start,
    };
    let mut pass = BackfillPass {
        counted: 0,
        skipped: 0,
        last_key: after_key.map(<[u8]>::to_vec),
        finished: true,
    };
    let mut cache = RollupCache::default();
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    for (examined, entry) in events
        .range::<&[u8]>(lower.as_slice()..end.as_slice())?
        .enumerate()
    {
        if examined == limit {
            pass.finished = false;
            break;
        }
        let (key, value) = entry?;
        pass.last_key = Some(key.value().to_vec());
        let (event, contribution) = match stored_contribution(meter, value.value(), &dictionary)? {
            None => continue,
            Some((event, _)) if event.seq > through_seq => continue,
            Some((_, Err(_))) => {
                pass.skipped += 1;
                continue;
            }
            Some((event, Ok(contribution))) => (event, contribution),
        };
        match cache.plan(
            &rollups,
            &distinct,
            tenant,
            meter,
            event.customer,
            event.timestamp_ms,
            event.id,
            &contribution,
        )? {
            Ok(planned) => {
                cache.write(&mut distinct, planned)?;
                pass.counted += 1;
            }
            Err(_) => pass.skipped += 1,
        }
    }
    cache.flush(&mut rollups)?;
    Ok(pass)
}

/// An aggregation in progress.
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    total: Rollup,
    uniques: HashSet<[u8; 16]>,
    overflowed: bool,
}

impl Accumulator {
    fn add_rollup(&mut self, r: &Rollup) {
        if self.total.merge(r).is_err() {
            self.overflowed = true;
        }
    }

    fn add_event(&mut self, timestamp_ms: i64, event: Id, contribution: &Contribution) {
        if let Contribution::Unique(hash) = contribution {
            self.uniques.insert(*hash);
        }
        self.add_rollup(&single(contribution, timestamp_ms, event));
    }

    /// The quantity for the meter's aggregation; `None` for max/min/latest with no events.
    /// Counts and sums of nothing are zero.
    pub fn value(&self, aggregation: Aggregation) -> Result<Option<Decimal>, Overflow> {
        if self.overflowed {
            return Err(Overflow {
                meter: String::new(),
            });
        }
        let t = &self.total;
        Ok(match aggregation {
            Aggregation::Count => Some(Decimal::from(t.count)),
            Aggregation::Sum => Some(t.sum.0),
            Aggregation::Max => t.max.map(|m| m.0),
            Aggregation::Min => t.min.map(|m| m.0),
            Aggregation::Latest => t.latest.map(|(_, _, v)| v.0),
            Aggregation::UniqueCount => Some(Decimal::from(self.uniques.len() as u64)),
        })
    }

    /// Events that contributed.
    pub fn events(&self) -> u64 {
        self.total.count
    }
}

/// The tables a usage query reads.
pub struct UsageTables<R, D, C, E> {
    /// Rollups of every grain.
    pub rollups: R,
    /// Distinct values per day and hour.
    pub distinct: D,
    /// Events by customer and time.
    pub by_customer: C,
    /// The events, with their properties dictionaries.
    pub events: EventTable<E>,
}

impl
    UsageTables<
        ReadTable<&'static [u8], &'static [u8]>,
        ReadTable<&'static [u8], ()>,
        ReadTable<&'static [u8], ()>,
        ReadTable<&'static [u8], &'static [u8]>,
    >
{
    /// Opens them on a read snapshot.
    pub fn open(tx: &ReadTxn) -> Result<Self, StoreError> {
        Ok(UsageTables {
            rollups: tx.open_table(tables::USAGE_ROLLUPS)?,
            distinct: tx.open_table(tables::USAGE_DISTINCT)?,
            by_customer: tx.open_table(tables::EVENTS_BY_CUSTOMER)?,
            events: EventTable::new(
                tx.open_table(tables::EVENTS)?,
                tx.open_table(tables::PROPERTY_DICTIONARIES)?,
            ),
        })
    }
}

impl<'t>
    UsageTables<
        Table<'t, &'static [u8], &'static [u8]>,
        Table<'t, &'static [u8], ()>,
        Table<'t, &'static [u8], ()>,
        Table<'t, &'static [u8], &'static [u8]>,
    >
{
    /// Opens them inside a write transaction; none may be open elsewhere in it at the time.
    pub fn open_write(tx: &'t WriteTxn) -> Result<Self, StoreError> {
        Ok(UsageTables {
            rollups: tx.open_table(tables::USAGE_ROLLUPS)?,
            distinct: tx.open_table(tables::USAGE_DISTINCT)?,
            by_customer: tx.open_table(tables::EVENTS_BY_CUSTOMER)?,
            events: EventTable::new(
                tx.open_table(tables::EVENTS)?,
                tx.open_table(tables::PROPERTY_DICTIONARIES)?,
            ),
        })
    }
}

/// Rollup rows read per round trip by [`aggregate`] (a query spanning years reads its days
/// in chunks of this many).
const ROLLUP_CHUNK: usize = 256;

/// Aggregates a meter for one customer over `[from_ms, to_ms)`, from any transaction's tables:
/// day rollups for the whole days, hour rollups for the whole hours of the partial days at the
/// edges, minute rollups for the whole minutes of the partial hours, and the events of the
/// partial minutes at the very edges. Distinct counts do not add across buckets and minutes
/// keep none, so a `unique_count` meter reads the events of its partial hours. The range is
/// first narrowed to the customer's first and last event, so its length does not bound the
/// work; the customer's span of activity does (a day read per day of it).
pub fn aggregate<R, D, C, E>(
    t: &UsageTables<R, D, C, E>,
    tenant: TenantId,
    meter: &Meter,
    customer: Id,
    from_ms: i64,
    to_ms: i64,
) -> Result<Accumulator, StoreError>
where
    R: ReadableTable<&'static [u8], &'static [u8]>,
    D: ReadableTable<&'static [u8], ()>,
    C: ReadableTable<&'static [u8], ()>,
    E: ReadableTable<&'static [u8], &'static [u8]>,
{
    let mut acc = Accumulator::default();
    let Some((first_ms, last_ms)) = activity(&t.by_customer, tenant, customer)? else {
        return Ok(acc);
    };
    let from_ms = from_ms.max(first_ms);
    let to_ms = to_ms.min(last_ms.saturating_add(1));
    let query = Query {
        t,
        tenant,
        meter,
        customer,
    };
    query.span(&Grain::ALL, from_ms, to_ms, &mut acc)?;
    Ok(acc)
}

/// The timestamps of a customer's first and last stored event, if any.
fn activity(
    by_customer: &impl ReadableTable<&'static [u8], ()>,
    tenant: TenantId,
    customer: Id,
) -> Result<Option<(i64, i64)>, StoreError> {
    let lo = by_customer_key(tenant, customer, i64::MIN, Id(0));
    let hi = by_customer_key(tenant, customer, i64::MAX, Id(u128::MAX));
    let time = |key: &[u8]| -> Result<i64, StoreError> {
        key.get(24..32)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(keys::time_from_bytes)
            .ok_or_else(|| StoreError::Corrupt("malformed customer index key".into()))
    };
    let mut range = by_customer.range::<&[u8]>(lo.as_slice()..=hi.as_slice())?;
    let Some(first) = range.next() else {
        return Ok(None);
    };
    let first_ms = time(first?.0.value())?;
    let last_ms = match range.next_back() {
        Some(last) => time(last?.0.value())?,
        None => first_ms,
    };
    Ok(Some((first_ms, last_ms)))
}

/// One customer's usage of one meter, being read.
struct Query<'q, R, D, C, E> {
    t: &'q UsageTables<R, D, C, E>,
    tenant: TenantId,
    meter: &'q Meter,
    customer: Id,
}

impl<R, D, C, E> Query<'_, R, D, C, E>
where
    R: ReadableTable<&'static [u8], &'static [u8]>,
    D: ReadableTable<&'static [u8], ()>,
    C: ReadableTable<&'static [u8], ()>,
    E: ReadableTable<&'static [u8], &'static [u8]>,
{
    /// Adds `[from_ms, to_ms)`: the whole buckets of the coarsest grain in `grains` from its
    /// rollups, the rest at the next grain, the events themselves below the last.
    fn span(
        &self,
        grains: &[Grain],
        from_ms: i64,
        to_ms: i64,
        acc: &mut Accumulator,
    ) -> Result<(), StoreError> {
        if from_ms >= to_ms {
            return Ok(());
        }
        let unique = self.meter.aggregation == Aggregation::UniqueCount;
        let Some((&grain, finer)) = grains
            .split_first()
            .filter(|(g, _)| !unique || g.keeps_distinct())
        else {
            return scan_events(
                &self.t.by_customer,
                &self.t.events,
                self.tenant,
                self.meter,
                self.customer,
                from_ms,
                to_ms,
                acc,
            );
        };
        let first_full = grain.start(from_ms.saturating_add(grain.len_ms() - 1));
        let last_full_end = grain.start(to_ms);
        if first_full >= last_full_end {
            return self.span(finer, from_ms, to_ms, acc);
        }
        self.span(finer, from_ms, first_full, acc)?;
        self.span(finer, last_full_end, to_ms, acc)?;
        self.buckets(grain, first_full, last_full_end, acc)
    }

    /// Adds the rollups (and, for `unique_count`, the distinct values) of the whole buckets
    /// of `grain` in `[from_ms, to_ms)`, a chunk of point reads at a time.
    fn buckets(
        &self,
        grain: Grain,
        from_ms: i64,
        to_ms: i64,
        acc: &mut Accumulator,
    ) -> Result<(), StoreError> {
        let unique = self.meter.aggregation == Aggregation::UniqueCount;
        let mut start = from_ms;
        while start < to_ms {
            let mut chunk = Vec::with_capacity(ROLLUP_CHUNK);
            while start < to_ms && chunk.len() < ROLLUP_CHUNK {
                chunk.push(rollup_key(
                    self.tenant,
                    grain,
                    start,
                    self.meter.id,
                    self.customer,
                ));
                start = start.saturating_add(grain.len_ms());
            }
            let keys: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            for (key, row) in keys.iter().zip(self.t.rollups.get_many(&keys)?) {
                let Some(row) = row else { continue };
                acc.add_rollup(&super::rollup_record::decode(row.value())?);
                if unique {
                    self.distinct(key, acc)?;
                }
            }
        }
        Ok(())
    }

    /// Adds the distinct values kept under one rollup row.
    fn distinct(&self, rollup: &[u8], acc: &mut Accumulator) -> Result<(), StoreError> {
        let mut lo = rollup.to_vec();
        lo.extend_from_slice(&[0; 16]);
        let mut hi = rollup.to_vec();
        hi.extend_from_slice(&[0xff; 16]);
        for entry in self
            .t
            .distinct
            .range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
        {
            let (key, _) = entry?;
            if let Some(tail) = key.value().get(ROLLUP_KEY_LEN..) {
                let hash = <[u8; 16]>::try_from(tail)
                    .map_err(|_| StoreError::Corrupt("malformed distinct value key".into()))?;
                acc.uniques.insert(hash);
            }
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn scan_events(
    by_customer: &impl ReadableTable<&'static [u8], ()>,
    events: &EventTable<impl ReadableTable<&'static [u8], &'static [u8]>>,
    tenant: TenantId,
    meter: &Meter,
    customer: Id,
    from_ms: i64,
    to_ms: i64,
    acc: &mut Accumulator,
) -> Result<(), StoreError> {
    let span = CustomerSpan {
        tenant,
        customer,
        from_ms,
        to_ms,
        cutoff_seq: u64::MAX,
    };
    for_each_counted(by_customer, events, &span, meter, |event, contribution| {
        acc.add_event(event.timestamp_ms, event.id, contribution);
    })
}

/// Aggregates from the events themselves (no rollups), counting only events committed up to
/// sequence number `cutoff_seq`, and digests the identities and values counted. This
/// is what invoices use: recomputing with the same cutoff later yields the same quantity and the
/// same digest, whatever arrived since.
#[allow(clippy::too_many_arguments)]
pub fn aggregate_events(
    by_customer: &impl ReadableTable<&'static [u8], ()>,
    events: &EventTable<impl ReadableTable<&'static [u8], &'static [u8]>>,
    tenant: TenantId,
    meter: &Meter,
    customer: Id,
    from_ms: i64,
    to_ms: i64,
    cutoff_seq: u64,
) -> Result<(Accumulator, [u8; 32]), StoreError> {
    let mut acc = Accumulator::default();
    let mut hasher = blake3::Hasher::new_derive_key("tally 2026-11 invoice line events v1");
    let span = CustomerSpan {
        tenant,
        customer,
        from_ms,
        to_ms,
        cutoff_seq,
    };
    for_each_counted(by_customer, events, &span, meter, |event, contribution| {
        hasher.update(&event.id.to_bytes());
        match contribution {
            Contribution::Count => hasher.update(b"c"),
            Contribution::Value(v) => hasher.update(crate::decimal::to_text(*v).as_bytes()),
            Contribution::Unique(h) => hasher.update(h),
        };
        acc.add_event(event.timestamp_ms, event.id, contribution);
    })?;
    Ok((acc, *hasher.finalize().as_bytes()))
}

/// One customer's events in `[from_ms, to_ms)` committed up to sequence number `cutoff_seq`.
struct CustomerSpan {
    tenant: TenantId,
    customer: Id,
    from_ms: i64,
    to_ms: i64,
    cutoff_seq: u64,
}

/// Events read per round trip by [`for_each_counted`].
const EVENT_CHUNK: usize = 256;

/// Calls `visit` with each event of the span that `meter` counts, with its contribution, in
/// the customer index's order. The events the index names are read a chunk at a time: one
/// round trip per [`EVENT_CHUNK`] events on PostgreSQL instead of one per event.
fn for_each_counted(
    by_customer: &impl ReadableTable<&'static [u8], ()>,
    events: &EventTable<impl ReadableTable<&'static [u8], &'static [u8]>>,
    span: &CustomerSpan,
    meter: &Meter,
    mut visit: impl FnMut(&Event, &Contribution),
) -> Result<(), StoreError> {
    if span.from_ms >= span.to_ms {
        return Ok(());
    }
    let lo = by_customer_key(span.tenant, span.customer, span.from_ms, Id(0));
    let hi = by_customer_key(span.tenant, span.customer, span.to_ms, Id(0));
    let mut chunk: Vec<[u8; 24]> = Vec::with_capacity(EVENT_CHUNK);
    for entry in by_customer.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
        let (key, _) = entry?;
        let Some(id_bytes) = key.value().get(32..48) else {
            continue;
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(id_bytes);
        chunk.push(keys::tenant_id(span.tenant, Id::from_bytes(id)));
        if chunk.len() == EVENT_CHUNK {
            visit_chunk(events, span, &chunk, meter, &mut visit)?;
            chunk.clear();
        }
    }
    visit_chunk(events, span, &chunk, meter, &mut visit)
}

/// Reads the events under `event_keys` at once and visits those `meter` counts that were
/// committed up to `cutoff_seq`, in order.
fn visit_chunk(
    events: &EventTable<impl ReadableTable<&'static [u8], &'static [u8]>>,
    span: &CustomerSpan,
    event_keys: &[[u8; 24]],
    meter: &Meter,
    visit: &mut impl FnMut(&Event, &Contribution),
) -> Result<(), StoreError> {
    let keys: Vec<&[u8]> = event_keys.iter().map(|k| k.as_slice()).collect();
    for stored in events.rows.get_many(&keys)? {
        let Some(stored) = stored else {
            return Err(StoreError::Corrupt(
                "customer index points at no event".into(),
            ));
        };
        let event = events.read(span.tenant, stored.value())?;
        if event.event_type != meter.event_type || event.seq > span.cutoff_seq {
            continue;
        }
        let properties: serde_json::Value = serde_json::from_str(&event.properties)
            .map_err(|e| StoreError::Corrupt(format!("stored event properties: {e}")))?;
        if let Ok(contribution) = meter.contribution(&properties) {
            visit(&event, &contribution);
        }
    }
    Ok(())
}

/// [`aggregate`] over a read snapshot.
pub fn usage(
    tx: &ReadTxn,
    tenant: TenantId,
    meter: &Meter,
    customer: Id,
    from_ms: i64,
    to_ms: i64,
) -> Result<Accumulator, StoreError> {
    aggregate(
        &UsageTables::open(tx)?,
        tenant,
        meter,
        customer,
        from_ms,
        to_ms,
    )
}
