//! Black-box tests: the real binary on a temporary database, over HTTP.

mod browser;
mod harness;

mod alerts;
mod api_keys;
mod backup;
mod billing;
mod bounds;
mod cli;
mod collection;
mod console;
mod console_catalog;
mod console_customers;
mod console_events;
mod console_invoices;
mod console_operations;
mod console_overview;
mod console_review;
mod corpus;
mod coupons;
mod crash;
mod credit_notes;
mod customer_update;
mod customers;
mod documents;
mod entitlements;
mod errors;
mod event_destinations;
mod event_explorer;
mod fake_stripe;
mod idempotency;
mod ingest;
mod ledger;
mod lifecycle;
mod metrics;
mod notifications;
mod numbering;
mod openapi;
mod outbound;
mod payments;
mod progressive;
mod soak;
mod taxes;
mod wallet;

mod webhooks;
