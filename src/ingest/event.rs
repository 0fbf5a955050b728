//! Usage events: exactly-once ingest.
//!
//! Each event has an identity: `(tenant, source, id)` when the client gives an id, or a derived
//! one (blake3 of tenant, source and the payload without its timestamp) plus a time window. The
//! identity is checked and the event, its identity, its customer index entry and every meter's
//! rollup are written in one command, so an event is counted once, permanently, in the same
//! commit that stores it. A batch is planned event by event: a rejected event writes nothing and
//! the others still commit; a later event of the batch sees the earlier ones (in-batch
//! duplicates are caught like any other). A duplicate or conflict writes one row of
//! [`super::anomaly`] and nothing else.

use std::collections::HashMap;
use std::rc::Rc;

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::anomaly::{self, Anomaly, AnomalyKind};
use super::meter::{self, Meter, ValueError};
use super::rate;
use super::usage::{self, by_customer_key};
use crate::id::Id;
use crate::store::keys::{self, time_bytes, TenantId};
use crate::store::touched::{self, Touch, Touched};
use crate::store::writer::Command;
use crate::store::{tables, StoreError};

use super::properties_dictionary::Dictionaries;

/// The public id prefix.
pub const PREFIX: &str = "evt";
/// The source of events that name none.
pub const DEFAULT_SOURCE: &str = "default";
/// Longest id, source, type or customer reference, in bytes.
pub const MAX_FIELD_BYTES: usize = 255;
/// Largest `properties` object, as canonical JSON bytes.
pub const MAX_PROPERTIES_BYTES: usize = 32 * 1024;

/// How an event is identified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identity {
    /// The client's own id within a source; remembered forever.
    Stable {
        /// The client's id.
        id: String,
    },
    /// No id: the payload hash, and the window (ms) within which equal payloads are one event.
    Derived {
        /// First 16 bytes of the derived hash.
        hash: [u8; 16],
        /// The source's window when the event was stored.
        window_ms: i64,
    },
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Tally's id (time-ordered by receipt).
    pub id: Id,
    /// The source namespace of its identity.
    pub source: String,
    /// Its identity.
    pub identity: Identity,
    /// The customer it is billed to.
    pub customer: Id,
    /// The customer's external id, as the event named it.
    pub customer_external_id: String,
    /// Which meters it feeds.
    pub event_type: String,
    /// When the usage happened.
    pub timestamp_ms: i64,
    /// Whether the client gave the timestamp (otherwise it is the receipt time).
    pub timestamp_given: bool,
    /// When Tally stored it.
    pub received_at_ms: i64,
    /// Canonical JSON of its properties.
    pub properties: String,
    /// Digest of what it says, to tell duplicates from conflicts.
    pub digest: [u8; 32],
    /// Whether its period had already been invoiced when it arrived.
    pub late: bool,
    /// Commit order across all tenants, assigned by the writer: an invoice records the last seq
    /// it counted, so recomputing it later ignores events that arrived after it.
    pub seq: u64,
}

/// The `meta` counter of event sequence numbers.
pub const EVENT_SEQ_COUNTER: &str = "event_seq";

/// The last assigned event sequence number (0 before the first event).
pub fn current_seq(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, StoreError> {
    Ok(meta
        .get(EVENT_SEQ_COUNTER)?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

/// A validated event from a request, ready to apply.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Tally's id if accepted.
    pub id: Id,
    /// Identity source.
    pub source: String,
    /// Identity.
    pub identity: Identity,
    /// The customer's external id.
    pub customer_external_id: String,
    /// Event type.
    pub event_type: String,
    /// Usage time.
    pub timestamp_ms: i64,
    /// Whether the client gave it.
    pub timestamp_given: bool,
    /// Properties, parsed.
    pub properties: serde_json::Value,
    /// Their canonical text.
    pub properties_canonical: String,
    /// Payload digest.
    pub digest: [u8; 32],
}

/// A per-event problem, in the shape the API reports (code, detail, field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable code, e.g. `unknown_customer`.
    pub code: &'static str,
    /// Human detail.
    pub detail: String,
    /// Offending field, relative to the event.
    pub field: String,
}

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Stored and counted now.
    Accepted {
        /// Its id.
        id: Id,
        /// Whether its period was already invoiced.
        late: bool,
    },
    /// Already stored with the same payload; the original id.
    Duplicate {
        /// The original's id.
        id: Id,
        /// The original's late flag.
        late: bool,
    },
    /// Already stored with a different payload; the first stands.
    Conflict {
        /// The original's id.
        id: Id,
        /// The original's late flag.
        late: bool,
    },
    /// Not stored.
    Rejected(Rejection),
}

/// Ingests a batch of events (some possibly rejected during parsing already).
#[derive(Clone)]
pub struct IngestBatch {
    /// Owner.
    pub tenant: TenantId,
    /// In request order.
    pub events: Vec<Result<Prepared, Rejection>>,
    /// Receipt time.
    pub now_ms: i64,
    /// The request's `Idempotency-Key`, recorded with its duplicates and conflicts.
    pub idempotency_key: Option<String>,
}

impl Command for IngestBatch {
    type Output = Vec<Status>;

    fn apply(self, tx: &WriteTxn) -> Result<Vec<Status>, StoreError> {
        let mut outputs = Self::apply_run(vec![self], tx)?;
        outputs
            .pop()
            .ok_or_else(|| StoreError::Corrupt("an ingest run lost its output".into()))
    }

    /// Single-event requests arrive by the hundred per commit: the tables and the sequence
    /// counter are opened once for the whole run rather than once per request.
    fn apply_run(commands: Vec<Self>, tx: &WriteTxn) -> Result<Vec<Vec<Status>>, StoreError> {
        let mut tables = Tables::open(tx)?;
        tables.prefetch(&commands)?;
        let mut meta = tx.open_table(tables::META)?;
        let first_seq = current_seq(&meta)?;
        let mut seq = first_seq;
        let mut outputs = Vec::with_capacity(commands.len());
        let mut stored = rate::Counts::default();
        for command in commands {
            if tables.meter_cache_tenant != Some(command.tenant) {
                tables.meter_cache.clear();
                tables.meter_cache_tenant = Some(command.tenant);
            }
            let mut out = Vec::with_capacity(command.events.len());
            for item in command.events {
                let status = match item {
                    Ok(prepared) => apply_one(
                        &mut tables,
                        Receipt {
                            tenant: command.tenant,
                            now_ms: command.now_ms,
                            idempotency_key: command.idempotency_key.as_deref(),
                        },
                        prepared,
                        &mut seq,
                    )?,
                    Err(rejection) => Status::Rejected(rejection),
                };
                if matches!(status, Status::Accepted { .. }) {
                    stored.add(command.tenant, command.now_ms);
                }
                out.push(status);
            }
            outputs.push(out);
        }
        if seq != first_seq {
            meta.insert(EVENT_SEQ_COUNTER, seq.to_be_bytes().as_slice())?;
        }
        let Tables {
            mut usage_rollups,
            rollups,
            ..
        } = tables;
        rollups.flush(&mut usage_rollups)?;
        stored.flush(&mut tx.open_table(tables::INGEST_MINUTES)?)?;
        Ok(outputs)
    }
}

/// A customer's id and its invoiced-through watermark (ms), if any.
type KnownCustomer = (Id, Option<i64>);

/// What every event of one request shares.
#[derive(Clone, Copy)]
struct Receipt<'a> {
    tenant: TenantId,
    now_ms: i64,
    idempotency_key: Option<&'a str>,
}

struct Tables<'t> {
    tx: &'t WriteTxn,
    /// Opened by the first duplicate or conflict of the run: accepted events never touch it.
    anomalies: Option<crate::store::Table<'t, &'static [u8], &'static [u8]>>,
    events: crate::store::Table<'t, &'static [u8], &'static [u8]>,
    stable: crate::store::Table<'t, &'static [u8], &'static [u8]>,
    derived: crate::store::Table<'t, &'static [u8], &'static [u8]>,
    /// Properties dictionaries by event type (sampled and fixed as events arrive).
    dictionaries: Dictionaries<crate::store::Table<'t, &'static [u8], &'static [u8]>>,
    by_customer: crate::store::Table<'t, &'static [u8], ()>,
    customers_by_external: crate::store::Table<'t, &'static [u8], &'static [u8]>,
    meters: crate::store::Table<'t, &'static [u8], &'static [u8]>,
    meters_by_type: crate::store::Table<'t, &'static [u8], ()>,
    usage_rollups: crate::store::Table<'t, &'static [u8], &'static [u8]>,
    distinct: crate::store::Table<'t, &'static [u8], ()>,
    invoiced_through: crate::store::Table<'t, &'static [u8], &'static [u8]>,
    /// Meters by event type, valid for `meter_cache_tenant` within this run (meters are not
    /// changed by ingest, and a run holds only ingest commands). Shared slices, so handing
    /// them to each event costs a reference count rather than a copy.
    meter_cache: Vec<(String, Rc<[Meter]>)>,
    meter_cache_tenant: Option<TenantId>,
    /// Customers by tenant and external id, with their invoiced-through watermark, looked up
    /// once per run: neither changes during a run of ingest commands. Nested so a hit needs no
    /// owned key.
    customer_cache: HashMap<TenantId, HashMap<String, Option<KnownCustomer>>>,
    /// Rollups changed by this run, written when it ends.
    rollups: usage::RollupCache,
}

impl<'t> Tables<'t> {
    fn open(tx: &'t WriteTxn) -> Result<Self, StoreError> {
        Ok(Self {
            tx,
            anomalies: None,
            events: tx.open_table(tables::EVENTS)?,
            dictionaries: Dictionaries::new(tx.open_table(tables::PROPERTY_DICTIONARIES)?),
            stable: tx.open_table(tables::EVENT_IDS)?,
            derived: tx.open_table(tables::EVENT_DERIVED)?,
            by_customer: tx.open_table(tables::EVENTS_BY_CUSTOMER)?,
            customers_by_external: tx.open_table(tables::CUSTOMER_BY_EXTERNAL)?,
            meters: tx.open_table(tables::METERS)?,
            meters_by_type: tx.open_table(tables::METERS_BY_TYPE)?,
            usage_rollups: tx.open_table(tables::USAGE_ROLLUPS)?,
            distinct: tx.open_table(tables::USAGE_DISTINCT)?,
            invoiced_through: tx.open_table(tables::INVOICED_THROUGH)?,
            meter_cache: Vec::new(),
            meter_cache_tenant: None,
            customer_cache: HashMap::new(),
            rollups: usage::RollupCache::default(),
        })
    }

    /// The customer with this external id and its invoiced-through watermark, if it exists.
    fn customer(
        &mut self,
        tenant: TenantId,
        external_id: &str,
    ) -> Result<Option<KnownCustomer>, StoreError> {
        if let Some(found) = self
            .customer_cache
            .get(&tenant)
            .and_then(|known| known.get(external_id))
        {
            return Ok(*found);
        }
        let key = keys::tenant_bytes(tenant, external_id.as_bytes());
        let found = match self.customers_by_external.get(key.as_slice())? {
            Some(v) => {
                let customer = id_from(v.value())?;
                let through = self
                    .invoiced_through
                    .get(keys::tenant_id(tenant, customer).as_slice())?
                    .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
                    .map(i64::from_be_bytes);
                Some((customer, through))
            }
            None => None,
        };
        self.customer_cache
            .entry(tenant)
            .or_default()
            .insert(external_id.to_string(), found);
        Ok(found)
    }

    /// Reads ahead, in a few queries whatever the run's size, every row the run's events will
    /// look up: their identities and the events those name, their customers and watermarks,
    /// and the rollups they update. On redb reads are local and this does nothing; on
    /// PostgreSQL it keeps a batch's round trips constant instead of one per event.
    fn prefetch(&mut self, commands: &[IngestBatch]) -> Result<(), StoreError> {
        if !self.tx.is_postgres() {
            return Ok(());
        }
        let prepared = || {
            commands.iter().flat_map(|c| {
                c.events
                    .iter()
                    .filter_map(|e| e.as_ref().ok())
                    .map(|p| (c.tenant, p))
            })
        };
        let (mut stable, mut derived) = (Vec::new(), Vec::new());
        for (tenant, p) in prepared() {
            match &p.identity {
                Identity::Stable { id } => stable.push(stable_key(tenant, &p.source, id)),
                Identity::Derived { hash, window_ms } => {
                    let bucket = bucket_of(p.timestamp_ms, *window_ms);
                    for b in [bucket, bucket - window_ms, bucket + window_ms] {
                        derived.push(derived_key(tenant, b, hash));
                    }
                }
            }
        }
        self.stable.prefetch(stable.iter().map(Vec::as_slice))?;
        self.derived.prefetch(derived.iter().map(Vec::as_slice))?;
        // The events already known (duplicates), so answering them costs no further query.
        let mut known = Vec::new();
        for ((tenant, _), key) in prepared()
            .filter(|(_, p)| matches!(p.identity, Identity::Stable { .. }))
            .zip(stable.iter())
        {
            if let Some(v) = self.stable.get(key.as_slice())? {
                known.push(keys::tenant_id(tenant, id_from(v.value())?));
            }
        }
        self.events.prefetch(known.iter().map(|k| k.as_slice()))?;
        let externals: Vec<Vec<u8>> = prepared()
            .map(|(tenant, p)| keys::tenant_bytes(tenant, p.customer_external_id.as_bytes()))
            .collect();
        self.customers_by_external
            .prefetch(externals.iter().map(Vec::as_slice))?;
        let mut watermarks = Vec::new();
        let mut rollups = Vec::new();
        for ((tenant, p), external) in prepared().zip(externals.iter()) {
            let customer = match self.customers_by_external.get(external.as_slice())? {
                Some(v) => id_from(v.value())?,
                None => continue,
            };
            watermarks.push(keys::tenant_id(tenant, customer));
            if self.meter_cache_tenant != Some(tenant) {
                self.meter_cache.clear();
                self.meter_cache_tenant = Some(tenant);
            }
            for meter in self.meters_for(tenant, &p.event_type)?.iter() {
                rollups.extend(usage::rollup_keys(
                    tenant,
                    meter.id,
                    customer,
                    p.timestamp_ms,
                ));
            }
        }
        self.invoiced_through
            .prefetch(watermarks.iter().map(|k| k.as_slice()))?;
        rollups.sort_unstable();
        rollups.dedup();
        self.usage_rollups
            .prefetch(rollups.iter().map(Vec::as_slice))?;
        Ok(())
    }

    /// Records a duplicate or conflict (one insert).
    fn record_anomaly(&mut self, tenant: TenantId, anomaly: &Anomaly) -> Result<(), StoreError> {
        let table = match &mut self.anomalies {
            Some(table) => table,
            None => self
                .anomalies
                .insert(self.tx.open_table(tables::EVENT_ANOMALIES)?),
        };
        anomaly::record(table, tenant, anomaly)
    }

    fn meters_for(
        &mut self,
        tenant: TenantId,
        event_type: &str,
    ) -> Result<Rc<[Meter]>, StoreError> {
        if let Some((_, m)) = self.meter_cache.iter().find(|(t, _)| t == event_type) {
            return Ok(Rc::clone(m));
        }
        let found: Rc<[Meter]> =
            meter::for_event_type(&self.meters, &self.meters_by_type, tenant, event_type)?.into();
        self.meter_cache
            .push((event_type.to_string(), Rc::clone(&found)));
        Ok(found)
    }
}

fn stable_key(tenant: TenantId, source: &str, id: &str) -> Vec<u8> {
    crate::identity::stable_event_key(tenant.0, source, id)
}

fn derived_key(tenant: TenantId, bucket_ms: i64, hash: &[u8; 16]) -> Vec<u8> {
    let mut key = tenant.to_bytes().to_vec();
    key.extend_from_slice(&time_bytes(bucket_ms));
    key.extend_from_slice(hash);
    key
}

/// The key under which a derived identity is indexed: its window's bucket, so the index is
/// clustered by time (cheap inserts, and old buckets can be dropped wholesale).
fn bucket_of(timestamp_ms: i64, window_ms: i64) -> i64 {
    timestamp_ms.div_euclid(window_ms) * window_ms
}

fn load_event(tables: &Tables<'_>, tenant: TenantId, id: Id) -> Result<Event, StoreError> {
    match tables.events.get(keys::tenant_id(tenant, id).as_slice())? {
        Some(stored) => super::event_record::decode(stored.value(), &|t: &str| {
            tables.dictionaries.ready(tenant, t)
        }),
        None => Err(StoreError::Corrupt(format!(
            "identity points at missing {}",
            id.display(PREFIX)
        ))),
    }
}

fn id_from(bytes: &[u8]) -> Result<Id, StoreError> {
    <[u8; 16]>::try_from(bytes)
        .map(Id::from_bytes)
        .map_err(|_| StoreError::Corrupt("malformed event id in an index".into()))
}

/// The key under which an event's identity is indexed: computed once per event, for the
/// lookup and for the insert.
fn index_key(tenant: TenantId, prepared: &Prepared) -> Vec<u8> {
    match &prepared.identity {
        Identity::Stable { id } => stable_key(tenant, &prepared.source, id),
        Identity::Derived { hash, window_ms } => {
            derived_key(tenant, bucket_of(prepared.timestamp_ms, *window_ms), hash)
        }
    }
}

/// Finds an already stored event with the same identity; `key` is its [`index_key`].
fn find_existing(
    tables: &Tables<'_>,
    tenant: TenantId,
    prepared: &Prepared,
    key: &[u8],
) -> Result<Option<Event>, StoreError> {
    match &prepared.identity {
        Identity::Stable { id } => {
            let found = match tables.stable.get(key)? {
                Some(v) => Some(id_from(v.value())?),
                None => None,
            };
            match found {
                Some(event_id) => {
                    let event = load_event(tables, tenant, event_id)?;
                    // The key spells out source and id; confirm the record agrees with its index
                    // entry rather than assume it.
                    let same = event.source == prepared.source
                        && matches!(&event.identity, Identity::Stable { id: stored } if stored == id);
                    Ok(same.then_some(event))
                }
                None => Ok(None),
            }
        }
        Identity::Derived { hash, window_ms } => {
            let bucket = bucket_of(prepared.timestamp_ms, *window_ms);
            // A retry may straddle a bucket edge: look in the event's own bucket (`key`), then
            // in its neighbours, whose keys are built only when needed.
            for candidate in [None, Some(bucket - window_ms), Some(bucket + window_ms)] {
                let neighbour = candidate.map(|b| derived_key(tenant, b, hash));
                let found = match tables.derived.get(neighbour.as_deref().unwrap_or(key))? {
                    Some(v) => Some(id_from(v.value())?),
                    None => None,
                };
                if let Some(event_id) = found {
                    let event = load_event(tables, tenant, event_id)?;
                    if (event.timestamp_ms - prepared.timestamp_ms).abs() < *window_ms {
                        return Ok(Some(event));
                    }
                }
            }
            Ok(None)
        }
    }
}

/// The anomaly row of a received event that matched `existing`.
fn anomaly_of(
    receipt: Receipt<'_>,
    prepared: Prepared,
    existing: &Event,
    kind: AnomalyKind,
) -> Anomaly {
    let conflict = kind == AnomalyKind::Conflict;
    Anomaly {
        id: prepared.id,
        kind,
        original: existing.id,
        customer: existing.customer,
        source: prepared.source,
        client_id: match prepared.identity {
            Identity::Stable { id } => Some(id),
            Identity::Derived { .. } => None,
        },
        customer_external_id: prepared.customer_external_id,
        event_type: prepared.event_type,
        timestamp_ms: prepared.timestamp_ms,
        received_at_ms: receipt.now_ms,
        properties: conflict.then_some(prepared.properties_canonical),
        digest: conflict.then_some(prepared.digest),
        idempotency_key: receipt.idempotency_key.map(str::to_string),
    }
}

fn apply_one(
    tables: &mut Tables<'_>,
    receipt: Receipt<'_>,
    prepared: Prepared,
    seq: &mut u64,
) -> Result<Status, StoreError> {
    let Receipt { tenant, now_ms, .. } = receipt;
    // 1. Identity: a known event is answered without writing it again; the answer is recorded.
    let identity_key = index_key(tenant, &prepared);
    if let Some(existing) = find_existing(tables, tenant, &prepared, &identity_key)? {
        let same = match prepared.identity {
            Identity::Stable { .. } => existing.digest == prepared.digest,
            // Equal hashes mean equal payloads; the timestamps are within the window.
            Identity::Derived { .. } => true,
        };
        let kind = if same {
            AnomalyKind::Duplicate
        } else {
            AnomalyKind::Conflict
        };
        tables.record_anomaly(tenant, &anomaly_of(receipt, prepared, &existing, kind))?;
        return Ok(if same {
            Status::Duplicate {
                id: existing.id,
                late: existing.late,
            }
        } else {
            Status::Conflict {
                id: existing.id,
                late: existing.late,
            }
        });
    }
    // 2. The customer must exist.
    let Some((customer, invoiced_through_ms)) =
        tables.customer(tenant, &prepared.customer_external_id)?
    else {
        return Ok(Status::Rejected(Rejection {
            code: "unknown_customer",
            detail: format!(
                "no customer with external_id {:?}",
                prepared.customer_external_id
            ),
            field: "customer".into(),
        }));
    };
    // 3. Every meter of the type must be able to count it; plan their rollups.
    let meters = tables.meters_for(tenant, &prepared.event_type)?;
    let mut planned = Vec::with_capacity(meters.len());
    for meter in meters.iter() {
        let contribution = match meter.contribution(&prepared.properties) {
            Ok(c) => c,
            Err(e) => return Ok(Status::Rejected(value_rejection(&e))),
        };
        match tables.rollups.plan(
            &tables.usage_rollups,
            &tables.distinct,
            tenant,
            meter,
            customer,
            prepared.timestamp_ms,
            prepared.id,
            &contribution,
        )? {
            Ok(p) => planned.push(p),
            Err(overflow) => {
                return Ok(Status::Rejected(Rejection {
                    code: "value_out_of_range",
                    detail: overflow.to_string(),
                    field: "properties".into(),
                }))
            }
        }
    }
    let late = invoiced_through_ms.is_some_and(|through| prepared.timestamp_ms < through);
    // 4. Write: the event, its identity, its customer index entry, the rollups.
    *seq += 1;
    let event = Event {
        id: prepared.id,
        source: prepared.source,
        identity: prepared.identity,
        customer,
        customer_external_id: prepared.customer_external_id,
        event_type: prepared.event_type,
        timestamp_ms: prepared.timestamp_ms,
        timestamp_given: prepared.timestamp_given,
        received_at_ms: now_ms,
        properties: prepared.properties_canonical,
        digest: prepared.digest,
        late,
        seq: *seq,
    };
    let dictionary = tables
        .dictionaries
        .for_event(tenant, &event.event_type, &event.properties)?;
    tables.events.insert(
        keys::tenant_id(tenant, event.id).as_slice(),
        super::event_record::encode(&event, dictionary.as_deref()).as_slice(),
    )?;
    let index = match &event.identity {
        Identity::Stable { .. } => &mut tables.stable,
        Identity::Derived { .. } => &mut tables.derived,
    };
    index.insert(identity_key.as_slice(), event.id.to_bytes().as_slice())?;
    tables.by_customer.insert(
        by_customer_key(tenant, customer, event.timestamp_ms, event.id).as_slice(),
        (),
    )?;
    for p in planned {
        tables.rollups.write(&mut tables.distinct, p)?;
    }
    for meter in meters.iter() {
        touched::note(Touch {
            tenant,
            customer,
            what: Touched::Usage { meter: meter.id },
            at_ms: now_ms,
            span_ms: (event.timestamp_ms, event.timestamp_ms),
        });
    }
    Ok(Status::Accepted { id: event.id, late })
}

fn value_rejection(e: &ValueError) -> Rejection {
    Rejection {
        code: match e {
            ValueError::OutOfRange { .. } => "value_out_of_range",
            _ => "invalid_meter_value",
        },
        detail: e.to_string(),
        field: e.field(),
    }
}

/// Rebuilds the stable-identity index from the stored events. Schema 1 keyed it by a hash of
/// the client id; schema 2 keys it by the id itself (see
/// [`crate::identity::stable_event_key`]). Runs once, inside the transaction that records the
/// new schema version, so a crash leaves either the old schema or the new one.
pub fn rebuild_stable_identities(tx: &WriteTxn) -> Result<u64, StoreError> {
    let events = tx.open_table(tables::EVENTS)?;
    let mut index = tx.open_table(tables::EVENT_IDS)?;
    let dictionaries = Dictionaries::new(tx.open_table(tables::PROPERTY_DICTIONARIES)?);
    let mut rebuilt = 0u64;
    for entry in events.iter()? {
        let (key, value) = entry?;
        let tenant = keys::tenant_of(key.value())
            .ok_or_else(|| StoreError::Corrupt("malformed event key".into()))?;
        let event =
            super::event_record::decode(value.value(), &|t: &str| dictionaries.ready(tenant, t))?;
        if let Identity::Stable { id } = &event.identity {
            index.insert(
                stable_key(tenant, &event.source, id).as_slice(),
                event.id.to_bytes().as_slice(),
            )?;
            rebuilt += 1;
        }
    }
    Ok(rebuilt)
}

/// One event of a tenant.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Event>, StoreError> {
    let table = tx.open_table(tables::EVENTS)?;
    let dictionaries = Dictionaries::new(tx.open_table(tables::PROPERTY_DICTIONARIES)?);
    let found = match table.get(keys::tenant_id(tenant, id).as_slice())? {
        Some(stored) => Some(super::event_record::decode(stored.value(), &|t: &str| {
            dictionaries.ready(tenant, t)
        })?),
        None => None,
    };
    Ok(found)
}

/// Filters of an event listing.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this customer.
    pub customer: Option<Id>,
    /// Only this type.
    pub event_type: Option<String>,
    /// Usage time at or after.
    pub from_ms: Option<i64>,
    /// Usage time before.
    pub to_ms: Option<i64>,
    /// Only late events (`Some(true)`) or only events that were not late (`Some(false)`).
    pub late: Option<bool>,
}

/// Most rows one listing request examines; a sparse filter returns a short page with a cursor
/// rather than scanning without bound.
pub const MAX_SCAN_ROWS: usize = 10_000;

/// A page of events in receipt order, the cursor to continue from (if any), and whether more
/// may follow.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    filter: &Filter,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Event>, Option<Id>), StoreError> {
    let table = tx.open_table(tables::EVENTS)?;
    let dictionaries = Dictionaries::new(tx.open_table(tables::PROPERTY_DICTIONARIES)?);
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
    let mut last_seen = None;
    for (scanned, entry) in table
        .range::<&[u8]>(lower.as_slice()..end.as_slice())?
        .enumerate()
    {
        let (_, value) = entry?;
        if out.len() == limit {
            return Ok((out, last_seen));
        }
        if scanned == MAX_SCAN_ROWS {
            return Ok((out, last_seen));
        }
        let event =
            super::event_record::decode(value.value(), &|t: &str| dictionaries.ready(tenant, t))?;
        last_seen = Some(event.id);
        let keep = filter.customer.is_none_or(|c| c == event.customer)
            && filter
                .event_type
                .as_deref()
                .is_none_or(|t| t == event.event_type)
            && filter.from_ms.is_none_or(|f| event.timestamp_ms >= f)
            && filter.to_ms.is_none_or(|t| event.timestamp_ms < t)
            && filter.late.is_none_or(|l| l == event.late);
        if keep {
            out.push(event);
        }
    }
    Ok((out, None))
}
