//! `/v1/meters`: how events become quantities.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{IdempotencyKey, JsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::ingest::backfill;
use crate::ingest::meter::{
    self, Aggregation, CreateMeter, Meter, MeterError, MeterState, RenameMeter, PREFIX,
};

/// Body of `POST /v1/meters`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMeterRequest {
    /// Unique per tenant, e.g. `api_calls`: letters, digits, `_`, `-`, `.`; 1-255 bytes.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,255}$")]
    pub key: String,
    /// Display name (the only field that can change later), at most 255 characters.
    #[schema(max_length = 255)]
    pub name: Option<String>,
    /// Events of this type feed the meter; 1-255 bytes.
    #[schema(min_length = 1, max_length = 255)]
    pub event_type: String,
    /// `count`, `sum`, `max`, `min`, `unique_count` or `latest`.
    pub aggregation: String,
    /// For sum/max/min/latest: JSON pointer (`/tokens/input`) or dotted path (`tokens.input`).
    pub value_property: Option<String>,
    /// For unique_count: the property whose distinct values are counted.
    pub unique_property: Option<String>,
}

/// Body of `POST /v1/meters/{id}`: only the name may change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeterRequest {
    /// New display name (null clears it), at most 255 characters.
    #[schema(max_length = 255)]
    pub name: Option<String>,
}

/// A meter as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeterResponse {
    /// `mtr_…`.
    pub id: String,
    /// Always `meter`.
    pub object: &'static str,
    /// Unique key.
    pub key: String,
    /// Display name.
    pub name: Option<String>,
    /// Event type.
    pub event_type: String,
    /// Aggregation.
    pub aggregation: &'static str,
    /// Value property path.
    pub value_property: Option<String>,
    /// Unique property path.
    pub unique_property: Option<String>,
    /// Events stored before the meter that it has counted (so far, while `running`).
    pub backfilled_events: u64,
    /// Events stored before the meter that had no usable value.
    pub backfill_skipped_events: u64,
    /// `complete`, or `running` while events stored before the meter are still being counted
    /// (its usage is then incomplete, and plans, entitlements and alerts refuse it).
    pub backfill_status: &'static str,
    /// RFC 3339.
    pub created_at: String,
}

impl MeterResponse {
    /// The response for `m`, whose backfill is still running or not.
    pub fn of(m: &Meter, backfilling: bool) -> Self {
        Self {
            id: m.id.display(PREFIX),
            object: "meter",
            key: m.key.clone(),
            name: m.name.clone(),
            event_type: m.event_type.clone(),
            aggregation: m.aggregation.as_str(),
            value_property: m.value_property.clone(),
            unique_property: m.unique_property.clone(),
            backfilled_events: m.backfilled_events,
            backfill_skipped_events: m.backfill_skipped_events,
            backfill_status: if backfilling { "running" } else { "complete" },
            created_at: crate::clock::rfc3339(m.created_at_ms),
        }
    }
}

fn validate_name(name: &Option<String>) -> Result<(), ApiError> {
    if name.as_ref().is_some_and(|n| n.chars().count() > 255) {
        return Err(ApiError::invalid_field(
            "name",
            "must be at most 255 characters",
        ));
    }
    Ok(())
}

fn validate(req: &CreateMeterRequest) -> Result<Aggregation, ApiError> {
    let key_ok = !req.key.is_empty()
        && req.key.len() <= meter::MAX_NAME_BYTES
        && req
            .key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !key_ok {
        return Err(ApiError::invalid_field(
            "key",
            "must be 1-255 characters of letters, digits, '_', '-' and '.'",
        ));
    }
    validate_name(&req.name)?;
    if req.event_type.is_empty()
        || req.event_type.len() > meter::MAX_NAME_BYTES
        || req.event_type.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_field(
            "event_type",
            "must be 1-255 bytes without control characters",
        ));
    }
    let aggregation = Aggregation::parse(&req.aggregation).ok_or_else(|| {
        ApiError::invalid_field(
            "aggregation",
            "must be one of count, sum, max, min, unique_count, latest",
        )
    })?;
    let check_path = |field: &str, value: &Option<String>, needed: bool| -> Result<(), ApiError> {
        match (value, needed) {
            (Some(p), true) if meter::valid_path(p) => Ok(()),
            (Some(_), true) => Err(ApiError::invalid_field(
                field,
                "must be a JSON pointer (/a/b) or a dotted path (a.b), at most 255 bytes",
            )),
            (None, true) => Err(ApiError::invalid_field(
                field,
                format!("is required for aggregation {}", aggregation.as_str()),
            )),
            (Some(_), false) => Err(ApiError::invalid_field(
                field,
                format!("is not used by aggregation {}", aggregation.as_str()),
            )),
            (None, false) => Ok(()),
        }
    };
    check_path(
        "value_property",
        &req.value_property,
        aggregation.needs_value(),
    )?;
    check_path(
        "unique_property",
        &req.unique_property,
        aggregation == Aggregation::UniqueCount,
    )?;
    Ok(aggregation)
}

fn render(output: &Result<MeterState, MeterError>) -> StoredResponse {
    match output {
        Ok(m) => json_response(
            StatusCode::CREATED,
            &MeterResponse::of(&m.meter, m.backfilling),
        ),
        Err(e @ MeterError::Exists { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "meter_exists", e.to_string())
                .field("key", "already used by another meter")
                .to_stored()
        }
        Err(e @ MeterError::Missing(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
    }
}

fn render_update(output: &Result<MeterState, MeterError>) -> StoredResponse {
    match output {
        Ok(m) => json_response(StatusCode::OK, &MeterResponse::of(&m.meter, m.backfilling)),
        Err(_) => render(output),
    }
}

/// Creates a meter; already stored events of its type are counted: at once when there are
/// few (`ingest.backfill_chunk_events`), otherwise in the background (`backfill_status:
/// running` until done).
#[utoipa::path(
    post, path = "/v1/meters", tag = "meters",
    request_body = CreateMeterRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = MeterResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "meter_exists", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreateMeterRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let aggregation = validate(&body.value)?;
    let req = body.value;
    let now_ms = crate::clock::now_ms();
    let meter = Meter {
        id: Id::generate_at(now_ms),
        key: req.key,
        name: req.name,
        event_type: req.event_type,
        aggregation,
        value_property: req.value_property,
        unique_property: req.unique_property,
        created_at_ms: now_ms,
        backfilled_events: 0,
        backfill_skipped_events: 0,
    };
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/meters",
            canonical_body: &body.canonical,
        },
        CreateMeter {
            tenant,
            meter,
            chunk_events: state.config.ingest.backfill_chunk_events,
        },
        render,
    )
    .await
}

/// Renames a meter. Every other field is immutable: changing how past usage counts would
/// silently change invoices.
#[utoipa::path(
    post, path = "/v1/meters/{id}", tag = "meters",
    request_body = UpdateMeterRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = MeterResponse),
        (status = 400, description = "a field other than name", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("meter", &id))?;
    if let Some(map) = body.value.as_object() {
        if let Some(other) = map.keys().find(|k| k.as_str() != "name") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "meter_immutable",
                "only a meter's name can change; create a new meter to count differently",
            )
            .field(other.clone(), "is immutable"));
        }
    }
    let req: UpdateMeterRequest = super::extract::deserialize_value(body.value)?;
    validate_name(&req.name)?;
    let path = format!("/v1/meters/{id}");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        RenameMeter {
            tenant,
            id: parsed,
            name: req.name,
        },
        render_update,
    )
    .await
}

/// Retrieves a meter.
#[utoipa::path(
    get, path = "/v1/meters/{id}", tag = "meters",
    params(("id" = String, Path)),
    responses((status = 200, body = MeterResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("meter", &id))?;
    let tx = state.store.read()?;
    let m = meter::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("meter", &id))?;
    let backfilling = backfill::is_running(&tx, tenant, m.id)?;
    Ok(Json(MeterResponse::of(&m, backfilling)).into_response())
}

/// Query of `GET /v1/meters`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListMetersParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this id.
    pub starting_after: Option<String>,
}

/// Lists meters.
#[utoipa::path(
    get, path = "/v1/meters", tag = "meters",
    params(ListMetersParams),
    responses((status = 200, body = Page<MeterResponse>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListMetersParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after,
    };
    let limit = page.limit()?;
    let after = match &page.starting_after {
        Some(c) => Some(Id::parse(c, PREFIX).ok_or_else(|| {
            ApiError::invalid_field("starting_after", "is not a meter id (mtr_…)")
        })?),
        None => None,
    };
    let tx = state.store.read()?;
    let (items, has_more) = meter::list(&tx, tenant, after, limit)?;
    let mut responses = Vec::with_capacity(items.len());
    for m in &items {
        responses.push(MeterResponse::of(
            m,
            backfill::is_running(&tx, tenant, m.id)?,
        ));
    }
    Ok(Json(Page::of(
        &responses,
        has_more,
        |r| r.id.clone(),
        MeterResponse::clone,
    ))
    .into_response())
}
