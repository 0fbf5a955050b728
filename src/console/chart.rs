//! Bar charts drawn on the server as inline SVG: no script, no font, exact arithmetic.

use maud::{html, Markup};
use rust_decimal::Decimal;

/// Width of the drawing area in SVG units (it scales to its container).
const WIDTH: u32 = 720;
/// Height of the bars' area.
const HEIGHT: u32 = 160;
/// Room below the bars for the first and last labels.
const LABEL_ROOM: u32 = 18;

/// One bar: its label (shown on hover and, for the ends, under the axis) and its value.
#[derive(Debug, Clone)]
pub struct Bar {
    /// What the bar stands for (`14:05`, `2026-11-30`).
    pub label: String,
    /// Its value (negative values are drawn as zero).
    pub value: Decimal,
}

/// A bar chart with an accessible title and a text summary of its largest value.
pub fn bars(title: &str, unit: &str, bars: &[Bar]) -> Markup {
    let max = bars
        .iter()
        .map(|b| b.value)
        .fold(Decimal::ZERO, Decimal::max);
    let count = u32::try_from(bars.len()).unwrap_or(u32::MAX).max(1);
    let slot = (WIDTH / count).max(1);
    let gap = if slot > 4 { 1 } else { 0 };
    let total_height = HEIGHT + LABEL_ROOM;
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {WIDTH} {total_height}")) role="img"
                aria-label=(format!("{title}; largest value {max} {unit}")) {
                line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) class="axis" {}
                @for (i, bar) in bars.iter().enumerate() {
                    @let x = u32::try_from(i).unwrap_or(0).saturating_mul(slot);
                    @let h = scaled(bar.value, max);
                    rect x=(x) y=(HEIGHT - h) width=(slot.saturating_sub(gap).max(1)) height=(h) {
                        title { (bar.label) ": " (bar.value) " " (unit) }
                    }
                }
                @if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
                    text x="0" y=(total_height - 4) class="label" { (first.label) }
                    text x=(WIDTH) y=(total_height - 4) class="label end" { (last.label) }
                }
            }
            figcaption { (title) " — peak " (max) " " (unit) }
        }
    }
}

/// A bar's height: value / max of the drawing height, rounded down, at least 1 for a non-zero
/// value so it stays visible.
fn scaled(value: Decimal, max: Decimal) -> u32 {
    if value <= Decimal::ZERO || max <= Decimal::ZERO {
        return 0;
    }
    let h = value
        .checked_mul(Decimal::from(HEIGHT))
        .and_then(|v| v.checked_div(max))
        .unwrap_or(Decimal::ZERO)
        .floor();
    u32::try_from(h.mantissa() / 10i128.pow(h.scale()))
        .unwrap_or(HEIGHT)
        .clamp(1, HEIGHT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_small_ones_stay_visible() {
        assert_eq!(scaled(Decimal::from(10), Decimal::from(10)), HEIGHT);
        assert_eq!(scaled(Decimal::from(5), Decimal::from(10)), HEIGHT / 2);
        assert_eq!(scaled(Decimal::new(1, 3), Decimal::from(1_000_000)), 1);
        assert_eq!(scaled(Decimal::ZERO, Decimal::from(10)), 0);
        assert_eq!(scaled(Decimal::from(-3), Decimal::from(10)), 0);
        assert_eq!(scaled(Decimal::from(3), Decimal::ZERO), 0);
    }

    #[test]
    fn labels_are_escaped() {
        let svg = bars(
            "<b>",
            "ev",
            &[Bar {
                label: "<script>".into(),
                value: Decimal::ONE,
            }],
        )
        .into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
    }
}
