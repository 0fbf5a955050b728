//! The payment jobs: charging an attempt, refunding, reconciling. Each calls the provider
//! outside any transaction and commits what it learned with the job's completion.

use std::sync::Arc;

use super::attempt::{self, CallDecision};
use super::payment::{
    self, Dunning, MarkProviderCalled, Outcome, Payment, PaymentStatus, Received, PREFIX,
    REFUND_PREFIX,
};
use super::psp::{
    CancelRequest, CancelResult, ChargeRequest, ChargeResult, ChargeStatus, Psp, PspError,
    RefundRequest, RefundStatus,
};
use super::reconcile;
use super::refund::RefundOutcome;
use crate::billing::invoice;
use crate::id::Id;
use crate::jobs::worker::{Handler, HandlerFuture};
use crate::jobs::{Effect, Job};
use crate::store::writer::WriterHandle;
use crate::store::{Store, TenantId};

/// What the payment handlers share.
#[derive(Clone)]
pub struct Context {
    /// For recovery points.
    pub writer: WriterHandle,
    /// For reads.
    pub store: Arc<Store>,
    /// The provider.
    pub psp: Arc<dyn Psp>,
    /// Dunning schedule.
    pub dunning: Dunning,
}

fn done(
    effect: impl FnOnce(
            &crate::store::WriteTxn,
            &Job,
        ) -> Result<crate::jobs::Outcome, crate::store::StoreError>
        + Send
        + 'static,
) -> Result<Effect, String> {
    Ok(Box::new(effect))
}

/// `payment.execute`: the last check and the recovery point in one write, then (after
/// canceling an attempt it supersedes) the provider call with the attempt's key, and the
/// outcome with the job's completion.
pub struct ExecutePayment(pub Context);

impl Handler for ExecutePayment {
    fn run(&self, job: Job) -> HandlerFuture {
        let ctx = self.0.clone();
        Box::pin(async move {
            let tenant = TenantId(job.tenant);
            let id = Id::parse(&job.payload, PREFIX)
                .ok_or_else(|| format!("bad payload {:?}", job.payload))?;
            let Some(payment) = decide(&ctx, tenant, id).await? else {
                return done(|_, _| Ok(crate::jobs::Outcome::Done));
            };
            let answer = ctx
                .psp
                .charge(charge_request(&ctx, tenant, &payment)?)
                .await;
            let dunning = ctx.dunning.clone();
            let origin = format!("job:{}", job.id.display(crate::jobs::PREFIX));
            done(move |tx, _| {
                let (outcome, retry) = charge_outcome(answer);
                let now = crate::clock::now_ms();
                payment::apply_outcome(tx, tenant, id, outcome, &dunning, now, &origin)?;
                Ok(match retry {
                    Some(reason) => crate::jobs::Outcome::Retry(reason),
                    None => crate::jobs::Outcome::Done,
                })
            })
        })
    }
}

/// Whether to call the provider: `MarkProviderCalled` decides inside a write; an attempt it
/// supersedes is canceled at the provider first and the decision taken again.
async fn decide(ctx: &Context, tenant: TenantId, id: Id) -> Result<Option<Payment>, String> {
    let mark = || MarkProviderCalled {
        tenant,
        id,
        now_ms: crate::clock::now_ms(),
    };
    let decision = ctx.writer.submit(mark()).await.map_err(|e| e.to_string())?;
    let decision = match decision {
        CallDecision::CancelFirst {
            payment,
            superseded,
        } => {
            cancel_at_provider(ctx, tenant, &superseded, Some(payment.id)).await?;
            ctx.writer.submit(mark()).await.map_err(|e| e.to_string())?
        }
        other => other,
    };
    match decision {
        CallDecision::Call(p) => Ok(Some(*p)),
        CallDecision::Skip => Ok(None),
        CallDecision::CancelFirst { superseded, .. } => Err(format!(
            "the superseded attempt {} is still {}",
            superseded.id.display(PREFIX),
            superseded.status.as_str()
        )),
    }
}

/// Cancels an intent that waits for the customer (superseded `by` a new attempt, or canceled
/// on request) and records where it ended: canceled (a new attempt may charge), or collected
/// after all (the invoice is paid and a new attempt is skipped). An intent that is settling is
/// asked again on the job's next try.
async fn cancel_at_provider(
    ctx: &Context,
    tenant: TenantId,
    superseded: &Payment,
    by: Option<Id>,
) -> Result<(), String> {
    let answer = match &superseded.provider_id {
        Some(provider_payment) => ctx
            .psp
            .cancel(CancelRequest {
                provider_payment: provider_payment.clone(),
                idempotency_key: format!("{}-cancel", superseded.psp_key),
            })
            .await
            .map_err(|e| e.to_string())?,
        // It never reached the provider under an id: there is nothing there to collect.
        None => CancelResult::Canceled,
    };
    let now_ms = crate::clock::now_ms();
    let outcome = match answer {
        CancelResult::Canceled | CancelResult::Failed => None,
        CancelResult::Succeeded { received } => Some(Outcome::Succeeded {
            provider_id: superseded.provider_id.clone(),
            received: received.map(|(amount_minor, currency)| Received {
                amount_minor,
                currency,
            }),
        }),
        CancelResult::Processing => {
            return Err(format!(
                "the superseded attempt {} is settling at the provider",
                superseded.id.display(PREFIX)
            ))
        }
    };
    ctx.writer
        .submit(SettleSuperseded {
            tenant,
            old: superseded.id,
            by,
            outcome,
            dunning: ctx.dunning.clone(),
            now_ms,
        })
        .await
        .map_err(|e| e.to_string())
}

/// Records what canceling a superseded attempt found, in one write.
#[derive(Clone)]
struct SettleSuperseded {
    tenant: TenantId,
    old: Id,
    by: Option<Id>,
    outcome: Option<Outcome>,
    dunning: Dunning,
    now_ms: i64,
}

impl crate::store::writer::Command for SettleSuperseded {
    type Output = ();

    fn apply(self, tx: &crate::store::WriteTxn) -> Result<(), crate::store::StoreError> {
        match self.outcome {
            None => attempt::supersede(tx, self.tenant, self.old, self.by, self.now_ms),
            Some(outcome) => {
                let origin = match self.by {
                    Some(by) => format!("supersede:{}", by.display(PREFIX)),
                    None => format!("cancel:{}", self.old.display(PREFIX)),
                };
                payment::apply_outcome(
                    tx,
                    self.tenant,
                    self.old,
                    outcome,
                    &self.dunning,
                    self.now_ms,
                    &origin,
                )?;
                Ok(())
            }
        }
    }
}

fn charge_request(
    ctx: &Context,
    tenant: TenantId,
    payment: &Payment,
) -> Result<ChargeRequest, String> {
    let tx = ctx.store.read().map_err(|e| e.to_string())?;
    let customer =
        crate::customers::get(&tx, tenant, payment.customer).map_err(|e| e.to_string())?;
    let meta = customer.map(|c| c.metadata).unwrap_or_default();
    Ok(ChargeRequest {
        tenant: tenant.0,
        idempotency_key: payment.psp_key.clone(),
        amount_minor: payment.amount_minor,
        currency: payment.currency.clone(),
        provider_customer: meta.get("psp_customer").cloned(),
        payment_method: payment
            .payment_method
            .clone()
            .or_else(|| meta.get("psp_payment_method").cloned()),
        payment: payment.id.display(PREFIX),
        invoice: payment.invoice.display(invoice::PREFIX),
    })
}

/// The provider's answer as an outcome, and whether the job retries (an unanswered call is
/// repeated with the same key).
fn charge_outcome(answer: Result<ChargeResult, PspError>) -> (Outcome, Option<String>) {
    match answer {
        Ok(result) => {
            let provider_id = result.provider_id;
            let outcome = match result.status {
                ChargeStatus::Succeeded => Outcome::Succeeded {
                    provider_id,
                    received: result.received.map(|(amount_minor, currency)| Received {
                        amount_minor,
                        currency,
                    }),
                },
                ChargeStatus::Processing => Outcome::Processing { provider_id },
                ChargeStatus::RequiresAction => Outcome::RequiresAction { provider_id },
                ChargeStatus::Failed { code, message } => Outcome::Failed {
                    provider_id,
                    code,
                    message,
                },
            };
            (outcome, None)
        }
        Err(PspError::Retryable(reason)) => (Outcome::Unknown, Some(reason)),
        Err(PspError::Permanent(reason)) => (
            Outcome::Failed {
                provider_id: None,
                code: "provider_error".into(),
                message: reason,
            },
            None,
        ),
    }
}

/// `payment.cancel`: cancels an attempt waiting for the customer at the provider.
pub struct CancelPayment(pub Context);

impl Handler for CancelPayment {
    fn run(&self, job: Job) -> HandlerFuture {
        let ctx = self.0.clone();
        Box::pin(async move {
            let tenant = TenantId(job.tenant);
            let id = Id::parse(&job.payload, PREFIX)
                .ok_or_else(|| format!("bad payload {:?}", job.payload))?;
            let current = {
                let tx = ctx.store.read().map_err(|e| e.to_string())?;
                payment::get(&tx, tenant, id).map_err(|e| e.to_string())?
            };
            if let Some(p) = current.filter(|p| p.status == PaymentStatus::RequiresAction) {
                cancel_at_provider(&ctx, tenant, &p, None).await?;
            }
            done(|_, _| Ok(crate::jobs::Outcome::Done))
        })
    }
}

/// `refund.execute`.
pub struct ExecuteRefund(pub Context);

impl Handler for ExecuteRefund {
    fn run(&self, job: Job) -> HandlerFuture {
        let ctx = self.0.clone();
        Box::pin(async move {
            let tenant = TenantId(job.tenant);
            let (pay_text, refund_text) =
                job.payload.split_once(':').ok_or("bad refund payload")?;
            let pay_id = Id::parse(pay_text, PREFIX).ok_or("bad payment id")?;
            let refund_id = Id::parse(refund_text, REFUND_PREFIX).ok_or("bad refund id")?;
            let payment = {
                let tx = ctx.store.read().map_err(|e| e.to_string())?;
                payment::get(&tx, tenant, pay_id).map_err(|e| e.to_string())?
            };
            let Some(payment) = payment else {
                return done(|_, _| Ok(crate::jobs::Outcome::Done));
            };
            let Some(refund) = payment.refunds.iter().find(|r| r.id == refund_id).cloned() else {
                return done(|_, _| Ok(crate::jobs::Outcome::Done));
            };
            if refund.status != "pending" {
                return done(|_, _| Ok(crate::jobs::Outcome::Done));
            }
            let Some(provider_payment) = payment.provider_id.clone() else {
                return Err("the payment has no provider id to refund".into());
            };
            let answer = ctx
                .psp
                .refund(RefundRequest {
                    idempotency_key: refund.psp_key.clone(),
                    provider_payment,
                    amount_minor: refund.amount_minor,
                    refund: refund_id.display(REFUND_PREFIX),
                })
                .await;
            let origin = format!("job:{}", job.id.display(crate::jobs::PREFIX));
            match answer {
                Err(PspError::Retryable(reason)) => Err(reason),
                other => done(move |tx, _| {
                    let result = match other {
                        Ok(r) => match r.status {
                            RefundStatus::Succeeded => RefundOutcome::Succeeded {
                                provider_id: r.provider_id,
                            },
                            RefundStatus::Pending => RefundOutcome::Pending {
                                provider_id: r.provider_id,
                            },
                            RefundStatus::Failed(reason) => RefundOutcome::Failed {
                                provider_id: Some(r.provider_id),
                                reason,
                            },
                        },
                        Err(e) => RefundOutcome::Failed {
                            provider_id: None,
                            reason: e.to_string(),
                        },
                    };
                    payment::apply_refund(
                        tx,
                        tenant,
                        pay_id,
                        refund_id,
                        result,
                        crate::clock::now_ms(),
                        &origin,
                    )?;
                    Ok(crate::jobs::Outcome::Done)
                }),
            }
        })
    }
}

/// `reconciliation.run`.
pub struct RunReconciliation(pub Context);

impl Handler for RunReconciliation {
    fn run(&self, job: Job) -> HandlerFuture {
        let ctx = self.0.clone();
        Box::pin(async move {
            let tenant = TenantId(job.tenant);
            let id = Id::parse(&job.payload, reconcile::PREFIX).ok_or("bad reconciliation id")?;
            let rec = {
                let tx = ctx.store.read().map_err(|e| e.to_string())?;
                reconcile::get(&tx, tenant, id).map_err(|e| e.to_string())?
            };
            let Some(rec) = rec else {
                return done(|_, _| Ok(crate::jobs::Outcome::Done));
            };
            let charges = match fetch_all(ctx.psp.as_ref(), tenant, rec.from_ms, rec.to_ms).await {
                Ok(c) => c,
                Err(PspError::Retryable(reason)) => return Err(reason),
                Err(PspError::Permanent(reason)) => {
                    return done(move |tx, _| {
                        reconcile::fail(tx, tenant, id, reason, crate::clock::now_ms())?;
                        Ok(crate::jobs::Outcome::Done)
                    })
                }
            };
            let dunning = ctx.dunning.clone();
            done(move |tx, _| {
                reconcile::apply(tx, tenant, id, &charges, &dunning, crate::clock::now_ms())?;
                Ok(crate::jobs::Outcome::Done)
            })
        })
    }
}

/// Pages through the provider's charges of a range (at most 100 pages of 100).
pub async fn fetch_all(
    psp: &dyn Psp,
    tenant: TenantId,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<super::psp::ProviderCharge>, PspError> {
    let mut all = Vec::new();
    let mut after = None;
    for _ in 0..100 {
        let page = psp
            .list_charges(
                tenant.0,
                from_ms.div_euclid(1000),
                to_ms.div_euclid(1000) + 1,
                after.clone(),
            )
            .await?;
        after = page.last.clone();
        all.extend(page.data);
        if !page.has_more || after.is_none() {
            break;
        }
    }
    Ok(all)
}
