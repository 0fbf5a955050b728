//! Features, plan entitlements, overrides, grants and the check, over HTTP: every endpoint and
//! every bad input (problem+json naming the field, nothing written).

use serde_json::{json, Value};

use crate::harness::{at, Daemon};

/// A meter `calls` (count), a `max` meter, the features `gpt4`, `sso` and `seats`.
async fn catalogue(d: &Daemon) {
    for (key, body) in [
        (
            "m1",
            json!({"key": "calls", "event_type": "call", "aggregation": "count"}),
        ),
        (
            "m2",
            json!({"key": "peak", "event_type": "call", "aggregation": "max", "value_property": "n"}),
        ),
    ] {
        let r = d.post("/v1/meters", Some(key), &body).await;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    for key in ["gpt4", "sso", "seats"] {
        let r = d
            .post(
                "/v1/features",
                Some(&format!("f-{key}")),
                &json!({"key": key, "name": key.to_uppercase()}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
    }
}

fn plan_body(code: &str, entitlements: Value) -> Value {
    json!({"code": code, "name": "Pro", "currency": "USD", "interval": "month",
        "entitlements": entitlements})
}

fn metered(limit: Value) -> Value {
    json!({"feature": "gpt4", "type": "metered", "meter": "calls", "limit": limit,
        "reset": "billing_period", "hard": true})
}

/// A plan `pro` granting gpt4 (3 calls a period, hard), sso and seats, and a customer `acme`
/// subscribed to it since two hours ago. Returns (customer id, plan id).
async fn subscribed(d: &Daemon) -> (String, String) {
    catalogue(d).await;
    let p = d
        .post(
            "/v1/plans",
            Some("p-pro"),
            &plan_body(
                "pro",
                json!([metered(json!("3")), {"feature": "sso", "type": "boolean"},
                    {"feature": "seats", "type": "static", "config": {"seats": 5, "tier": "a"}}]),
            ),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    let customer = d.customer("acme", "USD").await;
    let s = d
        .post(
            "/v1/subscriptions",
            Some("s-acme"),
            &json!({"customer": "acme", "plan": "pro", "start_at": at(-7200)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    (customer, p.json["id"].as_str().expect("id").to_string())
}

async fn calls(d: &Daemon, ids: &[&str], secs_ago: i64) {
    let events: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "customer": "acme", "type": "call", "timestamp": at(-secs_ago), "properties": {"n": 1}}))
        .collect();
    let r = d.post("/v1/events", None, &json!({"events": events})).await;
    assert_eq!(r.status, 200, "{}", r.json);
}

#[tokio::test]
async fn features_are_created_once_per_key_read_by_id_or_key_listed_and_archived() {
    let d = Daemon::start().await;
    let body = json!({"key": "gpt4", "name": "GPT-4"});
    let f = d.post("/v1/features", Some("f1"), &body).await;
    assert_eq!(f.status, 201, "{}", f.json);
    let id = f.json["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("feat_"));
    assert_eq!(
        (f.json["key"].clone(), f.json["active"].clone()),
        (json!("gpt4"), json!(true))
    );
    let replay = d.post("/v1/features", Some("f1"), &body).await;
    assert_eq!((replay.status, replay.json["id"].clone()), (201, json!(id)));
    let dup = d.post("/v1/features", Some("f2"), &body).await;
    dup.assert_problem(409, "feature_exists");
    assert_eq!(dup.fields(), ["key"]);
    for (i, (bad, field)) in [
        (json!({"key": "GPT", "name": "x"}), "key"),
        (json!({"key": "a".repeat(65), "name": "x"}), "key"),
        (json!({"key": "", "name": "x"}), "key"),
        (json!({"key": "ok", "name": " "}), "name"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = d
            .post("/v1/features", Some(&format!("bad-{i}")), &bad)
            .await;
        r.assert_problem(400, "validation_failed");
        assert_eq!(r.fields(), [field]);
    }
    let no_key = d
        .post("/v1/features", None, &json!({"key": "x", "name": "x"}))
        .await;
    assert_eq!(no_key.status, 400);
    assert_eq!(
        d.get(&format!("/v1/features/{id}")).await.json["key"],
        "gpt4"
    );
    assert_eq!(d.get("/v1/features/gpt4").await.json["id"], json!(id));
    d.get("/v1/features/nope")
        .await
        .assert_problem(404, "resource_missing");
    let list = d.get("/v1/features").await;
    assert_eq!(
        list.json["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.json
    );
    let archived = d
        .post("/v1/features/gpt4/archive", Some("a1"), &json!({}))
        .await;
    assert_eq!(archived.status, 200, "{}", archived.json);
    assert_eq!(archived.json["active"], false);
    d.post("/v1/features/nope/archive", Some("a2"), &json!({}))
        .await
        .assert_problem(404, "resource_missing");
}

#[tokio::test]
async fn the_check_answers_from_plan_usage_grants_and_overrides() {
    let d = Daemon::start().await;
    let (customer, plan) = subscribed(&d).await;
    let check = |f: &str, q: String| {
        let path = format!("/v1/customers/acme/entitlements/{f}{q}");
        let d = &d;
        async move {
            let r = d.get(&path).await;
            assert_eq!(r.status, 200, "{}", r.json);
            r.json
        }
    };
    let c = check("gpt4", String::new()).await;
    assert_eq!(
        (
            &c["type"],
            &c["has_access"],
            &c["usage"],
            &c["limit"],
            &c["remaining"],
            &c["source"]
        ),
        (
            &json!("metered"),
            &json!(true),
            &json!("0"),
            &json!("3"),
            &json!("3"),
            &json!("plan")
        )
    );
    assert!(c["resets_at"]
        .as_str()
        .is_some_and(|r| r > c["at"].as_str().unwrap_or("")));
    calls(&d, &["a", "b", "c"], 60).await;
    let c = check("gpt4", String::new()).await;
    assert_eq!(
        (&c["usage"], &c["remaining"], &c["has_access"]),
        (&json!("3"), &json!("0"), &json!(false))
    );
    // A past instant: before the calls and before the grant below.
    let earlier = format!("?at={}", at(-600).replace('+', "%2B"));
    let g = d
        .post(
            &format!("/v1/customers/{customer}/entitlement-grants"),
            Some("g1"),
            &json!({"feature": "gpt4", "amount": "2"}),
        )
        .await;
    assert_eq!(g.status, 201, "{}", g.json);
    assert!(g.json["id"]
        .as_str()
        .is_some_and(|i| i.starts_with("entg_")));
    let again = d
        .post(
            &format!("/v1/customers/{customer}/entitlement-grants"),
            Some("g1"),
            &json!({"feature": "gpt4", "amount": "2"}),
        )
        .await;
    assert_eq!(again.json["id"], g.json["id"]);
    let c = check("gpt4", String::new()).await;
    assert_eq!(
        (&c["remaining"], &c["has_access"]),
        (&json!("2"), &json!(true))
    );
    assert_eq!(c["grants"].as_array().map(Vec::len), Some(1));
    let past = check("gpt4", earlier).await;
    assert_eq!(
        (&past["usage"], &past["remaining"], &past["has_access"]),
        (&json!("0"), &json!("3"), &json!(true))
    );
    assert_eq!(past["grants"], json!([]));
    let grants = d.get("/v1/customers/acme/entitlement-grants").await;
    assert_eq!(
        grants.json["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        grants.json
    );
    // Boolean and static.
    let sso = check("sso", String::new()).await;
    assert_eq!(
        (&sso["type"], &sso["has_access"], &sso["usage"]),
        (&json!("boolean"), &json!(true), &Value::Null)
    );
    let seats = check("seats", String::new()).await;
    assert_eq!(seats["config"], json!({"seats": 5, "tier": "a"}));
    let all = d.get("/v1/customers/acme/entitlements").await;
    assert_eq!(all.status, 200, "{}", all.json);
    assert_eq!(all.json["data"].as_array().map(Vec::len), Some(3));
    // Overrides: deny, then a soft limit, then removed.
    let o = d
        .post(
            "/v1/customers/acme/entitlement-overrides",
            Some("o1"),
            &json!({"feature": "sso", "type": "boolean", "enabled": false}),
        )
        .await;
    assert_eq!(o.status, 200, "{}", o.json);
    let sso = check("sso", String::new()).await;
    assert_eq!(
        (&sso["has_access"], &sso["source"]),
        (&json!(false), &json!("override"))
    );
    let soft = d
        .post(
            "/v1/customers/acme/entitlement-overrides",
            Some("o2"),
            &json!({"feature": "gpt4", "type": "metered", "meter": "calls", "limit": 1, "hard": false}),
        )
        .await;
    assert_eq!(soft.status, 200, "{}", soft.json);
    let c = check("gpt4", String::new()).await;
    assert_eq!(
        (&c["remaining"], &c["has_access"], &c["source"]),
        (&json!("0"), &json!(true), &json!("override"))
    );
    let listed = d.get("/v1/customers/acme/entitlement-overrides").await;
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(2));
    let removed = d
        .post(
            "/v1/customers/acme/entitlement-overrides/sso/remove",
            Some("r1"),
            &json!({}),
        )
        .await;
    assert_eq!(removed.status, 200, "{}", removed.json);
    assert_eq!(check("sso", String::new()).await["has_access"], true);
    d.post(
        "/v1/customers/acme/entitlement-overrides/sso/remove",
        Some("r2"),
        &json!({}),
    )
    .await
    .assert_problem(404, "resource_missing");
    // Entitlements set on the plan itself change the answer without a new version.
    let set = d
        .post(
            &format!("/v1/plans/{plan}/entitlements"),
            Some("pe1"),
            &json!({"feature": "sso", "type": "boolean", "enabled": false}),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.json);
    assert_eq!(check("sso", String::new()).await["has_access"], false);
    let on_plan = d.get(&format!("/v1/plans/{plan}/entitlements")).await;
    assert_eq!(on_plan.json["data"].as_array().map(Vec::len), Some(3));
    // A customer without a subscription has nothing.
    d.customer("solo", "USD").await;
    let none = d.get("/v1/customers/solo/entitlements/sso").await;
    assert_eq!(
        (&none.json["has_access"], &none.json["source"]),
        (&json!(false), &json!("none"))
    );
}

#[tokio::test]
async fn a_new_plan_version_keeps_its_entitlements_unless_it_states_them() {
    let d = Daemon::start().await;
    let (_, plan) = subscribed(&d).await;
    let body = json!({"name": "Pro 2", "currency": "USD", "interval": "month"});
    let v2 = d
        .post(&format!("/v1/plans/{plan}/versions"), Some("v2"), &body)
        .await;
    assert_eq!(v2.status, 201, "{}", v2.json);
    let v2_id = v2.json["id"].as_str().expect("id");
    let kept = d.get(&format!("/v1/plans/{v2_id}/entitlements")).await;
    assert_eq!(
        kept.json["data"].as_array().map(Vec::len),
        Some(3),
        "{}",
        kept.json
    );
    let mut stated = body.clone();
    stated["entitlements"] = json!([{"feature": "sso", "type": "boolean"}]);
    let v3 = d
        .post(&format!("/v1/plans/{v2_id}/versions"), Some("v3"), &stated)
        .await;
    assert_eq!(v3.status, 201, "{}", v3.json);
    let v3_id = v3.json["id"].as_str().expect("id");
    let only = d.get(&format!("/v1/plans/{v3_id}/entitlements")).await;
    assert_eq!(only.json["data"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn bad_entitlement_input_is_refused_naming_the_field_and_writes_nothing() {
    let d = Daemon::start().await;
    catalogue(&d).await;
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!([{"feature": "nope", "type": "boolean"}]),
            422,
            "unknown_feature",
            "entitlements.0.feature",
        ),
        (
            json!([{"feature": "gpt4", "type": "metered", "meter": "nope", "limit": "1"}]),
            422,
            "unknown_meter",
            "entitlements.0.meter",
        ),
        (
            json!([{"feature": "gpt4", "type": "metered", "meter": "peak", "limit": "1"}]),
            422,
            "meter_not_limitable",
            "entitlements.0.meter",
        ),
        (
            json!([metered(json!("-1"))]),
            422,
            "invalid_limit",
            "entitlements.0.limit",
        ),
        (
            json!([metered(json!("lots"))]),
            422,
            "invalid_limit",
            "entitlements.0.limit",
        ),
        (
            json!([metered(json!(true))]),
            422,
            "invalid_limit",
            "entitlements.0.limit",
        ),
        (
            json!([{"feature": "sso", "type": "boolean"}, {"feature": "sso", "type": "boolean"}]),
            422,
            "duplicate_feature",
            "entitlements.1.feature",
        ),
        (
            json!([{"feature": "sso", "type": "toggle"}]),
            400,
            "validation_failed",
            "entitlements.0.type",
        ),
        (
            json!([{"feature": "sso", "type": "boolean", "limit": "1"}]),
            400,
            "validation_failed",
            "entitlements.0.limit",
        ),
        (
            json!([{"feature": "gpt4", "type": "metered", "meter": "calls", "limit": "1", "reset": "week"}]),
            400,
            "validation_failed",
            "entitlements.0.reset",
        ),
        (
            json!([{"feature": "seats", "type": "static"}]),
            400,
            "validation_failed",
            "entitlements.0.config",
        ),
        (
            json!([{"feature": "seats", "type": "static", "config": "x".repeat(5000)}]),
            400,
            "validation_failed",
            "entitlements.0.config",
        ),
    ];
    for (i, (entitlements, status, code, field)) in cases.into_iter().enumerate() {
        let r = d
            .post(
                "/v1/plans",
                Some(&format!("bad-{i}")),
                &plan_body("pro", entitlements),
            )
            .await;
        r.assert_problem(status, code);
        assert_eq!(r.fields(), [field], "{}", r.json);
    }
    // Nothing was written: the code is still free and no plan exists.
    assert_eq!(d.get("/v1/plans").await.json["data"], json!([]));
    let p = d
        .post(
            "/v1/plans",
            Some("good"),
            &plan_body("pro", json!([metered(json!(3))])),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    let plan = p.json["id"].as_str().expect("id").to_string();
    // The same checks on a plan's and a customer's single entitlement.
    let unknown = d
        .post(
            &format!("/v1/plans/{plan}/entitlements"),
            Some("e1"),
            &json!({"feature": "nope", "type": "boolean"}),
        )
        .await;
    unknown.assert_problem(422, "unknown_feature");
    assert_eq!(unknown.fields(), ["feature"]);
    let negative = d
        .post(
            &format!("/v1/plans/{plan}/entitlements"),
            Some("e2"),
            &metered(json!("-0.5")),
        )
        .await;
    negative.assert_problem(422, "invalid_limit");
    assert_eq!(negative.fields(), ["limit"]);
    d.post(
        "/v1/plans/pln_00000000000000000000000000/entitlements",
        Some("e3"),
        &metered(json!(1)),
    )
    .await
    .assert_problem(404, "resource_missing");
    assert_eq!(
        d.get(&format!("/v1/plans/{plan}/entitlements")).await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    d.post(
        "/v1/customers/ghost/entitlement-overrides",
        Some("e4"),
        &metered(json!(1)),
    )
    .await
    .assert_problem(404, "resource_missing");
    d.customer("acme", "USD").await;
    let o = d
        .post(
            "/v1/customers/acme/entitlement-overrides",
            Some("e5"),
            &json!({"feature": "gpt4", "type": "metered", "meter": "nope", "limit": 1}),
        )
        .await;
    o.assert_problem(422, "unknown_meter");
    assert_eq!(o.fields(), ["meter"]);
    assert_eq!(
        d.get("/v1/customers/acme/entitlement-overrides").await.json["data"],
        json!([])
    );
    // Grants.
    for (i, (body, status, code, field)) in [
        (
            json!({"feature": "gpt4", "amount": "0"}),
            422,
            "invalid_amount",
            "amount",
        ),
        (
            json!({"feature": "gpt4", "amount": "-3"}),
            422,
            "invalid_amount",
            "amount",
        ),
        (
            json!({"feature": "gpt4", "amount": "many"}),
            422,
            "invalid_amount",
            "amount",
        ),
        (
            json!({"feature": "nope", "amount": "3"}),
            422,
            "unknown_feature",
            "feature",
        ),
        (
            json!({"feature": "gpt4", "amount": "3", "effective_at": "yesterday"}),
            400,
            "validation_failed",
            "effective_at",
        ),
        (
            json!({"feature": "gpt4", "amount": "3", "effective_at": at(0), "expires_at": at(-10)}),
            400,
            "validation_failed",
            "expires_at",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let r = d
            .post(
                "/v1/customers/acme/entitlement-grants",
                Some(&format!("g{i}")),
                &body,
            )
            .await;
        r.assert_problem(status, code);
        assert_eq!(r.fields(), [field], "{}", r.json);
    }
    d.post(
        "/v1/customers/ghost/entitlement-grants",
        Some("g9"),
        &json!({"feature": "gpt4", "amount": "1"}),
    )
    .await
    .assert_problem(404, "resource_missing");
    assert_eq!(
        d.get("/v1/customers/acme/entitlement-grants").await.json["data"],
        json!([])
    );
    // Archived features cannot be newly assigned.
    d.post("/v1/features/sso/archive", Some("arch"), &json!({}))
        .await;
    d.post(
        "/v1/customers/acme/entitlement-overrides",
        Some("e6"),
        &json!({"feature": "sso", "type": "boolean"}),
    )
    .await
    .assert_problem(422, "feature_archived");
    // The check.
    let bad_at = d.get("/v1/customers/acme/entitlements/gpt4?at=noon").await;
    bad_at.assert_problem(400, "validation_failed");
    assert_eq!(bad_at.fields(), ["at"]);
    let ghost = d.get("/v1/customers/ghost/entitlements/gpt4").await;
    ghost.assert_problem(404, "resource_missing");
    assert_eq!(ghost.fields(), ["customer"]);
    let no_feature = d.get("/v1/customers/acme/entitlements/nope").await;
    no_feature.assert_problem(404, "resource_missing");
    assert_eq!(no_feature.fields(), ["feature"]);
    d.get("/v1/customers/ghost/entitlements")
        .await
        .assert_problem(404, "resource_missing");
}
