//! Exact decimals for quantities and unit prices.
//!
//! JSON numbers arrive as their literal text (serde_json's `arbitrary_precision`) and are parsed
//! straight into [`Decimal`] (96-bit mantissa, up to 28 fractional digits); a value that cannot
//! be represented exactly is refused, never rounded. Floating point is never involved.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a value is not an exact decimal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not a number at all.
    #[error("is not a number")]
    NotANumber,
    /// A number, but too large or too precise for an exact decimal (28 significant digits).
    #[error("is out of range for an exact decimal (at most 28 significant digits)")]
    OutOfRange,
}

/// The largest magnitude of a decimal entered through the API (10^15): meter values in events,
/// unit prices, free units, package sizes and tier bounds. With at most
/// [`MAX_FRACTION_DIGITS`] fractional digits such a value uses at most 27 of a decimal's 28
/// significant digits, so sums of many of them and their products with prices stay exact or
/// fail as a checked overflow, never silently rounded.
pub const MAX_MAGNITUDE: Decimal = Decimal::from_parts(0xA4C6_8000, 0x0003_8D7E, 0, false, 0);

/// The most fractional digits a decimal entered through the API may have.
pub const MAX_FRACTION_DIGITS: u32 = 12;

/// Why an entered decimal lies outside the documented range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Larger than [`MAX_MAGNITUDE`] in absolute value.
    #[error("is out of range: at most 10^15 in absolute value")]
    TooLarge,
    /// More than [`MAX_FRACTION_DIGITS`] fractional digits.
    #[error("is out of range: at most 12 digits after the decimal point")]
    TooPrecise,
}

/// Checks that an entered decimal lies within the documented range (|value| ≤ 10^15, at most
/// 12 fractional digits).
pub fn check_range(value: Decimal) -> Result<Decimal, RangeError> {
    if value.abs() > MAX_MAGNITUDE {
        return Err(RangeError::TooLarge);
    }
    if value.normalize().scale() > MAX_FRACTION_DIGITS {
        return Err(RangeError::TooPrecise);
    }
    Ok(value)
}

/// Parses a decimal from text such as `"0.0025"`, `"-3"` or `"1.5e3"`, exactly.
pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
    let trimmed = text.trim();
    if !is_json_number_syntax(trimmed) {
        return Err(DecimalError::NotANumber);
    }
    let plain = crate::identity::normalize_number(trimmed);
    if plain.contains('e') {
        return Err(DecimalError::OutOfRange);
    }
    Decimal::from_str_exact(&plain)
        .map(|d| d.normalize())
        .map_err(|_| DecimalError::OutOfRange)
}

/// Reads a JSON value as a decimal: a JSON number, or a string holding one (clients that guard
/// precision send strings). Anything else is `NotANumber`.
pub fn from_json(value: &serde_json::Value) -> Result<Decimal, DecimalError> {
    match value {
        serde_json::Value::Number(n) => parse(&n.to_string()),
        serde_json::Value::String(s) => parse(s),
        _ => Err(DecimalError::NotANumber),
    }
}

/// The canonical text of a decimal: no exponent, no trailing zeros.
pub fn to_text(value: Decimal) -> String {
    value.normalize().to_string()
}

/// JSON number grammar (RFC 8259): `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_json_number_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == b.len()
}

/// A decimal stored as its 16-byte native form (bincode cannot carry rust_decimal's
/// self-describing serde form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stored(pub Decimal);

impl Serialize for Stored {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = <[u8; 16]>::deserialize(deserializer)?;
        Ok(Stored(Decimal::deserialize(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(parse("0.0025"), Ok(d("0.0025")));
        assert_eq!(parse("1.5e3"), Ok(d("1500")));
        assert_eq!(parse("-2.50"), Ok(d("-2.5")));
        assert_eq!(parse("0.1"), Ok(d("0.1")));
        assert_eq!(to_text(parse("2.500").expect("ok")), "2.5");
        assert_eq!(parse("abc"), Err(DecimalError::NotANumber));
        assert_eq!(parse("1."), Err(DecimalError::NotANumber));
        assert_eq!(parse("NaN"), Err(DecimalError::NotANumber));
        assert_eq!(parse("01"), Err(DecimalError::NotANumber));
        assert_eq!(parse("1e400"), Err(DecimalError::OutOfRange));
        assert_eq!(
            parse("0.00000000000000000000000000001"),
            Err(DecimalError::OutOfRange)
        );
    }

    #[test]
    fn the_entry_range_is_fifteen_digits_and_twelve_decimals() {
        assert_eq!(
            check_range(d("1000000000000000")),
            Ok(d("1000000000000000"))
        );
        assert_eq!(
            check_range(d("-1000000000000000")),
            Ok(d("-1000000000000000"))
        );
        assert_eq!(
            check_range(d("1000000000000000.000000000001")),
            Err(RangeError::TooLarge)
        );
        assert_eq!(
            check_range(d("-79228162514264337593543950335")),
            Err(RangeError::TooLarge)
        );
        assert_eq!(check_range(d("0.000000000001")), Ok(d("0.000000000001")));
        assert_eq!(check_range(d("1.5000000000000")), Ok(d("1.5")));
        assert_eq!(
            check_range(d("0.0000000000000000000000000001")),
            Err(RangeError::TooPrecise)
        );
    }

    #[test]
    fn json_numbers_keep_their_digits() {
        let v: serde_json::Value =
            serde_json::from_str("0.1000000000000000000000000001").expect("json");
        assert_eq!(from_json(&v), Ok(d("0.1000000000000000000000000001")));
        assert_eq!(from_json(&serde_json::json!("12.5")), Ok(d("12.5")));
        assert_eq!(
            from_json(&serde_json::json!(true)),
            Err(DecimalError::NotANumber)
        );
    }

    #[test]
    fn stored_form_round_trips() {
        let value = Stored(d("-123.456"));
        let bytes = crate::store::codec::encode(&value).expect("encode");
        assert_eq!(
            crate::store::codec::decode::<Stored>(&bytes).expect("decode"),
            value
        );
    }
}
