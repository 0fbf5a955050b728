//! The ledger over HTTP: accounts with balances, journal entries, operator adjustments and
//! verification.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::{resolve_customer, time_param};
use super::extract::{IdempotencyKey, JsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::pagination::PageParams;
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::ledger::account::AccountRef;
use crate::ledger::adjustment::{AdjustmentError, PostAdjustment};
use crate::ledger::journal::{self, Draft, JournalEntry, Links, Posting, PREFIX};
use crate::ledger::verification::{Outcome, RecordVerification};
use crate::ledger::verify;
use crate::store::TenantId;

/// One posting as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostingBody {
    /// Account code, e.g. `cash` or `customer:cus_…:receivable`.
    pub account: String,
    /// ISO 4217.
    pub currency: String,
    /// Signed minor units: debit positive, credit negative.
    pub amount_minor: i64,
}

/// Links of an entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinksBody {
    /// `cus_…`.
    pub customer: Option<String>,
    /// `grt_…`.
    pub grant: Option<String>,
    /// `inv_…`.
    pub invoice: Option<String>,
    /// `pay_…`.
    pub payment: Option<String>,
    /// `evt_…`.
    pub event: Option<String>,
}

/// A journal entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct JournalEntryResponse {
    /// `je_…`.
    pub id: String,
    /// Always `journal_entry`.
    pub object: &'static str,
    /// Position in the tenant's chain, from 1.
    pub seq: u64,
    /// Kind, e.g. `credit_grant`.
    pub kind: String,
    /// Human reason.
    pub reason: String,
    /// What it concerns.
    pub links: LinksBody,
    /// The intent that created it.
    pub origin: String,
    /// RFC 3339.
    pub effective_at: String,
    /// The legs; they sum to zero per currency.
    pub postings: Vec<PostingBody>,
    /// Hex of the previous entry's hash.
    pub prev_hash: String,
    /// Hex of this entry's hash.
    pub hash: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl From<&JournalEntry> for JournalEntryResponse {
    fn from(e: &JournalEntry) -> Self {
        let l = &e.links;
        Self {
            id: e.id.display(PREFIX),
            object: "journal_entry",
            seq: e.seq,
            kind: e.kind.clone(),
            reason: e.reason.clone(),
            links: LinksBody {
                customer: l.customer.map(|i| i.display(crate::customers::PREFIX)),
                grant: l.grant.map(|i| i.display(crate::ledger::grant::PREFIX)),
                invoice: l.invoice.map(|i| i.display("inv")),
                payment: l.payment.map(|i| i.display("pay")),
                event: l.event.map(|i| i.display(crate::ingest::event::PREFIX)),
            },
            origin: e.origin.clone(),
            effective_at: crate::clock::rfc3339(e.effective_at_ms),
            postings: e
                .postings
                .iter()
                .map(|p| PostingBody {
                    account: p.account.code(),
                    currency: p.currency.clone(),
                    amount_minor: p.amount_minor,
                })
                .collect(),
            prev_hash: hex(&e.prev_hash),
            hash: hex(&e.hash),
        }
    }
}

/// Body of `POST /v1/journal-entries`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEntryRequest {
    /// Why (required, 1-500 characters).
    pub reason: String,
    /// At least two postings that sum to zero per currency.
    pub postings: Vec<PostingBody>,
}

fn render_entry(output: &Result<JournalEntry, AdjustmentError>) -> StoredResponse {
    match output {
        Ok(entry) => json_response(StatusCode::CREATED, &JournalEntryResponse::from(entry)),
        Err(AdjustmentError::Ledger(e @ journal::PostError::Unbalanced { .. })) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unbalanced_entry",
            e.to_string(),
        )
        .field("postings", e.to_string())
        .to_stored(),
        Err(AdjustmentError::Ledger(e)) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_entry",
            e.to_string(),
        )
        .field("postings", e.to_string())
        .to_stored(),
        Err(e @ AdjustmentError::UnknownCustomer { index, .. }) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_account",
            e.to_string(),
        )
        .field(format!("postings.{index}.account"), e.to_string())
        .to_stored(),
        Err(e @ AdjustmentError::GrantAccount { index }) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "grant_account",
            e.to_string(),
        )
        .field(format!("postings.{index}.account"), e.to_string())
        .to_stored(),
    }
}

/// Posts an operator adjustment. It must balance per currency (422 `unbalanced_entry`).
#[utoipa::path(
    post, path = "/v1/journal-entries", tag = "ledger",
    request_body = CreateEntryRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = JournalEntryResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unbalanced_entry, invalid_entry, unknown_account", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create_entry(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreateEntryRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let req = &body.value;
    if req.reason.trim().is_empty() || req.reason.chars().count() > 500 {
        return Err(ApiError::invalid_field(
            "reason",
            "must be 1-500 characters",
        ));
    }
    let mut postings = Vec::with_capacity(req.postings.len());
    for (i, p) in req.postings.iter().enumerate() {
        let account = AccountRef::parse(&p.account).ok_or_else(|| {
            ApiError::invalid_field(
                format!("postings.{i}.account"),
                "is not an account code (revenue, promotional_expense, breakage, psp_clearing, cash, bad_debt, suspense, tax_payable, customer:cus_…:receivable)",
            )
        })?;
        if !crate::currency::is_known(&p.currency) {
            return Err(ApiError::invalid_field(
                format!("postings.{i}.currency"),
                "is not an ISO 4217 currency code",
            ));
        }
        postings.push(Posting {
            account,
            currency: p.currency.clone(),
            amount_minor: p.amount_minor,
        });
    }
    let now_ms = crate::clock::now_ms();
    let draft = Draft {
        id: Id::generate_at(now_ms),
        kind: "adjustment".into(),
        reason: req.reason.clone(),
        links: Links::default(),
        origin: format!("api:POST /v1/journal-entries idempotency-key={key}"),
        postings,
    };
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/journal-entries",
            canonical_body: &body.canonical,
        },
        PostAdjustment {
            tenant,
            draft,
            now_ms,
        },
        render_entry,
    )
    .await
}

/// Retrieves a journal entry.
#[utoipa::path(
    get, path = "/v1/journal-entries/{id}", tag = "ledger",
    params(("id" = String, Path)),
    responses((status = 200, body = JournalEntryResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_entry(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("journal entry", &id))?;
    let tx = state.store.read()?;
    let entry = journal::get(&tx, tenant, parsed)?
        .ok_or_else(|| ApiError::missing("journal entry", &id))?;
    Ok(Json(JournalEntryResponse::from(&entry)).into_response())
}

/// Query of `GET /v1/journal-entries`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListEntriesParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this entry (`je_…`).
    pub starting_after: Option<String>,
    /// Only entries with a posting on this account code.
    pub account: Option<String>,
    /// Only entries concerning this customer (`cus_…` or external id).
    pub customer: Option<String>,
    /// Effective at or after (RFC 3339).
    pub from: Option<String>,
    /// Effective before (RFC 3339).
    pub to: Option<String>,
}

/// A page of entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryPage {
    /// Entries in chain order.
    pub data: Vec<JournalEntryResponse>,
    /// Whether to ask again.
    pub has_more: bool,
    /// Cursor.
    pub next_cursor: Option<String>,
}

/// Lists journal entries in chain order.
#[utoipa::path(
    get, path = "/v1/journal-entries", tag = "ledger",
    params(ListEntriesParams),
    responses((status = 200, body = EntryPage), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list_entries(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListEntriesParams>,
) -> Result<Response, ApiError> {
    let limit = PageParams {
        limit: params.limit,
        starting_after: None,
    }
    .limit()?;
    let account = match &params.account {
        Some(code) => Some(
            AccountRef::parse(code)
                .ok_or_else(|| ApiError::invalid_field("account", "is not an account code"))?,
        ),
        None => None,
    };
    let tx = state.store.read()?;
    let after_seq = match &params.starting_after {
        Some(cursor) => {
            let id = Id::parse(cursor, PREFIX).ok_or_else(|| {
                ApiError::invalid_field("starting_after", "is not a journal entry id (je_…)")
            })?;
            journal::get(&tx, tenant, id)?
                .ok_or_else(|| ApiError::invalid_field("starting_after", "no such entry"))?
                .seq
        }
        None => 0,
    };
    let customer = match &params.customer {
        Some(reference) => match resolve_customer(&tx, tenant, reference)? {
            Some(c) => Some(c.id),
            None => return Err(ApiError::missing("customer", reference)),
        },
        None => None,
    };
    let filter = journal::Filter {
        account,
        customer,
        from_ms: time_param("from", &params.from)?,
        to_ms: time_param("to", &params.to)?,
    };
    let (entries, next_seq) = journal::list(&tx, tenant, &filter, after_seq, limit)?;
    let next_cursor = match next_seq {
        Some(seq) => journal::by_seq(&tx, tenant, seq)?.map(|e| e.id.display(PREFIX)),
        None => None,
    };
    Ok(Json(EntryPage {
        data: entries.iter().map(JournalEntryResponse::from).collect(),
        has_more: next_cursor.is_some(),
        next_cursor,
    })
    .into_response())
}

/// An account and its balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountResponse {
    /// Always `account`.
    pub object: &'static str,
    /// Account code.
    pub code: String,
    /// asset, liability, revenue or expense.
    #[serde(rename = "type")]
    pub account_type: &'static str,
    /// ISO 4217.
    pub currency: String,
    /// Sum of its postings (debits positive).
    pub balance_minor: i64,
    /// Number of postings.
    pub postings: u64,
}

/// A page of accounts.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountPage {
    /// Accounts by currency, then code.
    pub data: Vec<AccountResponse>,
    /// Whether to ask again.
    pub has_more: bool,
    /// Cursor (opaque).
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/accounts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListAccountsParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`.
    pub starting_after: Option<String>,
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 256 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Lists every account that has moved, with its balance.
#[utoipa::path(
    get, path = "/v1/accounts", tag = "ledger",
    params(ListAccountsParams),
    responses((status = 200, body = AccountPage)),
    security(("api_key" = []))
)]
pub async fn list_accounts(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListAccountsParams>,
) -> Result<Response, ApiError> {
    let limit = PageParams {
        limit: params.limit,
        starting_after: None,
    }
    .limit()?;
    let after = match &params.starting_after {
        Some(c) => {
            let mut key = tenant.to_bytes().to_vec();
            key.extend(from_hex(c).ok_or_else(|| {
                ApiError::invalid_field("starting_after", "is not a cursor from this endpoint")
            })?);
            Some(key)
        }
        None => None,
    };
    let tx = state.store.read()?;
    let (rows, has_more) = journal::balances(&tx, tenant, after.as_deref(), limit)?;
    let next_cursor = if has_more {
        rows.last().map(|(k, _)| hex(&k[8..]))
    } else {
        None
    };
    Ok(Json(AccountPage {
        data: rows
            .iter()
            .map(|(_, b)| AccountResponse {
                object: "account",
                code: b.account.code(),
                account_type: b.account.account_type().as_str(),
                currency: b.currency.clone(),
                balance_minor: b.balance_minor,
                postings: b.postings,
            })
            .collect(),
        has_more,
        next_cursor,
    })
    .into_response())
}

/// The result of verifying the ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    /// Always `ledger_verification`.
    pub object: &'static str,
    /// True when nothing is wrong.
    pub ok: bool,
    /// Entries checked.
    pub entries: u64,
    /// Balances checked.
    pub balances: u64,
    /// Grants checked.
    pub grants: u64,
    /// The first violation.
    pub violation: Option<ViolationBody>,
}

/// What is wrong, and where.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViolationBody {
    /// The entry that shows it.
    pub entry: Option<String>,
    /// Its chain position.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// Remembers the outcome (the console shows when the books last passed). The answer stands
/// even when the writer cannot take the record right now; the next verification records again.
async fn record_verification(state: &AppState, tenant: TenantId, report: &verify::Report) {
    let command = RecordVerification {
        tenants: vec![tenant],
        outcome: Outcome {
            at_ms: crate::clock::now_ms(),
            passed: report.violation.is_none(),
            entries: report.entries,
            reason: report.violation.as_ref().map(|v| v.reason.clone()),
        },
    };
    if let Err(error) = state.writer.submit(command).await {
        tracing::warn!(%error, "the verification's outcome could not be recorded");
    }
}

/// Verifies this tenant's books: every entry balances, the hash chain is intact, every balance
/// equals the sum of its postings. The outcome is recorded with its time (the console's
/// overview shows when the books last passed).
#[utoipa::path(
    get, path = "/v1/ledger/verify", tag = "ledger",
    responses((status = 200, body = VerifyResponse)),
    security(("api_key" = []))
)]
pub async fn verify_ledger(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
) -> Result<Response, ApiError> {
    let store = Arc::clone(&state.store);
    let report = tokio::task::spawn_blocking(move || -> Result<verify::Report, ApiError> {
        let tx = store.read()?;
        Ok(verify::verify(&tx, Some(tenant), &mut |_, _| {})?)
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "verification failed",
        )
    })??;
    record_verification(&state, tenant, &report).await;
    Ok(Json(VerifyResponse {
        object: "ledger_verification",
        ok: report.violation.is_none(),
        entries: report.entries,
        balances: report.balances,
        grants: report.grants,
        violation: report.violation.map(|v| ViolationBody {
            entry: v.entry,
            seq: v.seq,
            reason: v.reason,
        }),
    })
    .into_response())
}
