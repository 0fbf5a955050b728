//! The trust gate: webhook signature schemes, verified in constant time with a replay window.
//!
//! - Stripe: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`; HMAC-SHA256 over
//!   `"{t}.{raw body}"` keyed by the secret string's bytes. Any `v1` may match (Stripe sends one
//!   per active secret during rotation); other schemes (`v0`) are ignored.
//! - Standard Webhooks: headers `webhook-id`, `webhook-timestamp`, `webhook-signature`
//!   (space-separated `v1,<base64>`); HMAC-SHA256 over `"{id}.{timestamp}.{raw body}"` keyed by
//!   the base64-decoded secret after its `whsec_` prefix.
//!
//! Both reject timestamps further than the tolerance from now, in either direction.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header is absent.
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    /// A header is present but malformed.
    #[error("the {header} header is malformed: {reason}")]
    Malformed {
        /// Which header.
        header: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The signed timestamp is outside the tolerance.
    #[error("the signature timestamp is {0} s away from now, beyond the tolerance")]
    Tolerance(i64),
    /// No signature matches any active secret.
    #[error("no signature matches")]
    NoMatch,
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for HMAC.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

fn check_tolerance(timestamp_s: i64, now_s: i64, tolerance_s: i64) -> Result<(), SignatureError> {
    let skew = (now_s - timestamp_s).abs();
    if skew > tolerance_s {
        return Err(SignatureError::Tolerance(skew));
    }
    Ok(())
}

/// The Stripe `v1` signature (hex) of a payload, for senders and tests.
pub fn sign_stripe(secret: &str, timestamp_s: i64, body: &[u8]) -> String {
    let mut m = mac(secret.as_bytes());
    m.update(timestamp_s.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Verifies a `Stripe-Signature` header against any of `secrets`; returns the signed timestamp.
pub fn verify_stripe(
    header: Option<&str>,
    body: &[u8],
    secrets: &[&str],
    now_s: i64,
    tolerance_s: i64,
) -> Result<i64, SignatureError> {
    const NAME: &str = "Stripe-Signature";
    let header = header.ok_or(SignatureError::MissingHeader(NAME))?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed {
                header: NAME,
                reason: format!("{part:?} is not key=value"),
            });
        };
        match key {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed {
                            header: NAME,
                            reason: "t is not a unix timestamp".into(),
                        })?,
                )
            }
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed {
        header: NAME,
        reason: "no t= timestamp".into(),
    })?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed {
            header: NAME,
            reason: "no v1 signature".into(),
        });
    }
    check_tolerance(timestamp, now_s, tolerance_s)?;
    for secret in secrets {
        for signature in &signatures {
            let Some(expected) = from_hex(signature) else {
                continue;
            };
            let mut m = mac(secret.as_bytes());
            m.update(timestamp.to_string().as_bytes());
            m.update(b".");
            m.update(body);
            if m.verify_slice(&expected).is_ok() {
                return Ok(timestamp);
            }
        }
    }
    Err(SignatureError::NoMatch)
}

/// Standard base64 that decodes with or without `=` padding: senders and their libraries
/// differ, and the padding carries no information.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The HMAC key of a Standard Webhooks secret: base64 (padded or not) after the `whsec_` prefix.
pub fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    LENIENT_BASE64.decode(encoded).ok()
}

/// The Standard Webhooks `v1` signature (base64) of a message, for senders and tests.
pub fn sign_standard(secret: &str, id: &str, timestamp_s: i64, body: &[u8]) -> Option<String> {
    let mut m = mac(&standard_key(secret)?);
    m.update(format!("{id}.{timestamp_s}.").as_bytes());
    m.update(body);
    Some(base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()))
}

/// Verifies Standard Webhooks headers against any of `secrets`.
pub fn verify_standard(
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    secrets: &[&str],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let id = id.ok_or(SignatureError::MissingHeader("webhook-id"))?;
    let timestamp = timestamp.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
    let signature = signature.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed {
            header: "webhook-timestamp",
            reason: "not a unix timestamp".into(),
        })?;
    check_tolerance(ts, now_s, tolerance_s)?;
    let candidates: Vec<Vec<u8>> = signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| LENIENT_BASE64.decode(b64).ok())
        .collect();
    if candidates.is_empty() {
        return Err(SignatureError::Malformed {
            header: "webhook-signature",
            reason: "no v1 signature".into(),
        });
    }
    for secret in secrets {
        let Some(key) = standard_key(secret) else {
            continue;
        };
        for candidate in &candidates {
            let mut m = mac(&key);
            m.update(id.as_bytes());
            m.update(b".");
            m.update(timestamp.trim().as_bytes());
            m.update(b".");
            m.update(body);
            if m.verify_slice(candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::NoMatch)
}

/// A fresh secret: `whsec_` + base64 of 32 random bytes (valid for both schemes).
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1_649_367_553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    #[test]
    fn standard_webhooks_official_vector() {
        assert_eq!(
            sign_standard(SECRET, ID, TS, BODY).as_deref(),
            Some("tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
        let header = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        let ok = verify_standard(
            Some(ID),
            Some("1649367553"),
            Some(header),
            BODY,
            &[SECRET],
            TS,
            300,
        );
        assert_eq!(ok, Ok(()));
        let tampered = br#"{"email":"test@example.com","username":"test_usex"}"#;
        let bad = verify_standard(
            Some(ID),
            Some("1649367553"),
            Some(header),
            tampered,
            &[SECRET],
            TS,
            300,
        );
        assert_eq!(bad, Err(SignatureError::NoMatch));
        let late = verify_standard(
            Some(ID),
            Some("1649367553"),
            Some(header),
            BODY,
            &[SECRET],
            TS + 301,
            300,
        );
        assert_eq!(late, Err(SignatureError::Tolerance(301)));
    }

    #[test]
    fn unpadded_base64_secrets_and_signatures_are_accepted() {
        // 20 bytes: base64 ends in one `=`.
        let padded = "whsec_AAECAwQFBgcICQoLDA0ODxAREhM=";
        let unpadded = padded.trim_end_matches('=');
        assert_eq!(standard_key(unpadded), standard_key(padded));
        assert_eq!(standard_key(unpadded).map(|k| k.len()), Some(20));
        let sig = sign_standard(unpadded, ID, TS, BODY).expect("signs");
        assert!(sig.ends_with('='));
        let header = format!("v1,{}", sig.trim_end_matches('='));
        let ok = verify_standard(
            Some(ID),
            Some("1649367553"),
            Some(&header),
            BODY,
            &[padded],
            TS,
            300,
        );
        assert_eq!(ok, Ok(()));
    }

    #[test]
    fn stripe_scheme_accepts_any_v1_and_ignores_v0() {
        let sig = sign_stripe("whsec_test", 1000, b"{}");
        let header = format!("t=1000,v1=deadbeef,v1={sig},v0=abc");
        assert_eq!(
            verify_stripe(Some(&header), b"{}", &["whsec_test"], 1000, 300),
            Ok(1000)
        );
        let v0_only = format!("t=1000,v0={sig}");
        assert!(matches!(
            verify_stripe(Some(&v0_only), b"{}", &["whsec_test"], 1000, 300),
            Err(SignatureError::Malformed { .. })
        ));
        assert_eq!(
            verify_stripe(Some(&header), b"{} ", &["whsec_test"], 1000, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify_stripe(Some(&header), b"{}", &["other", "whsec_test"], 1000, 300),
            Ok(1000),
            "any active secret may match"
        );
    }
}
