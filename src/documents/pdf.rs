//! The PDF form of a document, written in-process with krilla and the embedded DejaVu Sans
//! (Latin, Greek and Cyrillic), subset to the glyphs used.
//!
//! Rendering is two steps: [`layout`] turns the document into pages of drawing operations in
//! A4 points (top-left origin), breaking pages when the lines overflow and repeating the table
//! header; [`render`] draws them. The output is deterministic: the metadata holds no date and
//! krilla derives the document id from the content, so the same document gives the same bytes.
//! A PNG logo is drawn; an SVG logo is shown in the HTML form only (krilla draws SVG through a
//! separate crate that would add a full SVG parser for one image).
//!
//! `f32` here is page geometry only (positions, font sizes, glyph widths: krilla's unit). No
//! amount or quantity is ever a float: they arrive as text, formatted by `money.rs` from
//! integer minor units and exact decimals.

use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect, Size, Transform};
use krilla::image::Image;
use krilla::metadata::Metadata;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::text::{Font, TextDirection};

use super::model::{DocLine, Document, LogoType, Party};

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/LICENSE-DejaVu.txt`).
static REGULAR_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// DejaVu Sans Bold.
static BOLD_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");

/// A4 width, points.
const PAGE_W: f32 = 595.28;
/// A4 height, points.
const PAGE_H: f32 = 841.89;
const LEFT: f32 = 48.0;
const RIGHT: f32 = PAGE_W - 48.0;
const TOP: f32 = 52.0;
/// Content stops here; the footer lives below.
const BOTTOM: f32 = PAGE_H - 70.0;

const INK: (u8, u8, u8) = (31, 35, 40);
const MUTED: (u8, u8, u8) = (87, 96, 106);
const ACCENT: (u8, u8, u8) = (47, 93, 138);
const RULE: (u8, u8, u8) = (208, 215, 222);
const SHADE: (u8, u8, u8) = (243, 245, 248);
const ALERT: (u8, u8, u8) = (207, 34, 46);

/// Why a PDF could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PdfError {
    /// The embedded font did not load (a build defect).
    #[error("the embedded font could not be loaded")]
    Font,
    /// The PDF writer failed.
    #[error("the PDF could not be written: {0}")]
    Write(String),
}

/// The face of the regular or bold font.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Body text.
    Regular,
    /// Headings and totals.
    Bold,
}

/// One drawing operation, in points from the page's top-left corner.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Text with its baseline starting at `(x, y)`.
    Text {
        /// Left edge.
        x: f32,
        /// Baseline.
        y: f32,
        /// Font size, points.
        size: f32,
        /// Face.
        weight: Weight,
        /// Colour.
        color: (u8, u8, u8),
        /// What to write.
        text: String,
    },
    /// A filled rectangle.
    Rect {
        /// Left.
        x: f32,
        /// Top.
        y: f32,
        /// Width.
        w: f32,
        /// Height.
        h: f32,
        /// Colour.
        color: (u8, u8, u8),
    },
    /// A horizontal rule.
    Rule {
        /// Start.
        x1: f32,
        /// End.
        x2: f32,
        /// Height.
        y: f32,
        /// Thickness.
        width: f32,
        /// Colour.
        color: (u8, u8, u8),
    },
    /// The logo scaled into a box.
    Logo {
        /// Left.
        x: f32,
        /// Top.
        y: f32,
        /// Width.
        w: f32,
        /// Height.
        h: f32,
    },
}

/// Text measurement with the embedded fonts' advance widths.
struct Metrics {
    regular: ttf_parser::Face<'static>,
    bold: ttf_parser::Face<'static>,
}

impl Metrics {
    fn load() -> Result<Metrics, PdfError> {
        Ok(Metrics {
            regular: ttf_parser::Face::parse(REGULAR_TTF, 0).map_err(|_| PdfError::Font)?,
            bold: ttf_parser::Face::parse(BOLD_TTF, 0).map_err(|_| PdfError::Font)?,
        })
    }

    /// Width of `text` at `size` points.
    fn width(&self, text: &str, size: f32, weight: Weight) -> f32 {
        let face = match weight {
            Weight::Regular => &self.regular,
            Weight::Bold => &self.bold,
        };
        let units: u32 = text
            .chars()
            .map(|c| {
                let glyph = face.glyph_index(c).unwrap_or(ttf_parser::GlyphId(0));
                u32::from(face.glyph_hor_advance(glyph).unwrap_or(0))
            })
            .sum();
        units as f32 * size / f32::from(face.units_per_em())
    }

    /// Breaks `text` into lines no wider than `max_width`, at spaces, or inside a word that
    /// alone is too wide.
    fn wrap(&self, text: &str, size: f32, weight: Weight, max_width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
                let candidate = if line.is_empty() {
                    word.to_string()
                } else {
                    format!("{line} {word}")
                };
                if self.width(&candidate, size, weight) <= max_width {
                    line = candidate;
                    continue;
                }
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                for c in word.chars() {
                    line.push(c);
                    if self.width(&line, size, weight) > max_width && line.chars().count() > 1 {
                        line.pop();
                        lines.push(std::mem::replace(&mut line, c.to_string()));
                    }
                }
            }
            lines.push(line);
        }
        lines
    }
}

/// Columns of the lines table: description and period are wrapped in their width, the
/// figures are right-aligned at their right edge.
const COL_DESCRIPTION: (f32, f32) = (LEFT, 170.0);
const COL_PERIOD: (f32, f32) = (224.0, 106.0);
const COL_QUANTITY_RIGHT: f32 = 392.0;
const COL_UNIT_PRICE_RIGHT: f32 = 466.0;
const COL_AMOUNT_RIGHT: f32 = RIGHT;

const BODY: f32 = 9.0;
const SMALL: f32 = 8.0;
const LEAD: f32 = 12.5;

/// Pages of drawing operations.
struct Pages<'a> {
    metrics: &'a Metrics,
    pages: Vec<Vec<Op>>,
    y: f32,
}

impl Pages<'_> {
    fn ops(&mut self) -> &mut Vec<Op> {
        if self.pages.is_empty() {
            self.pages.push(Vec::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    fn text(&mut self, x: f32, y: f32, size: f32, weight: Weight, color: (u8, u8, u8), text: &str) {
        if text.trim().is_empty() {
            return;
        }
        self.ops().push(Op::Text {
            x,
            y,
            size,
            weight,
            color,
            text: text.to_string(),
        });
    }

    fn text_right(
        &mut self,
        right: f32,
        y: f32,
        size: f32,
        weight: Weight,
        color: (u8, u8, u8),
        text: &str,
    ) {
        let w = self.metrics.width(text, size, weight);
        self.text(right - w, y, size, weight, color, text);
    }

    fn rule(&mut self, y: f32, width: f32, color: (u8, u8, u8)) {
        self.ops().push(Op::Rule {
            x1: LEFT,
            x2: RIGHT,
            y,
            width,
            color,
        });
    }

    /// Starts a new page when `height` more points would not fit.
    fn ensure(&mut self, height: f32) -> bool {
        if self.y + height <= BOTTOM {
            return false;
        }
        self.pages.push(Vec::new());
        self.y = TOP;
        true
    }

    fn paragraph(&mut self, text: &str, size: f32, color: (u8, u8, u8)) {
        for line in self.metrics.wrap(text, size, Weight::Regular, RIGHT - LEFT) {
            self.ensure(LEAD);
            let y = self.y + size;
            self.text(LEFT, y, size, Weight::Regular, color, &line);
            self.y += LEAD;
        }
    }
}

/// Lays the document out on A4 pages.
pub fn layout(doc: &Document, logo_size: Option<(u32, u32)>) -> Result<Vec<Vec<Op>>, PdfError> {
    let metrics = Metrics::load()?;
    let mut p = Pages {
        metrics: &metrics,
        pages: vec![Vec::new()],
        y: TOP,
    };
    header(&mut p, doc, logo_size);
    bill_to(&mut p, &doc.buyer);
    lines_table(&mut p, doc);
    totals(&mut p, doc);
    closing(&mut p, doc);
    footers(&mut p, doc);
    Ok(p.pages)
}

fn header(p: &mut Pages, doc: &Document, logo_size: Option<(u32, u32)>) {
    // Left: logo and seller. Right: title and the document's facts.
    let mut left_y = TOP;
    if let Some((w, h)) = logo_size.filter(|(w, h)| *w > 0 && *h > 0) {
        let scale = (150.0 / w as f32).min(50.0 / h as f32);
        let (w, h) = (w as f32 * scale, h as f32 * scale);
        p.ops().push(Op::Logo {
            x: LEFT,
            y: left_y,
            w,
            h,
        });
        left_y += h + 10.0;
    }
    if !doc.seller.is_empty() {
        party(p, &doc.seller, LEFT, left_y, 250.0);
        left_y += party_height(p.metrics, &doc.seller, 250.0);
    }

    let mut right_y = TOP + 20.0;
    p.text_right(RIGHT, right_y, 22.0, Weight::Bold, ACCENT, doc.kind.title());
    right_y += 22.0;
    let mut facts = Vec::new();
    if let Some(number) = &doc.number {
        facts.push(("Number", number.clone()));
    }
    facts.push(("Issued", doc.date(doc.issued_at_ms)));
    facts.push(("Period", doc.period(doc.period_start_ms, doc.period_end_ms)));
    for (label, value) in facts {
        let value_w = p.metrics.width(&value, BODY, Weight::Regular);
        p.text_right(RIGHT, right_y, BODY, Weight::Regular, INK, &value);
        p.text_right(
            RIGHT - value_w - 10.0,
            right_y,
            BODY,
            Weight::Regular,
            MUTED,
            label,
        );
        right_y += LEAD;
    }
    if doc.status != "finalized" {
        let status = doc.status.to_uppercase();
        right_y += 4.0;
        p.text_right(RIGHT, right_y, 11.0, Weight::Bold, ALERT, &status);
        right_y += LEAD;
    }
    p.y = left_y.max(right_y) + 8.0;
    p.rule(p.y, 1.5, ACCENT);
    p.y += 22.0;
}

fn party_height(metrics: &Metrics, party: &Party, width: f32) -> f32 {
    let heading = metrics
        .wrap(party.heading(), 10.5, Weight::Bold, width)
        .len();
    let details: usize = party
        .detail_lines()
        .iter()
        .map(|l| metrics.wrap(l, BODY, Weight::Regular, width).len())
        .sum();
    (heading + details) as f32 * LEAD + 4.0
}

/// Writes a party's heading and lines from `top`, wrapped to `width`.
fn party(p: &mut Pages, party: &Party, x: f32, top: f32, width: f32) {
    let metrics = p.metrics;
    let mut y = top + 10.5;
    for line in metrics.wrap(party.heading(), 10.5, Weight::Bold, width) {
        p.text(x, y, 10.5, Weight::Bold, INK, &line);
        y += LEAD;
    }
    for detail in party.detail_lines() {
        for line in metrics.wrap(&detail, BODY, Weight::Regular, width) {
            p.text(x, y, BODY, Weight::Regular, MUTED, &line);
            y += LEAD;
        }
    }
}

fn bill_to(p: &mut Pages, buyer: &Party) {
    p.text(LEFT, p.y, 7.5, Weight::Bold, MUTED, "BILL TO");
    p.y += 6.0;
    party(p, buyer, LEFT, p.y, 300.0);
    p.y += party_height(p.metrics, buyer, 300.0) + 16.0;
}

fn table_header(p: &mut Pages) {
    let top = p.y - 2.0;
    p.ops().push(Op::Rect {
        x: LEFT,
        y: top,
        w: RIGHT - LEFT,
        h: 16.0,
        color: SHADE,
    });
    let y = p.y + 8.5;
    let (size, weight, color) = (7.5, Weight::Bold, MUTED);
    p.text(COL_DESCRIPTION.0, y, size, weight, color, "DESCRIPTION");
    p.text(COL_PERIOD.0, y, size, weight, color, "PERIOD");
    p.text_right(COL_QUANTITY_RIGHT, y, size, weight, color, "QUANTITY");
    p.text_right(COL_UNIT_PRICE_RIGHT, y, size, weight, color, "UNIT PRICE");
    p.text_right(COL_AMOUNT_RIGHT, y, size, weight, color, "AMOUNT");
    p.y += 14.0;
    p.rule(p.y, 0.8, MUTED);
    p.y += 4.0;
}

fn lines_table(p: &mut Pages, doc: &Document) {
    table_header(p);
    for line in &doc.lines {
        line_row(p, doc, line);
    }
}

fn line_row(p: &mut Pages, doc: &Document, line: &DocLine) {
    let metrics = p.metrics;
    let mut description = metrics.wrap(&line.description, BODY, Weight::Regular, COL_DESCRIPTION.1);
    if let Some(tax) = &line.tax_label {
        description.push(tax.clone());
    }
    // A period too wide for its column breaks after the dash, not inside a date.
    let mut period_text = doc.period(line.period_start_ms, line.period_end_ms);
    if metrics.width(&period_text, SMALL, Weight::Regular) > COL_PERIOD.1 {
        period_text = period_text.replacen(" – ", " –\n", 1);
    }
    let period = metrics.wrap(&period_text, SMALL, Weight::Regular, COL_PERIOD.1);
    let rows = description.len().max(period.len()).max(1);
    let height = rows as f32 * LEAD + 8.0;
    if p.ensure(height) {
        table_header(p);
    }
    let baseline = p.y + 4.0 + BODY;
    for (i, text) in description.iter().enumerate() {
        let y = baseline + i as f32 * LEAD;
        p.text(COL_DESCRIPTION.0, y, BODY, Weight::Regular, INK, text);
    }
    for (i, text) in period.iter().enumerate() {
        let y = baseline + i as f32 * LEAD;
        p.text(COL_PERIOD.0, y, SMALL, Weight::Regular, MUTED, text);
    }
    p.text_right(
        COL_QUANTITY_RIGHT,
        baseline,
        BODY,
        Weight::Regular,
        INK,
        &line.quantity,
    );
    p.text_right(
        COL_UNIT_PRICE_RIGHT,
        baseline,
        BODY,
        Weight::Regular,
        INK,
        &line.unit_price,
    );
    let amount = doc.money(line.amount_minor);
    p.text_right(
        COL_AMOUNT_RIGHT,
        baseline,
        BODY,
        Weight::Regular,
        INK,
        &amount,
    );
    p.y += height;
    p.rule(p.y, 0.5, RULE);
}

fn totals(p: &mut Pages, doc: &Document) {
    let label_x = 330.0;
    let rows = doc.totals();
    let height = rows.len() as f32 * LEAD + 40.0;
    p.y += 12.0;
    p.ensure(height);
    for (label, amount) in rows {
        let y = p.y + BODY;
        p.text(label_x, y, BODY, Weight::Regular, INK, &label);
        p.text_right(RIGHT, y, BODY, Weight::Regular, INK, &amount);
        p.y += LEAD + 2.0;
    }
    p.y += 2.0;
    let y = p.y;
    p.ops().push(Op::Rule {
        x1: label_x,
        x2: RIGHT,
        y,
        width: 1.5,
        color: ACCENT,
    });
    p.y += 6.0;
    let y = p.y + 12.0;
    let due = doc.money(doc.amount_due_minor);
    p.text(label_x, y, 12.0, Weight::Bold, INK, doc.kind.due_label());
    p.text_right(RIGHT, y, 12.0, Weight::Bold, INK, &due);
    p.y += 28.0;
}

fn closing(p: &mut Pages, doc: &Document) {
    for note in &doc.notes {
        p.paragraph(note, BODY, INK);
        p.y += 6.0;
    }
    if let Some(instructions) = &doc.payment_instructions {
        p.y += 6.0;
        p.ensure(LEAD * 2.0);
        p.text(LEFT, p.y + 7.5, 7.5, Weight::Bold, MUTED, "PAYMENT");
        p.y += 13.0;
        p.paragraph(instructions, BODY, INK);
    }
}

fn footers(p: &mut Pages, doc: &Document) {
    let count = p.pages.len();
    let footer = doc.footer.clone().unwrap_or_default();
    let metrics = p.metrics;
    for (i, ops) in p.pages.iter_mut().enumerate() {
        let y = PAGE_H - 40.0;
        ops.push(Op::Rule {
            x1: LEFT,
            x2: RIGHT,
            y: y - 12.0,
            width: 0.5,
            color: RULE,
        });
        let page_label = format!("Page {} of {count}", i + 1);
        let label_w = metrics.width(&page_label, 7.5, Weight::Regular);
        let footer_lines =
            metrics.wrap(&footer, 7.5, Weight::Regular, RIGHT - LEFT - label_w - 20.0);
        for (n, line) in footer_lines
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
        {
            ops.push(text_op(LEFT, y + n as f32 * 10.0, 7.5, MUTED, line));
        }
        ops.push(text_op(RIGHT - label_w, y, 7.5, MUTED, &page_label));
    }
}

fn text_op(x: f32, y: f32, size: f32, color: (u8, u8, u8), text: &str) -> Op {
    Op::Text {
        x,
        y,
        size,
        weight: Weight::Regular,
        color,
        text: text.to_string(),
    }
}

/// The PDF bytes of a document.
pub fn render(doc: &Document) -> Result<Vec<u8>, PdfError> {
    let png = doc
        .logo
        .as_ref()
        .filter(|l| l.media_type == LogoType::Png)
        .and_then(|l| Image::from_png(l.bytes.clone().into(), true).ok());
    match draw(doc, png.clone()) {
        // A logo that fails to decode only when written is left out rather than failing the
        // document.
        Err(_) if png.is_some() => draw(doc, None),
        other => other,
    }
}

fn draw(doc: &Document, logo: Option<Image>) -> Result<Vec<u8>, PdfError> {
    let pages = layout(doc, logo.as_ref().map(Image::size))?;
    let regular = Font::new(REGULAR_TTF.into(), 0).ok_or(PdfError::Font)?;
    let bold = Font::new(BOLD_TTF.into(), 0).ok_or(PdfError::Font)?;
    let mut pdf = krilla::Document::new();
    pdf.set_metadata(
        Metadata::new()
            .title(doc.heading())
            .language(doc.locale.clone())
            .producer("Tally".to_string()),
    );
    let settings = PageSettings::from_wh(PAGE_W, PAGE_H).ok_or(PdfError::Font)?;
    for ops in pages {
        let mut page = pdf.start_page_with(settings.clone());
        let mut surface = page.surface();
        for op in ops {
            match op {
                Op::Text {
                    x,
                    y,
                    size,
                    weight,
                    color,
                    text,
                } => {
                    surface.set_stroke(None);
                    surface.set_fill(Some(fill(color)));
                    let font = match weight {
                        Weight::Regular => regular.clone(),
                        Weight::Bold => bold.clone(),
                    };
                    surface.draw_text(
                        Point::from_xy(x, y),
                        font,
                        size,
                        &text,
                        false,
                        TextDirection::Auto,
                    );
                }
                Op::Rect { x, y, w, h, color } => {
                    if let Some(path) = Rect::from_xywh(x, y, w, h).and_then(|r| {
                        let mut pb = PathBuilder::new();
                        pb.push_rect(r);
                        pb.finish()
                    }) {
                        surface.set_stroke(None);
                        surface.set_fill(Some(fill(color)));
                        surface.draw_path(&path);
                    }
                }
                Op::Rule {
                    x1,
                    x2,
                    y,
                    width,
                    color,
                } => {
                    let mut pb = PathBuilder::new();
                    pb.move_to(x1, y);
                    pb.line_to(x2, y);
                    if let Some(path) = pb.finish() {
                        surface.set_fill(None);
                        surface.set_stroke(Some(Stroke {
                            paint: rgb::Color::new(color.0, color.1, color.2).into(),
                            width,
                            ..Stroke::default()
                        }));
                        surface.draw_path(&path);
                    }
                }
                Op::Logo { x, y, w, h } => {
                    if let (Some(image), Some(size)) = (logo.clone(), Size::from_wh(w, h)) {
                        surface.push_transform(&Transform::from_translate(x, y));
                        surface.draw_image(image, size);
                        surface.pop();
                    }
                }
            }
        }
        surface.finish();
        page.finish();
    }
    pdf.finish().map_err(|e| PdfError::Write(format!("{e:?}")))
}

fn fill(color: (u8, u8, u8)) -> Fill {
    Fill {
        paint: rgb::Color::new(color.0, color.1, color.2).into(),
        ..Fill::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::model::tests::sample;
    use crate::documents::model::Logo;

    #[test]
    fn the_same_document_gives_the_same_bytes() {
        let doc = sample("en-US", "USD");
        let first = render(&doc).unwrap();
        let second = render(&doc).unwrap();
        assert!(first.starts_with(b"%PDF-"));
        assert_eq!(blake3::hash(&first), blake3::hash(&second));
        let mut other = doc.clone();
        other.buyer.name = "Someone else".to_string();
        other.buyer.legal_name = None;
        assert_ne!(blake3::hash(&render(&other).unwrap()), blake3::hash(&first));
    }

    #[test]
    fn the_font_is_subset() {
        let pdf = render(&sample("en-US", "USD")).unwrap();
        assert!(pdf.len() < 120_000, "{} bytes", pdf.len());
    }

    #[test]
    fn many_lines_break_onto_pages_with_the_header_repeated() {
        let mut doc = sample("de-DE", "EUR");
        let line = doc.lines[1].clone();
        doc.lines = vec![line; 120];
        let pages = layout(&doc, None).unwrap();
        assert!(pages.len() >= 3, "{} pages", pages.len());
        for page in &pages {
            let has = |wanted: &str| {
                page.iter()
                    .any(|op| matches!(op, Op::Text { text, .. } if text == wanted))
            };
            assert_eq!(has("API requests"), has("DESCRIPTION"));
            for op in page {
                if let Op::Text { y, .. } = op {
                    assert!(*y <= PAGE_H - 20.0);
                }
            }
        }
        let last = pages.last().unwrap();
        assert!(last
            .iter()
            .any(|op| matches!(op, Op::Text { text, .. } if text == "Amount due")));
        let label = format!("Page {n} of {n}", n = pages.len());
        assert!(last
            .iter()
            .any(|op| matches!(op, Op::Text { text, .. } if *text == label)));
        assert!(render(&doc).unwrap().starts_with(b"%PDF-"));
    }

    #[test]
    fn wraps_long_words_and_sentences() {
        let metrics = Metrics::load().unwrap();
        let lines = metrics.wrap(&"x".repeat(200), BODY, Weight::Regular, 100.0);
        assert!(lines.len() > 1);
        for line in &lines {
            assert!(metrics.width(line, BODY, Weight::Regular) <= 100.0);
        }
        let words = metrics.wrap("one two three four five six", BODY, Weight::Regular, 40.0);
        assert_eq!(words.join(" "), "one two three four five six");
    }

    /// The README's example page: the sample with a PNG logo. Written to the path in
    /// `INVOICE_EXAMPLE_PDF` when it is set (render page 1 with `pdftoppm` to refresh
    /// `docs/invoice-example.png`); always checked to render.
    #[test]
    fn the_readme_example_renders_with_its_logo() {
        let mut doc = sample("en-US", "USD");
        doc.logo = Some(Logo {
            media_type: LogoType::Png,
            bytes: include_bytes!("../../docs/example-logo.png").to_vec(),
        });
        let with_logo = render(&doc).unwrap();
        doc.logo = None;
        assert!(with_logo.len() > render(&doc).unwrap().len());
        if let Some(path) = std::env::var_os("INVOICE_EXAMPLE_PDF") {
            std::fs::write(path, &with_logo).unwrap();
        }
    }

    #[test]
    fn a_broken_logo_is_left_out() {
        let mut doc = sample("en-US", "USD");
        doc.logo = Some(Logo {
            media_type: LogoType::Png,
            bytes: b"not a png".to_vec(),
        });
        assert!(render(&doc).unwrap().starts_with(b"%PDF-"));
        doc.logo = Some(Logo {
            media_type: LogoType::Svg,
            bytes: b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
        });
        assert!(render(&doc).unwrap().starts_with(b"%PDF-"));
    }
}
