//! The payment provider boundary: one trait, two adapters (Stripe's REST API and a labelled
//! simulator). Every call carries the attempt's deterministic idempotency key, so a retry after
//! a timeout gets the provider's stored result instead of a second charge.

use std::future::Future;
use std::pin::Pin;

/// A boxed future, so adapters stay object-safe.
pub type PspFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PspError>> + Send + 'a>>;

/// A charge to create.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// The tenant (metadata `tally_tenant`, so listings can be filtered to it).
    pub tenant: u64,
    /// Sent as the provider's idempotency key on every call for this attempt.
    pub idempotency_key: String,
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// The provider's customer id, if known.
    pub provider_customer: Option<String>,
    /// The payment method to charge, if known.
    pub payment_method: Option<String>,
    /// `pay_…` (metadata).
    pub payment: String,
    /// `inv_…` (metadata).
    pub invoice: String,
}

/// What the provider says about a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    /// Money collected.
    Succeeded,
    /// Accepted, settling.
    Processing,
    /// The customer must act (3-D Secure).
    RequiresAction,
    /// Declined; not retryable with the same key.
    Failed {
        /// Provider's code (e.g. `card_declined`).
        code: String,
        /// Provider's message.
        message: String,
    },
}

/// The provider's answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeResult {
    /// The provider's id (`pi_…`).
    pub provider_id: Option<String>,
    /// Outcome.
    pub status: ChargeStatus,
    /// What the provider reports having collected (minor units, ISO 4217 upper case), when it
    /// says: checked against the attempt before anything is booked.
    pub received: Option<(i64, String)>,
}

/// A request to cancel an intent that waits for the customer.
#[derive(Debug, Clone)]
pub struct CancelRequest {
    /// The intent's provider id.
    pub provider_payment: String,
    /// Idempotency key of the cancel call.
    pub idempotency_key: String,
}

/// Where an intent stands after a cancel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelResult {
    /// Canceled: it can never collect.
    Canceled,
    /// Too late: it had already collected.
    Succeeded {
        /// What it collected (minor units, ISO 4217 upper case), when the provider says.
        received: Option<(i64, String)>,
    },
    /// It failed before the cancel arrived: it can never collect either.
    Failed,
    /// It is settling and cannot be canceled now; ask again later.
    Processing,
}

/// A refund to create.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    /// Idempotency key of this refund.
    pub idempotency_key: String,
    /// The charge's provider id.
    pub provider_payment: String,
    /// Minor units.
    pub amount_minor: i64,
    /// `re_…` (metadata).
    pub refund: String,
}

/// The provider's answer to a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundResult {
    /// The provider's refund id.
    pub provider_id: String,
    /// Where it stands.
    pub status: RefundStatus,
}

/// Where a refund stands at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundStatus {
    /// The money went back.
    Succeeded,
    /// Accepted, still settling: its webhook settles it.
    Pending,
    /// Refused.
    Failed(String),
}

/// One of the provider's charge records, for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCharge {
    /// `pi_…`.
    pub provider_id: String,
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    /// `succeeded`, `processing`, `requires_action`, `failed`, …
    pub status: String,
    /// `metadata[tally_payment]`.
    pub payment: Option<String>,
    /// `metadata[tally_tenant]`.
    pub tenant: Option<u64>,
    /// When created (unix seconds).
    pub created_s: i64,
}

/// A page of charge records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargePage {
    /// Records.
    pub data: Vec<ProviderCharge>,
    /// Whether more follow (pass `last` as `starting_after`).
    pub has_more: bool,
    /// The provider id of the page's last record before filtering: the cursor of the next page.
    pub last: Option<String>,
}

/// Why a provider call has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PspError {
    /// Timeout, 5xx, 429, connection failure: retry with the same key.
    #[error("provider unavailable: {0}")]
    Retryable(String),
    /// A request the provider will never accept as sent.
    #[error("provider refused the request: {0}")]
    Permanent(String),
}

/// A payment provider.
pub trait Psp: Send + Sync + 'static {
    /// `stripe` or `simulated`.
    fn name(&self) -> &'static str;
    /// Creates (or, with a known key, returns) a charge.
    fn charge(&self, request: ChargeRequest) -> PspFuture<'_, ChargeResult>;
    /// Creates (or returns) a refund.
    fn refund(&self, request: RefundRequest) -> PspFuture<'_, RefundResult>;
    /// Cancels an intent that waits for the customer (or says why it cannot).
    fn cancel(&self, request: CancelRequest) -> PspFuture<'_, CancelResult>;
    /// Lists the tenant's charges created in `[from_s, to_s)`: only charges whose metadata
    /// names this tenant, so one provider account can serve several tenants.
    fn list_charges(
        &self,
        tenant: u64,
        from_s: i64,
        to_s: i64,
        starting_after: Option<String>,
    ) -> PspFuture<'_, ChargePage>;
}
