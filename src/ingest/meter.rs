//! Meters: how events of one type turn into a quantity.
//!
//! A meter is immutable once created, except its display name: changing how past usage counts
//! would silently change invoices already issued. A new way of counting is a new meter.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decimal::{self, DecimalError};
use crate::id::Id;
use crate::store::keys::{self, tenant_bytes, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "mtr";
/// Longest meter key, event type or property path.
pub const MAX_NAME_BYTES: usize = 255;

/// How a meter folds event values into a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Aggregation {
    /// Number of events.
    Count,
    /// Sum of the value property.
    Sum,
    /// Largest value.
    Max,
    /// Smallest value.
    Min,
    /// Number of distinct values of the unique property (exact).
    UniqueCount,
    /// The value of the event with the latest timestamp.
    Latest,
}

impl Aggregation {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Count => "count",
            Aggregation::Sum => "sum",
            Aggregation::Max => "max",
            Aggregation::Min => "min",
            Aggregation::UniqueCount => "unique_count",
            Aggregation::Latest => "latest",
        }
    }

    /// Parses the API name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "count" => Aggregation::Count,
            "sum" => Aggregation::Sum,
            "max" => Aggregation::Max,
            "min" => Aggregation::Min,
            "unique_count" => Aggregation::UniqueCount,
            "latest" => Aggregation::Latest,
            _ => return None,
        })
    }

    /// Whether the meter reads a numeric value property.
    pub fn needs_value(self) -> bool {
        matches!(
            self,
            Aggregation::Sum | Aggregation::Max | Aggregation::Min | Aggregation::Latest
        )
    }

    /// Whether adding an event can only add to the quantity (late usage is then billed as a
    /// plain addition rather than a recomputation).
    pub fn is_additive(self) -> bool {
        matches!(self, Aggregation::Count | Aggregation::Sum)
    }
}

/// A meter as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    /// Tally's id.
    pub id: Id,
    /// The tenant's unique key for it (e.g. `api_calls`).
    pub key: String,
    /// Display name; the one mutable field.
    pub name: Option<String>,
    /// Events of this type feed the meter.
    pub event_type: String,
    /// How values fold.
    pub aggregation: Aggregation,
    /// Path of the numeric value for sum/max/min/latest.
    pub value_property: Option<String>,
    /// Path of the value whose distinct count unique_count reports.
    pub unique_property: Option<String>,
    /// When it was created.
    pub created_at_ms: i64,
    /// Stored events counted when the meter was created.
    pub backfilled_events: u64,
    /// Stored events of the type that could not be counted at creation (no usable value).
    pub backfill_skipped_events: u64,
}

/// What one event contributes to one meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contribution {
    /// A count meter: the event itself.
    Count,
    /// A numeric value.
    Value(Decimal),
    /// The canonical text's hash of the unique property's value.
    Unique([u8; 16]),
}

/// Why an event cannot feed a meter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The property is absent.
    #[error("property {path:?} required by meter {meter:?} is missing")]
    Missing {
        /// The meter's key.
        meter: String,
        /// The property path.
        path: String,
    },
    /// The property is not a usable number.
    #[error("property {path:?} required by meter {meter:?} {reason}")]
    NotNumeric {
        /// The meter's key.
        meter: String,
        /// The property path.
        path: String,
        /// Why.
        reason: DecimalError,
    },
    /// The value lies outside the documented range of meter values.
    #[error("property {path:?} required by meter {meter:?} {reason}")]
    OutOfRange {
        /// The meter's key.
        meter: String,
        /// The property path.
        path: String,
        /// Which bound it passes.
        reason: crate::decimal::RangeError,
    },
    /// The unique property is an object or array.
    #[error("property {path:?} required by meter {meter:?} must be a string, number or boolean")]
    NotScalar {
        /// The meter's key.
        meter: String,
        /// The property path.
        path: String,
    },
}

impl ValueError {
    /// The property path, for the problem's `errors[].field`.
    pub fn field(&self) -> String {
        match self {
            ValueError::Missing { path, .. }
            | ValueError::NotNumeric { path, .. }
            | ValueError::OutOfRange { path, .. }
            | ValueError::NotScalar { path, .. } => {
                format!("properties.{}", path.trim_start_matches('/'))
            }
        }
    }
}

impl Meter {
    /// What an event with these properties contributes, or why it cannot.
    pub fn contribution(&self, properties: &Value) -> Result<Contribution, ValueError> {
        match self.aggregation {
            Aggregation::Count => Ok(Contribution::Count),
            Aggregation::UniqueCount => {
                let path = self.unique_property.clone().unwrap_or_default();
                let value = lookup(properties, &path).ok_or_else(|| ValueError::Missing {
                    meter: self.key.clone(),
                    path: path.clone(),
                })?;
                if value.is_object() || value.is_array() || value.is_null() {
                    return Err(ValueError::NotScalar {
                        meter: self.key.clone(),
                        path,
                    });
                }
                let canonical = crate::identity::canonical_json(value);
                let hash = blake3::hash(canonical.as_bytes());
                let mut out = [0u8; 16];
                out.copy_from_slice(&hash.as_bytes()[..16]);
                Ok(Contribution::Unique(out))
            }
            _ => {
                let path = self.value_property.clone().unwrap_or_default();
                let value = lookup(properties, &path).ok_or_else(|| ValueError::Missing {
                    meter: self.key.clone(),
                    path: path.clone(),
                })?;
                let number =
                    decimal::from_json(value).map_err(|reason| ValueError::NotNumeric {
                        meter: self.key.clone(),
                        path: path.clone(),
                        reason,
                    })?;
                decimal::check_range(number)
                    .map(Contribution::Value)
                    .map_err(|reason| ValueError::OutOfRange {
                        meter: self.key.clone(),
                        path,
                        reason,
                    })
            }
        }
    }
}

/// Resolves a property path: a JSON pointer (`/a/b`) or a dotted path (`a.b`).
pub fn lookup<'a>(properties: &'a Value, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        properties.pointer(path)
    } else {
        path.split('.')
            .try_fold(properties, |value, part| match value {
                Value::Object(map) => map.get(part),
                Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            })
    }
}

/// Whether a property path is well formed.
pub fn valid_path(path: &str) -> bool {
    if path.is_empty() || path.len() > MAX_NAME_BYTES {
        return false;
    }
    if let Some(pointer) = path.strip_prefix('/') {
        // RFC 6901: `~` must be followed by 0 or 1.
        let bytes = pointer.as_bytes();
        bytes
            .iter()
            .enumerate()
            .all(|(i, &b)| b != b'~' || matches!(bytes.get(i + 1), Some(b'0' | b'1')))
    } else {
        path.split('.').all(|part| !part.is_empty())
    }
}

/// Why a meter command did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    /// The key is taken.
    #[error("a meter with key {key:?} already exists ({existing})")]
    Exists {
        /// The key.
        key: String,
        /// The meter that has it.
        existing: String,
    },
    /// No such meter.
    #[error("no meter with id {0:?}")]
    Missing(String),
}

fn type_prefix(tenant: TenantId, event_type: &str) -> Vec<u8> {
    let mut key = tenant.to_bytes().to_vec();
    // Event types are at most 255 bytes, so the length fits one byte and no type's key is a
    // prefix of another's.
    key.push(u8::try_from(event_type.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(event_type.as_bytes());
    key
}

/// Creates a meter and counts the tenant's already stored events of its type, so a meter
/// created after its events arrived reports the same usage as one created before: the first
/// `chunk_events` events in this transaction, the rest by a job in further bounded ones
/// ([`super::backfill`]).
#[derive(Clone)]
pub struct CreateMeter {
    /// Owner.
    pub tenant: TenantId,
    /// The complete record (backfill counters zero).
    pub meter: Meter,
    /// Stored events examined in the creating transaction (and per later one).
    pub chunk_events: u64,
}

/// A meter and whether its backfill continues in the background (what a create or a rename
/// answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterState {
    /// The meter, with the events counted so far.
    pub meter: Meter,
    /// Whether stored events remain to be counted (`backfill_status: running`).
    pub backfilling: bool,
}

impl Command for CreateMeter {
    type Output = Result<MeterState, MeterError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let mut meter = self.meter;
        let key_index = tenant_bytes(self.tenant, meter.key.as_bytes());
        {
            let by_key = tx.open_table(tables::METER_BY_KEY)?;
            let existing = by_key
                .get(key_index.as_slice())?
                .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
                .map(Id::from_bytes);
            if let Some(existing) = existing {
                return Ok(Err(MeterError::Exists {
                    key: meter.key,
                    existing: existing.display(PREFIX),
                }));
            }
        }
        meter.backfilled_events = 0;
        meter.backfill_skipped_events = 0;
        let (meter, backfilling) =
            super::backfill::start(tx, self.tenant, meter, self.chunk_events.max(1))?;
        tx.open_table(tables::METER_BY_KEY)?
            .insert(key_index.as_slice(), meter.id.to_bytes().as_slice())?;
        let mut by_type = type_prefix(self.tenant, &meter.event_type);
        by_type.extend_from_slice(&meter.id.to_bytes());
        tx.open_table(tables::METERS_BY_TYPE)?
            .insert(by_type.as_slice(), ())?;
        Ok(Ok(MeterState { meter, backfilling }))
    }
}

/// Renames a meter: the only change a meter accepts.
#[derive(Clone)]
pub struct RenameMeter {
    /// Owner.
    pub tenant: TenantId,
    /// Which meter.
    pub id: Id,
    /// The new display name.
    pub name: Option<String>,
}

impl Command for RenameMeter {
    type Output = Result<MeterState, MeterError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let key = keys::tenant_id(self.tenant, self.id);
        let mut meters = tx.open_table(tables::METERS)?;
        let Some(mut meter) = get_record::<Meter, _>(&meters, key)? else {
            return Ok(Err(MeterError::Missing(self.id.display(PREFIX))));
        };
        meter.name = self.name;
        put_record(&mut meters, &key, &meter)?;
        let backfilling = super::backfill::is_running_in(tx, self.tenant, self.id)?;
        Ok(Ok(MeterState { meter, backfilling }))
    }
}

/// The meters fed by events of `event_type`.
pub fn for_event_type(
    meters: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_type: &impl ReadableTable<&'static [u8], ()>,
    tenant: TenantId,
    event_type: &str,
) -> Result<Vec<Meter>, StoreError> {
    let prefix = type_prefix(tenant, event_type);
    let mut end = prefix.clone();
    end.push(0xFF);
    let mut out = Vec::new();
    for entry in by_type.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
        let (key, _) = entry?;
        let key = key.value();
        if key.len() != prefix.len() + 16 {
            continue;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&key[prefix.len()..]);
        let meter = get_record::<Meter, _>(meters, keys::tenant_id(tenant, Id::from_bytes(id)))?
            .ok_or_else(|| StoreError::Corrupt("meter type index points at no meter".into()))?;
        out.push(meter);
    }
    Ok(out)
}

/// One meter of a tenant.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Meter>, StoreError> {
    let table = tx.open_table(tables::METERS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// The meter with this key.
pub fn by_key(tx: &ReadTxn, tenant: TenantId, key: &str) -> Result<Option<Meter>, StoreError> {
    let index = tx.open_table(tables::METER_BY_KEY)?;
    let id = index
        .get(tenant_bytes(tenant, key.as_bytes()).as_slice())?
        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
        .map(Id::from_bytes);
    match id {
        Some(id) => get(tx, tenant, id),
        None => Ok(None),
    }
}

/// A page of meters after `after`.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Meter>, bool), StoreError> {
    let table = tx.open_table(tables::METERS)?;
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        Some(id) => {
            let mut k = keys::tenant_id(tenant, id).to_vec();
            k.push(0);
            k
        }
        None => start,
    };
    let mut out = Vec::new();
    let mut has_more = false;
    for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        let (_, value) = entry?;
        if out.len() == limit {
            has_more = true;
            break;
        }
        out.push(codec::decode(value.value())?);
    }
    Ok((out, has_more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_resolve_as_pointer_or_dotted() {
        let props = json!({"a": {"b": 3, "c/d": 4}, "list": [10, 20]});
        assert_eq!(lookup(&props, "a.b"), Some(&json!(3)));
        assert_eq!(lookup(&props, "/a/b"), Some(&json!(3)));
        assert_eq!(lookup(&props, "/a/c~1d"), Some(&json!(4)));
        assert_eq!(lookup(&props, "list.1"), Some(&json!(20)));
        assert_eq!(lookup(&props, "a.x"), None);
        assert!(valid_path("/a/b") && valid_path("a.b"));
        assert!(!valid_path("a..b") && !valid_path("") && !valid_path("/a~2"));
    }
}
