//! Routes of transactions, the causal graph, consistent reads of several
//! processes and the dead letters of emitted events.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use julato_coordinator::graph::Direction;
use julato_coordinator::{Committed, Coordinator, SendRequest};
use julato_core::{CausalToken, Origin, Seq};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::routes::{
    AfterParam, ApiPath, ApiResult, Limits, NoParams, blocking, observed, ok, page_limit, parse,
    parse_or_default, query_of,
};
use crate::wire::{self, BulkEvent};
use crate::{ApiError, RequestLimits, telemetry};

type Shared = State<Arc<Coordinator>>;

/// Body of a one-shot transaction.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionBody {
    pub events: Vec<BulkEvent>,
    #[serde(default)]
    pub after: Option<String>,
}

/// Checks every event of a transaction; the first bad one fails the whole.
fn requests(
    events: Vec<BulkEvent>,
    after: Option<&CausalToken>,
    limits: &RequestLimits,
    most: usize,
) -> Result<Vec<SendRequest>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::bad_request(
            "empty_transaction",
            "a transaction needs at least one event",
        ));
    }
    if events.len() > most {
        return Err(ApiError::too_large(
            "too_many_events",
            format!("{} events, over the limit of {most} per transaction", events.len()),
        ));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(index, event)| {
            let mut request =
                wire::bulk_request(event, limits).map_err(|e| e.with("event", index))?;
            request.after = after.map(CausalToken::seq).filter(|s| s.0 > 0);
            Ok(request)
        })
        .collect()
}

/// The answer to a committed transaction.
fn committed(committed: &Committed, presented: Option<&CausalToken>) -> Value {
    let newest = committed.events.iter().map(|(_, a)| a.seq).max().unwrap_or(Seq(0));
    let token = CausalToken::at(newest).merge(&presented.cloned().unwrap_or_default());
    let events: Vec<Value> = committed
        .events
        .iter()
        .map(|(process, applied)| {
            json!(wire::applied(process, applied, CausalToken::at(applied.seq)))
        })
        .collect();
    json!({
        "transaction": committed.transaction,
        "events": events,
        "token": token.to_string(),
    })
}

pub async fn transact(
    State(coordinator): Shared,
    Extension(limits): Limits,
    query: AfterParam,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let answer = transact_events(&coordinator, &limits, query, bytes).await;
    telemetry::refused(&answer);
    answer
}

/// A one-shot transaction; its events are counted here once committed, a
/// refused transaction once by the caller.
async fn transact_events(
    coordinator: &Coordinator,
    limits: &RequestLimits,
    query: AfterParam,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: TransactionBody = parse(bytes)?;
    let presented = observed(coordinator, query, body.after).await?;
    let most = coordinator.transaction_limits().events;
    let requests = requests(body.events, presented.as_ref(), limits, most)?;
    let span = tracing::info_span!("transaction", events = requests.len());
    let answer = tracing::Instrument::instrument(coordinator.transact(requests), span)
        .await
        .map_err(ApiError::from)?;
    telemetry::accepted(answer.events.len());
    ok(committed(&answer, presented.as_ref()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginBody {
    /// Roll back after this long idle (bounded by the server).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// A causal token: the transaction first observes it, and it is a cause
    /// of every event added without a token of its own.
    #[serde(default)]
    pub after: Option<String>,
}

pub async fn begin(
    State(coordinator): Shared,
    query: AfterParam,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: BeginBody = parse_or_default(bytes)?;
    let presented = observed(&coordinator, query, body.after).await?;
    let after = presented.as_ref().map(CausalToken::seq);
    let (id, timeout) = coordinator.begin(body.timeout_ms.map(Duration::from_millis), after)?;
    let token = coordinator.token().merge(&presented.unwrap_or_default());
    let answer =
        json!({ "id": id, "timeout_ms": timeout.as_millis() as u64, "token": token.to_string() });
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

pub async fn add(
    State(coordinator): Shared,
    Extension(limits): Limits,
    ApiPath(id): ApiPath<String>,
    query: AfterParam,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    // An event taken tentatively is counted when its transaction commits.
    let answer = add_event(&coordinator, &limits, id, query, bytes).await;
    telemetry::refused(&answer);
    answer
}

async fn add_event(
    coordinator: &Arc<Coordinator>,
    limits: &RequestLimits,
    id: String,
    query: AfterParam,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut event: BulkEvent = parse(bytes)?;
    let presented = observed(coordinator, query, event.after.take()).await?;
    let mut request = wire::bulk_request(event, limits)?;
    request.after = presented.as_ref().map(CausalToken::seq).filter(|s| s.0 > 0);
    let tentative = blocking(coordinator, move |c| c.add(&id, request)).await?;
    let token = coordinator.token().merge(&presented.unwrap_or_default());
    ok(json!({
        "function": tentative.function,
        "key": tentative.key,
        "version": tentative.version,
        "state": wire::raw(&tentative.state),
        "reply": tentative.reply.as_deref().map(wire::raw),
        "emitted": tentative.emitted,
        "tentative": !tentative.deduplicated,
        "deduplicated": tentative.deduplicated,
        "token": token.to_string(),
    }))
}

pub async fn show(
    State(coordinator): Shared,
    ApiPath(id): ApiPath<String>,
    query: NoParams,
) -> ApiResult {
    query_of(query)?;
    let open = coordinator.open_transaction(&id)?;
    let touched: Vec<Value> = open
        .touched
        .iter()
        .map(|t| {
            json!({
                "function": t.process.function,
                "key": t.process.key,
                "read_version": t.read_version,
                "version": t.version,
            })
        })
        .collect();
    ok(json!({
        "id": id,
        "events": open.events,
        "processes": touched,
        "aborted": open.aborted.is_some(),
        "aborted_by": open.aborted,
    }))
}

pub async fn commit(
    State(coordinator): Shared,
    ApiPath(id): ApiPath<String>,
    query: AfterParam,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: CommitBody = parse_or_default(bytes)?;
    let presented = observed(&coordinator, query, body.after).await?;
    let answer = coordinator.commit(&id).await.map_err(ApiError::from);
    match &answer {
        Ok(answer) => telemetry::accepted(answer.events.len()),
        // A transaction refused at commit counts once, whatever its size.
        Err(error) => telemetry::rejected(error.code),
    }
    ok(committed(&answer?, presented.as_ref()))
}

/// Optional body of a commit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// A causal token the commit first observes.
    #[serde(default)]
    pub after: Option<String>,
}

pub async fn rollback(
    State(coordinator): Shared,
    ApiPath(id): ApiPath<String>,
    query: NoParams,
) -> ApiResult {
    query_of(query)?;
    let events = coordinator.rollback(&id)?;
    ok(json!({ "id": id, "rolled_back": true, "events": events }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    direction: Option<String>,
    depth: Option<u32>,
    format: Option<String>,
}

pub async fn graph(
    State(coordinator): Shared,
    ApiPath(seq): ApiPath<String>,
    query: Result<Query<GraphQuery>, QueryRejection>,
) -> ApiResult {
    let query = query_of(query)?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::bad_request("bad_request", format!("`{seq}` is not a seq")))?;
    let direction = match query.direction.as_deref() {
        None | Some("causes") => Direction::Causes,
        Some("effects") => Direction::Effects,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`direction` is `causes` or `effects`, not `{other}`"),
            ));
        }
    };
    let dot = match query.format.as_deref() {
        None | Some("json") => false,
        Some("dot") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`format` is `json` or `dot`, not `{other}`"),
            ));
        }
    };
    let depth = query.depth.unwrap_or(1);
    let graph = blocking(&coordinator, move |c| c.graph(Seq(seq), direction, depth)).await?;
    if dot {
        Ok(([(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")], graph.to_dot())
            .into_response())
    } else {
        ok(graph)
    }
}

/// One process named in a consistent read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    function: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutBody {
    processes: Vec<Named>,
    #[serde(default)]
    after: Option<String>,
}

pub async fn read_cut(
    State(coordinator): Shared,
    Extension(limits): Limits,
    query: AfterParam,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: CutBody = parse(bytes)?;
    if body.processes.is_empty() {
        return Err(ApiError::bad_request("bad_request", "name at least one process"));
    }
    if body.processes.len() > limits.bulk_events {
        return Err(ApiError::too_large(
            "too_many_events",
            format!(
                "{} processes, over the limit of {} per read",
                body.processes.len(),
                limits.bulk_events
            ),
        ));
    }
    let presented = observed(&coordinator, query, body.after).await?;
    let processes = body
        .processes
        .iter()
        .map(|p| wire::process_id(&p.function, &p.key))
        .collect::<Result<Vec<_>, _>>()?;
    let asked = processes.clone();
    let cut = blocking(&coordinator, move |c| c.read_cut(&asked)).await?;
    let token = CausalToken::at(cut.seq).merge(&presented.unwrap_or_default());
    let states: Vec<Value> = processes
        .iter()
        .zip(&cut.states)
        .map(|(process, read)| json!(wire::head(process, read, token.clone())))
        .collect();
    ok(json!({ "cut": cut.seq, "states": states, "token": token.to_string() }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn dead_letters(
    State(coordinator): Shared,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> ApiResult {
    let query = query_of(query)?;
    let limit = page_limit(query.limit)?;
    let after = query.after.as_deref().map(origin).transpose()?;
    let letters = blocking(&coordinator, move |c| c.dead_letters(after, limit)).await?;
    let next = (letters.len() == limit)
        .then(|| letters.last().map(|l| l.entry.origin.to_string()))
        .flatten();
    let list: Vec<Value> = letters.iter().map(wire::dead_letter).collect();
    ok(json!({ "dead_letters": list, "next_after": next }))
}

pub async fn redrive(State(coordinator): Shared, ApiPath(id): ApiPath<String>) -> ApiResult {
    let origin = origin(&id)?;
    let letter = blocking(&coordinator, move |c| c.redrive(origin)).await?;
    let answer = json!({ "redriven": wire::dead_letter(&letter) });
    Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response())
}

fn origin(text: &str) -> Result<Origin, ApiError> {
    text.parse::<Origin>().map_err(|message| ApiError::bad_request("bad_request", message))
}
