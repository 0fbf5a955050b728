//! Tally: a self-hosted billing daemon whose one promise is "one intent, one effect".
//!
//! The crate is a library with a thin binary on top so that the black-box tests and the
//! property tests can reach the pure parts (canonical JSON, identities) directly, while every
//! behaviour a client relies on is exercised over HTTP against the real binary.

#![warn(missing_docs)]

pub mod alerts;
pub mod api;
pub mod bench;
pub mod billing;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod control;
pub mod country;
pub mod credit_notes;
pub mod currency;
pub mod customers;
pub mod decimal;
pub mod documents;
pub mod entitlements;
pub mod id;
pub mod idempotency;
pub mod identity;
pub mod ingest;
pub mod jobs;
pub mod ledger;
pub mod metrics;
pub mod migrate;
pub mod notifications;
pub mod payments;
#[cfg(test)]
mod properties;
pub mod server;
#[cfg(test)]
mod sim;
pub mod store;
pub mod tax_rates;
pub mod tenant_settings;
pub mod tenants;
pub mod wallet;
pub mod watch;
pub mod webhooks;
