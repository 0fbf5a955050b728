//! Prepaid wallets: top-ups bought through an invoice and its payment, and auto-recharge.
//!
//! Layers: `record.rs` (the top-up and its storage) and `settle.rs` (what a top-up's payment
//! outcome does: the grant on success, the failure otherwise) sit below `payments`, which calls
//! `settle` in the write that records the outcome; `top_up.rs` (creating one: invoice and
//! payment attempt) and `auto_recharge.rs` sit above `payments`.

pub mod auto_recharge;
pub mod record;
pub mod settle;
pub mod top_up;

#[cfg(test)]
mod tests;
