//! Wall-clock time as integer milliseconds, and its RFC 3339 rendering.
//!
//! Every stored instant is an `i64` of milliseconds since the Unix epoch: fixed width, sortable
//! as big-endian bytes once offset, and free of floating point.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    #[cfg(test)]
    if let Some(ms) = simulated::now_ms() {
        return ms;
    }
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // A clock before 1970 is a misconfigured host; treat it as the epoch rather than panic.
        Err(_) => 0,
    }
}

/// Test seam: a thread can read a shared simulated clock instead of the wall clock, so a
/// seeded simulation replays exactly. Only test builds have it; it is off unless a thread
/// installs a clock, and it affects only the threads that do.
#[cfg(test)]
pub(crate) mod simulated {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    thread_local! {
        static CLOCK: RefCell<Option<Arc<AtomicI64>>> = const { RefCell::new(None) };
    }

    /// Makes [`super::now_ms`] on this thread read `clock` (or the wall clock again with `None`).
    pub(crate) fn install(clock: Option<Arc<AtomicI64>>) {
        CLOCK.with(|c| *c.borrow_mut() = clock);
    }

    /// The simulated instant, when this thread has a simulated clock.
    pub(super) fn now_ms() -> Option<i64> {
        CLOCK.with(|c| c.borrow().as_ref().map(|c| c.load(Ordering::SeqCst)))
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

/// The first instant of the UTC calendar month containing `ms`.
pub fn month_start(ms: i64) -> Option<i64> {
    let utc = jiff::tz::TimeZone::UTC;
    let date = jiff::Timestamp::from_millisecond(ms)
        .ok()?
        .to_zoned(utc.clone())
        .date();
    let first = jiff::civil::Date::new(date.year(), date.month(), 1).ok()?;
    Some(first.to_zoned(utc).ok()?.timestamp().as_millisecond())
}

/// `ms` moved by `months` calendar months in UTC, clamping the day to the target month's end
/// (Jan 31 + 1 month = Feb 28 or 29).
pub fn add_months(ms: i64, months: i32) -> Option<i64> {
    let utc = jiff::tz::TimeZone::UTC;
    let zoned = jiff::Timestamp::from_millisecond(ms).ok()?.to_zoned(utc);
    let moved = zoned
        .checked_add(jiff::Span::new().try_months(months).ok()?)
        .ok()?;
    Some(moved.timestamp().as_millisecond())
}

#[cfg(test)]
mod calendar_tests {
    use super::*;

    #[test]
    fn months_clamp_to_their_end() {
        let jan31 = parse_rfc3339("2028-01-31T10:00:00Z").expect("time");
        assert_eq!(
            rfc3339(add_months(jan31, 1).expect("add")),
            "2028-02-29T10:00:00.000Z"
        );
        let start = month_start(jan31).expect("start");
        assert_eq!(rfc3339(start), "2028-01-01T00:00:00.000Z");
    }
}
