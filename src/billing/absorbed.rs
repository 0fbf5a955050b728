//! Which invoice billed a late event: derived by reading, so ingest writes nothing for it.
//!
//! A late event (its period already invoiced when it arrived) is billed by a later invoice of
//! its customer: an adjustment line of the next period's invoice, or of an adjustment invoice
//! once the subscription ended (billing step 4), or the usage line of a voided period's
//! re-issue. That invoice was issued after the event was received, counted it (its
//! `events_through` is at or past the event's sequence number) and has a usage or adjustment
//! line for a meter the event feeds whose period holds the event's timestamp. The first such
//! invoice that is not void is the one that absorbed it.

use crate::store::ReadTxn;
use crate::store::ReadableTable;

use super::invoice::{Invoice, InvoiceStatus, LineKind};
use crate::id::Id;
use crate::ingest::event::Event;
use crate::ingest::meter;
use crate::store::keys::{self, TenantId};
use crate::store::{get_record, tables, StoreError};

/// Most invoices of the customer examined per lookup; past it the answer is `None` (a customer
/// with that many invoices issued after one event would have billed it long before).
pub const MAX_INVOICES_EXAMINED: usize = 256;

/// The invoice that billed the late event `event`, or `None` while none has (or the event is
/// not late, or feeds no meter).
pub fn absorbed_by(
    tx: &ReadTxn,
    tenant: TenantId,
    event: &Event,
) -> Result<Option<Invoice>, StoreError> {
    if !event.late {
        return Ok(None);
    }
    let meters = meter::for_event_type(
        &tx.open_table(tables::METERS)?,
        &tx.open_table(tables::METERS_BY_TYPE)?,
        tenant,
        &event.event_type,
    )?;
    if meters.is_empty() {
        return Ok(None);
    }
    let invoices = tx.open_table(tables::INVOICES)?;
    let index = tx.open_table(tables::INVOICES_BY_CUSTOMER)?;
    let prefix = keys::tenant_id(tenant, event.customer);
    let mut lo = prefix.to_vec();
    lo.extend_from_slice(&Id::first_at(event.received_at_ms).to_bytes());
    let mut hi = prefix.to_vec();
    hi.extend_from_slice(&u128::MAX.to_be_bytes());
    for entry in index
        .range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
        .take(MAX_INVOICES_EXAMINED)
    {
        let (key, _) = entry?;
        let id = key
            .value()
            .get(24..40)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Id::from_bytes)
            .ok_or_else(|| StoreError::Corrupt("malformed invoice index key".into()))?;
        let Some(invoice) = get_record::<Invoice, _>(&invoices, keys::tenant_id(tenant, id))?
        else {
            continue;
        };
        if bills(&invoice, event, &meters) {
            return Ok(Some(invoice));
        }
    }
    Ok(None)
}

/// Whether `invoice` counted `event` and bills its usage (see the module doc).
fn bills(invoice: &Invoice, event: &Event, meters: &[meter::Meter]) -> bool {
    invoice.status != InvoiceStatus::Void
        && invoice.events_through >= event.seq
        && invoice.lines.iter().any(|line| {
            matches!(line.kind, LineKind::Adjustment | LineKind::Usage)
                && line.meter.is_some_and(|m| meters.iter().any(|x| x.id == m))
                && line.period_start_ms <= event.timestamp_ms
                && event.timestamp_ms < line.period_end_ms
        })
}
