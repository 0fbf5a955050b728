//! The usage tables' layouts before schema 5, and the upgrade steps that build and convert
//! them: schema 1 → 2 built minute rollups, schema 4 → 5 keys every rollup time first and adds
//! day rollups and distinct values per day ([`super::usage`] has the layout now written) and
//! packs each rollup ([`super::rollup_record`]; schema 5 → 6 repacks nothing: its rows read as
//! they are and are packed when next written).

use crate::id::Id;
use crate::store::keys::{self, time_bytes, TenantId};
use crate::store::{codec, tables, ReadableTable, StoreError, Table, WriteTxn};

use super::meter::Meter;
use super::usage::{minute_start, rollup_key, single, stored_contribution, Grain, Rollup};

/// Schema 4's rollup key: (tenant, meter, customer, bucket start).
fn legacy_key(tenant: TenantId, meter: Id, customer: Id, bucket_ms: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(48);
    key.extend_from_slice(&tenant.to_bytes());
    key.extend_from_slice(&meter.to_bytes());
    key.extend_from_slice(&customer.to_bytes());
    key.extend_from_slice(&time_bytes(bucket_ms));
    key
}

/// The parts of a schema 4 rollup key (and the value hash after it, for distinct values).
struct LegacyKey {
    tenant: TenantId,
    meter: Id,
    customer: Id,
    bucket_ms: i64,
    rest: Vec<u8>,
}

fn parse_legacy(key: &[u8]) -> Result<LegacyKey, StoreError> {
    let bad = || StoreError::Corrupt("malformed schema 4 usage key".into());
    let id = |range: std::ops::Range<usize>| -> Result<Id, StoreError> {
        key.get(range)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Id::from_bytes)
            .ok_or_else(bad)
    };
    let tenant = keys::tenant_of(key).ok_or_else(bad)?;
    let bucket = key
        .get(40..48)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .ok_or_else(bad)?;
    Ok(LegacyKey {
        tenant,
        meter: id(8..24)?,
        customer: id(24..40)?,
        bucket_ms: keys::time_from_bytes(bucket),
        rest: key.get(48..).unwrap_or_default().to_vec(),
    })
}

/// Rows the schema 5 step writes between two [`WriteTxn::release_buffers`]: on PostgreSQL the
/// upgrade is one transaction whose writes would otherwise wait in memory until its commit
/// (small in unit tests, so they take that path).
const RELEASE_EVERY_ROWS: u64 = if cfg!(test) { 7 } else { 10_000 };

/// What the schema 5 step converted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Converted {
    /// Rows written so far (of every kind).
    pub rows: u64,
    /// Day rollups built from the hours.
    pub days: u64,
    /// Hour rollups re-keyed.
    pub hours: u64,
    /// Minute rollups re-keyed.
    pub minutes: u64,
    /// Distinct values written (per hour and per day).
    pub distinct: u64,
}

impl Converted {
    /// Counts one written row, releasing the transaction's buffers every
    /// [`RELEASE_EVERY_ROWS`].
    fn wrote(&mut self, tx: &WriteTxn) -> Result<(), StoreError> {
        self.rows += 1;
        if self.rows.is_multiple_of(RELEASE_EVERY_ROWS) {
            tx.release_buffers()?;
        }
        Ok(())
    }
}

/// Schema 4 → 5: every rollup and distinct value re-keyed time first, day rollups summed from
/// the hours (schema 4's hour rows of one meter and customer are consecutive, so one day is
/// summed at a time) and distinct values kept per day too; the old tables are then deleted.
/// A day whose sum would leave the decimal range (only possible with values near ±7.9e28 of
/// one sign in one day) fails the upgrade rather than store a wrong day.
pub fn to_schema_5(tx: &WriteTxn) -> Result<Converted, StoreError> {
    let mut done = Converted::default();
    convert_hours_and_days(tx, &mut done)?;
    convert_minutes(tx, &mut done)?;
    convert_distinct(tx, &mut done)?;
    tx.delete_table(tables::LEGACY_USAGE_HOURLY)?;
    tx.delete_table(tables::LEGACY_USAGE_MINUTELY)?;
    tx.delete_table(tables::LEGACY_USAGE_UNIQUES)?;
    Ok(done)
}

/// A rollup table being written by the upgrade.
type RollupTable<'t> = Table<'t, &'static [u8], &'static [u8]>;

/// Writes one converted rollup row and counts it.
fn put(
    tx: &WriteTxn,
    rollups: &mut RollupTable<'_>,
    key: &[u8],
    value: &[u8],
    done: &mut Converted,
) -> Result<(), StoreError> {
    rollups.insert(key, value)?;
    done.wrote(tx)
}

/// Writes one converted rollup packed (`super::rollup_record`) and counts it.
fn put_rollup(
    tx: &WriteTxn,
    rollups: &mut RollupTable<'_>,
    key: &[u8],
    rollup: &Rollup,
    done: &mut Converted,
) -> Result<(), StoreError> {
    put(
        tx,
        rollups,
        key,
        &super::rollup_record::encode(rollup),
        done,
    )
}

/// Re-keys the hour rollups and sums each (meter, customer, day) of them into a day rollup.
fn convert_hours_and_days(tx: &WriteTxn, done: &mut Converted) -> Result<(), StoreError> {
    let hourly = tx.open_table(tables::LEGACY_USAGE_HOURLY)?;
    let mut rollups = tx.open_table(tables::USAGE_ROLLUPS)?;
    let mut day: Option<(Vec<u8>, Rollup)> = None;
    for entry in hourly.iter()? {
        let (key, value) = entry?;
        let k = parse_legacy(key.value())?;
        let hour_key = rollup_key(k.tenant, Grain::Hour, k.bucket_ms, k.meter, k.customer);
        let rollup: Rollup = super::rollup_record::decode(value.value())?;
        put_rollup(tx, &mut rollups, &hour_key, &rollup, done)?;
        done.hours += 1;
        let day_key = rollup_key(k.tenant, Grain::Day, k.bucket_ms, k.meter, k.customer);
        match &mut day {
            Some((open, sum)) if *open == day_key => sum.merge(&rollup).map_err(|_| {
                StoreError::Corrupt("a day's usage sum exceeds the decimal range".into())
            })?,
            _ => {
                if let Some((key, sum)) = day.replace((day_key, rollup)) {
                    put_rollup(tx, &mut rollups, &key, &sum, done)?;
                    done.days += 1;
                }
            }
        }
    }
    if let Some((key, sum)) = day {
        put_rollup(tx, &mut rollups, &key, &sum, done)?;
        done.days += 1;
    }
    Ok(())
}

/// Re-keys the minute rollups.
fn convert_minutes(tx: &WriteTxn, done: &mut Converted) -> Result<(), StoreError> {
    let minutely = tx.open_table(tables::LEGACY_USAGE_MINUTELY)?;
    let mut rollups = tx.open_table(tables::USAGE_ROLLUPS)?;
    for entry in minutely.iter()? {
        let (key, value) = entry?;
        let k = parse_legacy(key.value())?;
        let minute_key = rollup_key(k.tenant, Grain::Minute, k.bucket_ms, k.meter, k.customer);
        let rollup = super::rollup_record::decode(value.value())?;
        put_rollup(tx, &mut rollups, &minute_key, &rollup, done)?;
        done.minutes += 1;
    }
    Ok(())
}

/// Re-keys the distinct values per hour and keeps each per day too.
fn convert_distinct(tx: &WriteTxn, done: &mut Converted) -> Result<(), StoreError> {
    let uniques = tx.open_table(tables::LEGACY_USAGE_UNIQUES)?;
    let mut distinct = tx.open_table(tables::USAGE_DISTINCT)?;
    for entry in uniques.iter()? {
        let (key, _) = entry?;
        let k = parse_legacy(key.value())?;
        for grain in [Grain::Day, Grain::Hour] {
            let mut new = rollup_key(k.tenant, grain, k.bucket_ms, k.meter, k.customer);
            new.extend_from_slice(&k.rest);
            distinct.insert(new.as_slice(), ())?;
            done.distinct += 1;
            done.wrote(tx)?;
        }
    }
    Ok(())
}

/// Builds the minute rollups of every meter from the stored events: schema 1 kept hourly
/// rollups only. Runs once, inside the upgrading transaction, in schema 4's layout (which the
/// schema 5 step then converts).
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
    let dictionaries = super::properties_dictionary::Dictionaries::new(
        tx.open_table(tables::PROPERTY_DICTIONARIES)?,
    );
    let mut minutely = tx.open_table(tables::LEGACY_USAGE_MINUTELY)?;
    let mut written = 0u64;
    for (tenant, meter) in &meters {
        let mut rollups: std::collections::BTreeMap<Vec<u8>, Rollup> = Default::default();
        let (start, end) = keys::tenant_range(*tenant);
        for entry in events.range::<&[u8]>(start.as_slice()..end.as_slice())? {
            let (_, value) = entry?;
            let Some((event, Ok(contribution))) =
                stored_contribution(meter, value.value(), &|t: &str| {
                    dictionaries.ready(*tenant, t)
                })?
            else {
                continue;
            };
            let key = legacy_key(
                *tenant,
                meter.id,
                event.customer,
                minute_start(event.timestamp_ms),
            );
            let rollup = rollups.entry(key).or_default();
            if rollup
                .merge(&single(&contribution, event.timestamp_ms, event.id))
                .is_err()
            {
                // Only possible with values near the decimal bound (±7.9e28) of opposite signs
                // within one hour (ingest checked the hour's sum); the minute then lacks the
                // event, which this warning records.
                tracing::warn!(meter = %meter.key, "a minute rollup would overflow; event left out");
            }
        }
        for (key, rollup) in rollups {
            minutely.insert(
                key.as_slice(),
                super::rollup_record::encode(&rollup).as_slice(),
            )?;
            written += 1;
        }
    }
    Ok(written)
}
