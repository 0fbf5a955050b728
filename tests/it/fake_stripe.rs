//! A Stripe-shaped HTTP server for the payment tests: it stores idempotency keys like the real
//! one and can inject faults by payment method.
//!
//! - `pm_ok` (or none): succeeds.
//! - `pm_decline`: 402 card error.
//! - `pm_timeout`: charges, then answers after the client's timeout.
//! - `pm_slow`: charges, then answers after 800 ms.
//! - `pm_ghost`: charges, but answers 500 to every call with that key.
//! - `pm_3ds`: needs customer action (`requires_action`) until [`FakeStripe::complete`].
//!
//! Refunds answer with [`Ledger::refund_status`] (`succeeded` unless a test changes it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
pub struct Ledger {
    /// Stored replies by idempotency key.
    pub replies: HashMap<String, (u16, Value)>,
    /// Payment intents, in creation order.
    pub intents: Vec<Value>,
    /// Every key received, in order (repeats included).
    pub calls: Vec<String>,
    /// Charges actually made.
    pub charges: usize,
    /// The status new refunds get (`succeeded` when empty).
    pub refund_status: String,
    /// Refunds made, in order.
    pub refunds: Vec<Value>,
    /// Cancel calls received (intent ids).
    pub cancels: Vec<String>,
}

pub struct FakeStripe {
    pub url: String,
    pub state: Arc<Mutex<Ledger>>,
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

async fn create_intent(
    State(state): State<Arc<Mutex<Ledger>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let f = form(&body);
    let method = f
        .get("payment_method")
        .cloned()
        .unwrap_or_else(|| "pm_ok".into());
    let (status, reply, delay_ms) = {
        let mut s = state.lock().expect("lock");
        s.calls.push(key.clone());
        let delay = match method.as_str() {
            "pm_timeout" => 1500,
            "pm_slow" => 800,
            _ => 0,
        };
        if let Some((status, reply)) = s.replies.get(&key).cloned() {
            let _ = delay;
            (status, reply, 0)
        } else {
            let id = format!("pi_{}", s.intents.len() + 1);
            let declined = method == "pm_decline";
            let three_ds = method == "pm_3ds";
            let intent = json!({
                "id": id,
                "object": "payment_intent",
                "amount": f.get("amount").and_then(|a| a.parse::<i64>().ok()).unwrap_or(0),
                "currency": f.get("currency").cloned().unwrap_or_default(),
                "status": if declined { "requires_payment_method" } else if three_ds { "requires_action" } else { "succeeded" },
                "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs(),
                "metadata": {
                    "tally_payment": f.get("metadata[tally_payment]").cloned().unwrap_or_default(),
                    "tally_invoice": f.get("metadata[tally_invoice]").cloned().unwrap_or_default(),
                    "tally_tenant": f.get("metadata[tally_tenant]").cloned().unwrap_or_default(),
                },
            });
            s.intents.push(intent.clone());
            let (status, reply) = if declined {
                (
                    402,
                    json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
                    "message": "Your card has insufficient funds.", "payment_intent": {"id": id, "status": "requires_payment_method"}}}),
                )
            } else if method == "pm_ghost" {
                s.charges += 1;
                (
                    500,
                    json!({"error": {"type": "api_error", "message": "internal error"}}),
                )
            } else if three_ds {
                (200, intent)
            } else {
                s.charges += 1;
                (200, intent)
            };
            s.replies.insert(key.clone(), (status, reply.clone()));
            (status, reply, delay)
        }
    };
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        Json(reply),
    )
        .into_response()
}

async fn create_refund(
    State(state): State<Arc<Mutex<Ledger>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let f = form(&body);
    let mut s = state.lock().expect("lock");
    if let Some((status, reply)) = s.replies.get(&key).cloned() {
        return (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            Json(reply),
        )
            .into_response();
    }
    let status = if s.refund_status.is_empty() {
        "succeeded".to_string()
    } else {
        s.refund_status.clone()
    };
    let reply = json!({"id": format!("re_{}", s.replies.len()), "object": "refund", "status": status,
        "payment_intent": f.get("payment_intent"),
        "amount": f.get("amount").and_then(|a| a.parse::<i64>().ok()),
        "metadata": {"tally_refund": f.get("metadata[tally_refund]")}});
    s.refunds.push(reply.clone());
    s.replies.insert(key, (200, reply.clone()));
    Json(reply).into_response()
}

async fn list_intents(
    State(state): State<Arc<Mutex<Ledger>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = state.lock().expect("lock");
    let gte: i64 = q
        .get("created[gte]")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let lt: i64 = q
        .get("created[lt]")
        .and_then(|v| v.parse().ok())
        .unwrap_or(i64::MAX);
    let all: Vec<&Value> = s
        .intents
        .iter()
        .filter(|i| i["created"].as_i64().is_some_and(|c| c >= gte && c < lt))
        .collect();
    let start = match q.get("starting_after") {
        Some(after) => all
            .iter()
            .position(|i| i["id"] == after.as_str())
            .map_or(0, |p| p + 1),
        None => 0,
    };
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(2)
        .map(|v| (*v).clone())
        .collect();
    Json(json!({"object": "list", "data": page, "has_more": start + page.len() < all.len()}))
        .into_response()
}

async fn cancel_intent(
    State(state): State<Arc<Mutex<Ledger>>>,
    Path(id): Path<String>,
) -> Response {
    let mut s = state.lock().expect("lock");
    s.cancels.push(id.clone());
    let Some(intent) = s.intents.iter_mut().find(|i| i["id"] == id.as_str()) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "resource_missing"}})),
        )
            .into_response();
    };
    if intent["status"] == "requires_action" || intent["status"] == "canceled" {
        intent["status"] = json!("canceled");
        return Json(intent.clone()).into_response();
    }
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "payment_intent_unexpected_state", "payment_intent": intent.clone()}})),
    )
        .into_response()
}

async fn get_intent(State(state): State<Arc<Mutex<Ledger>>>, Path(id): Path<String>) -> Response {
    let s = state.lock().expect("lock");
    match s.intents.iter().find(|i| i["id"] == id.as_str()) {
        Some(intent) => Json(intent.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "resource_missing"}})),
        )
            .into_response(),
    }
}

impl FakeStripe {
    pub async fn start() -> Self {
        let state: Arc<Mutex<Ledger>> = Arc::default();
        let app = Router::new()
            .route("/v1/payment_intents", post(create_intent).get(list_intents))
            .route("/v1/payment_intents/{id}", get(get_intent))
            .route("/v1/payment_intents/{id}/cancel", post(cancel_intent))
            .route("/v1/refunds", post(create_refund))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe { url, state }
    }

    pub fn charges(&self) -> usize {
        self.state.lock().expect("lock").charges
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().expect("lock").calls.clone()
    }

    /// Changes a recorded intent (reconciliation fixtures).
    pub fn mutate(&self, index: usize, f: impl FnOnce(&mut Value)) {
        let mut s = self.state.lock().expect("lock");
        f(&mut s.intents[index]);
    }

    pub fn remove(&self, index: usize) {
        self.state.lock().expect("lock").intents.remove(index);
    }

    /// The customer completes 3-D Secure: the intent at `index` collects.
    pub fn complete(&self, index: usize) -> Value {
        let mut s = self.state.lock().expect("lock");
        s.charges += 1;
        s.intents[index]["status"] = json!("succeeded");
        s.intents[index].clone()
    }

    pub fn set_refund_status(&self, status: &str) {
        self.state.lock().expect("lock").refund_status = status.to_string();
    }

    pub fn refunds(&self) -> Vec<Value> {
        self.state.lock().expect("lock").refunds.clone()
    }

    pub fn cancels(&self) -> Vec<String> {
        self.state.lock().expect("lock").cancels.clone()
    }

    pub fn intent(&self, index: usize) -> Value {
        self.state.lock().expect("lock").intents[index].clone()
    }

    pub fn intent_of(&self, payment: &str) -> Option<Value> {
        self.state
            .lock()
            .expect("lock")
            .intents
            .iter()
            .find(|i| i["metadata"]["tally_payment"] == payment)
            .cloned()
    }
}
