//! Billing: plans, subscriptions, periods, pricing, billing runs and invoices.

pub mod customer_update;
pub mod invoice;
pub mod period;
pub mod plan;
pub mod preview;
pub mod pricing;
pub mod run;
pub mod subscription;
pub mod verify;

#[cfg(test)]
mod tests;
