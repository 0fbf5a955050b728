//! Small pieces every page uses: money and time as people read them, pagination links, and
//! action forms that carry the CSRF token and an idempotency key minted at render.

use maud::{html, Markup};

use super::session::{random_token, Operator};

/// An amount in minor units as text with its currency (`12.34 EUR`); exact, no floats.
pub fn money(amount_minor: i64, currency: &str) -> String {
    let exponent = crate::currency::minor_unit_exponent(currency).unwrap_or(2);
    let negative = amount_minor < 0;
    let digits = amount_minor.unsigned_abs().to_string();
    let exponent = usize::from(exponent);
    let text = if exponent == 0 {
        digits
    } else {
        let padded = format!("{digits:0>width$}", width = exponent + 1);
        let (whole, fraction) = padded.split_at(padded.len() - exponent);
        format!("{whole}.{fraction}")
    };
    let sign = if negative { "-" } else { "" };
    format!("{sign}{text} {currency}")
}

/// A timestamp in milliseconds as UTC text (`2026-12-01 14:03:07 UTC`).
pub fn time_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => ms.to_string(),
    }
}

/// An RFC 3339 timestamp from the API, shortened for a table (`2026-12-01 14:03 UTC`).
pub fn time_text(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

/// A fresh idempotency key for a form about to be rendered: submitting the same rendered form
/// twice (a double click, a refresh, the back button) sends the same key, so the API replays.
pub fn idempotency_key() -> String {
    format!("console-{}", random_token())
}

/// How an action's button asks before acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// Acts at once.
    No,
    /// Shows a confirmation page first (destructive actions).
    Ask,
}

/// A form that posts one action: hidden CSRF token and idempotency key, the given hidden
/// fields, and a button. Read-only operators get nothing (the server refuses their posts too).
pub fn action_form(
    op: &Operator,
    action: &str,
    label: &str,
    hidden: &[(&str, &str)],
    confirm: Confirm,
) -> Markup {
    if op.read_only() {
        return html! {};
    }
    let class = if confirm == Confirm::Ask {
        "danger"
    } else {
        ""
    };
    html! {
        form.action method="post" action=(action) {
            (form_tokens(op))
            @for (name, value) in hidden {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" class=(class) { (label) }
        }
    }
}

/// The two hidden fields every console form carries.
pub fn form_tokens(op: &Operator) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(op.csrf);
        input type="hidden" name="idempotency_key" value=(idempotency_key());
    }
}

/// "Next page" and "First page" links for a list paginated with the API's cursors.
/// `base` is the page's own path with its filters (no cursor).
pub fn pager(base: &str, next_cursor: Option<&str>, on_later_page: bool) -> Markup {
    let join = if base.contains('?') { '&' } else { '?' };
    html! {
        nav.pager aria-label="Pages" {
            @if on_later_page { a href=(base) { "« First page" } }
            @if let Some(cursor) = next_cursor {
                @let encoded: String = form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
                a rel="next" href=(format!("{base}{join}starting_after={encoded}")) { "Next page »" }
            }
        }
    }
}

/// A status as a coloured label (`paid`, `void`, `failed` …).
pub fn status(text: &str) -> Markup {
    let class = match text {
        "paid" | "succeeded" | "delivered" | "active" | "accepted" | "ok" | "passed" => "good",
        "void" | "failed" | "dead" | "canceled" | "revoked" | "conflict" | "uncollectible" => "bad",
        _ => "neutral",
    };
    html! { span class=(format!("status {class}")) { (text) } }
}

/// A definition list of label → value rows (a record's fields).
pub fn fields(rows: &[(&str, Markup)]) -> Markup {
    html! {
        dl.fields {
            @for (label, value) in rows {
                dt { (label) }
                dd { (value) }
            }
        }
    }
}

/// Pretty-printed JSON in a scrollable block (payloads, metadata), escaped.
pub fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { code { (text) } } }
}

/// What an empty table says.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_in_every_exponent() {
        assert_eq!(money(1234, "EUR"), "12.34 EUR");
        assert_eq!(money(-5, "EUR"), "-0.05 EUR");
        assert_eq!(money(0, "USD"), "0.00 USD");
        assert_eq!(money(1234, "JPY"), "1234 JPY");
        assert_eq!(money(1234, "BHD"), "1.234 BHD");
        assert_eq!(money(i64::MIN, "EUR"), "-92233720368547758.08 EUR");
    }

    #[test]
    fn times_are_utc_text() {
        assert_eq!(time_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time_text("2026-12-01T14:03:07Z"), "2026-12-01 14:03 UTC");
        assert_eq!(time_text("not a time"), "not a time");
    }
}
