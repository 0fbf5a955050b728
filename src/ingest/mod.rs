//! Usage ingest: events with exactly-once identities, meters, and usage aggregation.

pub mod anomaly;
pub mod backfill;
pub mod event;
pub mod event_record;
pub mod meter;
pub mod parse;
pub mod properties_dictionary;
pub mod purge;
pub mod rate;
pub mod rollup_record;
pub mod usage;
pub mod usage_layout;

#[cfg(test)]
mod layout_tests;
#[cfg(test)]
mod tests;
