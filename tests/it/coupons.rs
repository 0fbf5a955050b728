//! Coupons and discounts over HTTP: validation, redemption limits under concurrency, discount
//! and minimum-commitment lines on invoices, verification, plan versions.

use serde_json::{json, Value};

use crate::harness::{at, Daemon, Resp};

async fn coupon(d: &Daemon, key: &str, body: Value) -> Resp {
    d.post("/v1/coupons", Some(key), &body).await
}

/// A daily plan with a 10.00 fee (`timing`), an optional minimum, and a subscription on it
/// starting now (or at `start_at`). Returns the subscription id.
async fn subscribed(d: &Daemon, customer: &str, timing: &str, extra: Value) -> String {
    let mut plan = json!({"code": format!("plan-{customer}"), "name": "Daily", "currency": "USD",
        "interval": "day", "fixed_fee": {"amount_minor": 1000, "timing": timing}});
    if let (Some(p), Some(e)) = (plan.as_object_mut(), extra.get("plan")) {
        for (k, v) in e.as_object().expect("object") {
            p.insert(k.clone(), v.clone());
        }
    }
    let p = d
        .post("/v1/plans", Some(&format!("plan-{customer}")), &plan)
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    let mut sub = json!({"customer": customer, "plan": format!("plan-{customer}")});
    if let (Some(s), Some(e)) = (sub.as_object_mut(), extra.get("subscription")) {
        for (k, v) in e.as_object().expect("object") {
            s.insert(k.clone(), v.clone());
        }
    }
    let s = d
        .post("/v1/subscriptions", Some(&format!("sub-{customer}")), &sub)
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    s.json["id"].as_str().expect("id").to_string()
}

async fn invoices_of(d: &Daemon, customer_id: &str) -> Vec<Value> {
    d.get(&format!("/v1/invoices?customer={customer_id}"))
        .await
        .json["data"]
        .as_array()
        .expect("data")
        .clone()
}

fn kinds(inv: &Value) -> Vec<String> {
    inv["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["kind"].as_str().expect("kind").to_string())
        .collect()
}

#[tokio::test]
async fn coupons_are_created_once_per_code_and_listed() {
    let d = Daemon::start().await;
    d.post(
        "/v1/meters",
        Some("m"),
        &json!({"key": "calls", "event_type": "call", "aggregation": "count"}),
    )
    .await;
    let body = json!({"code": "SPRING", "name": "Spring", "percent_off": "12.5",
        "duration": "repeating", "duration_periods": 3, "max_redemptions": 10,
        "redeem_by": at(86_400), "applies_to": {"meters": ["calls"]}});
    let c = coupon(&d, "c1", body.clone()).await;
    assert_eq!(c.status, 201, "{}", c.json);
    let id = c.json["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("cpn_"));
    assert_eq!(c.json["percent_off"], "12.5");
    assert_eq!(c.json["duration"], "repeating");
    assert_eq!(c.json["duration_periods"], 3);
    assert_eq!(c.json["times_redeemed"], 0);
    assert!(c.json["applies_to"]["meters"][0]
        .as_str()
        .is_some_and(|m| m.starts_with("mtr_")));
    let replay = coupon(&d, "c1", body).await;
    assert_eq!(replay.json["id"], id.as_str());
    let dup = coupon(
        &d,
        "c2",
        json!({"code": "SPRING", "amount_off_minor": 500, "currency": "USD", "duration": "once"}),
    )
    .await;
    dup.assert_problem(409, "coupon_exists");
    assert_eq!(dup.fields(), ["code"]);
    assert_eq!(
        d.get(&format!("/v1/coupons/{id}")).await.json["code"],
        "SPRING"
    );
    let list = d.get("/v1/coupons").await;
    assert_eq!(list.json["data"].as_array().expect("data").len(), 1);
    d.get("/v1/coupons/cpn_00000000000000000000000000")
        .await
        .assert_problem(404, "resource_missing");
}

#[tokio::test]
async fn bad_coupons_and_refused_redemptions_name_the_field_and_store_nothing() {
    let d = Daemon::start().await;
    let cases = [
        (
            json!({"code": "Z", "percent_off": 0, "duration": "once"}),
            "percent_off",
        ),
        (
            json!({"code": "Z", "percent_off": "100.01", "duration": "once"}),
            "percent_off",
        ),
        (
            json!({"code": "Z", "percent_off": "abc", "duration": "once"}),
            "percent_off",
        ),
        (
            json!({"code": "Z", "percent_off": 10, "amount_off_minor": 100, "currency": "USD", "duration": "once"}),
            "percent_off",
        ),
        (json!({"code": "Z", "duration": "once"}), "percent_off"),
        (
            json!({"code": "Z", "amount_off_minor": 100, "duration": "once"}),
            "currency",
        ),
        (
            json!({"code": "Z", "amount_off_minor": 0, "currency": "USD", "duration": "once"}),
            "amount_off_minor",
        ),
        (
            json!({"code": "Z", "percent_off": 10, "duration": "repeating"}),
            "duration_periods",
        ),
        (
            json!({"code": "Z", "percent_off": 10, "duration": "repeating", "duration_periods": 121}),
            "duration_periods",
        ),
        (
            json!({"code": "Z", "percent_off": 10, "duration": "always"}),
            "duration",
        ),
        (
            json!({"code": "Z", "percent_off": 10, "duration": "once", "applies_to": {"plans": ["nope"]}}),
            "applies_to.plans.0",
        ),
        (
            json!({"code": "Z", "percent_off": 10, "duration": "once", "redeem_by": "soon"}),
            "redeem_by",
        ),
        (
            json!({"code": "bad code", "percent_off": 10, "duration": "once"}),
            "code",
        ),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let r = coupon(&d, &format!("bad-{i}"), body.clone()).await;
        r.assert_problem(400, "validation_failed");
        assert_eq!(r.fields(), [*field], "{body}");
    }
    assert!(d.get("/v1/coupons").await.json["data"]
        .as_array()
        .expect("data")
        .is_empty());

    let eur = d.customer("eur", "EUR").await;
    let sub = subscribed(
        &d,
        "eur",
        "in_arrears",
        json!({"plan": {"currency": "EUR"}}),
    )
    .await;
    for (key, body) in [
        (
            "usd",
            json!({"code": "USD5", "amount_off_minor": 500, "currency": "USD", "duration": "once"}),
        ),
        (
            "old",
            json!({"code": "OLD", "percent_off": 10, "duration": "once", "redeem_by": at(-60)}),
        ),
        (
            "one",
            json!({"code": "ONE", "percent_off": 10, "duration": "once", "max_redemptions": 1}),
        ),
        (
            "pro",
            json!({"code": "PRO", "percent_off": 10, "duration": "once", "applies_to": {"plans": ["plan-eur"]}}),
        ),
    ] {
        assert_eq!(coupon(&d, key, body).await.status, 201);
    }
    let path = format!("/v1/subscriptions/{sub}/discounts");
    let ok = d.post(&path, Some("a1"), &json!({"coupon": "ONE"})).await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    assert!(ok.json["id"]
        .as_str()
        .is_some_and(|i| i.starts_with("dsc_")));
    assert_eq!(ok.json["status"], "active");
    assert_eq!(ok.json["starts_with_period"]["index"], 0);
    let refused = [
        ("USD5", 422, "currency_mismatch"),
        ("OLD", 422, "coupon_expired"),
        ("ONE", 409, "coupon_exhausted"),
        ("NOPE", 404, "resource_missing"),
    ];
    for (code, status, problem) in refused {
        let r = d
            .post(&path, Some(&format!("r-{code}")), &json!({"coupon": code}))
            .await;
        r.assert_problem(status, problem);
        assert_eq!(r.fields(), ["coupon"], "{}", r.json);
    }
    // The same coupon twice on one subscription.
    let pro = d.post(&path, Some("p1"), &json!({"coupon": "PRO"})).await;
    assert_eq!(pro.status, 201, "{}", pro.json);
    let again = d.post(&path, Some("p2"), &json!({"coupon": "PRO"})).await;
    again.assert_problem(409, "discount_exists");
    assert_eq!(again.fields(), ["coupon"]);
    // A coupon limited to another plan.
    let other = d.customer("other", "EUR").await;
    let other_sub = subscribed(
        &d,
        "other",
        "in_arrears",
        json!({"plan": {"currency": "EUR"}}),
    )
    .await;
    let r = d
        .post(
            &format!("/v1/subscriptions/{other_sub}/discounts"),
            Some("o1"),
            &json!({"coupon": "PRO"}),
        )
        .await;
    r.assert_problem(422, "coupon_not_applicable");
    // A coupon active on a subscription is active for its customer, and the other way round:
    // either would discount the same invoices twice.
    d.post(
        "/v1/customers/eur/discounts",
        Some("e1"),
        &json!({"coupon": "PRO"}),
    )
    .await
    .assert_problem(409, "discount_exists");
    let fam = json!({"code": "FAM", "percent_off": 5, "duration": "forever"});
    assert_eq!(coupon(&d, "fam", fam).await.status, 201);
    let on_customer = d
        .post(
            "/v1/customers/other/discounts",
            Some("f1"),
            &json!({"coupon": "FAM"}),
        )
        .await;
    assert_eq!(on_customer.status, 201, "{}", on_customer.json);
    d.post(
        &format!("/v1/subscriptions/{other_sub}/discounts"),
        Some("f2"),
        &json!({"coupon": "FAM"}),
    )
    .await
    .assert_problem(409, "discount_exists");
    // Nothing was written by the refusals.
    let list = d.get(&path).await;
    assert_eq!(list.json["data"].as_array().expect("data").len(), 2);
    for (code, redeemed) in [("USD5", 0), ("OLD", 0), ("ONE", 1), ("PRO", 1), ("FAM", 1)] {
        let all = d.get("/v1/coupons").await.json["data"].clone();
        let c = all
            .as_array()
            .expect("data")
            .iter()
            .find(|c| c["code"] == code)
            .expect("coupon")
            .clone();
        assert_eq!(c["times_redeemed"], redeemed, "{code}");
    }
    d.post(
        "/v1/subscriptions/sub_00000000000000000000000000/discounts",
        Some("x"),
        &json!({"coupon": "PRO"}),
    )
    .await
    .assert_problem(404, "resource_missing");
    let _ = (eur, other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_redemption_left_and_fifty_parallel_applications_give_one_discount() {
    let d = Daemon::start().await;
    let mut customers = Vec::new();
    for i in 0..50 {
        customers.push(d.customer(&format!("c{i}"), "USD").await);
    }
    let c = coupon(
        &d,
        "k",
        json!({"code": "LAST", "percent_off": 50, "duration": "forever", "max_redemptions": 1}),
    )
    .await;
    assert_eq!(c.status, 201);
    let mut tasks = Vec::new();
    for (i, customer) in customers.iter().enumerate() {
        let client = d.client.clone();
        let url = d.url(&format!("/v1/customers/{customer}/discounts"));
        let key = d.key.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", format!("apply-{i}"))
                .json(&json!({"coupon": "LAST"}))
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("json");
            (status, body)
        }));
    }
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            201 => created += 1,
            409 => {
                assert_eq!(body["code"], "coupon_exhausted", "{body}");
                assert_eq!(body["errors"][0]["field"], "coupon");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 1);
    let all = d.get("/v1/coupons").await;
    assert_eq!(all.json["data"][0]["times_redeemed"], 1);
    let mut discounts = 0;
    for customer in &customers {
        discounts += d
            .get(&format!("/v1/customers/{customer}/discounts"))
            .await
            .json["data"]
            .as_array()
            .expect("data")
            .len();
    }
    assert_eq!(discounts, 1);
}

#[tokio::test]
async fn an_opening_invoice_is_discounted_and_never_below_zero() {
    let d = Daemon::start().await;
    let pct = d.customer("pct", "USD").await;
    let big = d.customer("big", "USD").await;
    subscribed(&d, "pct", "in_advance", json!({})).await;
    subscribed(&d, "big", "in_advance", json!({})).await;
    coupon(
        &d,
        "a",
        json!({"code": "THIRD", "percent_off": "33.335", "duration": "once"}),
    )
    .await;
    coupon(&d, "b", json!({"code": "FIFTY", "amount_off_minor": 5000, "currency": "USD", "duration": "forever"})).await;
    let r = d
        .post(
            "/v1/customers/pct/discounts",
            Some("d1"),
            &json!({"coupon": "THIRD"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert!(r.json["subscription"].is_null());
    let r = d
        .post(
            "/v1/customers/big/discounts",
            Some("d2"),
            &json!({"coupon": "FIFTY"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let run = d.post("/v1/billing-runs", Some("r1"), &json!({})).await;
    assert_eq!(run.status, 201, "{}", run.json);

    let inv = invoices_of(&d, &pct).await.remove(0);
    assert_eq!(inv["kind"], "opening");
    assert_eq!(kinds(&inv), ["fixed_fee", "discount"]);
    // 33.335% of 10.00 = 3.3335 → 333 minor units, rounded once half away from zero.
    assert_eq!(inv["lines"][1]["amount_minor"], -333);
    assert_eq!(inv["lines"][1]["description"], "Coupon THIRD (33.335% off)");
    assert_eq!(inv["subtotal_minor"], 667);

    let inv = invoices_of(&d, &big).await.remove(0);
    assert_eq!(
        inv["lines"][1]["amount_minor"], -1000,
        "capped at the invoice"
    );
    assert_eq!(inv["subtotal_minor"], 0);
    assert_eq!(inv["amount_due_minor"], 0);
    assert_eq!(inv["status"], "paid");
    for inv in [invoices_of(&d, &pct).await, invoices_of(&d, &big).await].concat() {
        let v = d
            .get(&format!(
                "/v1/invoices/{}/verify",
                inv["id"].as_str().expect("id")
            ))
            .await;
        assert_eq!(v.json["matches"], true, "{}", v.json);
    }
}

#[tokio::test]
async fn a_final_invoice_with_a_discount_and_a_prorated_minimum_verifies() {
    let d = Daemon::start().await;
    let customer = d.customer("acme", "USD").await;
    // Boundaries 12 hours ago and in 12 hours; started 6 hours ago, so the first period is
    // 18 of 24 hours, and cancelling now leaves 6 of them.
    let now_ms = tally::clock::parse_rfc3339(&at(0)).expect("now");
    let anchor = now_ms - 12 * 3_600_000;
    let start = now_ms - 6 * 3_600_000;
    let sub = subscribed(
        &d,
        "acme",
        "in_arrears",
        json!({"plan": {"minimum_minor": 2000},
               "subscription": {"start_at": tally::clock::rfc3339(start),
                                "billing_anchor": tally::clock::rfc3339(anchor)}}),
    )
    .await;
    coupon(
        &d,
        "h",
        json!({"code": "HALF", "percent_off": 50, "duration": "once"}),
    )
    .await;
    let r = d
        .post(
            &format!("/v1/subscriptions/{sub}/discounts"),
            Some("d"),
            &json!({"coupon": "HALF"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    // The preview computes the open period as a run would: the same discount and true-up.
    let upcoming = d
        .get(&format!("/v1/customers/{customer}/upcoming-invoice"))
        .await;
    assert_eq!(upcoming.status, 200, "{}", upcoming.json);
    assert_eq!(
        kinds(&upcoming.json["invoices"][0]),
        ["fixed_fee", "discount", "minimum_commitment"]
    );
    let amounts = |inv: &Value| -> Vec<i64> {
        inv["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| l["amount_minor"].as_i64().expect("amount"))
            .collect()
    };
    // 18 hours: fee 7.50, half off, minimum 15.00.
    assert_eq!(amounts(&upcoming.json["invoices"][0]), [750, -375, 1125]);
    let cancel = d
        .post(
            &format!("/v1/subscriptions/{sub}/cancel"),
            Some("c"),
            &json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(cancel.status, 200, "{}", cancel.json);
    let inv = invoices_of(&d, &customer).await.remove(0);
    assert_eq!(inv["kind"], "final");
    assert_eq!(kinds(&inv), ["fixed_fee", "discount", "minimum_commitment"]);
    // 6 hours: fee 2.50, half off, minimum 5.00.
    assert_eq!(amounts(&inv), [250, -125, 375]);
    assert_eq!(inv["subtotal_minor"], 500);
    assert!(
        inv["lines"][2]["proration"].is_string(),
        "{}",
        inv["lines"][2]
    );
    let v = d
        .get(&format!(
            "/v1/invoices/{}/verify",
            inv["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(v.json["matches"], true, "{}", v.json);
}

#[tokio::test]
async fn removing_a_discount_is_idempotent_and_keeps_its_record() {
    let d = Daemon::start().await;
    d.customer("acme", "USD").await;
    let sub = subscribed(&d, "acme", "in_arrears", json!({})).await;
    coupon(
        &d,
        "c",
        json!({"code": "TEN", "percent_off": 10, "duration": "forever"}),
    )
    .await;
    let r = d
        .post(
            &format!("/v1/subscriptions/{sub}/discounts"),
            Some("a"),
            &json!({"coupon": "TEN"}),
        )
        .await;
    let id = r.json["id"].as_str().expect("id").to_string();
    let first = d
        .post(
            &format!("/v1/discounts/{id}/remove"),
            Some("x1"),
            &json!({}),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(first.json["status"], "removed");
    let second = d
        .post(
            &format!("/v1/discounts/{id}/remove"),
            Some("x2"),
            &json!({}),
        )
        .await;
    assert_eq!(second.status, 200);
    assert_eq!(second.json["removed_at"], first.json["removed_at"]);
    let list = d.get(&format!("/v1/subscriptions/{sub}/discounts")).await;
    assert_eq!(list.json["data"][0]["status"], "removed");
    // Once removed, the coupon may be redeemed on the subscription again.
    let again = d
        .post(
            &format!("/v1/subscriptions/{sub}/discounts"),
            Some("b"),
            &json!({"coupon": "TEN"}),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.json);
    d.post(
        "/v1/discounts/dsc_00000000000000000000000000/remove",
        Some("x3"),
        &json!({}),
    )
    .await
    .assert_problem(404, "resource_missing");
}

#[tokio::test]
async fn a_new_plan_version_goes_to_new_subscriptions_and_old_ones_keep_theirs() {
    let d = Daemon::start().await;
    let old_customer = d.customer("old", "USD").await;
    d.customer("new", "USD").await;
    let v1 = d
        .post(
            "/v1/plans",
            Some("v1"),
            &json!({"code": "daily", "name": "Daily", "currency": "USD", "interval": "day",
                    "fixed_fee": {"amount_minor": 1000, "timing": "in_arrears"}}),
        )
        .await;
    assert_eq!(v1.status, 201);
    assert_eq!(v1.json["version"], 1);
    assert!(v1.json["previous_version"].is_null());
    let v1_id = v1.json["id"].as_str().expect("id").to_string();
    let today = &at(0)[..10];
    let yesterday = tally::clock::rfc3339(
        tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t") - 86_400_000,
    );
    let old = d
        .post(
            "/v1/subscriptions",
            Some("s-old"),
            &json!({"customer": "old", "plan": "daily", "start_at": yesterday}),
        )
        .await;
    assert_eq!(old.status, 201);
    let body = json!({"name": "Daily", "currency": "USD", "interval": "day",
        "fixed_fee": {"amount_minor": 2000, "timing": "in_arrears"}, "minimum_minor": 2500});
    let v2 = d
        .post(&format!("/v1/plans/{v1_id}/versions"), Some("v2"), &body)
        .await;
    assert_eq!(v2.status, 201, "{}", v2.json);
    assert_eq!(v2.json["code"], "daily");
    assert_eq!(v2.json["version"], 2);
    assert_eq!(v2.json["previous_version"], v1_id.as_str());
    assert_eq!(v2.json["minimum_minor"], 2500);
    let v2_id = v2.json["id"].as_str().expect("id").to_string();
    // Only the newest version can be followed.
    d.post(&format!("/v1/plans/{v1_id}/versions"), Some("v2b"), &body)
        .await
        .assert_problem(409, "plan_version_stale");
    let versions = d.get("/v1/plans?code=daily").await;
    let listed: Vec<&str> = versions.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, [v1_id.as_str(), v2_id.as_str()]);
    let new = d
        .post(
            "/v1/subscriptions",
            Some("s-new"),
            &json!({"customer": "new", "plan": "daily"}),
        )
        .await;
    assert_eq!(new.json["plan"], v2_id.as_str());
    let run = d.post("/v1/billing-runs", Some("r"), &json!({})).await;
    assert_eq!(run.status, 201);
    let inv = invoices_of(&d, &old_customer).await.remove(0);
    assert_eq!(inv["plan"], v1_id.as_str());
    assert_eq!(
        inv["subtotal_minor"], 1000,
        "priced with the version it is on"
    );
    let old_sub = d
        .get(&format!(
            "/v1/subscriptions/{}",
            old.json["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(old_sub.json["plan"], v1_id.as_str());
    d.post(
        "/v1/plans/pln_00000000000000000000000000/versions",
        Some("v9"),
        &body,
    )
    .await
    .assert_problem(404, "resource_missing");
    let bad = d
        .post(
            &format!("/v1/plans/{v2_id}/versions"),
            Some("v3"),
            &json!({"name": "Daily", "currency": "USD", "interval": "day", "minimum_minor": -1}),
        )
        .await;
    bad.assert_problem(400, "validation_failed");
    assert_eq!(bad.fields(), ["minimum_minor"]);
}
