//! The payment jobs: charging an attempt, refunding, reconciling. Each calls the provider
//! outside any transaction and commits what it learned with the job's completion.

use std::sync::Arc;

use super::payment::{
    self, Dunning, MarkProviderCalled, Outcome, PaymentStatus, PREFIX, REFUND_PREFIX,
};
use super::psp::{ChargeRequest, ChargeStatus, Psp, PspError, RefundRequest};
use super::reconcile;
use crate::billing::invoice::{self, InvoiceStatus};
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
            &redb::WriteTransaction,
            &Job,
        ) -> Result<crate::jobs::Outcome, crate::store::StoreError>
        + Send
        + 'static,
) -> Result<Effect, String> {
    Ok(Box::new(effect))
}

/// `payment.execute`.
pub struct ExecutePayment(pub Context);

impl Handler for ExecutePayment {
    fn run(&self, job: Job) -> HandlerFuture {
        let ctx = self.0.clone();
        Box::pin(async move {
            let tenant = TenantId(job.tenant);
            let id = Id::parse(&job.payload, PREFIX)
                .ok_or_else(|| format!("bad payload {:?}", job.payload))?;
            let (payment, invoice) = {
                let tx = ctx.store.read().map_err(|e| e.to_string())?;
                let p = payment::get(&tx, tenant, id).map_err(|e| e.to_string())?;
                let inv = match &p {
                    Some(p) => invoice::get(&tx, tenant, p.invoice).map_err(|e| e.to_string())?,
                    None => None,
                };
                (p, inv)
            };
            let Some(payment) = payment else {
                return done(|_, _| Ok(crate::jobs::Outcome::Done));
            };
            if !payment.status.is_open() || payment.status == PaymentStatus::RequiresAction {
                return done(|_, _| Ok(crate::jobs::Outcome::Done));
            }
            if invoice
                .as_ref()
                .is_none_or(|i| i.status != InvoiceStatus::Finalized)
            {
                return done(move |tx, _| {
                    payment::cancel(tx, tenant, id, crate::clock::now_ms())?;
                    Ok(crate::jobs::Outcome::Done)
                });
            }
            // Recovery point: from here on, a crash means calling again with the same key.
            ctx.writer
                .submit(MarkProviderCalled {
                    tenant,
                    id,
                    now_ms: crate::clock::now_ms(),
                })
                .await
                .map_err(|e| e.to_string())?;
            let (provider_customer, payment_method) = {
                let tx = ctx.store.read().map_err(|e| e.to_string())?;
                let customer = crate::customers::get(&tx, tenant, payment.customer)
                    .map_err(|e| e.to_string())?;
                let meta = customer.map(|c| c.metadata).unwrap_or_default();
                (
                    meta.get("psp_customer").cloned(),
                    payment
                        .payment_method
                        .clone()
                        .or_else(|| meta.get("psp_payment_method").cloned()),
                )
            };
            let request = ChargeRequest {
                idempotency_key: payment.psp_key.clone(),
                amount_minor: payment.amount_minor,
                currency: payment.currency.clone(),
                provider_customer,
                payment_method,
                payment: id.display(PREFIX),
                invoice: payment.invoice.display(invoice::PREFIX),
            };
            let answer = ctx.psp.charge(request).await;
            let dunning = ctx.dunning.clone();
            let origin = format!("job:{}", job.id.display(crate::jobs::PREFIX));
            done(move |tx, _| {
                let now = crate::clock::now_ms();
                let (outcome, retry) = match answer {
                    Ok(result) => {
                        let provider_id = result.provider_id;
                        let outcome = match result.status {
                            ChargeStatus::Succeeded => Outcome::Succeeded { provider_id },
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
                };
                payment::apply_outcome(tx, tenant, id, outcome, &dunning, now, &origin)?;
                Ok(match retry {
                    Some(reason) => crate::jobs::Outcome::Retry(reason),
                    None => crate::jobs::Outcome::Done,
                })
            })
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
                        Ok(r) if r.succeeded => Ok(r.provider_id),
                        Ok(_) => Err("the provider did not complete the refund".to_string()),
                        Err(e) => Err(e.to_string()),
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
            let charges = match fetch_all(ctx.psp.as_ref(), rec.from_ms, rec.to_ms).await {
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
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<super::psp::ProviderCharge>, PspError> {
    let mut all = Vec::new();
    let mut after = None;
    for _ in 0..100 {
        let page = psp
            .list_charges(
                from_ms.div_euclid(1000),
                to_ms.div_euclid(1000) + 1,
                after.clone(),
            )
            .await?;
        after = page.data.last().map(|c| c.provider_id.clone());
        all.extend(page.data);
        if !page.has_more || after.is_none() {
            break;
        }
    }
    Ok(all)
}
