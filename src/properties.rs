//! Property and robustness suites for the parsers and the pure logic: canonical JSON, the
//! signature schemes and their header parsers, the Idempotency-Key parser, CloudEvents and
//! native event decoding, pricing and period arithmetic. Arbitrary input must never panic, and
//! each function's laws must hold for any input.

use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use crate::billing::period::{Interval, Schedule};
use crate::billing::pricing::{price, Model, Tier};
use crate::decimal::Stored;
use crate::identity::{canonical_json, fingerprint};

/// Arbitrary JSON values (numbers written in varied notations).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (any::<i32>(), 0u32..6).prop_map(|(m, s)| {
            let text = Decimal::new(i64::from(m), s).to_string();
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
        }),
        "[a-zA-Z0-9 _\\-\u{e9}\u{1F600}\"\\\\]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Writes a value with shuffled object keys and random white space.
fn scramble(value: &Value, seed: &mut u64) -> String {
    let mut next = || {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    };
    fn go(v: &Value, out: &mut String, next: &mut dyn FnMut() -> u64) {
        let ws = |out: &mut String, n: u64| {
            for _ in 0..(n % 3) {
                out.push(if n.is_multiple_of(2) { ' ' } else { '\n' });
            }
        };
        match v {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                let len = entries.len();
                for i in (1..len).rev() {
                    let j = (next() as usize) % (i + 1);
                    entries.swap(i, j);
                }
                out.push('{');
                for (i, (k, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(out, next());
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    ws(out, next());
                    out.push(':');
                    go(item, out, next);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(out, next());
                    go(item, out, next);
                }
                out.push(']');
            }
            Value::Number(n) => {
                // 1 → 1.0 or 10e-1 now and then: equal numbers, other notations.
                let text = n.to_string();
                match next() % 3 {
                    0 if !text.contains(['.', 'e', 'E']) => out.push_str(&format!("{text}.0")),
                    1 if !text.contains(['e', 'E']) => out.push_str(&format!("{text}e0")),
                    _ => out.push_str(&text),
                }
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    go(value, &mut out, &mut next);
    out
}

/// Changes one leaf of a value, if it has any.
fn mutate(value: &mut Value) -> bool {
    match value {
        Value::Null => {
            *value = json!(0);
            true
        }
        Value::Bool(b) => {
            *b = !*b;
            true
        }
        Value::Number(n) => {
            *value = json!(format!("{n}x"));
            true
        }
        Value::String(s) => {
            s.push('!');
            true
        }
        Value::Array(items) => items.iter_mut().any(mutate),
        Value::Object(map) => map.values_mut().any(mutate),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn canonical_json_ignores_order_white_space_and_notation(value in json_value(), seed in any::<u64>()) {
        let canonical = canonical_json(&value);
        let mut s = seed;
        let scrambled = scramble(&value, &mut s);
        let reparsed: Value = serde_json::from_str(&scrambled).expect("scrambled JSON parses");
        prop_assert_eq!(canonical_json(&reparsed), canonical.clone(), "{}", scrambled);
        prop_assert_eq!(
            fingerprint("POST", "/v1/x", &canonical_json(&reparsed)),
            fingerprint("POST", "/v1/x", &canonical)
        );
        // The canonical form is itself JSON with the same canonical form.
        let again: Value = serde_json::from_str(&canonical).expect("canonical parses");
        prop_assert_eq!(canonical_json(&again), canonical);
    }

    #[test]
    fn canonical_json_tells_different_values_apart(value in json_value()) {
        let mut changed = value.clone();
        if mutate(&mut changed) {
            prop_assert_ne!(canonical_json(&changed), canonical_json(&value));
        }
    }

    #[test]
    fn header_parsers_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..300), text in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = crate::idempotency::parse_key(&raw);
        let _ = crate::webhooks::signature::verify_stripe(Some(&text), &body, &["whsec_x"], 1000, 300);
        let _ = crate::webhooks::signature::verify_standard(Some(&text), Some(&text), Some(&text), &body, &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", &text], 1000, 300);
        let _ = crate::decimal::parse(&text);
        let _ = crate::clock::parse_rfc3339(&text);
        let _ = crate::ledger::account::AccountRef::parse(&text);
        let _ = crate::id::Id::parse(&text, "cus");
    }

    #[test]
    fn signatures_round_trip_and_any_change_breaks_them(
        secret_bytes in proptest::collection::vec(any::<u8>(), 16..40),
        body in proptest::collection::vec(any::<u8>(), 1..200),
        t in 1_000_000_000i64..2_000_000_000,
        flip in any::<proptest::sample::Index>(),
    ) {
        use base64::Engine;
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&secret_bytes));
        let stripe = crate::webhooks::signature::sign_stripe(&secret, t, &body);
        let header = format!("t={t},v1={stripe}");
        prop_assert_eq!(crate::webhooks::signature::verify_stripe(Some(&header), &body, &[&secret], t, 300), Ok(t));
        let standard = crate::webhooks::signature::sign_standard(&secret, "msg", t, &body).expect("sign");
        let sig = format!("v1,{standard}");
        let ts = t.to_string();
        prop_assert_eq!(crate::webhooks::signature::verify_standard(Some("msg"), Some(&ts), Some(&sig), &body, &[&secret], t, 300), Ok(()));
        let mut tampered = body.clone();
        let i = flip.index(tampered.len());
        tampered[i] ^= 0x01;
        prop_assert!(crate::webhooks::signature::verify_stripe(Some(&header), &tampered, &[&secret], t, 300).is_err());
        prop_assert!(crate::webhooks::signature::verify_standard(Some("msg"), Some(&ts), Some(&sig), &tampered, &[&secret], t, 300).is_err());
    }

    #[test]
    fn event_decoding_never_panics_and_cloudevents_equal_native(
        body in json_value(),
        id in "[a-z0-9]{1,10}",
        customer in "[a-z]{1,8}",
        kind in "[a-z.]{1,12}",
        secs in 0i64..3_000_000,
        props in json_value(),
    ) {
        let config = crate::config::IngestConfig::default();
        let ctx = crate::ingest::parse::Context { tenant: crate::store::TenantId(1), now_ms: 1_800_000_000_000, config: &config };
        for format in [crate::ingest::parse::Format::Native, crate::ingest::parse::Format::CloudEvent, crate::ingest::parse::Format::CloudEventBatch] {
            let _ = crate::ingest::parse::parse_body(body.clone(), format, &ctx);
        }
        let ts = crate::clock::rfc3339(1_800_000_000_000 - secs * 1000);
        let props = if props.is_object() { props } else { json!({"v": props}) };
        let native = crate::ingest::parse::parse_body(
            json!({"id": id, "source": "s", "customer": customer, "type": kind, "timestamp": ts, "properties": props}),
            crate::ingest::parse::Format::Native, &ctx).expect("shape");
        let cloud = crate::ingest::parse::parse_body(
            json!({"specversion": "1.0", "id": id, "source": "s", "type": kind, "subject": customer, "time": ts, "data": props}),
            crate::ingest::parse::Format::CloudEvent, &ctx).expect("shape");
        match (&native[0], &cloud[0]) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(&a.identity, &b.identity);
                prop_assert_eq!(a.digest, b.digest);
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.code, b.code),
            (a, b) => prop_assert!(false, "native {a:?} vs cloud {b:?}"),
        }
    }

    #[test]
    fn pricing_laws(
        q1 in 0u32..100_000, q2 in 0u32..100_000, free in 0u32..1000,
        p1 in 0u32..10_000, p2 in 0u32..10_000, bound in 1u32..50_000, size in 1u32..500,
        exponent in 0u8..4,
    ) {
        let d = |n: u32, scale: u32| Decimal::new(i64::from(n), scale);
        let (lo, hi) = (d(q1.min(q2), 1), d(q1.max(q2), 1));
        let tiers = vec![
            Tier { up_to: Some(Stored(d(bound, 0))), unit_price: Stored(d(p1, 4)), flat_fee_minor: 0 },
            Tier { up_to: None, unit_price: Stored(d(p2, 4)), flat_fee_minor: 0 },
        ];
        let models = [
            Model::PerUnit { unit_price: Stored(d(p1, 4)) },
            Model::Graduated { tiers: tiers.clone() },
            Model::Package { package_size: Stored(d(size, 0)), unit_price: Stored(d(p1, 2)) },
        ];
        for model in &models {
            let a = price(model, d(free, 0), lo, exponent).expect("in range");
            let b = price(model, d(free, 0), hi, exponent).expect("in range");
            prop_assert!(a.exact <= b.exact, "monotone: {model:?}");
            prop_assert!(a.amount_minor <= b.amount_minor);
            // Free units come off first.
            let shifted = price(model, Decimal::ZERO, (hi - d(free, 0)).max(Decimal::ZERO), exponent).expect("in range");
            prop_assert_eq!(shifted.exact, b.exact);
        }
        // Graduated is the sum of its tier lines; a single unbounded tier is per-unit.
        let g = price(&models[1], Decimal::ZERO, hi, exponent).expect("in range");
        let sum: Decimal = g.tiers.iter().map(|t| t.amount.0).sum();
        prop_assert_eq!(sum, g.exact);
        let single = Model::Graduated { tiers: vec![Tier { up_to: None, unit_price: Stored(d(p1, 4)), flat_fee_minor: 0 }] };
        prop_assert_eq!(
            price(&single, Decimal::ZERO, hi, exponent).expect("in range").amount_minor,
            price(&models[0], Decimal::ZERO, hi, exponent).expect("in range").amount_minor
        );
        // Volume prices every unit at the reached tier.
        let v = price(&Model::Volume { tiers }, Decimal::ZERO, hi, exponent).expect("in range");
        let expected = if hi.is_zero() { Decimal::ZERO } else if hi <= d(bound, 0) { hi * d(p1, 4) } else { hi * d(p2, 4) };
        prop_assert_eq!(v.exact, expected);
        // One rounding, half away from zero, within half a minor unit of the exact amount.
        let scale = Decimal::from(10i64.pow(u32::from(exponent)));
        prop_assert!((Decimal::from(g.amount_minor) - g.exact * scale).abs() <= Decimal::new(5, 1));
    }

    #[test]
    fn periods_partition_time(
        anchor in 946_684_800_000i64..4_102_444_800_000,
        offset in -400i64 * 86_400_000..4000 * 86_400_000,
        interval in 0usize..5,
        count in 1u32..13,
    ) {
        let interval = [Interval::Day, Interval::Week, Interval::Month, Interval::Quarter, Interval::Year][interval];
        let s = Schedule { anchor_ms: anchor, interval, count };
        let t = anchor + offset;
        let k = s.index_of(t).expect("index");
        let (a, b) = (s.boundary(k).expect("b"), s.boundary(k + 1).expect("b"));
        prop_assert!(a <= t && t < b, "{a} <= {t} < {b}");
        prop_assert!(s.boundary(k + 2).expect("b") > b);
        prop_assert_eq!(s.boundary(0), Some(anchor));
    }
}
