//! Property tests of the ledger: any sequence of grants, consumptions, voids and expiries keeps
//! every invariant, and verification notices tampering.

use crate::store::ReadableTable;
use proptest::prelude::*;

use super::grant::{
    self, Category, ConsumeCredits, CreateGrant, ExpireGrants, Funding, Grant, GrantStatus,
    VoidGrant,
};
use super::journal::{self, JournalEntry};
use super::verify::verify;
use crate::id::Id;
use crate::store::{codec, tables, Store, TenantId};

const TENANT: TenantId = TenantId(1);
const START_MS: i64 = 1_800_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Grant {
        customer: usize,
        amount: i64,
        promotional: bool,
        priority: u32,
        expires_in_ms: Option<i64>,
    },
    Consume {
        customer: usize,
        amount: i64,
    },
    Void {
        pick: proptest::sample::Index,
    },
    Advance {
        ms: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..2, 1i64..1_000, any::<bool>(), 0u32..3, proptest::option::of(1i64..5_000))
            .prop_map(|(customer, amount, promotional, priority, expires_in_ms)| Op::Grant {
                customer, amount, promotional, priority, expires_in_ms
            }),
        3 => (0usize..2, 1i64..2_000).prop_map(|(customer, amount)| Op::Consume { customer, amount }),
        1 => any::<proptest::sample::Index>().prop_map(|pick| Op::Void { pick }),
        2 => (1i64..3_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn setup() -> (tempfile::TempDir, Store, Vec<Id>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("l.redb"), 1 << 22).expect("open");
    let mut customers = Vec::new();
    for name in ["a", "b"] {
        customers.push(crate::customers::create_for_test(&store, TENANT, name, START_MS).id);
    }
    (dir, store, customers)
}

fn grants_with_remaining(store: &Store, customer: Id) -> Vec<(Grant, i64)> {
    let tx = store.read().expect("read");
    let grants = tx.open_table(tables::GRANTS).expect("t");
    let by_customer = tx.open_table(tables::GRANTS_BY_CUSTOMER).expect("t");
    let balances = tx.open_table(tables::BALANCES).expect("t");
    grant::of_customer(&grants, &by_customer, TENANT, customer)
        .expect("grants")
        .into_iter()
        .map(|g| {
            let left = grant::remaining(&balances, TENANT, &g).expect("remaining");
            (g, left)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_keeps_the_books_true(ops in proptest::collection::vec(op(), 1..40)) {
        let (_dir, store, customers) = setup();
        let mut now = START_MS;
        let mut all_grants: Vec<Id> = Vec::new();
        for op in ops {
            match op {
                Op::Grant { customer, amount, promotional, priority, expires_in_ms } => {
                    let id = Id::generate();
                    let (category, funding) = if promotional {
                        (Category::Promotional, Funding::PromotionalExpense)
                    } else {
                        (Category::Paid, Funding::Cash)
                    };
                    store.apply_one(CreateGrant {
                        tenant: TENANT,
                        grant: Grant {
                            id,
                            customer: customers[customer],
                            currency: "USD".into(),
                            amount_minor: amount,
                            category,
                            funding,
                            priority,
                            effective_at_ms: now,
                            expires_at_ms: expires_in_ms.map(|e| now + e),
                            created_at_ms: now,
                            status: GrantStatus::Active,
                            closed_at_ms: None,
                            issue_entry: Id::generate(),
                            close_entry: None,
                        },
                        reason: "test".into(),
                        origin: "test".into(),
                    }).expect("store").expect("grant");
                    all_grants.push(id);
                }
                Op::Consume { customer, amount } => {
                    let before = grants_with_remaining(&store, customers[customer]);
                    let usable: Vec<&(Grant, i64)> = before
                        .iter()
                        .filter(|(g, left)| g.usable_at(now) && *left > 0)
                        .collect();
                    let available: i64 = usable.iter().map(|(_, l)| l).sum();
                    let consumption = store.apply_one(ConsumeCredits {
                        tenant: TENANT,
                        customer: customers[customer],
                        currency: "USD".into(),
                        amount_minor: amount,
                        now_ms: now,
                        entry_id: Id::generate(),
                        origin: "test".into(),
                    }).expect("store").expect("consume");
                    prop_assert_eq!(consumption.total_minor(), amount.min(available));
                    // Burn order: every grant drawn before the last was drained, and no usable
                    // grant earlier in burn order than the last drawn one keeps anything.
                    if let Some(&(last, _)) = consumption.draws.last() {
                        let key_of = |id: Id| before.iter().find(|(g, _)| g.id == id).map(|(g, _)| g.burn_key());
                        let last_key = key_of(last).expect("drawn grant exists");
                        for (id, drawn) in &consumption.draws[..consumption.draws.len() - 1] {
                            let left = before.iter().find(|(g, _)| g.id == *id).map(|(_, l)| *l);
                            prop_assert_eq!(Some(*drawn), left, "not drained before moving on");
                        }
                        let after = grants_with_remaining(&store, customers[customer]);
                        for (g, left) in &after {
                            if g.usable_at(now) && g.burn_key() < last_key {
                                prop_assert_eq!(*left, 0, "an earlier grant was skipped");
                            }
                        }
                    }
                }
                Op::Void { pick } => {
                    if !all_grants.is_empty() {
                        let id = all_grants[pick.index(all_grants.len())];
                        let result = store.apply_one(VoidGrant {
                            tenant: TENANT,
                            grant: id,
                            entry_id: Id::generate(),
                            now_ms: now,
                            origin: "test".into(),
                        }).expect("store");
                        if let Ok(g) = result {
                            prop_assert_eq!(g.status, GrantStatus::Voided);
                        }
                    }
                }
                Op::Advance { ms } => {
                    now += ms;
                    store.apply_one(ExpireGrants { now_ms: now, limit: 1000 }).expect("expire");
                }
            }
            // Invariants after every step.
            for customer in &customers {
                for (g, left) in grants_with_remaining(&store, *customer) {
                    prop_assert!(left >= 0 && left <= g.amount_minor, "{left} of {}", g.amount_minor);
                    if g.status != GrantStatus::Active {
                        prop_assert_eq!(left, 0);
                    }
                    if g.status == GrantStatus::Active {
                        prop_assert!(g.expires_at_ms.is_none_or(|e| e > now), "expired grant still active");
                    }
                }
            }
        }
        let tx = store.read().expect("read");
        let report = verify(&tx, None, &mut |_, _| {}).expect("verify");
        prop_assert!(report.violation.is_none(), "{:?}", report.violation);
        // Balance `at` equals the recomputation from entries up to that instant.
        let balances = tx.open_table(tables::BALANCES).expect("t");
        let head_seq = journal::head(&tx.open_table(tables::LEDGER_HEADS).expect("t"), TENANT).expect("head").seq;
        for item in balances.iter().expect("iter") {
            let (_, value) = item.expect("row");
            let b: journal::Balance = codec::decode(value.value()).expect("decode");
            let through = journal::balance_through(&tx, TENANT, &b.currency, b.account, head_seq).expect("sum");
            prop_assert_eq!(through, b.balance_minor);
        }
    }
}

#[test]
fn expiry_happens_once_across_reopen() {
    let (dir, store, customers) = setup();
    let id = Id::generate();
    store
        .apply_one(CreateGrant {
            tenant: TENANT,
            grant: Grant {
                id,
                customer: customers[0],
                currency: "USD".into(),
                amount_minor: 500,
                category: Category::Promotional,
                funding: Funding::PromotionalExpense,
                priority: 0,
                effective_at_ms: START_MS,
                expires_at_ms: Some(START_MS + 1_000),
                created_at_ms: START_MS,
                status: GrantStatus::Active,
                closed_at_ms: None,
                issue_entry: Id::generate(),
                close_entry: None,
            },
            reason: "test".into(),
            origin: "test".into(),
        })
        .expect("store")
        .expect("grant");
    let expired = store
        .apply_one(ExpireGrants {
            now_ms: START_MS + 2_000,
            limit: 10,
        })
        .expect("expire");
    assert_eq!(expired, 1);
    let path = dir.path().join("l.redb");
    drop(store);
    let store = Store::open(&path, 1 << 22).expect("reopen");
    let again = store
        .apply_one(ExpireGrants {
            now_ms: START_MS + 3_000,
            limit: 10,
        })
        .expect("expire");
    assert_eq!(again, 0);
    let tx = store.read().expect("read");
    let journal_len = tx
        .open_table(tables::JOURNAL)
        .expect("t")
        .len()
        .expect("len");
    assert_eq!(journal_len, 2, "one issue entry and one expiry entry");
}

#[test]
fn credits_drawn_in_one_entry_stop_at_the_entry_size_and_the_rest_stays_due() {
    let (_dir, store, customers) = setup();
    for n in 0..(journal::MAX_POSTINGS as i64 + 20) {
        store
            .apply_one(CreateGrant {
                tenant: TENANT,
                grant: Grant {
                    id: Id::generate(),
                    customer: customers[0],
                    currency: "USD".into(),
                    amount_minor: 1,
                    category: Category::Promotional,
                    funding: Funding::PromotionalExpense,
                    priority: 0,
                    effective_at_ms: START_MS,
                    expires_at_ms: None,
                    created_at_ms: START_MS + n,
                    status: GrantStatus::Active,
                    closed_at_ms: None,
                    issue_entry: Id::generate(),
                    close_entry: None,
                },
                reason: "test".into(),
                origin: "test".into(),
            })
            .expect("store")
            .expect("grant");
    }
    let consumed = store
        .apply_one(ConsumeCredits {
            tenant: TENANT,
            customer: customers[0],
            currency: "USD".into(),
            amount_minor: 500,
            now_ms: START_MS + 1_000,
            entry_id: Id::generate(),
            origin: "test".into(),
        })
        .expect("store")
        .expect("an entry of at most MAX_POSTINGS legs");
    assert_eq!(consumed.draws.len(), journal::MAX_POSTINGS - 1);
    let report = verify(&store.read().expect("read"), None, &mut |_, _| {}).expect("verify");
    assert!(report.violation.is_none());
}

#[test]
fn tampering_with_an_entry_is_found_and_named() {
    let (_dir, store, customers) = setup();
    for amount in [100, 200, 300] {
        store
            .apply_one(CreateGrant {
                tenant: TENANT,
                grant: Grant {
                    id: Id::generate(),
                    customer: customers[0],
                    currency: "USD".into(),
                    amount_minor: amount,
                    category: Category::Paid,
                    funding: Funding::Cash,
                    priority: 0,
                    effective_at_ms: START_MS,
                    expires_at_ms: None,
                    created_at_ms: START_MS,
                    status: GrantStatus::Active,
                    closed_at_ms: None,
                    issue_entry: Id::generate(),
                    close_entry: None,
                },
                reason: "test".into(),
                origin: "test".into(),
            })
            .expect("store")
            .expect("grant");
    }
    // Change the reason of entry #2 (amounts would also break the balances check).
    let tx = store.begin_write().expect("tx");
    let target_id;
    {
        let mut journal_table = tx.open_table(tables::JOURNAL).expect("t");
        let mut key = TENANT.to_bytes().to_vec();
        key.extend_from_slice(&2u64.to_be_bytes());
        let mut entry: JournalEntry = codec::decode(
            journal_table
                .get(key.as_slice())
                .expect("get")
                .expect("entry")
                .value(),
        )
        .expect("decode");
        entry.reason = "nothing to see here".into();
        target_id = entry.id.display(journal::PREFIX);
        let bytes = codec::encode(&entry).expect("encode");
        journal_table
            .insert(key.as_slice(), bytes.as_slice())
            .expect("insert");
    }
    tx.commit().expect("commit");
    let read = store.read().expect("read");
    let report = verify(&read, None, &mut |_, _| {}).expect("verify");
    let violation = report.violation.expect("tampering is found");
    assert_eq!(violation.entry.as_deref(), Some(target_id.as_str()));
    assert_eq!(violation.seq, Some(2));
}

#[test]
fn a_grant_in_effect_since_its_creation_counts_for_a_write_stamped_before_it() {
    let grant = |effective_at_ms: i64| Grant {
        id: Id::generate(),
        customer: Id::generate(),
        currency: "USD".into(),
        amount_minor: 500,
        category: Category::Paid,
        funding: Funding::Prepayment,
        priority: 0,
        effective_at_ms,
        expires_at_ms: Some(START_MS + 10_000),
        created_at_ms: START_MS,
        status: GrantStatus::Active,
        closed_at_ms: None,
        issue_entry: Id::generate(),
        close_entry: None,
    };
    // Created (and committed) at START_MS, seen by a write stamped 30 ms earlier.
    let now = grant(START_MS);
    assert!(!now.usable_at(START_MS - 30));
    assert!(now.counts_at(START_MS - 30));
    assert!(!now.counts_at(START_MS + 10_000), "expired");
    // Scheduled to start later: counts only from its start.
    let later = grant(START_MS + 5_000);
    assert!(!later.counts_at(START_MS + 4_999));
    assert!(later.counts_at(START_MS + 5_000));
    let mut voided = grant(START_MS);
    voided.status = GrantStatus::Voided;
    assert!(!voided.counts_at(START_MS));
}
