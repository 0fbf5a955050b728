//! Payments through a provider: attempts with recovery points, deterministic provider keys,
//! refunds, dunning, provider webhooks and reconciliation.

pub mod attempt;
pub mod hooks;
pub mod migrate;
pub mod outcome;
pub mod payment;
pub mod psp;
pub mod reconcile;
pub mod refund;
pub mod simulated;
pub mod stripe;
mod top_up_refund;
pub mod void;
pub mod worker;
mod write_off;
