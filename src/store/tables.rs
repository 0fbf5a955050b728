//! Every redb table Tally uses, declared in one place.
//!
//! Keys are byte strings built by [`super::keys`]: fixed-width big-endian integers, tenant first,
//! so a range scan stays inside one tenant and follows id (time) order. Values are records from
//! [`super::codec`] unless noted.

use super::table::TableDef as TableDefinition;

/// `&str` → bytes: the format marker, schema version and counters.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `meta` key present (value `1`) when every event the database holds has a row for its
/// (tenant, event type) in [`PROPERTY_DICTIONARIES`]: the database was created by a version
/// that writes that row with each type's first event (0.11.0 on). A database upgraded from
/// before, or loaded from one, lacks it: events stored before 0.10.0 have no such row.
pub const META_EVENT_TYPES_RECORDED: &str = "event_types_recorded";
/// tenant id (u64 BE) → tenant record.
pub const TENANTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tenants");
/// tenant name → tenant id (u64 BE).
pub const TENANT_BY_NAME: TableDefinition<&str, &[u8]> = TableDefinition::new("tenant_by_name");
/// blake3 hash of an API key secret → API key record.
pub const API_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("api_keys");
/// API key id (16 bytes) → blake3 hash of its secret, for revocation by id.
pub const API_KEY_IDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("api_key_ids");
/// (tenant, idempotency key) → idempotency record.
pub const IDEMPOTENCY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("idempotency");
/// (expires_at ms, tenant, idempotency key) → (): the purge order.
pub const IDEMPOTENCY_EXPIRY: TableDefinition<&[u8], ()> =
    TableDefinition::new("idempotency_expiry");
/// (tenant, customer id) → customer record.
pub const CUSTOMERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("customers");
/// (tenant, external id) → customer id (16 bytes).
pub const CUSTOMER_BY_EXTERNAL: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("customer_by_external");

/// (tenant, meter id) → meter record.
pub const METERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meters");
/// (tenant, meter key) → meter id.
pub const METER_BY_KEY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meter_by_key");
/// (tenant, type length, event type, meter id) → (): the meters an event type feeds.
pub const METERS_BY_TYPE: TableDefinition<&[u8], ()> = TableDefinition::new("meters_by_type");
/// (tenant, meter id) → a new meter's backfill still in progress (`ingest::backfill`).
pub const METER_BACKFILLS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meter_backfills");
/// (tenant, event id) → event record. Event ids are time-ordered, so inserts append.
pub const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");
/// (tenant, source length, source, client id) → event id: stable identities, kept forever.
/// Keyed by the client's id itself so ids that arrive in order insert next to each other.
pub const EVENT_IDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("event_ids");
/// Schema 1's stable identities, keyed by a hash of the client id; replaced by [`EVENT_IDS`]
/// when a schema 1 database is opened, then deleted.
pub const LEGACY_EVENT_IDENTITIES: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("event_identities");
/// (tenant, window bucket start, derived hash[..16]) → event id: clustered by time.
pub const EVENT_DERIVED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("event_derived");
/// (tenant, event type) → the type's properties dictionary, or the samples gathered for it
/// (`ingest::properties_dictionary`). Never deleted: stored events are read with it.
pub const PROPERTY_DICTIONARIES: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("property_dictionaries");
/// (tenant, customer id, timestamp, event id) → (): events of a customer by usage time.
pub const EVENTS_BY_CUSTOMER: TableDefinition<&[u8], ()> =
    TableDefinition::new("events_by_customer");
/// (tenant, grain `d`/`h`/`m`, bucket start, meter id, customer id) → rollup record: usage per
/// UTC day, hour and minute, time first so one commit's rows share pages (`ingest::usage`).
pub const USAGE_ROLLUPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("usage_rollups");
/// (tenant, grain `d`/`h`, bucket start, meter id, customer id, value hash[..16]) → ():
/// distinct values per day and hour.
pub const USAGE_DISTINCT: TableDefinition<&[u8], ()> = TableDefinition::new("usage_distinct");
/// Schema 4's hourly rollups, keyed (tenant, meter id, customer id, hour); converted into
/// [`USAGE_ROLLUPS`] when a schema 4 database is opened, then deleted.
pub const LEGACY_USAGE_HOURLY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("usage_hourly");
/// Schema 4's minute rollups, keyed (tenant, meter id, customer id, minute); converted into
/// [`USAGE_ROLLUPS`], then deleted.
pub const LEGACY_USAGE_MINUTELY: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("usage_minutely");
/// Schema 4's distinct values, keyed (tenant, meter id, customer id, hour, value hash[..16]);
/// converted into [`USAGE_DISTINCT`], then deleted.
pub const LEGACY_USAGE_UNIQUES: TableDefinition<&[u8], ()> = TableDefinition::new("usage_uniques");
/// (tenant, anomaly id) → a duplicate or conflicting event as received (`ingest::anomaly`);
/// anomaly ids start with the receipt millisecond, so rows sort by receipt time.
pub const EVENT_ANOMALIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("event_anomalies");
/// (tenant, customer id) → i64 BE ms: usage before this instant was already invoiced, so an
/// event for it is `late`.
pub const INVOICED_THROUGH: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("invoiced_through");

/// (tenant, seq) → journal entry: the hash chain in order.
pub const JOURNAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("journal");
/// (tenant, entry id) → seq (u64 BE).
pub const JOURNAL_IDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("journal_ids");
/// (tenant, effective time, seq) → (): the chain prefix at an instant.
pub const JOURNAL_BY_TIME: TableDefinition<&[u8], ()> = TableDefinition::new("journal_by_time");
/// (tenant, customer id, seq) → (): entries concerning a customer.
pub const JOURNAL_BY_CUSTOMER: TableDefinition<&[u8], ()> =
    TableDefinition::new("journal_by_customer");
/// tenant → chain head (last seq, hash, effective time).
pub const LEDGER_HEADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ledger_heads");
/// (tenant, currency, account) → balance record, updated with every posting.
pub const BALANCES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("balances");
/// (tenant, currency, account, seq) → i64 BE: postings per account, for balances at an instant.
pub const POSTINGS_BY_ACCOUNT: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("postings_by_account");
/// (tenant, grant id) → grant record.
pub const GRANTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("grants");
/// (tenant, customer id, grant id) → ().
pub const GRANTS_BY_CUSTOMER: TableDefinition<&[u8], ()> =
    TableDefinition::new("grants_by_customer");
/// (expires_at, tenant, grant id) → (): what the expiry task processes next.
pub const GRANT_EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("grant_expiry");

/// (tenant, plan id) → plan record.
pub const PLANS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("plans");
/// (tenant, plan code) → plan id.
pub const PLAN_BY_CODE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("plan_by_code");
/// (tenant, subscription id) → subscription record.
pub const SUBSCRIPTIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("subscriptions");
/// (tenant, customer id, subscription id) → ().
pub const SUBSCRIPTIONS_BY_CUSTOMER: TableDefinition<&[u8], ()> =
    TableDefinition::new("subscriptions_by_customer");
/// (tenant, invoice id) → invoice record.
pub const INVOICES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("invoices");
/// (tenant, subscription id, period start, period end) → invoice id: the charge key (an
/// interim invoice's ends with a kind tag, so it never answers a lookup of its period's key).
pub const INVOICE_BY_PERIOD: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("invoice_by_period");
/// (tenant, customer id, invoice id) → ().
pub const INVOICES_BY_CUSTOMER: TableDefinition<&[u8], ()> =
    TableDefinition::new("invoices_by_customer");
/// (tenant, subscription id, meter id, period start) → billed quantity record.
pub const BILLED_USAGE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("billed_usage");
/// (tenant, subscription id, voided invoice id) → (): periods freed for one re-issue.
pub const REISSUE_QUEUE: TableDefinition<&[u8], ()> = TableDefinition::new("reissue_queue");
/// (tenant, billing run id) → run record.
pub const BILLING_RUNS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("billing_runs");

/// job id → job record (jobs are global; each names its tenant).
pub const JOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jobs");
/// (due time, job id) → (): pending jobs by due time, leased jobs by lease end.
pub const JOBS_DUE: TableDefinition<&[u8], ()> = TableDefinition::new("jobs_due");
/// (tenant, job id) → (): jobs that exhausted their attempts.
pub const DEAD_LETTERS: TableDefinition<&[u8], ()> = TableDefinition::new("dead_letters");
/// endpoint id → webhook endpoint record (the receiver knows only the id).
pub const WEBHOOK_ENDPOINTS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("webhook_endpoints");
/// (tenant, endpoint id) → ().
pub const WEBHOOK_ENDPOINTS_BY_TENANT: TableDefinition<&[u8], ()> =
    TableDefinition::new("webhook_endpoints_by_tenant");
/// (tenant, endpoint id, provider event identity) → webhook event id: the dedupe record.
pub const WEBHOOK_RECEIPTS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("webhook_receipts");
/// (tenant, webhook event id) → received event record.
pub const WEBHOOK_EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("webhook_events");

/// (tenant, payment id) → payment attempt record.
pub const PAYMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("payments");
/// (tenant, invoice id, attempt u32 BE) → payment id.
pub const PAYMENTS_BY_INVOICE: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("payments_by_invoice");
/// (tenant, provider payment id) → payment id, for provider webhooks.
pub const PAYMENT_BY_PROVIDER: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("payment_by_provider");
/// (tenant, reconciliation id) → reconciliation record.
pub const RECONCILIATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("reconciliations");
/// tenant (u64 BE) → the tenant's seller details and numbering settings.
pub const TENANT_SETTINGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tenant_settings");
/// (tenant, blake3 of the image) → logo record: every logo a tenant ever set, so an issued
/// invoice's seller snapshot (which holds only the hash) can still show its own logo.
pub const LOGOS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("logos");
/// (tenant, sequence kind u8, scope year i32 BE sign-flipped; 0 when the sequence never
/// restarts) → u64 BE: the last number value given out.
pub const NUMBER_SEQUENCES: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("number_sequences");
/// Every number text given out, per tenant: (tenant, text) → (). A format change can make a
/// counter render a text another counter already gave; the next value is taken instead.
pub const NUMBER_TEXTS: TableDefinition<&[u8], ()> = TableDefinition::new("number_texts");
/// The simulated PSP's own records (a stand-in for a provider's database).
pub const SIM_PSP: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sim_psp");

/// (tenant, coupon id) → coupon record (with its redemption count).
pub const COUPONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("coupons");
/// (tenant, coupon code) → coupon id: codes are unique per tenant.
pub const COUPON_BY_CODE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("coupon_by_code");
/// (tenant, discount id) → discount record (a redeemed coupon on a subscription or customer).
pub const DISCOUNTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("discounts");
/// (tenant, subscription or customer id, discount id) → (): the discounts of a target, in
/// redemption order.
pub const DISCOUNTS_BY_TARGET: TableDefinition<&[u8], ()> =
    TableDefinition::new("discounts_by_target");

/// (tenant, tax rate id) → tax rate record (immutable but for its archive time).
pub const TAX_RATES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tax_rates");

/// (tenant, credit note id) → credit note record.
pub const CREDIT_NOTES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("credit_notes");

/// (tenant, alert id) → alert record.
pub const ALERTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("alerts");
/// (tenant, watch kind, meter id or zeros, customer id or zeros for every customer, alert id)
/// → (): the active alerts a touched customer has, in one range read.
pub const ALERT_WATCH: TableDefinition<&[u8], ()> = TableDefinition::new("alert_watch");
/// (tenant, plan id) → (): the plan versions that set a threshold, so progressive billing
/// knows with one read that nothing of a tenant is watched.
pub const THRESHOLD_PLANS: TableDefinition<&[u8], ()> = TableDefinition::new("threshold_plans");
/// (tenant, alert id, firing id) → firing record.
pub const ALERT_FIRINGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("alert_firings");
/// (tenant, alert id, customer id, window start, threshold index) → firing id: at most one
/// firing per threshold and window.
pub const ALERT_FIRING_KEYS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("alert_firing_keys");
/// (tenant, alert id, customer id) → the instant each balance threshold was last armed.
pub const ALERT_STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("alert_state");
/// Entitlements: (tenant, feature id) → feature record.
pub const FEATURES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("features");
/// (tenant, feature key) → feature id.
pub const FEATURE_BY_KEY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("feature_by_key");
/// (tenant, plan id, feature id) → the plan version's entitlement to the feature.
pub const PLAN_ENTITLEMENTS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("plan_entitlements");
/// (tenant, customer id, feature id) → a customer's override of its plans' entitlement.
pub const ENTITLEMENT_OVERRIDES: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("entitlement_overrides");
/// (tenant, customer id, feature id, grant id) → a one-off grant of extra allowance.
pub const ENTITLEMENT_GRANTS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("entitlement_grants");

/// (tenant, minute start) → events first stored in that minute of receipt (u64 big-endian):
/// the ingest rate, read an hour at a time.
pub const INGEST_MINUTES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ingest_minutes");
/// tenant → the last verification of its books and the last one that passed.
pub const VERIFICATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("verifications");

/// Every table keyed and valued by bytes.
pub const BYTES_TABLES: &[TableDefinition<&[u8], &[u8]>] = &[
    PROPERTY_DICTIONARIES,
    INGEST_MINUTES,
    VERIFICATIONS,
    TOP_UPS,
    TOP_UP_BY_INVOICE,
    AUTO_RECHARGE,
    NOTIFICATIONS,
    NOTIFICATION_KEYS,
    EVENT_DESTINATIONS,
    DELIVERIES,
    TENANTS,
    API_KEYS,
    API_KEY_IDS,
    IDEMPOTENCY,
    CUSTOMERS,
    CUSTOMER_BY_EXTERNAL,
    METERS,
    METER_BY_KEY,
    METER_BACKFILLS,
    EVENTS,
    EVENT_IDS,
    EVENT_DERIVED,
    EVENT_ANOMALIES,
    USAGE_ROLLUPS,
    INVOICED_THROUGH,
    JOURNAL,
    JOURNAL_IDS,
    LEDGER_HEADS,
    BALANCES,
    POSTINGS_BY_ACCOUNT,
    GRANTS,
    PLANS,
    PLAN_BY_CODE,
    SUBSCRIPTIONS,
    INVOICES,
    INVOICE_BY_PERIOD,
    BILLED_USAGE,
    BILLING_RUNS,
    JOBS,
    WEBHOOK_ENDPOINTS,
    WEBHOOK_RECEIPTS,
    WEBHOOK_EVENTS,
    PAYMENTS,
    PAYMENTS_BY_INVOICE,
    PAYMENT_BY_PROVIDER,
    RECONCILIATIONS,
    SIM_PSP,
    COUPONS,
    COUPON_BY_CODE,
    DISCOUNTS,
    TENANT_SETTINGS,
    LOGOS,
    NUMBER_SEQUENCES,
    TAX_RATES,
    CREDIT_NOTES,
    ALERTS,
    ALERT_FIRINGS,
    ALERT_FIRING_KEYS,
    ALERT_STATE,
    FEATURES,
    FEATURE_BY_KEY,
    PLAN_ENTITLEMENTS,
    ENTITLEMENT_OVERRIDES,
    ENTITLEMENT_GRANTS,
];

/// Every index table (bytes keys, no value).
pub const SET_TABLES: &[TableDefinition<&[u8], ()>] = &[
    TOP_UPS_BY_CUSTOMER,
    IDEMPOTENCY_EXPIRY,
    METERS_BY_TYPE,
    EVENTS_BY_CUSTOMER,
    USAGE_DISTINCT,
    JOURNAL_BY_TIME,
    JOURNAL_BY_CUSTOMER,
    GRANTS_BY_CUSTOMER,
    GRANT_EXPIRY,
    NUMBER_TEXTS,
    SUBSCRIPTIONS_BY_CUSTOMER,
    INVOICES_BY_CUSTOMER,
    REISSUE_QUEUE,
    JOBS_DUE,
    DEAD_LETTERS,
    WEBHOOK_ENDPOINTS_BY_TENANT,
    DISCOUNTS_BY_TARGET,
    ALERT_WATCH,
    THRESHOLD_PLANS,
];

/// Outbound events: (tenant, ntf id) → notification.
pub const NOTIFICATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("notifications");
/// (tenant, effect hash[..16]) → ntf id: one notification per effect.
pub const NOTIFICATION_KEYS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("notification_keys");
/// (tenant, evd id) → event destination.
pub const EVENT_DESTINATIONS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("event_destinations");
/// (tenant, ntf id, evd id) → delivery and its attempts.
pub const DELIVERIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("deliveries");

/// (tenant, top-up id) → prepaid wallet top-up.
pub const TOP_UPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("top_ups");
/// (tenant, invoice id) → top-up id: the top-up a paid or failed invoice settles.
pub const TOP_UP_BY_INVOICE: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("top_up_by_invoice");
/// (tenant, customer id, top-up id) → (): a customer's top-ups in order.
pub const TOP_UPS_BY_CUSTOMER: TableDefinition<&[u8], ()> =
    TableDefinition::new("top_ups_by_customer");
/// (tenant, customer id) → auto-recharge rule with its state (armed or fired, today's count).
pub const AUTO_RECHARGE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("auto_recharge");

/// Every table keyed by text.
pub const TEXT_TABLES: &[TableDefinition<&str, &[u8]>] = &[META, TENANT_BY_NAME];

/// Opens (creating if needed) every table, so read transactions never meet a missing table.
pub fn create_all(tx: &redb::WriteTransaction) -> Result<(), redb::Error> {
    for t in TEXT_TABLES {
        tx.open_table(t.redb())?;
    }
    for t in BYTES_TABLES {
        tx.open_table(t.redb())?;
    }
    for t in SET_TABLES {
        tx.open_table(t.redb())?;
    }
    Ok(())
}
