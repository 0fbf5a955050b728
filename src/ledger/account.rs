//! Accounts: where money sits, per tenant and currency.
//!
//! Accounts are not created explicitly: the first posting to one creates its balance row. Each is
//! named by a stable text code so an operator can read a posting without a lookup:
//!
//! | code | type | what it holds |
//! |---|---|---|
//! | `revenue` | revenue | income recognised by invoices |
//! | `promotional_expense` | expense | the cost of promotional credits given away |
//! | `breakage` | revenue | credits that expired unused |
//! | `psp_clearing` | asset | money the payment provider collected and has not paid out |
//! | `cash` | asset | money received outside the provider (e.g. prepaid credits) |
//! | `bad_debt` | expense | receivables written off when an invoice became uncollectible |
//! | `suspense` | liability | money the provider collected that no invoice could take (a wrong amount or currency, a voided or already paid invoice, a superseded attempt), held until it is refunded or reviewed |
//! | `tax_payable` | liability | tax invoiced and owed to the tax authorities |
//! | `prepayments` | liability | prepaid top-ups invoiced and not yet turned into credits (their invoice is open), and the unused remainder of a voided top-up grant, owed back to the customer |
//! | `customer:cus_…:receivable` | asset | what the customer owes |
//! | `customer:cus_…:credits:grt_…` | liability | one credit grant's unused remainder |
//!
//! Amounts are signed: debits positive, credits negative, so every entry sums to zero per
//! currency. Asset and expense accounts normally carry positive balances; liability and revenue
//! accounts negative ones.

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// The accounting class of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountType {
    /// Debit-normal: what the tenant has or is owed.
    Asset,
    /// Credit-normal: what the tenant owes (unused credits).
    Liability,
    /// Credit-normal: income.
    Revenue,
    /// Debit-normal: costs.
    Expense,
}

impl AccountType {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountType::Asset => "asset",
            AccountType::Liability => "liability",
            AccountType::Revenue => "revenue",
            AccountType::Expense => "expense",
        }
    }
}

/// The tenant-wide accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SystemAccount {
    /// Income recognised by invoices.
    Revenue,
    /// Cost of promotional credits.
    PromotionalExpense,
    /// Expired credits.
    Breakage,
    /// Collected by the PSP, not yet paid out.
    PspClearing,
    /// Received outside the PSP.
    Cash,
    /// Receivables written off (invoices that dunning could not collect). Last, so records
    /// written before it existed decode unchanged.
    BadDebt,
    /// Money received that no invoice could take, held until it is refunded or reviewed.
    /// After `BadDebt` for the same reason.
    Suspense,
    /// Tax invoiced, owed to the tax authorities. Last, for the same reason.
    TaxPayable,
    /// Prepaid top-ups invoiced but not yet credits: a top-up invoice credits it, the grant its
    /// payment issues debits it. Last, for the same reason.
    Prepayments,
}

/// Which account a posting moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AccountRef {
    /// A tenant-wide account.
    System(SystemAccount),
    /// What a customer owes.
    Receivable {
        /// The customer.
        customer: Id,
    },
    /// One credit grant's unused remainder.
    Grant {
        /// The customer.
        customer: Id,
        /// The grant.
        grant: Id,
    },
}

impl AccountRef {
    /// The account's class.
    pub fn account_type(self) -> AccountType {
        match self {
            AccountRef::System(SystemAccount::Revenue | SystemAccount::Breakage) => {
                AccountType::Revenue
            }
            AccountRef::System(SystemAccount::PromotionalExpense | SystemAccount::BadDebt) => {
                AccountType::Expense
            }
            AccountRef::System(SystemAccount::PspClearing | SystemAccount::Cash) => {
                AccountType::Asset
            }
            AccountRef::System(
                SystemAccount::Suspense | SystemAccount::TaxPayable | SystemAccount::Prepayments,
            ) => AccountType::Liability,
            AccountRef::Receivable { .. } => AccountType::Asset,
            AccountRef::Grant { .. } => AccountType::Liability,
        }
    }

    /// The customer an account belongs to, if any.
    pub fn customer(self) -> Option<Id> {
        match self {
            AccountRef::System(_) => None,
            AccountRef::Receivable { customer } | AccountRef::Grant { customer, .. } => {
                Some(customer)
            }
        }
    }

    /// The text code (see the module table).
    pub fn code(self) -> String {
        let customer_prefix = crate::customers::PREFIX;
        match self {
            AccountRef::System(SystemAccount::Revenue) => "revenue".into(),
            AccountRef::System(SystemAccount::PromotionalExpense) => "promotional_expense".into(),
            AccountRef::System(SystemAccount::Breakage) => "breakage".into(),
            AccountRef::System(SystemAccount::PspClearing) => "psp_clearing".into(),
            AccountRef::System(SystemAccount::Cash) => "cash".into(),
            AccountRef::System(SystemAccount::BadDebt) => "bad_debt".into(),
            AccountRef::System(SystemAccount::Suspense) => "suspense".into(),
            AccountRef::System(SystemAccount::TaxPayable) => "tax_payable".into(),
            AccountRef::System(SystemAccount::Prepayments) => "prepayments".into(),
            AccountRef::Receivable { customer } => {
                format!("customer:{}:receivable", customer.display(customer_prefix))
            }
            AccountRef::Grant { customer, grant } => format!(
                "customer:{}:credits:{}",
                customer.display(customer_prefix),
                grant.display(super::grant::PREFIX)
            ),
        }
    }

    /// Parses a text code.
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "revenue" => AccountRef::System(SystemAccount::Revenue),
            "promotional_expense" => AccountRef::System(SystemAccount::PromotionalExpense),
            "breakage" => AccountRef::System(SystemAccount::Breakage),
            "psp_clearing" => AccountRef::System(SystemAccount::PspClearing),
            "cash" => AccountRef::System(SystemAccount::Cash),
            "bad_debt" => AccountRef::System(SystemAccount::BadDebt),
            "suspense" => AccountRef::System(SystemAccount::Suspense),
            "tax_payable" => AccountRef::System(SystemAccount::TaxPayable),
            "prepayments" => AccountRef::System(SystemAccount::Prepayments),
            other => {
                let rest = other.strip_prefix("customer:")?;
                let mut parts = rest.split(':');
                let customer = Id::parse(parts.next()?, crate::customers::PREFIX)?;
                match (parts.next()?, parts.next(), parts.next()) {
                    ("receivable", None, None) => AccountRef::Receivable { customer },
                    ("credits", Some(grant), None) => AccountRef::Grant {
                        customer,
                        grant: Id::parse(grant, super::grant::PREFIX)?,
                    },
                    _ => return None,
                }
            }
        })
    }

    /// Storage key bytes after the tenant and currency: a tag byte then the ids, fixed width.
    pub fn key_bytes(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(33);
        match self {
            AccountRef::System(s) => {
                out.push(0);
                out.push(match s {
                    SystemAccount::Revenue => 0,
                    SystemAccount::PromotionalExpense => 1,
                    SystemAccount::Breakage => 2,
                    SystemAccount::PspClearing => 3,
                    SystemAccount::Cash => 4,
                    SystemAccount::BadDebt => 5,
                    SystemAccount::Suspense => 6,
                    SystemAccount::TaxPayable => 7,
                    SystemAccount::Prepayments => 8,
                });
            }
            AccountRef::Receivable { customer } => {
                out.push(1);
                out.extend_from_slice(&customer.to_bytes());
            }
            AccountRef::Grant { customer, grant } => {
                out.push(2);
                out.extend_from_slice(&customer.to_bytes());
                out.extend_from_slice(&grant.to_bytes());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        let customer = Id::generate();
        let grant = Id::generate();
        for account in [
            AccountRef::System(SystemAccount::Revenue),
            AccountRef::System(SystemAccount::Cash),
            AccountRef::System(SystemAccount::BadDebt),
            AccountRef::System(SystemAccount::Suspense),
            AccountRef::System(SystemAccount::TaxPayable),
            AccountRef::System(SystemAccount::Prepayments),
            AccountRef::Receivable { customer },
            AccountRef::Grant { customer, grant },
        ] {
            assert_eq!(AccountRef::parse(&account.code()), Some(account));
        }
        assert_eq!(AccountRef::parse("customer:nope:receivable"), None);
        assert_eq!(AccountRef::parse("salary"), None);
    }
}
