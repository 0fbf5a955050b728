//! The Stripe adapter: form-encoded REST calls with the `Idempotency-Key` header.
//!
//! `POST /v1/payment_intents` (confirm, off-session, metadata naming the Tally payment and
//! invoice), `POST /v1/refunds`, and `GET /v1/payment_intents` for reconciliation. Timeouts,
//! 5xx and 429 are retryable; card errors (402) are declines, final for the attempt.

use std::time::Duration;

use serde_json::Value;

use super::psp::{
    CancelRequest, CancelResult, ChargePage, ChargeRequest, ChargeResult, ChargeStatus,
    ProviderCharge, Psp, PspError, PspFuture, RefundRequest, RefundResult, RefundStatus,
};

/// Talks to Stripe (or anything speaking its API, such as a test double).
pub struct Stripe {
    client: reqwest::Client,
    base_url: String,
    secret_key: String,
}

impl Stripe {
    /// A client with the configured base URL, key and timeout.
    pub fn new(base_url: &str, secret_key: &str, timeout: Duration) -> Result<Self, PspError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| PspError::Permanent(format!("http client: {e}")))?;
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            secret_key: secret_key.to_string(),
        })
    }

    async fn post(
        &self,
        path: &str,
        key: &str,
        form: &[(&str, String)],
    ) -> Result<(u16, Value), PspError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let response = self
            .client
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(&self.secret_key)
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| PspError::Retryable(format!("request failed: {e}")))?;
        read(response).await
    }
}

async fn read(response: reqwest::Response) -> Result<(u16, Value), PspError> {
    let status = response.status().as_u16();
    let json: Value = response
        .json()
        .await
        .map_err(|e| PspError::Retryable(format!("unreadable reply ({status}): {e}")))?;
    if status == 429 || status >= 500 {
        return Err(PspError::Retryable(format!("provider answered {status}")));
    }
    Ok((status, json))
}

/// What an intent reports collecting: `amount_received` (else `amount`) and its currency.
pub fn intent_received(json: &Value) -> Option<(i64, String)> {
    let amount = json["amount_received"]
        .as_i64()
        .or_else(|| json["amount"].as_i64())?;
    let currency = json["currency"].as_str()?.to_ascii_uppercase();
    Some((amount, currency))
}

/// A refusal that is final only when Stripe says the request itself can never succeed. A key
/// in use by a concurrent call (409), an idempotency error, or a rate or lock error says
/// nothing about the charge: whether it happened is unknown, so the call is repeated with the
/// same key (and, after the retries, left to an operator) rather than read as a decline that
/// would start a new attempt under a new key.
fn refusal(status: u16, json: &Value, fallback: &str) -> PspError {
    let kind = json["error"]["type"].as_str().unwrap_or_default();
    let code = json["error"]["code"].as_str().unwrap_or_default();
    let message = format!(
        "{status}: {}",
        json["error"]["message"].as_str().unwrap_or(fallback)
    );
    let unknown = status == 409
        || kind == "idempotency_error"
        || kind == "api_error"
        || code == "lock_timeout"
        || code == "idempotency_key_in_use";
    if unknown {
        PspError::Retryable(message)
    } else {
        PspError::Permanent(message)
    }
}

fn intent_status(json: &Value) -> ChargeStatus {
    match json["status"].as_str() {
        Some("succeeded") => ChargeStatus::Succeeded,
        Some("processing") => ChargeStatus::Processing,
        Some("requires_action") | Some("requires_confirmation") => ChargeStatus::RequiresAction,
        other => ChargeStatus::Failed {
            code: other.unwrap_or("unknown").to_string(),
            message: json["last_payment_error"]["message"]
                .as_str()
                .unwrap_or("the payment did not complete")
                .to_string(),
        },
    }
}

/// Whether a listed intent is the tenant's: its `tally_tenant` metadata names it. Intents
/// created before that metadata existed carry only `tally_payment`; they are kept for every
/// tenant and reconciliation drops those whose payment is not the tenant's.
fn belongs_to(intent: &Value, tenant: u64) -> bool {
    match intent["metadata"]["tally_tenant"].as_str() {
        Some(t) => t == tenant.to_string(),
        None => intent["metadata"]["tally_payment"].is_string(),
    }
}

impl Stripe {
    async fn intent(&self, id: &str) -> Result<Value, PspError> {
        let response = self
            .client
            .get(format!("{}/v1/payment_intents/{id}", self.base_url))
            .bearer_auth(&self.secret_key)
            .send()
            .await
            .map_err(|e| PspError::Retryable(format!("request failed: {e}")))?;
        let (status, json) = read(response).await?;
        if !(200..300).contains(&status) {
            return Err(PspError::Permanent(format!(
                "intent lookup answered {status}"
            )));
        }
        Ok(json)
    }
}

impl Psp for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn charge(&self, request: ChargeRequest) -> PspFuture<'_, ChargeResult> {
        Box::pin(async move {
            let mut form = vec![
                ("amount", request.amount_minor.to_string()),
                ("currency", request.currency.to_ascii_lowercase()),
                ("confirm", "true".to_string()),
                ("off_session", "true".to_string()),
                ("metadata[tally_payment]", request.payment.clone()),
                ("metadata[tally_invoice]", request.invoice.clone()),
                ("metadata[tally_tenant]", request.tenant.to_string()),
            ];
            if let Some(c) = &request.provider_customer {
                form.push(("customer", c.clone()));
            }
            if let Some(pm) = &request.payment_method {
                form.push(("payment_method", pm.clone()));
            }
            let (status, json) = self
                .post("/v1/payment_intents", &request.idempotency_key, &form)
                .await?;
            match status {
                200..=299 => {
                    let status = intent_status(&json);
                    Ok(ChargeResult {
                        provider_id: json["id"].as_str().map(str::to_string),
                        received: (status == ChargeStatus::Succeeded)
                            .then(|| intent_received(&json))
                            .flatten(),
                        status,
                    })
                }
                402 => Ok(ChargeResult {
                    received: None,
                    provider_id: json["error"]["payment_intent"]["id"]
                        .as_str()
                        .map(str::to_string),
                    status: ChargeStatus::Failed {
                        code: json["error"]["decline_code"]
                            .as_str()
                            .or(json["error"]["code"].as_str())
                            .unwrap_or("card_declined")
                            .to_string(),
                        message: json["error"]["message"]
                            .as_str()
                            .unwrap_or("declined")
                            .to_string(),
                    },
                }),
                _ => Err(refusal(status, &json, "request refused")),
            }
        })
    }

    fn refund(&self, request: RefundRequest) -> PspFuture<'_, RefundResult> {
        Box::pin(async move {
            let form = vec![
                ("payment_intent", request.provider_payment.clone()),
                ("amount", request.amount_minor.to_string()),
                ("metadata[tally_refund]", request.refund.clone()),
            ];
            let (status, json) = self
                .post("/v1/refunds", &request.idempotency_key, &form)
                .await?;
            match status {
                200..=299 => Ok(RefundResult {
                    provider_id: json["id"].as_str().unwrap_or_default().to_string(),
                    status: match json["status"].as_str() {
                        Some("succeeded") => RefundStatus::Succeeded,
                        Some("failed") | Some("canceled") => RefundStatus::Failed(
                            json["failure_reason"]
                                .as_str()
                                .unwrap_or("the provider refused the refund")
                                .to_string(),
                        ),
                        _ => RefundStatus::Pending,
                    },
                }),
                _ => Err(refusal(status, &json, "refund refused")),
            }
        })
    }

    fn cancel(&self, request: CancelRequest) -> PspFuture<'_, CancelResult> {
        Box::pin(async move {
            let path = format!("/v1/payment_intents/{}/cancel", request.provider_payment);
            let (status, json) = self.post(&path, &request.idempotency_key, &[]).await?;
            let intent = if (200..300).contains(&status) {
                json
            } else {
                // Stripe refuses to cancel an intent that already settled; read where it is.
                self.intent(&request.provider_payment).await?
            };
            Ok(match intent["status"].as_str() {
                Some("canceled") => CancelResult::Canceled,
                Some("succeeded") => CancelResult::Succeeded {
                    received: intent_received(&intent),
                },
                Some("processing") => CancelResult::Processing,
                Some("requires_payment_method") => CancelResult::Failed,
                other => {
                    return Err(PspError::Retryable(format!(
                        "the intent is {} after a cancel",
                        other.unwrap_or("unknown")
                    )))
                }
            })
        })
    }

    fn list_charges(
        &self,
        tenant: u64,
        from_s: i64,
        to_s: i64,
        starting_after: Option<String>,
    ) -> PspFuture<'_, ChargePage> {
        Box::pin(async move {
            let mut query = vec![
                ("limit", "100".to_string()),
                ("created[gte]", from_s.to_string()),
                ("created[lt]", to_s.to_string()),
            ];
            if let Some(after) = starting_after {
                query.push(("starting_after", after));
            }
            let response = self
                .client
                .get(format!("{}/v1/payment_intents", self.base_url))
                .bearer_auth(&self.secret_key)
                .query(&query)
                .send()
                .await
                .map_err(|e| PspError::Retryable(format!("request failed: {e}")))?;
            let (status, json) = read(response).await?;
            if !(200..300).contains(&status) {
                return Err(PspError::Permanent(format!("list answered {status}")));
            }
            let data = json["data"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|i| belongs_to(i, tenant))
                        .map(|i| ProviderCharge {
                            provider_id: i["id"].as_str().unwrap_or_default().to_string(),
                            amount_minor: i["amount"].as_i64().unwrap_or(0),
                            currency: i["currency"]
                                .as_str()
                                .unwrap_or_default()
                                .to_ascii_uppercase(),
                            status: i["status"].as_str().unwrap_or("unknown").to_string(),
                            payment: i["metadata"]["tally_payment"].as_str().map(str::to_string),
                            tenant: i["metadata"]["tally_tenant"]
                                .as_str()
                                .and_then(|t| t.parse().ok()),
                            created_s: i["created"].as_i64().unwrap_or(0),
                        })
                        .collect()
                })
                .unwrap_or_default();
            // The cursor is the page's last intent, whoever it belongs to.
            let last = json["data"]
                .as_array()
                .and_then(|items| items.last())
                .and_then(|i| i["id"].as_str())
                .map(str::to_string);
            Ok(ChargePage {
                data,
                has_more: json["has_more"].as_bool().unwrap_or(false),
                last,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_refusal_stripe_calls_final_is_read_as_one() {
        let retryable =
            |status, body: Value| matches!(refusal(status, &body, "x"), PspError::Retryable(_));
        // A concurrent call under the same key, an idempotency error: the charge is unknown.
        assert!(retryable(
            409,
            json!({"error": {"type": "invalid_request_error"}})
        ));
        assert!(retryable(
            400,
            json!({"error": {"type": "idempotency_error"}})
        ));
        assert!(retryable(400, json!({"error": {"code": "lock_timeout"}})));
        // A request Stripe will never accept as sent.
        assert!(!retryable(
            400,
            json!({"error": {"type": "invalid_request_error", "code": "parameter_invalid_integer"}})
        ));
        assert!(!retryable(
            404,
            json!({"error": {"code": "resource_missing"}})
        ));
    }

    #[test]
    fn a_listed_intent_names_its_tenant_only_through_its_metadata() {
        let legacy = json!({"metadata": {"tally_payment": "pay_x"}});
        assert!(belongs_to(&legacy, 7));
        let other = json!({"metadata": {"tally_payment": "pay_x", "tally_tenant": "8"}});
        assert!(!belongs_to(&other, 7));
        let none = json!({"metadata": {}});
        assert!(!belongs_to(&none, 7));
    }
}
