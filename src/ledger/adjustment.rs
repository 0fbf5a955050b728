//! Operator adjustments: balanced entries posted by hand. A correction is always a new entry;
//! nothing edits history.

use crate::store::{ReadableTable, WriteTxn};

use super::account::AccountRef;
use super::journal::{self, Draft, JournalEntry, PostError};
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{tables, StoreError};

/// Why an adjustment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdjustmentError {
    /// The ledger refused it (unbalanced, bad amounts).
    #[error(transparent)]
    Ledger(#[from] PostError),
    /// A posting names a customer that does not exist.
    #[error("posting {index}: no customer {customer}")]
    UnknownCustomer {
        /// Which posting.
        index: usize,
        /// The customer id.
        customer: String,
    },
    /// Grant accounts move only through grant operations, so grants and their ledger agree.
    #[error("posting {index}: credit grant accounts can only be moved by credit grant operations")]
    GrantAccount {
        /// Which posting.
        index: usize,
    },
}

/// Posts an operator adjustment.
#[derive(Clone)]
pub struct PostAdjustment {
    /// Owner.
    pub tenant: TenantId,
    /// The entry (kind `adjustment`).
    pub draft: Draft,
    /// Now.
    pub now_ms: i64,
}

impl Command for PostAdjustment {
    type Output = Result<JournalEntry, AdjustmentError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        {
            let customers = tx.open_table(tables::CUSTOMERS)?;
            for (index, p) in self.draft.postings.iter().enumerate() {
                if matches!(p.account, AccountRef::Grant { .. }) {
                    return Ok(Err(AdjustmentError::GrantAccount { index }));
                }
                if let Some(customer) = p.account.customer() {
                    if customers
                        .get(keys::tenant_id(self.tenant, customer).as_slice())?
                        .is_none()
                    {
                        return Ok(Err(AdjustmentError::UnknownCustomer {
                            index,
                            customer: customer.display(crate::customers::PREFIX),
                        }));
                    }
                }
            }
        }
        Ok(journal::post(tx, self.tenant, self.now_ms, self.draft)?.map_err(Into::into))
    }
}
