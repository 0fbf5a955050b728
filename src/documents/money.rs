//! Amounts, quantities and dates written the way a reader of a locale expects them.
//!
//! Everything is exact: an amount is an integer of minor units split at the currency's
//! exponent, a decimal is split at its point as text, so no float ever rounds a printed
//! figure. The rules are a small table of the common invoicing locales (separators, grouping,
//! where the symbol goes) after CLDR; any other locale falls back to the currency code before
//! an amount with `,` grouping and `.` decimals, and to ISO 8601 dates.

use rust_decimal::Decimal;

/// No-break space: between an amount and a symbol after it, and the grouping of `pl`/`ru`.
const NBSP: &str = "\u{a0}";
/// Narrow no-break space: the grouping separator of `fr`.
const NNBSP: &str = "\u{202f}";

/// Where the currency goes relative to the digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// `$1,234.56`, or `CHF 1,234.56` when the symbol is a code.
    Before,
    /// `€ 1.234,56` (a space even for a one-character symbol), minus after the symbol.
    BeforeSpaced,
    /// `1.234,56 €`.
    After,
}

/// A locale's number rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NumberRules {
    group: &'static str,
    decimal: &'static str,
    /// Groups appear only when the integer part has at least this many digits plus three
    /// (`es` and `pl` write 1234 but 12 345).
    min_grouping_digits: usize,
    placement: Placement,
    /// Whether the locale is known; an unknown one prints the code, never a symbol.
    known: bool,
}

/// The parts of a BCP 47 tag this module uses: language and region, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tag {
    language: String,
    region: Option<String>,
}

fn parse_tag(locale: &str) -> Tag {
    let mut parts = locale.split(['-', '_']);
    let language = parts.next().unwrap_or("").to_ascii_lowercase();
    // The region is the first two-letter or three-digit subtag after the language (a script
    // subtag such as `Latn` has four letters and is skipped).
    let region = parts
        .find(|p| {
            (p.len() == 2 && p.chars().all(|c| c.is_ascii_alphabetic()))
                || (p.len() == 3 && p.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_ascii_uppercase);
    Tag { language, region }
}

fn rules(tag: &Tag) -> NumberRules {
    let rule = |group, decimal, min_grouping_digits, placement| NumberRules {
        group,
        decimal,
        min_grouping_digits,
        placement,
        known: true,
    };
    match tag.language.as_str() {
        "en" | "ja" => rule(",", ".", 1, Placement::Before),
        "de" | "it" | "el" => rule(".", ",", 1, Placement::After),
        "es" => rule(".", ",", 2, Placement::After),
        "nl" => rule(".", ",", 1, Placement::BeforeSpaced),
        "fr" => rule(NNBSP, ",", 1, Placement::After),
        "pl" => rule(NBSP, ",", 2, Placement::After),
        "ru" => rule(NBSP, ",", 1, Placement::After),
        _ => NumberRules {
            known: false,
            ..rule(",", ".", 1, Placement::Before)
        },
    }
}

/// The symbol a reader of `tag` knows for `currency`, or the code when a symbol would be
/// ambiguous or unfamiliar there.
fn symbol(currency: &str, tag: &Tag) -> String {
    if !rules(tag).known {
        return currency.to_string();
    }
    let language = tag.language.as_str();
    let region = tag.region.as_deref();
    let symbol = match currency {
        "EUR" => "€",
        "GBP" => "£",
        "JPY" => "¥",
        "USD" if language == "en" && matches!(region, None | Some("US")) => "$",
        "USD" if language == "ja" => "$",
        "USD" if language == "en" => "US$",
        "PLN" if language == "pl" => "zł",
        "RUB" if language == "ru" => "₽",
        _ => currency,
    };
    symbol.to_string()
}

/// Inserts the group separator every three digits from the right.
fn group_digits(int_digits: &str, rules: &NumberRules) -> String {
    let len = int_digits.len();
    if len < 3 + rules.min_grouping_digits {
        return int_digits.to_string();
    }
    let mut out = String::with_capacity(len + len / 3 * rules.group.len());
    for (i, c) in int_digits.chars().enumerate() {
        if i > 0 && (len - i).is_multiple_of(3) {
            out.push_str(rules.group);
        }
        out.push(c);
    }
    out
}

/// The digits with separators, no sign: `1,234.56`.
fn number_text(int_digits: &str, frac_digits: &str, rules: &NumberRules) -> String {
    let mut out = group_digits(int_digits, rules);
    if !frac_digits.is_empty() {
        out.push_str(rules.decimal);
        out.push_str(frac_digits);
    }
    out
}

/// Places sign and currency around the digits.
fn place(negative: bool, digits: &str, symbol: &str, rules: &NumberRules) -> String {
    let sign = if negative { "-" } else { "" };
    let is_code = symbol.len() == 3 && symbol.chars().all(|c| c.is_ascii_uppercase());
    match rules.placement {
        Placement::Before if is_code || !rules.known => format!("{sign}{symbol}{NBSP}{digits}"),
        Placement::Before => format!("{sign}{symbol}{digits}"),
        Placement::BeforeSpaced => format!("{symbol}{NBSP}{sign}{digits}"),
        Placement::After => format!("{sign}{digits}{NBSP}{symbol}"),
    }
}

/// Splits a magnitude of minor units at the exponent into integer and fraction digits.
fn split_minor(magnitude: u64, exponent: u8) -> (String, String) {
    let text = magnitude.to_string();
    let exponent = usize::from(exponent);
    if exponent == 0 {
        return (text, String::new());
    }
    let padded = format!("{text:0>width$}", width = exponent + 1);
    let (int, frac) = padded.split_at(padded.len() - exponent);
    (int.to_string(), frac.to_string())
}

/// An amount of minor units of `currency` as `locale` writes it: `$1,234.56` (en-US),
/// `1.234,56 €` (de-DE), `1 234,56 €` (fr-FR), `¥1,235` (ja-JP, JPY has no minor unit),
/// `CHF 1,234.56` for a locale without rules. The currency's ISO 4217 exponent places the
/// decimal point (two for a code that is not ISO 4217).
pub fn format_minor(amount_minor: i64, currency: &str, locale: &str) -> String {
    let tag = parse_tag(locale);
    let rules = rules(&tag);
    let exponent = crate::currency::minor_unit_exponent(currency).unwrap_or(2);
    let (int, frac) = split_minor(amount_minor.unsigned_abs(), exponent);
    let digits = number_text(&int, &frac, &rules);
    place(amount_minor < 0, &digits, &symbol(currency, &tag), &rules)
}

/// A decimal amount of major units (a unit price such as `0.0015`) in `currency` as `locale`
/// writes it, with at least the currency's minor digits and every significant digit after.
pub fn format_price(value: Decimal, currency: &str, locale: &str) -> String {
    let tag = parse_tag(locale);
    let rules = rules(&tag);
    let exponent = crate::currency::minor_unit_exponent(currency).unwrap_or(2);
    let (negative, int, mut frac) = split_decimal(value);
    while frac.len() < usize::from(exponent) {
        frac.push('0');
    }
    let digits = number_text(&int, &frac, &rules);
    place(negative, &digits, &symbol(currency, &tag), &rules)
}

/// A plain decimal (a quantity) with the locale's separators and no trailing zeros:
/// `1,234.5` (en), `1.234,5` (de).
pub fn format_decimal(value: Decimal, locale: &str) -> String {
    let rules = rules(&parse_tag(locale));
    let (negative, int, frac) = split_decimal(value);
    let sign = if negative { "-" } else { "" };
    format!("{sign}{}", number_text(&int, &frac, &rules))
}

/// Sign, integer digits and fraction digits (no trailing zeros) of a decimal, from its text.
fn split_decimal(value: Decimal) -> (bool, String, String) {
    let text = crate::decimal::to_text(value);
    let negative = text.starts_with('-');
    let unsigned = text.trim_start_matches('-');
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    (negative, int.to_string(), frac.to_string())
}

/// The calendar date (UTC) of an instant as `locale` writes dates: `Dec 1, 2026` (en-US),
/// `1 Dec 2026` (en-GB and other English), `01.12.2026` (de, pl, ru), `01/12/2026` (fr, es,
/// it, el), `01-12-2026` (nl), `2026/12/01` (ja), and ISO 8601 `2026-12-01` otherwise.
pub fn format_date(at_ms: i64, locale: &str) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(at_ms) else {
        return String::from("-");
    };
    let date = ts.to_zoned(jiff::tz::TimeZone::UTC).date();
    let (y, m, d) = (date.year(), date.month(), date.day());
    let tag = parse_tag(locale);
    match tag.language.as_str() {
        "en" => {
            let month = MONTHS_EN[usize::try_from(m - 1).unwrap_or(0) % 12];
            if matches!(tag.region.as_deref(), None | Some("US")) {
                format!("{month} {d}, {y}")
            } else {
                format!("{d} {month} {y}")
            }
        }
        "de" | "pl" | "ru" => format!("{d:02}.{m:02}.{y}"),
        "fr" | "es" | "it" | "el" => format!("{d:02}/{m:02}/{y}"),
        "nl" => format!("{d:02}-{m:02}-{y}"),
        "ja" => format!("{y}/{m:02}/{d:02}"),
        _ => format!("{y}-{m:02}-{d:02}"),
    }
}

/// A billing period `[start, end)` as `locale` writes it, with the last day included
/// (`Nov 1, 2026 – Nov 30, 2026`): the stored end is the first instant after the period.
pub fn format_period(start_ms: i64, end_ms: i64, locale: &str) -> String {
    let last_ms = end_ms.saturating_sub(1).max(start_ms);
    let start = format_date(start_ms, locale);
    let last = format_date(last_ms, locale);
    if start == last {
        start
    } else {
        format!("{start} – {last}")
    }
}

const MONTHS_EN: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn en_us() {
        assert_eq!(format_minor(123_456, "USD", "en-US"), "$1,234.56");
        assert_eq!(format_minor(-123_456, "USD", "en-US"), "-$1,234.56");
        assert_eq!(format_minor(5, "USD", "en"), "$0.05");
        assert_eq!(format_minor(0, "USD", "en-US"), "$0.00");
        assert_eq!(format_minor(123_456_789, "USD", "en-US"), "$1,234,567.89");
    }

    #[test]
    fn en_gb() {
        assert_eq!(format_minor(123_456, "GBP", "en-GB"), "£1,234.56");
        assert_eq!(format_minor(-99, "GBP", "en-GB"), "-£0.99");
        assert_eq!(format_minor(100, "USD", "en-GB"), "US$1.00");
    }

    #[test]
    fn de_de() {
        assert_eq!(format_minor(123_456, "EUR", "de-DE"), "1.234,56\u{a0}€");
        assert_eq!(format_minor(-123_456, "EUR", "de-DE"), "-1.234,56\u{a0}€");
        assert_eq!(format_minor(123_456, "CHF", "de"), "1.234,56\u{a0}CHF");
    }

    #[test]
    fn fr_fr_groups_with_a_narrow_no_break_space() {
        assert_eq!(
            format_minor(123_456, "EUR", "fr-FR"),
            "1\u{202f}234,56\u{a0}€"
        );
        assert_eq!(format_minor(-50, "EUR", "fr-FR"), "-0,50\u{a0}€");
    }

    #[test]
    fn ja_jp_has_no_minor_unit() {
        assert_eq!(format_minor(1_235, "JPY", "ja-JP"), "¥1,235");
        assert_eq!(format_minor(-1_235, "JPY", "ja-JP"), "-¥1,235");
        assert_eq!(format_minor(1_235, "JPY", "en-US"), "¥1,235");
    }

    #[test]
    fn es_groups_only_from_five_digits() {
        assert_eq!(format_minor(123_456, "EUR", "es-ES"), "1234,56\u{a0}€");
        assert_eq!(format_minor(1_234_567, "EUR", "es-ES"), "12.345,67\u{a0}€");
        assert_eq!(format_minor(-1_234_567, "EUR", "es"), "-12.345,67\u{a0}€");
    }

    #[test]
    fn it_it() {
        assert_eq!(format_minor(123_456, "EUR", "it-IT"), "1.234,56\u{a0}€");
        assert_eq!(format_minor(-1, "EUR", "it-IT"), "-0,01\u{a0}€");
    }

    #[test]
    fn nl_nl_puts_the_symbol_first_and_the_minus_after_it() {
        assert_eq!(format_minor(123_456, "EUR", "nl-NL"), "€\u{a0}1.234,56");
        assert_eq!(format_minor(-123_456, "EUR", "nl-NL"), "€\u{a0}-1.234,56");
    }

    #[test]
    fn pl_pl() {
        assert_eq!(format_minor(123_456, "PLN", "pl-PL"), "1234,56\u{a0}zł");
        assert_eq!(
            format_minor(1_234_567, "PLN", "pl-PL"),
            "12\u{a0}345,67\u{a0}zł"
        );
        assert_eq!(format_minor(-100, "EUR", "pl"), "-1,00\u{a0}€");
    }

    #[test]
    fn ru_ru() {
        assert_eq!(
            format_minor(123_456, "RUB", "ru-RU"),
            "1\u{a0}234,56\u{a0}₽"
        );
        assert_eq!(format_minor(-123_456, "EUR", "ru"), "-1\u{a0}234,56\u{a0}€");
    }

    #[test]
    fn el_gr() {
        assert_eq!(format_minor(123_456, "EUR", "el-GR"), "1.234,56\u{a0}€");
        assert_eq!(format_minor(-123_456, "EUR", "el"), "-1.234,56\u{a0}€");
    }

    #[test]
    fn unknown_locale_prints_the_code_first() {
        assert_eq!(format_minor(123_456, "EUR", "sv-SE"), "EUR\u{a0}1,234.56");
        assert_eq!(format_minor(-123_456, "USD", "zz"), "-USD\u{a0}1,234.56");
        assert_eq!(format_minor(123_456, "USD", ""), "USD\u{a0}1,234.56");
    }

    #[test]
    fn three_decimal_currencies_and_extremes() {
        assert_eq!(
            format_minor(1_234_567, "BHD", "en-US"),
            "BHD\u{a0}1,234.567"
        );
        assert_eq!(
            format_minor(i64::MIN, "USD", "en-US"),
            "-$92,233,720,368,547,758.08"
        );
        assert_eq!(
            format_minor(i64::MAX, "JPY", "ja"),
            "¥9,223,372,036,854,775,807"
        );
    }

    #[test]
    fn prices_and_quantities() {
        let d = |s: &str| crate::decimal::parse(s).unwrap();
        assert_eq!(format_price(d("0.0015"), "USD", "en-US"), "$0.0015");
        assert_eq!(format_price(d("12"), "EUR", "de-DE"), "12,00\u{a0}€");
        assert_eq!(format_price(d("1500.5"), "EUR", "de-DE"), "1.500,50\u{a0}€");
        assert_eq!(format_decimal(d("1234567.25"), "en-US"), "1,234,567.25");
        assert_eq!(format_decimal(d("1234567.25"), "de-DE"), "1.234.567,25");
        assert_eq!(format_decimal(d("-3"), "fr"), "-3");
    }

    #[test]
    fn dates() {
        // 2026-12-01T00:00:00Z
        let ms = 1_796_083_200_000;
        assert_eq!(format_date(ms, "en-US"), "Dec 1, 2026");
        assert_eq!(format_date(ms, "en-GB"), "1 Dec 2026");
        assert_eq!(format_date(ms, "de-DE"), "01.12.2026");
        assert_eq!(format_date(ms, "fr-FR"), "01/12/2026");
        assert_eq!(format_date(ms, "nl-NL"), "01-12-2026");
        assert_eq!(format_date(ms, "ja-JP"), "2026/12/01");
        assert_eq!(format_date(ms, "sv-SE"), "2026-12-01");
        assert_eq!(format_date(ms, ""), "2026-12-01");
    }

    #[test]
    fn periods_show_their_last_day() {
        let nov1 = 1_793_491_200_000; // 2026-11-01
        let dec1 = 1_796_083_200_000;
        assert_eq!(
            format_period(nov1, dec1, "en-US"),
            "Nov 1, 2026 – Nov 30, 2026"
        );
        assert_eq!(format_period(nov1, nov1, "de"), "01.11.2026");
    }

    #[test]
    fn tags_are_read_leniently() {
        assert_eq!(format_minor(100, "EUR", "DE_de"), "1,00\u{a0}€");
        assert_eq!(format_minor(100, "USD", "en-Latn-US"), "$1.00");
    }
}
