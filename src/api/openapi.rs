//! The OpenAPI 3.1 document, generated from the handlers' annotations so it cannot drift from
//! the code.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    customers, dead_letters, events, grants, health, invoices, ledger, meters, pagination,
    payments, plans, problem, subscriptions, usage, webhooks,
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
        customers::list,
        meters::create,
        meters::update,
        meters::get,
        meters::list,
        events::ingest,
        events::list,
        events::get,
        usage::get,
        grants::create,
        grants::get,
        grants::void,
        grants::balance,
        ledger::list_accounts,
        ledger::list_entries,
        ledger::get_entry,
        ledger::create_entry,
        ledger::verify_ledger,
        plans::create,
        plans::get,
        plans::list,
        subscriptions::create,
        subscriptions::get,
        subscriptions::cancel,
        invoices::create_run,
        invoices::get_run,
        invoices::list,
        invoices::get,
        invoices::void,
        invoices::verify,
        invoices::upcoming,
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
        payments::reconcile_start,
        payments::reconcile_get,
    ),
    components(schemas(
        problem::Problem,
        problem::FieldError,
        customers::CreateCustomerRequest,
        customers::CustomerResponse,
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
        usage::UsageResponse,
        usage::UsageBucket,
        grants::CreateGrantRequest,
        grants::GrantResponse,
        grants::BalanceResponse,
        grants::CurrencyBalance,
        grants::GrantBalance,
        ledger::PostingBody,
        ledger::LinksBody,
        ledger::JournalEntryResponse,
        ledger::CreateEntryRequest,
        ledger::EntryPage,
        ledger::AccountResponse,
        ledger::AccountPage,
        ledger::VerifyResponse,
        ledger::ViolationBody,
        plans::CreatePlanRequest,
        plans::PlanResponse,
        plans::FixedFeeBody,
        plans::TierBody,
        plans::ChargeBody,
        pagination::Page<plans::PlanResponse>,
        subscriptions::CreateSubscriptionRequest,
        subscriptions::SubscriptionResponse,
        subscriptions::PeriodBody,
        subscriptions::CancelRequest,
        invoices::InvoiceResponse,
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

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    let body = ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|_| "{}".to_string());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
