//! The JSON shapes of requests and answers, and their conversion to and from
//! the coordinator's types.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use julato_coordinator::{Applied, ProcessState, ProcessSummary, RestoreReport, SendRequest};
use julato_core::{
    AsOf, Branch, CausalToken, Checkpoint, DeadLetter, DeployedVersion, EventRecord, EventTime,
    FunctionInfo, FunctionName, FunctionVersion, Payload, ProcessId, ProcessKey, Seq, Version,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::{ApiError, RequestLimits};

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
    /// Only an event added to an interactive transaction takes its own token;
    /// a bulk request or a one-shot transaction takes one for all its events.
    #[serde(default)]
    pub after: Option<String>,
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

/// An event's data, at most `max_bytes` long.
pub fn payload(
    data: Option<Box<RawValue>>,
    data_base64: Option<String>,
    max_bytes: usize,
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
    if payload.len() > max_bytes {
        return Err(ApiError::too_large(
            "event_too_large",
            format!("event data is {} bytes, over the limit of {max_bytes}", payload.len()),
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

pub fn send_request(
    process: ProcessId,
    body: EventBody,
    limits: &RequestLimits,
) -> Result<SendRequest, ApiError> {
    check_event_type(&body.event_type)?;
    check_idempotency_key(&body.idempotency_key)?;
    Ok(SendRequest {
        process,
        event_type: body.event_type,
        payload: payload(body.data, body.data_base64, limits.event_data)?,
        idempotency_key: body.idempotency_key,
        expected_version: body.expected_version.map(Version),
        after: parse_token(body.after.as_deref())?.map(|t| t.seq()).filter(|s| s.0 > 0),
        delivery: None,
    })
}

/// The request of one event of a bulk request or a one-shot transaction.
/// Errors name the event's process.
pub fn bulk_request(event: BulkEvent, limits: &RequestLimits) -> Result<SendRequest, ApiError> {
    let named = |error: ApiError| {
        error.with("function", event.function.as_str()).with("key", event.key.as_str())
    };
    if event.after.is_some() {
        return Err(named(ApiError::bad_request(
            "bad_request",
            "give `after` once, at the top of the request, not on one event",
        )));
    }
    let process = process_id(&event.function, &event.key).map_err(named)?;
    let request = send_request(
        process,
        EventBody {
            event_type: event.event_type,
            data: event.data,
            data_base64: event.data_base64,
            idempotency_key: event.idempotency_key,
            expected_version: event.expected_version,
            after: None,
        },
        limits,
    );
    request.map_err(named)
}

/// JSON text we produced or validated, written through verbatim: never parsed
/// again, so what was accepted reads back exactly as it was sent.
pub fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        // Unreachable for text that passed our own validation; keep it
        // lossless as a JSON string rather than dropping it.
        serde_json::value::to_raw_value(text).expect("a string is JSON")
    })
}

/// The answer to an accepted send.
#[derive(Debug, Serialize)]
pub struct AppliedView<'a> {
    pub function: &'a FunctionName,
    pub key: &'a ProcessKey,
    pub seq: Seq,
    pub version: Version,
    pub time: String,
    pub function_version: FunctionVersion,
    pub state: Box<RawValue>,
    pub reply: Option<Box<RawValue>>,
    pub deduplicated: bool,
    pub token: String,
}

pub fn applied<'a>(
    process: &'a ProcessId,
    applied: &Applied,
    token: CausalToken,
) -> AppliedView<'a> {
    AppliedView {
        function: &process.function,
        key: &process.key,
        seq: applied.seq,
        version: applied.version,
        time: applied.time.to_rfc3339(),
        function_version: applied.function_version,
        state: raw(&applied.state),
        reply: applied.reply.as_deref().map(raw),
        deduplicated: applied.deduplicated,
        token: token.to_string(),
    }
}

/// A process's state, now or as of an earlier point.
#[derive(Debug, Serialize)]
pub struct HeadView<'a> {
    pub function: &'a FunctionName,
    pub key: &'a ProcessKey,
    pub version: Version,
    /// Seq of the event that made this version; 0 for version 0.
    pub seq: Seq,
    pub state: Box<RawValue>,
    pub function_version: FunctionVersion,
    /// Time of the first event; `null` at version 0.
    pub created: Option<String>,
    /// Time of the event that made this version; `null` at version 0.
    pub updated: Option<String>,
    /// The newest version of the process when it was read.
    pub newest_version: Version,
    pub token: String,
}

fn time_or_null(version: Version, time: EventTime) -> Option<String> {
    (version > Version(0)).then(|| time.to_rfc3339())
}

pub fn head<'a>(process: &'a ProcessId, read: &ProcessState, token: CausalToken) -> HeadView<'a> {
    let head = &read.head;
    HeadView {
        function: &process.function,
        key: &process.key,
        version: head.version,
        seq: head.last_seq,
        state: raw(&read.state),
        function_version: head.function_version,
        created: time_or_null(head.version, head.created),
        updated: time_or_null(head.version, head.updated),
        newest_version: read.newest,
        token: token.to_string(),
    }
}

/// The point a reader names with `version`, `seq` or `at`; at most one.
pub fn as_of(
    version: Option<u64>,
    seq: Option<u64>,
    at: Option<&str>,
) -> Result<Option<AsOf>, ApiError> {
    let given =
        usize::from(version.is_some()) + usize::from(seq.is_some()) + usize::from(at.is_some());
    if given > 1 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "give at most one of `version`, `seq` and `at`",
        ));
    }
    if let Some(at) = at {
        let time = EventTime::parse_rfc3339(at)
            .map_err(|message| ApiError::bad_request("invalid_time", message))?;
        return Ok(Some(AsOf::Time(time)));
    }
    Ok(version.map(|v| AsOf::Version(Version(v))).or(seq.map(|s| AsOf::Seq(Seq(s)))))
}

pub fn checkpoint(checkpoint: &Checkpoint) -> Value {
    json!({
        "id": checkpoint.id,
        "seq": checkpoint.seq,
        "time": time_or_null(Version(checkpoint.seq.0), checkpoint.time),
        "taken_at": checkpoint.taken_at.to_rfc3339(),
        "processes": checkpoint.processes,
        "snapshots": checkpoint.snapshots,
        "archived_by": checkpoint.archived_by,
    })
}

pub fn branch(branch: &Branch) -> Value {
    json!({
        "branch": branch.id,
        "restored_to": branch.restored_to,
        "archived_from": branch.restored_to.0 + 1,
        "archived_upto": branch.upto,
        "events": branch.events,
        "restored_at": branch.restored_at.to_rfc3339(),
    })
}

pub fn restore_report(report: &RestoreReport, token: CausalToken) -> Value {
    json!({
        "restored_to": report.restored_to,
        "branch": report.branch.as_ref().map(branch),
        "processes": report.processes,
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

/// An event's body as JSON shows it: `data`, or `data_base64` for raw bytes.
#[derive(Debug, Serialize)]
pub struct PayloadView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

fn payload_view(payload: &Payload) -> PayloadView {
    match payload {
        Payload::Json(text) => PayloadView { data: Some(raw(text)), data_base64: None },
        Payload::Bytes(bytes) => {
            PayloadView { data: None, data_base64: Some(BASE64.encode(bytes)) }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EmittedView<'a> {
    pub function: &'a str,
    pub key: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    #[serde(flatten)]
    pub payload: PayloadView,
}

/// One direct cause of an event.
#[derive(Debug, Serialize)]
pub struct CauseView {
    pub seq: Seq,
    /// `process`, `emit`, `token` or `transaction`.
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct OriginView {
    pub seq: Seq,
    pub index: u32,
}

/// An emitted event that was not delivered.
pub fn dead_letter(letter: &DeadLetter) -> Value {
    let payload = payload_view(&letter.entry.payload);
    let mut view = json!({
        "id": letter.entry.origin.to_string(),
        "origin": { "seq": letter.entry.origin.seq, "index": letter.entry.origin.index },
        "function": letter.entry.function,
        "key": letter.entry.key,
        "type": letter.entry.event_type,
        "hops": letter.entry.hops,
        "code": letter.code,
        "message": letter.message,
        "time": letter.time.to_rfc3339(),
    });
    if let Some(data) = payload.data {
        view["data"] = serde_json::to_value(data).unwrap_or(Value::Null);
    }
    if let Some(bytes) = payload.data_base64 {
        view["data_base64"] = Value::String(bytes);
    }
    view
}

/// One event record of the log.
#[derive(Debug, Serialize)]
pub struct RecordView<'a> {
    pub seq: Seq,
    pub function: &'a FunctionName,
    pub key: &'a ProcessKey,
    pub version: Version,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    #[serde(flatten)]
    pub payload: PayloadView,
    pub time: String,
    pub function_version: FunctionVersion,
    pub idempotency_key: Option<&'a str>,
    pub causes: Vec<CauseView>,
    /// The transaction that committed this event (the seq of its first event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Seq>,
    /// For an emitted event: the emitting event's seq and the emit's index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginView>,
    pub hops: u32,
    pub reply: Option<Box<RawValue>>,
    pub emitted: Vec<EmittedView<'a>>,
    /// The restore that archived this event, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_by: Option<u64>,
}

pub fn record(record: &EventRecord) -> RecordView<'_> {
    RecordView {
        seq: record.seq,
        function: &record.function,
        key: &record.key,
        version: record.version,
        event_type: &record.event_type,
        payload: payload_view(&record.payload),
        time: record.time.to_rfc3339(),
        function_version: record.function_version,
        idempotency_key: record.idempotency_key.as_deref(),
        causes: record
            .causes
            .iter()
            .map(|c| CauseView { seq: c.seq, kind: c.kind.as_str() })
            .collect(),
        transaction: record.transaction,
        origin: record.origin.map(|o| OriginView { seq: o.seq, index: o.index }),
        hops: record.hops,
        reply: record.reply.as_deref().map(raw),
        emitted: record
            .emitted
            .iter()
            .map(|e| EmittedView {
                function: &e.function,
                key: &e.key,
                event_type: &e.event_type,
                payload: payload_view(&e.payload),
            })
            .collect(),
        archived_by: None,
    }
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
