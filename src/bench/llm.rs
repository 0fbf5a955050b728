//! The realistic ingest scenarios: LLM-call events as an AI product sends them.
//!
//! Each event carries about 250 bytes of properties (model, input, output, cached and total
//! tokens, region, user, API key, request id, finish reason, latency, streaming) for one of
//! [`CUSTOMERS`] customers (five end users each), and its type feeds three meters: the sum of tokens, a count and the
//! unique users. Its id is a UUIDv7 (time-ordered, what the README recommends) or a UUIDv4
//! (random, what many clients send). `llm` sends one event per request, `llm-batch`
//! [`BATCH_EVENTS`]; a `-v4` suffix switches to random ids. The same builder serves the prefill
//! that grows the database before a run, the HTTP ceiling and the PostgreSQL peer, so every
//! figure of a run is measured with the same bodies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::deliveries::Outcome;
use super::{drive, post, MakeRequest, Target};

/// Customers the events spread over.
pub const CUSTOMERS: u64 = 1_000;
/// End users per customer (an end user belongs to one customer's product).
const USERS_PER_CUSTOMER: u64 = 5;
/// Events per request in the batch scenarios and in the prefill.
pub const BATCH_EVENTS: u64 = 100;
/// Requests the prefill keeps in flight.
pub const PREFILL_IN_FLIGHT: usize = 8;
/// The prefill's events are timestamped over this many days before now, oldest first, as a
/// deployment running for a month holds them (the ingest window allows 35 days by default):
/// rollups then hold a month of buckets, as they would, rather than the last few minutes.
pub const PREFILL_SPAN_DAYS: i64 = 30;

const MODELS: [&str; 6] = [
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-2024-08-06",
    "claude-3-5-sonnet-20241022",
    "claude-3-5-haiku-20241022",
    "llama-3.1-70b-instruct",
    "mistral-large-2411",
];
const REGIONS: [&str; 8] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
];
const BASE32: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// How the client names its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// UUIDv7: a millisecond timestamp first, so ids arrive in order.
    Ordered,
    /// UUIDv4: 122 random bits.
    Random,
}

/// A scenario name's shape: events per request and id kind, if it is one of these.
pub fn shape(scenario: &str) -> Option<(u64, Ids)> {
    Some(match scenario {
        "llm" => (1, Ids::Ordered),
        "llm-v4" => (1, Ids::Random),
        "llm-batch" => (BATCH_EVENTS, Ids::Ordered),
        "llm-batch-v4" => (BATCH_EVENTS, Ids::Random),
        _ => return None,
    })
}

/// What the scenarios share within a run: the event type, its customers and its meters.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// The event type every meter reads.
    pub event_type: String,
    /// External ids of the customers.
    pub customers: Arc<Vec<String>>,
    /// The count meter's key (the stored-count check reads it).
    pub count_meter: String,
    /// A seed so two runs never send the same ids.
    seed: u64,
}

impl Fixtures {
    /// Creates the customers and the three meters.
    pub async fn create(
        client: &reqwest::Client,
        target: &Target,
        tag: &str,
    ) -> anyhow::Result<Self> {
        let suffix = tag
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let event_type = format!("llm.call.{suffix}");
        let meters = [
            json!({"key": format!("llm_tokens_{suffix}"), "event_type": event_type, "aggregation": "sum", "value_property": "total_tokens"}),
            json!({"key": format!("llm_calls_{suffix}"), "event_type": event_type, "aggregation": "count"}),
            json!({"key": format!("llm_users_{suffix}"), "event_type": event_type, "aggregation": "unique_count", "unique_property": "user_id"}),
        ];
        for (i, meter) in meters.into_iter().enumerate() {
            let created = post(
                client,
                target,
                "/v1/meters",
                &format!("{tag}-llm-m{i}"),
                meter,
            )
            .await?;
            // On a database created before 0.11.0 a meter on even a new type first scans the
            // stored events; plans refuse it until then.
            super::stall::backfilled(client, target, created).await?;
        }
        let customers: Vec<String> = (0..CUSTOMERS)
            .map(|i| format!("llm-{suffix}-{i}"))
            .collect();
        let mut tasks = Vec::new();
        for (i, external) in customers.iter().enumerate() {
            let (client, target_base, key, external) = (
                client.clone(),
                target.base.clone(),
                target.key.clone(),
                external.clone(),
            );
            let idem = format!("{tag}-llm-c{i}");
            tasks.push(tokio::spawn(async move {
                client
                    .post(format!("{target_base}/v1/customers"))
                    .bearer_auth(key)
                    .header("Idempotency-Key", idem)
                    .json(&json!({"external_id": external, "currency": "USD"}))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }));
            if tasks.len() >= 32 {
                for t in tasks.drain(..) {
                    anyhow::ensure!(t.await?, "cannot create the benchmark's customers");
                }
            }
        }
        for t in tasks {
            anyhow::ensure!(t.await?, "cannot create the benchmark's customers");
        }
        let mut seed_bytes = [0u8; 8];
        let _ = getrandom::fill(&mut seed_bytes);
        Ok(Self {
            event_type,
            customers: Arc::new(customers),
            count_meter: format!("llm_calls_{suffix}"),
            seed: u64::from_le_bytes(seed_bytes),
        })
    }

    /// A request body of `per` events for client `client_no`'s `seq`-th request.
    pub fn body(&self, client_no: usize, seq: u64, per: u64, ids: Ids) -> Vec<u8> {
        self.body_at(client_no, seq, per, ids, None)
    }

    /// [`Self::body`] with every event timestamped at `timestamp_ms` (else none: the server's
    /// clock).
    fn body_at(
        &self,
        client_no: usize,
        seq: u64,
        per: u64,
        ids: Ids,
        timestamp_ms: Option<i64>,
    ) -> Vec<u8> {
        let mut rng = Rng::new(self.seed ^ ((client_no as u64) << 40) ^ seq.wrapping_mul(per));
        let events: Vec<Value> = (0..per)
            .map(|_| self.event(&mut rng, ids, timestamp_ms))
            .collect();
        let value = if per == 1 {
            events.into_iter().next().unwrap_or(Value::Null)
        } else {
            json!({ "events": events })
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// The request builder the load generator calls: `POST /v1/events` with [`Self::body`].
    pub(super) fn requests(&self, per: u64, ids: Ids) -> MakeRequest {
        let f = self.clone();
        Arc::new(move |client_no, seq| {
            let body = f.body(client_no, seq, per, ids);
            ("/v1/events".to_string(), None, Some(body))
        })
    }

    fn event(&self, rng: &mut Rng, ids: Ids, timestamp_ms: Option<i64>) -> Value {
        let customer_no = rng.next() % CUSTOMERS;
        let customer = &self.customers[customer_no as usize];
        let input = 50 + rng.next() % 4_000;
        let output = 10 + rng.next() % 1_500;
        let id = match ids {
            Ids::Ordered => uuid_v7(timestamp_ms.unwrap_or_else(crate::clock::now_ms), rng),
            Ids::Random => uuid_v4(rng),
        };
        let mut event = json!({
            "id": id,
            "customer": customer,
            "type": self.event_type,
            "properties": {
                "model": MODELS[(rng.next() % 6) as usize],
                "input_tokens": input,
                "output_tokens": output,
                "cached_tokens": rng.next() % (input / 2 + 1),
                "total_tokens": input + output,
                "region": REGIONS[(rng.next() % 8) as usize],
                "user_id": format!(
                    "user_{:06}",
                    customer_no * USERS_PER_CUSTOMER + rng.next() % USERS_PER_CUSTOMER
                ),
                "api_key_id": format!("key_{:04}", rng.next() % 64),
                "request_id": format!("req_{}", base32(rng, 26)),
                "finish_reason": if rng.next().is_multiple_of(10) { "length" } else { "stop" },
                "latency_ms": 120 + rng.next() % 9_000,
                "stream": rng.next().is_multiple_of(2),
            }
        });
        if let Some(ms) = timestamp_ms {
            event["timestamp"] = json!(crate::clock::rfc3339(ms));
        }
        event
    }

    /// Events counted by the count meter over every customer since `from`.
    pub async fn stored(
        &self,
        client: &reqwest::Client,
        target: &Target,
        from: &str,
    ) -> anyhow::Result<u64> {
        let mut total = 0;
        for customer in self.customers.iter() {
            total += super::usage_total(client, target, customer, &self.count_meter, from).await?;
        }
        Ok(total)
    }

    /// Stores `events` events in batches, [`PREFILL_IN_FLIGHT`] requests at a time, spread in
    /// time order over the [`PREFILL_SPAN_DAYS`] before now; returns how many were
    /// acknowledged.
    pub async fn prefill(
        &self,
        client: &reqwest::Client,
        target: &Target,
        events: u64,
    ) -> anyhow::Result<u64> {
        let acknowledged = Arc::new(AtomicU64::new(0));
        let mut in_flight = Vec::new();
        let mut sent = 0u64;
        let mut seq = 0u64;
        let span_ms = PREFILL_SPAN_DAYS * 86_400_000;
        let start_ms = crate::clock::now_ms() - span_ms;
        while sent < events {
            let per = (events - sent).min(BATCH_EVENTS);
            let offset_ms = i64::try_from(u128::from(sent) * span_ms as u128 / u128::from(events))
                .unwrap_or(span_ms);
            let body = self.body_at(
                usize::MAX >> 8,
                seq,
                per,
                Ids::Ordered,
                Some(start_ms + offset_ms),
            );
            let (client, url, key, acknowledged) = (
                client.clone(),
                format!("{}/v1/events", target.base),
                target.key.clone(),
                Arc::clone(&acknowledged),
            );
            in_flight.push(tokio::spawn(async move {
                let reply = client
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body)
                    .timeout(Duration::from_secs(120))
                    .send()
                    .await;
                if let Ok(r) = reply {
                    if let Ok(text) = r.bytes().await {
                        let n = super::client::count(&text, br#""status":"accepted""#);
                        acknowledged.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }));
            if in_flight.len() >= PREFILL_IN_FLIGHT {
                for t in in_flight.drain(..) {
                    t.await?;
                }
            }
            sent += per;
            seq += 1;
        }
        for t in in_flight {
            t.await?;
        }
        Ok(acknowledged.load(Ordering::Relaxed))
    }
}

/// Drives one of the realistic scenarios (`shape(scenario)`) and checks that every
/// acknowledged event was counted once by the count meter.
pub(super) async fn run(
    client: &reqwest::Client,
    target: &Target,
    fixtures: &Fixtures,
    (per, ids): (u64, Ids),
    clients: usize,
    duration: Duration,
    from: &str,
) -> anyhow::Result<Outcome> {
    let before = fixtures.stored(client, target, from).await?;
    let accepted = Arc::new(AtomicU64::new(0));
    let make = fixtures.requests(per, ids);
    let (latencies, errors, elapsed) =
        drive(target, clients, duration, make, Arc::clone(&accepted)).await;
    let after = fixtures.stored(client, target, from).await?;
    let acked = accepted.load(Ordering::Relaxed);
    Ok(Outcome {
        latencies,
        errors,
        elapsed,
        verified: after - before == acked,
        check: format!("{acked} acknowledged events, {} stored", after - before),
    })
}

/// splitmix64: a fast, well-mixed generator; each request seeds its own, so clients never
/// contend and no two requests of a run repeat an id.
struct Rng(u64);

impl Rng {
    /// Mixed once, so nearby seeds (consecutive requests) start far apart.
    fn new(seed: u64) -> Self {
        let mut rng = Self(seed);
        Self(rng.next())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn base32(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(BASE32[(rng.next() % 32) as usize]))
        .collect()
}

/// A UUID's text form of 16 bytes.
fn uuid_text(bytes: [u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// RFC 9562 version 7: 48-bit Unix milliseconds, then random bits.
fn uuid_v7(now_ms: i64, rng: &mut Rng) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next().to_be_bytes());
    bytes[8..].copy_from_slice(&rng.next().to_be_bytes());
    let ms = u64::try_from(now_ms).unwrap_or(0).to_be_bytes();
    bytes[..6].copy_from_slice(&ms[2..]);
    bytes[6] = (bytes[6] & 0x0F) | 0x70;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    uuid_text(bytes)
}

/// RFC 9562 version 4: random.
fn uuid_v4(rng: &mut Rng) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next().to_be_bytes());
    bytes[8..].copy_from_slice(&rng.next().to_be_bytes());
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    uuid_text(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> Fixtures {
        Fixtures {
            event_type: "llm.call.x".into(),
            customers: Arc::new((0..CUSTOMERS).map(|i| format!("c{i}")).collect()),
            count_meter: "llm_calls_x".into(),
            seed: 7,
        }
    }

    #[test]
    fn an_event_carries_about_250_bytes_of_properties() {
        let body: Value =
            serde_json::from_slice(&fixtures().body(0, 0, 1, Ids::Ordered)).expect("json");
        let properties = serde_json::to_vec(&body["properties"]).expect("json").len();
        assert!((220..=300).contains(&properties), "{properties} bytes");
        assert_eq!(
            body["properties"]["total_tokens"].as_u64(),
            Some(
                body["properties"]["input_tokens"].as_u64().unwrap_or(0)
                    + body["properties"]["output_tokens"].as_u64().unwrap_or(0)
            )
        );
    }

    #[test]
    fn uuids_have_their_version_and_v7_starts_with_the_time() {
        let mut rng = Rng::new(1);
        let v7 = uuid_v7(0x0123_4567_89AB, &mut rng);
        assert!(v7.starts_with("01234567-89ab-7"), "{v7}");
        let v4 = uuid_v4(&mut rng);
        assert_eq!(v4.len(), 36);
        assert_eq!(&v4[14..15], "4");
        assert!(matches!(&v4[19..20], "8" | "9" | "a" | "b"), "{v4}");
    }

    #[test]
    fn requests_never_repeat_an_id() {
        let f = fixtures();
        let mut seen = std::collections::HashSet::new();
        for client in 0..4 {
            for seq in 0..50 {
                let body: Value =
                    serde_json::from_slice(&f.body(client, seq, BATCH_EVENTS, Ids::Random))
                        .expect("json");
                for e in body["events"].as_array().expect("events") {
                    assert!(seen.insert(e["id"].as_str().expect("id").to_string()));
                }
            }
        }
    }
}
