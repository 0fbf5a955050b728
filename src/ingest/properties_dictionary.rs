//! Event properties compressed against a dictionary of their own event type.
//!
//! One usage event's properties are a few hundred bytes of JSON whose keys and many values
//! (model names, regions) repeat from event to event but not within one, so compressing an
//! event alone gains nothing. The first [`SAMPLES`] events of each (tenant, event type) are
//! stored as they are and their properties kept as samples; the samples then become that
//! type's dictionary, fixed forever, and every later event of the type stores its properties
//! LZ4-compressed against it (an LLM-call event's to about a third). A dictionary is
//! written in the same transaction as the event that completes it, never changes, and is never
//! deleted while events may use it, so every stored event can always be read back exactly.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::store::codec::{CodecError, Packer, Unpacker};
use crate::store::{tables, ReadableTable, StoreError, Table, TenantId};

/// Events of a type whose properties are sampled before its dictionary is fixed.
pub const SAMPLES: u64 = 16;

/// The largest dictionary: sampling stops early rather than grow past it (LZ4 reaches back at
/// most 64 KiB, and the dictionary is read whenever an event of the type is decoded).
pub const MAX_BYTES: usize = 16 * 1024;

/// The largest properties text a compressed record may claim (a corrupt length never makes a
/// reader allocate more).
const MAX_PROPERTIES_BYTES: u64 = 16 << 20;

/// Dictionaries a reader keeps at once (one per event type met); beyond it they are read again.
const MEMO_ENTRIES: usize = 64;

/// A row of the dictionary table: samples still being gathered, or the dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Row {
    /// `count` events sampled so far, their properties concatenated.
    Sampling { count: u64, samples: Vec<u8> },
    /// The type's dictionary.
    Ready(Arc<[u8]>),
}

/// Row tag: sampling.
const SAMPLING: u8 = 0;
/// Row tag: ready.
const READY: u8 = 1;

/// Whether the tenant ever stored an event of `event_type`, when the database can tell:
/// `Some(false)` proves it never did (every type's first event writes its row, in the event's
/// own transaction, and rows are never removed); `None` when events from before 0.10.0 may
/// exist without a row (`tables::META_EVENT_TYPES_RECORDED` absent).
pub fn type_stored(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    dictionaries: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    event_type: &str,
) -> Result<Option<bool>, StoreError> {
    if meta.get(tables::META_EVENT_TYPES_RECORDED)?.is_none() {
        return Ok(None);
    }
    Ok(Some(
        dictionaries
            .get(key(tenant, event_type).as_slice())?
            .is_some(),
    ))
}

fn key(tenant: TenantId, event_type: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + event_type.len());
    key.extend_from_slice(&tenant.to_bytes());
    key.extend_from_slice(event_type.as_bytes());
    key
}

fn encode_row(row: &Row) -> Vec<u8> {
    let mut p = Packer::new();
    match row {
        Row::Sampling { count, samples } => {
            p.byte(SAMPLING).unsigned(u128::from(*count)).raw(samples);
        }
        Row::Ready(dictionary) => {
            p.byte(READY).raw(dictionary);
        }
    }
    p.finish()
}

fn decode_row(bytes: &[u8]) -> Result<Row, CodecError> {
    let mut u = Unpacker::new(bytes)?;
    match u.byte()? {
        SAMPLING => {
            let count = u.unsigned64()?;
            Ok(Row::Sampling {
                count,
                samples: u.rest().to_vec(),
            })
        }
        READY => Ok(Row::Ready(Arc::from(u.rest()))),
        other => Err(CodecError::Decode(format!(
            "unknown dictionary row tag {other}"
        ))),
    }
}

/// Dictionaries already read, by tenant and then event type (so a lookup by `&str` needs no
/// owned key).
type Memo = HashMap<TenantId, HashMap<String, Arc<[u8]>>>;

/// The dictionary table as one transaction sees it, remembering the dictionaries it read.
pub struct Dictionaries<T> {
    table: T,
    memo: RefCell<Memo>,
}

impl<T: ReadableTable<&'static [u8], &'static [u8]>> Dictionaries<T> {
    /// Reads dictionaries from `table`.
    pub fn new(table: T) -> Self {
        Self {
            table,
            memo: RefCell::new(HashMap::new()),
        }
    }

    /// The dictionary of `event_type`, if it is fixed.
    pub fn ready(
        &self,
        tenant: TenantId,
        event_type: &str,
    ) -> Result<Option<Arc<[u8]>>, StoreError> {
        if let Some(d) = self
            .memo
            .borrow()
            .get(&tenant)
            .and_then(|types| types.get(event_type))
        {
            return Ok(Some(Arc::clone(d)));
        }
        let row = match self.table.get(key(tenant, event_type).as_slice())? {
            Some(stored) => decode_row(stored.value())?,
            None => return Ok(None),
        };
        let Row::Ready(dictionary) = row else {
            return Ok(None);
        };
        let mut memo = self.memo.borrow_mut();
        if memo.values().map(HashMap::len).sum::<usize>() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.entry(tenant)
            .or_default()
            .insert(event_type.to_string(), Arc::clone(&dictionary));
        Ok(Some(dictionary))
    }
}

impl Dictionaries<Table<'_, &'static [u8], &'static [u8]>> {
    /// The dictionary to store an event's properties with; while its type has none, samples
    /// them (the event is then stored as it is) and fixes the dictionary at the last sample.
    pub fn for_event(
        &mut self,
        tenant: TenantId,
        event_type: &str,
        properties: &str,
    ) -> Result<Option<Arc<[u8]>>, StoreError> {
        if let Some(dictionary) = self.ready(tenant, event_type)? {
            return Ok(Some(dictionary));
        }
        let key = key(tenant, event_type);
        let (count, mut samples) = match self.table.get(key.as_slice())? {
            Some(stored) => match decode_row(stored.value())? {
                Row::Sampling { count, samples } => (count, samples),
                Row::Ready(_) => return Err(StoreError::Corrupt("dictionary row changed".into())),
            },
            None => (0, Vec::new()),
        };
        let room = MAX_BYTES.saturating_sub(samples.len());
        samples.extend_from_slice(&properties.as_bytes()[..properties.len().min(room)]);
        let count = count.saturating_add(1);
        let row = if count >= SAMPLES || samples.len() >= MAX_BYTES {
            Row::Ready(Arc::from(samples))
        } else {
            Row::Sampling { count, samples }
        };
        self.table
            .insert(key.as_slice(), encode_row(&row).as_slice())?;
        Ok(None)
    }
}

/// `properties` compressed against `dictionary`, or `None` when that would not be smaller.
pub fn compress(properties: &str, dictionary: &[u8]) -> Option<Vec<u8>> {
    let compressed = lz4_flex::block::compress_with_dict(properties.as_bytes(), dictionary);
    (compressed.len() + 3 < properties.len()).then_some(compressed)
}

/// The properties text of `len` bytes compressed against `dictionary`.
pub fn decompress(compressed: &[u8], len: u64, dictionary: &[u8]) -> Result<String, CodecError> {
    if len > MAX_PROPERTIES_BYTES {
        return Err(CodecError::Decode(format!(
            "compressed properties claim {len} bytes"
        )));
    }
    let mut out = vec![0u8; len as usize];
    let written = lz4_flex::block::decompress_into_with_dict(compressed, &mut out, dictionary)
        .map_err(|e| CodecError::Decode(format!("compressed properties: {e}")))?;
    if written as u64 != len {
        return Err(CodecError::Decode(format!(
            "compressed properties gave {written} bytes, not {len}"
        )));
    }
    String::from_utf8(out).map_err(|_| CodecError::Decode("properties are not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{tables, Store};

    fn llm(i: u64) -> String {
        format!(
            r#"{{"api_key_id":"key_{:04}","cached_tokens":{},"finish_reason":"stop","input_tokens":{},"latency_ms":{},"model":"{}","output_tokens":{},"region":"{}","request_id":"req_{:026x}","stream":{},"total_tokens":{},"user_id":"user_{:06}"}}"#,
            i % 64,
            i * 7 % 900,
            50 + i * 13 % 4000,
            120 + i * 31 % 9000,
            ["gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b"][(i % 3) as usize],
            10 + i * 17 % 1500,
            ["us-east-1", "eu-west-1", "ap-south-1"][(i % 3) as usize],
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            i.is_multiple_of(2),
            60 + i * 30 % 5500,
            i * 11 % 5000
        )
    }

    #[test]
    fn the_dictionary_is_fixed_at_the_last_sample_and_compresses_what_follows() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("t.redb"), 1 << 20).expect("open");
        let tenant = TenantId(1);
        let tx = store.begin_write().expect("write");
        let mut dictionaries =
            Dictionaries::new(tx.open_table(tables::PROPERTY_DICTIONARIES).expect("table"));
        for i in 0..SAMPLES {
            let got = dictionaries
                .for_event(tenant, "llm_call", &llm(i))
                .expect("sample");
            assert!(got.is_none(), "sample {i} is stored as it is");
        }
        let dictionary = dictionaries
            .for_event(tenant, "llm_call", &llm(99))
            .expect("ready")
            .expect("fixed after the samples");
        let samples: usize = (0..SAMPLES).map(|i| llm(i).len()).sum();
        assert_eq!(dictionary.len(), samples);
        assert!(
            dictionaries
                .for_event(tenant, "other", "{}")
                .expect("sample")
                .is_none(),
            "each type has its own"
        );
        assert!(dictionaries
            .for_event(TenantId(2), "llm_call", &llm(1))
            .expect("sample")
            .is_none());

        let mut total = (0, 0);
        for i in 1_000..1_200 {
            let text = llm(i);
            let compressed = compress(&text, &dictionary).expect("smaller");
            total = (total.0 + text.len(), total.1 + compressed.len());
            let back = decompress(&compressed, text.len() as u64, &dictionary).expect("back");
            assert_eq!(back, text);
        }
        assert!(total.1 * 2 < total.0, "{} of {} bytes", total.1, total.0);
        drop(dictionaries);
        tx.commit().expect("commit");

        let read = store.read().expect("read");
        let readers = Dictionaries::new(
            read.open_table(tables::PROPERTY_DICTIONARIES)
                .expect("table"),
        );
        assert_eq!(
            readers.ready(tenant, "llm_call").expect("read"),
            Some(dictionary)
        );
        assert_eq!(readers.ready(tenant, "other").expect("read"), None);
    }

    #[test]
    fn sampling_stops_at_the_size_limit() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("t.redb"), 1 << 20).expect("open");
        let tx = store.begin_write().expect("write");
        let mut dictionaries =
            Dictionaries::new(tx.open_table(tables::PROPERTY_DICTIONARIES).expect("table"));
        let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(10_000));
        assert!(dictionaries
            .for_event(TenantId(1), "t", &big)
            .expect("1")
            .is_none());
        assert!(dictionaries
            .for_event(TenantId(1), "t", &big)
            .expect("2")
            .is_none());
        let fixed = dictionaries
            .for_event(TenantId(1), "t", "{}")
            .expect("3")
            .expect("fixed at the limit");
        assert_eq!(fixed.len(), MAX_BYTES);
    }

    #[test]
    fn garbled_input_is_an_error_not_a_panic() {
        let dictionary = llm(1).into_bytes();
        let text = llm(2);
        let compressed = compress(&text, &dictionary).expect("smaller");
        assert!(decompress(&compressed, text.len() as u64 + 1, &dictionary).is_err());
        assert!(decompress(&compressed, MAX_PROPERTIES_BYTES + 1, &dictionary).is_err());
        for cut in 0..compressed.len() {
            let _ = decompress(&compressed[..cut], text.len() as u64, &dictionary);
        }
        let mut flipped = compressed.clone();
        for b in flipped.iter_mut() {
            *b ^= 0x5a;
        }
        let _ = decompress(&flipped, text.len() as u64, &dictionary);
        assert!(decode_row(&[crate::store::codec::PACKED_VERSION, 7]).is_err());
        assert_eq!(compress("{}", &dictionary), None, "too short to gain");
    }
}
