//! The named steps the scheduler interleaves, each through the real command layer, and the
//! profiles that weight them (and the provider's faults) towards one kind of trouble.

use crate::store::ReadableTable;

use rust_decimal::Decimal;
use serde_json::json;

use super::profile::Profile;
use super::world::{Violation, World, T0_MS};
use crate::billing::customer_update::UpdateCustomer;
use crate::billing::invoice::{Invoice, InvoiceStatus};
use crate::billing::period::{Interval, DAY_MS};
use crate::billing::plan::{Charge, CreatePlan, FeeTiming, FixedFee, Plan};
use crate::billing::pricing::Model;
use crate::billing::run::{BillingRun, Policy};
use crate::billing::subscription::{CreateSubscription, Subscription};
use crate::customers::{Changes, CreateCustomer, Customer};
use crate::decimal::Stored;
use crate::id::Id;
use crate::idempotency::{Idempotent, Outcome, StoredResponse};
use crate::ingest::event::{IngestBatch, Status};
use crate::ingest::meter::{Aggregation, CreateMeter, Meter};
use crate::ingest::parse::{parse_body, Context, Format};
use crate::ledger::grant::{Category, CreateGrant, Funding, Grant, GrantStatus};
use crate::payments::payment::{self, Pay, Payment, PaymentStatus, RequestRefund};
use crate::payments::void::VoidInvoice;
use crate::store::{codec, keys, tables};

/// Billing policy of the simulated tenant: daily periods close at once, every invoice with an
/// amount due is collected through the provider.
pub const POLICY: Policy = Policy {
    trial_notice_ms: 3 * 86_400_000,
    chunk_periods: 500,
    grace_ms: 0,
    auto_collect: Some("stripe"),
    adjust_window_ms: 35 * DAY_MS,
};

/// The threshold of the simulated plans (a few dollars of usage in a day).
const PROGRESSIVE_THRESHOLD_MINOR: i64 = 300;

/// Values at the edge of the exact decimal range (28 significant digits).
const EXTREME_VALUES: [&str; 5] = [
    "79228162514264337593543950335",
    "-79228162514264337593543950335",
    "50000000000000000000000000000",
    "7922816251426433759354395033.5",
    "0.0000000000000000000000000001",
];

/// One kind of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Usage now, in order.
    Ingest,
    /// Usage for a period that may already be invoiced.
    IngestLate,
    /// Events sent before, sent again.
    IngestDuplicate,
    /// Usage with values at the edge of the decimal range.
    IngestExtreme,
    /// A billing run as of now.
    BillingRun,
    /// `pay` on a finalized invoice (sometimes retried with its key).
    Pay,
    /// `void` on a finalized invoice.
    Void,
    /// A credit grant.
    Credit,
    /// A refund of part of a succeeded payment (sometimes two at once).
    Refund,
    /// The earliest due job runs.
    RunJob,
    /// The earliest due job runs and the process dies before its completion commits.
    RunJobCrash,
    /// A webhook from the provider's outbox arrives (any of them: delayed, reordered), now
    /// and then delivered twice.
    Deliver,
    /// The customer completes or abandons a charge that needs them.
    CustomerActs,
    /// A processing charge settles at the provider.
    ProviderSettles,
    /// A charge outside Tally names an open Tally payment with another amount or currency.
    ForeignCharge,
    /// A reconciliation is requested (its job runs later).
    Reconcile,
    /// Time passes.
    AdvanceTime,
    /// The process dies at a step boundary and restarts.
    Crash,
    /// Everything in flight comes to rest; the balance invariants are checked.
    Settle,
    /// A customer updates its details (sometimes to what they already are, sometimes its
    /// locked currency), now and then retried with its key.
    UpdateCustomer,
    /// A subscription changes plan (now or at period end, any proration), now and then
    /// retried with its key; a scheduled change is sometimes canceled instead.
    ChangePlan,
    /// A coupon is created and redeemed (some redemptions replayed).
    Coupon,
    /// A credit note on a finalized or paid invoice (sometimes refunding, sometimes too much).
    CreditNote,
    /// A customer buys (or is given) prepaid credit; now and then an amount that must be
    /// refused.
    TopUp,
    /// A customer's auto-recharge rule is set or switched off.
    AutoRecharge,
    /// Progressive billing evaluates a customer as a usage touch would (an interim invoice when
    /// its running period's usage reached the plan's threshold).
    Progressive,
    /// An alert is created (usage or balance), or both customers' usage is touched and every
    /// crossed usage threshold must have its firing.
    Alert,
    /// Entitlements change: the plans', an override, or a grant (some replayed).
    Entitlements,
    /// An API key is created (some read-only) or revoked (sometimes by another tenant).
    ApiKeys,
    /// A meter is created over the events stored so far (its backfill continues in job steps).
    NewMeter,
}

/// Every kind, in the order of a profile's weights.
pub const KINDS: [Kind; 30] = [
    Kind::Ingest,
    Kind::IngestLate,
    Kind::IngestDuplicate,
    Kind::IngestExtreme,
    Kind::BillingRun,
    Kind::Pay,
    Kind::Void,
    Kind::Credit,
    Kind::Refund,
    Kind::RunJob,
    Kind::RunJobCrash,
    Kind::Deliver,
    Kind::CustomerActs,
    Kind::ProviderSettles,
    Kind::ForeignCharge,
    Kind::Reconcile,
    Kind::AdvanceTime,
    Kind::Crash,
    Kind::Settle,
    Kind::UpdateCustomer,
    Kind::ChangePlan,
    Kind::Coupon,
    Kind::CreditNote,
    Kind::TopUp,
    Kind::AutoRecharge,
    Kind::Progressive,
    Kind::Alert,
    Kind::Entitlements,
    Kind::ApiKeys,
    Kind::NewMeter,
];

/// Creates the tenant's meters, plan, customers and subscriptions (customers through an
/// idempotency key, retried once).
pub fn setup(world: &mut World, profile: &Profile) -> Result<(), Violation> {
    let meter = |key: &str, aggregation: Aggregation, property: Option<&str>| Meter {
        id: Id::generate_at(T0_MS),
        key: key.into(),
        name: None,
        event_type: "call".into(),
        aggregation,
        value_property: property.map(str::to_string),
        unique_property: None,
        created_at_ms: T0_MS,
        backfilled_events: 0,
        backfill_skipped_events: 0,
    };
    let calls = meter("calls", Aggregation::Count, None);
    let tokens = meter("tokens", Aggregation::Sum, Some("tokens"));
    for m in [&calls, &tokens] {
        world
            .submit(CreateMeter {
                tenant: world.tenant,
                meter: m.clone(),
                chunk_events: crate::ingest::backfill::DEFAULT_CHUNK_EVENTS,
            })?
            .map_err(|e| e.to_string())?;
    }
    let decimal = |text: &str| Stored(crate::decimal::parse(text).unwrap_or(Decimal::ZERO));
    let plan = Plan {
        id: Id::generate_at(T0_MS),
        code: "daily".into(),
        name: "Daily".into(),
        currency: "USD".into(),
        interval: Interval::Day,
        interval_count: 1,
        fixed_fee: Some(FixedFee {
            amount_minor: 1000,
            timing: FeeTiming::InArrears,
        }),
        charges: vec![
            Charge {
                meter: calls.id,
                model: Model::PerUnit {
                    unit_price: decimal(profile.call_price),
                },
                free_units: decimal("0"),
            },
            Charge {
                meter: tokens.id,
                model: Model::Package {
                    package_size: decimal("0.5"),
                    unit_price: decimal(profile.call_price),
                },
                free_units: decimal("10"),
            },
        ],
        created_at_ms: T0_MS,
        bill_usage_in_trial: false,
        // Progressive billing: interim invoices meet voids, payments, credit notes, changes.
        threshold_minor: Some(PROGRESSIVE_THRESHOLD_MINOR),
        minimum_minor: None,
        version: 1,
        previous_version: None,
    };
    let plan_id = plan.id;
    // A second plan to change to: its fee in advance, usage at twice the price.
    let double = |text: &str| Stored(decimal(text).0 * Decimal::TWO);
    let pro = Plan {
        id: Id::generate_at(T0_MS),
        code: "daily-pro".into(),
        name: "Daily pro".into(),
        fixed_fee: Some(FixedFee {
            amount_minor: 3000,
            timing: FeeTiming::InAdvance,
        }),
        charges: plan
            .charges
            .iter()
            .map(|c| Charge {
                meter: c.meter,
                model: match &c.model {
                    Model::PerUnit { .. } => Model::PerUnit {
                        unit_price: double(profile.call_price),
                    },
                    other => other.clone(),
                },
                free_units: c.free_units,
            })
            .collect(),
        ..plan.clone()
    };
    world.model.plans = vec![plan.id, pro.id];
    for plan in [plan, pro] {
        world
            .submit(CreatePlan {
                tenant: world.tenant,
                plan,
            })?
            .map_err(|e| e.to_string())?;
    }
    let tax_rates = super::taxes::rates(world, T0_MS)?;
    for (external, rate) in ["alice", "bob"].into_iter().zip(tax_rates) {
        let customer = Customer {
            tax_rates: vec![rate],
            ..Customer::new(Id::generate_at(T0_MS), external.into(), "USD".into(), T0_MS)
        };
        let key = format!("customer-{external}");
        let mut acked = None;
        // Created, then retried as after a lost reply: one customer either way.
        for _ in 0..2 {
            let outcome = world.submit_keyed(Idempotent {
                tenant: world.tenant,
                key: key.clone(),
                fingerprint: *blake3::hash(key.as_bytes()).as_bytes(),
                now_ms: world.now(),
                retention_ms: 86_400_000,
                inner: CreateCustomer {
                    tenant: world.tenant,
                    customer: customer.clone(),
                },
                render: render_customer,
            })?;
            let id = response_id(&outcome, crate::customers::PREFIX)?;
            if acked.is_some_and(|a| a != id) {
                return Err("a retried customer create answered with another customer".into());
            }
            acked = Some(id);
        }
        let id = acked.ok_or("no customer acknowledged")?;
        world.model.customers.push(id);
        let (sub, _) = world
            .submit(CreateSubscription {
                tenant: world.tenant,
                subscription: Subscription::new(
                    Id::generate_at(T0_MS),
                    id,
                    plan_id,
                    T0_MS,
                    T0_MS,
                    T0_MS,
                ),
            })?
            .map_err(|e| e.to_string())?;
        world.model.subscriptions.push(sub.id);
    }
    Ok(())
}

fn stored(text: String) -> StoredResponse {
    StoredResponse {
        status: 200,
        content_type: "text/plain".into(),
        body: text.into_bytes(),
    }
}

fn render_customer(output: &Result<Customer, crate::customers::CustomerError>) -> StoredResponse {
    stored(match output {
        Ok(c) => c.id.display(crate::customers::PREFIX),
        Err(e) => format!("error: {e}"),
    })
}

fn render_payment(output: &Result<Payment, payment::PayError>) -> StoredResponse {
    stored(match output {
        Ok(p) => match p.refunds.last() {
            Some(r) => format!(
                "{} {}",
                p.id.display(payment::PREFIX),
                r.id.display(payment::REFUND_PREFIX)
            ),
            None => p.id.display(payment::PREFIX),
        },
        Err(e) => format!("error: {e}"),
    })
}

/// The ids a stored response names (`None` when it is a business refusal).
fn response_ids(outcome: &Outcome) -> Result<Option<Vec<String>>, Violation> {
    let response = match outcome {
        Outcome::Executed(r) | Outcome::Replayed(r) => r,
        Outcome::Mismatch => {
            return Err("an idempotency key retried with its request mismatched".into())
        }
    };
    let text = String::from_utf8_lossy(&response.body).to_string();
    if text.starts_with("error: ") {
        return Ok(None);
    }
    Ok(Some(text.split(' ').map(str::to_string).collect()))
}

fn response_id(outcome: &Outcome, prefix: &str) -> Result<Id, Violation> {
    response_ids(outcome)?
        .and_then(|ids| ids.first().and_then(|t| Id::parse(t, prefix)))
        .ok_or_else(|| format!("the response names no {prefix} id"))
}

/// Applies one step; `note` says what it resolved to (which invoice, which webhook…).
pub fn apply(world: &mut World, kind: Kind, note: &mut String) -> Result<(), Violation> {
    match kind {
        Kind::Ingest => ingest(world, note, Timing::Now),
        Kind::IngestLate => ingest(world, note, Timing::Late),
        Kind::IngestExtreme => ingest(world, note, Timing::Extreme),
        Kind::IngestDuplicate => ingest_duplicate(world, note),
        Kind::BillingRun => billing_run(world, note),
        Kind::Pay => pay(world, note),
        Kind::Void => void(world, note),
        Kind::Credit => credit(world, note),
        Kind::Refund => refund(world, note),
        Kind::RunJob | Kind::RunJobCrash => {
            let ran = world.run_job(kind == Kind::RunJobCrash)?;
            note.push_str(ran.as_deref().unwrap_or("nothing due"));
            Ok(())
        }
        Kind::Deliver => {
            let len = world.provider.outbox_len();
            let Some(index) = world.rng.pick(len) else {
                note.push_str("outbox empty");
                return Ok(());
            };
            let again = world.rng.chance(15);
            let delivered = world.deliver(index, again)?;
            note.push_str(&format!(
                "#{index} of {len}{}: {}",
                if again {
                    " (kept for a second delivery)"
                } else {
                    ""
                },
                delivered.unwrap_or_default()
            ));
            Ok(())
        }
        Kind::CustomerActs => {
            let acted = world.provider.customer_acts(&mut world.rng);
            note.push_str(acted.as_deref().unwrap_or("nobody waiting"));
            Ok(())
        }
        Kind::ProviderSettles => {
            let settled = world.provider.settle_processing(&mut world.rng);
            note.push_str(settled.as_deref().unwrap_or("nothing processing"));
            Ok(())
        }
        Kind::ForeignCharge => foreign_charge(world, note),
        Kind::Coupon => super::coupons::redeem(world, note),
        Kind::CreditNote => super::credit_notes::create(world, note),
        Kind::TopUp => super::wallet::top_up(world, note),
        Kind::AutoRecharge => super::wallet::auto_recharge(world, note),
        Kind::Progressive => super::progressive::evaluate(world, note),
        Kind::Alert => super::alerts::step(world, note),
        Kind::Entitlements => super::entitlements::step(world, note),
        Kind::ApiKeys => super::api_keys::step(world, note),
        Kind::NewMeter => super::meters::step(world, note),
        Kind::Reconcile => {
            let now = world.now();
            let rec = crate::payments::reconcile::Reconciliation {
                id: Id::generate_at(now),
                tenant: world.tenant.0,
                from_ms: T0_MS - DAY_MS,
                to_ms: now + 1,
                status: "pending".into(),
                created_at_ms: now,
                completed_at_ms: None,
                report: None,
                failure: None,
            };
            let started = world.submit(crate::payments::reconcile::Start {
                reconciliation: rec,
            })?;
            note.push_str(&started.id.display(crate::payments::reconcile::PREFIX));
            Ok(())
        }
        Kind::AdvanceTime => {
            let step = world.rng.range_i64(60_000, 6 * 3_600_000);
            world.set_now(world.now() + step);
            note.push_str(&format!(
                "+{} min → {}",
                step / 60_000,
                crate::clock::rfc3339(world.now())
            ));
            Ok(())
        }
        Kind::Crash => {
            let crashed = world.crash()?;
            if world.node_count() > 1 {
                note.push_str(&crashed);
            }
            Ok(())
        }
        Kind::Settle => {
            let done = world.settle()?;
            note.push_str(&done);
            Ok(())
        }
        Kind::UpdateCustomer => update_customer(world, note),
        Kind::ChangePlan => change_plan(world, note),
    }
}

fn render_changed(
    output: &Result<
        crate::billing::change::Changed,
        crate::billing::subscription::SubscriptionError,
    >,
) -> StoredResponse {
    stored(match output {
        Ok(c) => std::iter::once(
            c.subscription
                .id
                .display(crate::billing::subscription::PREFIX),
        )
        .chain(
            c.invoices
                .iter()
                .map(|i| i.display(crate::billing::invoice::PREFIX)),
        )
        .collect::<Vec<_>>()
        .join(" "),
        Err(e) => format!("error: {e}"),
    })
}

/// Moves a subscription to the other plan, or cancels its scheduled change.
fn change_plan(world: &mut World, note: &mut String) -> Result<(), Violation> {
    use crate::billing::change::{
        CancelScheduledChange, ChangeRequest, ChangeSubscription, Effective,
    };
    use crate::billing::phase::Proration;
    let Some(s) = world.rng.pick(world.model.subscriptions.len()) else {
        return Ok(());
    };
    let id = world.model.subscriptions[s];
    let now = world.now();
    let current = {
        let tx = world.read()?;
        crate::billing::subscription::get(&tx, world.tenant, id)
            .map_err(|e| e.to_string())?
            .ok_or("a subscription is missing")?
    };
    if current.scheduled_change(now).is_some() && world.rng.chance(50) {
        let done = world.submit(CancelScheduledChange {
            tenant: world.tenant,
            id,
            now_ms: now,
        })?;
        note.push_str(&format!("cancel the scheduled change → {}", done.is_ok()));
        return Ok(());
    }
    let plan = *world
        .model
        .plans
        .iter()
        .find(|p| **p != current.plan_at(now))
        .ok_or("no other plan")?;
    let effective = if world.rng.chance(30) {
        Effective::PeriodEnd
    } else {
        Effective::Now
    };
    let proration = [Proration::Prorate, Proration::None, Proration::InvoiceNow]
        [world.rng.pick(3).unwrap_or(0)];
    note.push_str(&format!(
        "{} → {} {:?} {}",
        id.display(crate::billing::subscription::PREFIX),
        plan.display(crate::billing::plan::PREFIX),
        effective,
        proration.as_str()
    ));
    let key = next_key(world, "change");
    let change = Id::generate_at(now);
    let tries = if world.rng.chance(30) { 2 } else { 1 };
    let mut acked: Option<Option<Vec<String>>> = None;
    for _ in 0..tries {
        let outcome = world.submit_keyed(Idempotent {
            tenant: world.tenant,
            key: key.clone(),
            fingerprint: *blake3::hash(key.as_bytes()).as_bytes(),
            now_ms: world.now(),
            retention_ms: DAY_MS,
            inner: ChangeSubscription {
                tenant: world.tenant,
                id,
                request: ChangeRequest {
                    plan,
                    effective,
                    proration,
                    change,
                    now_ms: now,
                },
                policy: POLICY,
                origin: format!("sim:change {key}"),
            },
            render: render_changed,
        })?;
        let ids = response_ids(&outcome)?;
        if acked.as_ref().is_some_and(|a| *a != ids) {
            return Err("a retried plan change answered differently".into());
        }
        acked = Some(ids);
    }
    match acked.flatten() {
        Some(words) => {
            for word in words.iter().skip(1) {
                let invoice = Id::parse(word, crate::billing::invoice::PREFIX)
                    .ok_or("a plan change named a malformed invoice")?;
                world.model.invoices.insert(invoice);
            }
            note.push_str(&format!(" → changed, {} invoices", words.len() - 1));
        }
        None => note.push_str(" → refused"),
    }
    Ok(())
}

fn render_updated(output: &Result<Customer, crate::customers::CustomerError>) -> StoredResponse {
    stored(match output {
        Ok(c) => format!("{} v{}", c.id.display(crate::customers::PREFIX), c.version),
        Err(e) => format!("error: {e}"),
    })
}

/// One change a customer makes, and its description: a name or locale from a small set (so
/// some updates change nothing), or a currency change its active subscription refuses.
fn customer_changes(world: &mut World) -> (Changes, String) {
    const NAMES: [&str; 2] = ["Alice Ltd", "Bob GmbH"];
    const LOCALES: [Option<&str>; 2] = [Some("de-DE"), None];
    let mut changes = Changes::default();
    let text = |t: Option<&str>| t.unwrap_or("null").to_string();
    let said = match world.rng.below(4) {
        0 => {
            let name = NAMES[world.rng.pick(2).unwrap_or(0)];
            changes.name = Some(Some(name.into()));
            format!("name={name}")
        }
        1 => {
            let locale = LOCALES[world.rng.pick(2).unwrap_or(0)];
            changes.locale = Some(locale.map(str::to_string));
            format!("locale={}", text(locale))
        }
        2 => {
            let name = NAMES[world.rng.pick(2).unwrap_or(0)];
            changes.legal_name = Some(Some(name.into()));
            changes.tax_ids = Some(vec![crate::customers::TaxId {
                kind: "eu_vat".into(),
                value: "DE123456789".into(),
            }]);
            format!("legal_name={name} tax_ids=[eu_vat]")
        }
        _ => {
            changes.currency = Some("EUR".into());
            "currency=EUR".into()
        }
    };
    (changes, said)
}

fn update_customer(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let Some(c) = world.rng.pick(world.model.customers.len()) else {
        note.push_str("no customer");
        return Ok(());
    };
    let id = world.model.customers[c];
    let (changes, said) = customer_changes(world);
    note.push_str(&format!("{} {said}", id.display(crate::customers::PREFIX)));
    let key = next_key(world, "customer-update");
    let tries = if world.rng.chance(30) { 2 } else { 1 };
    let mut acked: Option<Option<Vec<String>>> = None;
    for _ in 0..tries {
        let outcome = world.submit_keyed(Idempotent {
            tenant: world.tenant,
            key: key.clone(),
            fingerprint: *blake3::hash(key.as_bytes()).as_bytes(),
            now_ms: world.now(),
            retention_ms: DAY_MS,
            inner: UpdateCustomer {
                tenant: world.tenant,
                id,
                changes: changes.clone(),
                now_ms: world.now(),
            },
            render: render_updated,
        })?;
        let ids = response_ids(&outcome)?;
        if acked.as_ref().is_some_and(|a| *a != ids) {
            return Err("a retried customer update answered differently".into());
        }
        acked = Some(ids);
    }
    let version = match acked.flatten() {
        Some(words) => words
            .get(1)
            .and_then(|v| v.strip_prefix('v'))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("a customer update named no version")?,
        None => {
            note.push_str(" → refused");
            return Ok(());
        }
    };
    let known = world.model.customer_versions.entry(id).or_insert(1);
    if version < *known || version > *known + 1 {
        return Err(format!(
            "customer update answered version {version} after version {known}"
        ));
    }
    *known = version;
    note.push_str(&format!(" → v{version}"));
    if tries == 2 {
        note.push_str(" (retried with its key)");
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Timing {
    Now,
    Late,
    Extreme,
}

fn ingest(world: &mut World, note: &mut String, timing: Timing) -> Result<(), Violation> {
    let now = world.now();
    let Some(c) = world.rng.pick(world.model.customers.len()) else {
        return Ok(());
    };
    let external = ["alice", "bob"][c % 2];
    let count = world.rng.range_i64(1, 4);
    let mut events = Vec::new();
    for _ in 0..count {
        world.model.next_event += 1;
        let id = format!("e{}", world.model.next_event);
        let timestamp = match timing {
            Timing::Late => now - world.rng.range_i64(3_600_000, 3 * DAY_MS),
            _ => now - world.rng.range_i64(0, 1_800_000),
        };
        let tokens = match timing {
            Timing::Extreme => {
                let i = world.rng.pick(EXTREME_VALUES.len()).unwrap_or(0);
                json!(EXTREME_VALUES[i])
            }
            _ => json!(world.rng.range_i64(1, 40)),
        };
        let model = ["small-1", "large-2", "medium-3"][(world.model.next_event % 3) as usize];
        events.push(json!({
            "id": id, "source": "sim", "customer": external, "type": "call",
            "timestamp": crate::clock::rfc3339(timestamp.max(T0_MS)),
            // The same keys every time, as real events carry: after the type's first events
            // the properties are stored compressed against its dictionary.
            "properties": {
                "tokens": tokens,
                "model": model,
                "request": format!("req-{}-{}", world.model.next_event, external),
            },
        }));
    }
    note.push_str(&format!("{count} events for {external}"));
    send_events(world, events, note)
}

fn ingest_duplicate(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let known: Vec<serde_json::Value> = world
        .model
        .events
        .values()
        .map(|(_, b)| b.clone())
        .collect();
    let mut events = Vec::new();
    for _ in 0..world.rng.range_i64(1, 3) {
        if let Some(i) = world.rng.pick(known.len()) {
            events.push(known[i].clone());
        }
    }
    if events.is_empty() {
        note.push_str("nothing sent yet");
        return Ok(());
    }
    note.push_str(&format!("{} events again", events.len()));
    send_events(world, events, note)
}

pub(super) fn send_events(
    world: &mut World,
    events: Vec<serde_json::Value>,
    note: &mut String,
) -> Result<(), Violation> {
    // What a node's HTTP handler submits: the body parsed on arrival (fresh event ids).
    let receive = |world: &World| {
        let config = crate::config::IngestConfig::default();
        let ctx = Context {
            tenant: world.tenant,
            now_ms: world.now(),
            config: &config,
        };
        let parsed = parse_body(json!({ "events": events.clone() }), Format::Native, &ctx)
            .map_err(|e| format!("the simulation sent a malformed batch: {e:?}"))?;
        Ok::<_, Violation>(IngestBatch {
            tenant: world.tenant,
            events: parsed,
            now_ms: world.now(),
            idempotency_key: None,
        })
    };
    let answered: Vec<(serde_json::Value, Status)> = match world.races() {
        // A client's retry reaches the other node while the first send is being stored: each
        // event is accepted by one node at most and a duplicate on every other.
        true => {
            note.push_str(" (sent to every node at once)");
            let batches = (0..world.node_count())
                .map(|_| receive(world))
                .collect::<Result<Vec<_>, _>>()?;
            let mut answered: Vec<_> = world
                .race_each(batches)?
                .into_iter()
                .flat_map(|statuses| events.iter().cloned().zip(statuses))
                .collect();
            answered.sort_by_key(|(_, status)| !matches!(status, Status::Accepted { .. }));
            answered
        }
        false => {
            let batch = receive(world)?;
            events.iter().cloned().zip(world.submit(batch)?).collect()
        }
    };
    let (mut accepted, mut duplicates, mut rejected) = (0, 0, 0);
    for (body, status) in answered {
        let client = body["id"].as_str().unwrap_or_default().to_string();
        match status {
            Status::Accepted { id, .. } => {
                accepted += 1;
                if world.model.events.contains_key(&client) {
                    return Err(format!("event {client} was acknowledged twice as new"));
                }
                world.model.events.insert(client, (id, body));
            }
            Status::Duplicate { id, .. } | Status::Conflict { id, .. } => {
                duplicates += 1;
                match world.model.events.get(&client) {
                    Some((known, _)) if *known == id => {
                        *world.model.anomalies.entry(id).or_insert(0) += 1;
                    }
                    Some(_) => return Err(format!("event {client} answered with another id")),
                    None => {
                        return Err(format!(
                            "event {client} is a duplicate of nothing acknowledged"
                        ))
                    }
                }
            }
            Status::Rejected(_) => rejected += 1,
        }
    }
    note.push_str(&format!(
        " → {accepted} accepted, {duplicates} duplicates, {rejected} rejected"
    ));
    Ok(())
}

fn billing_run(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let now = world.now();
    note.push_str(&format!("as of {}: ", crate::clock::rfc3339(now)));
    let run = |world: &World| BillingRun {
        tenant: world.tenant,
        id: Id::generate_at(now),
        as_of_ms: now,
        now_ms: now,
        policy: POLICY,
        trigger: "api".into(),
        origin: "sim".into(),
    };
    // With several nodes, now and then every node's scheduler runs billing at the same moment.
    let runs = match world.races() {
        true => {
            note.push_str("on every node at once: ");
            let runs = (0..world.node_count()).map(|_| run(world)).collect();
            world.race_each(runs)?
        }
        false => vec![world.submit(run(world))?],
    };
    for run in &runs {
        for closed in &run.closed {
            world.model.invoices.insert(closed.invoice);
        }
    }
    let closed: usize = runs.iter().map(|r| r.closed.len()).sum();
    let skipped: usize = runs
        .iter()
        .flat_map(|r| &r.skipped)
        .filter(|s| !s.reason.starts_with("already invoiced"))
        .count();
    note.push_str(&format!("{closed} invoices, {skipped} skipped"));
    Ok(())
}

/// Every invoice of the tenant.
pub fn invoices(world: &World) -> Result<Vec<Invoice>, Violation> {
    let tx = world.read()?;
    let table = tx.open_table(tables::INVOICES).map_err(|e| e.to_string())?;
    let (start, end) = keys::tenant_range(world.tenant);
    let mut out = Vec::new();
    for entry in table
        .range::<&[u8]>(start.as_slice()..end.as_slice())
        .map_err(|e| e.to_string())?
    {
        let (_, v) = entry.map_err(|e| e.to_string())?;
        out.push(codec::decode(v.value()).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Every payment attempt of the tenant.
pub fn payments(world: &World) -> Result<Vec<Payment>, Violation> {
    let tx = world.read()?;
    let table = tx.open_table(tables::PAYMENTS).map_err(|e| e.to_string())?;
    let (start, end) = keys::tenant_range(world.tenant);
    let mut out = Vec::new();
    for entry in table
        .range::<&[u8]>(start.as_slice()..end.as_slice())
        .map_err(|e| e.to_string())?
    {
        let (_, v) = entry.map_err(|e| e.to_string())?;
        out.push(codec::decode(v.value()).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn finalized(world: &mut World) -> Result<Option<Invoice>, Violation> {
    let open: Vec<Invoice> = invoices(world)?
        .into_iter()
        .filter(|i| i.status == InvoiceStatus::Finalized)
        .collect();
    Ok(world.rng.pick(open.len()).map(|i| open[i].clone()))
}

fn next_key(world: &mut World, what: &str) -> String {
    world.model.next_key += 1;
    format!("{what}-{}", world.model.next_key)
}

fn pay(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let Some(invoice) = finalized(world)? else {
        note.push_str("no finalized invoice");
        return Ok(());
    };
    note.push_str(&invoice.id.display(crate::billing::invoice::PREFIX));
    if world.races() {
        // Two clients pay the same invoice, each with its own key, on two nodes at once.
        let requests = (0..world.node_count())
            .map(|_| {
                let key = next_key(world, "pay");
                pay_request(world, invoice.id, key)
            })
            .collect();
        note.push_str(" by two clients on two nodes at once");
        for outcome in world.race_each(requests)? {
            record_payment(world, response_ids(&outcome)?, note)?;
        }
        return Ok(());
    }
    let key = next_key(world, "pay");
    let tries = if world.rng.chance(30) { 2 } else { 1 };
    let mut acked: Option<Option<Vec<String>>> = None;
    for _ in 0..tries {
        let outcome = world.submit_keyed(pay_request(world, invoice.id, key.clone()))?;
        let ids = response_ids(&outcome)?;
        if acked.as_ref().is_some_and(|a| *a != ids) {
            return Err("a retried pay answered differently".into());
        }
        acked = Some(ids);
    }
    record_payment(world, acked.flatten(), note)?;
    if tries == 2 {
        note.push_str(" (retried with its key)");
    }
    Ok(())
}

/// `pay` on `invoice` under `key`, as the API submits it.
fn pay_request(world: &World, invoice: Id, key: String) -> Idempotent<Pay> {
    Idempotent {
        tenant: world.tenant,
        fingerprint: *blake3::hash(key.as_bytes()).as_bytes(),
        key,
        now_ms: world.now(),
        retention_ms: DAY_MS,
        inner: Pay {
            tenant: world.tenant,
            invoice,
            payment_method: None,
            psp: "stripe".into(),
            now_ms: world.now(),
        },
        render: render_payment,
    }
}

/// Records the payment a `pay` response named (`None`: refused).
fn record_payment(
    world: &mut World,
    ids: Option<Vec<String>>,
    note: &mut String,
) -> Result<(), Violation> {
    match ids {
        Some(ids) => {
            let id = ids
                .first()
                .and_then(|t| Id::parse(t, payment::PREFIX))
                .ok_or("pay named no payment")?;
            world.model.payments.insert(id);
            note.push_str(&format!(" → {}", id.display(payment::PREFIX)));
        }
        None => note.push_str(" → refused"),
    }
    Ok(())
}

fn void(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let Some(invoice) = finalized(world)? else {
        note.push_str("no finalized invoice");
        return Ok(());
    };
    note.push_str(&invoice.id.display(crate::billing::invoice::PREFIX));
    let attempts: Vec<String> = payments(world)?
        .into_iter()
        .filter(|p| p.invoice == invoice.id)
        .map(|p| p.status.as_str().to_string())
        .collect();
    if !attempts.is_empty() {
        note.push_str(&format!(" (attempts: {})", attempts.join(", ")));
    }
    let void = VoidInvoice {
        tenant: world.tenant,
        id: invoice.id,
        now_ms: world.now(),
        origin: "sim".into(),
    };
    let voided = match world.races() {
        // The customer pays on one node while the invoice is voided on the other.
        true => {
            let key = next_key(world, "pay");
            let request = pay_request(world, invoice.id, key);
            let (voided, paid) = world.race_pair((0, void), (1, request))?;
            note.push_str(" while paid on the other node");
            record_payment(world, response_ids(&paid)?, note)?;
            voided
        }
        false => world.submit(void)?,
    };
    match voided {
        Ok(inv) => {
            world.model.voided.insert(inv.id);
            note.push_str(" → void");
        }
        Err(e) => note.push_str(&format!(" → refused: {e}")),
    }
    Ok(())
}

fn credit(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let Some(c) = world.rng.pick(world.model.customers.len()) else {
        return Ok(());
    };
    let now = world.now();
    let amount = world.rng.range_i64(100, 2_000);
    let id = Id::generate_at(now);
    let priority = world.rng.below(3) as u32;
    let expires_at_ms = world.rng.chance(50).then_some(now + 2 * DAY_MS);
    let granted = world.submit(CreateGrant {
        tenant: world.tenant,
        grant: Grant {
            id,
            customer: world.model.customers[c],
            currency: "USD".into(),
            amount_minor: amount,
            category: Category::Promotional,
            funding: Funding::PromotionalExpense,
            priority,
            effective_at_ms: now,
            expires_at_ms,
            created_at_ms: now,
            status: GrantStatus::Active,
            closed_at_ms: None,
            issue_entry: Id::generate_at(now),
            close_entry: None,
        },
        reason: "sim".into(),
        origin: "sim".into(),
    })?;
    match granted {
        Ok(g) => {
            world.model.grants.insert(g.id);
            note.push_str(&format!("{amount} to customer {c}"));
        }
        Err(e) => note.push_str(&format!("refused: {e}")),
    }
    Ok(())
}

fn refund(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let refundable: Vec<Payment> = payments(world)?
        .into_iter()
        .filter(|p| p.status == PaymentStatus::Succeeded && p.refunded_minor() < p.amount_minor)
        .collect();
    let Some(i) = world.rng.pick(refundable.len()) else {
        note.push_str("nothing refundable");
        return Ok(());
    };
    let p = refundable[i].clone();
    note.push_str(&p.id.display(payment::PREFIX));
    let count = if world.rng.chance(50) { 2 } else { 1 };
    for _ in 0..count {
        let left = p.amount_minor - p.refunded_minor();
        let amount = world.rng.range_i64(1, (left / 2).max(1));
        let key = next_key(world, "refund");
        let outcome = world.submit_keyed(Idempotent {
            tenant: world.tenant,
            key: key.clone(),
            fingerprint: *blake3::hash(key.as_bytes()).as_bytes(),
            now_ms: world.now(),
            retention_ms: DAY_MS,
            inner: RequestRefund {
                tenant: world.tenant,
                payment: p.id,
                amount_minor: Some(amount),
                now_ms: world.now(),
            },
            render: render_payment,
        })?;
        match response_ids(&outcome)? {
            Some(ids) => {
                let refund = ids
                    .get(1)
                    .and_then(|t| Id::parse(t, payment::REFUND_PREFIX))
                    .ok_or("the refund response names no refund")?;
                world.model.refunds.insert((p.id, refund));
                note.push_str(&format!(" refund {amount}"));
            }
            None => note.push_str(&format!(" refund {amount} refused")),
        }
    }
    Ok(())
}

fn foreign_charge(world: &mut World, note: &mut String) -> Result<(), Violation> {
    let candidates: Vec<Payment> = payments(world)?
        .into_iter()
        .filter(|p| p.status.is_open() || p.status == PaymentStatus::Failed)
        .collect();
    let Some(i) = world.rng.pick(candidates.len()) else {
        note.push_str("no open payment");
        return Ok(());
    };
    let p = &candidates[i];
    let (amount, currency) = if world.rng.chance(50) {
        (
            world.rng.range_i64(1, p.amount_minor.max(2) - 1),
            p.currency.clone(),
        )
    } else {
        (p.amount_minor, "EUR".to_string())
    };
    let pi = world.provider.foreign_charge(
        world.tenant.0,
        &p.id.display(payment::PREFIX),
        amount,
        &currency,
    );
    note.push_str(&format!(
        "{pi} names {} ({} {}) but collected {amount} {currency}",
        p.id.display(payment::PREFIX),
        p.amount_minor,
        p.currency
    ));
    Ok(())
}
