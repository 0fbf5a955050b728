//! Retention: notifications older than `notifications.retention_days` are deleted with their
//! delivery rows and their finished delivery jobs, once every delivery is finished.
//!
//! A notification's key is (tenant, id) and its id begins with the millisecond it was recorded
//! in, so each tenant's notifications are already in time order: a pass walks each tenant's
//! rows below the cutoff, examining at most `limit` of them, and carries a cursor to the next
//! pass, so notifications that must stay (a delivery still live) never stall the ones after
//! them. A notification is deleted only when no delivery of it is live and each is delivered,
//! failed or meant for a destination that no longer exists. Its effect identity stays, so the
//! effect still never records a second notification; dead letters stay too (an operator
//! replays or leaves them; a replayed delivery of a deleted notification finds nothing to send).

use crate::store::{ReadableTable, WriteTxn};

use super::destinations;
use super::outbox::{self, Delivery, DeliveryStatus, Notification};
use crate::id::Id;
use crate::jobs;
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, tables, StoreError};

/// The keys a pass examines, and the cursor after them.
type Walk = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// One bounded purge pass over the notifications recorded before `cutoff_ms`.
#[derive(Clone)]
pub struct PurgeNotifications {
    /// Notifications recorded before this instant may go.
    pub cutoff_ms: i64,
    /// Most notifications examined in the pass.
    pub limit: usize,
    /// Continue after this key (from the previous pass's `next`); `None` starts over.
    pub after: Option<Vec<u8>>,
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgePass {
    /// Notifications examined (at most the pass's `limit`).
    pub examined: usize,
    /// Notifications deleted.
    pub purged: usize,
    /// Where the next pass continues; `None` once every old notification was examined.
    pub next: Option<Vec<u8>>,
}

impl Command for PurgeNotifications {
    type Output = PurgePass;

    fn apply(self, tx: &WriteTxn) -> Result<PurgePass, StoreError> {
        let (candidates, next) = self.candidates(tx)?;
        let mut purged = 0;
        for key in &candidates {
            if purge_if_finished(tx, key, self.cutoff_ms)? {
                purged += 1;
            }
        }
        Ok(PurgePass {
            examined: candidates.len(),
            purged,
            next,
        })
    }
}

impl PurgeNotifications {
    /// The keys of up to `limit` notifications older than the cutoff after the cursor, tenant
    /// by tenant, and the cursor to continue from.
    fn candidates(&self, tx: &WriteTxn) -> Result<Walk, StoreError> {
        let table = tx.open_table(tables::NOTIFICATIONS)?;
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut from = match &self.after {
            Some(after) => {
                let mut k = after.clone();
                k.push(0);
                k
            }
            None => Vec::new(),
        };
        loop {
            let first = match table.range::<&[u8]>(from.as_slice()..)?.next() {
                Some(entry) => entry?.0.value().to_vec(),
                None => return Ok((out, None)),
            };
            let tenant = keys::tenant_of(&first)
                .ok_or_else(|| StoreError::Corrupt("malformed notification key".into()))?;
            let upper = keys::tenant_id(tenant, first_id_at(self.cutoff_ms));
            for entry in table.range::<&[u8]>(first.as_slice()..upper.as_slice())? {
                if out.len() == self.limit {
                    let last = out.last().cloned();
                    return Ok((out, last));
                }
                out.push(entry?.0.value().to_vec());
            }
            match tenant.0.checked_add(1) {
                Some(next) => from = next.to_be_bytes().to_vec(),
                None => return Ok((out, None)),
            }
        }
    }
}

/// The smallest id of the millisecond `ms`: every id recorded before it sorts below.
fn first_id_at(ms: i64) -> Id {
    let ms = u128::from(u64::try_from(ms.max(0)).unwrap_or(0) & 0xFFFF_FFFF_FFFF);
    Id(ms << 80)
}

/// Deletes the notification at `key`, its delivery rows and their done jobs, when it is older
/// than the cutoff and every delivery is finished; returns whether it did.
fn purge_if_finished(tx: &WriteTxn, key: &[u8], cutoff_ms: i64) -> Result<bool, StoreError> {
    let found = {
        let table = tx.open_table(tables::NOTIFICATIONS)?;
        let value = table.get(key)?;
        match value {
            Some(v) => Some(codec::decode::<Notification>(v.value())?),
            None => None,
        }
    };
    let Some(n) = found else {
        return Ok(false);
    };
    if n.created_at_ms >= cutoff_ms {
        return Ok(false);
    }
    let tenant = TenantId(n.tenant);
    let rows = outbox::rows_of(&tx.open_table(tables::DELIVERIES)?, tenant, n.id)?;
    for row in &rows {
        if !finished(tx, tenant, row)? {
            return Ok(false);
        }
    }
    let mut deliveries = tx.open_table(tables::DELIVERIES)?;
    for row in &rows {
        deliveries.remove(outbox::delivery_key(tenant, n.id, row.destination).as_slice())?;
        if let Some(job) = row.job {
            jobs::delete_done(tx, job)?;
        }
    }
    tx.open_table(tables::NOTIFICATIONS)?.remove(key)?;
    Ok(true)
}

/// Whether a delivery is over for good: no job of it will run, and it was delivered, failed,
/// or its destination is gone.
fn finished(tx: &WriteTxn, tenant: TenantId, row: &Delivery) -> Result<bool, StoreError> {
    if destinations::is_live(tx, row)? {
        return Ok(false);
    }
    Ok(row.status != DeliveryStatus::Pending
        || destinations::load(tx, tenant, row.destination)?.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{Job, JobStatus};
    use crate::notifications::destination::{self, Destination, DestinationStatus};
    use crate::notifications::outbox::Subject;
    use crate::store::{get_record, put_record, Store};

    const DAY_MS: i64 = 86_400_000;

    /// How a seeded notification's one delivery ends (`None`: it has no delivery).
    #[derive(Clone, Copy)]
    enum Fate {
        Nothing,
        Delivered,
        DeadLetter,
        Live,
    }

    #[derive(Clone)]
    struct Seed {
        tenant: TenantId,
        destination: Id,
        at_ms: i64,
        fate: Fate,
    }

    impl Command for Seed {
        type Output = (Id, Option<Id>);

        fn apply(self, tx: &WriteTxn) -> Result<(Id, Option<Id>), StoreError> {
            let id = Id(first_id_at(self.at_ms).0 | u128::from(rand_tail()));
            let n = Notification {
                id,
                tenant: self.tenant.0,
                event_type: "customer.created".into(),
                sequence: 1,
                created_at_ms: self.at_ms,
                customer: None,
                subject: Subject::of("customer", id, &"a customer")?,
            };
            put_record(
                &mut tx.open_table(tables::NOTIFICATIONS)?,
                &keys::tenant_id(self.tenant, id),
                &n,
            )?;
            let (status, job_status) = match self.fate {
                Fate::Nothing => return Ok((id, None)),
                Fate::Delivered => (DeliveryStatus::Delivered, JobStatus::Done),
                Fate::DeadLetter => (DeliveryStatus::Failed, JobStatus::Dead),
                Fate::Live => (DeliveryStatus::Pending, JobStatus::Pending),
            };
            outbox::start_delivery(tx, self.tenant, id, self.destination, self.at_ms)?;
            let key = outbox::delivery_key(self.tenant, id, self.destination);
            let mut rows = tx.open_table(tables::DELIVERIES)?;
            let mut row = outbox::load_delivery(&rows, &key)?.expect("row");
            row.status = status;
            put_record(&mut rows, &key, &row)?;
            let job_id = row.job.expect("job");
            let mut jobs_table = tx.open_table(tables::JOBS)?;
            let mut job: Job = get_record(&jobs_table, job_id.to_bytes())?.expect("job");
            job.status = job_status;
            put_record(&mut jobs_table, &job_id.to_bytes(), &job)?;
            Ok((id, Some(job_id)))
        }
    }

    fn rand_tail() -> u64 {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("random");
        u64::from_le_bytes(b)
    }

    #[derive(Clone)]
    struct SaveDestination(Destination);

    impl Command for SaveDestination {
        type Output = ();

        fn apply(self, tx: &WriteTxn) -> Result<(), StoreError> {
            destination::save(tx, &self.0)
        }
    }

    fn destination_of(tenant: TenantId, now_ms: i64) -> Destination {
        Destination {
            id: Id::generate_at(now_ms),
            tenant: tenant.0,
            url: "https://example.com/hook".into(),
            event_types: vec!["*".into()],
            description: None,
            status: DestinationStatus::Enabled,
            secrets: Vec::new(),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            failing_since_ms: None,
        }
    }

    #[test]
    fn old_finished_notifications_go_in_bounded_passes_and_live_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("r.redb"), 1 << 22).expect("open");
        let now = 1_800_000_000_000;
        let old = now - 40 * DAY_MS;
        let (a, b) = (TenantId(7), TenantId(8));
        let mut dest = std::collections::HashMap::new();
        for t in [a, b] {
            let d = destination_of(t, old);
            dest.insert(t.0, d.id);
            store.apply_one(SaveDestination(d)).expect("destination");
        }
        let seed = |tenant: TenantId, at_ms: i64, fate: Fate| {
            store
                .apply_one(Seed {
                    tenant,
                    destination: dest[&tenant.0],
                    at_ms,
                    fate,
                })
                .expect("seed")
        };
        // Live first: it must not stall the finished ones behind it.
        let live = seed(a, old, Fate::Live);
        let live_later = seed(a, old + 1, Fate::Live);
        let nothing = seed(a, old + 2, Fate::Nothing);
        let delivered = seed(a, old + 3, Fate::Delivered);
        let dead = seed(a, old + 4, Fate::DeadLetter);
        let recent = seed(a, now - DAY_MS, Fate::Delivered);
        let other_tenant = seed(b, old, Fate::Delivered);

        let cutoff_ms = now - 30 * DAY_MS;
        let (mut after, mut passes, mut purged) = (None, 0, 0);
        loop {
            let pass = store
                .apply_one(PurgeNotifications {
                    cutoff_ms,
                    limit: 2,
                    after: after.take(),
                })
                .expect("pass");
            assert!(pass.examined <= 2, "{pass:?}");
            passes += 1;
            purged += pass.purged;
            match pass.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(purged, 4);
        assert!(passes >= 3, "six old notifications, two per pass: {passes}");

        let tx = store.read().expect("read");
        let exists = |t: TenantId, id: Id| outbox::get(&tx, t, id).expect("get").is_some();
        let job = |id: Id| jobs::get(&tx, id).expect("job");
        for (t, (id, _)) in [(a, nothing), (a, delivered), (a, dead), (b, other_tenant)] {
            assert!(!exists(t, id), "old and finished: purged");
            assert!(outbox::deliveries(&tx, t, id).expect("rows").is_empty());
        }
        for (id, _) in [live, live_later, recent] {
            assert!(exists(a, id), "live or recent: kept");
            assert_eq!(outbox::deliveries(&tx, a, id).expect("rows").len(), 1);
        }
        assert!(job(delivered.1.expect("job")).is_none(), "a done job goes");
        assert!(job(other_tenant.1.expect("job")).is_none());
        let dead_job = job(dead.1.expect("job")).expect("a dead letter stays");
        assert_eq!(dead_job.status, JobStatus::Dead);
        assert!(job(live.1.expect("job")).is_some());
        drop(tx);

        // A new walk examines only what is left past the cutoff: the live ones, still kept.
        let pass = store
            .apply_one(PurgeNotifications {
                cutoff_ms,
                limit: 100,
                after: None,
            })
            .expect("pass");
        assert_eq!((pass.examined, pass.purged, pass.next), (2, 0, None));
    }
}
