//! Prefixed, opaque, time-ordered identifiers (`cus_…`, `evt_…`).
//!
//! An id is 128 bits: a 48-bit millisecond timestamp followed by 80 bits that are random at the
//! start of each millisecond and incremented within it (the ULID layout). Time first keeps
//! hot-path B-tree inserts append-mostly, which on this storage engine is several times cheaper
//! than random keys; the random tail makes ids unguessable and unique across restarts.
//! The text form is the prefix, an underscore and 26 Crockford base32 characters, so text order
//! equals numeric order.

use std::sync::Mutex;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const TEXT_LEN: usize = 26;

/// A 128-bit time-ordered identifier; the prefix lives in the type that uses it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Id(pub u128);

/// The generator's memory of the last id, so ids issued within one millisecond stay ordered.
static LAST: Mutex<u128> = Mutex::new(0);

impl Id {
    /// A fresh id, greater than every id this process issued before.
    pub fn generate() -> Self {
        Self::generate_at(crate::clock::now_ms())
    }

    /// A fresh id for the given millisecond (still strictly greater than the previous one).
    pub fn generate_at(now_ms: i64) -> Self {
        let ms = u128::from(u64::try_from(now_ms.max(0)).unwrap_or(0) & 0xFFFF_FFFF_FFFF);
        #[cfg(test)]
        if let Some(id) = seeded::next(ms) {
            return id;
        }
        let mut random = [0u8; 16];
        // Without an entropy source ids would still be unique (time + increment) but guessable;
        // getrandom only fails on exotic platforms, where zeros are an acceptable fallback.
        let _ = getrandom::fill(&mut random[6..]);
        let tail = u128::from_be_bytes(random) & ((1u128 << 80) - 1);
        let candidate = (ms << 80) | tail;
        let mut last = match LAST.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = if candidate > *last {
            candidate
        } else {
            last.wrapping_add(1)
        };
        *last = next;
        Id(next)
    }

    /// The smallest id of the millisecond `ms`: every id generated at or after `ms` sorts at or
    /// above it, every earlier one below, so a range of ids is a range of creation times.
    pub fn first_at(ms: i64) -> Self {
        Id(u128::from(u64::try_from(ms.max(0)).unwrap_or(0) & 0xFFFF_FFFF_FFFF) << 80)
    }

    /// The millisecond the id was generated in.
    pub fn timestamp_ms(self) -> i64 {
        // 48 bits always fit in i64.
        (self.0 >> 80) as i64
    }

    /// Big-endian bytes, the form used inside storage keys.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Inverse of [`Id::to_bytes`].
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Id(u128::from_be_bytes(bytes))
    }

    /// The public text form with its resource prefix, e.g. `cus_01H…`.
    pub fn display(self, prefix: &str) -> String {
        let mut out = String::with_capacity(prefix.len() + 1 + TEXT_LEN);
        out.push_str(prefix);
        out.push('_');
        for i in (0..TEXT_LEN).rev() {
            let index = ((self.0 >> (i * 5)) & 0x1F) as usize;
            out.push(char::from(ALPHABET[index]));
        }
        out
    }

    /// Parses `prefix_XXXX…`; anything else (another prefix, bad characters, overflow) is `None`,
    /// which the API turns into a 404 rather than a 400 so ids stay opaque.
    pub fn parse(text: &str, prefix: &str) -> Option<Self> {
        let rest = text.strip_prefix(prefix)?.strip_prefix('_')?;
        if rest.len() != TEXT_LEN {
            return None;
        }
        let mut value: u128 = 0;
        for (i, b) in rest.bytes().enumerate() {
            let digit = ALPHABET.iter().position(|&a| a == b.to_ascii_uppercase())? as u128;
            // The first character carries only the top 3 of 130 bits.
            if i == 0 && digit > 7 {
                return None;
            }
            value = (value << 5) | digit;
        }
        Some(Id(value))
    }
}

/// Test seam: a thread can draw ids from a shared seeded generator (with its own memory of
/// the last id) instead of the entropy source and the process-wide `LAST`, so a seeded
/// simulation issues the same ids on every replay. Only test builds have it; it is off unless
/// a thread installs a generator, and it affects only the threads that do.
#[cfg(test)]
pub(crate) mod seeded {
    use std::cell::RefCell;
    use std::sync::{Arc, Mutex};

    use super::Id;

    /// A seeded id generator: splitmix64 state and the last id it issued.
    #[derive(Debug, Default)]
    pub(crate) struct Generator {
        state: u64,
        last: u128,
    }

    impl Generator {
        /// A generator whose ids depend only on `seed` and the instants asked for.
        pub(crate) fn new(seed: u64) -> Self {
            Self {
                state: seed,
                last: 0,
            }
        }

        fn next_u64(&mut self) -> u64 {
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    thread_local! {
        static GENERATOR: RefCell<Option<Arc<Mutex<Generator>>>> = const { RefCell::new(None) };
    }

    /// Makes ids generated on this thread come from `generator` (or from entropy again with
    /// `None`).
    pub(crate) fn install(generator: Option<Arc<Mutex<Generator>>>) {
        GENERATOR.with(|g| *g.borrow_mut() = generator);
    }

    /// The next id for millisecond `ms`, when this thread has a seeded generator.
    pub(super) fn next(ms: u128) -> Option<Id> {
        let shared = GENERATOR.with(|g| g.borrow().clone())?;
        let mut g = match shared.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let random = (u128::from(g.next_u64()) << 16 | u128::from(g.next_u64() & 0xFFFF))
            & ((1u128 << 80) - 1);
        let candidate = (ms << 80) | random;
        let next = if candidate > g.last {
            candidate
        } else {
            g.last.wrapping_add(1)
        };
        g.last = next;
        Some(Id(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_ordered_and_round_trip() {
        let mut previous = Id::generate();
        for _ in 0..10_000 {
            let next = Id::generate();
            assert!(next > previous);
            let text = next.display("cus");
            assert!(text > previous.display("cus"));
            assert_eq!(Id::parse(&text, "cus"), Some(next));
            previous = next;
        }
    }

    #[test]
    fn foreign_prefixes_and_garbage_do_not_parse() {
        let id = Id::generate();
        assert_eq!(Id::parse(&id.display("cus"), "evt"), None);
        assert_eq!(Id::parse("cus_", "cus"), None);
        assert_eq!(Id::parse("cus_ZZZZZZZZZZZZZZZZZZZZZZZZZZ", "cus"), None);
        assert_eq!(Id::parse("cus_0000000000000000000000000U", "cus"), None);
    }

    #[test]
    fn timestamp_is_recoverable() {
        let id = Id::generate_at(1_700_000_000_000);
        assert!(id.timestamp_ms() >= 1_700_000_000_000);
    }
}
