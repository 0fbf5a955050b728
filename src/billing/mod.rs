//! Billing: plans, subscriptions, periods, pricing, billing runs and invoices.

pub mod coupon;
pub mod discount;
pub mod invoice;
pub mod minimum;
pub mod period;
pub mod plan;
pub mod preview;
pub mod pricing;
pub mod run;
pub mod subscription;
pub mod verify;

#[cfg(test)]
mod coupon_tests;
#[cfg(test)]
mod tests;
