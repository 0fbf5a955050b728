//! Turning request bodies into events: native JSON and CloudEvents 1.0 (structured, batch and
//! binary modes) map to the same [`Prepared`] form, so the same event posted either way gets the
//! same identity and the same result.
//!
//! Per-event problems become [`Rejection`]s at that event's index; only a body that is not an
//! event or a batch at all is refused whole.

use serde_json::{Map, Value};

use super::event::{
    Identity, Prepared, Rejection, DEFAULT_SOURCE, MAX_FIELD_BYTES, MAX_PROPERTIES_BYTES,
};
use crate::config::IngestConfig;
use crate::id::Id;
use crate::store::TenantId;

/// How the body is framed (from its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: one event or `{"events": [...]}`.
    Native,
    /// `application/cloudevents+json`: one CloudEvent.
    CloudEvent,
    /// `application/cloudevents-batch+json`: an array of CloudEvents (possibly empty).
    CloudEventBatch,
}

/// A binary-mode CloudEvent whose `ce-` headers cannot make an event (400 for the request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{header}: {detail}")]
pub struct AttributeError {
    /// The offending header (`ce-id`).
    pub header: String,
    /// What is wrong with it.
    pub detail: String,
}

/// The context attributes Tally needs of every binary-mode CloudEvent besides `specversion`
/// (`subject` names the customer).
const REQUIRED_ATTRIBUTES: [&str; 4] = ["id", "source", "type", "subject"];

/// Builds the structured form of a binary-mode CloudEvent (HTTP binding 1.0): the attributes
/// come from `ce-` headers (`headers` yields lowercase names with their raw values; others are
/// skipped) and the body is the event's `data`. The structured form then parses like any other
/// CloudEvent, so both modes give an event the same identity.
pub fn binary_event<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    data: Option<Value>,
) -> Result<Value, AttributeError> {
    let mut attributes = Map::new();
    for (name, raw) in headers {
        let Some(attribute) = name.strip_prefix("ce-") else {
            continue;
        };
        let error = |detail: &str| AttributeError {
            header: name.to_string(),
            detail: detail.to_string(),
        };
        let value = percent_decode(raw).ok_or_else(|| {
            error("must be UTF-8 text, percent-encoded as the CloudEvents HTTP binding says")
        })?;
        if attributes
            .insert(attribute.to_string(), Value::String(value))
            .is_some()
        {
            return Err(error("send this header once"));
        }
    }
    match attributes.get("specversion").and_then(Value::as_str) {
        Some("1.0") => {}
        Some(_) => return Err(attribute_error("specversion", "must be 1.0")),
        None => {
            return Err(attribute_error(
                "specversion",
                "is required in binary mode (with ce-id, ce-source, ce-type and ce-subject)",
            ))
        }
    }
    let mut event = Map::new();
    event.insert("specversion".into(), Value::String("1.0".into()));
    for name in REQUIRED_ATTRIBUTES {
        let value = attributes
            .remove(name)
            .ok_or_else(|| attribute_error(name, "is required"))?;
        let text = value.as_str().unwrap_or_default();
        if text.is_empty() || text.len() > MAX_FIELD_BYTES {
            return Err(attribute_error(
                name,
                &format!("must be 1-{MAX_FIELD_BYTES} bytes"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(attribute_error(name, "must not contain control characters"));
        }
        event.insert(name.to_string(), value);
    }
    if let Some(time) = attributes.remove("time") {
        if time
            .as_str()
            .and_then(crate::clock::parse_rfc3339)
            .is_none()
        {
            return Err(attribute_error(
                "time",
                "must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z",
            ));
        }
        event.insert("time".into(), time);
    }
    // Other attributes (`dataschema`, extensions) carry no billing meaning, as in structured mode.
    if let Some(data) = data {
        event.insert("data".into(), data);
    }
    Ok(Value::Object(event))
}

fn attribute_error(attribute: &str, detail: &str) -> AttributeError {
    AttributeError {
        header: format!("ce-{attribute}"),
        detail: detail.to_string(),
    }
}

/// Decodes `%XX` escapes (the HTTP binding percent-encodes spaces, quotes, `%` and non-ASCII);
/// `None` for a broken escape or text that is not UTF-8.
fn percent_decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(*bytes.next()?).to_digit(16)?;
            let lo = char::from(*bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// Why a whole body is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// Not an event or a batch.
    #[error("{0}")]
    Shape(String),
    /// A batch with no events.
    #[error("the batch has no events")]
    Empty,
    /// More events than allowed.
    #[error("the batch has {count} events; at most {max} are accepted per request")]
    TooMany {
        /// Events sent.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// What parsing needs to know.
pub struct Context<'a> {
    /// Owner (identities are per tenant).
    pub tenant: TenantId,
    /// Receipt time.
    pub now_ms: i64,
    /// Limits and windows.
    pub config: &'a IngestConfig,
}

/// Parses a body into per-event results, in order.
pub fn parse_body(
    body: Value,
    format: Format,
    ctx: &Context<'_>,
) -> Result<Vec<Result<Prepared, Rejection>>, ShapeError> {
    let items: Vec<Value> = match (format, body) {
        (Format::Native, Value::Object(mut map)) => match map.remove("events") {
            Some(Value::Array(items)) if map.is_empty() => items,
            Some(Value::Array(_)) => {
                return Err(ShapeError::Shape(
                    "a batch is an object with only an `events` array".into(),
                ))
            }
            Some(_) => return Err(ShapeError::Shape("`events` must be an array".into())),
            None => vec![Value::Object(map)],
        },
        (Format::Native, _) => {
            return Err(ShapeError::Shape(
                "send one event object or {\"events\": [...]}".into(),
            ))
        }
        (Format::CloudEvent, v @ Value::Object(_)) => vec![v],
        (Format::CloudEvent, _) => {
            return Err(ShapeError::Shape(
                "a structured CloudEvent is one JSON object".into(),
            ))
        }
        (Format::CloudEventBatch, Value::Array(items)) => items,
        (Format::CloudEventBatch, _) => {
            return Err(ShapeError::Shape(
                "a CloudEvents batch is a JSON array".into(),
            ))
        }
    };
    // The CloudEvents JSON format allows an empty batch: it has no results.
    if items.is_empty() && format != Format::CloudEventBatch {
        return Err(ShapeError::Empty);
    }
    let max = usize::try_from(ctx.config.max_batch_events).unwrap_or(usize::MAX);
    if items.len() > max {
        return Err(ShapeError::TooMany {
            count: items.len(),
            max,
        });
    }
    Ok(items
        .into_iter()
        .map(|item| match format {
            Format::Native => parse_native(item, ctx),
            Format::CloudEvent | Format::CloudEventBatch => parse_cloudevent(item, ctx),
        })
        .collect())
}

fn invalid(field: &str, detail: impl Into<String>) -> Rejection {
    Rejection {
        code: "validation_failed",
        detail: format!("{field}: {}", detail.into()),
        field: field.to_string(),
    }
}

/// The common fields, however they were framed.
struct Fields {
    id: Option<String>,
    source: String,
    customer: String,
    event_type: String,
    timestamp: Option<String>,
    properties: Value,
}

fn take_string(
    map: &mut Map<String, Value>,
    field: &str,
    required: bool,
) -> Result<Option<String>, Rejection> {
    match map.remove(field) {
        None | Some(Value::Null) if required => Err(invalid(field, "is required")),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.is_empty() || s.len() > MAX_FIELD_BYTES {
                return Err(invalid(field, format!("must be 1-{MAX_FIELD_BYTES} bytes")));
            }
            if s.chars().any(char::is_control) {
                return Err(invalid(field, "must not contain control characters"));
            }
            Ok(Some(s))
        }
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn parse_native(item: Value, ctx: &Context<'_>) -> Result<Prepared, Rejection> {
    let Value::Object(mut map) = item else {
        return Err(invalid(".", "an event must be a JSON object"));
    };
    let id = take_string(&mut map, "id", false)?;
    let source = take_string(&mut map, "source", false)?;
    let customer = take_string(&mut map, "customer", true)?.unwrap_or_default();
    let event_type = take_string(&mut map, "type", true)?.unwrap_or_default();
    let timestamp = take_string(&mut map, "timestamp", false)?;
    let properties = map.remove("properties").unwrap_or(Value::Null);
    if let Some(unknown) = map.keys().next() {
        return Err(invalid(
            unknown,
            "unknown field (expected id, source, customer, type, timestamp, properties)",
        ));
    }
    prepare(
        Fields {
            id,
            source: source.unwrap_or_else(|| DEFAULT_SOURCE.to_string()),
            customer,
            event_type,
            timestamp,
            properties,
        },
        "timestamp",
        "properties",
        ctx,
    )
}

fn parse_cloudevent(item: Value, ctx: &Context<'_>) -> Result<Prepared, Rejection> {
    let Value::Object(mut map) = item else {
        return Err(invalid(".", "a CloudEvent must be a JSON object"));
    };
    match map.remove("specversion") {
        Some(Value::String(v)) if v == "1.0" => {}
        Some(_) => return Err(invalid("specversion", "must be \"1.0\"")),
        None => return Err(invalid("specversion", "is required")),
    }
    if map.contains_key("data_base64") {
        return Err(invalid(
            "data_base64",
            "binary data is not supported; send JSON `data`",
        ));
    }
    if let Some(content_type) = map.remove("datacontenttype") {
        let ok = content_type.as_str().is_some_and(|t| {
            let media = t
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            media == "application/json" || media.ends_with("+json")
        });
        if !ok {
            return Err(invalid("datacontenttype", "must be application/json"));
        }
    }
    let id = take_string(&mut map, "id", true)?;
    let source = take_string(&mut map, "source", true)?.unwrap_or_default();
    let event_type = take_string(&mut map, "type", true)?.unwrap_or_default();
    let customer = take_string(&mut map, "subject", true)?.unwrap_or_default();
    let timestamp = take_string(&mut map, "time", false)?;
    let properties = map.remove("data").unwrap_or(Value::Null);
    // `dataschema` and extension attributes carry no billing meaning; they are not stored and do
    // not enter the identity or the payload digest.
    prepare(
        Fields {
            id,
            source,
            customer,
            event_type,
            timestamp,
            properties,
        },
        "time",
        "data",
        ctx,
    )
}

fn prepare(
    fields: Fields,
    time_field: &str,
    data_field: &str,
    ctx: &Context<'_>,
) -> Result<Prepared, Rejection> {
    let properties = match fields.properties {
        Value::Null => Value::Object(Map::new()),
        v @ Value::Object(_) => v,
        _ => return Err(invalid(data_field, "must be a JSON object")),
    };
    let properties_canonical = crate::identity::canonical_json(&properties);
    if properties_canonical.len() > MAX_PROPERTIES_BYTES {
        return Err(invalid(
            data_field,
            format!("must be at most {MAX_PROPERTIES_BYTES} bytes"),
        ));
    }
    let given_ms = match &fields.timestamp {
        Some(text) => Some(crate::clock::parse_rfc3339(text).ok_or_else(|| {
            invalid(
                time_field,
                "must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z",
            )
        })?),
        None => None,
    };
    let timestamp_ms = given_ms.unwrap_or(ctx.now_ms);
    let max_future_ms =
        i64::try_from(ctx.config.max_future_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let max_backdate_ms =
        i64::try_from(ctx.config.max_backdate_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    if timestamp_ms > ctx.now_ms.saturating_add(max_future_ms) {
        return Err(Rejection {
            code: "timestamp_in_future",
            detail: format!(
                "{time_field} is more than {} s in the future",
                ctx.config.max_future_secs
            ),
            field: time_field.to_string(),
        });
    }
    if timestamp_ms < ctx.now_ms.saturating_sub(max_backdate_ms) {
        return Err(Rejection {
            code: "timestamp_too_old",
            detail: format!(
                "{time_field} is older than the backdating limit of {} s",
                ctx.config.max_backdate_secs
            ),
            field: time_field.to_string(),
        });
    }
    let digest = crate::identity::event_digest(
        &fields.customer,
        &fields.event_type,
        given_ms,
        &properties_canonical,
    );
    let identity = match fields.id {
        Some(id) => Identity::Stable { id },
        None => Identity::Derived {
            hash: crate::identity::derived_event_key(
                ctx.tenant.0,
                &fields.source,
                &fields.customer,
                &fields.event_type,
                &properties_canonical,
            ),
            window_ms: ctx.config.window_ms(&fields.source),
        },
    };
    Ok(Prepared {
        id: Id::generate_at(ctx.now_ms),
        source: fields.source,
        identity,
        customer_external_id: fields.customer,
        event_type: fields.event_type,
        timestamp_ms,
        timestamp_given: given_ms.is_some(),
        properties,
        properties_canonical,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(config: &IngestConfig) -> Context<'_> {
        Context {
            tenant: TenantId(1),
            now_ms: 1_800_000_000_000,
            config,
        }
    }

    #[test]
    fn native_and_cloudevent_forms_agree() {
        let config = IngestConfig::default();
        let native = parse_body(
            json!({"id": "e1", "source": "app", "customer": "c1", "type": "call",
                   "timestamp": "2027-01-15T08:00:00Z", "properties": {"n": 2}}),
            Format::Native,
            &ctx(&config),
        )
        .expect("shape");
        let cloud = parse_body(
            json!([{"specversion": "1.0", "id": "e1", "source": "app", "type": "call",
                    "subject": "c1", "time": "2027-01-15T09:00:00+01:00", "data": {"n": 2.0},
                    "traceparent": "00-abc"}]),
            Format::CloudEventBatch,
            &ctx(&config),
        )
        .expect("shape");
        let (a, b) = (
            native[0].as_ref().expect("ok"),
            cloud[0].as_ref().expect("ok"),
        );
        assert_eq!(a.identity, b.identity);
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.timestamp_ms, b.timestamp_ms);
    }

    #[test]
    fn per_event_problems_are_rejections_and_shapes_are_errors() {
        let config = IngestConfig::default();
        let out = parse_body(
            json!({"events": [
                {"customer": "c", "type": "t"},
                {"type": "t"},
                {"customer": "c", "type": "t", "properties": [1]},
                {"customer": "c", "type": "t", "timestamp": "2099-01-01T00:00:00Z"},
                {"customer": "c", "type": "t", "timestamp": "2000-01-01T00:00:00Z"},
                {"customer": "c", "type": "t", "extra": 1},
                "nope"
            ]}),
            Format::Native,
            &ctx(&config),
        )
        .expect("shape");
        assert!(out[0].is_ok());
        let codes: Vec<(&str, String)> = out[1..]
            .iter()
            .map(|r| {
                let e = r.as_ref().expect_err("rejected");
                (e.code, e.field.clone())
            })
            .collect();
        assert_eq!(
            codes,
            vec![
                ("validation_failed", "customer".to_string()),
                ("validation_failed", "properties".to_string()),
                ("timestamp_in_future", "timestamp".to_string()),
                ("timestamp_too_old", "timestamp".to_string()),
                ("validation_failed", "extra".to_string()),
                ("validation_failed", ".".to_string()),
            ]
        );
        assert_eq!(
            parse_body(json!([1]), Format::Native, &ctx(&config)).err(),
            Some(ShapeError::Shape(
                "send one event object or {\"events\": []}".replace("[]", "[...]")
            ))
        );
        assert_eq!(
            parse_body(json!({"events": []}), Format::Native, &ctx(&config)).err(),
            Some(ShapeError::Empty)
        );
    }

    #[test]
    fn binary_mode_agrees_with_structured_mode_and_names_bad_headers() {
        let config = IngestConfig::default();
        let headers =
            |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static [u8])> {
                let mut all: Vec<(&'static str, &'static [u8])> = vec![
                    ("content-type", b"application/json".as_slice()),
                    ("ce-specversion", b"1.0".as_slice()),
                    ("ce-id", b"e1".as_slice()),
                    ("ce-source", b"app".as_slice()),
                    ("ce-type", b"call".as_slice()),
                    ("ce-subject", b"c%201".as_slice()),
                    ("ce-time", b"2027-01-15T09:00:00+01:00".as_slice()),
                    ("ce-traceparent", b"00-abc".as_slice()),
                ];
                all.retain(|(name, _)| !extra.iter().any(|(n, _)| n == name));
                all.extend(
                    extra
                        .iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(n, v)| (*n, v.as_bytes())),
                );
                all
            };
        let binary = binary_event(headers(&[]).into_iter(), Some(json!({"n": 2}))).expect("event");
        let from_binary = parse_body(binary, Format::CloudEvent, &ctx(&config)).expect("shape");
        let structured = parse_body(
            json!({"specversion": "1.0", "id": "e1", "source": "app", "type": "call",
                   "subject": "c 1", "time": "2027-01-15T08:00:00Z", "data": {"n": 2}}),
            Format::CloudEvent,
            &ctx(&config),
        )
        .expect("shape");
        let (a, b) = (
            from_binary[0].as_ref().expect("ok"),
            structured[0].as_ref().expect("ok"),
        );
        assert_eq!(a.identity, b.identity);
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.customer_external_id, "c 1");
        let failure = |extra: &[(&'static str, &'static str)]| {
            binary_event(headers(extra).into_iter(), None)
                .expect_err("refused")
                .header
        };
        assert_eq!(failure(&[("ce-specversion", "")]), "ce-specversion");
        assert_eq!(failure(&[("ce-specversion", "0.3")]), "ce-specversion");
        for name in ["ce-id", "ce-source", "ce-type", "ce-subject"] {
            assert_eq!(failure(&[(name, "")]), name);
        }
        assert_eq!(failure(&[("ce-time", "yesterday")]), "ce-time");
        assert_eq!(failure(&[("ce-id", "%zz")]), "ce-id");
        let untimed = binary_event(headers(&[("ce-time", "")]).into_iter(), None).expect("event");
        assert!(untimed.get("time").is_none() && untimed.get("data").is_none());
    }

    #[test]
    fn an_empty_cloudevents_batch_has_no_results() {
        let config = IngestConfig::default();
        let out = parse_body(json!([]), Format::CloudEventBatch, &ctx(&config)).expect("valid");
        assert!(out.is_empty());
    }

    #[test]
    fn derived_identity_ignores_timestamp_but_not_payload() {
        let config = IngestConfig::default();
        let parse = |v: Value| {
            parse_body(v, Format::Native, &ctx(&config)).expect("shape")[0]
                .clone()
                .expect("ok")
        };
        let a = parse(
            json!({"customer": "c", "type": "t", "timestamp": "2027-01-15T08:00:00Z", "properties": {"n": 1}}),
        );
        let b = parse(
            json!({"customer": "c", "type": "t", "timestamp": "2027-01-15T08:00:10Z", "properties": {"n": 1.0}}),
        );
        let c = parse(
            json!({"customer": "c", "type": "t", "timestamp": "2027-01-15T08:00:10Z", "properties": {"n": 2}}),
        );
        assert_eq!(a.identity, b.identity);
        assert_ne!(a.identity, c.identity);
    }
}
