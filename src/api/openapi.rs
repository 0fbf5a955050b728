//! The OpenAPI 3.1 document, generated from the handlers' annotations so it cannot drift from
//! the code.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    alerts, api_keys, coupons, credit_notes, customers, dead_letters, documents, entitlements,
    event_anomalies, event_destinations, events, features, grants, health, invoices, ledger,
    meters, notifications, pagination, parties, payments, plans, problem, subscription_changes,
    subscriptions, tax_rates, tenant_settings, usage, wallet, webhooks,
};

/// The document's root.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tally",
        description = "A self-hosted billing daemon: one intent, one effect.",
        version = env!("CARGO_PKG_VERSION")
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        customers::create,
        customers::get,
        customers::update,
        customers::list,
        meters::create,
        meters::update,
        meters::get,
        meters::list,
        events::ingest,
        events::list,
        events::get,
        event_anomalies::list,
        usage::get,
        grants::create,
        grants::get,
        grants::void,
        grants::balance,
        wallet::create_top_up,
        wallet::list_top_ups,
        wallet::get_top_up,
        wallet::set_auto_recharge,
        wallet::get_auto_recharge,
        wallet::delete_auto_recharge,
        ledger::list_accounts,
        ledger::list_entries,
        ledger::get_entry,
        ledger::create_entry,
        ledger::verify_ledger,
        api_keys::list,
        api_keys::create,
        api_keys::revoke,
        plans::create,
        plans::get,
        plans::list,
        plans::create_version,
        credit_notes::create,
        credit_notes::get,
        credit_notes::list,
        tax_rates::create,
        tax_rates::get,
        tax_rates::list,
        tax_rates::archive,
        alerts::create,
        alerts::get,
        alerts::list,
        alerts::archive,
        alerts::firings,
        features::create,
        features::get,
        features::list,
        features::archive,
        entitlements::set_for_plan,
        entitlements::list_for_plan,
        entitlements::set_override,
        entitlements::remove_override,
        entitlements::list_overrides,
        entitlements::create_grant,
        entitlements::list_grants,
        entitlements::check_one,
        entitlements::check_all,
        coupons::create,
        coupons::get,
        coupons::list,
        coupons::apply_to_subscription,
        coupons::apply_to_customer,
        coupons::list_for_subscription,
        coupons::list_for_customer,
        coupons::remove,
        subscriptions::create,
        subscriptions::get,
        subscriptions::list,
        subscriptions::cancel,
        subscription_changes::change,
        subscription_changes::preview,
        subscription_changes::cancel_scheduled,
        subscription_changes::end_trial,
        subscription_changes::resume,
        invoices::create_run,
        invoices::get_run,
        invoices::list,
        invoices::get,
        invoices::void,
        invoices::verify,
        documents::document,
        documents::credit_note_document,
        invoices::upcoming,
        tenant_settings::get,
        tenant_settings::update,
        event_destinations::create,
        event_destinations::list,
        event_destinations::get,
        event_destinations::update,
        event_destinations::rotate_secret,
        event_destinations::deliveries,
        event_destinations::resend,
        webhooks::create_endpoint,
        webhooks::get_endpoint,
        webhooks::list_endpoints,
        webhooks::rotate_secret,
        webhooks::receive,
        webhooks::list_events,
        webhooks::get_event,
        webhooks::replay_event,
        dead_letters::list,
        dead_letters::replay_one,
        dead_letters::replay_bulk,
        payments::pay,
        payments::get,
        payments::list,
        payments::refund,
        payments::cancel,
        notifications::list,
        notifications::get,
        payments::reconcile_list,
        payments::reconcile_start,
        payments::reconcile_get,
    ),
    components(schemas(
        problem::Problem,
        problem::FieldError,
        customers::CreateCustomerRequest,
        customers::CustomerResponse,
        customers::UpdateCustomerRequest,
        customers::AddressBody,
        customers::TaxIdBody,
        pagination::Page<customers::CustomerResponse>,
        meters::CreateMeterRequest,
        meters::UpdateMeterRequest,
        meters::MeterResponse,
        pagination::Page<meters::MeterResponse>,
        events::IngestResponse,
        events::EventResult,
        events::EventResponse,
        events::IdentityResponse,
        events::EventPage,
        events::EventDetail,
        event_anomalies::AnomalyResponse,
        event_anomalies::ReceivedIdentity,
        event_anomalies::AnomalyPage,
        usage::UsageResponse,
        usage::UsageBucket,
        grants::CreateGrantRequest,
        grants::GrantResponse,
        grants::BalanceResponse,
        grants::CurrencyBalance,
        grants::GrantBalance,
        wallet::CreateTopUpRequest,
        wallet::TopUpResponse,
        pagination::Page<wallet::TopUpResponse>,
        wallet::AutoRechargeRequest,
        wallet::AutoRechargeResponse,
        ledger::PostingBody,
        ledger::LinksBody,
        ledger::JournalEntryResponse,
        ledger::CreateEntryRequest,
        ledger::EntryPage,
        ledger::AccountResponse,
        ledger::AccountPage,
        ledger::VerifyResponse,
        ledger::ViolationBody,
        api_keys::CreateApiKeyRequest,
        api_keys::ApiKeyResponse,
        pagination::Page<api_keys::ApiKeyResponse>,
        plans::CreatePlanRequest,
        plans::PlanResponse,
        plans::FixedFeeBody,
        plans::TierBody,
        plans::ChargeBody,
        pagination::Page<plans::PlanResponse>,
        plans::CreatePlanVersionRequest,
        credit_notes::CreditLineBody,
        credit_notes::CreateCreditNoteRequest,
        credit_notes::CreditNoteResponse,
        pagination::Page<credit_notes::CreditNoteResponse>,
        pagination::Page<payments::ReconciliationResponse>,
        tax_rates::CreateTaxRateRequest,
        tax_rates::TaxRateResponse,
        pagination::Page<tax_rates::TaxRateResponse>,
        alerts::CreateAlertRequest,
        alerts::AlertResponse,
        alerts::FiringResponse,
        alerts::WindowBody,
        pagination::Page<alerts::AlertResponse>,
        pagination::Page<alerts::FiringResponse>,
        features::CreateFeatureRequest,
        features::FeatureResponse,
        pagination::Page<features::FeatureResponse>,
        entitlements::EntitlementBody,
        entitlements::EntitlementResponse,
        entitlements::EntitlementList,
        entitlements::CreateGrantRequest,
        entitlements::GrantResponse,
        entitlements::GrantList,
        entitlements::CheckGrant,
        entitlements::CheckResponse,
        entitlements::CheckList,
        invoices::TaxLineBody,
        coupons::AppliesToBody,
        coupons::CreateCouponRequest,
        coupons::CouponResponse,
        pagination::Page<coupons::CouponResponse>,
        coupons::ApplyDiscountRequest,
        coupons::PeriodRefBody,
        coupons::DiscountResponse,
        coupons::DiscountList,
        subscriptions::CreateSubscriptionRequest,
        subscriptions::SubscriptionResponse,
        pagination::Page<subscriptions::SubscriptionResponse>,
        subscriptions::PeriodBody,
        subscriptions::CancelRequest,
        subscriptions::PhaseBody,
        subscription_changes::ChangeBody,
        subscription_changes::ChangedBody,
        subscription_changes::PreviewBody,
        invoices::InvoiceResponse,
        parties::BuyerBody,
        parties::SellerBody,
        parties::LogoRefBody,
        tenant_settings::UpdateSettingsRequest,
        tenant_settings::SettingsResponse,
        tenant_settings::LogoBody,
        invoices::LineBody,
        invoices::TierLineBody,
        invoices::CreditBody,
        invoices::InvoicePage,
        invoices::InvoiceVerification,
        invoices::UpcomingResponse,
        invoices::CreateRunRequest,
        invoices::RunResponse,
        invoices::ClosedBody,
        invoices::SkippedBody,
        invoices::EmptyRequest,
        documents::PdfFile,
        event_destinations::CreateDestinationRequest,
        event_destinations::UpdateDestinationRequest,
        event_destinations::DestinationResponse,
        event_destinations::DestinationPage,
        event_destinations::EmptyRequest,
        event_destinations::DeliveryAttemptBody,
        event_destinations::DeliveryBody,
        event_destinations::DeliveryList,
        event_destinations::ResendRequest,
        event_destinations::ResendResponse,
        webhooks::CreateEndpointRequest,
        webhooks::RotateRequest,
        webhooks::EndpointResponse,
        webhooks::EndpointList,
        webhooks::ReceivedResponse,
        webhooks::AttemptBody,
        webhooks::WebhookEventResponse,
        webhooks::WebhookEventPage,
        dead_letters::DeadLetterResponse,
        dead_letters::DeadLetterPage,
        dead_letters::ReplayResponse,
        dead_letters::BulkReplayRequest,
        payments::PayRequest,
        payments::PaymentResponse,
        payments::RefundBody,
        payments::PaymentPage,
        payments::RefundRequestBody,
        notifications::NotificationResponse,
        notifications::NotificationPage,
        payments::ReconcileRequest,
        payments::ItemBody,
        payments::ReportBody,
        payments::ReconciliationResponse,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Stable, unique operation ids by method and path (code generators name functions after
/// them). An operation missing here falls back to `{method}_{path}` in snake case, which is
/// unique too; the black-box tests check uniqueness.
const OPERATION_IDS: &[(&str, &str, &str)] = &[
    ("post", "/v1/event-destinations", "createEventDestination"),
    ("get", "/v1/event-destinations", "listEventDestinations"),
    ("get", "/v1/event-destinations/{id}", "getEventDestination"),
    (
        "post",
        "/v1/event-destinations/{id}",
        "updateEventDestination",
    ),
    (
        "post",
        "/v1/event-destinations/{id}/rotate-secret",
        "rotateEventDestinationSecret",
    ),
    (
        "get",
        "/v1/notifications/{id}/deliveries",
        "listNotificationDeliveries",
    ),
    (
        "post",
        "/v1/notifications/{id}/resend",
        "resendNotification",
    ),
    ("get", "/v1/api-keys", "listApiKeys"),
    ("post", "/v1/api-keys", "createApiKey"),
    ("post", "/v1/api-keys/{id}/revoke", "revokeApiKey"),
    ("get", "/healthz", "getHealth"),
    ("get", "/readyz", "getReadiness"),
    ("get", "/metrics", "getMetrics"),
    ("get", "/v1/accounts", "listAccounts"),
    ("post", "/v1/billing-runs", "createBillingRun"),
    ("get", "/v1/billing-runs/{id}", "getBillingRun"),
    ("post", "/v1/credit-grants", "createCreditGrant"),
    ("get", "/v1/credit-grants/{id}", "getCreditGrant"),
    ("post", "/v1/credit-grants/{id}/void", "voidCreditGrant"),
    ("get", "/v1/customers", "listCustomers"),
    ("post", "/v1/customers", "createCustomer"),
    ("get", "/v1/customers/{id}", "getCustomer"),
    ("post", "/v1/customers/{id}", "updateCustomer"),
    ("get", "/v1/customers/{id}/balance", "getCustomerBalance"),
    (
        "get",
        "/v1/customers/{id}/upcoming-invoice",
        "getUpcomingInvoice",
    ),
    ("get", "/v1/dead-letters", "listDeadLetters"),
    ("post", "/v1/dead-letters/replay", "replayDeadLetters"),
    ("post", "/v1/dead-letters/{id}/replay", "replayDeadLetter"),
    ("get", "/v1/events", "listEvents"),
    ("post", "/v1/events", "ingestEvents"),
    ("get", "/v1/events/{id}", "getEvent"),
    ("get", "/v1/event-anomalies", "listEventAnomalies"),
    ("post", "/v1/hooks/{endpoint_id}", "receiveWebhook"),
    ("get", "/v1/invoices", "listInvoices"),
    ("get", "/v1/invoices/{id}", "getInvoice"),
    ("post", "/v1/invoices/{id}/pay", "payInvoice"),
    ("get", "/v1/invoices/{id}/verify", "verifyInvoice"),
    ("get", "/v1/invoices/{id}/document", "getInvoiceDocument"),
    (
        "get",
        "/v1/credit-notes/{id}/document",
        "getCreditNoteDocument",
    ),
    ("post", "/v1/invoices/{id}/void", "voidInvoice"),
    ("get", "/v1/journal-entries", "listJournalEntries"),
    ("post", "/v1/journal-entries", "createJournalEntry"),
    ("get", "/v1/journal-entries/{id}", "getJournalEntry"),
    ("get", "/v1/ledger/verify", "verifyLedger"),
    ("get", "/v1/meters", "listMeters"),
    ("post", "/v1/meters", "createMeter"),
    ("get", "/v1/meters/{id}", "getMeter"),
    ("post", "/v1/meters/{id}", "updateMeter"),
    ("get", "/v1/payments", "listPayments"),
    ("get", "/v1/payments/{id}", "getPayment"),
    ("post", "/v1/payments/{id}/refund", "refundPayment"),
    ("post", "/v1/payments/{id}/cancel", "cancelPayment"),
    ("get", "/v1/notifications", "listNotifications"),
    ("get", "/v1/notifications/{id}", "getNotification"),
    ("get", "/v1/plans", "listPlans"),
    ("post", "/v1/plans", "createPlan"),
    ("get", "/v1/plans/{id}", "getPlan"),
    ("post", "/v1/plans/{id}/versions", "createPlanVersion"),
    ("get", "/v1/coupons", "listCoupons"),
    ("post", "/v1/coupons", "createCoupon"),
    ("get", "/v1/coupons/{id}", "getCoupon"),
    (
        "get",
        "/v1/subscriptions/{id}/discounts",
        "listSubscriptionDiscounts",
    ),
    (
        "post",
        "/v1/subscriptions/{id}/discounts",
        "applySubscriptionDiscount",
    ),
    (
        "get",
        "/v1/customers/{id}/discounts",
        "listCustomerDiscounts",
    ),
    (
        "post",
        "/v1/customers/{id}/discounts",
        "applyCustomerDiscount",
    ),
    ("post", "/v1/discounts/{id}/remove", "removeDiscount"),
    ("post", "/v1/reconciliations", "createReconciliation"),
    ("get", "/v1/reconciliations/{id}", "getReconciliation"),
    ("get", "/v1/subscriptions", "listSubscriptions"),
    ("post", "/v1/subscriptions", "createSubscription"),
    ("get", "/v1/subscriptions/{id}", "getSubscription"),
    (
        "post",
        "/v1/subscriptions/{id}/cancel",
        "cancelSubscription",
    ),
    ("get", "/v1/usage", "getUsage"),
    ("get", "/v1/webhook-endpoints", "listWebhookEndpoints"),
    ("post", "/v1/webhook-endpoints", "createWebhookEndpoint"),
    ("get", "/v1/webhook-endpoints/{id}", "getWebhookEndpoint"),
    (
        "post",
        "/v1/webhook-endpoints/{id}/rotate-secret",
        "rotateWebhookEndpointSecret",
    ),
    ("get", "/v1/webhook-events", "listWebhookEvents"),
    ("get", "/v1/webhook-events/{id}", "getWebhookEvent"),
    (
        "post",
        "/v1/webhook-events/{id}/replay",
        "replayWebhookEvent",
    ),
];

/// The path whose body is the provider's raw payload: signature-checked, never media-checked.
const RAW_BODY_PATH: &str = "/v1/hooks/{endpoint_id}";

/// The OpenAPI document as served: the generated one plus what every operation shares, so each
/// operation documents the replies the common layers give (401 from authentication, 503 from
/// the writer, 400/413/415 from body reading, 409/422 from idempotency) and the limits they
/// enforce (page sizes, key lengths, RFC 3339 instants).
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    add_shared_components(&mut doc);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if let Some(operation) = operation.as_object_mut() {
                    complete_operation(path, method, operation);
                }
            }
        }
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for schema in schemas.values_mut() {
            mark_instants(schema);
        }
        for request in ["CreateCustomerRequest", "UpdateCustomerRequest"] {
            if let Some(metadata) = schemas
                .get_mut(request)
                .and_then(|s| s.pointer_mut("/properties/metadata"))
            {
                limit_metadata(metadata);
            }
        }
    }
    doc
}

/// Customer metadata limits, which field attributes cannot express.
fn limit_metadata(metadata: &mut Value) {
    use crate::customers::{
        MAX_METADATA_ENTRIES, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS,
    };
    metadata["maxProperties"] = json!(MAX_METADATA_ENTRIES);
    metadata["propertyNames"] = json!({"minLength": 1, "maxLength": MAX_METADATA_KEY_CHARS});
    metadata["additionalProperties"] =
        json!({"type": "string", "maxLength": MAX_METADATA_VALUE_CHARS});
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn add_shared_components(doc: &mut Value) {
    let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) else {
        return;
    };
    let mut unavailable =
        problem_response("overloaded (the write queue is full), unavailable (a commit could not be confirmed: retry with the same key) or shutting_down");
    unavailable["headers"] = json!({
        "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}}
    });
    components.insert(
        "responses".into(),
        json!({
            "Unauthorized": problem_response("unauthorized: missing, malformed, unknown or revoked API key"),
            "Unavailable": unavailable,
            "BadRequest": problem_response("invalid_json, validation_failed (naming the field), idempotency_key_missing or idempotency_key_invalid"),
            "BodyTooLarge": problem_response("body_too_large: the body exceeds http.body_limit_bytes"),
            "UnsupportedMediaType": problem_response("unsupported_media_type: send the body as application/json"),
            "KeyInUse": problem_response("idempotency_key_in_use: the first request with this key has not committed yet"),
            "KeyReused": problem_response("idempotency_key_reused: the key was used with another method, path or body"),
        }),
    );
}

fn complete_operation(path: &str, method: &str, operation: &mut Map<String, Value>) {
    let id = OPERATION_IDS
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, id)| (*id).to_string())
        .unwrap_or_else(|| fallback_operation_id(method, path));
    operation.insert("operationId".into(), Value::String(id));
    let secured = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let has_query = parameters(operation).any(|p| p["in"] == "query");
    let keyed = parameters(operation).any(|p| p["name"] == "Idempotency-Key");
    let post = method == "post";
    let mut add = |status: &str, reference: &str, reason: &str| {
        add_response(operation, status, reference, reason)
    };
    if secured {
        add("401", "Unauthorized", "unauthorized");
    }
    if path.starts_with("/v1/") {
        add(
            "503",
            "Unavailable",
            "overloaded, unavailable or shutting_down",
        );
    }
    if post || has_query {
        add("400", "BadRequest", "invalid_json or validation_failed");
    }
    if post {
        add("413", "BodyTooLarge", "body_too_large");
    }
    if post && path != RAW_BODY_PATH {
        add("415", "UnsupportedMediaType", "unsupported_media_type");
    }
    if keyed {
        add("409", "KeyInUse", "idempotency_key_in_use");
        add("422", "KeyReused", "idempotency_key_reused");
    }
    if let Some(list) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in list {
            constrain_parameter(parameter);
        }
    }
}

fn parameters(operation: &Map<String, Value>) -> impl Iterator<Item = &Value> {
    operation
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// `post_v1_admin_keys` for `POST /v1/admin/keys`.
fn fallback_operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for part in path.split(['/', '-', '{', '}']).filter(|p| !p.is_empty()) {
        id.push('_');
        id.push_str(part);
    }
    id
}

/// Adds a shared response for `status`, or names the shared reason in the description of the
/// operation's own response for that status.
fn add_response(operation: &mut Map<String, Value>, status: &str, reference: &str, reason: &str) {
    let Some(responses) = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    else {
        return;
    };
    match responses.get_mut(status) {
        None => {
            responses.insert(
                status.into(),
                json!({"$ref": format!("#/components/responses/{reference}")}),
            );
        }
        Some(existing) => {
            let description = existing
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !description.contains(reason) {
                let joined = if description.is_empty() {
                    reason.to_string()
                } else {
                    format!("{description}; or {reason}")
                };
                existing["description"] = Value::String(joined);
            }
        }
    }
}

/// An `Idempotency-Key`: 1-255 visible ASCII characters, bare (no `"` or `\`), or a quoted
/// string whose `"` and `\` are escaped (see `idempotency::parse_key`).
const KEY_PATTERN: &str = r#"^(?:[!#-\[\]-~]{1,255}|"(?:[ !#-\[\]-~]|\\["\\]){1,255}")$"#;

/// The limits the extractors enforce on shared parameters.
fn constrain_parameter(parameter: &mut Value) {
    let name = parameter["name"].as_str().unwrap_or("").to_string();
    match (parameter["in"].as_str(), name.as_str()) {
        (Some("query"), "limit") => {
            parameter["schema"] = json!({
                "type": "integer", "format": "int64", "minimum": 1,
                "maximum": pagination::MAX_LIMIT, "default": pagination::DEFAULT_LIMIT
            });
        }
        (Some("header"), "Idempotency-Key") => {
            parameter["schema"] = json!({
                "type": "string", "minLength": 1,
                "maxLength": crate::idempotency::MAX_KEY_CHARS * 2 + 2,
                "pattern": KEY_PATTERN
            });
            let rule = "1-255 visible ASCII characters, bare or as a quoted string. A stored reply is replayed byte for byte (Idempotent-Replayed: true); the same key with another method, path or body is 422; while the first request has not committed, 409.";
            let usage = if parameter["required"] == true {
                "Required."
            } else {
                "Optional: makes the whole request replayable."
            };
            parameter["description"] = Value::String(format!("{usage} {rule}"));
        }
        _ => {
            let documented = parameter["description"]
                .as_str()
                .is_some_and(|d| d.contains("RFC 3339"));
            if documented && is_string(&parameter["schema"]) {
                parameter["schema"]["format"] = Value::String("date-time".into());
            }
        }
    }
}

/// Marks strings documented as RFC 3339 instants (and `…_at` fields) with `format: date-time`,
/// recursing through properties, items and combinators.
fn mark_instants(schema_or_parameter: &mut Value) {
    let Some(object) = schema_or_parameter.as_object_mut() else {
        return;
    };
    for key in ["schema", "items", "additionalProperties"] {
        if let Some(inner) = object.get_mut(key) {
            mark_instants(inner);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = object.get_mut(key).and_then(Value::as_array_mut) {
            list.iter_mut().for_each(mark_instants);
        }
    }
    let Some(properties) = object.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        let documented = property
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| d.contains("RFC 3339"));
        if (documented || name.ends_with("_at")) && is_string(property) {
            property["format"] = Value::String("date-time".into());
        } else {
            mark_instants(property);
        }
    }
}

fn is_string(schema: &Value) -> bool {
    match &schema["type"] {
        Value::String(t) => t == "string",
        Value::Array(types) => types.iter().any(|t| t == "string"),
        _ => false,
    }
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    static BODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = BODY
        .get_or_init(|| serde_json::to_string(&document()).unwrap_or_else(|_| "{}".to_string()));
    ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_operation_exists_and_every_id_is_unique() {
        let doc = document();
        for (method, path, id) in OPERATION_IDS {
            assert_eq!(
                doc["paths"][*path][*method]["operationId"], *id,
                "{method} {path}"
            );
        }
        let mut seen = std::collections::HashSet::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for op in item.as_object().expect("item").values() {
                let id = op["operationId"].as_str().expect("id");
                assert!(seen.insert(id.to_string()), "{id} twice");
            }
        }
        assert_eq!(
            fallback_operation_id("post", "/v1/admin/keys/{id}/revoke"),
            "post_v1_admin_keys_id_revoke"
        );
    }
}
