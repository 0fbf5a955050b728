//! Stripe webhook handlers. They apply the same outcomes as the synchronous path, so a webhook
//! before, after or instead of the API reply ends in the same state, once.

use std::sync::Arc;

use crate::store::WriteTxn;

use super::payment::{self, Dunning, Outcome, Received};
use super::refund::{self, Matched, ProviderRefund};
use super::stripe::intent_received;
use crate::id::Id;
use crate::store::{StoreError, TenantId};
use crate::webhooks::endpoint::Provider;
use crate::webhooks::event::WebhookEvent;
use crate::webhooks::process::{EventHandler, EventHandlers, Handled};

/// Registers the Stripe handlers.
pub fn register(handlers: &mut EventHandlers, dunning: Dunning) {
    for kind in [
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.processing",
        "payment_intent.requires_action",
        "payment_intent.canceled",
        "charge.refunded",
        "refund.created",
        "refund.updated",
        "charge.refund.updated",
    ] {
        handlers.register(
            Provider::Stripe,
            kind,
            Arc::new(StripeEvent {
                kind,
                dunning: dunning.clone(),
            }),
        );
    }
}

struct StripeEvent {
    kind: &'static str,
    dunning: Dunning,
}

fn find(
    tx: &WriteTxn,
    tenant: TenantId,
    object: &serde_json::Value,
    intent_field: &str,
) -> Result<Result<Id, Handled>, StoreError> {
    // The intent's own id first: an intent Tally recorded (or recorded beside the attempt it
    // names) is found exactly; the metadata names the attempt an unknown intent is about.
    if let Some(provider_id) = object[intent_field].as_str() {
        if let Some(id) = payment::by_provider_id(tx, tenant, provider_id)? {
            return Ok(Ok(id));
        }
    }
    let meta = object["metadata"]["tally_payment"].as_str();
    if let Some(id) = meta.and_then(|m| Id::parse(m, payment::PREFIX)) {
        return Ok(match payment::load(tx, tenant, id)? {
            Some(_) => Ok(id),
            // Named by metadata but not here: not ours (another tenant's or another system's).
            None => Err(Handled::Ignored),
        });
    }
    Ok(Err(Handled::Ignored))
}

impl EventHandler for StripeEvent {
    fn apply(
        &self,
        tx: &WriteTxn,
        tenant: TenantId,
        event: &WebhookEvent,
        body: &serde_json::Value,
        now_ms: i64,
    ) -> Result<Handled, StoreError> {
        let object = &body["data"]["object"];
        let origin = format!(
            "webhook:{}",
            event.id.display(crate::webhooks::event::PREFIX)
        );
        match self.kind {
            "charge.refunded" => charge_refunded(tx, tenant, object, now_ms, &origin),
            "refund.created" | "refund.updated" | "charge.refund.updated" => {
                refund_event(tx, tenant, object, now_ms, &origin)
            }
            _ => self.intent_event(tx, tenant, object, now_ms, &origin),
        }
    }
}

impl StripeEvent {
    /// A `payment_intent.*` event: its outcome, with what it reports collecting.
    fn intent_event(
        &self,
        tx: &WriteTxn,
        tenant: TenantId,
        object: &serde_json::Value,
        now_ms: i64,
        origin: &str,
    ) -> Result<Handled, StoreError> {
        let id = match find(tx, tenant, object, "id")? {
            Ok(id) => id,
            Err(h) => return Ok(h),
        };
        let provider_id = object["id"].as_str().map(str::to_string);
        let outcome = match self.kind {
            "payment_intent.succeeded" => {
                let Some((amount_minor, currency)) = intent_received(object) else {
                    return Ok(Handled::Failed(
                        "the succeeded intent names no amount and currency".into(),
                    ));
                };
                Outcome::Succeeded {
                    provider_id,
                    received: Some(Received {
                        amount_minor,
                        currency,
                    }),
                }
            }
            "payment_intent.processing" => Outcome::Processing { provider_id },
            "payment_intent.requires_action" => Outcome::RequiresAction { provider_id },
            "payment_intent.canceled" => Outcome::Canceled {
                provider_id,
                reason: object["cancellation_reason"]
                    .as_str()
                    .unwrap_or("the intent was canceled at the provider")
                    .to_string(),
            },
            _ => Outcome::Failed {
                provider_id,
                code: object["last_payment_error"]["decline_code"]
                    .as_str()
                    .or(object["last_payment_error"]["code"].as_str())
                    .unwrap_or("payment_failed")
                    .to_string(),
                message: object["last_payment_error"]["message"]
                    .as_str()
                    .unwrap_or("payment failed")
                    .to_string(),
            },
        };
        payment::apply_outcome(tx, tenant, id, outcome, &self.dunning, now_ms, origin)?;
        Ok(Handled::Applied)
    }
}

/// The payment of a refund or charge object, once its collection is recorded.
fn collected_payment(
    tx: &WriteTxn,
    tenant: TenantId,
    object: &serde_json::Value,
) -> Result<Result<Id, Handled>, StoreError> {
    let id = match find(tx, tenant, object, "payment_intent")? {
        Ok(id) => id,
        Err(h) => return Ok(Err(h)),
    };
    let Some(p) = payment::load(tx, tenant, id)? else {
        return Ok(Err(Handled::Ignored));
    };
    if !p.status.is_collected() {
        return Ok(Err(Handled::NotYet(
            "the payment's collection is not recorded yet".into(),
        )));
    }
    Ok(Ok(id))
}

/// `charge.refunded`: each refund of the charge's list is matched by its ids and amount;
/// without a list, the total is matched as `refund::apply_refunded_total` describes.
fn charge_refunded(
    tx: &WriteTxn,
    tenant: TenantId,
    object: &serde_json::Value,
    now_ms: i64,
    origin: &str,
) -> Result<Handled, StoreError> {
    let id = match collected_payment(tx, tenant, object)? {
        Ok(id) => id,
        Err(h) => return Ok(h),
    };
    if let Some(list) = object["refunds"]["data"].as_array() {
        let mut problems = Vec::new();
        for item in list {
            let Some(r) = provider_refund(item) else {
                problems.push("a refund without an id or amount".to_string());
                continue;
            };
            match refund::apply_provider_refund(tx, tenant, id, &r, now_ms, origin)? {
                Matched::Applied => {}
                Matched::Mismatch(why) | Matched::Refused(why) => problems.push(why),
            }
        }
        return Ok(settled(problems));
    }
    let Some(total) = object["amount_refunded"].as_i64() else {
        return Ok(Handled::Failed(
            "the charge names no amount_refunded".into(),
        ));
    };
    Ok(match refund::check_refunded_total(tx, tenant, id, total)? {
        Matched::Applied => Handled::Applied,
        // Left pending: the refunds' own events (or the refund jobs) settle them.
        Matched::Mismatch(why) => {
            tracing::info!(reason = %why, "charge.refunded without a refund list books nothing");
            Handled::Applied
        }
        Matched::Refused(why) => Handled::Failed(why),
    })
}

/// `refund.created`, `refund.updated`, `charge.refund.updated`: one refund object.
fn refund_event(
    tx: &WriteTxn,
    tenant: TenantId,
    object: &serde_json::Value,
    now_ms: i64,
    origin: &str,
) -> Result<Handled, StoreError> {
    let id = match collected_payment(tx, tenant, object)? {
        Ok(id) => id,
        Err(h) => return Ok(h),
    };
    let Some(r) = provider_refund(object) else {
        return Ok(Handled::Failed("the refund names no id or amount".into()));
    };
    let matched = refund::apply_provider_refund(tx, tenant, id, &r, now_ms, origin)?;
    Ok(match matched {
        Matched::Applied => Handled::Applied,
        Matched::Mismatch(why) | Matched::Refused(why) => Handled::Failed(why),
    })
}

fn settled(problems: Vec<String>) -> Handled {
    if problems.is_empty() {
        Handled::Applied
    } else {
        Handled::Failed(problems.join("; "))
    }
}

/// A Stripe refund object as the matcher reads it.
fn provider_refund(object: &serde_json::Value) -> Option<ProviderRefund> {
    Some(ProviderRefund {
        provider_id: object["id"].as_str()?.to_string(),
        amount_minor: object["amount"].as_i64()?,
        status: object["status"].as_str().unwrap_or("pending").to_string(),
        tally_refund: object["metadata"]["tally_refund"]
            .as_str()
            .and_then(|t| Id::parse(t, payment::REFUND_PREFIX)),
    })
}
