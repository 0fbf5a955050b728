//! Bounds: values out of their documented range are refused at entry, an overflow that still
//! happens fails one invoice (never the daemon, the tenant's billing or a neighbouring write),
//! and no request does unbounded work.

use serde_json::{json, Value};

use crate::harness::{at, Daemon};

/// Midnight UTC `days` days ago, RFC 3339.
fn midnight(days: i64) -> String {
    let today = &at(0)[..10];
    let start = tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t");
    tally::clock::rfc3339(start - days * 86_400_000)
}

/// A sum meter `tokens` over `properties.n` of `call` events.
async fn tokens_meter(d: &Daemon) {
    let m = d
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "tokens", "event_type": "call", "aggregation": "sum", "value_property": "n"}),
        )
        .await;
    assert_eq!(m.status, 201, "{}", m.json);
}

async fn plan(d: &Daemon, code: &str, charge: Value) -> u16 {
    let p = d
        .post(
            "/v1/plans",
            Some(&format!("plan-{code}")),
            &json!({"code": code, "name": code, "currency": "USD", "interval": "day", "charges": [charge]}),
        )
        .await;
    p.status
}

async fn subscribe(d: &Daemon, customer: &str, plan: &str) {
    d.customer(customer, "USD").await;
    let s = d
        .post(
            "/v1/subscriptions",
            Some(&format!("sub-{customer}")),
            &json!({"customer": customer, "plan": plan, "start_at": midnight(3)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
}

async fn events(d: &Daemon, customer: &str, values: &[&str]) -> Value {
    let noon = tally::clock::parse_rfc3339(&midnight(3)).expect("t") + 12 * 3_600_000;
    let body: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"id": format!("{customer}-{i}"), "customer": customer, "type": "call",
                   "timestamp": tally::clock::rfc3339(noon + i as i64), "properties": {"n": v}})
        })
        .collect();
    let r = d.post("/v1/events", None, &json!({ "events": body })).await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_out_of_range_are_refused_at_entry_and_billing_keeps_working() {
    let d = Daemon::start().await;
    tokens_meter(&d).await;
    // A package size below the smallest representable step of the range.
    let r = d
        .post(
            "/v1/plans",
            Some("plan-tiny"),
            &json!({"code": "tiny", "name": "Tiny", "currency": "USD", "interval": "day",
                    "charges": [{"meter": "tokens", "model": "package",
                                 "package_size": "0.0000000000000000000000000001", "unit_price": "1"}]}),
        )
        .await;
    r.assert_problem(400, "value_out_of_range");
    assert_eq!(r.fields(), vec!["charges.0.package_size".to_string()]);
    for (field, charge) in [
        (
            "charges.0.unit_price",
            json!({"meter": "tokens", "model": "per_unit", "unit_price": "1000000000000000.1"}),
        ),
        (
            "charges.0.free_units",
            json!({"meter": "tokens", "model": "per_unit", "unit_price": "1", "free_units": "1e16"}),
        ),
        (
            "charges.0.tiers.0.up_to",
            json!({"meter": "tokens", "model": "graduated", "tiers": [
                {"up_to": "79228162514264337593543950335", "unit_price": "1"},
                {"up_to": null, "unit_price": "1"}]}),
        ),
    ] {
        let r = d
            .post(
                "/v1/plans",
                Some(field),
                &json!({"code": field, "name": "x", "currency": "USD", "interval": "day", "charges": [charge]}),
            )
            .await;
        r.assert_problem(400, "value_out_of_range");
        assert_eq!(r.fields(), vec![field.to_string()]);
    }
    let fee = d
        .post(
            "/v1/plans",
            Some("plan-fee"),
            &json!({"code": "fee", "name": "Fee", "currency": "USD", "interval": "day",
                    "fixed_fee": {"amount_minor": 1_000_000_000_000_001i64}}),
        )
        .await;
    fee.assert_problem(400, "value_out_of_range");
    assert_eq!(fee.fields(), vec!["fixed_fee.amount_minor".to_string()]);
    d.customer("granted", "USD").await;
    let grant = d
        .post(
            "/v1/credit-grants",
            Some("grant"),
            &json!({"customer": "granted", "amount_minor": 1_000_000_000_000_001i64,
                    "currency": "USD", "category": "promotional"}),
        )
        .await;
    grant.assert_problem(400, "value_out_of_range");
    assert_eq!(grant.fields(), vec!["amount_minor".to_string()]);
    // A decimal with more digits than the exact range is out of range, not malformed.
    let r = d
        .post(
            "/v1/plans",
            Some("plan-huge"),
            &json!({"code": "huge", "name": "Huge", "currency": "USD", "interval": "day",
                    "charges": [{"meter": "tokens", "model": "per_unit", "unit_price": "1e400"}]}),
        )
        .await;
    r.assert_problem(400, "value_out_of_range");
    // The example: free units 1 and an event at the bottom of the decimal range.
    assert_eq!(
        plan(
            &d,
            "free",
            json!({"meter": "tokens", "model": "per_unit", "unit_price": "1", "free_units": "1"})
        )
        .await,
        201
    );
    subscribe(&d, "acme", "free").await;
    let reply = events(&d, "acme", &["-79228162514264337593543950335", "5"]).await;
    let first = &reply["results"][0];
    assert_eq!(first["status"], "rejected", "{reply}");
    assert_eq!(first["error"]["code"], "value_out_of_range");
    assert_eq!(first["error"]["errors"][0]["field"], "properties.n");
    assert_eq!(reply["results"][1]["status"], "accepted");
    let cus = d.get("/v1/customers?external_id=acme").await;
    let id = cus.json["data"][0]["id"].as_str().expect("id").to_string();
    let up = d.get(&format!("/v1/customers/{id}/upcoming-invoice")).await;
    assert_eq!(up.status, 200, "{}", up.json);
    let run = d.post("/v1/billing-runs", Some("run-1"), &json!({})).await;
    assert_eq!(run.status, 201, "{}", run.json);
    let invoices = d.get("/v1/invoices?customer=acme").await;
    assert_eq!(invoices.json["data"].as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overflowing_invoice_fails_alone_and_the_tenant_keeps_billing() {
    let d = Daemon::start().await;
    tokens_meter(&d).await;
    // Every value is in range, but 100 × 10^15 units in packages of 10^-12 are 10^29 packages:
    // past the exact decimal range.
    assert_eq!(
        plan(
            &d,
            "fine",
            json!({"meter": "tokens", "model": "package",
                                "package_size": "0.000000000001", "unit_price": "1"})
        )
        .await,
        201
    );
    assert_eq!(
        plan(
            &d,
            "plain",
            json!({"meter": "tokens", "model": "per_unit", "unit_price": "0.01"})
        )
        .await,
        201
    );
    subscribe(&d, "huge", "fine").await;
    subscribe(&d, "small", "plain").await;
    let many = vec!["1000000000000000"; 100];
    let reply = events(&d, "huge", &many).await;
    assert!(
        reply["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|r| r["status"] == "accepted"),
        "{reply}"
    );
    events(&d, "small", &["7"]).await;
    let cus = d.get("/v1/customers?external_id=huge").await;
    let id = cus.json["data"][0]["id"].as_str().expect("id").to_string();
    // The preview answers a problem instead of dropping the connection.
    d.get(&format!("/v1/customers/{id}/upcoming-invoice"))
        .await
        .assert_problem(422, "invoice_error");
    // A run and a neighbouring write submitted together both commit; the run skips the
    // overflowing period with its reason and bills the other subscription.
    let (empty, next) = (json!({}), json!({"external_id": "next", "currency": "USD"}));
    let (run, neighbour) = tokio::join!(
        d.post("/v1/billing-runs", Some("run-1"), &empty),
        d.post("/v1/customers", Some("cus-next"), &next),
    );
    assert_eq!(run.status, 201, "{}", run.json);
    assert_eq!(neighbour.status, 201, "{}", neighbour.json);
    let skipped = run.json["skipped"].as_array().expect("skipped");
    assert!(
        skipped.iter().any(|s| s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("out of range"))),
        "{}",
        run.json
    );
    let small = d.get("/v1/invoices?customer=small").await;
    assert_eq!(small.json["data"].as_array().map(Vec::len), Some(3));
    // Later runs keep working for the tenant.
    let again = d.post("/v1/billing-runs", Some("run-2"), &json!({})).await;
    assert_eq!(again.status, 201, "{}", again.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_outside_the_window_is_refused() {
    let d = Daemon::start().await;
    tokens_meter(&d).await;
    assert_eq!(
        plan(
            &d,
            "daily",
            json!({"meter": "tokens", "model": "per_unit", "unit_price": "1"})
        )
        .await,
        201
    );
    d.customer("acme", "USD").await;
    for (key, start_at) in [
        ("early", "0001-01-01T00:00:00Z".to_string()),
        ("late", "9999-01-01T00:00:00Z".to_string()),
        ("just-too-early", midnight(367)),
    ] {
        let r = d
            .post(
                "/v1/subscriptions",
                Some(key),
                &json!({"customer": "acme", "plan": "daily", "start_at": start_at}),
            )
            .await;
        r.assert_problem(400, "value_out_of_range");
        assert_eq!(r.fields(), vec!["start_at".to_string()]);
    }
    let ok = d
        .post(
            "/v1/subscriptions",
            Some("ok"),
            &json!({"customer": "acme", "plan": "daily", "start_at": midnight(365)}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.json);
}

/// Every invoice of a run, through the paged list.
async fn invoices_of_run(d: &Daemon, run: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/invoices?billing_run={run}&limit=50&starting_after={c}"),
            None => format!("/v1/invoices?billing_run={run}&limit=50"),
        };
        let page = d.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.json);
        out.extend(page.json["data"].as_array().expect("data").iter().cloned());
        match page.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_backlog_is_billed_once_in_bounded_transactions() {
    let d = Daemon::start_with("[billing]\nrun_chunk_periods = 25\n").await;
    tokens_meter(&d).await;
    assert_eq!(
        plan(
            &d,
            "daily",
            json!({"meter": "tokens", "model": "per_unit", "unit_price": "1"})
        )
        .await,
        201
    );
    d.customer("acme", "USD").await;
    let s = d
        .post(
            "/v1/subscriptions",
            Some("sub"),
            &json!({"customer": "acme", "plan": "daily", "start_at": midnight(130)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    // Every day that has ended: the harness bills with no grace, so at any time of day the
    // 130 days before today are due.
    let due = 130;
    let first = d.post("/v1/billing-runs", Some("run"), &json!({})).await;
    assert_eq!(first.status, 202, "{}", first.json);
    assert_eq!(first.json["status"], "running");
    assert_eq!(first.json["closed_count"], 25, "one transaction's worth");
    assert_eq!(first.json["transactions"], 1);
    let id = first.json["id"].as_str().expect("id").to_string();
    // A retry replays the 202 and changes nothing.
    let replay = d.post("/v1/billing-runs", Some("run"), &json!({})).await;
    assert_eq!(replay.status, 202);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let mut report = Value::Null;
    for _ in 0..500 {
        report = d.get(&format!("/v1/billing-runs/{id}")).await.json;
        if report["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["closed_count"], due);
    assert!(report["transactions"].as_u64().expect("n") >= due / 25);
    assert_eq!(
        report["closed"].as_array().map(Vec::len),
        Some(100),
        "the report keeps the first 100; the rest are listed by run"
    );
    // Every due period exactly once, all listed under the run.
    let listed = invoices_of_run(&d, &id).await;
    assert_eq!(listed.len() as u64, due);
    let all = d.get("/v1/invoices?limit=500").await;
    let all = all.json["data"].as_array().expect("data").clone();
    assert_eq!(all.len() as u64, due);
    let mut starts: Vec<&str> = all
        .iter()
        .map(|i| i["period_start"].as_str().unwrap_or(""))
        .collect();
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(starts.len() as u64, due, "no period billed twice");
    // Nothing is left for a second run.
    let again = d.post("/v1/billing-runs", Some("run-2"), &json!({})).await;
    assert_eq!(again.status, 201, "{}", again.json);
    assert_eq!(again.json["closed_count"], 0);
}
