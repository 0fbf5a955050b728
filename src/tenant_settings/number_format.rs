//! Invoice number formats: a template of literal text and the tokens `{prefix}`, `{year}`,
//! `{seq}` and `{seq:0N}` (the sequence value zero-padded to N digits, N in 1..=12), checked
//! when a tenant sets it so issuing an invoice never meets a format it cannot render.

use crate::customers::details::Invalid;

/// The format every tenant starts with.
pub const DEFAULT_FORMAT: &str = "{prefix}-{year}-{seq:06}";
/// The invoice prefix every tenant starts with.
pub const DEFAULT_INVOICE_PREFIX: &str = "INV";
/// The credit-note prefix every tenant starts with.
pub const DEFAULT_CREDIT_NOTE_PREFIX: &str = "CN";
/// Longest format, in characters.
pub const MAX_FORMAT_CHARS: usize = 64;
/// Longest prefix, in characters.
pub const MAX_PREFIX_CHARS: usize = 20;
/// Widest zero padding of `{seq:0N}`.
pub const MAX_SEQ_WIDTH: usize = 12;

/// One piece of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Prefix,
    Year,
    Seq { width: usize },
}

/// A checked format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pieces: Vec<Piece>,
}

/// Literal characters a number may hold besides letters and digits: numbers end up in file
/// names, e-mail subjects and bank transfer references, so the set stays small.
fn literal_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '.' | '#')
}

fn invalid(field: &str, detail: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_string(),
        detail: detail.into(),
    }
}

impl Format {
    /// Parses and checks `text`; errors name `field`. A format must hold exactly one sequence
    /// token, or two invoices could get the same number.
    pub fn parse(field: &str, text: &str) -> Result<Format, Invalid> {
        if text.chars().count() > MAX_FORMAT_CHARS {
            return Err(invalid(
                field,
                format!("must be at most {MAX_FORMAT_CHARS} characters"),
            ));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let Some(close) = after.find('}') else {
                    return Err(invalid(field, "has a '{' without its '}'"));
                };
                pieces.push(token(field, &after[..close])?);
                rest = &after[close + 1..];
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let literal = &rest[..end];
                if let Some(c) = literal.chars().find(|c| !literal_allowed(*c)) {
                    return Err(invalid(
                        field,
                        format!(
                            "{c:?} is not allowed: literal text is letters, digits, '-', '_', '/', '.' and '#'"
                        ),
                    ));
                }
                pieces.push(Piece::Literal(literal.to_string()));
                rest = &rest[end..];
            }
        }
        let seqs = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Seq { .. }))
            .count();
        if seqs != 1 {
            return Err(invalid(
                field,
                "must contain exactly one {seq} or {seq:0N} token",
            ));
        }
        Ok(Format { pieces })
    }

    /// The default format.
    pub fn default_format() -> Format {
        Format {
            pieces: vec![
                Piece::Prefix,
                Piece::Literal("-".into()),
                Piece::Year,
                Piece::Literal("-".into()),
                Piece::Seq { width: 6 },
            ],
        }
    }

    /// Whether numbers carry the year, which restarts the sequence every calendar year.
    pub fn has_year(&self) -> bool {
        self.pieces.contains(&Piece::Year)
    }

    /// The number for `seq` issued in `year` under `prefix`.
    pub fn render(&self, prefix: &str, year: i32, seq: u64) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Prefix => out.push_str(prefix),
                Piece::Year => out.push_str(&format!("{year:04}")),
                Piece::Seq { width } => out.push_str(&format!("{seq:0width$}")),
            }
        }
        out
    }
}

/// One `{…}` token's inside.
fn token(field: &str, inner: &str) -> Result<Piece, Invalid> {
    match inner {
        "prefix" => Ok(Piece::Prefix),
        "year" => Ok(Piece::Year),
        "seq" => Ok(Piece::Seq { width: 0 }),
        _ => {
            let width = inner
                .strip_prefix("seq:0")
                .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|w| w.parse::<usize>().ok())
                .filter(|w| (1..=MAX_SEQ_WIDTH).contains(w));
            width.map(|width| Piece::Seq { width }).ok_or_else(|| {
                invalid(
                    field,
                    format!(
                        "{{{inner}}} is not a token: use {{prefix}}, {{year}}, {{seq}} or {{seq:0N}} with N 1-{MAX_SEQ_WIDTH}"
                    ),
                )
            })
        }
    }
}

/// Checks a prefix: 1-20 letters, digits, `-`, `_`, `/` or `.`.
pub fn check_prefix(field: &str, prefix: &str) -> Result<(), Invalid> {
    let count = prefix.chars().count();
    if count == 0 || count > MAX_PREFIX_CHARS {
        return Err(invalid(
            field,
            format!("must be 1-{MAX_PREFIX_CHARS} characters"),
        ));
    }
    if prefix.chars().any(|c| !literal_allowed(c) || c == '#') {
        return Err(invalid(
            field,
            "may hold only letters, digits, '-', '_', '/' and '.'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_renders_prefix_year_and_six_digits() {
        let f = Format::parse("f", DEFAULT_FORMAT).expect("valid");
        assert_eq!(f, Format::default_format());
        assert!(f.has_year());
        assert_eq!(f.render("INV", 2026, 42), "INV-2026-000042");
        assert_eq!(f.render("INV", 2026, 1_234_567), "INV-2026-1234567");
    }

    #[test]
    fn formats_without_year_and_with_plain_seq() {
        let f = Format::parse("f", "{prefix}/{seq}").expect("valid");
        assert!(!f.has_year());
        assert_eq!(f.render("ACME", 2026, 7), "ACME/7");
        let f = Format::parse("f", "F{year}.{seq:012}").expect("valid");
        assert_eq!(f.render("X", 2027, 7), "F2027.000000000007");
    }

    #[test]
    fn bad_formats_are_refused_naming_the_field() {
        for bad in [
            "",
            "{prefix}",
            "{seq}-{seq}",
            "{seq:013}",
            "{seq:00}",
            "{seq:6}",
            "{seq:0}",
            "{seq",
            "{month}-{seq}",
            "INV {seq}",
            "{seq}\n",
            "{prefix}}{seq}",
            &"x".repeat(70),
        ] {
            let err = Format::parse("invoice_number_format", bad).expect_err(bad);
            assert_eq!(err.field, "invoice_number_format", "{bad}");
        }
    }

    #[test]
    fn prefixes_are_short_and_plain() {
        assert!(check_prefix("p", "INV").is_ok());
        assert!(check_prefix("p", "A-B_C/D.E").is_ok());
        for bad in ["", "has space", "{seq}", "#1", &"P".repeat(21)] {
            assert!(check_prefix("p", bad).is_err(), "{bad}");
        }
    }
}
