//! Alerts: thresholds on a customer's usage or credit balance that fire once, in the very
//! commit of the write that crossed them.
//!
//! An alert names what it watches (a meter's usage in the current billing period, the credits
//! left in a currency) and sorted thresholds. After every write batch the watcher hands the
//! touched customers to [`on_touches`],
//! inside the batch's transaction. Evaluation is state-based: the current value is compared
//! with every threshold, and a threshold that is crossed and has no firing row in the current
//! window gets one (the row's key makes a second impossible). A missed or repeated evaluation
//! can therefore never lose or double a firing; the next touch catches up.

pub mod evaluate;
pub mod firing;
pub mod index;
pub mod window;

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::billing::run::Policy;
use crate::decimal::Stored;
use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix of an alert.
pub const PREFIX: &str = "alr";
/// The most thresholds one alert may have.
pub const MAX_THRESHOLDS: usize = 20;

/// What an alert watches, with the fields that belong to its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertKind {
    /// A meter's usage in the customer's current billing period reaches a threshold.
    UsageExceeded {
        /// The meter.
        meter: Id,
    },
    /// The credits left in a currency fall below a threshold (minor units).
    CreditBalanceBelow {
        /// ISO 4217; `None` watches each customer's own currency.
        currency: Option<String>,
    },
    /// The credits left in a currency reach zero.
    CreditBalanceDepleted {
        /// ISO 4217; `None` watches each customer's own currency.
        currency: Option<String>,
    },
    /// The amount of the customer's current-period draft invoices in a currency (what the
    /// upcoming invoice would bill so far, before tax, `billing::draft`) reaches a threshold
    /// (minor units).
    SpendExceeded {
        /// ISO 4217; `None` watches each customer's own currency.
        currency: Option<String>,
    },
    /// The share of a metered entitlement's allowance (limit plus grants) used in its reset
    /// window reaches a threshold (percent; 100 = exhausted).
    EntitlementExhausted {
        /// The feature.
        feature: Id,
    },
}

impl AlertKind {
    /// The API name of the type.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertKind::UsageExceeded { .. } => "usage_exceeded",
            AlertKind::CreditBalanceBelow { .. } => "credit_balance_below",
            AlertKind::CreditBalanceDepleted { .. } => "credit_balance_depleted",
            AlertKind::SpendExceeded { .. } => "spend_exceeded",
            AlertKind::EntitlementExhausted { .. } => "entitlement_exhausted",
        }
    }

    /// The currency a money alert watches for a customer billed in `customer_currency`.
    pub fn currency_for<'a>(&'a self, customer_currency: &'a str) -> Option<&'a str> {
        match self {
            AlertKind::UsageExceeded { .. } | AlertKind::EntitlementExhausted { .. } => None,
            AlertKind::CreditBalanceBelow { currency }
            | AlertKind::CreditBalanceDepleted { currency }
            | AlertKind::SpendExceeded { currency } => {
                Some(currency.as_deref().unwrap_or(customer_currency))
            }
        }
    }

    /// Whether a balance falling (rather than a usage growing) crosses its thresholds.
    pub fn is_balance(&self) -> bool {
        matches!(
            self,
            AlertKind::CreditBalanceBelow { .. } | AlertKind::CreditBalanceDepleted { .. }
        )
    }

    /// Whether its values are money (minor units) rather than quantities or percentages.
    pub fn is_money(&self) -> bool {
        self.is_balance() || matches!(self, AlertKind::SpendExceeded { .. })
    }
}

/// An alert as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// `alr_…`.
    pub id: Id,
    /// One customer, or `None` for every customer of the tenant.
    pub customer: Option<Id>,
    /// What it watches.
    pub kind: AlertKind,
    /// Ascending, distinct, positive: usage quantities, or minor units for balances
    /// (`credit_balance_depleted` has the one implied threshold 0).
    pub thresholds: Vec<Stored>,
    /// A label for people.
    pub name: Option<String>,
    /// Created.
    pub created_at_ms: i64,
    /// When it stopped firing.
    pub archived_at_ms: Option<i64>,
}

impl Alert {
    /// Whether the value `value` has crossed threshold `threshold`.
    pub fn crossed(&self, value: Decimal, threshold: Decimal) -> bool {
        match self.kind {
            AlertKind::UsageExceeded { .. }
            | AlertKind::SpendExceeded { .. }
            | AlertKind::EntitlementExhausted { .. } => value >= threshold,
            AlertKind::CreditBalanceBelow { .. } => value < threshold,
            AlertKind::CreditBalanceDepleted { .. } => value <= threshold,
        }
    }
}

/// Why an alert command did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// No such alert.
    #[error("no alert with id {0}")]
    Missing(String),
}

/// Creates an alert (the caller checked its fields and references) and evaluates it at once
/// for its customer, so a value already past a threshold fires without waiting for a write.
#[derive(Clone)]
pub struct CreateAlert {
    /// Owner.
    pub tenant: TenantId,
    /// The alert, id and time assigned.
    pub alert: Alert,
    /// How drafts are computed (`spend_exceeded`).
    pub policy: Policy,
}

impl Command for CreateAlert {
    type Output = Alert;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        put_record(
            &mut tx.open_table(tables::ALERTS)?,
            &keys::tenant_id(self.tenant, self.alert.id),
            &self.alert,
        )?;
        index::add(tx, self.tenant, &self.alert)?;
        if let Some(customer) = self.alert.customer {
            evaluate::one_alert(
                tx,
                self.tenant,
                &self.alert,
                customer,
                self.alert.created_at_ms,
                &self.policy,
            )?;
        }
        Ok(self.alert)
    }
}

/// Archives an alert: it stops firing; its firings stay. Archiving twice answers it as it is.
#[derive(Clone)]
pub struct ArchiveAlert {
    /// Owner.
    pub tenant: TenantId,
    /// Which alert.
    pub id: Id,
    /// Now.
    pub now_ms: i64,
}

impl Command for ArchiveAlert {
    type Output = Result<Alert, AlertError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let mut table = tx.open_table(tables::ALERTS)?;
        let key = keys::tenant_id(self.tenant, self.id);
        let Some(mut alert) = get_record::<Alert, _>(&table, key)? else {
            return Ok(Err(AlertError::Missing(self.id.display(PREFIX))));
        };
        if alert.archived_at_ms.is_none() {
            alert.archived_at_ms = Some(self.now_ms);
            put_record(&mut table, &key, &alert)?;
            index::remove(tx, self.tenant, &alert)?;
        }
        Ok(Ok(alert))
    }
}

/// The watcher's entry (`watch::evaluate` calls it): evaluates the alerts of every customer
/// the round touched.
pub fn on_touches(
    tx: &WriteTxn,
    touches: &crate::watch::Touches,
    policy: &Policy,
) -> Result<(), StoreError> {
    evaluate::on_touches(tx, touches, policy)
}

/// One alert from any transaction's table.
pub fn load(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    id: Id,
) -> Result<Option<Alert>, StoreError> {
    get_record(table, keys::tenant_id(tenant, id))
}

/// One alert.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Alert>, StoreError> {
    load(&tx.open_table(tables::ALERTS)?, tenant, id)
}

/// A page of alerts, in creation order.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Alert>, bool), StoreError> {
    let table = tx.open_table(tables::ALERTS)?;
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        Some(id) => {
            let mut k = keys::tenant_id(tenant, id).to_vec();
            k.push(0);
            k
        }
        None => start,
    };
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        let (_, value) = entry?;
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(codec::decode(value.value())?);
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests;
