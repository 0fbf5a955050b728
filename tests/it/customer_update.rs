//! Customer billing details and updates (`POST /v1/customers/{id}`), the currency lock, and
//! `GET /v1/subscriptions`.

use serde_json::{json, Value};

use crate::harness::{at, Daemon};

async fn updated_notifications(d: &Daemon, customer: &str) -> Vec<Value> {
    let page = d
        .get(&format!(
            "/v1/notifications?type=customer.updated&customer={customer}&limit=500"
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.json);
    page.json["data"].as_array().cloned().unwrap_or_default()
}

fn address() -> Value {
    json!({"line1": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117",
           "country": "DE"})
}

#[tokio::test]
async fn details_are_created_shown_updated_and_cleared_with_null() {
    let d = Daemon::start().await;
    let created = d
        .post(
            "/v1/customers",
            Some("c"),
            &json!({"external_id": "acme", "currency": "EUR", "name": "Acme",
                    "legal_name": "Acme GmbH", "address": address(),
                    "tax_ids": [{"type": "eu_vat", "value": "DE123456789"}],
                    "locale": "de-DE", "metadata": {"k": "v"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json);
    let id = created.json["id"].as_str().expect("id").to_string();
    let path = format!("/v1/customers/{id}");
    let shown = d.get(&path).await.json;
    assert_eq!(shown, created.json);
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["legal_name"], "Acme GmbH");
    assert_eq!(shown["address"]["country"], "DE");
    assert_eq!(shown["address"]["line2"], Value::Null);
    assert_eq!(shown["tax_ids"][0]["type"], "eu_vat");
    assert_eq!(shown["locale"], "de-DE");

    // Only the given fields change.
    let moved = d
        .post(
            &path,
            Some("u1"),
            &json!({"name": "Acme Berlin", "address": {"line1": "Friedrichstr. 2",
                    "line2": "3. OG", "city": "Berlin", "postal_code": "10117",
                    "region": "BE", "country": "DE"}}),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.json);
    assert_eq!(moved.json["version"], 2);
    assert_eq!(moved.json["name"], "Acme Berlin");
    assert_eq!(moved.json["address"]["line2"], "3. OG");
    assert_eq!(moved.json["legal_name"], "Acme GmbH");
    assert_eq!(moved.json["tax_ids"], shown["tax_ids"]);
    assert_eq!(moved.json["metadata"], json!({"k": "v"}));
    assert_eq!(moved.json["external_id"], "acme");
    assert_eq!(d.get(&path).await.json, moved.json);

    // null clears each optional field; metadata and tax_ids become empty.
    let cleared = d
        .post(
            &path,
            Some("u2"),
            &json!({"name": null, "legal_name": null, "address": null, "tax_ids": null,
                    "locale": null, "metadata": null, "email": null}),
        )
        .await;
    assert_eq!(cleared.status, 200, "{}", cleared.json);
    assert_eq!(cleared.json["version"], 3);
    for field in ["name", "legal_name", "address", "locale", "email"] {
        assert_eq!(cleared.json[field], Value::Null, "{field}");
    }
    assert_eq!(cleared.json["tax_ids"], json!([]));
    assert_eq!(cleared.json["metadata"], json!({}));
    assert_eq!(cleared.json["currency"], "EUR");
    assert_eq!(d.get(&path).await.json, cleared.json);

    // The same external id is no change; another is refused.
    let same = d
        .post(&path, Some("u3"), &json!({"external_id": "acme"}))
        .await;
    assert_eq!(same.status, 200);
    assert_eq!(same.json["version"], 3);
    let other = d
        .post(&path, Some("u4"), &json!({"external_id": "acme-2"}))
        .await;
    other.assert_problem(422, "field_immutable");
    assert_eq!(other.fields(), vec!["external_id"]);
    d.post(
        "/v1/customers/cus_00000000000000000000000000",
        Some("u5"),
        &json!({"name": "x"}),
    )
    .await
    .assert_problem(404, "resource_missing");
    d.post(&path, None, &json!({"name": "x"}))
        .await
        .assert_problem(400, "idempotency_key_missing");
    assert_eq!(updated_notifications(&d, &id).await.len(), 2);
}

#[tokio::test]
async fn a_replay_answers_the_same_and_one_update_notifies_once() {
    let d = Daemon::start().await;
    let id = d.customer("replayed", "USD").await;
    let path = format!("/v1/customers/{id}");
    let body = json!({"legal_name": "Replayed Inc.", "locale": "en-US"});
    let first = d.post(&path, Some("same-key"), &body).await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(first.header("idempotent-replayed"), Some("false"));
    let again = d.post(&path, Some("same-key"), &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.bytes, first.bytes);
    // The same change under a new key changes nothing: no new version, no notification.
    let unchanged = d.post(&path, Some("other-key"), &body).await;
    assert_eq!(unchanged.status, 200);
    assert_eq!(unchanged.json["version"], 2);
    let notes = updated_notifications(&d, &id).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["data"]["object"], d.get(&path).await.json);
    assert_eq!(notes[0]["data"]["object"]["version"], 2);
    // The same key with another body is refused and executes nothing.
    d.post(&path, Some("same-key"), &json!({"locale": "fr"}))
        .await
        .assert_problem(422, "idempotency_key_reused");
    assert_eq!(d.get(&path).await.json["locale"], "en-US");
}

#[tokio::test]
async fn currency_is_locked_by_a_live_subscription_and_by_any_invoice() {
    let d = Daemon::start().await;
    let id = d.customer("billed", "USD").await;
    let path = format!("/v1/customers/{id}");
    let plan = d
        .post(
            "/v1/plans",
            Some("p"),
            &json!({"code": "daily", "name": "Daily", "currency": "USD", "interval": "day",
                    "fixed_fee": {"amount_minor": 1000, "timing": "in_arrears"}}),
        )
        .await;
    assert_eq!(plan.status, 201, "{}", plan.json);
    let today = &at(0)[..10];
    let start = tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t");
    let sub = d
        .post(
            "/v1/subscriptions",
            Some("s"),
            &json!({"customer": id, "plan": "daily",
                    "start_at": tally::clock::rfc3339(start - 3 * 86_400_000)}),
        )
        .await;
    assert_eq!(sub.status, 201, "{}", sub.json);
    let sub_id = sub.json["id"].as_str().expect("id").to_string();

    let locked = d.post(&path, Some("k1"), &json!({"currency": "EUR"})).await;
    locked.assert_problem(409, "currency_locked");
    assert_eq!(locked.fields(), vec!["currency"]);
    assert!(
        locked.json["detail"]
            .as_str()
            .is_some_and(|t| t.contains(&sub_id)),
        "{}",
        locked.json
    );

    let run = d.post("/v1/billing-runs", Some("r"), &json!({})).await;
    assert!(run.status == 200 || run.status == 201, "{}", run.json);
    let cancel = d
        .post(
            &format!("/v1/subscriptions/{sub_id}/cancel"),
            Some("c"),
            &json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(cancel.json["status"], "canceled", "{}", cancel.json);
    let invoices = d.get(&format!("/v1/invoices?customer={id}")).await;
    let first_invoice = invoices.json["data"][0]["id"]
        .as_str()
        .expect("an invoice")
        .to_string();

    let still = d.post(&path, Some("k2"), &json!({"currency": "EUR"})).await;
    still.assert_problem(409, "currency_locked");
    assert!(
        still.json["detail"]
            .as_str()
            .is_some_and(|t| t.contains(&first_invoice)),
        "{}",
        still.json
    );
    // Other fields still change, and the refused currency stays.
    let renamed = d
        .post(
            &path,
            Some("k3"),
            &json!({"currency": "USD", "name": "Billed"}),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.json);
    assert_eq!(renamed.json["currency"], "USD");
    assert_eq!(renamed.json["version"], 2);

    let free = d.customer("unbilled", "USD").await;
    let changed = d
        .post(
            &format!("/v1/customers/{free}"),
            Some("k4"),
            &json!({"currency": "EUR"}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.json);
    assert_eq!(changed.json["currency"], "EUR");
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_nothing_is_stored() {
    let d = Daemon::start().await;
    let id = d.customer("strict", "USD").await;
    let path = format!("/v1/customers/{id}");
    let before = d.get(&path).await.json;
    let with_address = |field: &str, value: Value| {
        let mut a = address();
        a[field] = value;
        json!({"address": a})
    };
    let six: Vec<Value> = (0..6)
        .map(|i| json!({"type": "ca_bn", "value": format!("12345678{i}")}))
        .collect();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            with_address("country", json!("de")),
            400,
            "validation_failed",
            "address.country",
        ),
        (
            with_address("country", json!("UK")),
            400,
            "validation_failed",
            "address.country",
        ),
        (
            with_address("line1", json!("")),
            400,
            "validation_failed",
            "address.line1",
        ),
        (
            with_address("line1", json!("x".repeat(201))),
            400,
            "validation_failed",
            "address.line1",
        ),
        (
            with_address("city", json!("x".repeat(101))),
            400,
            "validation_failed",
            "address.city",
        ),
        (
            with_address("postal_code", json!("1".repeat(21))),
            400,
            "validation_failed",
            "address.postal_code",
        ),
        (
            json!({"address": {"line1": "a", "postal_code": "1", "country": "DE"}}),
            400,
            "validation_failed",
            "address.city",
        ),
        (
            json!({"tax_ids": [{"type": "xx_vat", "value": "1"}]}),
            400,
            "validation_failed",
            "tax_ids.0.type",
        ),
        (
            json!({"tax_ids": [{"type": "gb_vat", "value": "GB12"}]}),
            400,
            "validation_failed",
            "tax_ids.0.value",
        ),
        (json!({"tax_ids": six}), 400, "validation_failed", "tax_ids"),
        (
            json!({"locale": "en_US"}),
            400,
            "validation_failed",
            "locale",
        ),
        (
            json!({"locale": format!("en-{}", "abcdefgh-".repeat(4))}),
            400,
            "validation_failed",
            "locale",
        ),
        (
            json!({"legal_name": ""}),
            400,
            "validation_failed",
            "legal_name",
        ),
        (
            json!({"legal_name": "x".repeat(513)}),
            400,
            "validation_failed",
            "legal_name",
        ),
        (
            json!({"name": "x".repeat(513)}),
            400,
            "validation_failed",
            "name",
        ),
        (
            json!({"email": "not-an-address"}),
            400,
            "validation_failed",
            "email",
        ),
        (
            json!({"metadata": {"": "v"}}),
            400,
            "validation_failed",
            "metadata.",
        ),
        (
            json!({"currency": "usd"}),
            400,
            "validation_failed",
            "currency",
        ),
        (
            json!({"currency": null}),
            400,
            "validation_failed",
            "currency",
        ),
        (
            json!({"external_id": "moved", "name": "x"}),
            422,
            "field_immutable",
            "external_id",
        ),
        (
            json!({"nickname": "x"}),
            400,
            "validation_failed",
            "nickname",
        ),
    ];
    for (i, (body, status, code, field)) in cases.iter().enumerate() {
        let r = d.post(&path, Some(&format!("bad-{i}")), body).await;
        r.assert_problem(*status, code);
        assert_eq!(r.fields(), vec![field.to_string()], "{body}: {}", r.json);
    }
    assert_eq!(d.get(&path).await.json, before);
    assert!(updated_notifications(&d, &id).await.is_empty());

    // The same ranges apply when creating.
    let bad_create = d
        .post(
            "/v1/customers",
            Some("bad-create"),
            &json!({"external_id": "nowhere", "currency": "USD",
                    "address": with_address("country", json!("XX"))["address"]}),
        )
        .await;
    bad_create.assert_problem(400, "validation_failed");
    assert_eq!(bad_create.fields(), vec!["address.country"]);
    let none = d.get("/v1/customers?external_id=nowhere").await;
    assert_eq!(none.json["data"], json!([]));
}

#[tokio::test]
async fn subscriptions_list_by_customer_plan_and_status_page_by_page() {
    let d = Daemon::start().await;
    let a = d.customer("a", "USD").await;
    let b = d.customer("b", "USD").await;
    let mut plans = Vec::new();
    for code in ["basic", "pro"] {
        let p = d
            .post(
                "/v1/plans",
                Some(&format!("plan-{code}")),
                &json!({"code": code, "name": code, "currency": "USD", "interval": "month"}),
            )
            .await;
        assert_eq!(p.status, 201, "{}", p.json);
        plans.push(p.json["id"].as_str().expect("id").to_string());
    }
    // (customer, plan code), in creation order.
    let wanted = [
        (&a, "basic"),
        (&b, "basic"),
        (&a, "pro"),
        (&b, "pro"),
        (&a, "basic"),
    ];
    let mut subs = Vec::new();
    for (i, (customer, plan)) in wanted.iter().enumerate() {
        let s = d
            .post(
                "/v1/subscriptions",
                Some(&format!("sub-{i}")),
                &json!({"customer": customer, "plan": plan}),
            )
            .await;
        assert_eq!(s.status, 201, "{}", s.json);
        subs.push(s.json["id"].as_str().expect("id").to_string());
    }
    let canceled = d
        .post(
            &format!("/v1/subscriptions/{}/cancel", subs[4]),
            Some("cancel-now"),
            &json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(canceled.json["status"], "canceled", "{}", canceled.json);
    let canceling = d
        .post(
            &format!("/v1/subscriptions/{}/cancel", subs[1]),
            Some("cancel-later"),
            &json!({}),
        )
        .await;
    assert_eq!(canceling.json["status"], "canceling", "{}", canceling.json);

    // Walks every page of a query with `limit`, returning the ids in order.
    let walk = |query: String, limit: usize| {
        let d = &d;
        async move {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..20 {
                let sep = if query.is_empty() { "" } else { "&" };
                let url = match &cursor {
                    Some(c) => {
                        format!("/v1/subscriptions?limit={limit}{sep}{query}&starting_after={c}")
                    }
                    None => format!("/v1/subscriptions?limit={limit}{sep}{query}"),
                };
                let page = d.get(&url).await;
                assert_eq!(page.status, 200, "{url}: {}", page.json);
                for s in page.json["data"].as_array().expect("data") {
                    assert_eq!(s["object"], "subscription");
                    seen.push(s["id"].as_str().expect("id").to_string());
                }
                if page.json["has_more"] == false {
                    assert!(page.json["next_cursor"].is_null());
                    return seen;
                }
                cursor = page.json["next_cursor"].as_str().map(str::to_string);
            }
            panic!("{query}: the pages never ended");
        }
    };
    let pick = |indexes: &[usize]| indexes.iter().map(|&i| subs[i].clone()).collect::<Vec<_>>();
    assert_eq!(walk(String::new(), 2).await, subs);
    assert_eq!(walk(String::new(), 500).await, subs);
    assert_eq!(walk(format!("customer={a}"), 1).await, pick(&[0, 2, 4]));
    assert_eq!(walk(format!("customer={b}"), 2).await, pick(&[1, 3]));
    assert_eq!(walk("plan=basic".into(), 2).await, pick(&[0, 1, 4]));
    assert_eq!(walk(format!("plan={}", plans[1]), 2).await, pick(&[2, 3]));
    assert_eq!(walk("status=active".into(), 1).await, pick(&[0, 2, 3]));
    assert_eq!(walk("status=canceling".into(), 2).await, pick(&[1]));
    assert_eq!(walk("status=canceled".into(), 2).await, pick(&[4]));
    assert_eq!(
        walk(format!("customer={a}&plan=basic&status=active"), 2).await,
        pick(&[0])
    );
    let shown = d.get("/v1/subscriptions?limit=1").await.json;
    assert_eq!(
        shown["data"][0],
        d.get(&format!("/v1/subscriptions/{}", subs[0])).await.json
    );

    for (query, status, code, field) in [
        ("status=paused", 400, "validation_failed", "status"),
        ("customer=a", 400, "validation_failed", "customer"),
        ("plan=enterprise", 404, "resource_missing", "plan"),
        (
            "starting_after=cus_00000000000000000000000000",
            400,
            "validation_failed",
            "starting_after",
        ),
        ("limit=0", 400, "validation_failed", "limit"),
        ("colour=blue", 400, "validation_failed", "colour"),
    ] {
        let r = d.get(&format!("/v1/subscriptions?{query}")).await;
        r.assert_problem(status, code);
        assert_eq!(r.fields(), vec![field.to_string()], "{query}: {}", r.json);
    }
}
