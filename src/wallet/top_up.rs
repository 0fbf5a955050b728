//! Creating a top-up: the one function the API and auto-recharge share.
//!
//! A paid top-up is an invoice (see `billing::top_up`) and a payment attempt with its job, in
//! the caller's transaction; the grant waits for the payment's success (`settle`). A free
//! top-up is a promotional grant at once, with no invoice.

use crate::store::WriteTxn;

use super::record::{self, TopUp, TopUpStatus, Trigger};
use super::settle;
use crate::billing::top_up::TopUpInvoice;
use crate::id::Id;
use crate::ledger::grant::{Category, Funding};
use crate::ledger::journal::MAX_AMOUNT_MINOR;
use crate::store::keys::TenantId;
use crate::store::writer::Command;
use crate::store::StoreError;

/// The largest top-up, in minor units (the ledger's largest posting).
pub const MAX_TOP_UP_MINOR: i64 = MAX_AMOUNT_MINOR;

/// What a new top-up asks for.
#[derive(Debug, Clone)]
pub struct NewTopUp {
    /// Owner.
    pub tenant: TenantId,
    /// Whose wallet.
    pub customer: Id,
    /// ISO 4217; `None` means the customer's.
    pub currency: Option<String>,
    /// Positive minor units, at most [`MAX_TOP_UP_MINOR`].
    pub amount_minor: i64,
    /// Bought through an invoice (`true`) or given at once (`false`).
    pub paid: bool,
    /// The grant's category: `paid` for a paid top-up, `promotional` for a free one.
    pub category: Category,
    /// The grant's expiry.
    pub expires_at_ms: Option<i64>,
    /// The payment method the attempt charges (the provider's default when `None`).
    pub payment_method: Option<String>,
    /// The provider that collects it.
    pub psp: String,
    /// Who asked.
    pub trigger: Trigger,
    /// Now.
    pub now_ms: i64,
    /// The intent.
    pub origin: String,
}

/// Why a top-up was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopUpError {
    /// The customer does not exist.
    #[error("no customer with id {0}")]
    UnknownCustomer(String),
    /// A currency other than the customer's.
    #[error("currency {got} is not the customer's currency {expected}")]
    CurrencyMismatch {
        /// The customer's.
        expected: String,
        /// The one asked for.
        got: String,
    },
    /// The amount is not a positive postable amount.
    #[error("amount_minor must be between 1 and {MAX_TOP_UP_MINOR}")]
    Amount,
    /// The expiry is not after the instant of the request. Checked inside the command, so a
    /// retry after that instant finds its stored reply first.
    #[error("expires_at must be in the future")]
    ExpiresAt,
    /// The invoice or the grant was refused by the ledger.
    #[error("{0}")]
    Refused(String),
}

/// Creates a top-up in the caller's transaction (see the module doc). Every check comes
/// before the first write.
pub fn create(tx: &WriteTxn, new: &NewTopUp) -> Result<Result<TopUp, TopUpError>, StoreError> {
    if new.amount_minor <= 0 || new.amount_minor > MAX_TOP_UP_MINOR {
        return Ok(Err(TopUpError::Amount));
    }
    if new.expires_at_ms.is_some_and(|e| e <= new.now_ms) {
        return Ok(Err(TopUpError::ExpiresAt));
    }
    let Some(customer) = crate::customers::load_in_write(tx, new.tenant, new.customer)? else {
        return Ok(Err(TopUpError::UnknownCustomer(
            new.customer.display(crate::customers::PREFIX),
        )));
    };
    let currency = new
        .currency
        .clone()
        .unwrap_or_else(|| customer.currency.clone());
    if currency != customer.currency {
        return Ok(Err(TopUpError::CurrencyMismatch {
            expected: customer.currency,
            got: currency,
        }));
    }
    let mut top_up = TopUp {
        id: Id::generate_at(new.now_ms),
        customer: new.customer,
        currency,
        amount_minor: new.amount_minor,
        paid: new.paid,
        category: new.category,
        expires_at_ms: new.expires_at_ms,
        status: TopUpStatus::Pending,
        trigger: new.trigger,
        invoice: None,
        payment: None,
        grant: None,
        failure: None,
        created_at_ms: new.now_ms,
        settled_at_ms: None,
    };
    if !new.paid {
        let funding = match new.category {
            Category::Paid => Funding::Cash,
            Category::Promotional => Funding::PromotionalExpense,
        };
        return Ok(
            match settle::grant(
                tx,
                new.tenant,
                &mut top_up,
                funding,
                new.now_ms,
                &new.origin,
            )? {
                Ok(()) => Ok(top_up),
                Err(e) => Err(TopUpError::Refused(e.to_string())),
            },
        );
    }
    let spec = TopUpInvoice {
        top_up: top_up.id,
        customer: top_up.customer,
        currency: &top_up.currency,
        amount_minor: top_up.amount_minor,
        now_ms: new.now_ms,
        origin: &new.origin,
    };
    let invoice = match crate::billing::top_up::issue(tx, new.tenant, &spec)? {
        Ok(invoice) => invoice,
        Err(e) => return Ok(Err(TopUpError::Refused(e.to_string()))),
    };
    let payment = crate::payments::payment::create_attempt(
        tx,
        new.tenant,
        &invoice,
        &new.psp,
        new.payment_method.clone(),
        new.now_ms,
        new.now_ms,
    )?;
    top_up.invoice = Some(invoice.id);
    top_up.payment = Some(payment.id);
    record::save(tx, new.tenant, &top_up)?;
    Ok(Ok(top_up))
}

/// `POST /v1/customers/{id}/top-ups` as a writer command.
#[derive(Clone)]
pub struct CreateTopUp(pub NewTopUp);

impl Command for CreateTopUp {
    type Output = Result<TopUp, TopUpError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        create(tx, &self.0)
    }
}
