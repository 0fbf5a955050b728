//! The document view model: everything printed on an invoice or credit note, already chosen
//! and formatted where the text depends on the locale, so the HTML and PDF renderers only lay
//! it out. It is independent of how invoices are stored: [`Document::for_invoice`] is the one
//! place that maps a stored invoice onto it.

use crate::billing::invoice::{Invoice, Line};

use super::money;

/// Which document it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// A request for payment.
    Invoice,
    /// A reduction of an earlier invoice.
    CreditNote,
}

impl DocumentKind {
    /// The title printed at the top.
    pub fn title(self) -> &'static str {
        match self {
            DocumentKind::Invoice => "Invoice",
            DocumentKind::CreditNote => "Credit note",
        }
    }

    /// The label of the last total: what the buyer owes, or what the note gives back.
    pub fn due_label(self) -> &'static str {
        match self {
            DocumentKind::Invoice => "Amount due",
            DocumentKind::CreditNote => "Total credited",
        }
    }

    /// The stem of a download's file name.
    pub fn file_stem(self) -> &'static str {
        match self {
            DocumentKind::Invoice => "invoice",
            DocumentKind::CreditNote => "credit-note",
        }
    }
}

/// A postal address as printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostalAddress {
    /// Street and number.
    pub line1: String,
    /// Apartment, suite, building.
    pub line2: Option<String>,
    /// City or town.
    pub city: String,
    /// Postal code.
    pub postal_code: String,
    /// State, province or county.
    pub region: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

impl PostalAddress {
    /// The lines as printed, blank ones left out: street, suite, `postal code city`,
    /// region, country.
    pub fn lines(&self) -> Vec<String> {
        let city = [self.postal_code.trim(), self.city.trim()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        [
            Some(self.line1.clone()),
            self.line2.clone(),
            Some(city),
            self.region.clone(),
            Some(self.country.clone()),
        ]
        .into_iter()
        .flatten()
        .filter(|l| !l.trim().is_empty())
        .collect()
    }
}

/// One tax registration as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyTaxId {
    /// The type (`eu_vat`, `gb_vat`…).
    pub kind: String,
    /// The number.
    pub value: String,
}

impl PartyTaxId {
    /// `VAT DE123456789`: the label a reader knows for the type, then the number.
    pub fn display(&self) -> String {
        let label = match self.kind.as_str() {
            "eu_vat" | "gb_vat" | "ch_vat" | "no_vat" | "za_vat" => "VAT",
            "us_ein" => "EIN",
            "ca_bn" => "BN",
            "au_abn" => "ABN",
            "nz_gst" | "in_gst" => "GST",
            "jp_cn" => "Corporate number",
            "sg_uen" => "UEN",
            "br_cnpj" => "CNPJ",
            "kr_brn" => "BRN",
            other => other,
        };
        format!("{label} {}", self.value)
    }
}

/// A seller or a buyer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Party {
    /// Display name.
    pub name: String,
    /// Registered name, printed first when set.
    pub legal_name: Option<String>,
    /// Contact email.
    pub email: Option<String>,
    /// Postal address.
    pub address: Option<PostalAddress>,
    /// Tax registrations.
    pub tax_ids: Vec<PartyTaxId>,
}

impl Party {
    /// The name a document addresses: the legal name when set, else the display name.
    pub fn heading(&self) -> &str {
        match &self.legal_name {
            Some(legal) if !legal.trim().is_empty() => legal,
            _ => &self.name,
        }
    }

    /// The lines under the heading: the display name when it differs, the address, the email
    /// and the tax ids.
    pub fn detail_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.heading() != self.name && !self.name.trim().is_empty() {
            lines.push(self.name.clone());
        }
        if let Some(address) = &self.address {
            lines.extend(address.lines());
        }
        lines.extend(self.email.iter().filter(|e| !e.is_empty()).cloned());
        lines.extend(self.tax_ids.iter().map(PartyTaxId::display));
        lines
    }

    /// Whether nothing would be printed.
    pub fn is_empty(&self) -> bool {
        self.heading().trim().is_empty() && self.detail_lines().is_empty()
    }
}

/// One line of the lines table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocLine {
    /// What it bills.
    pub description: String,
    /// Start of the period it bills.
    pub period_start_ms: i64,
    /// End of that period (exclusive).
    pub period_end_ms: i64,
    /// Quantity, formatted for the locale.
    pub quantity: String,
    /// Unit price, formatted for the locale; empty when the line has none (a flat fee).
    pub unit_price: String,
    /// Amount, minor units.
    pub amount_minor: i64,
    /// The tax applied (`VAT 19%`), when taxes are computed.
    pub tax_label: Option<String>,
}

/// One row of the tax summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxRow {
    /// `VAT`, `Sales tax`…
    pub label: String,
    /// The rate as printed (`19%`).
    pub percentage: String,
    /// The amount taxed, minor units.
    pub net_minor: i64,
    /// The tax, minor units.
    pub tax_minor: i64,
}

/// The image formats a logo may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoType {
    /// `image/png`: shown in HTML and PDF.
    Png,
    /// `image/svg+xml`: shown in HTML only (the PDF leaves the space empty).
    Svg,
}

impl LogoType {
    /// The media type.
    pub fn media_type(self) -> &'static str {
        match self {
            LogoType::Png => "image/png",
            LogoType::Svg => "image/svg+xml",
        }
    }
}

/// The seller's logo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logo {
    /// Its format.
    pub media_type: LogoType,
    /// The image file.
    pub bytes: Vec<u8>,
}

/// Everything printed on one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Invoice or credit note.
    pub kind: DocumentKind,
    /// The document number, once numbering exists.
    pub number: Option<String>,
    /// The lifecycle status (`finalized`, `paid`, `void`…).
    pub status: String,
    /// When it was issued.
    pub issued_at_ms: i64,
    /// Start of the period billed.
    pub period_start_ms: i64,
    /// End of the period billed (exclusive).
    pub period_end_ms: i64,
    /// Who issues it.
    pub seller: Party,
    /// Who it is addressed to.
    pub buyer: Party,
    /// ISO 4217.
    pub currency: String,
    /// BCP 47 tag the figures and dates are written for.
    pub locale: String,
    /// The lines table.
    pub lines: Vec<DocLine>,
    /// Tax summary.
    pub tax_rows: Vec<TaxRow>,
    /// Sum of the lines.
    pub subtotal_minor: i64,
    /// Sum of the taxes.
    pub tax_minor: i64,
    /// Subtotal plus tax.
    pub total_minor: i64,
    /// Prepaid credits drawn.
    pub credits_applied_minor: i64,
    /// What remains to pay.
    pub amount_due_minor: i64,
    /// Notes printed under the totals (a reverse-charge statement).
    pub notes: Vec<String>,
    /// Printed at the bottom of each page.
    pub footer: Option<String>,
    /// How to pay.
    pub payment_instructions: Option<String>,
    /// The seller's logo.
    pub logo: Option<Logo>,
}

impl Document {
    /// The document of a stored invoice: its number, lines, tax per rate, totals and notes,
    /// addressed from `seller` to `buyer`, written for `locale`.
    pub fn for_invoice(invoice: &Invoice, buyer: Party, seller: Party, locale: &str) -> Document {
        Document {
            kind: DocumentKind::Invoice,
            number: invoice.number.clone(),
            status: invoice.status.as_str().to_string(),
            issued_at_ms: invoice.issued_at_ms,
            period_start_ms: invoice.period_start_ms,
            period_end_ms: invoice.period_end_ms,
            seller,
            buyer,
            currency: invoice.currency.clone(),
            locale: locale.to_string(),
            lines: invoice
                .lines
                .iter()
                .map(|l| doc_line(l, &invoice.currency, locale))
                .collect(),
            tax_rows: invoice
                .tax_lines
                .iter()
                .map(|t| TaxRow {
                    label: if t.inclusive {
                        format!("{} (included)", t.display_name)
                    } else {
                        t.display_name.clone()
                    },
                    percentage: format!("{}%", crate::decimal::to_text(t.percentage.0)),
                    net_minor: t.taxable_minor,
                    tax_minor: t.tax_minor,
                })
                .collect(),
            subtotal_minor: invoice.subtotal_minor,
            tax_minor: invoice.tax_minor,
            total_minor: invoice.total_minor,
            // Credits drawn and credit notes both lower what is due.
            credits_applied_minor: invoice
                .credits_applied_minor
                .saturating_add(invoice.credited_due_minor),
            amount_due_minor: invoice.amount_due_minor,
            notes: invoice.notes.clone(),
            footer: None,
            payment_instructions: None,
            logo: None,
        }
    }

    /// The money text of an amount of this document.
    pub fn money(&self, amount_minor: i64) -> String {
        money::format_minor(amount_minor, &self.currency, &self.locale)
    }

    /// The date text of an instant.
    pub fn date(&self, at_ms: i64) -> String {
        money::format_date(at_ms, &self.locale)
    }

    /// The text of a period.
    pub fn period(&self, start_ms: i64, end_ms: i64) -> String {
        money::format_period(start_ms, end_ms, &self.locale)
    }

    /// The title with the number: `Invoice INV-0042`, or the title alone.
    pub fn heading(&self) -> String {
        match &self.number {
            Some(n) => format!("{} {n}", self.kind.title()),
            None => self.kind.title().to_string(),
        }
    }

    /// A download's file name: `invoice-INV-0042.pdf`, or with `fallback_id` when unnumbered.
    /// Only letters, digits, `-` and `_` are kept so the header needs no quoting rules.
    pub fn file_name(&self, fallback_id: &str, extension: &str) -> String {
        let stem: String = self
            .number
            .as_deref()
            .unwrap_or(fallback_id)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}-{stem}.{extension}", self.kind.file_stem())
    }

    /// The rows of the totals block, label and amount, in order: subtotal, each tax with the
    /// amount it is levied on, total, credits applied.
    pub fn totals(&self) -> Vec<(String, String)> {
        let mut rows = vec![("Subtotal".to_string(), self.money(self.subtotal_minor))];
        for row in &self.tax_rows {
            rows.push((
                format!(
                    "{} {} on {}",
                    row.label,
                    row.percentage,
                    self.money(row.net_minor)
                ),
                self.money(row.tax_minor),
            ));
        }
        if self.tax_rows.is_empty() && self.tax_minor != 0 {
            rows.push(("Tax".to_string(), self.money(self.tax_minor)));
        }
        rows.push(("Total".to_string(), self.money(self.total_minor)));
        if self.credits_applied_minor != 0 {
            rows.push((
                "Credits applied".to_string(),
                self.money(-self.credits_applied_minor.saturating_abs()),
            ));
        }
        rows
    }
}

fn doc_line(line: &Line, currency: &str, locale: &str) -> DocLine {
    DocLine {
        description: line.description.clone(),
        period_start_ms: line.period_start_ms,
        period_end_ms: line.period_end_ms,
        quantity: money::format_decimal(line.quantity.0, locale),
        unit_price: line
            .unit_price
            .map(|p| money::format_price(p.0, currency, locale))
            .unwrap_or_default(),
        amount_minor: line.amount_minor,
        tax_label: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A realistic document: a seller with a logo, several lines, notes and a footer.
    pub(crate) fn sample(locale: &str, currency: &str) -> Document {
        let day = 86_400_000;
        let nov1 = 1_793_491_200_000;
        let dec1 = nov1 + 30 * day;
        let line = |description: &str, quantity: &str, unit_price: &str, amount_minor| DocLine {
            description: description.to_string(),
            period_start_ms: nov1,
            period_end_ms: dec1,
            quantity: quantity.to_string(),
            unit_price: unit_price.to_string(),
            amount_minor,
            tax_label: None,
        };
        Document {
            kind: DocumentKind::Invoice,
            number: Some("INV-2026-0042".to_string()),
            status: "finalized".to_string(),
            issued_at_ms: dec1,
            period_start_ms: nov1,
            period_end_ms: dec1,
            seller: Party {
                name: "Tally Example".to_string(),
                legal_name: Some("Example Software GmbH".to_string()),
                email: Some("billing@example.com".to_string()),
                address: Some(PostalAddress {
                    line1: "Friedrichstraße 123".to_string(),
                    line2: None,
                    city: "Berlin".to_string(),
                    postal_code: "10117".to_string(),
                    region: None,
                    country: "DE".to_string(),
                }),
                tax_ids: vec![PartyTaxId {
                    kind: "eu_vat".to_string(),
                    value: "DE123456789".to_string(),
                }],
            },
            buyer: Party {
                name: "Acme".to_string(),
                legal_name: Some("Acme Corporation".to_string()),
                email: Some("ap@acme.example".to_string()),
                address: Some(PostalAddress {
                    line1: "500 Market Street".to_string(),
                    line2: Some("Suite 400".to_string()),
                    city: "San Francisco".to_string(),
                    postal_code: "94105".to_string(),
                    region: Some("CA".to_string()),
                    country: "US".to_string(),
                }),
                tax_ids: vec![PartyTaxId {
                    kind: "us_ein".to_string(),
                    value: "12-3456789".to_string(),
                }],
            },
            currency: currency.to_string(),
            locale: locale.to_string(),
            lines: vec![
                line("Pro plan (monthly)", "1", "", 4_900),
                line("API requests", "1,284,500", "$0.0015", 192_675),
                line("Storage (GB-months)", "312.5", "$0.02", 625),
                line("Εγγραφή — Регистрация (Greek & Cyrillic)", "3", "$5.00", 1_500),
            ],
            tax_rows: Vec::new(),
            subtotal_minor: 199_700,
            tax_minor: 0,
            total_minor: 199_700,
            credits_applied_minor: 10_000,
            amount_due_minor: 189_700,
            notes: vec!["Thank you for your business.".to_string()],
            footer: Some("Example Software GmbH · Amtsgericht Berlin HRB 12345".to_string()),
            payment_instructions: Some("Pay by card, or by bank transfer to IBAN DE89 3704 0044 0532 0130 00 quoting the invoice number.".to_string()),
            logo: None,
        }
    }

    #[test]
    fn party_heading_prefers_the_legal_name() {
        let doc = sample("en-US", "USD");
        assert_eq!(doc.buyer.heading(), "Acme Corporation");
        let lines = doc.buyer.detail_lines();
        assert_eq!(lines[0], "Acme");
        assert!(lines.contains(&"94105 San Francisco".to_string()));
        assert!(lines.contains(&"EIN 12-3456789".to_string()));
        assert!(Party::default().is_empty());
    }

    #[test]
    fn file_names_are_header_safe() {
        let mut doc = sample("en-US", "USD");
        assert_eq!(doc.file_name("inv_x", "pdf"), "invoice-INV-2026-0042.pdf");
        doc.number = Some("A/1 \"x\"".to_string());
        assert_eq!(doc.file_name("inv_x", "html"), "invoice-A_1__x_.html");
        doc.number = None;
        assert_eq!(doc.file_name("inv_abc", "pdf"), "invoice-inv_abc.pdf");
    }

    #[test]
    fn totals_list_credits_as_a_reduction() {
        let doc = sample("en-US", "USD");
        let totals = doc.totals();
        assert_eq!(totals[0], ("Subtotal".to_string(), "$1,997.00".to_string()));
        assert_eq!(totals[1], ("Total".to_string(), "$1,997.00".to_string()));
        assert_eq!(
            totals[2],
            ("Credits applied".to_string(), "-$100.00".to_string())
        );
    }
}
