//! `GET /v1/usage`: exact usage of one meter for one customer, bucketed by hour, day, month or
//! in total.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::{resolve_customer, time_param};
use super::extract::{Query, Tenant};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::id::Id;
use crate::ingest::meter::{self, Meter};
use crate::ingest::usage::{self, HOUR_MS};
use crate::{customers, decimal};

/// Most buckets one query may return.
pub const MAX_BUCKETS: usize = 10_000;

/// Query of `GET /v1/usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// Customer: `cus_…` or external id.
    pub customer: String,
    /// Meter: `mtr_…` or its key.
    pub meter: String,
    /// Start, inclusive (RFC 3339).
    pub from: String,
    /// End, exclusive (RFC 3339); default just after now (the current millisecond included).
    pub to: Option<String>,
    /// `hour`, `day`, `month` (UTC calendar) or `total` (default).
    pub granularity: Option<String>,
}

/// One bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBucket {
    /// Bucket start (RFC 3339).
    pub from: String,
    /// Bucket end, exclusive.
    pub to: String,
    /// Exact decimal; null for max/min/latest without events.
    pub value: Option<String>,
    /// Events that contributed.
    pub events: u64,
}

/// Reply of `GET /v1/usage`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageResponse {
    /// Always `usage`.
    pub object: &'static str,
    /// `cus_…`.
    pub customer: String,
    /// `mtr_…`.
    pub meter: String,
    /// The meter's aggregation.
    pub aggregation: &'static str,
    /// Requested granularity.
    pub granularity: String,
    /// Range start.
    pub from: String,
    /// Range end.
    pub to: String,
    /// Buckets in time order.
    pub data: Vec<UsageBucket>,
    /// The aggregate over the whole range (for unique_count, distinct over the whole range).
    pub total: Option<String>,
}

fn boundaries(granularity: &str, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, i64)>, ApiError> {
    let mut out = Vec::new();
    let step_fixed = match granularity {
        "total" => return Ok(vec![(from_ms, to_ms)]),
        "hour" => Some(HOUR_MS),
        "day" => Some(24 * HOUR_MS),
        "month" => None,
        _ => {
            return Err(ApiError::invalid_field(
                "granularity",
                "must be hour, day, month or total",
            ))
        }
    };
    let mut start = match step_fixed {
        Some(step) => from_ms.div_euclid(step) * step,
        None => crate::clock::month_start(from_ms)
            .ok_or_else(|| ApiError::invalid_field("from", "is out of range"))?,
    };
    while start < to_ms {
        let next = match step_fixed {
            Some(step) => start + step,
            None => crate::clock::add_months(start, 1)
                .ok_or_else(|| ApiError::invalid_field("to", "is out of range"))?,
        };
        out.push((start.max(from_ms), next.min(to_ms)));
        if out.len() > MAX_BUCKETS {
            return Err(ApiError::invalid_field(
                "granularity",
                format!("the range has more than {MAX_BUCKETS} buckets; use a coarser granularity"),
            ));
        }
        start = next;
    }
    Ok(out)
}

fn resolve_meter(
    tx: &crate::store::ReadTxn,
    tenant: crate::store::TenantId,
    reference: &str,
) -> Result<Option<Meter>, ApiError> {
    if let Some(id) = Id::parse(reference, meter::PREFIX) {
        if let Some(m) = meter::get(tx, tenant, id)? {
            return Ok(Some(m));
        }
    }
    Ok(meter::by_key(tx, tenant, reference)?)
}

/// Aggregated usage. Whole hours come from rollups kept in the same commit as the events; the
/// partial hours at the range's edges are computed from the events themselves, so any range is
/// exact.
#[utoipa::path(
    get, path = "/v1/usage", tag = "events",
    params(UsageParams),
    responses((status = 200, body = UsageResponse), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    crate::api::extract::Tenant(tenant): Tenant,
    Query(params): Query<UsageParams>,
) -> Result<Response, ApiError> {
    let from_ms = time_param("from", &Some(params.from.clone()))?.unwrap_or(0);
    // By default the current millisecond is included: an event stamped with its receipt time
    // is counted by a query sent the same millisecond it was acknowledged.
    let to_ms =
        time_param("to", &params.to)?.unwrap_or_else(|| crate::clock::now_ms().saturating_add(1));
    if to_ms <= from_ms {
        return Err(ApiError::invalid_field("to", "must be after from"));
    }
    let granularity = params.granularity.clone().unwrap_or_else(|| "total".into());
    let buckets = boundaries(&granularity, from_ms, to_ms)?;
    let tx = state.store.read()?;
    let customer = resolve_customer(&tx, tenant, &params.customer)?
        .ok_or_else(|| ApiError::missing("customer", &params.customer))?;
    let meter = resolve_meter(&tx, tenant, &params.meter)?
        .ok_or_else(|| ApiError::missing("meter", &params.meter))?;
    let overflow = || {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "value_out_of_range",
            "the aggregate exceeds the exact decimal range",
        )
    };
    let mut data = Vec::with_capacity(buckets.len());
    for (start, end) in buckets {
        let acc = usage::usage(&tx, tenant, &meter, customer.id, start, end)?;
        data.push(UsageBucket {
            from: crate::clock::rfc3339(start),
            to: crate::clock::rfc3339(end),
            value: acc
                .value(meter.aggregation)
                .map_err(|_| overflow())?
                .map(decimal::to_text),
            events: acc.events(),
        });
    }
    let total = if data.len() == 1 {
        data[0].value.clone()
    } else {
        usage::usage(&tx, tenant, &meter, customer.id, from_ms, to_ms)?
            .value(meter.aggregation)
            .map_err(|_| overflow())?
            .map(decimal::to_text)
    };
    Ok(Json(UsageResponse {
        object: "usage",
        customer: customer.id.display(customers::PREFIX),
        meter: meter.id.display(meter::PREFIX),
        aggregation: meter.aggregation.as_str(),
        granularity,
        from: crate::clock::rfc3339(from_ms),
        to: crate::clock::rfc3339(to_ms),
        data,
        total,
    })
    .into_response())
}
