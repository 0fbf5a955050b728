//! The one place records are encoded and decoded.
//!
//! A stored value is one format-version byte followed by bincode (2.0.1, serde mode, standard
//! configuration). bincode is unmaintained upstream; keeping every encode and decode here means
//! replacing it touches one file. Decoding an unknown version or a truncated record is a typed
//! error, never a panic. Stored types must not use `skip_serializing_if` or untagged enums:
//! bincode is not self-describing.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The record format written today.
pub const FORMAT_VERSION: u8 = 1;

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
}
