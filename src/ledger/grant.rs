//! Credit grants: prepaid or promotional credits, drawn down in a documented order.
//!
//! Each grant has its own liability account (`customer:cus_…:credits:grt_…`); its remaining
//! amount is minus that account's balance, so the grant record never duplicates a number the
//! ledger already holds. Issuing, voiding, expiring and consuming are journal entries.
//!
//! Burn order, for every consumer: priority ascending (0 first), then earliest expiry (grants
//! that never expire last), then oldest grant first.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::account::{AccountRef, SystemAccount};
use super::journal::{self, Draft, JournalEntry, Links, PostError, Posting};
use crate::id::Id;
use crate::store::keys::{self, time_bytes, TenantId};
use crate::store::writer::Command;
use crate::store::{get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "grt";

/// Why the credits were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Category {
    /// Bought by the customer.
    Paid,
    /// Given away.
    Promotional,
}

impl Category {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Paid => "paid",
            Category::Promotional => "promotional",
        }
    }
}

/// The account on the other side of the grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Funding {
    /// Paid up front.
    Cash,
    /// To be invoiced: the customer owes it.
    Receivable,
    /// A promotional cost.
    PromotionalExpense,
    /// A paid top-up: its invoice put the amount in `prepayments`, and its payment turns it
    /// into this grant (`wallet`). Last, so stored grants decode unchanged.
    Prepayment,
}

impl Funding {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Funding::Cash => "cash",
            Funding::Receivable => "receivable",
            Funding::PromotionalExpense => "promotional_expense",
            Funding::Prepayment => "prepayment",
        }
    }

    /// The counter account of a grant of `customer` funded this way.
    pub fn account(self, customer: Id) -> AccountRef {
        match self {
            Funding::Cash => AccountRef::System(SystemAccount::Cash),
            Funding::Receivable => AccountRef::Receivable { customer },
            Funding::PromotionalExpense => AccountRef::System(SystemAccount::PromotionalExpense),
            Funding::Prepayment => AccountRef::System(SystemAccount::Prepayments),
        }
    }
}

/// Lifecycle of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantStatus {
    /// Usable between its effective and expiry times.
    Active,
    /// Voided by an operator; the remainder was reversed.
    Voided,
    /// Reached its expiry; the remainder went to breakage.
    Expired,
}

/// A grant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `grt_…`.
    pub id: Id,
    /// Whose credits.
    pub customer: Id,
    /// ISO 4217.
    pub currency: String,
    /// Granted amount.
    pub amount_minor: i64,
    /// Paid or promotional.
    pub category: Category,
    /// The counter account.
    pub funding: Funding,
    /// 0 burns first.
    pub priority: u32,
    /// Usable from.
    pub effective_at_ms: i64,
    /// Usable until (exclusive); `None` never expires.
    pub expires_at_ms: Option<i64>,
    /// Created.
    pub created_at_ms: i64,
    /// Lifecycle.
    pub status: GrantStatus,
    /// When voided or expired.
    pub closed_at_ms: Option<i64>,
    /// The entries that issued and closed it.
    pub issue_entry: Id,
    /// The entry that voided or expired it (none when nothing remained).
    pub close_entry: Option<Id>,
}

impl Grant {
    /// Its liability account.
    pub fn account(&self) -> AccountRef {
        AccountRef::Grant {
            customer: self.customer,
            grant: self.id,
        }
    }

    /// Whether it may be drawn at `at_ms`.
    pub fn usable_at(&self, at_ms: i64) -> bool {
        self.status == GrantStatus::Active
            && self.effective_at_ms <= at_ms
            && self.expires_at_ms.is_none_or(|e| at_ms < e)
    }

    /// Whether a balance check stamped `at_ms` counts it: usable then, or in effect since its
    /// creation even when the write that created it was stamped after `at_ms`. A write is
    /// stamped before it is applied, so it may commit after writes stamped later (a batch
    /// applied again after a serialization failure, another node's write): a grant that took
    /// effect when it was created and has committed is in the wallet for every write applied
    /// after it, and a threshold check that left it out would see a wallet emptier than it is.
    /// A grant scheduled to start later still counts only from its start.
    pub fn counts_at(&self, at_ms: i64) -> bool {
        self.status == GrantStatus::Active
            && self.effective_at_ms <= at_ms.max(self.created_at_ms)
            && self.expires_at_ms.is_none_or(|e| at_ms < e)
    }

    /// The burn-order sort key.
    pub fn burn_key(&self) -> (u32, i64, Id) {
        (
            self.priority,
            self.expires_at_ms.unwrap_or(i64::MAX),
            self.id,
        )
    }
}

/// Why a grant operation did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The customer does not exist.
    #[error("no customer with id {0}")]
    UnknownCustomer(String),
    /// No such grant.
    #[error("no credit grant with id {0}")]
    Missing(String),
    /// Already voided or expired.
    #[error("credit grant {id} is already {status}")]
    NotActive {
        /// The grant.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// A top-up's grant: its credit is taken back by refunding the top-up's payment, which
    /// returns the money too (a void would leave it owed in `prepayments`).
    #[error("credit grant {0} was bought by a top-up: refund the top-up's payment (up to the unused credit) instead of voiding it")]
    TopUp(String),
    /// The ledger refused the entry.
    #[error(transparent)]
    Ledger(#[from] PostError),
}

/// The API name of a status.
pub fn status_str(status: GrantStatus) -> &'static str {
    match status {
        GrantStatus::Active => "active",
        GrantStatus::Voided => "voided",
        GrantStatus::Expired => "expired",
    }
}

fn by_customer_key(tenant: TenantId, customer: Id, grant: Id) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, customer).to_vec();
    key.extend_from_slice(&grant.to_bytes());
    key
}

fn expiry_key(expires_at_ms: i64, tenant: TenantId, grant: Id) -> Vec<u8> {
    let mut key = time_bytes(expires_at_ms).to_vec();
    key.extend_from_slice(&tenant.to_bytes());
    key.extend_from_slice(&grant.to_bytes());
    key
}

/// A grant's remaining amount: minus its liability account's balance.
pub fn remaining(
    balances: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    grant: &Grant,
) -> Result<i64, StoreError> {
    Ok(-journal::balance(
        balances,
        tenant,
        &grant.currency,
        grant.account(),
    )?)
}

/// Every grant of a customer, oldest first.
pub fn of_customer(
    grants: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_customer: &impl ReadableTable<&'static [u8], ()>,
    tenant: TenantId,
    customer: Id,
) -> Result<Vec<Grant>, StoreError> {
    let lo = by_customer_key(tenant, customer, Id(0));
    let hi = by_customer_key(tenant, customer, Id(u128::MAX));
    let mut out = Vec::new();
    for entry in by_customer.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (key, _) = entry?;
        let id = key
            .value()
            .get(24..40)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Id::from_bytes)
            .ok_or_else(|| StoreError::Corrupt("malformed grant index key".into()))?;
        let grant = get_record::<Grant, _>(grants, keys::tenant_id(tenant, id))?
            .ok_or_else(|| StoreError::Corrupt("grant index points at no grant".into()))?;
        out.push(grant);
    }
    Ok(out)
}

/// Issues a grant: the grant record and its entry (funding debited, grant account credited).
#[derive(Clone)]
pub struct CreateGrant {
    /// Owner.
    pub tenant: TenantId,
    /// The grant (status active; `issue_entry` is the entry id to use).
    pub grant: Grant,
    /// Reason recorded on the entry.
    pub reason: String,
    /// The intent that created it.
    pub origin: String,
}

impl Command for CreateGrant {
    type Output = Result<Grant, GrantError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        issue(tx, self.tenant, self.grant, self.reason, self.origin)
    }
}

/// Issues a grant in the caller's transaction (see [`CreateGrant`]): checks the customer,
/// posts the entry, stores the grant and its indexes, records `credit_grant.created`.
pub fn issue(
    tx: &WriteTxn,
    tenant: TenantId,
    grant: Grant,
    reason: String,
    origin: String,
) -> Result<Result<Grant, GrantError>, StoreError> {
    let this = IssueArgs {
        tenant,
        reason,
        origin,
    };
    this.issue(tx, grant)
}

/// What issuing a grant needs besides the grant.
struct IssueArgs {
    tenant: TenantId,
    reason: String,
    origin: String,
}

impl IssueArgs {
    fn issue(self, tx: &WriteTxn, grant: Grant) -> Result<Result<Grant, GrantError>, StoreError> {
        {
            let customers = tx.open_table(tables::CUSTOMERS)?;
            if customers
                .get(keys::tenant_id(self.tenant, grant.customer).as_slice())?
                .is_none()
            {
                return Ok(Err(GrantError::UnknownCustomer(
                    grant.customer.display(crate::customers::PREFIX),
                )));
            }
        }
        let draft = Draft {
            id: grant.issue_entry,
            kind: "credit_grant".into(),
            reason: self.reason,
            links: Links {
                customer: Some(grant.customer),
                grant: Some(grant.id),
                ..Links::default()
            },
            origin: self.origin,
            postings: vec![
                Posting {
                    account: grant.funding.account(grant.customer),
                    currency: grant.currency.clone(),
                    amount_minor: grant.amount_minor,
                },
                Posting {
                    account: grant.account(),
                    currency: grant.currency.clone(),
                    amount_minor: -grant.amount_minor,
                },
            ],
        };
        if let Err(e) = journal::post(tx, self.tenant, grant.created_at_ms, draft)? {
            return Ok(Err(e.into()));
        }
        put_record(
            &mut tx.open_table(tables::GRANTS)?,
            &keys::tenant_id(self.tenant, grant.id),
            &grant,
        )?;
        tx.open_table(tables::GRANTS_BY_CUSTOMER)?.insert(
            by_customer_key(self.tenant, grant.customer, grant.id).as_slice(),
            (),
        )?;
        if let Some(expires) = grant.expires_at_ms {
            tx.open_table(tables::GRANT_EXPIRY)?
                .insert(expiry_key(expires, self.tenant, grant.id).as_slice(), ())?;
        }
        emit_grant(
            tx,
            self.tenant,
            &grant,
            grant.amount_minor,
            ("credit_grant.created", "created"),
            grant.created_at_ms,
        )?;
        Ok(Ok(grant))
    }
}

/// How a grant is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closure {
    Void,
    Expire,
}

/// Closes a grant, posting its remainder back to its funding (void) or to breakage (expiry).
fn close(
    tx: &WriteTxn,
    tenant: TenantId,
    mut grant: Grant,
    closure: Closure,
    entry_id: Id,
    now_ms: i64,
    origin: String,
) -> Result<Result<Grant, GrantError>, StoreError> {
    if grant.status != GrantStatus::Active {
        return Ok(Err(GrantError::NotActive {
            id: grant.id.display(PREFIX),
            status: status_str(grant.status),
        }));
    }
    let left = {
        let balances = tx.open_table(tables::BALANCES)?;
        remaining(&balances, tenant, &grant)?
    };
    let (kind, reason, counter, status) = match closure {
        Closure::Void => (
            "credit_void",
            "credit grant voided; remainder reversed",
            grant.funding.account(grant.customer),
            GrantStatus::Voided,
        ),
        Closure::Expire => (
            "credit_expiry",
            "credit grant expired; remainder to breakage",
            AccountRef::System(SystemAccount::Breakage),
            GrantStatus::Expired,
        ),
    };
    if left > 0 {
        let draft = Draft {
            id: entry_id,
            kind: kind.into(),
            reason: reason.into(),
            links: Links {
                customer: Some(grant.customer),
                grant: Some(grant.id),
                ..Links::default()
            },
            origin,
            postings: vec![
                Posting {
                    account: grant.account(),
                    currency: grant.currency.clone(),
                    amount_minor: left,
                },
                Posting {
                    account: counter,
                    currency: grant.currency.clone(),
                    amount_minor: -left,
                },
            ],
        };
        if let Err(e) = journal::post(tx, tenant, now_ms, draft)? {
            return Ok(Err(e.into()));
        }
        grant.close_entry = Some(entry_id);
    }
    grant.status = status;
    grant.closed_at_ms = Some(now_ms);
    put_record(
        &mut tx.open_table(tables::GRANTS)?,
        &keys::tenant_id(tenant, grant.id),
        &grant,
    )?;
    if let Some(expires) = grant.expires_at_ms {
        tx.open_table(tables::GRANT_EXPIRY)?
            .remove(expiry_key(expires, tenant, grant.id).as_slice())?;
    }
    Ok(Ok(grant))
}

/// Voids a grant's remainder.
#[derive(Clone)]
pub struct VoidGrant {
    /// Owner.
    pub tenant: TenantId,
    /// Which grant.
    pub grant: Id,
    /// Id for the reversing entry.
    pub entry_id: Id,
    /// Now.
    pub now_ms: i64,
    /// The intent.
    pub origin: String,
}

impl Command for VoidGrant {
    type Output = Result<Grant, GrantError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let grant = {
            let grants = tx.open_table(tables::GRANTS)?;
            get_record::<Grant, _>(&grants, keys::tenant_id(self.tenant, self.grant))?
        };
        let Some(grant) = grant else {
            return Ok(Err(GrantError::Missing(self.grant.display(PREFIX))));
        };
        if grant.funding == Funding::Prepayment {
            return Ok(Err(GrantError::TopUp(grant.id.display(PREFIX))));
        }
        close(
            tx,
            self.tenant,
            grant,
            Closure::Void,
            self.entry_id,
            self.now_ms,
            self.origin,
        )
    }
}

/// Expires every grant whose expiry has passed, oldest first, at most `limit` per command.
/// Exactly once per grant: the status change, the entry and the removal from the expiry index
/// commit together, so a restart finds the grant either untouched or fully expired.
#[derive(Clone)]
pub struct ExpireGrants {
    /// Grants expiring at or before this instant.
    pub now_ms: i64,
    /// Most grants per command.
    pub limit: usize,
}

impl Command for ExpireGrants {
    type Output = usize;

    fn apply(self, tx: &WriteTxn) -> Result<usize, StoreError> {
        let upper = time_bytes(self.now_ms.saturating_add(1));
        let due: Vec<Vec<u8>> = {
            let index = tx.open_table(tables::GRANT_EXPIRY)?;
            let mut keys = Vec::new();
            for entry in index.range::<&[u8]>(..upper.as_slice())?.take(self.limit) {
                let (k, _) = entry?;
                keys.push(k.value().to_vec());
            }
            keys
        };
        let mut expired = 0;
        for key in &due {
            let tenant = key
                .get(8..16)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(|b| TenantId(u64::from_be_bytes(b)));
            let grant_id = key
                .get(16..32)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(Id::from_bytes);
            let (Some(tenant), Some(grant_id)) = (tenant, grant_id) else {
                return Err(StoreError::Corrupt("malformed grant expiry key".into()));
            };
            let grant = {
                let grants = tx.open_table(tables::GRANTS)?;
                get_record::<Grant, _>(&grants, keys::tenant_id(tenant, grant_id))?
            };
            let Some(grant) = grant else {
                return Err(StoreError::Corrupt(
                    "expiry index points at no grant".into(),
                ));
            };
            let expires = grant.expires_at_ms.unwrap_or(self.now_ms);
            // The deterministic entry id keeps the origin traceable: one expiry per grant.
            let origin = format!("expiry:{}", grant.id.display(PREFIX));
            let at_ms = expires.max(0).min(self.now_ms);
            match close(
                tx,
                tenant,
                grant,
                Closure::Expire,
                Id::generate_at(expires),
                at_ms,
                origin,
            )? {
                Ok(closed) => {
                    expired += 1;
                    emit_grant(
                        tx,
                        tenant,
                        &closed,
                        0,
                        ("credit_grant.expired", "expired"),
                        at_ms,
                    )?;
                }
                Err(GrantError::NotActive { .. }) => {
                    tx.open_table(tables::GRANT_EXPIRY)?
                        .remove(key.as_slice())?;
                }
                Err(e) => {
                    tracing::error!(error = %e, "a grant could not expire");
                    tx.open_table(tables::GRANT_EXPIRY)?
                        .remove(key.as_slice())?;
                }
            }
        }
        Ok(expired)
    }
}

/// What one consumption drew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumption {
    /// (grant, amount drawn) in burn order.
    pub draws: Vec<(Id, i64)>,
    /// The entry that recorded it (none when nothing was drawn).
    pub entry: Option<JournalEntry>,
}

impl Consumption {
    /// Total drawn.
    pub fn total_minor(&self) -> i64 {
        self.draws.iter().map(|(_, a)| a).sum()
    }
}

/// Draws up to `amount_minor` of a customer's credits usable at `at_ms`, in burn order, never
/// taking a grant below zero; posts grant accounts debited, receivable credited. Billing calls
/// this inside its own command so the invoice and the draw commit together.
#[allow(clippy::too_many_arguments)]
pub fn consume(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: Id,
    currency: &str,
    amount_minor: i64,
    at_ms: i64,
    entry_id: Id,
    links: Links,
    origin: String,
) -> Result<Result<Consumption, PostError>, StoreError> {
    let mut usable = {
        let grants = tx.open_table(tables::GRANTS)?;
        let by_customer = tx.open_table(tables::GRANTS_BY_CUSTOMER)?;
        let balances = tx.open_table(tables::BALANCES)?;
        let mut usable = Vec::new();
        for g in of_customer(&grants, &by_customer, tenant, customer)? {
            if g.currency == currency && g.usable_at(at_ms) {
                let left = remaining(&balances, tenant, &g)?;
                if left > 0 {
                    usable.push((g, left));
                }
            }
        }
        usable
    };
    usable.sort_by_key(|(g, _)| g.burn_key());
    let mut wanted = amount_minor.max(0);
    let mut draws = Vec::new();
    let mut postings = Vec::new();
    // One entry holds at most MAX_POSTINGS legs, one of them the receivable: what the first
    // grants in burn order cannot cover stays due, so applying credits never fails on the
    // entry's size after the invoice's own entry was written.
    let mut depleted = Vec::new();
    for (grant, left) in usable.into_iter().take(journal::MAX_POSTINGS - 1) {
        if wanted == 0 {
            break;
        }
        let take = left.min(wanted);
        wanted -= take;
        draws.push((grant.id, take));
        if take == left {
            depleted.push(grant.clone());
        }
        postings.push(Posting {
            account: grant.account(),
            currency: currency.to_string(),
            amount_minor: take,
        });
    }
    let total: i64 = draws.iter().map(|(_, a)| a).sum();
    if total == 0 {
        return Ok(Ok(Consumption { draws, entry: None }));
    }
    postings.push(Posting {
        account: AccountRef::Receivable { customer },
        currency: currency.to_string(),
        amount_minor: -total,
    });
    let draft = Draft {
        id: entry_id,
        kind: "credits_applied".into(),
        reason: "credits applied in burn order".into(),
        links: Links {
            customer: Some(customer),
            ..links
        },
        origin,
        postings,
    };
    let posted = journal::post(tx, tenant, at_ms, draft)?;
    if posted.is_ok() {
        for g in &depleted {
            // Once per consumption that emptied it: a void that gives credits back may let a
            // later invoice empty it again.
            let effect = format!("depleted:{}", entry_id.display(journal::PREFIX));
            emit_grant(tx, tenant, g, 0, ("credit_grant.depleted", &effect), at_ms)?;
        }
    }
    Ok(posted.map(|entry| Consumption {
        draws,
        entry: Some(entry),
    }))
}

/// Records a grant's transition in the outbox, with its remainder at that moment.
fn emit_grant(
    tx: &WriteTxn,
    tenant: TenantId,
    grant: &Grant,
    remaining_minor: i64,
    (event_type, effect): (&str, &str),
    now_ms: i64,
) -> Result<(), StoreError> {
    crate::notifications::outbox::emit(
        tx,
        tenant,
        crate::notifications::outbox::Effect {
            event_type,
            effect: format!("{}:{effect}", grant.id.display(PREFIX)),
            customer: Some(grant.customer),
            kind: "credit_grant",
            id: grant.id,
            record: &(grant, remaining_minor),
        },
        now_ms,
    )
}

/// [`consume`] as a command of its own (operators and tests; billing embeds the function).
#[derive(Clone)]
pub struct ConsumeCredits {
    /// Owner.
    pub tenant: TenantId,
    /// Whose credits.
    pub customer: Id,
    /// Currency.
    pub currency: String,
    /// Most to draw.
    pub amount_minor: i64,
    /// Now.
    pub now_ms: i64,
    /// Entry id.
    pub entry_id: Id,
    /// The intent.
    pub origin: String,
}

impl Command for ConsumeCredits {
    type Output = Result<Consumption, PostError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        consume(
            tx,
            self.tenant,
            self.customer,
            &self.currency,
            self.amount_minor,
            self.now_ms,
            self.entry_id,
            Links::default(),
            self.origin,
        )
    }
}

/// One grant.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Grant>, StoreError> {
    let grants = tx.open_table(tables::GRANTS)?;
    get_record(&grants, keys::tenant_id(tenant, id))
}

/// A customer's grants with their remaining amounts after chain position `seq` (the books at
/// some instant): grants issued later are left out.
pub fn at_seq(
    tx: &ReadTxn,
    tenant: TenantId,
    customer: Id,
    seq: u64,
) -> Result<Vec<(Grant, i64)>, StoreError> {
    let grants = tx.open_table(tables::GRANTS)?;
    let by_customer = tx.open_table(tables::GRANTS_BY_CUSTOMER)?;
    let ids = tx.open_table(tables::JOURNAL_IDS)?;
    let mut out = Vec::new();
    for g in of_customer(&grants, &by_customer, tenant, customer)? {
        let issued_seq = ids
            .get(keys::tenant_id(tenant, g.issue_entry).as_slice())?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(u64::MAX);
        if issued_seq > seq {
            continue;
        }
        let left = -journal::balance_through(tx, tenant, &g.currency, g.account(), seq)?;
        out.push((g, left));
    }
    Ok(out)
}
