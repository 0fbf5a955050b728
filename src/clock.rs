//! Wall-clock time as integer milliseconds, and its RFC 3339 rendering.
//!
//! Every stored instant is an `i64` of milliseconds since the Unix epoch: fixed width, sortable
//! as big-endian bytes once offset, and free of floating point.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // A clock before 1970 is a misconfigured host; treat it as the epoch rather than panic.
        Err(_) => 0,
    }
}

/// Renders an instant as RFC 3339 in UTC with millisecond precision, the only time format the
/// API speaks.
pub fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => String::from("invalid-time"),
    }
}

/// Parses an RFC 3339 timestamp into milliseconds since the epoch, rejecting anything outside
/// the range jiff can represent.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let ts: jiff::Timestamp = text.parse().ok()?;
    Some(ts.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_milliseconds() {
        let ms = 1_700_000_000_123;
        let text = rfc3339(ms);
        assert_eq!(text, "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_rfc3339(&text), Some(ms));
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.123+01:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
