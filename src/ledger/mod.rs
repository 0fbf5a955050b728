//! The money model: accounts, a hash-chained double-entry journal, balances, credit grants.

pub mod account;
pub mod adjustment;
pub mod grant;
pub mod journal;
pub mod verification;
pub mod verify;

#[cfg(test)]
mod tests;
