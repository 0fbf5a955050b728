//! The seller's logo: a PNG or an SVG of at most 256 KiB, checked before it is stored because
//! documents embed it as it is. A PNG must carry its signature and a well-formed chunk stream
//! whose header (`IHDR`) decodes; an SVG must be XML with an `<svg>` root and nothing that runs
//! or fetches: no `<script>` (nor `<foreignObject>`, which embeds HTML), no `on…` event
//! handler attributes, no references outside the document (`href` only to `#fragments`, no
//! `url()` but `url(#…)`, no `://`, `javascript:` or `data:` in any value) and no DTD.

use serde::{Deserialize, Serialize};

use crate::customers::details::Invalid;
use crate::store::keys::TenantId;

/// Largest logo, decoded.
pub const MAX_LOGO_BYTES: usize = 256 * 1024;
/// The accepted media types.
pub const MEDIA_TYPES: &[&str] = &["image/png", "image/svg+xml"];

/// A logo with its bytes, as the `logos` table stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logo {
    /// `image/png` or `image/svg+xml`.
    pub media_type: String,
    /// The image.
    pub data: Vec<u8>,
}

/// What settings and invoice snapshots keep of a logo: its type, hash and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogoRef {
    /// `image/png` or `image/svg+xml`.
    pub media_type: String,
    /// blake3 of the bytes: the key of the `logos` row.
    pub blake3: [u8; 32],
    /// Size in bytes.
    pub size_bytes: u64,
}

impl Logo {
    /// The reference settings and snapshots keep.
    pub fn reference(&self) -> LogoRef {
        LogoRef {
            media_type: self.media_type.clone(),
            blake3: *blake3::hash(&self.data).as_bytes(),
            size_bytes: self.data.len() as u64,
        }
    }
}

/// The `logos` key of one logo version.
pub fn key(tenant: TenantId, hash: &[u8; 32]) -> Vec<u8> {
    crate::store::keys::tenant_bytes(tenant, hash)
}

fn invalid(field: &str, detail: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_string(),
        detail: detail.into(),
    }
}

/// Checks a logo's type, size and content.
pub fn check(logo: &Logo) -> Result<(), Invalid> {
    if !MEDIA_TYPES.contains(&logo.media_type.as_str()) {
        return Err(invalid(
            "logo.media_type",
            "must be image/png or image/svg+xml",
        ));
    }
    if logo.data.is_empty() || logo.data.len() > MAX_LOGO_BYTES {
        return Err(invalid(
            "logo.data",
            format!("must be 1-{MAX_LOGO_BYTES} bytes once decoded"),
        ));
    }
    let problem = if logo.media_type == "image/png" {
        png_problem(&logo.data)
    } else {
        svg_problem(&logo.data)
    };
    match problem {
        Some(why) => Err(invalid("logo.data", why)),
        None => Ok(()),
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for part in parts {
        for &byte in *part {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                let mask = (crc & 1).wrapping_neg();
                crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            }
        }
    }
    !crc
}

fn be32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Why `data` is not a PNG, if it is not: the signature, every chunk's length and CRC up to
/// `IEND` at the very end, and a first chunk `IHDR` with a valid size, depth and colour type.
fn png_problem(data: &[u8]) -> Option<String> {
    let Some(mut rest) = data.strip_prefix(PNG_SIGNATURE) else {
        return Some("is not a PNG (no PNG signature)".into());
    };
    let mut first = true;
    loop {
        let (Some(len), Some(kind)) = (be32(rest), rest.get(4..8)) else {
            return Some("is a truncated PNG".into());
        };
        let len = len as usize;
        let Some(body) = rest.get(8..8 + len) else {
            return Some("is a truncated PNG".into());
        };
        let Some(crc) = rest.get(8 + len..).and_then(be32) else {
            return Some("is a truncated PNG".into());
        };
        if crc32(&[kind, body]) != crc {
            return Some("is a damaged PNG (a chunk's CRC does not match)".into());
        }
        if first {
            if kind != b"IHDR" {
                return Some("is not a PNG (the first chunk is not IHDR)".into());
            }
            if let Some(why) = ihdr_problem(body) {
                return Some(why);
            }
            first = false;
        }
        rest = &rest[12 + len..];
        if kind == b"IEND" {
            return (!rest.is_empty()).then(|| "has bytes after the PNG's end".into());
        }
    }
}

fn ihdr_problem(body: &[u8]) -> Option<String> {
    if body.len() != 13 {
        return Some("is not a PNG (IHDR is not 13 bytes)".into());
    }
    let (width, height) = (be32(body)?, be32(&body[4..])?);
    let valid_size = |v: u32| v > 0 && v <= i32::MAX as u32;
    if !valid_size(width) || !valid_size(height) {
        return Some("is not a PNG (a dimension is zero or too large)".into());
    }
    let depth_ok = match body[9] {
        0 => [1, 2, 4, 8, 16].contains(&body[8]),
        3 => [1, 2, 4, 8].contains(&body[8]),
        2 | 4 | 6 => [8, 16].contains(&body[8]),
        _ => false,
    };
    if !depth_ok || body[10] != 0 || body[11] != 0 || body[12] > 1 {
        return Some(
            "is not a PNG (its header's depth, colour type or methods are invalid)".into(),
        );
    }
    None
}

/// Elements that run code or embed other documents.
const FORBIDDEN_ELEMENTS: &[&str] = &[
    "script",
    "foreignobject",
    "iframe",
    "embed",
    "object",
    "handler",
    "listener",
];

/// Why `data` is not a safe SVG, if it is not.
fn svg_problem(data: &[u8]) -> Option<String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Some("is not UTF-8 text, so not an SVG".into());
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut scan = Svg::default();
    match scan.document(text) {
        Err(why) => Some(why),
        Ok(()) if !scan.saw_root => Some("is not an SVG (no <svg> root element)".into()),
        Ok(()) => None,
    }
}

#[derive(Default)]
struct Svg {
    stack: Vec<String>,
    saw_root: bool,
}

fn local_name(name: &str) -> String {
    name.rsplit(':').next().unwrap_or(name).to_ascii_lowercase()
}

/// `&…;` references decoded (the five XML ones and numeric ones); any other is refused.
fn decode_entities(value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after
            .find(';')
            .ok_or_else(|| "has an unterminated '&' reference".to_string())?;
        let name = &after[..end];
        let c = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => name
                .strip_prefix("#x")
                .or_else(|| name.strip_prefix("#X"))
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| name.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        out.push(c.ok_or_else(|| format!("has an entity &{name}; (only XML's own are allowed)"))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether decoded text (an attribute value or a style sheet) reaches outside the document.
fn external_reference(text: &str) -> bool {
    let squeezed: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if ["://", "javascript:", "data:", "@import", "//"]
        .iter()
        .any(|s| squeezed.contains(s))
    {
        return true;
    }
    squeezed.match_indices("url(").any(|(at, _)| {
        !squeezed[at + 4..]
            .trim_start_matches(['"', '\''])
            .starts_with('#')
    })
}

impl Svg {
    fn document(&mut self, mut rest: &str) -> Result<(), String> {
        while !rest.is_empty() {
            let Some(at) = rest.find('<') else {
                return self.text(rest);
            };
            self.text(&rest[..at])?;
            rest = self.markup(&rest[at..])?;
        }
        if let Some(open) = self.stack.last() {
            return Err(format!("is not well-formed XML (<{open}> is never closed)"));
        }
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), String> {
        if self.stack.is_empty() && !text.trim().is_empty() {
            return Err("is not an SVG (text outside the <svg> element)".into());
        }
        let decoded = decode_entities(text)?;
        if self.stack.last().is_some_and(|e| local_name(e) == "style")
            && external_reference(&decoded)
        {
            return Err("has a style sheet that refers outside the image".into());
        }
        Ok(())
    }

    /// One markup construct at the start of `rest`; returns what follows it.
    fn markup<'a>(&mut self, rest: &'a str) -> Result<&'a str, String> {
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after
                .find("-->")
                .ok_or_else(|| "is not well-formed XML (an unclosed comment)".to_string())?;
            return Ok(&after[end + 3..]);
        }
        if rest.starts_with("<!") {
            return Err("may not hold a DTD, entity declarations or CDATA sections".into());
        }
        if let Some(after) = rest.strip_prefix("<?") {
            let end = after
                .find("?>")
                .ok_or_else(|| "is not well-formed XML (an unclosed declaration)".to_string())?;
            if !after.starts_with("xml ") || self.saw_root {
                return Err("may hold no processing instructions but the XML declaration".into());
            }
            return Ok(&after[end + 2..]);
        }
        let end =
            tag_end(rest).ok_or_else(|| "is not well-formed XML (an unclosed tag)".to_string())?;
        let tag = &rest[1..end];
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim();
            match self.stack.pop() {
                Some(open) if open == name => {}
                _ => return Err(format!("is not well-formed XML (</{name}> does not match)")),
            }
        } else {
            let (body, empty) = match tag.strip_suffix('/') {
                Some(body) => (body, true),
                None => (tag, false),
            };
            self.element(body, empty)?;
        }
        Ok(&rest[end + 1..])
    }

    fn element(&mut self, body: &str, empty: bool) -> Result<(), String> {
        let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
        let name = &body[..name_end];
        if name.is_empty() || name.contains(['<', '>', '"', '\'', '=']) {
            return Err("is not well-formed XML (a tag without a name)".into());
        }
        if self.stack.is_empty() {
            if self.saw_root {
                return Err("is not well-formed XML (more than one root element)".into());
            }
            if local_name(name) != "svg" {
                return Err(format!("is not an SVG (its root is <{name}>, not <svg>)"));
            }
            self.saw_root = true;
        }
        if FORBIDDEN_ELEMENTS.contains(&local_name(name).as_str()) {
            return Err(format!(
                "may not contain <{name}> (it runs code or embeds a document)"
            ));
        }
        attributes(&body[name_end..])?;
        if !empty {
            self.stack.push(name.to_string());
        }
        Ok(())
    }
}

/// The index of the `>` closing the tag at the start of `rest`, skipping quoted values.
fn tag_end(rest: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in rest.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

/// Checks a tag's attributes: `name="value"` pairs, no event handlers, no external references.
fn attributes(mut rest: &str) -> Result<(), String> {
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(());
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| "is not well-formed XML (an attribute without a value)".to_string())?;
        let name = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let quote = after
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| "is not well-formed XML (an unquoted attribute)".to_string())?;
        let close = after[1..]
            .find(quote)
            .ok_or_else(|| "is not well-formed XML (an unclosed attribute)".to_string())?;
        let value = decode_entities(&after[1..1 + close])?;
        rest = &after[close + 2..];
        attribute(name, &value)?;
    }
}

fn attribute(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '<') {
        return Err("is not well-formed XML (a malformed attribute name)".into());
    }
    let lower = name.to_ascii_lowercase();
    if local_name(&lower).starts_with("on") {
        return Err(format!("may not carry event handler attributes ({name})"));
    }
    if lower == "xmlns" || lower.starts_with("xmlns:") {
        return Ok(());
    }
    if local_name(&lower) == "href" && !value.trim_start().starts_with('#') {
        return Err(format!("may refer only inside itself ({name}=\"{value}\")"));
    }
    if external_reference(value) {
        return Err(format!("may not refer outside the image ({name})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1×1 grey PNG.
    pub(crate) fn tiny_png() -> Vec<u8> {
        let mut png = PNG_SIGNATURE.to_vec();
        let mut chunk = |kind: &[u8], body: &[u8]| {
            png.extend_from_slice(&(body.len() as u32).to_be_bytes());
            png.extend_from_slice(kind);
            png.extend_from_slice(body);
            png.extend_from_slice(&crc32(&[kind, body]).to_be_bytes());
        };
        chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]);
        chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01],
        );
        chunk(b"IEND", &[]);
        png
    }

    fn logo(media_type: &str, data: &[u8]) -> Logo {
        Logo {
            media_type: media_type.into(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn crc_matches_the_png_reference_value() {
        assert_eq!(crc32(&[b"IEND"]), 0xAE42_6082);
    }

    #[test]
    fn a_real_png_passes_and_broken_ones_do_not() {
        let png = tiny_png();
        assert!(check(&logo("image/png", &png)).is_ok());
        let mut bad_crc = png.clone();
        bad_crc[29] ^= 1;
        assert!(check(&logo("image/png", &bad_crc)).is_err());
        assert!(check(&logo("image/png", &png[..20])).is_err());
        assert!(check(&logo("image/png", b"GIF89a....")).is_err());
        let mut trailing = png.clone();
        trailing.push(0);
        assert!(check(&logo("image/png", &trailing)).is_err());
        let big = vec![0u8; MAX_LOGO_BYTES + 1];
        assert_eq!(
            check(&logo("image/png", &big)).expect_err("big").field,
            "logo.data"
        );
        assert_eq!(
            check(&logo("image/gif", &png)).expect_err("gif").field,
            "logo.media_type"
        );
    }

    #[test]
    fn plain_svgs_pass() {
        for ok in [
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="#123"/></svg>"##,
            "<?xml version=\"1.0\"?>\n<!-- logo -->\n<svg xmlns=\"http://www.w3.org/2000/svg\" xmlns:xlink=\"http://www.w3.org/1999/xlink\"><defs><linearGradient id=\"g\"/></defs><use xlink:href=\"#g\"/><rect fill=\"url(#g)\"/><text>A &amp; B</text></svg>",
            "<svg><style>rect { fill: url('#g') }</style></svg>",
        ] {
            assert_eq!(svg_problem(ok.as_bytes()), None, "{ok}");
        }
    }

    #[test]
    fn dangerous_or_malformed_svgs_are_refused() {
        for bad in [
            "<svg><script>alert(1)</script></svg>",
            "<svg><SCRIPT>alert(1)</SCRIPT></svg>",
            "<svg onload=\"alert(1)\"></svg>",
            "<svg><rect ONCLICK='x()'/></svg>",
            "<svg><image href=\"https://example.com/a.png\"/></svg>",
            "<svg><image xlink:href=\"data:image/png;base64,AAAA\"/></svg>",
            "<svg><a href=\"javascript:alert(1)\"/></svg>",
            "<svg><a href=\"&#106;avascript:alert(1)\"/></svg>",
            "<svg><rect fill=\"url(https://x/y#a)\"/></svg>",
            "<svg><style>@import 'https://x/y.css';</style></svg>",
            "<svg><foreignObject><div/></foreignObject></svg>",
            "<!DOCTYPE svg [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><svg>&x;</svg>",
            "<svg><![CDATA[x]]></svg>",
            "<html><svg/></html>",
            "<svg><g></svg>",
            "<svg></svg><svg></svg>",
            "hello <svg/>",
            "<svg",
            "<svg a=b/>",
            "<svg><text>&nbsp;</text></svg>",
            "no markup at all",
        ] {
            assert!(svg_problem(bad.as_bytes()).is_some(), "{bad}");
        }
    }
}
