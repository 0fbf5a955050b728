//! Outbound events: what happened, told to the tenant's systems exactly once per effect.
//!
//! The outbox ([`outbox`]) is written by the command whose effect it reports, in the same write
//! transaction, under an id derived from the effect's identity, so an event exists if and only
//! if its effect committed and a replayed request, a retried job or a repeated webhook never
//! records a second one. Delivery to the tenant's destinations ([`destination`], managed by
//! [`destinations`]) is a job per destination, enqueued in that same transaction and performed
//! by [`delivery`]: signed, retried on its own schedule, at least once under one id.
//! [`retention`] deletes old notifications once every delivery of theirs is finished.

pub mod backlog;
pub mod catalogue;
pub mod delivery;
pub mod destination;
pub mod destinations;
pub mod outbox;
pub mod retention;
