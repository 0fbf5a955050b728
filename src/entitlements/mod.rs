//! Entitlements: which features a customer may use right now, and how much of a metered one is
//! left.
//!
//! A **feature** is a tenant's named capability (`gpt4`, `seats`). A plan version grants
//! features through **entitlements** (`boolean`, `static` with a JSON config, or `metered`
//! against a meter with a limit per reset window); a customer may have an **override** that
//! replaces its plans' entitlement to one feature, and one-off **grants** of extra allowance.
//! [`check::check`] answers "may this customer use this feature at this instant, and how much
//! is left" from the rollups, in microseconds, inside the process.
//!
//! Entitlements are not pricing: they live in tables of their own keyed by (plan, feature) and
//! (customer, feature), so changing one needs no new plan version.

pub mod check;
pub mod entitlement;
pub mod feature;
pub mod grant;
pub mod window;

#[cfg(test)]
mod tests;
