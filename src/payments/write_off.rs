//! Writing off what dunning could not collect, and reversing that when the money comes after
//! all.

use crate::store::WriteTxn;

use crate::billing::invoice::Invoice;
use crate::id::Id;
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::ledger::journal::{self, Draft, Links, Posting};
use crate::store::keys::TenantId;
use crate::store::StoreError;

/// Which way a write-off entry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteOff {
    /// Dunning gave up: bad debt takes the receivable.
    Post,
    /// A late success: the receivable comes back from bad debt.
    Reverse,
}

/// Posts (or reverses) the write-off of what an uncollectible invoice owes: the `bad_debt`
/// expense takes the customer's receivable, so the receivable shows only what can still be
/// collected and the books show what was lost. Recorded on the invoice's entries.
pub(super) fn write_off(
    tx: &WriteTxn,
    tenant: TenantId,
    invoice: &mut Invoice,
    now_ms: i64,
    origin: &str,
    direction: WriteOff,
) -> Result<(), StoreError> {
    let amount_minor = invoice.amount_due_minor;
    if amount_minor <= 0 {
        return Ok(());
    }
    let (sign, kind, reason) = match direction {
        WriteOff::Post => (1, "invoice_write_off", "written off as uncollectible"),
        WriteOff::Reverse => (
            -1,
            "invoice_write_off_reversal",
            "collected after its write-off",
        ),
    };
    let entry_id = Id::generate_at(now_ms);
    let draft = Draft {
        id: entry_id,
        kind: kind.into(),
        reason: format!(
            "invoice {} {reason}",
            invoice.id.display(crate::billing::invoice::PREFIX)
        ),
        links: Links {
            customer: Some(invoice.customer),
            invoice: Some(invoice.id),
            ..Links::default()
        },
        origin: origin.to_string(),
        postings: vec![
            Posting {
                account: AccountRef::System(SystemAccount::BadDebt),
                currency: invoice.currency.clone(),
                amount_minor: sign * amount_minor,
            },
            Posting {
                account: AccountRef::Receivable {
                    customer: invoice.customer,
                },
                currency: invoice.currency.clone(),
                amount_minor: -sign * amount_minor,
            },
        ],
    };
    if let Err(e) = journal::post(tx, tenant, now_ms, draft)? {
        return Err(StoreError::Corrupt(format!("write-off entry refused: {e}")));
    }
    invoice.entries.push(entry_id);
    Ok(())
}
