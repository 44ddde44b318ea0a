//! The JSON shapes of requests and answers, and their conversion to and from
//! the coordinator's types.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use julato_coordinator::{Applied, ProcessSummary, SendRequest};
use julato_core::{
    CausalToken, DeployedVersion, EventRecord, FunctionInfo, FunctionName, Payload, ProcessHead,
    ProcessId, ProcessKey, Version,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::{ApiError, MAX_EVENT_DATA};

/// Body of a send: the event and its options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
    #[serde(default)]
    pub data_base64: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub expected_version: Option<u64>,
    #[serde(default)]
    pub after: Option<String>,
}

/// One event of a bulk request: an [`EventBody`] that names its process.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkEvent {
    pub function: String,
    pub key: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
    #[serde(default)]
    pub data_base64: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub expected_version: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    pub events: Vec<BulkEvent>,
    #[serde(default)]
    pub after: Option<String>,
}

pub fn parse_token(text: Option<&str>) -> Result<Option<CausalToken>, ApiError> {
    text.map(|t| t.parse::<CausalToken>())
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_token", e.to_string()))
}

pub fn payload(
    data: Option<Box<RawValue>>,
    data_base64: Option<String>,
) -> Result<Payload, ApiError> {
    let payload = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "bad_request",
                "give either `data` or `data_base64`, not both",
            ));
        }
        (Some(raw), None) => Payload::Json(raw.get().to_owned()),
        (None, Some(text)) => Payload::Bytes(BASE64.decode(text.as_bytes()).map_err(|e| {
            ApiError::bad_request("invalid_base64", format!("`data_base64` is not base64: {e}"))
        })?),
        (None, None) => Payload::Json("null".to_owned()),
    };
    if payload.len() > MAX_EVENT_DATA {
        return Err(ApiError::too_large(
            "event_too_large",
            format!("event data is {} bytes, over the limit of {MAX_EVENT_DATA}", payload.len()),
        ));
    }
    Ok(payload)
}

fn check_event_type(event_type: &str) -> Result<(), ApiError> {
    let ok = !event_type.is_empty()
        && event_type.len() <= 128
        && !event_type.chars().any(|c| c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_event_type",
            "`type` must be 1 to 128 characters without control characters",
        ))
    }
}

fn check_idempotency_key(key: &Option<String>) -> Result<(), ApiError> {
    match key {
        Some(k) if k.is_empty() || k.len() > 256 => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "`idempotency_key` must be 1 to 256 bytes",
        )),
        _ => Ok(()),
    }
}

pub fn process_id(function: &str, key: &str) -> Result<ProcessId, ApiError> {
    let function = FunctionName::new(function)
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let key =
        ProcessKey::new(key).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    Ok(ProcessId::new(function, key))
}

pub fn send_request(process: ProcessId, body: EventBody) -> Result<SendRequest, ApiError> {
    check_event_type(&body.event_type)?;
    check_idempotency_key(&body.idempotency_key)?;
    Ok(SendRequest {
        process,
        event_type: body.event_type,
        payload: payload(body.data, body.data_base64)?,
        idempotency_key: body.idempotency_key,
        expected_version: body.expected_version.map(Version),
    })
}

pub fn bulk_request(event: BulkEvent) -> Result<SendRequest, ApiError> {
    let process = process_id(&event.function, &event.key)?;
    send_request(
        process,
        EventBody {
            event_type: event.event_type,
            data: event.data,
            data_base64: event.data_base64,
            idempotency_key: event.idempotency_key,
            expected_version: event.expected_version,
            after: None,
        },
    )
}

/// JSON text we produced or validated, embedded as JSON.
// FIXME(#6): this parses every state and reply again to embed it; writing the
// validated text through as a raw value would spare the hot path a parse.
fn raw(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

pub fn applied(process: &ProcessId, applied: &Applied, token: CausalToken) -> Value {
    json!({
        "function": process.function,
        "key": process.key,
        "seq": applied.seq,
        "version": applied.version,
        "time": applied.time.to_rfc3339(),
        "function_version": applied.function_version,
        "state": raw(&applied.state),
        "reply": applied.reply.as_deref().map(raw),
        "deduplicated": applied.deduplicated,
        "token": token.to_string(),
    })
}

pub fn head(process: &ProcessId, head: &ProcessHead, token: CausalToken) -> Value {
    json!({
        "function": process.function,
        "key": process.key,
        "version": head.version,
        "seq": head.last_seq,
        "state": raw(&head.state),
        "function_version": head.function_version,
        "created": head.created.to_rfc3339(),
        "updated": head.updated.to_rfc3339(),
        "token": token.to_string(),
    })
}

pub fn summary(summary: &ProcessSummary) -> Value {
    json!({
        "key": summary.key,
        "version": summary.head.version,
        "seq": summary.head.last_seq,
        "function_version": summary.head.function_version,
        "created": summary.head.created.to_rfc3339(),
        "updated": summary.head.updated.to_rfc3339(),
    })
}

fn payload_fields(payload: &Payload, object: &mut serde_json::Map<String, Value>) {
    match payload {
        Payload::Json(text) => {
            object.insert("data".into(), raw(text));
        }
        Payload::Bytes(bytes) => {
            object.insert("data_base64".into(), Value::String(BASE64.encode(bytes)));
        }
    }
}

pub fn record(record: &EventRecord) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("seq".into(), json!(record.seq));
    object.insert("function".into(), json!(record.function));
    object.insert("key".into(), json!(record.key));
    object.insert("version".into(), json!(record.version));
    object.insert("type".into(), json!(record.event_type));
    payload_fields(&record.payload, &mut object);
    object.insert("time".into(), json!(record.time.to_rfc3339()));
    object.insert("function_version".into(), json!(record.function_version));
    object.insert("idempotency_key".into(), json!(record.idempotency_key));
    object.insert("causes".into(), json!(record.causes));
    object.insert("reply".into(), record.reply.as_deref().map_or(Value::Null, raw));
    let emitted: Vec<Value> = record
        .emitted
        .iter()
        .map(|e| {
            let mut o = serde_json::Map::new();
            o.insert("function".into(), json!(e.function));
            o.insert("key".into(), json!(e.key));
            o.insert("type".into(), json!(e.event_type));
            payload_fields(&e.payload, &mut o);
            Value::Object(o)
        })
        .collect();
    object.insert("emitted".into(), Value::Array(emitted));
    Value::Object(object)
}

pub fn deployed(function: &FunctionName, deployed: &DeployedVersion) -> Value {
    json!({
        "function": function,
        "version": deployed.version,
        "digest": deployed.digest,
        "size": deployed.size,
        "event_types": deployed.event_types,
        "deployed_at": deployed.deployed_at.to_rfc3339(),
    })
}

pub fn function(info: &FunctionInfo) -> Value {
    let versions: Vec<Value> = info.versions.iter().map(|v| deployed(&info.name, v)).collect();
    json!({
        "name": info.name,
        "latest_version": info.latest().map(|v| v.version),
        "event_types": info.latest().map(|v| v.event_types.clone()).unwrap_or_default(),
        "versions": versions,
    })
}
