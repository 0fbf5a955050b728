//! Inbound webhooks: endpoints, the signature trust gate, durable receipts, processing.

pub mod endpoint;
pub mod event;
pub mod process;
pub mod signature;
