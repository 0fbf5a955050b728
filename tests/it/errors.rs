//! Bad input: every rejection is problem+json with the right status, code and field, and
//! nothing is written.

use serde_json::json;

use crate::harness::Daemon;

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_writes_nothing() {
    let d = Daemon::start_with("[http]\nbody_limit_bytes = 1024\n").await;
    let post_raw = |body: &'static str, ct: &'static str| {
        d.client
            .post(d.url("/v1/customers"))
            .bearer_auth(&d.key)
            .header("content-type", ct)
            .header("Idempotency-Key", "k")
            .body(body)
    };
    d.send(post_raw("{\"external_id\":", "application/json"))
        .await
        .assert_problem(400, "invalid_json");
    let wrong_type = d
        .post(
            "/v1/customers",
            Some("k"),
            &json!({"external_id": 5, "currency": "USD"}),
        )
        .await;
    wrong_type.assert_problem(400, "validation_failed");
    assert_eq!(wrong_type.fields(), ["external_id"]);
    let unknown = d
        .post(
            "/v1/customers",
            Some("k"),
            &json!({"external_id": "a", "currency": "USD", "color": 1}),
        )
        .await;
    unknown.assert_problem(400, "validation_failed");
    assert_eq!(unknown.fields(), ["color"]);
    let missing = d
        .post("/v1/customers", Some("k"), &json!({"external_id": "a"}))
        .await;
    missing.assert_problem(400, "validation_failed");
    assert_eq!(missing.fields(), ["currency"]);
    for currency in ["XYZ", "usd", "US"] {
        let r = d
            .post(
                "/v1/customers",
                Some("k"),
                &json!({"external_id": "a", "currency": currency}),
            )
            .await;
        r.assert_problem(400, "validation_failed");
        assert_eq!(r.fields(), ["currency"]);
    }
    let big = json!({"external_id": "a", "currency": "USD", "name": "x".repeat(4096)});
    d.post("/v1/customers", Some("k"), &big)
        .await
        .assert_problem(413, "body_too_large");
    d.send(post_raw("{}", "text/plain"))
        .await
        .assert_problem(415, "unsupported_media_type");
    d.get("/v1/nothing-here")
        .await
        .assert_problem(404, "not_found");
    d.send(d.client.delete(d.url("/v1/customers")).bearer_auth(&d.key))
        .await
        .assert_problem(405, "method_not_allowed");
    d.send(d.client.get(d.url("/v1/customers")))
        .await
        .assert_problem(401, "unauthorized");
    d.get_as("tally_sk_not-a-key", "/v1/customers")
        .await
        .assert_problem(401, "unauthorized");
    // Money paths refuse floats and negative amounts.
    let c = d.customer("money", "USD").await;
    let float = d
        .post(
            "/v1/credit-grants",
            Some("g"),
            &json!({"customer": c, "amount_minor": 10.5, "currency": "USD", "category": "paid"}),
        )
        .await;
    float.assert_problem(400, "validation_failed");
    assert_eq!(float.fields(), ["amount_minor"]);
    let negative = d
        .post(
            "/v1/credit-grants",
            Some("g"),
            &json!({"customer": c, "amount_minor": -5, "currency": "USD", "category": "paid"}),
        )
        .await;
    negative.assert_problem(400, "validation_failed");
    let list = d.get("/v1/customers").await;
    assert_eq!(
        list.json["data"].as_array().map(Vec::len),
        Some(1),
        "only the valid customer exists"
    );
    assert_eq!(
        d.get("/v1/accounts").await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}
