//! The simulation's payment provider: a Stripe-shaped model with its own books (what it really
//! charged and refunded for the tenant) that injects faults from the seeded generator.
//!
//! Faults: a reply lost after the charge or refund was made, a 5xx before anything was made,
//! declines, `requires_action` (the customer completes or abandons it later), `processing`
//! (settles later), refused refunds, failed listings, and webhooks that are never sent or sent
//! twice. Deliveries are taken from the outbox in any order by the scheduler (delayed and
//! reordered). It can also report a charge made outside Tally that names a Tally payment but
//! carries another amount or currency, as a misconfigured integration does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;

use super::rng::Rng;
use crate::payments::psp::{
    CancelRequest, CancelResult, ChargePage, ChargeRequest, ChargeResult, ChargeStatus,
    ProviderCharge, Psp, PspError, PspFuture, RefundRequest, RefundResult, RefundStatus,
};

/// Where a charge stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Collected.
    Succeeded,
    /// Settling; collected later.
    Processing,
    /// Waiting for the customer.
    RequiresAction,
    /// Declined or abandoned.
    Failed,
    /// Canceled on Tally's request before it collected.
    Canceled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Processing => "processing",
            Status::RequiresAction => "requires_action",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }

    fn event_type(self) -> &'static str {
        match self {
            Status::Succeeded => "payment_intent.succeeded",
            Status::Processing => "payment_intent.processing",
            Status::RequiresAction => "payment_intent.requires_action",
            Status::Failed => "payment_intent.payment_failed",
            Status::Canceled => "payment_intent.canceled",
        }
    }
}

/// A refund as the provider made (or refused) it.
#[derive(Debug, Clone)]
pub struct Refund {
    /// Tally's idempotency key.
    pub key: String,
    /// `re_…` at the provider.
    pub provider_id: String,
    /// `metadata[tally_refund]`: Tally's refund id.
    pub refund: String,
    /// Minor units.
    pub amount_minor: i64,
    /// Whether the money went back.
    pub succeeded: bool,
}

/// A charge in the provider's books.
#[derive(Debug, Clone)]
pub struct Charge {
    /// `pi_…`.
    pub provider_id: String,
    /// Tally's idempotency key (`None` for a charge made outside Tally).
    pub key: Option<String>,
    /// `metadata[tally_payment]`.
    pub payment: String,
    /// `metadata[tally_tenant]`.
    pub tenant: u64,
    /// Minor units actually charged.
    pub amount_minor: i64,
    /// ISO 4217 as charged.
    pub currency: String,
    /// State.
    pub status: Status,
    /// Unix seconds.
    pub created_s: i64,
    /// Refunds, in order.
    pub refunds: Vec<Refund>,
}

impl Charge {
    /// What was refunded for real.
    pub fn refunded_minor(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.succeeded)
            .map(|r| r.amount_minor)
            .sum()
    }
}

/// One webhook the provider sends: its Stripe event id and the body.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `evt_…`.
    pub id: String,
    /// `type`.
    pub kind: String,
    /// The JSON body.
    pub body: serde_json::Value,
}

/// Fault probabilities, in percent.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// A charge call fails before anything is recorded.
    pub error_before: u32,
    /// The reply to a charge or refund is lost after it was made.
    pub lost_reply: u32,
    /// A new charge is declined.
    pub decline: u32,
    /// A new charge needs the customer.
    pub requires_action: u32,
    /// A new charge settles later.
    pub processing: u32,
    /// A refund is refused.
    pub refuse_refund: u32,
    /// A webhook is never sent.
    pub webhook_lost: u32,
    /// A webhook is sent twice.
    pub webhook_duplicated: u32,
    /// A listing fails (retryable).
    pub list_error: u32,
}

/// The provider's state: its books, its outbox, its own chance.
pub struct Books {
    /// Every charge, in creation order.
    pub charges: Vec<Charge>,
    /// Webhooks sent and not yet delivered.
    pub outbox: Vec<Webhook>,
    rng: Rng,
    next_id: u64,
    now_ms: i64,
    faults: Faults,
    calm: bool,
}

impl Books {
    fn fresh_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_sim{:06}", self.next_id)
    }

    fn roll(&mut self, percent: u32) -> bool {
        !self.calm && self.rng.chance(percent)
    }

    fn emit(&mut self, kind: &str, object: serde_json::Value) {
        let id = self.fresh_id("evt");
        let hook = Webhook {
            id: id.clone(),
            kind: kind.to_string(),
            body: json!({"id": id, "object": "event", "type": kind, "data": {"object": object}}),
        };
        if self.roll(self.faults.webhook_lost) {
            return;
        }
        if self.roll(self.faults.webhook_duplicated) {
            self.outbox.push(hook.clone());
        }
        self.outbox.push(hook);
    }

    fn emit_intent(&mut self, index: usize) {
        let c = &self.charges[index];
        let mut object = json!({
            "id": c.provider_id,
            "object": "payment_intent",
            "amount": c.amount_minor,
            "amount_received": if c.status == Status::Succeeded { c.amount_minor } else { 0 },
            "currency": c.currency.to_ascii_lowercase(),
            "status": c.status.as_str(),
            "metadata": {"tally_payment": c.payment, "tally_tenant": c.tenant.to_string()},
        });
        if c.status == Status::Failed {
            object["last_payment_error"] = json!({"code": "card_declined", "decline_code": "generic_decline",
                       "message": "Your card was declined."});
        }
        let kind = c.status.event_type();
        self.emit(kind, object);
    }

    fn emit_refunded(&mut self, index: usize) {
        let c = &self.charges[index];
        let refunds: Vec<serde_json::Value> = c
            .refunds
            .iter()
            .map(|r| {
                json!({
                    "id": r.provider_id,
                    "object": "refund",
                    "amount": r.amount_minor,
                    "currency": c.currency.to_ascii_lowercase(),
                    "payment_intent": c.provider_id,
                    "status": if r.succeeded { "succeeded" } else { "failed" },
                    "metadata": {"tally_refund": r.refund},
                })
            })
            .collect();
        let object = json!({
            "id": format!("ch_{}", c.provider_id),
            "refunds": {"object": "list", "data": refunds, "has_more": false},
            "object": "charge",
            "payment_intent": c.provider_id,
            "amount": c.amount_minor,
            "amount_refunded": c.refunded_minor(),
            "currency": c.currency.to_ascii_lowercase(),
            "refunded": c.refunded_minor() == c.amount_minor,
            "metadata": {"tally_payment": c.payment},
        });
        self.emit("charge.refunded", object);
    }

    fn result(&self, index: usize) -> ChargeResult {
        let c = &self.charges[index];
        ChargeResult {
            provider_id: Some(c.provider_id.clone()),
            status: match c.status {
                Status::Succeeded => ChargeStatus::Succeeded,
                Status::Processing => ChargeStatus::Processing,
                Status::RequiresAction => ChargeStatus::RequiresAction,
                Status::Failed | Status::Canceled => ChargeStatus::Failed {
                    code: "card_declined".into(),
                    message: "Your card was declined.".into(),
                },
            },
            received: (c.status == Status::Succeeded).then(|| (c.amount_minor, c.currency.clone())),
        }
    }

    fn charge(&mut self, request: &ChargeRequest) -> Result<ChargeResult, PspError> {
        if let Some(index) = self
            .charges
            .iter()
            .position(|c| c.key.as_deref() == Some(request.idempotency_key.as_str()))
        {
            // A retry with the same key: the stored charge, never a second one.
            if self.roll(self.faults.lost_reply) {
                return Err(PspError::Retryable("timeout (simulated)".into()));
            }
            return Ok(self.result(index));
        }
        if self.roll(self.faults.error_before) {
            return Err(PspError::Retryable("503 (simulated)".into()));
        }
        let status = if self.roll(self.faults.decline) {
            Status::Failed
        } else if self.roll(self.faults.requires_action) {
            Status::RequiresAction
        } else if self.roll(self.faults.processing) {
            Status::Processing
        } else {
            Status::Succeeded
        };
        let provider_id = self.fresh_id("pi");
        self.charges.push(Charge {
            provider_id,
            key: Some(request.idempotency_key.clone()),
            payment: request.payment.clone(),
            tenant: request.tenant,
            amount_minor: request.amount_minor,
            currency: request.currency.clone(),
            status,
            created_s: self.now_ms.div_euclid(1000),
            refunds: Vec::new(),
        });
        let index = self.charges.len() - 1;
        self.emit_intent(index);
        if self.roll(self.faults.lost_reply) {
            return Err(PspError::Retryable(
                "timeout after charging (simulated)".into(),
            ));
        }
        Ok(self.result(index))
    }

    fn refund(&mut self, request: &RefundRequest) -> Result<RefundResult, PspError> {
        let Some(index) = self
            .charges
            .iter()
            .position(|c| c.provider_id == request.provider_payment)
        else {
            return Err(PspError::Permanent("no such payment intent".into()));
        };
        if let Some(r) = self.charges[index]
            .refunds
            .iter()
            .find(|r| r.key == request.idempotency_key)
        {
            return Ok(RefundResult {
                provider_id: r.provider_id.clone(),
                status: refund_status(r.succeeded),
            });
        }
        if self.roll(self.faults.error_before) {
            return Err(PspError::Retryable("503 (simulated)".into()));
        }
        let c = &self.charges[index];
        let fits = c.status == Status::Succeeded
            && request.amount_minor > 0
            && request.amount_minor <= c.amount_minor - c.refunded_minor();
        let succeeded = fits && !self.roll(self.faults.refuse_refund);
        let provider_id = self.fresh_id("re");
        self.charges[index].refunds.push(Refund {
            key: request.idempotency_key.clone(),
            provider_id: provider_id.clone(),
            refund: request.refund.clone(),
            amount_minor: request.amount_minor,
            succeeded,
        });
        if succeeded {
            self.emit_refunded(index);
        }
        if self.roll(self.faults.lost_reply) {
            return Err(PspError::Retryable(
                "timeout after refunding (simulated)".into(),
            ));
        }
        Ok(RefundResult {
            provider_id,
            status: refund_status(succeeded),
        })
    }

    fn cancel(&mut self, request: &CancelRequest) -> Result<CancelResult, PspError> {
        let Some(index) = self
            .charges
            .iter()
            .position(|c| c.provider_id == request.provider_payment)
        else {
            return Err(PspError::Permanent("no such payment intent".into()));
        };
        if self.charges[index].status == Status::RequiresAction {
            self.charges[index].status = Status::Canceled;
            self.emit_intent(index);
        }
        if self.roll(self.faults.lost_reply) {
            return Err(PspError::Retryable(
                "timeout after canceling (simulated)".into(),
            ));
        }
        let c = &self.charges[index];
        Ok(match c.status {
            Status::Succeeded => CancelResult::Succeeded {
                received: Some((c.amount_minor, c.currency.clone())),
            },
            Status::Processing => CancelResult::Processing,
            Status::Failed => CancelResult::Failed,
            Status::RequiresAction | Status::Canceled => CancelResult::Canceled,
        })
    }

    fn list(
        &mut self,
        tenant: u64,
        from_s: i64,
        to_s: i64,
        after: Option<String>,
    ) -> Result<ChargePage, PspError> {
        if self.roll(self.faults.list_error) {
            return Err(PspError::Retryable("503 (simulated)".into()));
        }
        let in_range: Vec<&Charge> = self
            .charges
            .iter()
            .filter(|c| c.tenant == tenant && c.created_s >= from_s && c.created_s < to_s)
            .collect();
        let start = match after {
            Some(id) => in_range
                .iter()
                .position(|c| c.provider_id == id)
                .map_or(0, |i| i + 1),
            None => 0,
        };
        let page: Vec<ProviderCharge> = in_range
            .iter()
            .skip(start)
            .take(100)
            .map(|c| ProviderCharge {
                provider_id: c.provider_id.clone(),
                amount_minor: c.amount_minor,
                currency: c.currency.clone(),
                status: c.status.as_str().to_string(),
                payment: Some(c.payment.clone()),
                tenant: Some(c.tenant),
                created_s: c.created_s,
            })
            .collect();
        Ok(ChargePage {
            has_more: start + page.len() < in_range.len(),
            last: page.last().map(|c| c.provider_id.clone()),
            data: page,
        })
    }
}

fn refund_status(succeeded: bool) -> RefundStatus {
    if succeeded {
        RefundStatus::Succeeded
    } else {
        RefundStatus::Failed("refused (simulated)".into())
    }
}

/// The provider, shared by the payment handlers (through [`Psp`]) and the scheduler.
#[derive(Clone)]
pub struct Provider {
    books: Arc<Mutex<Books>>,
}

impl Provider {
    /// A provider whose faults follow `seed` and `faults`.
    pub fn new(seed: u64, faults: Faults) -> Self {
        Self {
            books: Arc::new(Mutex::new(Books {
                charges: Vec::new(),
                outbox: Vec::new(),
                rng: Rng::new(seed ^ 0x005E_ED0F_9500),
                next_id: 0,
                now_ms: 0,
                faults,
                calm: false,
            })),
        }
    }

    /// The books, locked.
    pub fn books(&self) -> MutexGuard<'_, Books> {
        match self.books.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Sets the provider's clock (charges record their creation second).
    pub fn set_now(&self, now_ms: i64) {
        self.books().now_ms = now_ms;
    }

    /// Turns faults off (`true`) while the scheduler drives the system to quiescence.
    pub fn set_calm(&self, calm: bool) {
        self.books().calm = calm;
    }

    /// The customer completes (or abandons) a charge waiting for them. Returns what it did.
    pub fn customer_acts(&self, rng: &mut Rng) -> Option<String> {
        let mut b = self.books();
        let waiting: Vec<usize> = (0..b.charges.len())
            .filter(|&i| b.charges[i].status == Status::RequiresAction)
            .collect();
        let index = waiting[rng.pick(waiting.len())?];
        let status = if rng.chance(75) {
            Status::Succeeded
        } else {
            Status::Failed
        };
        b.charges[index].status = status;
        b.emit_intent(index);
        Some(format!(
            "{} {}",
            b.charges[index].provider_id,
            status.as_str()
        ))
    }

    /// A processing charge settles (collected).
    pub fn settle_processing(&self, rng: &mut Rng) -> Option<String> {
        let mut b = self.books();
        let settling: Vec<usize> = (0..b.charges.len())
            .filter(|&i| b.charges[i].status == Status::Processing)
            .collect();
        let index = settling[rng.pick(settling.len())?];
        b.charges[index].status = Status::Succeeded;
        b.emit_intent(index);
        Some(b.charges[index].provider_id.clone())
    }

    /// Every processing charge settles (quiescence).
    pub fn settle_all_processing(&self) {
        let mut b = self.books();
        for index in 0..b.charges.len() {
            if b.charges[index].status == Status::Processing {
                b.charges[index].status = Status::Succeeded;
                b.emit_intent(index);
            }
        }
    }

    /// A charge made outside Tally that names Tally payment `payment` but collects another
    /// amount or currency; the provider reports its success like any other.
    pub fn foreign_charge(
        &self,
        tenant: u64,
        payment: &str,
        amount_minor: i64,
        currency: &str,
    ) -> String {
        let mut b = self.books();
        let provider_id = b.fresh_id("pi");
        let created_s = b.now_ms.div_euclid(1000);
        b.charges.push(Charge {
            provider_id: provider_id.clone(),
            key: None,
            payment: payment.to_string(),
            tenant,
            amount_minor,
            currency: currency.to_string(),
            status: Status::Succeeded,
            created_s,
            refunds: Vec::new(),
        });
        let index = b.charges.len() - 1;
        b.emit_intent(index);
        provider_id
    }

    /// Takes the webhook at `index` of the outbox (a duplicate stays behind when `again`).
    pub fn take_webhook(&self, index: usize, again: bool) -> Option<Webhook> {
        let mut b = self.books();
        if index >= b.outbox.len() {
            return None;
        }
        if again {
            return b.outbox.get(index).cloned();
        }
        Some(b.outbox.remove(index))
    }

    /// Webhooks waiting to be delivered.
    pub fn outbox_len(&self) -> usize {
        self.books().outbox.len()
    }

    /// A snapshot of the charges.
    pub fn charges(&self) -> Vec<Charge> {
        self.books().charges.clone()
    }

    /// Net collected per currency over the charges `attributable` accepts.
    pub fn net_collected(&self, attributable: impl Fn(&Charge) -> bool) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for c in self.books().charges.iter() {
            if c.status == Status::Succeeded && attributable(c) {
                *out.entry(c.currency.clone()).or_insert(0) += c.amount_minor - c.refunded_minor();
            }
        }
        out
    }
}

impl Psp for Provider {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn charge(&self, request: ChargeRequest) -> PspFuture<'_, ChargeResult> {
        let answer = self.books().charge(&request);
        Box::pin(async move { answer })
    }

    fn refund(&self, request: RefundRequest) -> PspFuture<'_, RefundResult> {
        let answer = self.books().refund(&request);
        Box::pin(async move { answer })
    }

    fn cancel(&self, request: CancelRequest) -> PspFuture<'_, CancelResult> {
        let answer = self.books().cancel(&request);
        Box::pin(async move { answer })
    }

    fn list_charges(
        &self,
        tenant: u64,
        from_s: i64,
        to_s: i64,
        starting_after: Option<String>,
    ) -> PspFuture<'_, ChargePage> {
        let answer = self.books().list(tenant, from_s, to_s, starting_after);
        Box::pin(async move { answer })
    }
}
