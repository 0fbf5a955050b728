//! The HTML form of a document: one self-contained, print-ready page (inline CSS, system
//! fonts, no scripts, no external resources; the logo is a `data:` URI).
//!
//! Every piece of text from the model goes through [`escape`] as it is written, and the page
//! is assembled only from constant markup and escaped text, so a customer named
//! `<script>…` prints as text.

use std::fmt::Write as _;

use base64::Engine as _;

use super::model::{DocLine, Document, Party};

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
@page{size:A4;margin:16mm 14mm}\
*{box-sizing:border-box}\
body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;font-size:10pt;color:#1f2328;margin:0;padding:24px;max-width:210mm;margin:auto}\
header{display:flex;justify-content:space-between;align-items:flex-start;border-bottom:2px solid #2f5d8a;padding-bottom:12px}\
h1{font-size:20pt;margin:0 0 4px 0;color:#2f5d8a;font-weight:600}\
.logo{max-height:56px;max-width:200px;display:block;margin-bottom:6px}\
.party .name{font-weight:600}\
.muted{color:#57606a}\
.parties{display:flex;justify-content:space-between;margin:18px 0}\
.parties>div{width:48%}\
.label{font-size:8pt;text-transform:uppercase;letter-spacing:.05em;color:#57606a;margin-bottom:4px}\
table.meta td{padding:1px 0 1px 12px}\
table.meta td:first-child{color:#57606a;padding-left:0}\
table.lines{width:100%;border-collapse:collapse;margin-top:8px}\
table.lines th{font-size:8pt;text-transform:uppercase;color:#57606a;text-align:left;border-bottom:1px solid #8c959f;padding:6px 4px}\
table.lines td{border-bottom:1px solid #d0d7de;padding:6px 4px;vertical-align:top}\
table.lines tr{page-break-inside:avoid}\
.num{text-align:right!important;white-space:nowrap}\
table.totals{margin-left:auto;margin-top:12px;border-collapse:collapse;min-width:45%}\
table.totals td{padding:3px 4px}\
table.totals tr.due td{font-weight:700;font-size:12pt;border-top:2px solid #2f5d8a;padding-top:6px}\
.status{display:inline-block;border:1px solid #cf222e;color:#cf222e;padding:1px 6px;border-radius:3px;font-size:9pt;text-transform:uppercase}\
section{margin-top:16px}\
footer{margin-top:28px;border-top:1px solid #d0d7de;padding-top:8px;font-size:8pt;color:#57606a}\
@media print{body{padding:0}}";

/// The complete page.
pub fn render(doc: &Document) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let lang = escape(&doc.locale);
    let title = escape(&doc.heading());
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>"
    );
    header(&mut out, doc);
    parties(&mut out, doc);
    lines(&mut out, doc);
    totals(&mut out, doc);
    closing(&mut out, doc);
    out.push_str("</body></html>\n");
    out
}

fn header(out: &mut String, doc: &Document) {
    out.push_str("<header><div class=\"party\">");
    if let Some(logo) = &doc.logo {
        let data = base64::engine::general_purpose::STANDARD.encode(&logo.bytes);
        let _ = write!(
            out,
            "<img class=\"logo\" alt=\"\" src=\"data:{};base64,{data}\">",
            logo.media_type.media_type()
        );
    }
    party(out, &doc.seller);
    let _ = write!(
        out,
        "</div><div><h1>{}</h1><table class=\"meta\">",
        escape(doc.kind.title())
    );
    let mut meta = |label: &str, value: &str| {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(label),
            escape(value)
        );
    };
    if let Some(number) = &doc.number {
        meta("Number", number);
    }
    meta("Issued", &doc.date(doc.issued_at_ms));
    meta(
        "Period",
        &doc.period(doc.period_start_ms, doc.period_end_ms),
    );
    out.push_str("</table>");
    if doc.status != "finalized" {
        let _ = write!(out, "<p class=\"status\">{}</p>", escape(&doc.status));
    }
    out.push_str("</div></header>");
}

fn party(out: &mut String, party: &Party) {
    let _ = write!(out, "<div class=\"name\">{}</div>", escape(party.heading()));
    for line in party.detail_lines() {
        let _ = write!(out, "<div class=\"muted\">{}</div>", escape(&line));
    }
}

fn parties(out: &mut String, doc: &Document) {
    out.push_str("<div class=\"parties\"><div class=\"party\"><div class=\"label\">Bill to</div>");
    party(out, &doc.buyer);
    out.push_str("</div><div class=\"party\">");
    if !doc.seller.is_empty() {
        out.push_str("<div class=\"label\">From</div>");
        party(out, &doc.seller);
    }
    out.push_str("</div></div>");
}

fn lines(out: &mut String, doc: &Document) {
    out.push_str(
        "<table class=\"lines\"><thead><tr><th>Description</th><th>Period</th>\
         <th class=\"num\">Quantity</th><th class=\"num\">Unit price</th>\
         <th class=\"num\">Amount</th></tr></thead><tbody>",
    );
    for line in &doc.lines {
        line_row(out, doc, line);
    }
    out.push_str("</tbody></table>");
}

fn line_row(out: &mut String, doc: &Document, line: &DocLine) {
    let _ = write!(out, "<tr><td>{}", escape(&line.description));
    if let Some(tax) = &line.tax_label {
        let _ = write!(out, "<div class=\"muted\">{}</div>", escape(tax));
    }
    let _ = write!(
        out,
        "</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td></tr>",
        escape(&doc.period(line.period_start_ms, line.period_end_ms)),
        escape(&line.quantity),
        escape(&line.unit_price),
        escape(&doc.money(line.amount_minor)),
    );
}

fn totals(out: &mut String, doc: &Document) {
    out.push_str("<table class=\"totals\">");
    for (label, amount) in doc.totals() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(&label),
            escape(&amount)
        );
    }
    let _ = write!(
        out,
        "<tr class=\"due\"><td>{}</td><td class=\"num\">{}</td></tr></table>",
        escape(doc.kind.due_label()),
        escape(&doc.money(doc.amount_due_minor))
    );
}

fn closing(out: &mut String, doc: &Document) {
    for note in &doc.notes {
        let _ = write!(out, "<section><p>{}</p></section>", escape(note));
    }
    if let Some(instructions) = &doc.payment_instructions {
        let _ = write!(
            out,
            "<section><div class=\"label\">Payment</div><p>{}</p></section>",
            escape(instructions)
        );
    }
    if let Some(footer) = &doc.footer {
        let _ = write!(out, "<footer>{}</footer>", escape(footer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::model::tests::sample;
    use crate::documents::model::{Logo, LogoType};

    #[test]
    fn escapes_the_five_characters() {
        assert_eq!(
            escape("<a href=\"x\">Tom & Jerry's</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"
        );
    }

    #[test]
    fn a_customer_named_script_is_printed_as_text() {
        let mut doc = sample("en-US", "USD");
        doc.buyer.name = "<script>alert(1)</script>".to_string();
        doc.buyer.legal_name = None;
        doc.lines[0].description = "<img src=x onerror=alert(2)>".to_string();
        doc.notes = vec!["\"><script>alert(3)</script>".to_string()];
        let html = render(&doc);
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("<img src=x"));
    }

    #[test]
    fn the_page_is_self_contained() {
        let mut doc = sample("en-US", "USD");
        doc.logo = Some(Logo {
            media_type: LogoType::Png,
            bytes: vec![0x89, b'P', b'N', b'G'],
        });
        let html = render(&doc);
        assert!(html.contains("src=\"data:image/png;base64,iVBORw==\""));
        for external in ["http://", "https://", "<script", "<link", "@import", "url("] {
            assert!(!html.contains(external), "{external} in the page");
        }
    }

    #[test]
    fn tax_rows_notes_and_a_status_other_than_finalized_are_shown() {
        use crate::documents::model::TaxRow;
        let mut doc = sample("de-DE", "EUR");
        doc.tax_rows = vec![TaxRow {
            label: "USt.".to_string(),
            percentage: "19 %".to_string(),
            net_minor: 100_000,
            tax_minor: 19_000,
        }];
        doc.tax_minor = 19_000;
        doc.total_minor = 119_000;
        doc.status = "void".to_string();
        doc.notes = vec!["Steuerschuldnerschaft des Leistungsempfängers".to_string()];
        let html = render(&doc);
        assert!(html.contains("USt. 19 % on 1.000,00\u{a0}€"));
        assert_eq!(html.matches("USt.").count(), 1, "each tax once");
        assert!(html.contains("190,00\u{a0}€"));
        assert!(html.contains("1.190,00\u{a0}€"));
        assert!(html.contains("Steuerschuldnerschaft des Leistungsempfängers"));
        assert!(html.contains("<p class=\"status\">void</p>"));
        assert!(crate::documents::pdf::render(&doc)
            .unwrap()
            .starts_with(b"%PDF-"));
    }

    #[test]
    fn shows_lines_and_totals_for_the_locale() {
        let html = render(&sample("en-US", "USD"));
        assert!(html.contains("Acme Corporation"));
        assert!(html.contains("API requests"));
        assert!(html.contains("$1,997.00"));
        assert!(html.contains("$1,897.00"));
        assert!(html.contains("Nov 1, 2026 – Nov 30, 2026"));
        assert!(html.contains("Invoice INV-2026-0042"));
    }
}
