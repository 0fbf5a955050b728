//! Payments through a provider: attempts with recovery points, deterministic provider keys,
//! refunds, dunning, provider webhooks and reconciliation.

pub mod hooks;
pub mod payment;
pub mod psp;
pub mod reconcile;
pub mod simulated;
pub mod stripe;
pub mod worker;
