//! Ingest anomalies: the duplicates and conflicts ingest answered, kept for a while.
//!
//! A duplicate or conflicting event is answered with the original's id and writes no event;
//! without a record of it, nobody could later tell that a client sent something twice, or sent
//! a different payload under an id already used. Each such answer writes one row, in the
//! ingest command's own transaction (so a batch that fails records nothing, and an idempotent
//! replay, which never reaches the command, records nothing either). Accepted events cost
//! nothing here.
//!
//! A row is keyed by (tenant, anomaly id). The anomaly id is the id the event would have had if
//! it had been accepted: its first 48 bits are the receipt millisecond and the rest a sequence,
//! so rows sort by receipt time and the purge drops a prefix. Rows are kept as long as
//! idempotency keys (`idempotency.retention_secs`), then purged in bounded passes.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "eva";

/// What the received event was, next to its original.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnomalyKind {
    /// Same identity, same payload: a retry or a double send.
    Duplicate,
    /// Same identity, different payload: the first stands, this one was not counted.
    Conflict,
}

impl AnomalyKind {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::Duplicate => "duplicate",
            AnomalyKind::Conflict => "conflict",
        }
    }

    /// Parses the API name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "duplicate" => Some(AnomalyKind::Duplicate),
            "conflict" => Some(AnomalyKind::Conflict),
            _ => None,
        }
    }
}

/// One duplicate or conflicting event as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Receipt-ordered id (the id the event would have had).
    pub id: Id,
    /// Duplicate or conflict.
    pub kind: AnomalyKind,
    /// The stored event it matched.
    pub original: Id,
    /// The original's customer, so a customer's anomalies can be listed.
    pub customer: Id,
    /// The received event's identity source.
    pub source: String,
    /// The received event's own id (none for a derived identity).
    pub client_id: Option<String>,
    /// The customer's external id as the received event named it.
    pub customer_external_id: String,
    /// The received event's type.
    pub event_type: String,
    /// The received event's usage time.
    pub timestamp_ms: i64,
    /// When it was received.
    pub received_at_ms: i64,
    /// Conflicts only: the received properties (canonical JSON, at most 32 KiB).
    pub properties: Option<String>,
    /// Conflicts only: the received payload's digest.
    pub digest: Option<[u8; 32]>,
    /// The request's `Idempotency-Key`, if it had one.
    pub idempotency_key: Option<String>,
}

/// Writes one anomaly row.
pub fn record(
    table: &mut crate::store::Table<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    anomaly: &Anomaly,
) -> Result<(), StoreError> {
    crate::store::put_record(table, &keys::tenant_id(tenant, anomaly.id), anomaly)
}

/// Filters of an anomaly listing.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this kind.
    pub kind: Option<AnomalyKind>,
    /// Only anomalies whose original belongs to this customer.
    pub customer: Option<Id>,
    /// Only anomalies of this original event.
    pub original: Option<Id>,
}

impl Filter {
    fn keeps(&self, a: &Anomaly) -> bool {
        self.kind.is_none_or(|k| k == a.kind)
            && self.customer.is_none_or(|c| c == a.customer)
            && self.original.is_none_or(|o| o == a.original)
    }
}

/// Most rows one listing request examines; a sparse filter returns a short page with a cursor
/// rather than scanning without bound.
pub const MAX_SCAN_ROWS: usize = 10_000;

/// A page of anomalies, newest first, and the cursor to continue from (the last row examined)
/// when more may follow.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    filter: &Filter,
    before: Option<Id>,
    limit: usize,
) -> Result<(Vec<Anomaly>, Option<Id>), StoreError> {
    let table = tx.open_table(tables::EVENT_ANOMALIES)?;
    let (start, end) = keys::tenant_range(tenant);
    let upper = match before {
        Some(id) => keys::tenant_id(tenant, id).to_vec(),
        None => end,
    };
    let mut out = Vec::new();
    let mut last_seen = None;
    for (scanned, entry) in table
        .range::<&[u8]>(start.as_slice()..upper.as_slice())?
        .rev()
        .enumerate()
    {
        if out.len() == limit || scanned == MAX_SCAN_ROWS {
            return Ok((out, last_seen));
        }
        let (_, value) = entry?;
        let anomaly: Anomaly = codec::decode(value.value())?;
        last_seen = Some(anomaly.id);
        if filter.keeps(&anomaly) {
            out.push(anomaly);
        }
    }
    Ok((out, None))
}

/// Deletes up to `limit` anomalies received before `cutoff_ms`, tenant by tenant; returns how
/// many. Bounded so one pass never holds the writer for long; the purge task repeats until a
/// pass deletes fewer than `limit`.
#[derive(Clone)]
pub struct PurgeAnomalies {
    /// Anomalies received before this instant go.
    pub cutoff_ms: i64,
    /// Most rows per pass.
    pub limit: usize,
}

impl Command for PurgeAnomalies {
    type Output = usize;

    fn apply(self, tx: &WriteTxn) -> Result<usize, StoreError> {
        let mut table = tx.open_table(tables::EVENT_ANOMALIES)?;
        let mut due: Vec<Vec<u8>> = Vec::new();
        let cutoff = Id::first_at(self.cutoff_ms);
        // Keys are (tenant, id): take each tenant's rows below the cutoff, then jump to the
        // next tenant.
        let mut next_tenant: Option<u64> = Some(0);
        while let Some(tenant) = next_tenant {
            if due.len() >= self.limit {
                break;
            }
            let from = tenant.to_be_bytes();
            let first = match table.range::<&[u8]>(from.as_slice()..)?.next() {
                Some(entry) => entry?.0.value().to_vec(),
                None => break,
            };
            let found = keys::tenant_of(&first)
                .ok_or_else(|| StoreError::Corrupt("malformed anomaly key".into()))?;
            let upper = keys::tenant_id(found, cutoff);
            for entry in table
                .range::<&[u8]>(first.as_slice()..upper.as_slice())?
                .take(self.limit - due.len())
            {
                due.push(entry?.0.value().to_vec());
            }
            next_tenant = found.0.checked_add(1);
        }
        for key in &due {
            table.remove(key.as_slice())?;
        }
        Ok(due.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// Ids generated for the past would come after the last one issued: build them.
    fn anomaly(received_at_ms: i64, n: u128) -> Anomaly {
        Anomaly {
            id: Id(Id::first_at(received_at_ms).0 + n),
            kind: AnomalyKind::Duplicate,
            original: Id(n),
            customer: Id(n),
            source: "default".into(),
            client_id: Some("a".into()),
            customer_external_id: "c1".into(),
            event_type: "t".into(),
            timestamp_ms: received_at_ms,
            received_at_ms,
            properties: None,
            digest: None,
            idempotency_key: None,
        }
    }

    #[derive(Clone)]
    struct Seed(Vec<(TenantId, Anomaly)>);

    impl Command for Seed {
        type Output = ();
        fn apply(self, tx: &WriteTxn) -> Result<(), StoreError> {
            let mut table = tx.open_table(tables::EVENT_ANOMALIES)?;
            for (tenant, a) in &self.0 {
                record(&mut table, *tenant, a)?;
            }
            Ok(())
        }
    }

    /// The purge takes only rows received before the cutoff, of every tenant, in passes of at
    /// most `limit`.
    #[test]
    fn purge_takes_old_rows_of_every_tenant_in_bounded_passes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("a.redb"), 1 << 22).expect("open");
        let mut rows = Vec::new();
        for tenant in [TenantId(1), TenantId(2)] {
            for (n, ms) in [1_000, 2_000, 3_000, 10_000].into_iter().enumerate() {
                rows.push((tenant, anomaly(ms, n as u128)));
            }
        }
        store.apply_one(Seed(rows)).expect("seed");
        let pass = |limit| PurgeAnomalies {
            cutoff_ms: 5_000,
            limit,
        };
        assert_eq!(store.apply_one(pass(4)).expect("purge"), 4);
        assert_eq!(store.apply_one(pass(4)).expect("purge"), 2);
        assert_eq!(store.apply_one(pass(4)).expect("purge"), 0);
        let tx = store.read().expect("read");
        for tenant in [TenantId(1), TenantId(2)] {
            let (left, more) = list(&tx, tenant, &Filter::default(), None, 10).expect("list");
            assert_eq!(more, None);
            assert_eq!(
                left.iter().map(|a| a.received_at_ms).collect::<Vec<_>>(),
                vec![10_000]
            );
        }
    }
}
