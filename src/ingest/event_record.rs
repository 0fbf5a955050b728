//! How an event is stored: packed by hand (`codec::Packer`) rather than by bincode, because
//! it is the largest record and one is written per event. Times are variable-length integers
//! (the receipt time as its distance from the usage time), the commit sequence is a varint,
//! a client id that is a canonical UUID takes its 16 bytes instead of 36 characters, and the
//! properties are compressed against their event type's dictionary once it has one
//! ([`super::properties_dictionary`]). A bincode record written before 0.10.0 still reads.

use std::sync::Arc;

use super::event::{Event, Identity};
use super::properties_dictionary;
use crate::id::Id;
use crate::store::codec::{self, CodecError, Packer, Unpacker};
use crate::store::{ReadableTable, StoreError, TenantId};

/// Flag: the client gave the timestamp.
const TIMESTAMP_GIVEN: u8 = 1;
/// Flag: its period had been invoiced when it arrived.
const LATE: u8 = 1 << 1;
/// Flag: the identity is derived from the payload (else the client's id).
const DERIVED: u8 = 1 << 2;
/// Flag: the client's id is a canonical (lowercase, hyphenated) UUID, stored as 16 bytes.
const UUID_ID: u8 = 1 << 3;
/// Flag: the properties are compressed against the event type's dictionary.
const COMPRESSED: u8 = 1 << 4;
/// Every flag this version knows.
const KNOWN: u8 = TIMESTAMP_GIVEN | LATE | DERIVED | UUID_ID | COMPRESSED;

/// The stored form of an event; its properties compressed against `dictionary` (its type's)
/// when that makes them smaller.
pub fn encode(e: &Event, dictionary: Option<&[u8]>) -> Vec<u8> {
    let compressed = dictionary.and_then(|d| properties_dictionary::compress(&e.properties, d));
    let uuid = match &e.identity {
        Identity::Stable { id } => uuid_of(id),
        Identity::Derived { .. } => None,
    };
    let mut flags = 0;
    for (set, flag) in [
        (e.timestamp_given, TIMESTAMP_GIVEN),
        (e.late, LATE),
        (matches!(e.identity, Identity::Derived { .. }), DERIVED),
        (uuid.is_some(), UUID_ID),
        (compressed.is_some(), COMPRESSED),
    ] {
        if set {
            flags |= flag;
        }
    }
    let mut p = Packer::new();
    p.byte(flags)
        .fixed16(e.id.0)
        .unsigned(u128::from(e.seq))
        .fixed16(e.customer.0)
        .signed(i128::from(e.timestamp_ms))
        .signed(i128::from(e.received_at_ms) - i128::from(e.timestamp_ms))
        .text(&e.source);
    match (&e.identity, uuid) {
        (Identity::Derived { hash, window_ms }, _) => {
            p.raw(hash).signed(i128::from(*window_ms));
        }
        (Identity::Stable { .. }, Some(uuid)) => {
            p.fixed16(uuid);
        }
        (Identity::Stable { id }, None) => {
            p.text(id);
        }
    }
    p.text(&e.customer_external_id)
        .text(&e.event_type)
        .raw(&e.digest);
    match compressed {
        Some(c) => p.unsigned(e.properties.len() as u128).blob(&c),
        None => p.text(&e.properties),
    };
    p.finish()
}

/// Where a reader finds an event type's dictionary (the type is known only once the record is
/// read that far).
pub trait Dictionary {
    /// The dictionary of `event_type`, if it has one.
    fn of(&self, event_type: &str) -> Result<Option<Arc<[u8]>>, StoreError>;
}

impl<F: Fn(&str) -> Result<Option<Arc<[u8]>>, StoreError>> Dictionary for F {
    fn of(&self, event_type: &str) -> Result<Option<Arc<[u8]>>, StoreError> {
        self(event_type)
    }
}

/// A stored event, packed or (written before 0.10.0) bincode.
pub fn decode(bytes: &[u8], dictionary: &impl Dictionary) -> Result<Event, StoreError> {
    if !codec::is_packed(bytes) {
        return Ok(codec::decode(bytes)?);
    }
    let mut u = Unpacker::new(bytes)?;
    let flags = u.byte()?;
    if flags & !KNOWN != 0 || flags & (DERIVED | UUID_ID) == DERIVED | UUID_ID {
        return Err(CodecError::Decode(format!("bad event flags {flags:#x}")).into());
    }
    let id = Id(u.fixed16()?);
    let seq = u.unsigned64()?;
    let customer = Id(u.fixed16()?);
    let timestamp_ms = u.signed64()?;
    let received_at_ms = i64::try_from(i128::from(timestamp_ms) + u.signed()?)
        .map_err(|_| CodecError::Decode("event receipt time out of range".into()))?;
    let source = u.text()?;
    let identity = if flags & DERIVED != 0 {
        Identity::Derived {
            hash: u.array()?,
            window_ms: u.signed64()?,
        }
    } else if flags & UUID_ID != 0 {
        Identity::Stable {
            id: uuid_text(u.fixed16()?),
        }
    } else {
        Identity::Stable { id: u.text()? }
    };
    let customer_external_id = u.text()?;
    let event_type = u.text()?;
    let digest = u.array()?;
    let properties = if flags & COMPRESSED != 0 {
        let len = u.unsigned64()?;
        let compressed = u.blob()?;
        let Some(d) = dictionary.of(&event_type)? else {
            return Err(StoreError::Corrupt(format!(
                "event type {event_type:?} has compressed properties but no dictionary"
            )));
        };
        properties_dictionary::decompress(compressed, len, &d)?
    } else {
        u.text()?
    };
    u.finish()?;
    Ok(Event {
        id,
        source,
        identity,
        customer,
        customer_external_id,
        event_type,
        timestamp_ms,
        timestamp_given: flags & TIMESTAMP_GIVEN != 0,
        received_at_ms,
        digest,
        properties,
        late: flags & LATE != 0,
        seq,
    })
}

/// The events table with the dictionaries its records are read with.
pub struct EventTable<E> {
    /// Event records by (tenant, event id).
    pub rows: E,
    dictionaries: properties_dictionary::Dictionaries<E>,
}

impl<E: ReadableTable<&'static [u8], &'static [u8]>> EventTable<E> {
    /// The events in `rows`, their dictionaries in `dictionaries` (same transaction).
    pub fn new(rows: E, dictionaries: E) -> Self {
        Self {
            rows,
            dictionaries: properties_dictionary::Dictionaries::new(dictionaries),
        }
    }

    /// A record of `tenant` read from this table.
    pub fn read(&self, tenant: TenantId, bytes: &[u8]) -> Result<Event, StoreError> {
        decode(bytes, &|t: &str| self.dictionaries.ready(tenant, t))
    }
}

/// For records read where no dictionary can be (tests, and records known to be uncompressed).
#[cfg(test)]
fn none(_: &str) -> Result<Option<Arc<[u8]>>, StoreError> {
    Ok(None)
}

/// The UUID a client id spells in canonical form (36 characters, lowercase hex, hyphens at 8,
/// 13, 18 and 23), which [`uuid_text`] turns back into the same text; `None` for any other id.
fn uuid_of(id: &str) -> Option<u128> {
    let b = id.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut v = 0u128;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(digit);
    }
    Some(v)
}

/// The canonical text of a UUID.
fn uuid_text(v: u128) -> String {
    let hex = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn identity() -> impl Strategy<Value = Identity> {
        prop_oneof![
            "[ -~]{0,40}".prop_map(|id| Identity::Stable { id }),
            any::<u128>().prop_map(|v| Identity::Stable { id: uuid_text(v) }),
            "[0-9a-fA-F-]{36}".prop_map(|id| Identity::Stable { id }),
            (any::<[u8; 16]>(), any::<i64>())
                .prop_map(|(hash, window_ms)| Identity::Derived { hash, window_ms }),
        ]
    }

    prop_compose! {
        fn event()(
            id in any::<u128>(), source in "\\PC{0,12}", identity in identity(),
            customer in any::<u128>(), external in "\\PC{0,20}", event_type in "\\PC{0,20}",
            timestamp_ms in any::<i64>(), received_at_ms in any::<i64>(),
            flags in any::<(bool, bool)>(), properties in "\\PC{0,300}",
            digest in any::<[u8; 32]>(), seq in any::<u64>(),
        ) -> Event {
            Event {
                id: Id(id), source, identity, customer: Id(customer),
                customer_external_id: external, event_type, timestamp_ms,
                timestamp_given: flags.0, received_at_ms, properties, digest, late: flags.1, seq,
            }
        }
    }

    proptest! {
        #[test]
        fn every_event_round_trips(e in event()) {
            prop_assert_eq!(decode(&encode(&e, None), &none).expect("decodes"), e);
        }

        #[test]
        fn every_truncation_is_an_error(e in event(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&e, None);
            let cut = 1 + cut.index(bytes.len() - 1);
            prop_assert!(decode(&bytes[..cut], &none).is_err());
        }
    }

    fn sample() -> Event {
        Event {
            id: Id(0x0193_8a6f_1c2b_7000_8000_0000_0000_0001),
            source: String::new(),
            identity: Identity::Stable {
                id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            },
            customer: Id(0x0193_8a60_0000_7000_9000_0000_0000_002a),
            customer_external_id: "cust_0042".into(),
            event_type: "llm_call".into(),
            timestamp_ms: 1_780_000_000_000,
            timestamp_given: true,
            received_at_ms: 1_780_000_000_250,
            properties: r#"{"model":"gpt-x","tokens":1234}"#.into(),
            digest: [9; 32],
            late: false,
            seq: 1_000_000,
        }
    }

    #[test]
    fn records_written_before_still_read() {
        let e = sample();
        let bincode = codec::encode(&e).expect("encode");
        assert_eq!(decode(&bincode, &none).expect("decodes"), e);
    }

    #[test]
    fn a_uuid_id_and_the_times_take_less_room_than_in_bincode() {
        let e = sample();
        let packed = encode(&e, None).len();
        let bincode = codec::encode(&e).expect("encode").len();
        assert!(packed + 30 <= bincode, "packed {packed}, bincode {bincode}");
        // An uppercase UUID is not canonical: kept as text, and read back unchanged.
        let mut upper = e.clone();
        upper.identity = Identity::Stable {
            id: "0193A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B".into(),
        };
        assert_eq!(encode(&upper, None).len(), packed + 21);
        assert_eq!(
            decode(&encode(&upper, None), &none).expect("decodes"),
            upper
        );
    }

    #[test]
    fn unknown_flags_are_errors() {
        let mut bytes = encode(&sample(), None);
        bytes[1] |= 1 << 7;
        assert!(decode(&bytes, &none).is_err());
        bytes[1] = DERIVED | UUID_ID;
        assert!(decode(&bytes, &none).is_err());
    }

    #[test]
    fn compressed_properties_read_back_with_their_dictionary_only() {
        let mut e = sample();
        e.properties =
            r#"{"model":"gpt-4o","region":"eu-west-1","tokens":1234,"user":"user_0042"}"#.into();
        let dictionary: Arc<[u8]> = Arc::from(
            r#"{"model":"gpt-4o","region":"eu-west-1","tokens":99,"user":"user_0007"}"#.as_bytes(),
        );
        let bytes = encode(&e, Some(&dictionary));
        assert!(bytes.len() + 30 < encode(&e, None).len());
        let with = |_: &str| -> Result<Option<Arc<[u8]>>, StoreError> {
            Ok(Some(Arc::clone(&dictionary)))
        };
        assert_eq!(decode(&bytes, &with).expect("decodes"), e);
        assert!(decode(&bytes, &none).is_err(), "no dictionary, no guess");
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut], &with).is_err(), "cut at {cut}");
        }
        // Properties the dictionary does not help stay as they are.
        e.properties = "{}".into();
        assert_eq!(encode(&e, Some(&dictionary)), encode(&e, None));
    }
}
