//! The buyer and seller an invoice was issued with, as the API shows them.

use serde::Serialize;
use utoipa::ToSchema;

use super::customers::{AddressBody, TaxIdBody};
use crate::billing::snapshot::{Buyer, Seller};
use crate::customers::TaxId;
use crate::tenant_settings::LogoRef;

/// A logo version: its bytes are kept under its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogoRefBody {
    /// `image/png` or `image/svg+xml`.
    pub media_type: String,
    /// Hex blake3 of the image.
    pub blake3: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

impl From<&LogoRef> for LogoRefBody {
    fn from(r: &LogoRef) -> Self {
        LogoRefBody {
            media_type: r.media_type.clone(),
            blake3: r.blake3.iter().map(|b| format!("{b:02x}")).collect(),
            size_bytes: r.size_bytes,
        }
    }
}

/// The buyer as the invoice was issued to them.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuyerBody {
    /// Display name.
    pub name: Option<String>,
    /// Registered name.
    pub legal_name: Option<String>,
    /// Billing email.
    pub email: Option<String>,
    /// Billing address.
    pub address: Option<AddressBody>,
    /// Tax registrations.
    pub tax_ids: Vec<TaxIdBody>,
    /// BCP 47 language tag.
    pub locale: Option<String>,
}

/// The seller as the invoice was issued by them.
#[derive(Debug, Serialize, ToSchema)]
pub struct SellerBody {
    /// Registered name.
    pub legal_name: Option<String>,
    /// Address.
    pub address: Option<AddressBody>,
    /// Tax registration.
    pub tax_id: Option<TaxIdBody>,
    /// Contact email.
    pub email: Option<String>,
    /// The logo version in force when the invoice was issued.
    pub logo: Option<LogoRefBody>,
    /// Footer.
    pub invoice_footer: Option<String>,
    /// Payment instructions.
    pub payment_instructions: Option<String>,
}

/// The API form of a tax id.
pub fn tax_id_body(t: &TaxId) -> TaxIdBody {
    TaxIdBody {
        kind: t.kind.clone(),
        value: t.value.clone(),
    }
}

/// The API form of a buyer snapshot.
pub fn buyer_body(b: &Buyer) -> BuyerBody {
    BuyerBody {
        name: b.name.clone(),
        legal_name: b.legal_name.clone(),
        email: b.email.clone(),
        address: b.address.as_ref().map(AddressBody::from),
        tax_ids: b.tax_ids.iter().map(tax_id_body).collect(),
        locale: b.locale.clone(),
    }
}

/// The API form of a seller snapshot.
pub fn seller_body(s: &Seller) -> SellerBody {
    SellerBody {
        legal_name: s.legal_name.clone(),
        address: s.address.as_ref().map(AddressBody::from),
        tax_id: s.tax_id.as_ref().map(tax_id_body),
        email: s.email.clone(),
        logo: s.logo.as_ref().map(LogoRefBody::from),
        invoice_footer: s.invoice_footer.clone(),
        payment_instructions: s.payment_instructions.clone(),
    }
}
