//! A tenant's own settings: the seller details printed on its invoices (legal name, address,
//! tax id, email, logo, footer, payment instructions) and how its documents are numbered
//! (prefixes and the number format). One record per tenant; logos are stored apart, keyed by
//! their blake3, and never deleted, so an invoice issued with an older logo still has it.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::customers::{Address, TaxId};
use crate::store::keys::TenantId;
use crate::store::writer::Command;
use crate::store::{get_record, put_record, tables, StoreError};

pub mod logo;
pub mod number_format;

pub use logo::{Logo, LogoRef};
pub use number_format::Format;

/// Longest `invoice_footer` or `payment_instructions`, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;
/// Longest `legal_name` or `email`, in characters.
pub const MAX_TEXT_CHARS: usize = 512;

/// A tenant's settings as stored. Every field is optional: an absent prefix or format means the
/// default ([`number_format`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The seller's registered name.
    pub legal_name: Option<String>,
    /// The seller's address.
    pub address: Option<Address>,
    /// The seller's tax registration.
    pub tax_id: Option<TaxId>,
    /// The seller's contact email.
    pub email: Option<String>,
    /// The logo (its bytes are in the `logos` table, keyed by the hash).
    pub logo: Option<LogoRef>,
    /// Printed at the foot of every invoice.
    pub invoice_footer: Option<String>,
    /// How to pay (bank details, a link), printed on invoices.
    pub payment_instructions: Option<String>,
    /// `{prefix}` of invoice numbers (default `INV`).
    pub invoice_prefix: Option<String>,
    /// `{prefix}` of credit-note numbers (default `CN`).
    pub credit_note_prefix: Option<String>,
    /// The number format (default [`number_format::DEFAULT_FORMAT`]).
    pub invoice_number_format: Option<String>,
    /// 0 before the first change, one more per change.
    pub version: u64,
    /// When it last changed.
    pub updated_at_ms: i64,
}

impl Settings {
    /// The invoice prefix in force.
    pub fn invoice_prefix(&self) -> &str {
        self.invoice_prefix
            .as_deref()
            .unwrap_or(number_format::DEFAULT_INVOICE_PREFIX)
    }

    /// The credit-note prefix in force.
    pub fn credit_note_prefix(&self) -> &str {
        self.credit_note_prefix
            .as_deref()
            .unwrap_or(number_format::DEFAULT_CREDIT_NOTE_PREFIX)
    }

    /// The number format in force (a stored format was checked when set; should one fail to
    /// parse anyway, the default numbers the invoice rather than refusing it).
    pub fn number_format(&self) -> Format {
        self.invoice_number_format
            .as_deref()
            .and_then(|f| Format::parse("invoice_number_format", f).ok())
            .unwrap_or_else(Format::default_format)
    }
}

fn settings_key(tenant: TenantId) -> [u8; 8] {
    tenant.to_bytes()
}

/// The tenant's settings (defaults when never set).
pub fn get(tx: &ReadTxn, tenant: TenantId) -> Result<Settings, StoreError> {
    let table = tx.open_table(tables::TENANT_SETTINGS)?;
    Ok(get_record(&table, settings_key(tenant))?.unwrap_or_default())
}

/// The tenant's settings inside a write transaction (issuing reads them for the number and
/// the seller snapshot).
pub fn load_in_write(tx: &WriteTxn, tenant: TenantId) -> Result<Settings, StoreError> {
    let table = tx.open_table(tables::TENANT_SETTINGS)?;
    Ok(get_record(&table, settings_key(tenant))?.unwrap_or_default())
}

/// One logo version of a tenant, by its hash.
pub fn logo<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    tenant: TenantId,
    hash: &[u8; 32],
) -> Result<Option<Logo>, StoreError> {
    get_record(table, logo::key(tenant, hash))
}

/// The fields a change sets: `None` leaves a field as it is, `Some(None)` clears it. Values are
/// checked at entry ([`Changes::check`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Legal name.
    pub legal_name: Option<Option<String>>,
    /// Address.
    pub address: Option<Option<Address>>,
    /// Tax id.
    pub tax_id: Option<Option<TaxId>>,
    /// Email.
    pub email: Option<Option<String>>,
    /// Logo, with its bytes.
    pub logo: Option<Option<Logo>>,
    /// Invoice footer.
    pub invoice_footer: Option<Option<String>>,
    /// Payment instructions.
    pub payment_instructions: Option<Option<String>>,
    /// Invoice prefix.
    pub invoice_prefix: Option<Option<String>>,
    /// Credit-note prefix.
    pub credit_note_prefix: Option<Option<String>>,
    /// Number format.
    pub invoice_number_format: Option<Option<String>>,
}

fn set<T: Clone>(field: &mut Option<T>, change: &Option<Option<T>>) {
    if let Some(v) = change {
        field.clone_from(v);
    }
}

impl Changes {
    /// Checks every given value; the error names the first field out of its range.
    pub fn check(&self) -> Result<(), crate::customers::details::Invalid> {
        use crate::customers::details::{check_address, check_tax_ids, check_text};
        let given = |v: &Option<Option<String>>| v.clone().flatten();
        if let Some(name) = given(&self.legal_name) {
            check_text("legal_name", &name, MAX_TEXT_CHARS, true)?;
        }
        if let Some(Some(address)) = &self.address {
            check_address(address)?;
        }
        if let Some(Some(tax_id)) = &self.tax_id {
            check_tax_ids(std::slice::from_ref(tax_id)).map_err(|mut e| {
                e.field = e.field.replacen("tax_ids.0", "tax_id", 1);
                e
            })?;
        }
        if let Some(email) = given(&self.email) {
            check_text("email", &email, MAX_TEXT_CHARS, true)?;
            check_email(&email)?;
        }
        if let Some(Some(logo)) = &self.logo {
            logo::check(logo)?;
        }
        for (field, value) in [
            ("invoice_footer", &self.invoice_footer),
            ("payment_instructions", &self.payment_instructions),
        ] {
            if let Some(text) = given(value) {
                check_note(field, &text)?;
            }
        }
        for (field, value) in [
            ("invoice_prefix", &self.invoice_prefix),
            ("credit_note_prefix", &self.credit_note_prefix),
        ] {
            if let Some(prefix) = given(value) {
                number_format::check_prefix(field, &prefix)?;
            }
        }
        if let Some(format) = given(&self.invoice_number_format) {
            Format::parse("invoice_number_format", &format)?;
        }
        Ok(())
    }

    /// `current` with these changes made (same version: the caller decides whether anything
    /// changed).
    pub fn applied_to(&self, current: &Settings) -> Settings {
        let mut next = current.clone();
        set(&mut next.legal_name, &self.legal_name);
        set(&mut next.address, &self.address);
        set(&mut next.tax_id, &self.tax_id);
        set(&mut next.email, &self.email);
        if let Some(logo) = &self.logo {
            next.logo = logo.as_ref().map(Logo::reference);
        }
        set(&mut next.invoice_footer, &self.invoice_footer);
        set(&mut next.payment_instructions, &self.payment_instructions);
        set(&mut next.invoice_prefix, &self.invoice_prefix);
        set(&mut next.credit_note_prefix, &self.credit_note_prefix);
        set(&mut next.invoice_number_format, &self.invoice_number_format);
        next
    }
}

/// Footer and payment instructions: free text with line breaks, at most 2000 characters.
fn check_note(field: &str, text: &str) -> Result<(), crate::customers::details::Invalid> {
    let bad = |detail: String| crate::customers::details::Invalid {
        field: field.to_string(),
        detail,
    };
    if text.chars().count() > MAX_NOTE_CHARS {
        return Err(bad(format!("must be at most {MAX_NOTE_CHARS} characters")));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(bad(
            "must not contain control characters other than line breaks and tabs".into(),
        ));
    }
    Ok(())
}

fn check_email(email: &str) -> Result<(), crate::customers::details::Invalid> {
    let valid = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(())
    } else {
        Err(crate::customers::details::Invalid {
            field: "email".into(),
            detail: "is not an email address".into(),
        })
    }
}

/// The settings and, when one is set, the logo's bytes: what the API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The settings.
    pub settings: Settings,
    /// The current logo.
    pub logo: Option<Logo>,
}

/// Reads the settings with the current logo's bytes.
pub fn view(tx: &ReadTxn, tenant: TenantId) -> Result<View, StoreError> {
    let settings = get(tx, tenant)?;
    let logo = match &settings.logo {
        Some(r) => logo(&tx.open_table(tables::LOGOS)?, tenant, &r.blake3)?,
        None => None,
    };
    Ok(View { settings, logo })
}

/// Changes a tenant's settings (checked values). A change that changes nothing writes nothing;
/// one that does advances `version`, and a new logo is kept under its hash beside the others.
#[derive(Clone)]
pub struct UpdateSettings {
    /// Owner.
    pub tenant: TenantId,
    /// What to change.
    pub changes: Changes,
    /// Now.
    pub now_ms: i64,
}

impl Command for UpdateSettings {
    type Output = View;

    fn apply(self, tx: &WriteTxn) -> Result<View, StoreError> {
        let current = load_in_write(tx, self.tenant)?;
        let mut next = self.changes.applied_to(&current);
        let mut logos = tx.open_table(tables::LOGOS)?;
        if next != current {
            next.version = current.version.saturating_add(1);
            next.updated_at_ms = self.now_ms;
            if let Some(Some(logo)) = &self.changes.logo {
                let key = logo::key(self.tenant, &logo.reference().blake3);
                if logos.get(key.as_slice())?.is_none() {
                    put_record(&mut logos, &key, logo)?;
                }
            }
            put_record(
                &mut tx.open_table(tables::TENANT_SETTINGS)?,
                &settings_key(self.tenant),
                &next,
            )?;
        }
        let logo = match &next.logo {
            Some(r) => logo(&logos, self.tenant, &r.blake3)?,
            None => None,
        };
        Ok(View {
            settings: next,
            logo,
        })
    }
}
