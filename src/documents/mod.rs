//! Documents people can send: an invoice (later a credit note) rendered as a self-contained
//! HTML page or a PDF, both produced in-process from one view model.
//!
//! [`model::Document`] holds everything printed, independent of how invoices are stored;
//! [`money`] writes amounts and dates for a locale with exact integer arithmetic; [`html`] and
//! [`pdf`] lay the same model out.

pub mod html;
pub mod model;
pub mod money;
pub mod pdf;
pub mod source;
