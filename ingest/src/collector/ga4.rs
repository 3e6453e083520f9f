//! GA4 Measurement Protocol: `POST /mp/collect?measurement_id=…&api_secret=…` takes GA4's
//! body unchanged and stores its events through the same validation, processor and storage
//! as `/v1/collect`. Like GA4, it answers 2xx to bad input (and drops it);
//! `POST /debug/mp/collect` answers GA4's `validationMessages` instead and stores nothing.
//!
//! Mapping: `page_view` becomes a pageview (page_location → url, page_referrer → referrer,
//! page_title → props.page_title); other events keep their name; scalar params become props
//! (session_id as `ga_session_id`), `value` + `currency` become revenue, `items` their count,
//! user_properties `user.<name>` props. The visitor is keyed by client_id (or
//! app_instance_id) and the UTC day, since the sender's IP and UA are a server's.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sightline_core::event::SOURCE_GA4_MP;
use sightline_core::intake::RequestContext;
use sightline_core::registry::TenantEntry;
use sightline_core::token::Scope;

use super::admit::{admit, Admitted, Submission};
use super::{origin, read_body, CollectorState};
use crate::error::Error;
use sightline_core::intake::{cut, MAX_USER_AGENT_BYTES};

pub const MAX_EVENTS: usize = 25;
pub const MAX_PARAMS: usize = 25;
pub const MAX_USER_PROPERTIES: usize = 25;
const MAX_NAME_CHARS: usize = 40;
const MAX_PARAM_VALUE_CHARS: usize = 100;
const MAX_USER_PROPERTY_NAME_CHARS: usize = 24;
const MAX_USER_PROPERTY_VALUE_CHARS: usize = 36;

/// GA4's reserved event names (documented for the Measurement Protocol).
const RESERVED_EVENTS: &[&str] = &[
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_impression",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_remove",
    "app_store_refund",
    "app_store_subscription_cancel",
    "app_store_subscription_convert",
    "app_store_subscription_renew",
    "app_update",
    "app_upgrade",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "firebase_campaign",
    "firebase_in_app_message_action",
    "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "os_update",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
];
const RESERVED_PREFIXES: &[&str] = &["_", "firebase_", "ga_", "google_", "gtag."];
/// GA4's reserved user property names (documented for the Measurement Protocol), besides the
/// reserved prefixes.
const RESERVED_USER_PROPERTIES: &[&str] = &[
    "first_open_after_install",
    "first_open_time",
    "first_visit_time",
    "last_deep_link_referrer",
    "user_id",
];
/// Params that length limits treat like GA4 does (longer than ordinary params).
const LONG_PARAMS: &[(&str, usize)] = &[("page_location", 1000), ("page_referrer", 420), ("page_title", 300)];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationMessage {
    pub field_path: String,
    pub description: String,
    pub validation_code: &'static str,
}

fn message(field_path: impl Into<String>, description: impl Into<String>, code: &'static str) -> ValidationMessage {
    ValidationMessage {
        field_path: field_path.into(),
        description: description.into(),
        validation_code: code,
    }
}

#[derive(serde::Deserialize)]
pub struct MpQuery {
    measurement_id: Option<String>,
    api_secret: Option<String>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().count() <= MAX_NAME_CHARS
}

fn reserved(name: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A GA4 body turned into Sightline events, with GA4's verdicts on what could not be.
/// `index_map[i]` is the GA4 event index of Sightline event `i`.
pub struct Mapped {
    pub client_key: Option<String>,
    pub events: Vec<Value>,
    pub index_map: Vec<usize>,
    pub messages: Vec<ValidationMessage>,
    pub user_agent: String,
    pub country: Option<String>,
}

/// Checks a GA4 body against GA4's rules and maps its valid events.
pub fn map_body(body: &Value, site: &str) -> Mapped {
    let mut m = Mapped {
        client_key: None,
        events: Vec::new(),
        index_map: Vec::new(),
        messages: Vec::new(),
        user_agent: String::new(),
        country: None,
    };
    let Some(obj) = body.as_object() else {
        m.messages
            .push(message("", "the body must be a JSON object", "VALUE_INVALID"));
        return m;
    };
    m.client_key = match (obj.get("client_id"), obj.get("app_instance_id")) {
        (Some(Value::String(id)), _) | (None, Some(Value::String(id))) if !id.trim().is_empty() => Some(id.clone()),
        (Some(_), _) => {
            m.messages.push(message(
                "client_id",
                "client_id must be a non-empty string",
                "VALUE_INVALID",
            ));
            None
        }
        _ => {
            m.messages.push(message(
                "client_id",
                "client_id (web) or app_instance_id (apps) is required",
                "VALUE_REQUIRED",
            ));
            None
        }
    };
    if let Some(ua) = obj.get("user_agent").and_then(Value::as_str) {
        m.user_agent = cut(ua, MAX_USER_AGENT_BYTES);
    }
    m.country = match obj.get("user_location").and_then(|l| l.get("country_id")) {
        None => None,
        // ISO 3166-1 alpha-2, as GA4 documents it; anything else is not a country.
        Some(Value::String(c)) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(c.to_ascii_uppercase())
        }
        Some(_) => {
            m.messages.push(message(
                "user_location.country_id",
                "country_id must be an ISO 3166-1 alpha-2 code such as US",
                "VALUE_INVALID",
            ));
            None
        }
    };
    let request_ts = match obj.get("timestamp_micros") {
        None => None,
        Some(v) => match v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) {
            Some(micros) => Some(micros / 1000),
            None => {
                m.messages.push(message(
                    "timestamp_micros",
                    "timestamp_micros must be an integer",
                    "VALUE_INVALID",
                ));
                // When every event happened is unknown: none can be placed.
                m.client_key = None;
                None
            }
        },
    };

    let mut user_props = Map::new();
    if let Some(props) = obj.get("user_properties") {
        match props.as_object() {
            Some(p) if p.len() > MAX_USER_PROPERTIES => m.messages.push(message(
                "user_properties",
                format!("{} user properties; at most {MAX_USER_PROPERTIES}", p.len()),
                "EXCEEDED_MAX_ENTITIES",
            )),
            Some(p) => {
                for (name, prop) in p {
                    let path = format!("user_properties.{name}");
                    if !valid_name(name) || name.chars().count() > MAX_USER_PROPERTY_NAME_CHARS {
                        m.messages.push(message(
                            path,
                            "user property names are letters, digits and _, start with a letter, at most 24 characters",
                            "NAME_INVALID",
                        ));
                    } else if reserved(name) || RESERVED_USER_PROPERTIES.contains(&name.as_str()) {
                        m.messages.push(message(
                            path,
                            format!("user property name {name} is reserved"),
                            "NAME_RESERVED",
                        ));
                    } else {
                        match prop.get("value").and_then(scalar_text) {
                            Some(v) if v.chars().count() > MAX_USER_PROPERTY_VALUE_CHARS => m.messages.push(message(
                                format!("{path}.value"),
                                "user property values are at most 36 characters",
                                "VALUE_OUT_OF_BOUNDS",
                            )),
                            Some(v) => {
                                user_props.insert(format!("user.{name}"), Value::String(v));
                            }
                            None => m.messages.push(message(
                                format!("{path}.value"),
                                "a user property needs a scalar value",
                                "VALUE_REQUIRED",
                            )),
                        }
                    }
                }
            }
            None => m.messages.push(message(
                "user_properties",
                "user_properties must be an object",
                "VALUE_INVALID",
            )),
        }
    }

    let events = match obj.get("events") {
        Some(Value::Array(events)) if events.is_empty() => {
            m.messages
                .push(message("events", "at least one event is required", "VALUE_REQUIRED"));
            return m;
        }
        Some(Value::Array(events)) if events.len() > MAX_EVENTS => {
            m.messages.push(message(
                "events",
                format!("{} events; at most {MAX_EVENTS} per request", events.len()),
                "EXCEEDED_MAX_ENTITIES",
            ));
            return m;
        }
        Some(Value::Array(events)) => events,
        Some(_) => {
            m.messages
                .push(message("events", "events must be an array", "VALUE_INVALID"));
            return m;
        }
        None => {
            m.messages
                .push(message("events", "events is required", "VALUE_REQUIRED"));
            return m;
        }
    };
    // A fault of the client id or the request's timestamp concerns every event; a bad user
    // property or country drops only itself (its message says so).
    if m.client_key.is_none() {
        return m;
    }
    for (i, event) in events.iter().enumerate() {
        if let Some(mapped) = map_event(i, event, site, request_ts, &user_props, &mut m.messages) {
            m.events.push(mapped);
            m.index_map.push(i);
        }
    }
    m
}

fn map_event(
    i: usize,
    event: &Value,
    site: &str,
    request_ts: Option<i64>,
    user_props: &Map<String, Value>,
    messages: &mut Vec<ValidationMessage>,
) -> Option<Value> {
    let at = |field: &str| format!("events[{i}].{field}");
    let before = messages.len();
    let name = match event.get("name").and_then(Value::as_str) {
        Some(name) if !valid_name(name) => {
            messages.push(message(
                at("name"),
                format!("event name {name:?}: letters, digits and _, starting with a letter, at most 40 characters"),
                "NAME_INVALID",
            ));
            return None;
        }
        Some(name) if RESERVED_EVENTS.contains(&name) || reserved(name) => {
            messages.push(message(
                at("name"),
                format!("event name {name} is reserved"),
                "NAME_RESERVED",
            ));
            return None;
        }
        Some(name) => name,
        None => {
            messages.push(message(at("name"), "every event needs a name", "VALUE_REQUIRED"));
            return None;
        }
    };
    let empty = Map::new();
    let params = match event.get("params") {
        None => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => {
            messages.push(message(at("params"), "params must be an object", "VALUE_INVALID"));
            return None;
        }
    };
    if params.len() > MAX_PARAMS {
        messages.push(message(
            at("params"),
            format!("{} params; at most {MAX_PARAMS}", params.len()),
            "EXCEEDED_MAX_ENTITIES",
        ));
        return None;
    }
    let mut props = user_props.clone();
    let mut non_interactive = false;
    for (key, value) in params {
        let path = at(&format!("params.{key}"));
        if !valid_name(key) {
            messages.push(message(
                path,
                "param names are letters, digits and _, start with a letter, at most 40 characters",
                "NAME_INVALID",
            ));
            continue;
        }
        if reserved(key) {
            messages.push(message(path, format!("param name {key} is reserved"), "NAME_RESERVED"));
            continue;
        }
        if key == "items" {
            match value.as_array() {
                Some(items) if items.len() <= 200 && items.iter().all(Value::is_object) => {
                    props.insert("items".into(), Value::String(items.len().to_string()));
                }
                _ => messages.push(message(
                    path,
                    "items must be an array of at most 200 item objects",
                    "VALUE_INVALID",
                )),
            }
            continue;
        }
        let Some(text) = scalar_text(value) else {
            messages.push(message(
                path,
                "param values must be strings, numbers or booleans",
                "VALUE_INVALID",
            ));
            continue;
        };
        let limit = LONG_PARAMS
            .iter()
            .find(|(k, _)| k == key)
            .map_or(MAX_PARAM_VALUE_CHARS, |(_, l)| *l);
        if text.chars().count() > limit {
            messages.push(message(
                path,
                format!("{key} is longer than {limit} characters"),
                "VALUE_OUT_OF_BOUNDS",
            ));
            continue;
        }
        match key.as_str() {
            "page_location" | "page_referrer" | "value" | "currency" => {}
            // Universal Analytics' flag, still sent by GA4 senders: the event neither ends a
            // bounce nor extends the visit.
            "non_interaction" => {
                if matches!(text.as_str(), "true" | "1") {
                    non_interactive = true;
                }
            }
            "session_id" => {
                props.insert("ga_session_id".into(), Value::String(text));
            }
            _ => {
                props.insert(key.clone(), Value::String(text));
            }
        }
    }
    if messages.len() > before {
        return None;
    }
    let mut out = Map::new();
    out.insert(
        "name".into(),
        Value::String(if name == "page_view" {
            "pageview".into()
        } else {
            name.to_string()
        }),
    );
    let url = params
        .get("page_location")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("https://{site}/(not-set)"));
    out.insert("url".into(), Value::String(url));
    if let Some(r) = params.get("page_referrer").and_then(Value::as_str) {
        out.insert("referrer".into(), Value::String(r.to_string()));
    }
    let event_ts = event
        .get("timestamp_micros")
        .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
        .map(|m| m / 1000);
    if let Some(ms) = event_ts.or(request_ts) {
        out.insert("ts".into(), json!(ms));
    }
    if let Some(value) = params.get("value") {
        match params.get("currency").and_then(Value::as_str) {
            Some(currency) => {
                out.insert("revenue".into(), json!({"amount": value, "currency": currency}));
            }
            None => {
                messages.push(message(
                    at("params.currency"),
                    "currency is required when value is set",
                    "VALUE_REQUIRED",
                ));
                return None;
            }
        }
    }
    if !props.is_empty() {
        out.insert("props".into(), Value::Object(props));
    }
    if non_interactive {
        out.insert("interactive".into(), Value::Bool(false));
    }
    Some(Value::Object(out))
}

/// Sightline's rejection field, as the GA4 field path of the event it came from.
fn ga4_path(ga_index: usize, field: &str) -> String {
    let param = match field {
        "url" => "page_location".to_string(),
        "referrer" => "page_referrer".to_string(),
        "ts" => return format!("events[{ga_index}].timestamp_micros"),
        "revenue.amount" => "value".to_string(),
        "revenue.currency" => "currency".to_string(),
        "props" => return format!("events[{ga_index}].params"),
        other => other.strip_prefix("props.").unwrap_or(other).to_string(),
    };
    format!("events[{ga_index}].params.{param}")
}

/// Authenticates, maps and admits one request (the collector's one intake: budgets, caps,
/// validation): the events to store and every message.
async fn intake(
    state: &CollectorState,
    query: &MpQuery,
    request: Request,
    stores: bool,
) -> Result<(Option<Admitted>, Vec<ValidationMessage>), Error> {
    let (parts, body) = request.into_parts();
    let Some(measurement_id) = query.measurement_id.as_deref() else {
        return Ok((
            None,
            vec![message(
                "measurement_id",
                "measurement_id is required",
                "VALUE_REQUIRED",
            )],
        ));
    };
    let Some((entry, site)) = state.registry.ga4_stream(measurement_id) else {
        return Ok((
            None,
            vec![message(
                "measurement_id",
                format!("{} is not a configured GA4 stream", cut(measurement_id, 64)),
                "VALUE_INVALID",
            )],
        ));
    };
    if let Err(why) = check_secret(state, &entry, &site, query.api_secret.as_deref()) {
        return Ok((None, vec![message("api_secret", why, "VALUE_INVALID")]));
    }
    let bytes = read_body(&parts.headers, body, entry.tenant.spec.limits.body_bytes).await?;
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return Ok((
                None,
                vec![message("", format!("the body is not valid JSON: {e}"), "VALUE_INVALID")],
            ))
        }
    };
    let mapped = map_body(&body, &site);
    let mut messages = mapped.messages;
    let Some(client_key) = mapped.client_key else {
        return Ok((None, messages));
    };
    let origin = origin(state, &parts);
    let country = mapped.country.unwrap_or(origin.country);
    let submission = Submission {
        entry: &entry,
        ctx: RequestContext {
            site_id: &site,
            tenant_key: entry.key(),
            user_agent: &mapped.user_agent,
            client_ip: origin.ip,
            country: &country,
            received_at: Utc::now(),
            limits: &entry.tenant.spec.limits,
            visitor_key: Some(&client_key),
            ingest_source: SOURCE_GA4_MP,
        },
        events: &mapped.events,
        stores,
    };
    let admitted = admit(state, submission)?;
    for r in &admitted.rejected {
        let ga_index = mapped.index_map.get(r.index).copied().unwrap_or(r.index);
        let code = if r.field == "ts" || r.reason.contains("longer") || r.reason.contains("more than") {
            "VALUE_OUT_OF_BOUNDS"
        } else {
            "VALUE_INVALID"
        };
        messages.push(message(ga4_path(ga_index, &r.field), r.reason.clone(), code));
    }
    Ok((Some(admitted), messages))
}

/// The api_secret is a Sightline write token for the stream's site.
fn check_secret(state: &CollectorState, entry: &TenantEntry, site: &str, secret: Option<&str>) -> Result<(), String> {
    let secret = secret.ok_or("api_secret is required")?;
    let (_, claims) = state
        .registry
        .verify(secret, Scope::Write, Utc::now().timestamp())
        .map_err(|e| format!("api_secret: {e}"))?;
    if claims.tenant != entry.tenant.name || claims.site != site {
        return Err("api_secret is a token for another site".into());
    }
    Ok(())
}

#[tracing::instrument(skip_all, fields(measurement_id = query.measurement_id.as_deref().unwrap_or("")))]
pub async fn collect(
    State(state): State<Arc<CollectorState>>,
    Query(query): Query<MpQuery>,
    request: Request,
) -> Result<Response, Error> {
    let (admitted, messages) = intake(&state, &query, request, true).await?;
    if !messages.is_empty() {
        // GA4 answers 2xx to bad input; we do too, and say why in the log.
        tracing::warn!(messages = ?messages, "GA4 MP input dropped");
    }
    if let Some(a) = admitted {
        // Never a silent drop of valid events: a store that cannot take them is a 503.
        state.store(&a.tenant, a.events, a.client_ids, &a.rejected).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[tracing::instrument(skip_all)]
pub async fn debug(
    State(state): State<Arc<CollectorState>>,
    Query(query): Query<MpQuery>,
    request: Request,
) -> Result<Response, Error> {
    let (_, messages) = intake(&state, &query, request, false).await?;
    Ok((StatusCode::OK, Json(json!({"validationMessages": messages}))).into_response())
}
