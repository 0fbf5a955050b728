//! Canonical JSON and the hashes built on it: request fingerprints and (for events) derived
//! identities.
//!
//! This is the one place that decides when two JSON documents are "the same intent". Canonical
//! form: object keys sorted by their UTF-8 bytes, no insignificant white space, strings escaped as
//! serde_json escapes them, and numbers normalised to their exact decimal value (`1`, `1.0`, `1e0`
//! and `10e-1` are all `1`; `-0` is `0`). Numbers are never routed through floating point: the
//! crate enables serde_json's `arbitrary_precision`, so every literal arrives here as written.

use serde_json::Value;

/// Domain-separation context for request fingerprints (blake3 `derive_key` mode), so a
/// fingerprint can never collide with another kind of hash Tally computes.
const FINGERPRINT_CONTEXT: &str = "tally 2026-11 request fingerprint v1";

/// Contexts of the event hashes; see [`event_digest`] and [`derived_event_key`].
const EVENT_DIGEST_CONTEXT: &str = "tally 2026-11 event payload digest v1";
const DERIVED_EVENT_CONTEXT: &str = "tally 2026-11 derived event identity v1";

/// Numbers whose plain decimal form would be longer than this are written in scientific form,
/// which bounds the canonical text of hostile inputs like `1e1000000`.
const MAX_PLAIN_DIGITS: i64 = 64;

/// The canonical text of a JSON value.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

/// Parses a request body and returns its canonical text.
pub fn canonicalize_bytes(body: &[u8]) -> Result<String, serde_json::Error> {
    let value: Value = serde_json::from_slice(body)?;
    Ok(canonical_json(&value))
}

/// The fingerprint of a request: blake3 over method, path and canonical body, each length
/// prefixed so no two different triples hash the same input.
pub fn fingerprint(method: &str, path: &str, canonical_body: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(FINGERPRINT_CONTEXT);
    for part in [method, path, canonical_body] {
        hasher.update(&(part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    *hasher.finalize().as_bytes()
}

fn hash_parts(context: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    for part in parts {
        hasher.update(&(part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}

/// The digest of what an event says (customer, type, timestamp as sent, properties): two
/// deliveries with one identity are a `duplicate` when their digests match and a `conflict`
/// otherwise. `timestamp_ms` is `None` when the client sent none, so a retry of an event without
/// a timestamp is still a duplicate although its receipt time differs.
pub fn event_digest(
    customer: &str,
    event_type: &str,
    timestamp_ms: Option<i64>,
    canonical_properties: &str,
) -> [u8; 32] {
    let ts = timestamp_ms.map(|t| t.to_be_bytes());
    let ts_part: &[u8] = match &ts {
        Some(bytes) => bytes,
        None => b"none",
    };
    hash_parts(
        EVENT_DIGEST_CONTEXT,
        &[
            customer.as_bytes(),
            event_type.as_bytes(),
            ts_part,
            canonical_properties.as_bytes(),
        ],
    )
}

/// The storage key of a stable event identity `(tenant, source, id)`: the tenant, the source's
/// length and the source, then the client's id as given. Not hashed on purpose: ids that
/// arrive in order (counters, ULIDs, UUIDv7, `request-17-3`) then insert next to each other, so
/// a commit of a thousand events touches a few index pages instead of a thousand. Both parts
/// are at most 255 bytes (checked at parse time), so the length byte is exact.
pub fn stable_event_key(tenant: u64, source: &str, id: &str) -> Vec<u8> {
    debug_assert!(source.len() <= usize::from(u8::MAX));
    let mut key = Vec::with_capacity(8 + 1 + source.len() + id.len());
    key.extend_from_slice(&tenant.to_be_bytes());
    key.push(u8::try_from(source.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(source.as_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// The storage key of a derived identity: blake3 of tenant, source and the canonical payload
/// without its timestamp (customer, type, properties). Time enters through the window lookup,
/// not the hash.
pub fn derived_event_key(
    tenant: u64,
    source: &str,
    customer: &str,
    event_type: &str,
    canonical_properties: &str,
) -> [u8; 16] {
    truncate(hash_parts(
        DERIVED_EVENT_CONTEXT,
        &[
            &tenant.to_be_bytes(),
            source.as_bytes(),
            customer.as_bytes(),
            event_type.as_bytes(),
            canonical_properties.as_bytes(),
        ],
    ))
}

fn truncate(hash: [u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash[..16]);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&normalize_number(&n.to_string())),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    // serde_json's string escaping is deterministic; serializing a &str cannot fail.
    match serde_json::to_string(s) {
        Ok(text) => out.push_str(&text),
        Err(_) => out.push_str("\"\""),
    }
}

/// Rewrites a JSON number literal as its exact normal form: no leading or trailing zeros, no
/// exponent unless the plain form would exceed [`MAX_PLAIN_DIGITS`], no negative zero.
pub fn normalize_number(literal: &str) -> String {
    let (negative, body) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let (mantissa, exponent_text) = match body.find(['e', 'E']) {
        Some(pos) => (&body[..pos], Some(&body[pos + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(pos) => (&mantissa[..pos], &mantissa[pos + 1..]),
        None => (mantissa, ""),
    };
    let mut exponent: i64 = exponent_text.map(parse_exponent).unwrap_or(0);
    exponent = exponent.saturating_sub(frac_part.len() as i64);
    let all_digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let trimmed_leading = all_digits.trim_start_matches('0');
    if trimmed_leading.is_empty() {
        return String::from("0");
    }
    let digits = trimmed_leading.trim_end_matches('0');
    exponent = exponent.saturating_add((trimmed_leading.len() - digits.len()) as i64);
    let digit_count = digits.len() as i64;
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if exponent >= 0 && digit_count.saturating_add(exponent) <= MAX_PLAIN_DIGITS {
        out.push_str(digits);
        for _ in 0..exponent {
            out.push('0');
        }
    } else if exponent < 0 && exponent.saturating_neg() <= MAX_PLAIN_DIGITS {
        let point = digit_count + exponent;
        if point > 0 {
            let split = point as usize;
            out.push_str(&digits[..split]);
            out.push('.');
            out.push_str(&digits[split..]);
        } else {
            out.push_str("0.");
            for _ in 0..(-point) {
                out.push('0');
            }
            out.push_str(digits);
        }
    } else {
        let adjusted = exponent.saturating_add(digit_count - 1);
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push_str(&adjusted.to_string());
    }
    out
}

/// Exponent digits may be arbitrarily long in JSON; saturate instead of overflowing.
fn parse_exponent(text: &str) -> i64 {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut value: i64 = 0;
    for b in digits.bytes() {
        value = value
            .saturating_mul(10)
            .saturating_add(i64::from(b.wrapping_sub(b'0')));
    }
    if negative {
        -value
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        canonicalize_bytes(text.as_bytes()).expect("valid json")
    }

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        assert_eq!(
            canon(r#"{ "b": [1, {"z":1, "a":2}], "a" : "x" }"#),
            r#"{"a":"x","b":[1,{"a":2,"z":1}]}"#
        );
    }

    #[test]
    fn numbers_are_normalised_exactly() {
        for (input, expected) in [
            ("1", "1"),
            ("1.0", "1"),
            ("1e0", "1"),
            ("10e-1", "1"),
            ("-0", "0"),
            ("-0.0e5", "0"),
            ("0.0025", "0.0025"),
            ("2.50", "2.5"),
            ("1E+2", "100"),
            ("-12.340e1", "-123.4"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            (
                "0.1000000000000000000000000001",
                "0.1000000000000000000000000001",
            ),
            ("1e100", "1e100"),
            ("1.5e-100", "1.5e-100"),
            ("1e99999999999999999999999", &format!("1e{}", i64::MAX)),
        ] {
            assert_eq!(normalize_number(input), expected, "{input}");
        }
    }

    #[test]
    fn fingerprint_separates_its_parts() {
        assert_ne!(
            fingerprint("POST", "/v1/a", "{}"),
            fingerprint("POST", "/v1/a{", "}")
        );
        assert_eq!(
            fingerprint("POST", "/v1/a", &canon(r#"{"x": 1.0}"#)),
            fingerprint("POST", "/v1/a", &canon(r#"{"x":1}"#))
        );
    }
}
