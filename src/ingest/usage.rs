//! Usage: per-hour rollups kept in the same commit as the events, and exact aggregation over
//! any time range.
//!
//! A rollup row holds, for one (meter, customer, hour), the count, sum, min, max and latest value
//! of the events in that hour; `unique_count` keeps the hashes of the distinct values per hour in
//! a second table, because distinct counts do not add across hours. A query over a range reads
//! the rollups of the whole hours inside it and the individual events of the partial hours at
//! its edges, so any range is exact and a month costs about 720 rollup reads.

use std::collections::HashSet;

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::event::Event;
use super::meter::{Aggregation, Contribution, Meter, ValueError};
use crate::decimal::Stored;
use crate::id::Id;
use crate::store::keys::{self, time_bytes, TenantId};
use crate::store::{codec, tables, StoreError};

/// One hour in milliseconds: the coarse rollup grain.
pub const HOUR_MS: i64 = 3_600_000;
/// One minute in milliseconds: the fine rollup grain, used at a query's edges.
pub const MINUTE_MS: i64 = 60_000;

/// The aggregate of one (meter, customer, hour).
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

/// The start of the hour containing `ms`.
pub fn hour_start(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The start of the minute containing `ms`.
pub fn minute_start(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

fn rollup_prefix(tenant: TenantId, meter: Id, customer: Id) -> Vec<u8> {
    let mut key = Vec::with_capacity(48);
    key.extend_from_slice(&tenant.to_bytes());
    key.extend_from_slice(&meter.to_bytes());
    key.extend_from_slice(&customer.to_bytes());
    key
}

fn rollup_key(tenant: TenantId, meter: Id, customer: Id, hour_ms: i64) -> Vec<u8> {
    let mut key = rollup_prefix(tenant, meter, customer);
    key.extend_from_slice(&time_bytes(hour_ms));
    key
}

/// The hour and minute rollup keys an event of `customer` at `timestamp_ms` updates for
/// `meter` (what [`RollupCache::plan`] reads), so a batch can read them ahead in one round trip.
pub fn rollup_keys(tenant: TenantId, meter: Id, customer: Id, timestamp_ms: i64) -> [Vec<u8>; 2] {
    [
        rollup_key(tenant, meter, customer, hour_start(timestamp_ms)),
        rollup_key(tenant, meter, customer, minute_start(timestamp_ms)),
    ]
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
    hour: (Vec<u8>, Rollup),
    minute: (Vec<u8>, Rollup),
    unique_key: Option<Vec<u8>>,
}

/// Which rollup table a cached rollup belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Grain {
    Hour,
    Minute,
}

/// Adds one event's contribution to a rollup; `Err` (and the rollup unchanged) when the sum
/// would leave the decimal range.
fn fold(
    rollup: &mut Rollup,
    contribution: &Contribution,
    timestamp_ms: i64,
    event: Id,
) -> Result<(), ()> {
    if let Contribution::Value(value) = contribution {
        let sum = rollup.sum.0.checked_add(*value).ok_or(())?;
        rollup.count += 1;
        rollup.sum = Stored(sum);
        rollup.min = Some(Stored(rollup.min.map_or(*value, |m| m.0.min(*value))));
        rollup.max = Some(Stored(rollup.max.map_or(*value, |m| m.0.max(*value))));
        let candidate = (timestamp_ms, event.0);
        if rollup.latest.is_none_or(|(ts, id, _)| candidate > (ts, id)) {
            rollup.latest = Some((timestamp_ms, event.0, Stored(*value)));
        }
    } else {
        rollup.count += 1;
    }
    Ok(())
}

/// Why an event's contribution cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the hourly sum of meter {meter:?} would exceed the exact decimal range")]
pub struct Overflow {
    /// The meter's key.
    pub meter: String,
}

/// Rollups changed by a run of events, held in memory and written once at the end: a thousand
/// events of one customer-hour then cost one rollup write instead of a thousand.
#[derive(Debug, Default)]
pub struct RollupCache {
    dirty: std::collections::BTreeMap<(Grain, Vec<u8>), Rollup>,
}

impl RollupCache {
    fn current(
        &self,
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
        grain: Grain,
        key: Vec<u8>,
    ) -> Result<(Vec<u8>, Rollup), StoreError> {
        let cache_key = (grain, key);
        let rollup = match self.dirty.get(&cache_key) {
            Some(r) => r.clone(),
            None => match table.get(cache_key.1.as_slice())? {
                Some(v) => codec::decode(v.value())?,
                None => Rollup::default(),
            },
        };
        Ok((cache_key.1, rollup))
    }

    /// Computes the new rollups (hour and minute) for one event and meter from the current
    /// state (this run's earlier events included), or the overflow that rejects the event.
    /// Writes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &self,
        hourly: &impl ReadableTable<&'static [u8], &'static [u8]>,
        minutely: &impl ReadableTable<&'static [u8], &'static [u8]>,
        uniques: &impl ReadableTable<&'static [u8], ()>,
        tenant: TenantId,
        meter: &Meter,
        customer: Id,
        timestamp_ms: i64,
        event: Id,
        contribution: &Contribution,
    ) -> Result<Result<PlannedRollup, Overflow>, StoreError> {
        let hour_key = rollup_key(tenant, meter.id, customer, hour_start(timestamp_ms));
        let minute_key = rollup_key(tenant, meter.id, customer, minute_start(timestamp_ms));
        let mut unique_key = None;
        if let Contribution::Unique(hash) = contribution {
            let mut k = hour_key.clone();
            k.extend_from_slice(hash);
            if uniques.get(k.as_slice())?.is_none() {
                unique_key = Some(k);
            }
        }
        let mut hour = self.current(hourly, Grain::Hour, hour_key)?;
        let mut minute = self.current(minutely, Grain::Minute, minute_key)?;
        let overflow = || Overflow {
            meter: meter.key.clone(),
        };
        if fold(&mut hour.1, contribution, timestamp_ms, event).is_err()
            || fold(&mut minute.1, contribution, timestamp_ms, event).is_err()
        {
            return Ok(Err(overflow()));
        }
        Ok(Ok(PlannedRollup {
            hour,
            minute,
            unique_key,
        }))
    }

    /// Records a planned rollup: the rollups in memory, a new distinct value in its table at
    /// once (so the run's later events see it).
    pub fn write(
        &mut self,
        uniques: &mut crate::store::Table<&'static [u8], ()>,
        planned: PlannedRollup,
    ) -> Result<(), StoreError> {
        if let Some(k) = &planned.unique_key {
            uniques.insert(k.as_slice(), ())?;
        }
        self.dirty
            .insert((Grain::Hour, planned.hour.0), planned.hour.1);
        self.dirty
            .insert((Grain::Minute, planned.minute.0), planned.minute.1);
        Ok(())
    }

    /// Writes every changed rollup, in key order. Must run before the transaction commits.
    pub fn flush<'t>(
        self,
        hourly: &mut crate::store::Table<'t, &'static [u8], &'static [u8]>,
        minutely: &mut crate::store::Table<'t, &'static [u8], &'static [u8]>,
    ) -> Result<(), StoreError> {
        for ((grain, key), rollup) in self.dirty {
            let bytes = codec::encode(&rollup)?;
            let table = match grain {
                Grain::Hour => &mut *hourly,
                Grain::Minute => &mut *minutely,
            };
            table.insert(key.as_slice(), bytes.as_slice())?;
        }
        Ok(())
    }
}

/// Builds the minute rollups of every meter from the stored events: schema 1 kept hourly
/// rollups only. Runs once, inside the transaction that records the new schema version.
pub fn rebuild_minute_rollups(tx: &WriteTxn) -> Result<u64, StoreError> {
    let meters: Vec<(TenantId, Meter)> = {
        let table = tx.open_table(tables::METERS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let tenant = keys::tenant_of(key.value())
                .ok_or_else(|| StoreError::Corrupt("malformed meter key".into()))?;
            out.push((tenant, codec::decode(value.value())?));
        }
        out
    };
    let events = tx.open_table(tables::EVENTS)?;
    let mut minutely = tx.open_table(tables::USAGE_MINUTELY)?;
    let mut written = 0u64;
    for (tenant, meter) in &meters {
        let mut rollups: std::collections::BTreeMap<Vec<u8>, Rollup> = Default::default();
        let (start, end) = keys::tenant_range(*tenant);
        for entry in events.range::<&[u8]>(start.as_slice()..end.as_slice())? {
            let (_, value) = entry?;
            let Some((event, Ok(contribution))) = stored_contribution(meter, value.value())? else {
                continue;
            };
            let key = rollup_key(
                *tenant,
                meter.id,
                event.customer,
                minute_start(event.timestamp_ms),
            );
            let rollup = rollups.entry(key).or_default();
            if fold(rollup, &contribution, event.timestamp_ms, event.id).is_err() {
                // Only possible with values near the decimal bound (±7.9e28) of opposite signs
                // within one hour (ingest checked the hour's sum); the minute then lacks the
                // event, which this warning records.
                tracing::warn!(meter = %meter.key, "a minute rollup would overflow; event left out");
            }
        }
        for (key, rollup) in rollups {
            minutely.insert(key.as_slice(), codec::encode(&rollup)?.as_slice())?;
            written += 1;
        }
    }
    Ok(written)
}

/// A stored event and what it contributes to a meter, or why the meter cannot count it.
type StoredContribution = (Event, Result<Contribution, ValueError>);

/// A stored event (encoded) and what it contributes to `meter`: `None` when it is of another
/// type, an error inside when the meter cannot count it (a missing or non-numeric value).
fn stored_contribution(
    meter: &Meter,
    encoded: &[u8],
) -> Result<Option<StoredContribution>, StoreError> {
    let event: Event = codec::decode(encoded)?;
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
    let mut hourly = tx.open_table(tables::USAGE_HOURLY)?;
    let mut minutely = tx.open_table(tables::USAGE_MINUTELY)?;
    let mut uniques = tx.open_table(tables::USAGE_UNIQUES)?;
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
        let (event, contribution) = match stored_contribution(meter, value.value())? {
            None => continue,
            Some((event, _)) if event.seq > through_seq => continue,
            Some((_, Err(_))) => {
                pass.skipped += 1;
                continue;
            }
            Some((event, Ok(contribution))) => (event, contribution),
        };
        match cache.plan(
            &hourly,
            &minutely,
            &uniques,
            tenant,
            meter,
            event.customer,
            event.timestamp_ms,
            event.id,
            &contribution,
        )? {
            Ok(planned) => {
                cache.write(&mut uniques, planned)?;
                pass.counted += 1;
            }
            Err(_) => pass.skipped += 1,
        }
    }
    cache.flush(&mut hourly, &mut minutely)?;
    Ok(pass)
}

/// An aggregation in progress.
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    count: u64,
    sum: Decimal,
    min: Option<Decimal>,
    max: Option<Decimal>,
    latest: Option<(i64, u128, Decimal)>,
    uniques: HashSet<[u8; 16]>,
    overflowed: bool,
}

impl Accumulator {
    fn add_rollup(&mut self, r: &Rollup) {
        self.count += r.count;
        match self.sum.checked_add(r.sum.0) {
            Some(s) => self.sum = s,
            None => self.overflowed = true,
        }
        if let Some(m) = r.min {
            self.min = Some(self.min.map_or(m.0, |x| x.min(m.0)));
        }
        if let Some(m) = r.max {
            self.max = Some(self.max.map_or(m.0, |x| x.max(m.0)));
        }
        if let Some((ts, id, v)) = r.latest {
            if self
                .latest
                .is_none_or(|(lts, lid, _)| (ts, id) > (lts, lid))
            {
                self.latest = Some((ts, id, v.0));
            }
        }
    }

    fn add_event(&mut self, timestamp_ms: i64, event: Id, contribution: &Contribution) {
        let mut single = Rollup {
            count: 1,
            ..Rollup::default()
        };
        match contribution {
            Contribution::Count => {}
            Contribution::Value(v) => {
                single.sum = Stored(*v);
                single.min = Some(Stored(*v));
                single.max = Some(Stored(*v));
                single.latest = Some((timestamp_ms, event.0, Stored(*v)));
            }
            Contribution::Unique(hash) => {
                self.uniques.insert(*hash);
            }
        }
        self.add_rollup(&single);
    }

    /// The quantity for the meter's aggregation; `None` for max/min/latest with no events.
    /// Counts and sums of nothing are zero.
    pub fn value(&self, aggregation: Aggregation) -> Result<Option<Decimal>, Overflow> {
        if self.overflowed {
            return Err(Overflow {
                meter: String::new(),
            });
        }
        Ok(match aggregation {
            Aggregation::Count => Some(Decimal::from(self.count)),
            Aggregation::Sum => Some(self.sum),
            Aggregation::Max => self.max,
            Aggregation::Min => self.min,
            Aggregation::Latest => self.latest.map(|(_, _, v)| v),
            Aggregation::UniqueCount => Some(Decimal::from(self.uniques.len() as u64)),
        })
    }

    /// Events that contributed.
    pub fn events(&self) -> u64 {
        self.count
    }
}

/// The tables a usage query reads.
pub struct UsageTables<H, M, U, C, E> {
    /// Hourly rollups.
    pub hourly: H,
    /// Minute rollups.
    pub minutely: M,
    /// Distinct values per hour.
    pub uniques: U,
    /// Events by customer and time.
    pub by_customer: C,
    /// The events.
    pub events: E,
}

/// Aggregates a meter for one customer over `[from_ms, to_ms)`, from any transaction's tables:
/// hourly rollups for the whole hours, minute rollups for the whole minutes of the partial hours
/// at the edges, and the events of the partial minutes at the very edges. Distinct counts do not
/// add across minutes (only hours keep their distinct values), so a `unique_count` meter reads
/// the events of its partial hours.
pub fn aggregate<H, M, U, C, E>(
    t: &UsageTables<H, M, U, C, E>,
    tenant: TenantId,
    meter: &Meter,
    customer: Id,
    from_ms: i64,
    to_ms: i64,
) -> Result<Accumulator, StoreError>
where
    H: ReadableTable<&'static [u8], &'static [u8]>,
    M: ReadableTable<&'static [u8], &'static [u8]>,
    U: ReadableTable<&'static [u8], ()>,
    C: ReadableTable<&'static [u8], ()>,
    E: ReadableTable<&'static [u8], &'static [u8]>,
{
    let mut acc = Accumulator::default();
    if from_ms >= to_ms {
        return Ok(acc);
    }
    let (hourly, uniques) = (&t.hourly, &t.uniques);
    let edge = |from_ms: i64, to_ms: i64, acc: &mut Accumulator| -> Result<(), StoreError> {
        if from_ms >= to_ms {
            return Ok(());
        }
        let scan = |from_ms: i64, to_ms: i64, acc: &mut Accumulator| {
            scan_events(
                &t.by_customer,
                &t.events,
                tenant,
                meter,
                customer,
                from_ms,
                to_ms,
                acc,
            )
        };
        let first_full = minute_start(from_ms.saturating_add(MINUTE_MS - 1));
        let last_full_end = minute_start(to_ms);
        if meter.aggregation == Aggregation::UniqueCount || first_full >= last_full_end {
            return scan(from_ms, to_ms, acc);
        }
        scan(from_ms, first_full, acc)?;
        scan(last_full_end, to_ms, acc)?;
        let lo = rollup_key(tenant, meter.id, customer, first_full);
        let hi = rollup_key(tenant, meter.id, customer, last_full_end);
        for entry in t.minutely.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
            let (_, value) = entry?;
            acc.add_rollup(&codec::decode::<Rollup>(value.value())?);
        }
        Ok(())
    };
    let first_full = hour_start(from_ms.saturating_add(HOUR_MS - 1));
    let last_full_end = hour_start(to_ms);
    if first_full >= last_full_end {
        edge(from_ms, to_ms, &mut acc)?;
        return Ok(acc);
    }
    edge(from_ms, first_full, &mut acc)?;
    edge(last_full_end, to_ms, &mut acc)?;
    let lo = rollup_key(tenant, meter.id, customer, first_full);
    let hi = rollup_key(tenant, meter.id, customer, last_full_end);
    for entry in hourly.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
        let (_, value) = entry?;
        let rollup: Rollup = codec::decode(value.value())?;
        acc.add_rollup(&rollup);
    }
    if meter.aggregation == Aggregation::UniqueCount {
        for entry in uniques.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
            let (key, _) = entry?;
            let key = key.value();
            if let Some(tail) = key.get(key.len().saturating_sub(16)..) {
                let mut hash = [0u8; 16];
                hash.copy_from_slice(tail);
                acc.uniques.insert(hash);
            }
        }
    }
    Ok(acc)
}

#[allow(clippy::too_many_arguments)]
fn scan_events(
    by_customer: &impl ReadableTable<&'static [u8], ()>,
    events: &impl ReadableTable<&'static [u8], &'static [u8]>,
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
    events: &impl ReadableTable<&'static [u8], &'static [u8]>,
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
    events: &impl ReadableTable<&'static [u8], &'static [u8]>,
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
            visit_chunk(events, &chunk, span.cutoff_seq, meter, &mut visit)?;
            chunk.clear();
        }
    }
    visit_chunk(events, &chunk, span.cutoff_seq, meter, &mut visit)
}

/// Reads the events under `event_keys` at once and visits those `meter` counts that were
/// committed up to `cutoff_seq`, in order.
fn visit_chunk(
    events: &impl ReadableTable<&'static [u8], &'static [u8]>,
    event_keys: &[[u8; 24]],
    cutoff_seq: u64,
    meter: &Meter,
    visit: &mut impl FnMut(&Event, &Contribution),
) -> Result<(), StoreError> {
    let keys: Vec<&[u8]> = event_keys.iter().map(|k| k.as_slice()).collect();
    for stored in events.get_many(&keys)? {
        let Some(stored) = stored else {
            return Err(StoreError::Corrupt(
                "customer index points at no event".into(),
            ));
        };
        let event: Event = codec::decode(stored.value())?;
        if event.event_type != meter.event_type || event.seq > cutoff_seq {
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
        &UsageTables {
            hourly: tx.open_table(tables::USAGE_HOURLY)?,
            minutely: tx.open_table(tables::USAGE_MINUTELY)?,
            uniques: tx.open_table(tables::USAGE_UNIQUES)?,
            by_customer: tx.open_table(tables::EVENTS_BY_CUSTOMER)?,
            events: tx.open_table(tables::EVENTS)?,
        },
        tenant,
        meter,
        customer,
        from_ms,
        to_ms,
    )
}
