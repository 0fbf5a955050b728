//! Stripe webhook handlers. They apply the same outcomes as the synchronous path, so a webhook
//! before, after or instead of the API reply ends in the same state, once.

use std::sync::Arc;

use redb::WriteTransaction;

use super::payment::{self, Dunning, Outcome};
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
        "charge.refunded",
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
    tx: &WriteTransaction,
    tenant: TenantId,
    object: &serde_json::Value,
    intent_field: &str,
) -> Result<Result<Id, Handled>, StoreError> {
    let meta = object["metadata"]["tally_payment"].as_str();
    if let Some(id) = meta.and_then(|m| Id::parse(m, payment::PREFIX)) {
        return Ok(match payment::load(tx, tenant, id)? {
            Some(_) => Ok(id),
            // Named by metadata but not here: not ours (another tenant's or another system's).
            None => Err(Handled::Ignored),
        });
    }
    let Some(provider_id) = object[intent_field].as_str() else {
        return Ok(Err(Handled::Ignored));
    };
    Ok(match payment::by_provider_id(tx, tenant, provider_id)? {
        Some(id) => Ok(id),
        None => Err(Handled::Ignored),
    })
}

impl EventHandler for StripeEvent {
    fn apply(
        &self,
        tx: &WriteTransaction,
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
        if self.kind == "charge.refunded" {
            let id = match find(tx, tenant, object, "payment_intent")? {
                Ok(id) => id,
                Err(h) => return Ok(h),
            };
            let Some(p) = payment::load(tx, tenant, id)? else {
                return Ok(Handled::Ignored);
            };
            if p.status != payment::PaymentStatus::Succeeded {
                return Ok(Handled::NotYet(
                    "the payment's success is not recorded yet".into(),
                ));
            }
            let refunded = object["amount_refunded"].as_i64().unwrap_or(0);
            // Tally's own pending refunds complete; a refund made at the provider directly is
            // recorded as one more.
            for r in p.refunds.iter().filter(|r| r.status == "pending") {
                payment::apply_refund(
                    tx,
                    tenant,
                    id,
                    r.id,
                    Ok(object["id"].as_str().unwrap_or("refund").to_string()),
                    now_ms,
                    &origin,
                )?;
            }
            let Some(after) = payment::load(tx, tenant, id)? else {
                return Ok(Handled::Ignored);
            };
            let extra = refunded - after.refunded_minor();
            if extra > 0 {
                let Ok(mut requested) = (payment::RequestRefund {
                    tenant,
                    payment: id,
                    amount_minor: Some(extra),
                    now_ms,
                })
                .apply_without_job(tx)?
                else {
                    return Ok(Handled::Failed(
                        "the provider refunded more than was paid".into(),
                    ));
                };
                if let Some(r) = requested.refunds.pop() {
                    payment::apply_refund(
                        tx,
                        tenant,
                        id,
                        r.id,
                        Ok("provider".into()),
                        now_ms,
                        &origin,
                    )?;
                }
            }
            return Ok(Handled::Applied);
        }
        let id = match find(tx, tenant, object, "id")? {
            Ok(id) => id,
            Err(h) => return Ok(h),
        };
        let provider_id = object["id"].as_str().map(str::to_string);
        let outcome = match self.kind {
            "payment_intent.succeeded" => Outcome::Succeeded { provider_id },
            "payment_intent.processing" => Outcome::Processing { provider_id },
            "payment_intent.requires_action" => Outcome::RequiresAction { provider_id },
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
        payment::apply_outcome(tx, tenant, id, outcome, &self.dunning, now_ms, &origin)?;
        Ok(Handled::Applied)
    }
}
