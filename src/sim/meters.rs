//! Meters created after events in the simulation: the backfill runs in chunks of
//! [`BACKFILL_CHUNK_EVENTS`] (one chunk per job step), interleaved with ingest, billing, crashes
//! and the other node, and the invariant that a meter counts each stored event of its type
//! exactly once: never more while its backfill runs, exactly once it is complete.

use super::world::{Violation, World};
use crate::id::Id;
use crate::ingest::backfill;
use crate::ingest::meter::{self, Aggregation, CreateMeter, Meter};
use crate::ingest::usage;
use crate::store::tables;

/// Events examined per backfill transaction in the simulation: small, so a backfill spans many
/// steps.
pub const BACKFILL_CHUNK_EVENTS: u64 = 3;
/// Most meters the simulation adds.
const MAX_LATE_METERS: usize = 4;

/// Creates a count meter on the events' type, over whatever is stored by now.
pub fn step(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let n = world.model.late_meters.len();
    if n >= MAX_LATE_METERS {
        note.push_str("enough meters");
        return Ok(());
    }
    let now_ms = world.now();
    let created = world.submit(CreateMeter {
        tenant: world.tenant,
        meter: Meter {
            id: Id::generate_at(now_ms),
            key: format!("late{n}"),
            name: None,
            event_type: "call".into(),
            aggregation: Aggregation::Count,
            value_property: None,
            unique_property: None,
            created_at_ms: now_ms,
            backfilled_events: 0,
            backfill_skipped_events: 0,
        },
        chunk_events: BACKFILL_CHUNK_EVENTS,
    })?;
    let created = created.map_err(|e| format!("creating a new meter was refused: {e}"))?;
    note.push_str(&format!(
        "meter {} counted {} stored events{}",
        created.meter.key,
        created.meter.backfilled_events,
        if created.backfilling {
            ", the rest in the background"
        } else {
            ""
        }
    ));
    world.model.late_meters.push(created.meter.id);
    Ok(())
}

/// Every customer's usage of every added meter, from its rollups, against the events stored:
/// equal once the backfill is complete, never above while it runs.
pub fn check(world: &World) -> Result<(), Violation> {
    let tx = world.read()?;
    let err = |e: crate::store::StoreError| e.to_string();
    let by_customer = tx.open_table(tables::EVENTS_BY_CUSTOMER).map_err(err)?;
    let events = crate::ingest::event_record::EventTable::new(
        tx.open_table(tables::EVENTS).map_err(err)?,
        tx.open_table(tables::PROPERTY_DICTIONARIES).map_err(err)?,
    );
    for id in &world.model.late_meters {
        let m = meter::get(&tx, world.tenant, *id)
            .map_err(err)?
            .ok_or("an acknowledged meter is missing")?;
        let running = backfill::is_running(&tx, world.tenant, *id).map_err(err)?;
        for customer in &world.model.customers {
            // Whole hours: every event is read from rollups, none at an edge.
            let (from_ms, to_ms) = (0, usage::hour_start(world.now() + 400 * 86_400_000));
            let rolled = usage::usage(&tx, world.tenant, &m, *customer, from_ms, to_ms)
                .map_err(err)?
                .value(Aggregation::Count)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let (stored, _) = usage::aggregate_events(
                &by_customer,
                &events,
                world.tenant,
                &m,
                *customer,
                from_ms,
                to_ms,
                u64::MAX,
            )
            .map_err(err)?;
            let stored = stored
                .value(Aggregation::Count)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            if rolled > stored || (!running && rolled != stored) {
                return Err(format!(
                    "meter {} ({}) counts {rolled} events of a customer that has {stored} stored",
                    m.key,
                    if running {
                        "backfill running"
                    } else {
                        "backfill complete"
                    }
                ));
            }
        }
    }
    Ok(())
}
