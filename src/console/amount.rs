//! Amounts typed by an operator (`12.50`) turned into the API's minor units, exactly.

use std::str::FromStr;

use rust_decimal::Decimal;

/// The amount `text` (major units, `.` as the decimal point) in minor units of `currency`:
/// exact, never rounded; more decimals than the currency has is an error, not a guess.
pub fn minor_units(text: &str, currency: &str) -> Result<i64, String> {
    let text = text.trim();
    let exponent = crate::currency::minor_unit_exponent(currency)
        .ok_or_else(|| format!("{currency} is not a known currency"))?;
    let not_amount = || format!("{text:?} is not an amount (write it like 12.50)");
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    let plain = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !plain(whole) || !plain(fraction) {
        return Err(not_amount());
    }
    let value = Decimal::from_str(text).map_err(|_| not_amount())?;
    if value.scale() > u32::from(exponent) {
        return Err(format!(
            "{text} has more decimals than {currency} has ({exponent})"
        ));
    }
    let scaled = value
        .checked_mul(Decimal::from(10i64.pow(u32::from(exponent))))
        .ok_or_else(|| format!("{text} is too large"))?
        .normalize();
    if scaled.scale() != 0 {
        return Err(format!("{text} is not a whole number of minor units"));
    }
    i64::try_from(scaled.mantissa()).map_err(|_| format!("{text} is too large"))
}

/// A minor-unit amount as the major-unit text an operator types (`1250` EUR → `12.50`).
pub fn major_text(amount_minor: i64, currency: &str) -> String {
    let text = super::components::money(amount_minor, currency);
    text.rsplit_once(' ')
        .map_or(text.clone(), |(amount, _)| amount.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_in_each_exponent() {
        assert_eq!(minor_units("12.5", "EUR"), Ok(1250));
        assert_eq!(minor_units(" 12.50 ", "EUR"), Ok(1250));
        assert_eq!(minor_units("0.01", "EUR"), Ok(1));
        assert_eq!(minor_units("1234", "JPY"), Ok(1234));
        assert_eq!(minor_units("1.234", "BHD"), Ok(1234));
        assert_eq!(minor_units("-1", "EUR"), Ok(-100));
    }

    #[test]
    fn bad_amounts_are_refused_not_rounded() {
        assert!(minor_units("0.001", "EUR").is_err());
        assert!(minor_units("1.5", "JPY").is_err());
        assert!(minor_units("12,50", "EUR").is_err());
        assert!(minor_units("", "EUR").is_err());
        assert!(minor_units("1e3", "EUR").is_err());
        assert!(minor_units("1.", "EUR").is_err());
        assert!(minor_units(".5", "EUR").is_err());
        assert!(minor_units("+1", "EUR").is_err());
        assert!(minor_units("99999999999999999999999", "EUR").is_err());
        assert!(minor_units("1", "XXZ").is_err());
    }

    #[test]
    fn minor_units_print_back_as_typed() {
        assert_eq!(major_text(1250, "EUR"), "12.50");
        assert_eq!(major_text(5, "JPY"), "5");
    }
}
