//! The simulated PSP: a development payment provider inside the daemon, so the walkthrough
//! works offline. It is a simulator and says so everywhere it appears (ids `sim_pi_…`, provider
//! name `simulated`).
//!
//! It keeps its charges in its own table, written in transactions of their own (as a real
//! provider's database is separate from Tally's), and honours idempotency keys like the real
//! one: a repeated key returns the stored result. Outcomes come from the payment method
//! (`sim_decline`, `sim_timeout`, `sim_error`, `sim_requires_action`, anything else succeeds)
//! or, without one, from `payments.simulated.outcome`. `sim_timeout` charges and then loses
//! the reply, like a provider that timed out after the write succeeded.

use std::sync::Arc;

use crate::store::{ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::psp::{
    CancelRequest, CancelResult, ChargePage, ChargeRequest, ChargeResult, ChargeStatus,
    ProviderCharge, Psp, PspError, PspFuture, RefundRequest, RefundResult, RefundStatus,
};
use crate::store::writer::{Command, WriterHandle};
use crate::store::{codec, get_record, put_record, tables, Store, StoreError};

/// How a simulated charge ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SimOutcome {
    /// Collected.
    Succeed,
    /// Card declined.
    Decline,
    /// Collected, but the reply is lost (the caller sees a timeout).
    TimeoutAfterCharge,
    /// The provider fails with a 500 and records nothing.
    Error,
    /// Needs customer action.
    RequiresAction,
}

impl SimOutcome {
    /// Parses the configuration name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "succeed" => SimOutcome::Succeed,
            "decline" => SimOutcome::Decline,
            "timeout_after_charge" => SimOutcome::TimeoutAfterCharge,
            "error" => SimOutcome::Error,
            "requires_action" => SimOutcome::RequiresAction,
            _ => return None,
        })
    }

    fn from_method(method: Option<&str>, default: Self) -> Self {
        match method {
            Some("sim_decline") => SimOutcome::Decline,
            Some("sim_timeout") => SimOutcome::TimeoutAfterCharge,
            Some("sim_error") => SimOutcome::Error,
            Some("sim_requires_action") => SimOutcome::RequiresAction,
            Some(_) => SimOutcome::Succeed,
            None => default,
        }
    }
}

/// A simulated charge as the simulator stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCharge {
    /// `sim_pi_…`.
    pub provider_id: String,
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// succeeded, failed, requires_action.
    pub status: String,
    /// `metadata[tally_payment]`.
    pub payment: String,
    /// Unix seconds.
    pub created_s: i64,
    /// Refunded so far.
    pub refunded_minor: i64,
}

/// The key of a charge in the tenant index: `tenant:{tenant, 20 digits}:{provider id}`, so a
/// tenant's charges are one range, as a real provider filters by metadata.
pub fn tenant_index_key(tenant: u64, provider_id: &str) -> String {
    format!("tenant:{tenant:020}:{provider_id}")
}

/// Records (or finds) a simulated charge under its idempotency key.
#[derive(Clone)]
struct Record {
    key: String,
    tenant: u64,
    charge: SimCharge,
}

impl Command for Record {
    type Output = (SimCharge, bool);

    fn apply(self, tx: &WriteTxn) -> Result<(SimCharge, bool), StoreError> {
        let mut table = tx.open_table(tables::SIM_PSP)?;
        let key = format!("charge:{}", self.key);
        if let Some(existing) = get_record::<SimCharge, _>(&table, key.as_bytes())? {
            return Ok((existing, false));
        }
        put_record(&mut table, key.as_bytes(), &self.charge)?;
        let index = format!("pi:{}", self.charge.provider_id);
        table.insert(index.as_bytes(), key.as_bytes())?;
        let by_tenant = tenant_index_key(self.tenant, &self.charge.provider_id);
        table.insert(by_tenant.as_bytes(), key.as_bytes())?;
        Ok((self.charge, true))
    }
}

/// Cancels a simulated intent that waits for the customer.
#[derive(Clone)]
struct Cancel {
    provider_payment: String,
}

impl Command for Cancel {
    type Output = Option<SimCharge>;

    fn apply(self, tx: &WriteTxn) -> Result<Option<SimCharge>, StoreError> {
        let mut table = tx.open_table(tables::SIM_PSP)?;
        let charge_key = match table.get(format!("pi:{}", self.provider_payment).as_bytes())? {
            Some(v) => v.value().to_vec(),
            None => return Ok(None),
        };
        let Some(mut charge) = get_record::<SimCharge, _>(&table, &charge_key)? else {
            return Ok(None);
        };
        if charge.status == "requires_action" {
            charge.status = "canceled".into();
            put_record(&mut table, &charge_key, &charge)?;
        }
        Ok(Some(charge))
    }
}

/// Records a simulated refund (once per key).
#[derive(Clone)]
struct RecordRefund {
    key: String,
    provider_payment: String,
    amount_minor: i64,
}

impl Command for RecordRefund {
    type Output = Result<String, String>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let mut table = tx.open_table(tables::SIM_PSP)?;
        let refund_key = format!("refund:{}", self.key);
        if let Some(v) = table.get(refund_key.as_bytes())? {
            return Ok(Ok(String::from_utf8_lossy(v.value()).to_string()));
        }
        let charge_key = match table.get(format!("pi:{}", self.provider_payment).as_bytes())? {
            Some(v) => v.value().to_vec(),
            None => return Ok(Err(format!("no such payment {}", self.provider_payment))),
        };
        let Some(mut charge) = get_record::<SimCharge, _>(&table, &charge_key)? else {
            return Ok(Err("charge record missing".into()));
        };
        if charge.status != "succeeded"
            || charge.refunded_minor + self.amount_minor > charge.amount_minor
        {
            return Ok(Err("refund exceeds the charge".into()));
        }
        charge.refunded_minor += self.amount_minor;
        put_record(&mut table, &charge_key, &charge)?;
        let id = format!("sim_re_{}", &self.key[..16.min(self.key.len())]);
        table.insert(refund_key.as_bytes(), id.as_bytes())?;
        Ok(Ok(id))
    }
}

/// Where the simulator writes: through the daemon's writer, or directly (operator commands).
#[derive(Clone)]
pub enum Backend {
    /// Inside the daemon.
    Writer(WriterHandle),
    /// From the command line, with no daemon running.
    Store(Arc<Store>),
}

impl Backend {
    async fn submit<C: Command>(&self, command: C) -> Result<C::Output, PspError> {
        match self {
            Backend::Writer(w) => w
                .submit(command)
                .await
                .map_err(|e| PspError::Retryable(format!("simulator storage: {e}"))),
            Backend::Store(s) => s
                .apply_one(command)
                .map_err(|e| PspError::Retryable(format!("simulator storage: {e}"))),
        }
    }
}

/// The simulator.
pub struct Simulated {
    backend: Backend,
    store: Arc<Store>,
    default_outcome: SimOutcome,
}

impl Simulated {
    /// A simulator writing through `backend`, reading from `store`.
    pub fn new(backend: Backend, store: Arc<Store>, default_outcome: SimOutcome) -> Self {
        Self {
            backend,
            store,
            default_outcome,
        }
    }
}

impl Psp for Simulated {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn charge(&self, request: ChargeRequest) -> PspFuture<'_, ChargeResult> {
        Box::pin(async move {
            let outcome =
                SimOutcome::from_method(request.payment_method.as_deref(), self.default_outcome);
            if outcome == SimOutcome::Error {
                return Err(PspError::Retryable("simulated provider error (500)".into()));
            }
            let status = match outcome {
                SimOutcome::Decline => "failed",
                SimOutcome::RequiresAction => "requires_action",
                _ => "succeeded",
            };
            let charge = SimCharge {
                provider_id: format!(
                    "sim_pi_{}",
                    &request.idempotency_key[..24.min(request.idempotency_key.len())]
                ),
                amount_minor: request.amount_minor,
                currency: request.currency.clone(),
                status: status.into(),
                payment: request.payment.clone(),
                created_s: crate::clock::now_ms().div_euclid(1000),
                refunded_minor: 0,
            };
            let (stored, new) = self
                .backend
                .submit(Record {
                    key: request.idempotency_key.clone(),
                    tenant: request.tenant,
                    charge,
                })
                .await?;
            if new && outcome == SimOutcome::TimeoutAfterCharge {
                return Err(PspError::Retryable(
                    "simulated timeout after the charge was made".into(),
                ));
            }
            let status = match stored.status.as_str() {
                "succeeded" => ChargeStatus::Succeeded,
                "requires_action" => ChargeStatus::RequiresAction,
                _ => ChargeStatus::Failed {
                    code: "card_declined".into(),
                    message: "the simulated card was declined".into(),
                },
            };
            Ok(ChargeResult {
                received: (status == ChargeStatus::Succeeded)
                    .then(|| (stored.amount_minor, stored.currency.clone())),
                provider_id: Some(stored.provider_id),
                status,
            })
        })
    }

    fn refund(&self, request: RefundRequest) -> PspFuture<'_, RefundResult> {
        Box::pin(async move {
            let result = self
                .backend
                .submit(RecordRefund {
                    key: request.idempotency_key.clone(),
                    provider_payment: request.provider_payment.clone(),
                    amount_minor: request.amount_minor,
                })
                .await?;
            match result {
                Ok(id) => Ok(RefundResult {
                    provider_id: id,
                    status: RefundStatus::Succeeded,
                }),
                Err(reason) => Err(PspError::Permanent(reason)),
            }
        })
    }

    fn cancel(&self, request: CancelRequest) -> PspFuture<'_, CancelResult> {
        Box::pin(async move {
            let found = self
                .backend
                .submit(Cancel {
                    provider_payment: request.provider_payment.clone(),
                })
                .await?;
            let Some(charge) = found else {
                return Err(PspError::Permanent(format!(
                    "no such payment {}",
                    request.provider_payment
                )));
            };
            Ok(match charge.status.as_str() {
                "canceled" => CancelResult::Canceled,
                "succeeded" => CancelResult::Succeeded {
                    received: Some((charge.amount_minor, charge.currency)),
                },
                _ => CancelResult::Failed,
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
            let tx = self
                .store
                .read()
                .map_err(|e| PspError::Retryable(format!("simulator storage: {e}")))?;
            let table = tx
                .open_table(tables::SIM_PSP)
                .map_err(|e| PspError::Retryable(format!("simulator storage: {e}")))?;
            let mut all = Vec::new();
            let lo = format!("tenant:{tenant:020}:");
            let hi = format!("tenant:{tenant:020};");
            let iter = table
                .range::<&[u8]>(lo.as_bytes()..hi.as_bytes())
                .map_err(|e| PspError::Retryable(format!("simulator storage: {e}")))?;
            for entry in iter {
                let (_, charge_key) = entry.map_err(|e| PspError::Retryable(e.to_string()))?;
                let Some(value) = table
                    .get(charge_key.value())
                    .map_err(|e| PspError::Retryable(e.to_string()))?
                else {
                    continue;
                };
                let charge: SimCharge =
                    codec::decode(value.value()).map_err(|e| PspError::Retryable(e.to_string()))?;
                if charge.created_s >= from_s && charge.created_s < to_s {
                    all.push(ProviderCharge {
                        provider_id: charge.provider_id,
                        amount_minor: charge.amount_minor,
                        currency: charge.currency,
                        status: charge.status,
                        payment: Some(charge.payment),
                        tenant: Some(tenant),
                        created_s: charge.created_s,
                    });
                }
            }
            all.sort_by(|a, b| a.provider_id.cmp(&b.provider_id));
            let start = match starting_after {
                Some(after) => all
                    .iter()
                    .position(|c| c.provider_id == after)
                    .map_or(0, |p| p + 1),
                None => 0,
            };
            let page: Vec<ProviderCharge> = all.iter().skip(start).take(100).cloned().collect();
            Ok(ChargePage {
                has_more: start + page.len() < all.len(),
                last: page.last().map(|c| c.provider_id.clone()),
                data: page,
            })
        })
    }
}
