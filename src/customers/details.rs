//! Billing details: the legal name, address, tax registrations and locale printed on a
//! customer's documents, and the range of each, checked at entry so nothing malformed is
//! stored.

use serde::{Deserialize, Serialize};

/// Longest address line (`line1`, `line2`), in characters.
pub const MAX_ADDRESS_LINE_CHARS: usize = 200;
/// Longest `city` or `region`, in characters.
pub const MAX_CITY_CHARS: usize = 100;
/// Longest `postal_code`, in characters.
pub const MAX_POSTAL_CODE_CHARS: usize = 20;
/// Most tax ids per customer.
pub const MAX_TAX_IDS: usize = 5;
/// Longest tax id value, in characters (before the per-type format check).
pub const MAX_TAX_ID_VALUE_CHARS: usize = 64;
/// Longest locale (BCP 47 tag), in characters.
pub const MAX_LOCALE_CHARS: usize = 35;

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
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
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
}

/// One tax registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxId {
    /// One of [`TAX_ID_TYPES`] (`eu_vat`, `gb_vat`…).
    pub kind: String,
    /// The number as the customer writes it (`DE123456789`).
    pub value: String,
}

/// The accepted tax id types and the shape each value must have once spaces, `-`, `.` and `/`
/// are removed and letters are upper-cased (a light check against typos, not a registry
/// look-up).
pub const TAX_ID_TYPES: &[(&str, &str)] = &[
    (
        "eu_vat",
        "EU VAT: a member state prefix (EL for Greece, XI for Northern Ireland), then 2-12 letters or digits",
    ),
    ("gb_vat", "UK VAT: GB, then 9 or 12 digits"),
    ("ch_vat", "Swiss VAT: CHE, then 9 digits, optionally MWST, TVA or IVA"),
    ("no_vat", "Norwegian VAT: 9 digits, then MVA"),
    ("us_ein", "US EIN: 9 digits (12-3456789)"),
    ("ca_bn", "Canadian BN: 9 digits"),
    ("au_abn", "Australian ABN: 11 digits"),
    ("nz_gst", "New Zealand GST: 8 or 9 digits"),
    (
        "in_gst",
        "Indian GSTIN: 15 characters, 2 digits, a PAN (5 letters, 4 digits, 1 letter), 1 character, Z, 1 character",
    ),
    ("jp_cn", "Japanese corporate number: 13 digits"),
    ("sg_uen", "Singapore UEN: 9 or 10 letters and digits ending in a letter"),
    ("za_vat", "South African VAT: 10 digits starting with 4"),
    ("br_cnpj", "Brazilian CNPJ: 14 digits"),
    ("kr_brn", "Korean BRN: 10 digits"),
];

/// EU VAT prefixes: the member states' codes, with EL for Greece and XI for Northern Ireland.
const EU_VAT_PREFIXES: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "EL", "ES", "FI", "FR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "XI",
];

/// A value out of its range: the field, as a dotted path into the request, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct Invalid {
    /// `address.country`, `tax_ids.2.value`…
    pub field: String,
    /// What is wrong.
    pub detail: String,
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

/// Checks a text field: `required` ones must not be blank, none may hold control characters
/// or exceed `max_chars`.
pub fn check_text(
    field: &str,
    value: &str,
    max_chars: usize,
    required: bool,
) -> Result<(), Invalid> {
    if required && value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(invalid(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Checks an address: required lines present, lengths, and an assigned country code.
pub fn check_address(address: &Address) -> Result<(), Invalid> {
    check_text(
        "address.line1",
        &address.line1,
        MAX_ADDRESS_LINE_CHARS,
        true,
    )?;
    if let Some(line2) = &address.line2 {
        check_text("address.line2", line2, MAX_ADDRESS_LINE_CHARS, false)?;
    }
    check_text("address.city", &address.city, MAX_CITY_CHARS, true)?;
    check_text(
        "address.postal_code",
        &address.postal_code,
        MAX_POSTAL_CODE_CHARS,
        true,
    )?;
    if let Some(region) = &address.region {
        check_text("address.region", region, MAX_CITY_CHARS, false)?;
    }
    if !crate::country::is_assigned(&address.country) {
        return Err(invalid(
            "address.country",
            format!(
                "{:?} is not an assigned ISO 3166-1 alpha-2 code (upper case, e.g. DE)",
                address.country
            ),
        ));
    }
    Ok(())
}

/// Checks a list of tax ids: at most [`MAX_TAX_IDS`], known types, values of their type's
/// shape, no registration twice.
pub fn check_tax_ids(tax_ids: &[TaxId]) -> Result<(), Invalid> {
    if tax_ids.len() > MAX_TAX_IDS {
        return Err(invalid("tax_ids", format!("at most {MAX_TAX_IDS} entries")));
    }
    for (i, tax_id) in tax_ids.iter().enumerate() {
        if !TAX_ID_TYPES.iter().any(|(t, _)| *t == tax_id.kind) {
            let known: Vec<&str> = TAX_ID_TYPES.iter().map(|(t, _)| *t).collect();
            return Err(invalid(
                format!("tax_ids.{i}.type"),
                format!("must be one of {}", known.join(", ")),
            ));
        }
        let field = format!("tax_ids.{i}.value");
        check_text(&field, &tax_id.value, MAX_TAX_ID_VALUE_CHARS, true)?;
        if !value_fits(&tax_id.kind, &normalized(&tax_id.value)) {
            let shape = TAX_ID_TYPES
                .iter()
                .find(|(t, _)| *t == tax_id.kind)
                .map_or("", |(_, s)| s);
            return Err(invalid(
                field,
                format!("is not a {} ({shape})", tax_id.kind),
            ));
        }
        if tax_ids[..i]
            .iter()
            .any(|t| t.kind == tax_id.kind && normalized(&t.value) == normalized(&tax_id.value))
        {
            return Err(invalid(field, "is listed twice"));
        }
    }
    Ok(())
}

/// The value without separators, upper case.
fn normalized(value: &str) -> String {
    value
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '/'))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn digits(s: &str, counts: &[usize]) -> bool {
    counts.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn alnum(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether a normalized value has the shape of its type.
fn value_fits(kind: &str, v: &str) -> bool {
    match kind {
        "eu_vat" => {
            let (Some(prefix), Some(rest)) = (v.get(..2), v.get(2..)) else {
                return false;
            };
            EU_VAT_PREFIXES.contains(&prefix) && (2..=12).contains(&rest.len()) && alnum(rest)
        }
        "gb_vat" => v.strip_prefix("GB").is_some_and(|d| digits(d, &[9, 12])),
        "ch_vat" => v.strip_prefix("CHE").is_some_and(|rest| {
            let number = ["MWST", "TVA", "IVA"]
                .iter()
                .find_map(|s| rest.strip_suffix(s))
                .unwrap_or(rest);
            digits(number, &[9])
        }),
        "no_vat" => v.strip_suffix("MVA").is_some_and(|d| digits(d, &[9])),
        "us_ein" | "ca_bn" => digits(v, &[9]),
        "au_abn" => digits(v, &[11]),
        "nz_gst" => digits(v, &[8, 9]),
        "in_gst" => in_gst_fits(v.as_bytes()),
        "jp_cn" => digits(v, &[13]),
        "sg_uen" => {
            (9..=10).contains(&v.len())
                && alnum(v)
                && v.bytes().last().is_some_and(|b| b.is_ascii_alphabetic())
        }
        "za_vat" => digits(v, &[10]) && v.starts_with('4'),
        "br_cnpj" => digits(v, &[14]),
        "kr_brn" => digits(v, &[10]),
        _ => false,
    }
}

/// GSTIN: state code (2 digits), PAN (5 letters, 4 digits, 1 letter), entity number, `Z`,
/// check character.
fn in_gst_fits(v: &[u8]) -> bool {
    v.len() == 15
        && v[..2].iter().all(u8::is_ascii_digit)
        && v[2..7].iter().all(u8::is_ascii_alphabetic)
        && v[7..11].iter().all(u8::is_ascii_digit)
        && v[11].is_ascii_alphabetic()
        && v[12].is_ascii_alphanumeric()
        && v[13] == b'Z'
        && v[14].is_ascii_alphanumeric()
}

/// Checks a locale: a well-formed BCP 47 language tag of at most [`MAX_LOCALE_CHARS`]
/// characters (language, then optional script, region, variants, extensions and private use;
/// any letter case).
pub fn check_locale(locale: &str) -> Result<(), Invalid> {
    if locale.chars().count() > MAX_LOCALE_CHARS {
        return Err(invalid(
            "locale",
            format!("must be at most {MAX_LOCALE_CHARS} characters"),
        ));
    }
    if !well_formed_tag(locale) {
        return Err(invalid(
            "locale",
            "is not a BCP 47 language tag (e.g. en, de-DE, zh-Hant-TW)",
        ));
    }
    Ok(())
}

/// RFC 5646 `langtag` (without the grandfathered and private-use-only forms).
fn well_formed_tag(tag: &str) -> bool {
    let subtags: Vec<&str> = tag.split('-').collect();
    if subtags
        .iter()
        .any(|s| s.is_empty() || s.len() > 8 || !alnum(s))
    {
        return false;
    }
    let alpha = |s: &str| s.bytes().all(|b| b.is_ascii_alphabetic());
    let digit = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mut rest = subtags.as_slice();
    // language: 2-3 letters (with up to three 3-letter extlangs) or 4-8 letters.
    match rest.split_first() {
        Some((lang, tail)) if alpha(lang) && (2..=8).contains(&lang.len()) => {
            rest = tail;
            if lang.len() <= 3 {
                let mut extlangs = 0;
                while let Some((ext, tail)) = rest.split_first() {
                    if extlangs < 3 && ext.len() == 3 && alpha(ext) {
                        extlangs += 1;
                        rest = tail;
                    } else {
                        break;
                    }
                }
            }
        }
        _ => return false,
    }
    if let Some((script, tail)) = rest.split_first() {
        if script.len() == 4 && alpha(script) {
            rest = tail;
        }
    }
    if let Some((region, tail)) = rest.split_first() {
        if (region.len() == 2 && alpha(region)) || (region.len() == 3 && digit(region)) {
            rest = tail;
        }
    }
    while let Some((variant, tail)) = rest.split_first() {
        let starts_with_digit = variant.bytes().next().is_some_and(|b| b.is_ascii_digit());
        if variant.len() >= 5 || (variant.len() == 4 && starts_with_digit) {
            rest = tail;
        } else {
            break;
        }
    }
    while let Some((singleton, tail)) = rest.split_first() {
        if singleton.len() != 1 {
            return false;
        }
        let private = singleton.eq_ignore_ascii_case("x");
        let min = if private { 1 } else { 2 };
        let taken = tail
            .iter()
            .take_while(|s| s.len() >= min && (private || s.len() > 1))
            .count();
        if taken == 0 {
            return false;
        }
        if private {
            // Everything after `x` is private use.
            return taken == tail.len();
        }
        rest = &tail[taken..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tax(kind: &str, value: &str) -> TaxId {
        TaxId {
            kind: kind.into(),
            value: value.into(),
        }
    }

    #[test]
    fn tax_ids_of_each_type_are_checked_by_shape() {
        let good = [
            ("eu_vat", "DE123456789"),
            ("eu_vat", "EL 123456789"),
            ("gb_vat", "GB123456789"),
            ("ch_vat", "CHE-123.456.789 MWST"),
            ("no_vat", "123456789MVA"),
            ("us_ein", "12-3456789"),
            ("ca_bn", "123456789"),
            ("au_abn", "12345678912"),
            ("nz_gst", "123456789"),
            ("in_gst", "12ABCDE3456FGZH"),
            ("jp_cn", "1234567891234"),
            ("sg_uen", "123456789F"),
            ("za_vat", "4123456789"),
            ("br_cnpj", "01.234.456/5432-10"),
            ("kr_brn", "123-45-67890"),
        ];
        for (kind, value) in good {
            assert_eq!(check_tax_ids(&[tax(kind, value)]), Ok(()), "{kind} {value}");
        }
        let bad = [
            ("eu_vat", "US123456789"),
            ("eu_vat", "DE"),
            ("eu_vat", "ÉÉ123456789"),
            ("gb_vat", "GB1234"),
            ("ch_vat", "CH123456789"),
            ("no_vat", "123456789"),
            ("us_ein", "12-345678"),
            ("in_gst", "12ABCDE3456FGYH"),
            ("za_vat", "5123456789"),
        ];
        for (kind, value) in bad {
            let e = check_tax_ids(&[tax(kind, value)]).expect_err(value);
            assert_eq!(e.field, "tax_ids.0.value", "{kind} {value}");
        }
        let e = check_tax_ids(&[tax("de_vat", "DE123456789")]).expect_err("type");
        assert_eq!(e.field, "tax_ids.0.type");
        let twice = [
            tax("eu_vat", "DE123456789"),
            tax("eu_vat", "de 123 456 789"),
        ];
        assert_eq!(
            check_tax_ids(&twice).expect_err("twice").field,
            "tax_ids.1.value"
        );
        let six = vec![tax("ca_bn", "123456789"); 6];
        assert_eq!(check_tax_ids(&six).expect_err("six").field, "tax_ids");
    }

    #[test]
    fn locales_are_bcp47_shaped() {
        for ok in [
            "en",
            "de-DE",
            "zh-Hant-TW",
            "es-419",
            "sl-rozaj-biske",
            "en-US-x-twain",
            "de-CH-1996",
            "en-a-bbb-x-a-ccc",
            "zh-yue-HK",
            "EN-us",
        ] {
            assert_eq!(check_locale(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "e",
            "en_US",
            "en-",
            "-en",
            "en--US",
            "123",
            "en-US-x",
            "en-a",
            "toolongtag",
            "en-US-a-b",
            "de-DE-verylongvariant",
            "x-private",
            "en-US-ü",
        ] {
            assert!(check_locale(bad).is_err(), "{bad}");
        }
        assert!(check_locale(&format!("en-{}", "abcde-".repeat(6))).is_err());
    }

    #[test]
    fn addresses_name_the_offending_field() {
        let ok = Address {
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            region: None,
            country: "DE".into(),
        };
        assert_eq!(check_address(&ok), Ok(()));
        let field = |a: Address| check_address(&a).expect_err("invalid").field;
        assert_eq!(
            field(Address {
                country: "de".into(),
                ..ok.clone()
            }),
            "address.country"
        );
        assert_eq!(
            field(Address {
                country: "UK".into(),
                ..ok.clone()
            }),
            "address.country"
        );
        assert_eq!(
            field(Address {
                line1: " ".into(),
                ..ok.clone()
            }),
            "address.line1"
        );
        assert_eq!(
            field(Address {
                postal_code: "1".repeat(21),
                ..ok.clone()
            }),
            "address.postal_code"
        );
        assert_eq!(
            field(Address {
                line2: Some("a\u{0}b".into()),
                ..ok
            }),
            "address.line2"
        );
    }
}
