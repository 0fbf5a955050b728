//! `/v1/subscriptions`: customers on plans.

use crate::store::ReadableTable;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::events::{resolve_customer, time_param};
use super::extract::{IdempotencyKey, JsonBody, OptionalJsonBody, Tenant};
use super::idempotent::{self, json_response};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::billing::plan::{self, Plan};
use crate::billing::run::{CancelSubscription, Cancellation};
use crate::billing::subscription::{
    self, CreateSubscription, Subscription, SubscriptionError, SubscriptionStatus, PREFIX,
};
use crate::id::Id;
use crate::idempotency::StoredResponse;

/// Body of `POST /v1/subscriptions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriptionRequest {
    /// `cus_…` or external id.
    pub customer: String,
    /// `pln_…` or plan code.
    pub plan: String,
    /// Billing starts (RFC 3339; default now).
    pub start_at: Option<String>,
    /// Period boundaries are this instant plus whole intervals (default `start_at`, or
    /// `trial_end` with a trial; not together with a trial).
    pub billing_anchor: Option<String>,
    /// The trial ends here (RFC 3339, after `start_at`, at most 730 days after it): no fixed fee
    /// before it; usage only when the plan bills usage in trials. Not with `trial_days`.
    pub trial_end: Option<String>,
    /// The trial lasts this many days from `start_at` (1 to 730).
    pub trial_days: Option<u32>,
    /// The minimum commitment per full period for this subscription, minor units (0 to 10^15);
    /// overrides the plan's.
    pub minimum_minor: Option<i64>,
}

/// Largest minimum commitment, minor units (as on plans).
pub const MAX_MINIMUM_MINOR: i64 = 1_000_000_000_000_000;

/// Longest trial, in days.
pub const MAX_TRIAL_DAYS: u32 = 730;

/// One phase of a subscription: a plan from an instant.
#[derive(Debug, Serialize, ToSchema)]
pub struct PhaseBody {
    /// `pln_…`.
    pub plan: String,
    /// RFC 3339.
    pub start_at: String,
    /// RFC 3339, exclusive: the next phase's start or the subscription's end (none while open).
    pub end_at: Option<String>,
    /// How the change into it treated the fee: prorate, none or invoice_now.
    pub proration: &'static str,
    /// The change that made it (`chg_…`); none for the first phase.
    pub change: Option<String>,
}

/// A period.
#[derive(Debug, Serialize, ToSchema)]
pub struct PeriodBody {
    /// RFC 3339.
    pub start: String,
    /// RFC 3339, exclusive.
    pub end: String,
}

/// A subscription as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionResponse {
    /// `sub_…`.
    pub id: String,
    /// Always `subscription`.
    pub object: &'static str,
    /// `cus_…`.
    pub customer: String,
    /// `pln_…`: the plan in effect now.
    pub plan: String,
    /// trialing, active, canceling or canceled.
    pub status: &'static str,
    /// The plans over time, including a scheduled change.
    pub phases: Vec<PhaseBody>,
    /// The change scheduled for a later instant, if any (its phase).
    pub scheduled_change: Option<PhaseBody>,
    /// When the trial ends (RFC 3339), if it has one.
    pub trial_end: Option<String>,
    /// The subscription's own minimum commitment per period (overrides the plan's).
    pub minimum_minor: Option<i64>,
    /// RFC 3339.
    pub start_at: String,
    /// RFC 3339.
    pub billing_anchor: String,
    /// The next period to be invoiced.
    pub next_period: Option<PeriodBody>,
    /// When billing stops.
    pub ends_at: Option<String>,
    /// When cancellation was requested.
    pub canceled_at: Option<String>,
    /// Periods closed into invoices.
    pub periods_invoiced: u64,
    /// Invoices issued by the cancellation (immediate cancellation).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub final_invoices: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// The API body of a subscription (its plan, when known, for the next period).
pub fn response(
    sub: &Subscription,
    plan: Option<&Plan>,
    final_invoices: Vec<String>,
) -> SubscriptionResponse {
    response_at(sub, plan, final_invoices, crate::clock::now_ms())
}

/// The API body of a subscription as it stood at `now_ms` (a notification shows its object as
/// the effect left it: the plan then in effect, the trial then running).
pub fn response_at(
    sub: &Subscription,
    plan: Option<&Plan>,
    final_invoices: Vec<String>,
    now_ms: i64,
) -> SubscriptionResponse {
    let rfc = crate::clock::rfc3339;
    let phases: Vec<PhaseBody> = sub
        .phases
        .iter()
        .enumerate()
        .map(|(i, p)| phase_body(sub, i, p))
        .collect();
    let trialing =
        sub.status == SubscriptionStatus::Active && sub.trial_end_ms.is_some_and(|t| t > now_ms);
    SubscriptionResponse {
        id: sub.id.display(PREFIX),
        object: "subscription",
        customer: sub.customer.display(crate::customers::PREFIX),
        plan: sub.plan_at(now_ms).display(plan::PREFIX),
        status: if trialing {
            "trialing"
        } else {
            sub.status.as_str()
        },
        scheduled_change: sub
            .scheduled_change(now_ms)
            .map(|p| phase_body(sub, sub.phases.len() - 1, p)),
        phases,
        trial_end: sub.trial_end_ms.map(rfc),
        minimum_minor: sub.minimum_minor,
        start_at: rfc(sub.start_at_ms),
        billing_anchor: rfc(sub.anchor_ms),
        next_period: plan
            .and_then(|p| sub.period(p, sub.periods_closed))
            .map(|p| PeriodBody {
                start: rfc(p.start_ms),
                end: rfc(p.end_ms),
            }),
        ends_at: sub.ends_at_ms.map(rfc),
        canceled_at: sub.canceled_at_ms.map(rfc),
        periods_invoiced: sub.periods_closed,
        final_invoices,
        created_at: rfc(sub.created_at_ms),
    }
}

fn phase_body(sub: &Subscription, i: usize, p: &crate::billing::phase::Phase) -> PhaseBody {
    let end = sub.phases.get(i + 1).map(|n| n.start_ms).or(sub.ends_at_ms);
    PhaseBody {
        plan: p.plan.display(plan::PREFIX),
        start_at: crate::clock::rfc3339(p.start_ms),
        end_at: end.map(crate::clock::rfc3339),
        proration: p.proration.as_str(),
        change: p
            .change
            .map(|c| c.display(crate::billing::phase::CHANGE_PREFIX)),
    }
}

/// The status, stable type and offending field of a subscription failure.
fn error_parts(e: &SubscriptionError) -> (StatusCode, &'static str, Option<&'static str>) {
    use SubscriptionError as E;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    match e {
        E::UnknownCustomer(_) => (StatusCode::NOT_FOUND, "resource_missing", Some("customer")),
        E::UnknownPlan(_) => (StatusCode::NOT_FOUND, "resource_missing", Some("plan")),
        E::CurrencyMismatch { .. } => (unprocessable, "currency_mismatch", Some("plan")),
        E::IntervalMismatch { .. } => (unprocessable, "interval_mismatch", Some("plan")),
        E::Missing(_) => (StatusCode::NOT_FOUND, "resource_missing", None),
        E::AlreadyCanceled(_) => (StatusCode::CONFLICT, "subscription_canceled", None),
        E::Backlog { .. } => (StatusCode::CONFLICT, "billing_backlog", None),
        E::ChangeScheduled { .. } => (StatusCode::CONFLICT, "change_scheduled", None),
        E::NoScheduledChange(_) => (StatusCode::CONFLICT, "no_scheduled_change", None),
        E::TooManyPhases(..) => (StatusCode::CONFLICT, "too_many_phases", None),
        E::EffectiveTooEarly { .. } | E::EffectiveTooLate { .. } => {
            (unprocessable, "value_out_of_range", Some("effective"))
        }
        E::EndsBefore { .. } => (
            StatusCode::CONFLICT,
            "subscription_canceling",
            Some("effective"),
        ),
        E::AlreadyOnPlan(..) => (StatusCode::CONFLICT, "already_on_plan", Some("plan")),
        E::NotRunning(_) => (StatusCode::CONFLICT, "subscription_not_running", None),
        E::NotTrialing(_) => (StatusCode::CONFLICT, "not_trialing", None),
        E::NotCanceling(_) => (StatusCode::CONFLICT, "not_canceling", None),
        E::Invoice(_) => (unprocessable, "invoice_failed", None),
    }
}

/// The stored problem response of a subscription failure.
pub fn render_error(e: &SubscriptionError) -> StoredResponse {
    let (status, code, field) = error_parts(e);
    let mut err = ApiError::new(status, code, e.to_string());
    if let Some(f) = field {
        err = err.field(f, e.to_string());
    }
    err.to_stored()
}

/// The same failure answered directly (for requests that write nothing).
pub fn api_error(e: &SubscriptionError) -> ApiError {
    let (status, code, field) = error_parts(e);
    let mut err = ApiError::new(status, code, e.to_string());
    if let Some(f) = field {
        err = err.field(f, e.to_string());
    }
    err
}

fn render_created(output: &Result<(Subscription, Plan), SubscriptionError>) -> StoredResponse {
    match output {
        Ok((sub, plan)) => {
            json_response(StatusCode::CREATED, &response(sub, Some(plan), Vec::new()))
        }
        Err(e) => render_error(e),
    }
}

fn render_cancel(output: &Result<Cancellation, SubscriptionError>) -> StoredResponse {
    match output {
        Ok(c) => json_response(
            StatusCode::OK,
            &response(
                &c.subscription,
                None,
                c.invoices
                    .iter()
                    .map(|i| i.display(crate::billing::invoice::PREFIX))
                    .collect(),
            ),
        ),
        Err(e) => render_error(e),
    }
}

/// Subscribes a customer to a plan. The plan's currency must be the customer's.
#[utoipa::path(
    post, path = "/v1/subscriptions", tag = "billing",
    request_body = CreateSubscriptionRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = SubscriptionResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "currency_mismatch", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreateSubscriptionRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let req = &body.value;
    let now_ms = crate::clock::now_ms();
    let start_at_ms = time_param("start_at", &req.start_at)?.unwrap_or(now_ms);
    check_start(&state, start_at_ms, now_ms)?;
    let trial_end_ms = trial_end(req, start_at_ms)?;
    if trial_end_ms.is_some() && req.billing_anchor.is_some() {
        return Err(ApiError::invalid_field(
            "billing_anchor",
            "a subscription with a trial is anchored at the trial's end; omit billing_anchor",
        ));
    }
    let anchor_ms = time_param("billing_anchor", &req.billing_anchor)?.unwrap_or(start_at_ms);
    let (customer, plan_id) = {
        let tx = state.store.read()?;
        let customer = resolve_customer(&tx, tenant, &req.customer)?.ok_or_else(|| {
            ApiError::missing("customer", &req.customer).field("customer", "no such customer")
        })?;
        let plan_id = match Id::parse(&req.plan, plan::PREFIX) {
            Some(id) => Some(id),
            None => plan_by_code(&tx, tenant, &req.plan)?,
        }
        .ok_or_else(|| ApiError::missing("plan", &req.plan).field("plan", "no such plan"))?;
        (customer, plan_id)
    };
    let mut sub = Subscription::new(
        Id::generate_at(now_ms),
        customer.id,
        plan_id,
        start_at_ms,
        anchor_ms,
        now_ms,
    );
    if let Some(t) = trial_end_ms {
        sub = sub.with_trial(t);
    }
    if let Some(m) = req.minimum_minor {
        if !(0..=MAX_MINIMUM_MINOR).contains(&m) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "value_out_of_range",
                format!("minimum_minor: must be between 0 and {MAX_MINIMUM_MINOR}"),
            )
            .field(
                "minimum_minor",
                format!("must be between 0 and {MAX_MINIMUM_MINOR}"),
            ));
        }
        sub.minimum_minor = Some(m);
    }
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/subscriptions",
            canonical_body: &body.canonical,
        },
        CreateSubscription {
            tenant,
            subscription: sub,
        },
        render_created,
    )
    .await
}

/// The trial's end from `trial_end` or `trial_days`, checked: after the start, at most
/// [`MAX_TRIAL_DAYS`] after it, not both.
fn trial_end(req: &CreateSubscriptionRequest, start_at_ms: i64) -> Result<Option<i64>, ApiError> {
    const DAY_MS: i64 = 86_400_000;
    let latest = start_at_ms.saturating_add(i64::from(MAX_TRIAL_DAYS) * DAY_MS);
    let end = match (&req.trial_end, req.trial_days) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "trial_days",
                "give trial_end or trial_days, not both",
            ))
        }
        (None, None) => return Ok(None),
        (_, Some(days)) => {
            if !(1..=MAX_TRIAL_DAYS).contains(&days) {
                return Err(ApiError::invalid_field(
                    "trial_days",
                    format!("must be between 1 and {MAX_TRIAL_DAYS}"),
                ));
            }
            start_at_ms.saturating_add(i64::from(days) * DAY_MS)
        }
        (Some(_), None) => time_param("trial_end", &req.trial_end)?.unwrap_or(start_at_ms),
    };
    if end <= start_at_ms || end > latest {
        return Err(ApiError::invalid_field(
            "trial_end",
            format!("must lie after start_at and at most {MAX_TRIAL_DAYS} days after it"),
        ));
    }
    Ok(Some(end))
}

/// A subscription starts within the configured window around now, which bounds the backlog
/// of periods (and so the work) one subscription can bring to a billing run.
fn check_start(state: &AppState, start_at_ms: i64, now_ms: i64) -> Result<(), ApiError> {
    let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let billing = &state.config.billing;
    let earliest = now_ms.saturating_sub(ms(billing.max_start_backdate_secs));
    let latest = now_ms.saturating_add(ms(billing.max_start_ahead_secs));
    if (earliest..=latest).contains(&start_at_ms) {
        return Ok(());
    }
    let rfc = crate::clock::rfc3339;
    let detail = format!(
        "must lie between {} and {} (billing.max_start_backdate_secs and billing.max_start_ahead_secs around now)",
        rfc(earliest),
        rfc(latest)
    );
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "value_out_of_range",
        format!("start_at: {detail}"),
    )
    .field("start_at", detail))
}

/// The newest plan with this code, if any.
pub fn plan_by_code(
    tx: &crate::store::ReadTxn,
    tenant: crate::store::TenantId,
    code: &str,
) -> Result<Option<Id>, ApiError> {
    let index = tx.open_table(crate::store::tables::PLAN_BY_CODE)?;
    let key = crate::store::keys::tenant_bytes(tenant, code.as_bytes());
    let found = index
        .get(key.as_slice())?
        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
        .map(Id::from_bytes);
    Ok(found)
}

/// Retrieves a subscription.
#[utoipa::path(
    get, path = "/v1/subscriptions/{id}", tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = SubscriptionResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("subscription", &id))?;
    let tx = state.store.read()?;
    let sub = subscription::get(&tx, tenant, parsed)?
        .ok_or_else(|| ApiError::missing("subscription", &id))?;
    let plan = plan::get(&tx, tenant, sub.plan)?;
    Ok(Json(response(&sub, plan.as_ref(), Vec::new())).into_response())
}

/// Body of the cancel endpoint.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// true (default): bill through the current period, then stop. false: stop now with a final
    /// invoice, the fixed fee prorated by the second. Superseded by `at`.
    #[serde(default)]
    pub at_period_end: Option<bool>,
    /// `period_end` (default) or `now`; the same choice as `at_period_end`.
    #[serde(default)]
    pub at: Option<String>,
}

impl CancelRequest {
    /// Whether to cancel now, from either field (they must agree when both are given).
    fn immediately(&self) -> Result<bool, ApiError> {
        let from_at = match self.at.as_deref() {
            None => None,
            Some("period_end") => Some(false),
            Some("now") => Some(true),
            Some(_) => {
                return Err(ApiError::invalid_field(
                    "at",
                    "must be \"period_end\" or \"now\"",
                ))
            }
        };
        let from_flag = self.at_period_end.map(|end| !end);
        match (from_at, from_flag) {
            (Some(a), Some(b)) if a != b => Err(ApiError::invalid_field(
                "at",
                "contradicts at_period_end; give one of them",
            )),
            (a, b) => Ok(a.or(b).unwrap_or(false)),
        }
    }
}

/// Cancels a subscription at period end or immediately.
#[utoipa::path(
    post, path = "/v1/subscriptions/{id}/cancel", tag = "billing",
    request_body = CancelRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = SubscriptionResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "subscription_canceled", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<CancelRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("subscription", &id))?;
    let immediately = body.value.immediately()?;
    let path = format!("/v1/subscriptions/{id}/cancel");
    let origin = format!("api:POST {path} idempotency-key={key}");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        CancelSubscription {
            tenant,
            id: parsed,
            immediately,
            now_ms: crate::clock::now_ms(),
            policy: state.config.billing_policy(),
            origin,
        },
        render_cancel,
    )
    .await
}

/// Query of `GET /v1/subscriptions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListSubscriptionsParams {
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Return subscriptions after this id (the previous page's `next_cursor`).
    pub starting_after: Option<String>,
    /// Only this customer's (`cus_…`).
    pub customer: Option<String>,
    /// Only on this plan (`pln_…` or plan code).
    pub plan: Option<String>,
    /// Only in this state: active, canceling or canceled.
    pub status: Option<String>,
}

/// Lists subscriptions, oldest first, by customer, plan or status. A filtered request examines
/// at most 10,000 subscriptions and may answer a short (even empty) page with a cursor.
#[utoipa::path(
    get, path = "/v1/subscriptions", tag = "billing",
    params(ListSubscriptionsParams),
    responses(
        (status = 200, body = super::pagination::Page<SubscriptionResponse>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no plan with that code", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    super::extract::Query(params): super::extract::Query<ListSubscriptionsParams>,
) -> Result<Response, ApiError> {
    let page = super::pagination::PageParams {
        limit: params.limit,
        starting_after: params.starting_after.clone(),
    };
    let (limit, after) = (page.limit()?, page.after(PREFIX, "a subscription")?);
    let customer =
        match &params.customer {
            Some(c) => Some(Id::parse(c, crate::customers::PREFIX).ok_or_else(|| {
                ApiError::invalid_field("customer", "is not a customer id (cus_…)")
            })?),
            None => None,
        };
    let status = match params.status.as_deref() {
        None => None,
        Some("active") => Some(SubscriptionStatus::Active),
        Some("canceling") => Some(SubscriptionStatus::Canceling),
        Some("canceled") => Some(SubscriptionStatus::Canceled),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "status",
                "must be active, canceling or canceled",
            ))
        }
    };
    let tx = state.store.read()?;
    let plan = match &params.plan {
        Some(p) => Some(match Id::parse(p, plan::PREFIX) {
            Some(id) => id,
            None => plan_by_code(&tx, tenant, p)?.ok_or_else(|| {
                ApiError::missing("plan", p).field("plan", "no plan with this id or code")
            })?,
        }),
        None => None,
    };
    let filter = subscription::ListFilter {
        customer,
        plan,
        status,
    };
    let (items, cursor) = subscription::list(
        &tx,
        tenant,
        &filter,
        after,
        limit,
        subscription::LIST_SCAN_ROWS,
    )?;
    let mut plans: std::collections::BTreeMap<Id, Option<Plan>> = std::collections::BTreeMap::new();
    let mut data = Vec::with_capacity(items.len());
    for sub in &items {
        let plan = match plans.entry(sub.plan) {
            std::collections::btree_map::Entry::Occupied(known) => known.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(plan::get(&tx, tenant, sub.plan)?)
            }
        };
        data.push(response(sub, plan.as_ref(), Vec::new()));
    }
    Ok(Json(super::pagination::Page {
        data,
        has_more: cursor.is_some(),
        next_cursor: cursor.map(|c| c.display(PREFIX)),
    })
    .into_response())
}
