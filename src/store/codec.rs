//! The one place records are encoded and decoded.
//!
//! A stored value is one format-version byte followed by bincode (2.0.1, serde mode, standard
//! configuration). bincode is unmaintained upstream; keeping every encode and decode here means
//! replacing it touches one file. Decoding an unknown version or a truncated record is a typed
//! error, never a panic. Stored types must not use `skip_serializing_if` or untagged enums:
//! bincode is not self-describing.
//!
//! The records written once per event (the event, and its usage rollups) are packed by hand instead
//! ([`Packer`], version byte [`PACKED_VERSION`]): variable-length integers and decimals, and
//! only the fields a record needs. Their readers accept both versions, so rows written before
//! stay readable.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The record format written today.
pub const FORMAT_VERSION: u8 = 1;

/// The version byte of records packed field by field with [`Packer`].
pub const PACKED_VERSION: u8 = 2;

/// Whether `bytes` is a packed record (else a bincode one, or garbage).
pub fn is_packed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&PACKED_VERSION)
}

/// Why a stored record could not be turned back into a value.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record was written by a newer (or unknown) format.
    #[error(
        "record format version {0} is not supported (this binary reads version {FORMAT_VERSION})"
    )]
    UnknownVersion(u8),
    /// The record is empty.
    #[error("record is empty")]
    Empty,
    /// bincode rejected the bytes.
    #[error("record does not decode: {0}")]
    Decode(String),
    /// bincode could not encode the value (only for types that serde cannot describe).
    #[error("record does not encode: {0}")]
    Encode(String),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a record with its version byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    // Most records are a few hundred bytes: one allocation, no intermediate buffer.
    let mut out = Vec::with_capacity(256);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a record, checking its version byte and that every byte was consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes after the record",
            body.len() - used
        )));
    }
    Ok(value)
}

/// Writes a packed record: its version byte, then fields in the order the reader takes them.
#[derive(Debug)]
pub struct Packer {
    out: Vec<u8>,
}

impl Default for Packer {
    fn default() -> Self {
        Self::new()
    }
}

impl Packer {
    /// An empty record (its version byte only).
    pub fn new() -> Self {
        let mut out = Vec::with_capacity(48);
        out.push(PACKED_VERSION);
        Self { out }
    }

    /// One byte.
    pub fn byte(&mut self, b: u8) -> &mut Self {
        self.out.push(b);
        self
    }

    /// An unsigned integer in LEB128 (7 bits per byte, small values in one byte).
    pub fn unsigned(&mut self, mut v: u128) -> &mut Self {
        while v >= 0x80 {
            self.out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
        self
    }

    /// A signed integer, zigzag-mapped so small magnitudes of either sign stay short.
    pub fn signed(&mut self, v: i128) -> &mut Self {
        self.unsigned(((v << 1) ^ (v >> 127)) as u128)
    }

    /// Sixteen bytes as they are (ids are random in their low bits: LEB128 would grow them).
    pub fn fixed16(&mut self, v: u128) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An exact decimal: its scale, then its mantissa (a token count takes three bytes).
    pub fn decimal(&mut self, d: rust_decimal::Decimal) -> &mut Self {
        self.out.push(d.scale() as u8);
        self.signed(d.mantissa())
    }

    /// Bytes of a known length, as they are (digests, hashes).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// Bytes of any length: the length, then the bytes.
    pub fn blob(&mut self, bytes: &[u8]) -> &mut Self {
        self.unsigned(bytes.len() as u128);
        self.raw(bytes)
    }

    /// Text: its length, then its UTF-8 bytes.
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.unsigned(s.len() as u128);
        self.raw(s.as_bytes())
    }

    /// The record.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

/// Reads a packed record written by [`Packer`]; every read checks what is left, so a
/// truncated or garbled record is a typed error.
#[derive(Debug)]
pub struct Unpacker<'a> {
    rest: &'a [u8],
}

impl<'a> Unpacker<'a> {
    /// Starts after the version byte, which must be [`PACKED_VERSION`].
    pub fn new(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let (&version, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
        if version != PACKED_VERSION {
            return Err(CodecError::UnknownVersion(version));
        }
        Ok(Self { rest })
    }

    fn short() -> CodecError {
        CodecError::Decode("packed record ends early".into())
    }

    /// One byte.
    pub fn byte(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.rest.split_first().ok_or_else(Self::short)?;
        self.rest = rest;
        Ok(b)
    }

    /// An unsigned integer written by [`Packer::unsigned`].
    pub fn unsigned(&mut self) -> Result<u128, CodecError> {
        let mut v = 0u128;
        for shift in (0..128).step_by(7) {
            let b = self.byte()?;
            let bits = u128::from(b & 0x7f);
            if shift == 126 && bits > 0b11 {
                break;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Decode("packed integer too long".into()))
    }

    /// An unsigned integer that must fit in 64 bits.
    pub fn unsigned64(&mut self) -> Result<u64, CodecError> {
        u64::try_from(self.unsigned()?)
            .map_err(|_| CodecError::Decode("packed integer out of range".into()))
    }

    /// A signed integer written by [`Packer::signed`].
    pub fn signed(&mut self) -> Result<i128, CodecError> {
        let z = self.unsigned()?;
        Ok((z >> 1) as i128 ^ -((z & 1) as i128))
    }

    /// A signed integer that must fit in 64 bits.
    pub fn signed64(&mut self) -> Result<i64, CodecError> {
        i64::try_from(self.signed()?)
            .map_err(|_| CodecError::Decode("packed integer out of range".into()))
    }

    /// Sixteen bytes written by [`Packer::fixed16`].
    pub fn fixed16(&mut self) -> Result<u128, CodecError> {
        let (head, rest) = self.rest.split_at_checked(16).ok_or_else(Self::short)?;
        self.rest = rest;
        let bytes = <[u8; 16]>::try_from(head).map_err(|_| Self::short())?;
        Ok(u128::from_be_bytes(bytes))
    }

    /// A decimal written by [`Packer::decimal`]; one outside the decimal range is an error.
    pub fn decimal(&mut self) -> Result<rust_decimal::Decimal, CodecError> {
        let scale = u32::from(self.byte()?);
        let mantissa = self.signed()?;
        rust_decimal::Decimal::try_from_i128_with_scale(mantissa, scale)
            .map_err(|e| CodecError::Decode(format!("packed decimal: {e}")))
    }

    /// `N` bytes written by [`Packer::raw`].
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let (head, rest) = self.rest.split_at_checked(N).ok_or_else(Self::short)?;
        self.rest = rest;
        <[u8; N]>::try_from(head).map_err(|_| Self::short())
    }

    /// Text written by [`Packer::text`]; bytes that are not UTF-8 are an error.
    pub fn text(&mut self) -> Result<String, CodecError> {
        let len = usize::try_from(self.unsigned()?)
            .map_err(|_| CodecError::Decode("packed text too long".into()))?;
        let (head, rest) = self.rest.split_at_checked(len).ok_or_else(Self::short)?;
        self.rest = rest;
        String::from_utf8(head.to_vec())
            .map_err(|_| CodecError::Decode("packed text is not UTF-8".into()))
    }

    /// Everything not read yet (a record's last field, when its length is the record's).
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Bytes written by [`Packer::blob`].
    pub fn blob(&mut self) -> Result<&'a [u8], CodecError> {
        let len = usize::try_from(self.unsigned()?)
            .map_err(|_| CodecError::Decode("packed bytes too long".into()))?;
        let (head, rest) = self.rest.split_at_checked(len).ok_or_else(Self::short)?;
        self.rest = rest;
        Ok(head)
    }

    /// Checks that the record was read to its end.
    pub fn finish(self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Decode(format!(
                "{} trailing bytes after the packed record",
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        amount_minor: i64,
        note: Option<String>,
    }

    #[test]
    fn round_trips_and_rejects_unknown_versions() {
        let value = Sample {
            name: "x".into(),
            amount_minor: -5,
            note: None,
        };
        let bytes = encode(&value).expect("encodes");
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Sample>(&bytes).expect("decodes"), value);
        let mut newer = bytes.clone();
        newer[0] = 9;
        assert!(matches!(
            decode::<Sample>(&newer),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(decode::<Sample>(&[]), Err(CodecError::Empty)));
        assert!(decode::<Sample>(&bytes[..2]).is_err());
    }

    #[test]
    fn packed_fields_round_trip_at_their_limits() {
        let decimals = [
            rust_decimal::Decimal::ZERO,
            rust_decimal::Decimal::MAX,
            rust_decimal::Decimal::MIN,
            rust_decimal::Decimal::new(-25, 1),
            rust_decimal::Decimal::new(1, 28),
        ];
        let mut p = Packer::new();
        p.unsigned(0)
            .unsigned(u128::MAX)
            .signed(i128::MIN)
            .signed(i128::MAX);
        p.signed(-1).fixed16(u128::MAX - 7).byte(255);
        p.text("grüße").raw(&[1, 2, 3]).text("").blob(&[4, 5]);
        for d in decimals {
            p.decimal(d);
        }
        let bytes = p.finish();
        assert!(is_packed(&bytes));
        let mut u = Unpacker::new(&bytes).expect("version");
        assert_eq!(u.unsigned().expect("u"), 0);
        assert_eq!(u.unsigned().expect("u"), u128::MAX);
        assert_eq!(u.signed().expect("s"), i128::MIN);
        assert_eq!(u.signed().expect("s"), i128::MAX);
        assert_eq!(u.signed64().expect("s"), -1);
        assert_eq!(u.fixed16().expect("f"), u128::MAX - 7);
        assert_eq!(u.byte().expect("b"), 255);
        assert_eq!(u.text().expect("t"), "grüße");
        assert_eq!(u.array::<3>().expect("a"), [1, 2, 3]);
        assert_eq!(u.text().expect("t"), "");
        assert_eq!(u.blob().expect("b"), &[4, 5]);
        for d in decimals {
            assert_eq!(u.decimal().expect("d"), d);
        }
        u.finish().expect("read to the end");
        // Every truncation is an error, never a panic or a wrong value read silently.
        for cut in 1..bytes.len() {
            let mut u = Unpacker::new(&bytes[..cut]).expect("version");
            let whole = (|| -> Result<(), CodecError> {
                u.unsigned()?;
                u.unsigned()?;
                u.signed()?;
                u.signed()?;
                u.signed64()?;
                u.fixed16()?;
                u.byte()?;
                u.text()?;
                u.array::<3>()?;
                u.text()?;
                u.blob()?;
                for _ in decimals {
                    u.decimal()?;
                }
                Ok(())
            })();
            assert!(whole.is_err(), "cut at {cut} read as whole");
        }
        assert!(Unpacker::new(&[0xff; 20]).is_err());
        let mut too_long = vec![PACKED_VERSION];
        too_long.extend([0xff; 19]);
        too_long.push(0x7f);
        let mut long = Unpacker::new(&too_long).expect("v");
        assert!(long.unsigned().is_err(), "more than 128 bits");
        let mut bad_scale = Packer::new();
        bad_scale.byte(29).signed(1);
        let bytes = bad_scale.finish();
        assert!(Unpacker::new(&bytes).expect("v").decimal().is_err());
        assert!(Unpacker::new(&[PACKED_VERSION, 1])
            .expect("v")
            .finish()
            .is_err());
    }
}
