//! What an invoice records of its parties when it is finalized: the buyer (the customer's
//! billing details) and the seller (the tenant's settings, the logo by its hash), together with
//! its number. They are copies, taken in the issuing transaction, so later edits of the
//! customer or the settings never change an issued invoice or its document.

use crate::store::WriteTxn;
use serde::{Deserialize, Serialize};

use super::numbering::{self, Sequence};
use crate::customers::{Address, TaxId};
use crate::id::Id;
use crate::store::keys::TenantId;
use crate::store::StoreError;
use crate::tenant_settings::{self, LogoRef};

/// The buyer as the invoice was issued to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buyer {
    /// Display name.
    pub name: Option<String>,
    /// Registered name.
    pub legal_name: Option<String>,
    /// Billing email.
    pub email: Option<String>,
    /// Billing address.
    pub address: Option<Address>,
    /// Tax registrations.
    pub tax_ids: Vec<TaxId>,
    /// BCP 47 language tag.
    pub locale: Option<String>,
}

/// The seller as the invoice was issued by them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seller {
    /// Registered name.
    pub legal_name: Option<String>,
    /// Address.
    pub address: Option<Address>,
    /// Tax registration.
    pub tax_id: Option<TaxId>,
    /// Contact email.
    pub email: Option<String>,
    /// The logo version in force (its bytes stay in the `logos` table).
    pub logo: Option<LogoRef>,
    /// Footer.
    pub invoice_footer: Option<String>,
    /// Payment instructions.
    pub payment_instructions: Option<String>,
}

/// What finalizing adds to an invoice.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Its number.
    pub number: numbering::Number,
    /// The buyer.
    pub buyer: Buyer,
    /// The seller.
    pub seller: Seller,
}

impl Issued {
    /// Takes the next invoice number and copies both parties, in the issuing transaction.
    pub fn take(
        tx: &WriteTxn,
        tenant: TenantId,
        customer: Id,
        at_ms: i64,
    ) -> Result<Issued, StoreError> {
        let number = numbering::next(tx, tenant, Sequence::Invoice, at_ms)?;
        let buyer = crate::customers::load_in_write(tx, tenant, customer)?
            .map(|c| Buyer {
                name: c.name,
                legal_name: c.legal_name,
                email: c.email,
                address: c.address,
                tax_ids: c.tax_ids,
                locale: c.locale,
            })
            .unwrap_or_default();
        let s = tenant_settings::load_in_write(tx, tenant)?;
        let seller = Seller {
            legal_name: s.legal_name,
            address: s.address,
            tax_id: s.tax_id,
            email: s.email,
            logo: s.logo,
            invoice_footer: s.invoice_footer,
            payment_instructions: s.payment_instructions,
        };
        Ok(Issued {
            number,
            buyer,
            seller,
        })
    }
}
