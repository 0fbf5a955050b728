//! `/openapi.json`: a valid OpenAPI document (checked by a real validator when one is
//! installed) that documents what the server does, and live replies that match it.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::Daemon;

async fn document(d: &Daemon) -> Value {
    let r = d.send(d.client.get(d.url("/openapi.json"))).await;
    assert_eq!(r.status, 200);
    r.json
}

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn the_document_is_valid_and_documents_the_shared_replies_and_limits() {
    let d = Daemon::start().await;
    let doc = document(&d).await;
    let mut ids = BTreeMap::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or("").to_string();
        assert!(!id.is_empty(), "{method} {path} has no operationId");
        if let Some(other) = ids.insert(id.clone(), format!("{method} {path}")) {
            panic!("operationId {id} is used by {other} and {method} {path}");
        }
        let responses = op["responses"].as_object().expect("responses");
        let has = |status: &str| responses.contains_key(status);
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        if secured {
            assert!(has("401"), "{method} {path} does not document 401");
        }
        if method == "post" {
            assert!(has("503"), "{method} {path} does not document 503");
            assert!(has("413"), "{method} {path} does not document 413");
        }
        let json_body = op["requestBody"]["content"]
            .as_object()
            .is_some_and(|c| c.keys().any(|k| k.ends_with("json")));
        if json_body && path != "/v1/hooks/{endpoint_id}" {
            assert!(has("415"), "{method} {path} does not document 415");
        }
        for parameter in op["parameters"].as_array().into_iter().flatten() {
            match (parameter["in"].as_str(), parameter["name"].as_str()) {
                (Some("query"), Some("limit")) => {
                    assert_eq!(parameter["schema"]["minimum"], 1, "{method} {path}");
                    assert_eq!(parameter["schema"]["maximum"], 500, "{method} {path}");
                }
                (Some("query"), Some("from" | "to" | "at")) => {
                    assert_eq!(
                        parameter["schema"]["format"], "date-time",
                        "{method} {path}"
                    );
                }
                (Some("header"), Some("Idempotency-Key")) => {
                    assert_eq!(parameter["schema"]["minLength"], 1, "{method} {path}");
                    assert!(parameter["schema"]["pattern"].is_string());
                    assert!(has("409") && has("422"), "{method} {path}");
                }
                _ => {}
            }
        }
    }
    assert!(ids.len() >= 50, "{} operations", ids.len());
    let ingest = &doc["paths"]["/v1/events"]["post"]["requestBody"]["content"];
    for media in [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
    ] {
        assert!(ingest.get(media).is_some(), "POST /v1/events lacks {media}");
    }
    let customer = &doc["components"]["schemas"]["CreateCustomerRequest"]["properties"];
    assert_eq!(customer["external_id"]["maxLength"], 255);
    assert_eq!(
        doc["components"]["schemas"]["CustomerResponse"]["properties"]["created_at"]["format"],
        "date-time"
    );
    if !python_has("openapi_spec_validator") {
        eprintln!("openapi-spec-validator is not installed; structural checks only");
        return;
    }
    let file = d.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).expect("json")).expect("write");
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run the validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Validates each (component schema, instance) pair with the `jsonschema` package that the
/// validator brings along (OpenAPI 3.1 schemas are JSON Schema 2020-12).
const CONFORMS: &str = r##"
import json, sys
import jsonschema
doc = json.load(open(sys.argv[1]))
failures = []
for case in json.load(open(sys.argv[2])):
    schema = {"$ref": "#/components/schemas/" + case["schema"], "components": doc["components"]}
    for error in jsonschema.Draft202012Validator(schema).iter_errors(case["instance"]):
        failures.append(case["what"] + ": " + error.message + " at " + "/".join(map(str, error.absolute_path)))
print("\n".join(failures))
sys.exit(1 if failures else 0)
"##;

#[tokio::test]
async fn replies_conform_to_the_documented_schemas() {
    let d = Daemon::start().await;
    let doc = document(&d).await;
    let mut cases = Vec::new();
    let mut case = |what: &str, schema: &str, instance: &Value| {
        cases.push(json!({"what": what, "schema": schema, "instance": instance}));
    };
    let created = d
        .post(
            "/v1/customers",
            Some("c1"),
            &json!({"external_id": "acme", "currency": "USD", "metadata": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(created.status, 201);
    case("POST /v1/customers", "CustomerResponse", &created.json);
    let list = d.get("/v1/customers").await;
    case("GET /v1/customers", "Page_CustomerResponse", &list.json);
    let customer = created.json["id"].as_str().expect("id").to_string();
    let updated = d
        .post(
            &format!("/v1/customers/{customer}"),
            Some("c3"),
            &json!({"legal_name": "Acme GmbH", "locale": "de-DE",
                    "tax_ids": [{"type": "eu_vat", "value": "DE123456789"}],
                    "address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
                                "country": "DE"}}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.json);
    case("POST /v1/customers/{id}", "CustomerResponse", &updated.json);
    let plan = d
        .post(
            "/v1/plans",
            Some("p1"),
            &json!({"code": "monthly", "name": "Monthly", "currency": "USD", "interval": "month"}),
        )
        .await;
    assert_eq!(plan.status, 201, "{}", plan.json);
    let sub = d
        .post(
            "/v1/subscriptions",
            Some("s1"),
            &json!({"customer": customer, "plan": "monthly"}),
        )
        .await;
    assert_eq!(sub.status, 201, "{}", sub.json);
    let subs = d.get("/v1/subscriptions?plan=monthly").await;
    assert_eq!(subs.json["data"].as_array().map(Vec::len), Some(1));
    case(
        "GET /v1/subscriptions",
        "Page_SubscriptionResponse",
        &subs.json,
    );
    let ingest = d
        .post(
            "/v1/events",
            None,
            &json!({"events": [{"customer": "acme", "type": "x"}, {"customer": "nobody", "type": "x"}]}),
        )
        .await;
    case("POST /v1/events", "IngestResponse", &ingest.json);
    let sent_at = crate::harness::at(-60);
    let mut stable = json!({"id": "s1", "customer": "acme", "type": "x", "timestamp": sent_at,
                            "properties": {"n": 1}});
    let first = d.post("/v1/events", None, &stable).await;
    d.post("/v1/events", Some("dup"), &stable).await;
    stable["properties"]["n"] = json!(2);
    d.post("/v1/events", None, &stable).await;
    let event = first.json["results"][0]["id"].as_str().expect("event");
    let got = d.get(&format!("/v1/events/{event}")).await;
    assert_eq!(got.status, 200, "{}", got.json);
    case("GET /v1/events/{id}", "EventDetail", &got.json);
    let anomalies = d.get("/v1/event-anomalies").await;
    assert_eq!(anomalies.json["data"].as_array().map(Vec::len), Some(2));
    case("GET /v1/event-anomalies", "AnomalyPage", &anomalies.json);
    let unauthorized = d.send(d.client.get(d.url("/v1/customers"))).await;
    unauthorized.assert_problem(401, "unauthorized");
    case("401", "Problem", &unauthorized.json);
    let media = d
        .send(
            d.client
                .post(d.url("/v1/customers"))
                .bearer_auth(&d.key)
                .header("Idempotency-Key", "c2")
                .header("content-type", "text/plain")
                .body("acme"),
        )
        .await;
    media.assert_problem(415, "unsupported_media_type");
    case("415", "Problem", &media.json);
    // A signed delivery that is not JSON must not break the listing's schema.
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let ep = d
        .post(
            "/v1/webhook-endpoints",
            Some("ep"),
            &json!({"provider": "standard", "secret": secret}),
        )
        .await;
    let ep = ep.json["id"].as_str().expect("endpoint").to_string();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    for (n, body) in ["", "not json", r#"{"type": "other"}"#]
        .into_iter()
        .enumerate()
    {
        let id = format!("msg_{n}");
        let sig = tally::webhooks::signature::sign_standard(secret, &id, now_s, body.as_bytes())
            .expect("sign");
        let r = d
            .send(
                d.client
                    .post(d.url(&format!("/v1/hooks/{ep}")))
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", now_s.to_string())
                    .header("webhook-signature", format!("v1,{sig}"))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        case("POST /v1/hooks", "ReceivedResponse", &r.json);
    }
    d.eventually("processing", || async {
        let page = d.get("/v1/webhook-events").await;
        page.json["data"]
            .as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|e| e["status"] != "received"))
    })
    .await;
    let events = d.get("/v1/webhook-events").await;
    for e in events.json["data"].as_array().expect("data") {
        assert!(e["payload"].is_object() || e["payload"].is_null(), "{e}");
    }
    case("GET /v1/webhook-events", "WebhookEventPage", &events.json);
    if !python_has("jsonschema") {
        eprintln!("jsonschema is not installed; the payload check above is all");
        return;
    }
    let doc_file = d.dir.path().join("openapi.json");
    let cases_file = d.dir.path().join("cases.json");
    std::fs::write(&doc_file, serde_json::to_vec(&doc).expect("json")).expect("write");
    std::fs::write(&cases_file, serde_json::to_vec(&cases).expect("json")).expect("write");
    let out = Command::new("python3")
        .args(["-c", CONFORMS])
        .arg(&doc_file)
        .arg(&cases_file)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "replies that violate the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
