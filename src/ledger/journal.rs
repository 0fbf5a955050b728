//! The journal: immutable, balanced, hash-chained entries, and the balances they move.
//!
//! [`post`] is the only way money moves. It checks that the postings sum to zero per currency
//! (and asserts it again before writing), updates every touched balance in the same transaction,
//! and links the entry into the tenant's blake3 chain: each entry's hash covers the previous
//! entry's hash and the entry's canonical content, so editing or removing any entry after the
//! fact breaks every later link and `tally verify` finds it. Entries are numbered per tenant
//! (`seq`, from 1) in commit order, and their effective times never decrease along the chain, so
//! "the books at instant T" is a prefix of the chain.

use std::collections::BTreeMap;

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::account::AccountRef;
use crate::id::Id;
use crate::store::keys::{self, time_bytes, TenantId};
use crate::store::touched::{self, Touch, Touched};
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "je";
/// Largest absolute amount of one posting (10^15 minor units): keeps every balance far from
/// `i64` overflow while exceeding any real invoice.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;
/// Most postings in one entry.
pub const MAX_POSTINGS: usize = 100;
/// Domain separation for the chain hash.
const CHAIN_CONTEXT: &str = "tally 2026-11 journal entry chain v1";

/// One leg of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// The account moved.
    pub account: AccountRef,
    /// ISO 4217.
    pub currency: String,
    /// Signed minor units: debit positive, credit negative.
    pub amount_minor: i64,
}

/// What an entry is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// The customer concerned.
    pub customer: Option<Id>,
    /// A credit grant.
    pub grant: Option<Id>,
    /// An invoice.
    pub invoice: Option<Id>,
    /// A payment.
    pub payment: Option<Id>,
    /// A usage event.
    pub event: Option<Id>,
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// `je_…`.
    pub id: Id,
    /// Position in the tenant's chain, from 1.
    pub seq: u64,
    /// Machine-readable kind (`credit_grant`, `credit_void`, `credit_expiry`, `credits_applied`,
    /// `adjustment`, …).
    pub kind: String,
    /// Human reason.
    pub reason: String,
    /// What it is about.
    pub links: Links,
    /// The intent that created it (an idempotency key, a job), so a reader can trace it back.
    pub origin: String,
    /// When it takes effect (never earlier than the previous entry's).
    pub effective_at_ms: i64,
    /// The legs; they sum to zero per currency.
    pub postings: Vec<Posting>,
    /// The previous entry's hash (zeros for the first).
    pub prev_hash: [u8; 32],
    /// blake3 over `prev_hash` and the canonical content.
    pub hash: [u8; 32],
}

/// An entry to post.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Its id (assigned by the caller).
    pub id: Id,
    /// Kind.
    pub kind: String,
    /// Reason.
    pub reason: String,
    /// Links.
    pub links: Links,
    /// Origin.
    pub origin: String,
    /// Postings.
    pub postings: Vec<Posting>,
}

/// Why an entry cannot be posted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The postings of a currency do not sum to zero.
    #[error("postings in {currency} sum to {sum_minor}, not zero")]
    Unbalanced {
        /// The currency.
        currency: String,
        /// Its sum.
        sum_minor: i128,
    },
    /// No postings, or more than allowed.
    #[error("an entry needs 2 to {MAX_POSTINGS} postings")]
    PostingCount,
    /// A zero or out-of-range amount.
    #[error("posting {index}: amount_minor must be non-zero and at most {MAX_AMOUNT_MINOR} in absolute value")]
    Amount {
        /// Which posting.
        index: usize,
    },
    /// Not an ISO 4217 currency.
    #[error("posting {index}: unknown currency {currency:?}")]
    Currency {
        /// Which posting.
        index: usize,
        /// The code.
        currency: String,
    },
    /// A balance would overflow.
    #[error("the balance of {account} would leave the representable range")]
    Overflow {
        /// The account code.
        account: String,
    },
}

/// A running balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The account.
    pub account: AccountRef,
    /// ISO 4217.
    pub currency: String,
    /// Sum of its postings.
    pub balance_minor: i64,
    /// How many postings.
    pub postings: u64,
}

/// The tip of a tenant's chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The last entry's seq (0 when empty).
    pub seq: u64,
    /// The last entry's hash.
    pub hash: [u8; 32],
    /// The last entry's effective time.
    pub effective_at_ms: i64,
}

/// The canonical content covered by the chain hash (everything but the hashes).
#[derive(Serialize)]
struct Content<'a> {
    id: String,
    seq: u64,
    kind: &'a str,
    reason: &'a str,
    links: [Option<String>; 5],
    origin: &'a str,
    effective_at_ms: i64,
    postings: Vec<(String, &'a str, i64)>,
}

/// Computes an entry's chain hash from its content and the previous hash.
pub fn chain_hash(entry: &JournalEntry) -> [u8; 32] {
    let l = &entry.links;
    let content = Content {
        id: entry.id.display(PREFIX),
        seq: entry.seq,
        kind: &entry.kind,
        reason: &entry.reason,
        links: [
            l.customer.map(|i| i.display(crate::customers::PREFIX)),
            l.grant.map(|i| i.display(super::grant::PREFIX)),
            l.invoice.map(|i| i.display("inv")),
            l.payment.map(|i| i.display("pay")),
            l.event.map(|i| i.display(crate::ingest::event::PREFIX)),
        ],
        origin: &entry.origin,
        effective_at_ms: entry.effective_at_ms,
        postings: entry
            .postings
            .iter()
            .map(|p| (p.account.code(), p.currency.as_str(), p.amount_minor))
            .collect(),
    };
    let json = serde_json::to_value(&content)
        .map(|v| crate::identity::canonical_json(&v))
        .unwrap_or_default();
    let mut hasher = blake3::Hasher::new_derive_key(CHAIN_CONTEXT);
    hasher.update(&entry.prev_hash);
    hasher.update(json.as_bytes());
    *hasher.finalize().as_bytes()
}

/// Checks a set of postings: count, amounts, currencies, zero sum per currency.
pub fn check_postings(postings: &[Posting]) -> Result<(), PostError> {
    if postings.len() < 2 || postings.len() > MAX_POSTINGS {
        return Err(PostError::PostingCount);
    }
    let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
    for (index, p) in postings.iter().enumerate() {
        if p.amount_minor == 0 || p.amount_minor.unsigned_abs() > MAX_AMOUNT_MINOR as u64 {
            return Err(PostError::Amount { index });
        }
        if !crate::currency::is_known(&p.currency) {
            return Err(PostError::Currency {
                index,
                currency: p.currency.clone(),
            });
        }
        *sums.entry(p.currency.as_str()).or_default() += i128::from(p.amount_minor);
    }
    if let Some((currency, sum)) = sums.into_iter().find(|(_, s)| *s != 0) {
        return Err(PostError::Unbalanced {
            currency: currency.to_string(),
            sum_minor: sum,
        });
    }
    Ok(())
}

/// Storage key of a balance: (tenant, currency, account).
pub fn balance_key(tenant: TenantId, currency: &str, account: AccountRef) -> Vec<u8> {
    let mut key = tenant.to_bytes().to_vec();
    key.extend_from_slice(currency.as_bytes());
    key.extend_from_slice(&account.key_bytes());
    key
}

fn posting_key(tenant: TenantId, currency: &str, account: AccountRef, seq: u64) -> Vec<u8> {
    let mut key = balance_key(tenant, currency, account);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn seq_key(tenant: TenantId, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&tenant.to_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The tip of a tenant's chain.
pub fn head(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
) -> Result<Head, StoreError> {
    Ok(get_record::<Head, _>(table, tenant.to_bytes())?.unwrap_or_default())
}

/// Notes every customer whose credit grant accounts this entry moved, so watchers (balance
/// alerts, auto-recharge) evaluate them before the transaction commits.
fn note_credit_balances(tenant: TenantId, now_ms: i64, postings: &[Posting]) {
    for p in postings {
        if let AccountRef::Grant { customer, .. } = p.account {
            touched::note(Touch {
                tenant,
                customer,
                what: Touched::Balance,
                at_ms: now_ms,
                span_ms: (now_ms, now_ms),
            });
        }
    }
}

/// Posts an entry: checks, then writes the entry, its indexes, the balances and the new head.
pub fn post(
    tx: &WriteTxn,
    tenant: TenantId,
    now_ms: i64,
    draft: Draft,
) -> Result<Result<JournalEntry, PostError>, StoreError> {
    if let Err(e) = check_postings(&draft.postings) {
        return Ok(Err(e));
    }
    let mut heads = tx.open_table(tables::LEDGER_HEADS)?;
    let mut balances = tx.open_table(tables::BALANCES)?;
    let tip = head(&heads, tenant)?;
    // Plan every balance first: nothing is written if one would overflow.
    let mut planned: BTreeMap<Vec<u8>, Balance> = BTreeMap::new();
    for p in &draft.postings {
        let key = balance_key(tenant, &p.currency, p.account);
        let current = match planned.get(&key) {
            Some(b) => b.clone(),
            None => get_record::<Balance, _>(&balances, &key)?.unwrap_or(Balance {
                account: p.account,
                currency: p.currency.clone(),
                balance_minor: 0,
                postings: 0,
            }),
        };
        let Some(next) = current.balance_minor.checked_add(p.amount_minor) else {
            return Ok(Err(PostError::Overflow {
                account: p.account.code(),
            }));
        };
        planned.insert(
            key,
            Balance {
                balance_minor: next,
                postings: current.postings + 1,
                ..current
            },
        );
    }
    let mut entry = JournalEntry {
        id: draft.id,
        seq: tip.seq + 1,
        kind: draft.kind,
        reason: draft.reason,
        links: draft.links,
        origin: draft.origin,
        effective_at_ms: now_ms.max(tip.effective_at_ms),
        postings: draft.postings,
        prev_hash: tip.hash,
        hash: [0; 32],
    };
    entry.hash = chain_hash(&entry);
    // TIGER_STYLE: the check above is the rule; this assertion guards the code path below it.
    assert!(
        check_postings(&entry.postings).is_ok(),
        "posting an unbalanced entry"
    );
    let seq = seq_key(tenant, entry.seq);
    put_record(&mut tx.open_table(tables::JOURNAL)?, &seq, &entry)?;
    tx.open_table(tables::JOURNAL_IDS)?.insert(
        keys::tenant_id(tenant, entry.id).as_slice(),
        entry.seq.to_be_bytes().as_slice(),
    )?;
    let mut by_time = tenant.to_bytes().to_vec();
    by_time.extend_from_slice(&time_bytes(entry.effective_at_ms));
    by_time.extend_from_slice(&entry.seq.to_be_bytes());
    tx.open_table(tables::JOURNAL_BY_TIME)?
        .insert(by_time.as_slice(), ())?;
    let mut customers: Vec<Id> = entry
        .postings
        .iter()
        .filter_map(|p| p.account.customer())
        .chain(entry.links.customer)
        .collect();
    customers.sort();
    customers.dedup();
    let mut by_customer = tx.open_table(tables::JOURNAL_BY_CUSTOMER)?;
    for customer in customers {
        let mut key = keys::tenant_id(tenant, customer).to_vec();
        key.extend_from_slice(&entry.seq.to_be_bytes());
        by_customer.insert(key.as_slice(), ())?;
    }
    let mut postings = tx.open_table(tables::POSTINGS_BY_ACCOUNT)?;
    for p in &entry.postings {
        let key = posting_key(tenant, &p.currency, p.account, entry.seq);
        // Two legs on one account in one entry add up under one key.
        let previous = postings
            .get(key.as_slice())?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map(i64::from_be_bytes)
            .unwrap_or(0);
        postings.insert(
            key.as_slice(),
            (previous + p.amount_minor).to_be_bytes().as_slice(),
        )?;
    }
    for (key, balance) in &planned {
        put_record(&mut balances, key, balance)?;
    }
    note_credit_balances(tenant, now_ms, &entry.postings);
    put_record(
        &mut heads,
        &tenant.to_bytes(),
        &Head {
            seq: entry.seq,
            hash: entry.hash,
            effective_at_ms: entry.effective_at_ms,
        },
    )?;
    Ok(Ok(entry))
}

/// One entry by id.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<JournalEntry>, StoreError> {
    let ids = tx.open_table(tables::JOURNAL_IDS)?;
    let seq = ids
        .get(keys::tenant_id(tenant, id).as_slice())?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map(u64::from_be_bytes);
    match seq {
        Some(seq) => by_seq(tx, tenant, seq),
        None => Ok(None),
    }
}

/// One entry by id, from a write transaction (a reversal reads the entry it negates).
pub fn get_in_write(
    tx: &crate::store::WriteTxn,
    tenant: TenantId,
    id: Id,
) -> Result<Option<JournalEntry>, StoreError> {
    let seq = tx
        .open_table(tables::JOURNAL_IDS)?
        .get(keys::tenant_id(tenant, id).as_slice())?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map(u64::from_be_bytes);
    match seq {
        Some(seq) => get_record(&tx.open_table(tables::JOURNAL)?, seq_key(tenant, seq)),
        None => Ok(None),
    }
}

/// One entry by its position in the chain.
pub fn by_seq(
    tx: &ReadTxn,
    tenant: TenantId,
    seq: u64,
) -> Result<Option<JournalEntry>, StoreError> {
    let journal = tx.open_table(tables::JOURNAL)?;
    get_record(&journal, seq_key(tenant, seq))
}

/// The last seq effective at or before `at_ms` (0 if none): the books at that instant are the
/// chain up to it.
pub fn seq_at(tx: &ReadTxn, tenant: TenantId, at_ms: i64) -> Result<u64, StoreError> {
    let by_time = tx.open_table(tables::JOURNAL_BY_TIME)?;
    let lo = tenant.to_bytes().to_vec();
    let mut hi = lo.clone();
    hi.extend_from_slice(&time_bytes(at_ms));
    hi.extend_from_slice(&u64::MAX.to_be_bytes());
    let last = by_time
        .range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
        .next_back();
    match last {
        Some(entry) => {
            let (key, _) = entry?;
            let key = key.value();
            let seq = key
                .get(16..24)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt("malformed journal time key".into()))?;
            Ok(seq)
        }
        None => Ok(0),
    }
}

/// An account's balance after entry `seq` (inclusive), from its postings.
pub fn balance_through(
    tx: &ReadTxn,
    tenant: TenantId,
    currency: &str,
    account: AccountRef,
    seq: u64,
) -> Result<i64, StoreError> {
    let postings = tx.open_table(tables::POSTINGS_BY_ACCOUNT)?;
    let lo = posting_key(tenant, currency, account, 0);
    let hi = posting_key(tenant, currency, account, seq);
    let mut sum: i64 = 0;
    for entry in postings.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (_, value) = entry?;
        let amount = <[u8; 8]>::try_from(value.value())
            .map(i64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("malformed posting amount".into()))?;
        sum = sum
            .checked_add(amount)
            .ok_or_else(|| StoreError::Corrupt("posting sum overflows".into()))?;
    }
    Ok(sum)
}

/// An account's current balance (0 if it never moved).
pub fn balance(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    currency: &str,
    account: AccountRef,
) -> Result<i64, StoreError> {
    Ok(
        get_record::<Balance, _>(table, balance_key(tenant, currency, account))?
            .map(|b| b.balance_minor)
            .unwrap_or(0),
    )
}

/// Filters of a journal listing.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only entries with a posting on this account (any currency).
    pub account: Option<AccountRef>,
    /// Only entries concerning this customer.
    pub customer: Option<Id>,
    /// Effective at or after.
    pub from_ms: Option<i64>,
    /// Effective before.
    pub to_ms: Option<i64>,
}

/// Most entries one listing examines.
pub const MAX_SCAN_ROWS: usize = 10_000;

/// A page of entries in chain order after `after_seq`, and the seq to continue from.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    filter: &Filter,
    after_seq: u64,
    limit: usize,
) -> Result<(Vec<JournalEntry>, Option<u64>), StoreError> {
    let candidates: Box<dyn Iterator<Item = Result<u64, StoreError>>> = match filter.customer {
        Some(customer) => {
            let table = tx.open_table(tables::JOURNAL_BY_CUSTOMER)?;
            let prefix = keys::tenant_id(tenant, customer).to_vec();
            let mut lo = prefix.clone();
            lo.extend_from_slice(&(after_seq.saturating_add(1)).to_be_bytes());
            let mut hi = prefix;
            hi.extend_from_slice(&u64::MAX.to_be_bytes());
            let seqs: Vec<Result<u64, StoreError>> = table
                .range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
                .take(MAX_SCAN_ROWS + 1)
                .map(|e| {
                    let (k, _) = e?;
                    k.value()
                        .get(24..32)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_be_bytes)
                        .ok_or_else(|| StoreError::Corrupt("malformed journal index key".into()))
                })
                .collect();
            Box::new(seqs.into_iter())
        }
        None => Box::new((after_seq.saturating_add(1)..=u64::MAX).map(Ok)),
    };
    let journal = tx.open_table(tables::JOURNAL)?;
    let mut out = Vec::new();
    let mut last_seen = None;
    for (scanned, seq) in candidates.enumerate() {
        let seq = seq?;
        let Some(entry) = get_record::<JournalEntry, _>(&journal, seq_key(tenant, seq))? else {
            return Ok((out, None));
        };
        if out.len() == limit || scanned == MAX_SCAN_ROWS {
            return Ok((out, last_seen));
        }
        last_seen = Some(seq);
        let keep = filter
            .account
            .is_none_or(|a| entry.postings.iter().any(|p| p.account == a))
            && filter.from_ms.is_none_or(|f| entry.effective_at_ms >= f)
            && filter.to_ms.is_none_or(|t| entry.effective_at_ms < t);
        if keep {
            out.push(entry);
        }
    }
    Ok((out, None))
}

/// A page of balance rows (with their storage keys, the listing cursor) and whether more follow.
pub type BalancePage = (Vec<(Vec<u8>, Balance)>, bool);

/// Every balance row of a tenant, in key order after `after` (a balance key), for listings.
pub fn balances(
    tx: &ReadTxn,
    tenant: TenantId,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<BalancePage, StoreError> {
    let table = tx.open_table(tables::BALANCES)?;
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        Some(k) => {
            let mut k = k.to_vec();
            k.push(0);
            k
        }
        None => start,
    };
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        let (key, value) = entry?;
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push((key.value().to_vec(), codec::decode(value.value())?));
    }
    Ok((out, false))
}
