//! Billing: plans, subscriptions, periods, pricing, billing runs and invoices.

pub mod absorbed;
pub mod change;
pub mod coupon;
pub mod customer_update;
pub mod discount;
pub mod draft;
pub mod invoice;
pub mod migrate;
pub mod minimum;
pub mod numbering;
pub mod period;
pub mod phase;
pub mod plan;
pub mod preview;
pub mod pricing;
pub mod progressive;
pub mod run;
pub mod snapshot;
pub mod subscription;
pub mod tax;
pub mod top_up;
pub mod verify;

#[cfg(test)]
mod change_tests;
#[cfg(test)]
mod coupon_tests;
#[cfg(test)]
mod interaction_tests;
#[cfg(test)]
mod progressive_tests;
#[cfg(test)]
mod tests;
