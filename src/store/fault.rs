//! A storage backend that fails the I/O operations a test arms, to prove what the writer
//! promises when the disk does: an acknowledged write survives, an unacknowledged one is
//! counted at most once however often it is retried, and the writer serves again once the
//! fault clears.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{BackendError, DatabaseError, StorageBackend};

/// The kind of I/O operation a fault is armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Read = 1,
    Write = 2,
    Sync = 3,
    SetLen = 4,
}

/// The armed fault, shared between a test and every backend it opens (a reopened database gets
/// a new backend over the same faults).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The [`Op`] armed, or 0.
    kind: AtomicU8,
    /// Operations of that kind still allowed before one fails.
    countdown: AtomicU64,
    /// Fail every operation of that kind until disarmed, rather than one.
    sticky: AtomicBool,
    /// Operations failed so far.
    injected: AtomicU64,
}

impl Faults {
    /// Fails the operation of kind `op` that comes after `after` more of them, once.
    pub(crate) fn arm(&self, op: Op, after: u64) {
        self.sticky.store(false, Ordering::SeqCst);
        self.countdown.store(after, Ordering::SeqCst);
        self.kind.store(op as u8, Ordering::SeqCst);
    }

    /// Fails every operation of kind `op` until [`Faults::disarm`].
    pub(crate) fn fail_every(&self, op: Op) {
        self.sticky.store(true, Ordering::SeqCst);
        self.countdown.store(0, Ordering::SeqCst);
        self.kind.store(op as u8, Ordering::SeqCst);
    }

    /// No more faults.
    pub(crate) fn disarm(&self) {
        self.kind.store(0, Ordering::SeqCst);
        self.sticky.store(false, Ordering::SeqCst);
    }

    /// How many operations have been failed.
    pub(crate) fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn check(&self, op: Op) -> io::Result<()> {
        if self.kind.load(Ordering::SeqCst) != op as u8 {
            return Ok(());
        }
        let fire = if self.sticky.load(Ordering::SeqCst) {
            true
        } else {
            // Claim the countdown atomically: exactly one operation sees it reach zero.
            match self
                .countdown
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            {
                Ok(_) => false,
                Err(_) => {
                    // Zero already: this one fails, and the fault is spent unless re-armed.
                    self.kind
                        .compare_exchange(op as u8, 0, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                }
            }
        };
        if fire {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other(format!("injected {op:?} fault")));
        }
        Ok(())
    }
}

/// redb's file backend behind [`Faults`].
#[derive(Debug)]
pub(crate) struct FaultyBackend {
    inner: FileBackend,
    faults: Arc<Faults>,
}

impl FaultyBackend {
    /// Opens (creating) the file as redb's `Builder::create` does.
    pub(crate) fn create(path: &Path, faults: Arc<Faults>) -> Result<Self, DatabaseError> {
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Self {
            inner: FileBackend::new(file)?,
            faults,
        })
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.faults.check(Op::Read)?;
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.faults.check(Op::SetLen)?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.faults.check(Op::Sync)?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.faults.check(Op::Write)?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use crate::store::ReadableTable;
    use rust_decimal::Decimal;
    use serde_json::json;

    use super::*;
    use crate::config::IngestConfig;
    use crate::customers::{CreateCustomer, Customer, CustomerError};
    use crate::id::Id;
    use crate::idempotency::{Idempotent, Outcome, StoredResponse};
    use crate::ingest::event::{IngestBatch, Status};
    use crate::ingest::meter::{Aggregation, CreateMeter, Meter};
    use crate::ingest::parse::{parse_body, Context, Format};
    use crate::ingest::usage;
    use crate::store::writer::{self, WriteError, WriterHandle, WriterLimits};
    use crate::store::{tables, Store, TenantId};

    const NOW_MS: i64 = 1_800_000_000_000;
    const TENANT: TenantId = TenantId(1);

    fn batch(ids: &[String]) -> IngestBatch {
        let config = IngestConfig::default();
        let ctx = Context {
            tenant: TENANT,
            now_ms: NOW_MS,
            config: &config,
        };
        let events: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| json!({"id": id, "customer": "c1", "type": "t", "timestamp": crate::clock::rfc3339(NOW_MS - 1_000)}))
            .collect();
        IngestBatch {
            tenant: TENANT,
            events: parse_body(json!({ "events": events }), Format::Native, &ctx)
                .expect("a well-formed batch"),
            now_ms: NOW_MS,
            idempotency_key: None,
        }
    }

    fn render(created: &Result<Customer, CustomerError>) -> StoredResponse {
        StoredResponse {
            status: if created.is_ok() { 201 } else { 409 },
            content_type: "text/plain".into(),
            body: match created {
                Ok(c) => c.id.to_bytes().to_vec(),
                Err(e) => e.to_string().into_bytes(),
            },
        }
    }

    /// An idempotent customer create, as `POST /v1/customers` with an `Idempotency-Key` is.
    fn create(trial: usize) -> Idempotent<CreateCustomer> {
        Idempotent {
            tenant: TENANT,
            key: format!("create-{trial}"),
            fingerprint: [7; 32],
            now_ms: NOW_MS,
            retention_ms: 3_600_000,
            inner: CreateCustomer {
                tenant: TENANT,
                customer: Customer::for_test(&format!("created-{trial}"), NOW_MS),
            },
            render,
        }
    }

    async fn wait_healthy(handle: &WriterHandle) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !handle.is_healthy() {
            assert!(Instant::now() < deadline, "the writer never recovered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Submits each command of `groups` concurrently (so they share a batch) and sorts the ids
    /// into acknowledged and failed.
    async fn submit_all(
        handle: &WriterHandle,
        groups: &[Vec<String>],
    ) -> (Vec<(String, Status)>, Vec<Vec<String>>) {
        let tasks: Vec<_> = groups
            .iter()
            .map(|ids| {
                let handle = handle.clone();
                let command = batch(ids);
                tokio::spawn(async move { handle.submit(command).await })
            })
            .collect();
        let mut acknowledged = Vec::new();
        let mut failed = Vec::new();
        for (ids, task) in groups.iter().zip(tasks) {
            match task.await.expect("the submitting task") {
                Ok(statuses) => {
                    assert_eq!(statuses.len(), ids.len());
                    acknowledged.extend(ids.iter().cloned().zip(statuses));
                }
                Err(WriteError::Unavailable) => failed.push(ids.clone()),
                Err(other) => panic!("unexpected writer error {other:?}"),
            }
        }
        (acknowledged, failed)
    }

    fn customers_of(store: &Store) -> u64 {
        let tx = store.read().expect("read");
        tx.open_table(tables::CUSTOMERS)
            .expect("customers")
            .len()
            .expect("len")
    }

    fn count_of(store: &Store, meter: &Meter, customer: Id) -> (u64, Option<Decimal>) {
        let tx = store.read().expect("read");
        let stored = tx
            .open_table(tables::EVENTS)
            .expect("events")
            .len()
            .expect("len");
        let counted = usage::usage(&tx, TENANT, meter, customer, 0, NOW_MS + 1)
            .expect("usage")
            .value(Aggregation::Count)
            .expect("in range");
        (stored, counted)
    }

    /// Every way a commit's I/O can fail, at every point of it: writes, reads, syncs and file
    /// growth failing once at the n-th operation, and writes failing until the fault clears.
    /// Then every event acknowledged at any point is stored once, every event whose request
    /// failed is stored once after its retry, and re-sending all of them changes nothing, in
    /// the live store and in the file reopened without faults. An idempotent create in each
    /// trial's batch executes once and replays afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_io_loses_no_acknowledged_write_and_retries_take_effect_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("faulty.redb");
        let faults = Arc::new(Faults::default());
        let store =
            Arc::new(Store::open_faulty(&path, 1 << 20, Arc::clone(&faults)).expect("open"));
        let customer = crate::customers::create_for_test(&store, TENANT, "c1", NOW_MS).id;
        let meter = Meter {
            id: Id::generate(),
            key: "calls".into(),
            name: None,
            event_type: "t".into(),
            aggregation: Aggregation::Count,
            value_property: None,
            unique_property: None,
            created_at_ms: NOW_MS,
            backfilled_events: 0,
            backfill_skipped_events: 0,
        };
        store
            .apply_one(CreateMeter {
                tenant: TENANT,
                meter: meter.clone(),
                chunk_events: crate::ingest::backfill::DEFAULT_CHUNK_EVENTS,
            })
            .expect("store")
            .expect("meter");
        let limits = WriterLimits {
            queue_capacity: 64,
            max_batch_size: 64,
            max_batch_wait: Duration::from_millis(10),
        };
        let (handle, join) = writer::spawn(Arc::clone(&store), limits).expect("spawn");

        let mut plan: Vec<(Op, u64)> = Vec::new();
        plan.extend((0..24).map(|n| (Op::Write, n)));
        plan.extend((0..3).map(|n| (Op::Sync, n)));
        plan.extend((0..3).map(|n| (Op::Read, n)));
        plan.extend((0..2).map(|n| (Op::SetLen, n)));
        let mut all_ids: BTreeSet<String> = BTreeSet::new();
        let mut failed_requests = 0usize;
        for (trial, (op, after)) in plan.iter().enumerate() {
            // Enough events per trial that commits grow the file now and then.
            let groups: Vec<Vec<String>> = (0..4)
                .map(|g| (0..25).map(|i| format!("t{trial}-g{g}-e{i}")).collect())
                .collect();
            all_ids.extend(groups.iter().flatten().cloned());
            faults.arm(*op, *after);
            let creating = {
                let handle = handle.clone();
                tokio::spawn(async move { handle.submit(create(trial)).await })
            };
            let (acknowledged, mut failed) = submit_all(&handle, &groups).await;
            let mut created = match creating.await.expect("task") {
                Ok(Outcome::Executed(response)) => Some(response),
                Ok(other) => panic!("trial {trial}: a new key executes, not {other:?}"),
                Err(WriteError::Unavailable) => None,
                Err(other) => panic!("unexpected writer error {other:?}"),
            };
            for (id, status) in &acknowledged {
                assert!(
                    matches!(status, Status::Accepted { .. }),
                    "{id}: a fresh event is accepted, not {status:?}"
                );
            }
            faults.disarm();
            failed_requests += failed.len();
            // Retry what failed, as a client does, until it is acknowledged.
            for attempt in 0.. {
                if failed.is_empty() {
                    break;
                }
                assert!(attempt < 50, "trial {trial}: retries never succeeded");
                wait_healthy(&handle).await;
                let (acknowledged, still) = submit_all(&handle, &failed).await;
                for (id, status) in &acknowledged {
                    // Accepted now, or a duplicate if the failed commit reached the disk anyway.
                    assert!(
                        matches!(status, Status::Accepted { .. } | Status::Duplicate { .. }),
                        "{id}: a retry is accepted or a duplicate, not {status:?}"
                    );
                }
                failed = still;
            }
            for attempt in 0.. {
                if created.is_some() {
                    break;
                }
                assert!(attempt < 50, "trial {trial}: the create never succeeded");
                wait_healthy(&handle).await;
                created = match handle.submit(create(trial)).await {
                    // Executed now, or replayed if the failed commit reached the disk anyway.
                    Ok(Outcome::Executed(r) | Outcome::Replayed(r)) => Some(r),
                    Ok(Outcome::Mismatch) => panic!("trial {trial}: same request, same key"),
                    Err(WriteError::Unavailable) => None,
                    Err(other) => panic!("unexpected writer error {other:?}"),
                };
            }
            assert_eq!(
                created.map(|r| r.status),
                Some(201),
                "trial {trial}: created once"
            );
            assert_eq!(
                customers_of(&store),
                trial as u64 + 2,
                "trial {trial}: one customer per create, however often retried"
            );
            let (stored, counted) = count_of(&store, &meter, customer);
            assert_eq!(
                stored,
                all_ids.len() as u64,
                "trial {trial} ({op:?} after {after})"
            );
            assert_eq!(counted, Some(Decimal::from(all_ids.len() as u64)));
        }
        assert!(faults.injected() > 0, "no fault fired");
        assert!(failed_requests > 0, "no request saw a fault");

        // Writes fail until the fault clears: the writer reports unhealthy, commands queue, and
        // once the disk works again they commit.
        faults.fail_every(Op::Write);
        let doomed = vec![(0..10).map(|i| format!("sticky-a{i}")).collect::<Vec<_>>()];
        all_ids.extend(doomed.iter().flatten().cloned());
        let (_, failed) = submit_all(&handle, &doomed).await;
        assert_eq!(
            failed.len(),
            1,
            "a write that cannot reach the disk is not acknowledged"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while handle.is_healthy() {
            assert!(
                Instant::now() < deadline,
                "the writer never reported the failure"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let queued_ids: Vec<String> = (0..10).map(|i| format!("sticky-b{i}")).collect();
        all_ids.extend(queued_ids.iter().cloned());
        let queued = {
            let handle = handle.clone();
            let command = batch(&queued_ids);
            tokio::spawn(async move { handle.submit(command).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        faults.disarm();
        let queued_statuses = queued
            .await
            .expect("task")
            .expect("committed after recovery");
        assert!(queued_statuses
            .iter()
            .all(|s| matches!(s, Status::Accepted { .. })));
        wait_healthy(&handle).await;
        let (retried, still) = submit_all(&handle, &doomed).await;
        assert!(still.is_empty());
        assert!(retried
            .iter()
            .all(|(_, s)| matches!(s, Status::Accepted { .. } | Status::Duplicate { .. })));

        // Re-sending every event ever sent: all duplicates, nothing counted again.
        let everything: Vec<Vec<String>> = all_ids
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .chunks(500)
            .map(<[String]>::to_vec)
            .collect();
        let (resent, failed) = submit_all(&handle, &everything).await;
        assert_eq!(resent.len(), all_ids.len());
        assert!(failed.is_empty());
        for (id, status) in &resent {
            assert!(
                matches!(status, Status::Duplicate { .. }),
                "{id}: {status:?}"
            );
        }
        for trial in 0..plan.len() {
            let replayed = handle.submit(create(trial)).await.expect("committed");
            assert!(
                matches!(&replayed, Outcome::Replayed(r) if r.status == 201),
                "trial {trial}: {replayed:?}"
            );
        }
        drop(handle);
        join.join().expect("writer exits");
        let expected = (
            all_ids.len() as u64,
            Some(Decimal::from(all_ids.len() as u64)),
        );
        assert_eq!(count_of(&store, &meter, customer), expected);

        // The file, reopened plainly (as after a restart), holds the same.
        drop(store);
        let reopened = Store::open(&path, 1 << 20).expect("reopen");
        assert_eq!(count_of(&reopened, &meter, customer), expected);
        let tx = reopened.read().expect("read");
        let books = crate::ledger::verify::verify(&tx, None, &mut |_, _| {}).expect("verify");
        assert!(books.violation.is_none(), "{:?}", books.violation);
    }

    fn anomalies_of(store: &Store) -> u64 {
        let tx = store.read().expect("read");
        tx.open_table(tables::EVENT_ANOMALIES)
            .expect("anomalies")
            .len()
            .expect("len")
    }

    /// A batch whose commit cannot reach the disk records none of its duplicates: the anomaly
    /// rows share the batch's transaction. Sent again once the disk works, each duplicate is
    /// recorded once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_records_no_anomaly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("faulty.redb");
        let faults = Arc::new(Faults::default());
        let store =
            Arc::new(Store::open_faulty(&path, 1 << 20, Arc::clone(&faults)).expect("open"));
        crate::customers::create_for_test(&store, TENANT, "c1", NOW_MS);
        let first = store.apply_one(batch(&["a".to_string()])).expect("ingest");
        assert!(matches!(first[..], [Status::Accepted { .. }]));
        let limits = WriterLimits {
            queue_capacity: 8,
            max_batch_size: 8,
            max_batch_wait: Duration::from_millis(1),
        };
        let (handle, join) = writer::spawn(Arc::clone(&store), limits).expect("spawn");
        let again = vec![vec!["a".to_string(), "b".to_string(), "a".to_string()]];
        faults.fail_every(Op::Write);
        let (acknowledged, failed) = submit_all(&handle, &again).await;
        assert!(acknowledged.is_empty(), "{acknowledged:?}");
        assert_eq!(failed.len(), 1);
        // The waiters are answered before the writer marks itself unhealthy and reopens: wait
        // for that, or the read below can meet the database that failed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while handle.is_healthy() {
            assert!(
                Instant::now() < deadline,
                "the writer never reported the failure"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        faults.disarm();
        wait_healthy(&handle).await;
        assert_eq!(anomalies_of(&store), 0, "the failed batch recorded nothing");
        let (acknowledged, failed) = submit_all(&handle, &again).await;
        assert!(failed.is_empty());
        let statuses: Vec<&Status> = acknowledged.iter().map(|(_, s)| s).collect();
        assert!(
            matches!(
                statuses[..],
                [
                    Status::Duplicate { .. },
                    Status::Accepted { .. },
                    Status::Duplicate { .. }
                ]
            ),
            "{statuses:?}"
        );
        assert_eq!(anomalies_of(&store), 2, "one row per duplicate answered");
        drop(handle);
        join.join().expect("writer exits");
    }
}
