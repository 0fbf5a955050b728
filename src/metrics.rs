//! The Prometheus recorder: installed once per process, rendered by `GET /metrics`.
//!
//! Every documented series is described and registered at start, so `/metrics` shows it (with
//! `# HELP`) before its first event: alerts on an absent series and `rate()` over a series that
//! appears mid-way both need it there from the first scrape. README's metrics table lists the
//! same [`FAMILIES`].

use metrics::Label;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for batch sizes (commands per commit).
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];
/// Buckets for latencies in seconds, 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// How a family is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution with buckets.
    Histogram,
}

/// One documented metric family and the label values it starts with.
#[derive(Debug)]
pub struct Family {
    /// The series name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Label names, in order.
    pub labels: &'static [&'static str],
    /// Label values registered at start (one entry per series; empty labels: one series).
    pub initial: &'static [&'static [&'static str]],
}

const JOB_OUTCOMES: [&str; 5] = ["done", "retrying", "dead", "stale", "unrecorded"];
const JOB_KINDS: [&str; 4] = [
    crate::webhooks::event::JOB_KIND,
    crate::payments::payment::EXECUTE_JOB,
    crate::payments::payment::REFUND_JOB,
    crate::payments::reconcile::JOB_KIND,
];

/// Every exported family. Label sets that depend on traffic (routes, job kinds) start with the
/// ones every deployment has.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "tally_http_requests_total",
        kind: Kind::Counter,
        help: "HTTP requests answered, by matched route, method and status.",
        labels: &["route", "method", "status"],
        initial: &[&["/metrics", "GET", "200"]],
    },
    Family {
        name: "tally_http_request_seconds",
        kind: Kind::Histogram,
        help: "HTTP request latency in seconds, by matched route.",
        labels: &["route"],
        initial: &[&["/metrics"]],
    },
    Family {
        name: "tally_writer_queue_depth",
        kind: Kind::Gauge,
        help: "Commands waiting for the writer.",
        labels: &[],
        initial: &[&[]],
    },
    Family {
        name: "tally_writer_batch_size",
        kind: Kind::Histogram,
        help: "Commands committed per write transaction.",
        labels: &[],
        initial: &[&[]],
    },
    Family {
        name: "tally_writer_wait_seconds",
        kind: Kind::Histogram,
        help: "Time from a write's arrival at the writer's queue to its commit, in seconds.",
        labels: &[],
        initial: &[&[]],
    },
    Family {
        name: "tally_writer_commit_seconds",
        kind: Kind::Histogram,
        help: "Time to apply and commit one batch, in seconds.",
        labels: &[],
        initial: &[&[]],
    },
    Family {
        name: "tally_writer_commands_total",
        kind: Kind::Counter,
        help: "Commands the writer applied (committed or not).",
        labels: &[],
        initial: &[&[]],
    },
    Family {
        name: "tally_writer_rejected_total",
        kind: Kind::Counter,
        help: "Commands refused before queueing (503 overloaded).",
        labels: &["reason"],
        initial: &[&["overloaded"]],
    },
    Family {
        name: "tally_writer_reopens_total",
        kind: Kind::Counter,
        help: "Database reopens after a storage error.",
        labels: &[],
        initial: &[&[]],
    },
    Family {
        name: "tally_writer_conflicts_total",
        kind: Kind::Counter,
        help: "Batches applied again after a serialization conflict with another node (PostgreSQL).",
        labels: &[],
        initial: &[&[]],
    },
    Family {
        name: "tally_pg_round_trips_total",
        kind: Kind::Counter,
        help: "Round trips to PostgreSQL (statements sent), reads and writes.",
        labels: &[],
        initial: &[&[]],
    },
    Family {
        name: "tally_events_received_total",
        kind: Kind::Counter,
        help: "Usage events received by POST /v1/events, before any check.",
        labels: &[],
        initial: &[&[]],
    },
    Family {
        name: "tally_events_total",
        kind: Kind::Counter,
        help: "Usage event results by outcome.",
        labels: &["outcome"],
        initial: &[&["accepted"], &["duplicate"], &["conflict"], &["rejected"]],
    },
    Family {
        name: "tally_webhooks_received_total",
        kind: Kind::Counter,
        help: "Verified webhook deliveries, new or duplicate.",
        labels: &["outcome"],
        initial: &[&["new"], &["duplicate"]],
    },
    Family {
        name: "tally_webhooks_rejected_total",
        kind: Kind::Counter,
        help: "Webhook deliveries refused by the signature check, by reason.",
        labels: &["reason"],
        initial: &[&["missing"], &["malformed"], &["tolerance"], &["mismatch"]],
    },
    Family {
        name: "tally_jobs_completed_total",
        kind: Kind::Counter,
        help: "Job attempts finished, by kind and outcome.",
        labels: &["kind", "outcome"],
        initial: &[
            &[JOB_KINDS[0], JOB_OUTCOMES[0]],
            &[JOB_KINDS[0], JOB_OUTCOMES[1]],
            &[JOB_KINDS[0], JOB_OUTCOMES[2]],
            &[JOB_KINDS[0], JOB_OUTCOMES[3]],
            &[JOB_KINDS[0], JOB_OUTCOMES[4]],
            &[JOB_KINDS[1], JOB_OUTCOMES[0]],
            &[JOB_KINDS[1], JOB_OUTCOMES[1]],
            &[JOB_KINDS[1], JOB_OUTCOMES[2]],
            &[JOB_KINDS[1], JOB_OUTCOMES[3]],
            &[JOB_KINDS[1], JOB_OUTCOMES[4]],
            &[JOB_KINDS[2], JOB_OUTCOMES[0]],
            &[JOB_KINDS[2], JOB_OUTCOMES[1]],
            &[JOB_KINDS[2], JOB_OUTCOMES[2]],
            &[JOB_KINDS[2], JOB_OUTCOMES[3]],
            &[JOB_KINDS[2], JOB_OUTCOMES[4]],
            &[JOB_KINDS[3], JOB_OUTCOMES[0]],
            &[JOB_KINDS[3], JOB_OUTCOMES[1]],
            &[JOB_KINDS[3], JOB_OUTCOMES[2]],
            &[JOB_KINDS[3], JOB_OUTCOMES[3]],
            &[JOB_KINDS[3], JOB_OUTCOMES[4]],
        ],
    },
    Family {
        name: "tally_credit_grants_expired_total",
        kind: Kind::Counter,
        help: "Credit grants expired with their remainder.",
        labels: &[],
        initial: &[&[]],
    },
    Family {
        name: "tally_notifications_total",
        kind: Kind::Counter,
        help: "Outbound events recorded, by type (one per effect).",
        labels: &["type"],
        initial: &[
            &["customer.created"],
            &["invoice.finalized"],
            &["invoice.paid"],
            &["payment.succeeded"],
        ],
    },
    Family {
        name: "tally_purged_total",
        kind: Kind::Counter,
        help: "Rows removed by the purge task, by what.",
        labels: &["what"],
        initial: &[&["idempotency_keys"], &["derived_identities"]],
    },
    Family {
        name: "tally_deliveries_total",
        kind: Kind::Counter,
        help: "Outbound event delivery attempts, by outcome: delivered, retried (failed, will retry) or failed (the last attempt failed).",
        labels: &["outcome"],
        initial: &[&["delivered"], &["retried"], &["failed"]],
    },
    Family {
        name: "tally_delivery_seconds",
        kind: Kind::Histogram,
        help: "Duration of one outbound event delivery request, in seconds.",
        labels: &[],
        initial: &[&[]],
    },
    Family {
        name: "tally_invoices_issued_total",
        kind: Kind::Counter,
        help: "Invoices issued by billing runs (scheduled and POST /v1/billing-runs).",
        labels: &[],
        initial: &[&[]],
    },
];

/// Installs the global recorder and registers every documented series. Histograms get explicit
/// buckets so they export as Prometheus histograms (with `_bucket`, `_sum` and `_count`) rather
/// than summaries.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("tally_writer_batch_size".into()),
            BATCH_SIZE_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    register();
    Ok(handle)
}

/// Describes every family and creates its initial series at zero.
fn register() {
    for family in FAMILIES {
        for values in family.initial {
            let labels: Vec<Label> = family
                .labels
                .iter()
                .zip(values.iter())
                .map(|(name, value)| Label::new(*name, *value))
                .collect();
            match family.kind {
                Kind::Counter => {
                    metrics::describe_counter!(family.name, family.help);
                    metrics::counter!(family.name, labels).increment(0);
                }
                Kind::Gauge => {
                    metrics::describe_gauge!(family.name, family.help);
                    metrics::gauge!(family.name, labels).set(0.0);
                }
                Kind::Histogram => {
                    metrics::describe_histogram!(family.name, family.help);
                    let _registered = metrics::histogram!(family.name, labels);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_well_formed_initial_series() {
        let mut names = std::collections::HashSet::new();
        for family in FAMILIES {
            assert!(names.insert(family.name), "{} twice", family.name);
            assert!(family.name.starts_with("tally_") && !family.help.is_empty());
            assert!(!family.initial.is_empty(), "{} starts absent", family.name);
            for values in family.initial {
                assert_eq!(values.len(), family.labels.len(), "{}", family.name);
            }
        }
    }
}
