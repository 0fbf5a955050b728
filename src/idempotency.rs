//! Idempotency keys: reserve, replay, expire.
//!
//! A request with an `Idempotency-Key` is one intent. Its first execution stores the response
//! (status, content type, body) in the same write transaction as the effects, so either both
//! are durable or neither is; every later request with the same key and the same fingerprint
//! gets that response verbatim, and one with another fingerprint gets a refusal. Records expire
//! after the configured retention and are purged in bounded batches.
//!
//! "Still in flight" (409) is tracked in memory by [`InFlight`]: because the effects and the
//! record commit atomically, nothing durable ever describes a half-executed request, so a crash
//! simply frees the key.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::store::keys::{tenant_bytes, time_bytes};
use crate::store::writer::Command;
use crate::store::{codec, tables, StoreError, TenantId};

/// Longest accepted key, in characters (API contract).
pub const MAX_KEY_CHARS: usize = 255;

/// A response exactly as first sent, replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// What is remembered per (tenant, key).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    fingerprint: [u8; 32],
    created_at_ms: i64,
    expires_at_ms: i64,
    response: StoredResponse,
}

/// The result of looking a key up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Unknown or expired: the request executes.
    Absent,
    /// Same key, same fingerprint: answer with the stored response.
    Replay(StoredResponse),
    /// Same key, another fingerprint: refuse (422), execute nothing.
    Mismatch,
}

fn record_key(tenant: TenantId, key: &str) -> Vec<u8> {
    tenant_bytes(tenant, key.as_bytes())
}

fn expiry_key(expires_at_ms: i64, record_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + record_key.len());
    out.extend_from_slice(&time_bytes(expires_at_ms));
    out.extend_from_slice(record_key);
    out
}

fn classify(record: Option<Record>, fingerprint: &[u8; 32], now_ms: i64) -> Lookup {
    match record {
        Some(r) if r.expires_at_ms > now_ms => {
            if &r.fingerprint == fingerprint {
                Lookup::Replay(r.response)
            } else {
                Lookup::Mismatch
            }
        }
        _ => Lookup::Absent,
    }
}

/// Looks a key up in a read snapshot: the fast path for replays, which then never touch the
/// writer. The writer checks again inside its transaction, so a stale snapshot is harmless.
pub fn lookup(
    tx: &ReadTxn,
    tenant: TenantId,
    key: &str,
    fingerprint: &[u8; 32],
    now_ms: i64,
) -> Result<Lookup, StoreError> {
    let table = tx.open_table(tables::IDEMPOTENCY)?;
    let record = match table.get(record_key(tenant, key).as_slice())? {
        Some(v) => Some(codec::decode::<Record>(v.value())?),
        None => None,
    };
    Ok(classify(record, fingerprint, now_ms))
}

/// Turns a command's output into the HTTP response to store. Supplied by the API layer, so this
/// module stays free of HTTP types.
pub type Render<O> = fn(&O) -> StoredResponse;

/// Wraps a command so that it runs at most once per (tenant, key) within retention.
pub struct Idempotent<C: Command> {
    /// Whose key.
    pub tenant: TenantId,
    /// The key as the client sent it (unquoted).
    pub key: String,
    /// blake3 of method, path and canonical body.
    pub fingerprint: [u8; 32],
    /// Now, as seen by the request.
    pub now_ms: i64,
    /// How long the record lives.
    pub retention_ms: i64,
    /// The intent itself.
    pub inner: C,
    /// How its output becomes a response.
    pub render: Render<C::Output>,
}

impl<C: Command> Clone for Idempotent<C> {
    fn clone(&self) -> Self {
        Self {
            tenant: self.tenant,
            key: self.key.clone(),
            fingerprint: self.fingerprint,
            now_ms: self.now_ms,
            retention_ms: self.retention_ms,
            inner: self.inner.clone(),
            render: self.render,
        }
    }
}

/// What an idempotent submission came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Executed now; the response is stored.
    Executed(StoredResponse),
    /// Executed before; this is the stored response.
    Replayed(StoredResponse),
    /// The key belongs to a different request.
    Mismatch,
}

impl<C: Command> Command for Idempotent<C> {
    type Output = Outcome;

    fn apply(self, tx: &WriteTxn) -> Result<Outcome, StoreError> {
        let mut outcomes = Self::apply_run(vec![self], tx)?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Corrupt("an idempotent run lost its outcome".into()))
    }

    /// Checks every key of the run, applies the inner commands that are new as one run of
    /// their own (so they share work too), then stores their responses. Equal to applying them
    /// one by one because the keys of a run are distinct (in-flight claims guarantee it; a run
    /// that breaks this is applied one by one) and inner commands never touch idempotency
    /// records.
    fn apply_run(commands: Vec<Self>, tx: &WriteTxn) -> Result<Vec<Outcome>, StoreError> {
        let mut seen = HashSet::with_capacity(commands.len());
        if !commands
            .iter()
            .all(|c| seen.insert((c.tenant, c.key.as_str())))
        {
            drop(seen);
            return commands
                .into_iter()
                .map(|c| {
                    Self::apply_run(vec![c], tx).and_then(|mut o| {
                        o.pop()
                            .ok_or_else(|| StoreError::Corrupt("lost outcome".into()))
                    })
                })
                .collect();
        }
        drop(seen);
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(commands.len());
        let mut fresh = Vec::new();
        let mut inners = Vec::new();
        {
            let table = tx.open_table(tables::IDEMPOTENCY)?;
            for (index, command) in commands.into_iter().enumerate() {
                let rkey = record_key(command.tenant, &command.key);
                let previous = match table.get(rkey.as_slice())? {
                    Some(v) => Some(codec::decode::<Record>(v.value())?),
                    None => None,
                };
                let stale_expiry = previous.as_ref().map(|r| r.expires_at_ms);
                match classify(previous, &command.fingerprint, command.now_ms) {
                    Lookup::Replay(response) => outcomes.push(Some(Outcome::Replayed(response))),
                    Lookup::Mismatch => outcomes.push(Some(Outcome::Mismatch)),
                    Lookup::Absent => {
                        outcomes.push(None);
                        fresh.push(Fresh {
                            index,
                            rkey,
                            stale_expiry,
                            fingerprint: command.fingerprint,
                            now_ms: command.now_ms,
                            retention_ms: command.retention_ms,
                            render: command.render,
                        });
                        inners.push(command.inner);
                    }
                }
            }
        }
        if !inners.is_empty() {
            let outputs = C::apply_run(inners, tx)?;
            if outputs.len() != fresh.len() {
                return Err(StoreError::Corrupt(
                    "an idempotent run returned the wrong number of outputs".into(),
                ));
            }
            let mut records = tx.open_table(tables::IDEMPOTENCY)?;
            let mut expiry = tx.open_table(tables::IDEMPOTENCY_EXPIRY)?;
            for (f, output) in fresh.into_iter().zip(outputs) {
                let response = (f.render)(&output);
                let expires_at_ms = f.now_ms.saturating_add(f.retention_ms);
                let record = Record {
                    fingerprint: f.fingerprint,
                    created_at_ms: f.now_ms,
                    expires_at_ms,
                    response: response.clone(),
                };
                let bytes = codec::encode(&record)?;
                records.insert(f.rkey.as_slice(), bytes.as_slice())?;
                if let Some(old) = f.stale_expiry {
                    expiry.remove(expiry_key(old, &f.rkey).as_slice())?;
                }
                expiry.insert(expiry_key(expires_at_ms, &f.rkey).as_slice(), ())?;
                if let Some(slot) = outcomes.get_mut(f.index) {
                    *slot = Some(Outcome::Executed(response));
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.ok_or_else(|| {
                    StoreError::Corrupt("an idempotent command lost its outcome".into())
                })
            })
            .collect()
    }
}

/// A command of an idempotent run whose key is new: what storing its response needs.
struct Fresh<O> {
    index: usize,
    rkey: Vec<u8>,
    stale_expiry: Option<i64>,
    fingerprint: [u8; 32],
    now_ms: i64,
    retention_ms: i64,
    render: Render<O>,
}

/// Deletes up to `limit` expired records, oldest first; returns how many. Bounded so one purge
/// never holds the writer for long; the purge task repeats until a pass deletes fewer.
#[derive(Clone)]
pub struct PurgeExpired {
    /// Records that expired at or before this instant go.
    pub now_ms: i64,
    /// Most records per pass.
    pub limit: usize,
}

impl Command for PurgeExpired {
    type Output = usize;

    fn apply(self, tx: &WriteTxn) -> Result<usize, StoreError> {
        let upper = time_bytes(self.now_ms.saturating_add(1));
        let due: Vec<Vec<u8>> = {
            let expiry = tx.open_table(tables::IDEMPOTENCY_EXPIRY)?;
            let mut keys = Vec::new();
            for entry in expiry.range::<&[u8]>(..upper.as_slice())?.take(self.limit) {
                let (k, _) = entry?;
                keys.push(k.value().to_vec());
            }
            keys
        };
        let mut expiry = tx.open_table(tables::IDEMPOTENCY_EXPIRY)?;
        let mut records = tx.open_table(tables::IDEMPOTENCY)?;
        for key in &due {
            expiry.remove(key.as_slice())?;
            records.remove(&key[8..])?;
        }
        Ok(due.len())
    }
}

/// Keys whose first request is executing right now, so a concurrent duplicate gets 409 instead
/// of waiting or executing twice. In memory on purpose: see the module comment.
#[derive(Default)]
pub struct InFlight {
    keys: Mutex<HashSet<(TenantId, String)>>,
}

impl InFlight {
    /// Claims a key; `None` if it is already claimed. The claim ends when the guard drops.
    pub fn claim(&self, tenant: TenantId, key: &str) -> Option<InFlightGuard<'_>> {
        let mut keys = match self.keys.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        if keys.insert((tenant, key.to_string())) {
            Some(InFlightGuard {
                owner: self,
                entry: Some((tenant, key.to_string())),
            })
        } else {
            None
        }
    }
}

/// Releases an in-flight claim when dropped, including when the request is cancelled.
pub struct InFlightGuard<'a> {
    owner: &'a InFlight,
    entry: Option<(TenantId, String)>,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            let mut keys = match self.owner.keys.lock() {
                Ok(k) => k,
                Err(poisoned) => poisoned.into_inner(),
            };
            keys.remove(&entry);
        }
    }
}

/// Parses an `Idempotency-Key` header value: a structured-field string (`"abc"`, with `\"` and
/// `\\` escapes) or a bare token of visible ASCII. Both forms of the same text name the same key.
pub fn parse_key(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?.trim_matches(' ');
    let key = if let Some(inner) = text.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    c @ ('"' | '\\') => out.push(c),
                    _ => return None,
                },
                '"' => return None,
                ' '..='~' => out.push(c),
                _ => return None,
            }
        }
        out
    } else {
        if !text
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        {
            return None;
        }
        text.to_string()
    };
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_KEY_CHARS {
        return None;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_forms() {
        assert_eq!(parse_key(b"abc").as_deref(), Some("abc"));
        assert_eq!(parse_key(b"\"abc\"").as_deref(), Some("abc"));
        assert_eq!(parse_key(b"\"a\\\"b\"").as_deref(), Some("a\"b"));
        assert_eq!(parse_key(b"\"a b\"").as_deref(), Some("a b"));
        assert_eq!(
            parse_key(b"8e03978e-40d5-43e8-bc93-6894a57f9324").as_deref(),
            Some("8e03978e-40d5-43e8-bc93-6894a57f9324")
        );
        assert_eq!(parse_key(b""), None);
        assert_eq!(parse_key(b"\"\""), None);
        assert_eq!(parse_key(b"a b"), None);
        assert_eq!(parse_key(b"\"abc"), None);
        assert_eq!(parse_key(b"\"a\\nb\""), None);
        assert_eq!(parse_key("é".as_bytes()), None);
        assert!(parse_key("k".repeat(255).as_bytes()).is_some());
        assert_eq!(parse_key("k".repeat(256).as_bytes()), None);
    }

    #[test]
    fn in_flight_claims_are_exclusive_and_released() {
        let set = InFlight::default();
        let first = set.claim(TenantId(1), "k");
        assert!(first.is_some());
        assert!(set.claim(TenantId(1), "k").is_none());
        assert!(set.claim(TenantId(2), "k").is_some(), "scope is per tenant");
        drop(first);
        assert!(set.claim(TenantId(1), "k").is_some());
    }

    /// Counts its executions in `meta["runs"]` and returns the count after it.
    #[derive(Clone)]
    struct Bump;

    impl Command for Bump {
        type Output = u8;
        fn apply(self, tx: &WriteTxn) -> Result<u8, StoreError> {
            let mut meta = tx.open_table(tables::META)?;
            let n = meta.get("runs")?.map_or(0, |v| v.value()[0]) + 1;
            meta.insert("runs", [n].as_slice())?;
            Ok(n)
        }
    }

    fn render(n: &u8) -> StoredResponse {
        StoredResponse {
            status: 200,
            content_type: "text/plain".into(),
            body: vec![*n],
        }
    }

    fn bump(key: &str, body: u8) -> Idempotent<Bump> {
        Idempotent {
            tenant: TenantId(1),
            key: key.into(),
            fingerprint: [body; 32],
            now_ms: 1_000,
            retention_ms: 60_000,
            inner: Bump,
            render,
        }
    }

    fn executed(n: u8) -> Outcome {
        Outcome::Executed(render(&n))
    }

    #[test]
    fn a_run_of_idempotent_commands_equals_them_one_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(&dir.path().join("i.redb"), 1 << 20).expect("open");
        assert_eq!(store.apply_one(bump("a", 1)).expect("a"), executed(1));
        // A run: a replay, a mismatch and two new keys, executed in order.
        let outcomes = store
            .apply_run(vec![
                bump("b", 1),
                bump("a", 1),
                bump("a2", 1),
                bump("a", 2),
            ])
            .expect("run");
        assert_eq!(
            outcomes,
            vec![
                executed(2),
                Outcome::Replayed(render(&1)),
                executed(3),
                Outcome::Mismatch
            ]
        );
        // A key twice in one run (which in-flight claims prevent) still executes once.
        let outcomes = store
            .apply_run(vec![bump("c", 1), bump("c", 1), bump("c", 2)])
            .expect("run");
        assert_eq!(
            outcomes,
            vec![
                executed(4),
                Outcome::Replayed(render(&4)),
                Outcome::Mismatch
            ]
        );
        assert_eq!(
            store.apply_one(bump("c", 1)).expect("c"),
            Outcome::Replayed(render(&4))
        );
    }
}
