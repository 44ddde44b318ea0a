//! The routes: each handler checks its input, calls the coordinator and writes
//! the answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router, middleware};
use julato_coordinator::{Coordinator, RestoreTarget};
use julato_core::{AsOf, CausalToken, EventTime, FunctionName, ProcessKey, Seq, Version};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutError};
use tracing::Instrument;

use crate::wire::{self, BulkBody, EventBody};
use crate::{ApiError, Config, RequestLimits, auth, causal, shed, telemetry};

type Shared = State<Arc<Coordinator>>;
/// The request limits, which every route is given.
pub(crate) type Limits = Extension<Arc<RequestLimits>>;
pub(crate) type ApiResult = Result<Response, ApiError>;

const OPENAPI: &str = include_str!("../openapi.json");
/// Largest page any listing returns.
const MAX_PAGE: usize = 1000;

/// The API's router over a coordinator, with the request limits, API tokens
/// and client rate of `config`.
pub fn router(coordinator: Arc<Coordinator>, config: &Config) -> Router {
    telemetry::install_metrics();
    let limits = &config.limits;
    let events = Router::new()
        .route("/v1/functions/{function}/processes/{key}/events", post(send).get(history))
        .route("/v1/transactions/{id}/events", post(causal::add))
        .layer(DefaultBodyLimit::max(limits.event_body));
    let bulk = Router::new()
        .route("/v1/events", post(send_bulk))
        .route("/v1/transactions", post(causal::transact))
        .route("/v1/states", post(causal::read_cut))
        .layer(DefaultBodyLimit::max(limits.bulk_body));
    let deploys = Router::new()
        .route("/v1/functions/{function}", put(deploy).get(function))
        .layer(DefaultBodyLimit::max(limits.component_bytes));
    let routes = Router::new()
        .route("/healthz", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(telemetry::scrape))
        .route("/v1/functions", get(functions))
        .route("/v1/functions/{function}/processes", get(processes))
        .route("/v1/functions/{function}/processes/{key}", get(state))
        .route("/v1/log", get(log))
        .route("/v1/events/{seq}", get(event))
        .route("/v1/managers", get(managers))
        .route("/v1/managers/evict", post(evict))
        .route("/v1/checkpoints", post(take_checkpoint).get(checkpoints))
        .route("/v1/restore", post(restore))
        .route("/v1/restores", get(restores))
        .route("/v1/events/{seq}/graph", get(causal::graph))
        .route("/v1/dead-letters", get(causal::dead_letters))
        .route("/v1/dead-letters/{id}/redrive", post(causal::redrive))
        .route("/v1/transactions/begin", post(causal::begin))
        .route("/v1/transactions/{id}", get(causal::show))
        .route("/v1/transactions/{id}/commit", post(causal::commit))
        .route("/v1/transactions/{id}/rollback", post(causal::rollback))
        .merge(events)
        .merge(bulk)
        .merge(deploys)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(Arc::new(limits.clone())))
        .with_state(coordinator.clone())
        .layer(middleware::from_fn_with_state(coordinator, stamp_token));

    // The guard wraps each route added above (it reads the matched route);
    // a route added after this line would be unchecked.
    let guarded = match auth::Guard::new(&config.tokens, config.rate_limit) {
        Some(guard) => routes.layer(middleware::from_fn_with_state(guard, auth::check)),
        None => routes,
    };
    // Inside the shedding, so a body that stalls frees its place in flight.
    let guarded = guarded.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    // Outside the guard, so a flood of refused requests is shed too; inside
    // telemetry, so shed requests are counted.
    let shedding = shed::layer(guarded, limits.in_flight);
    // Outermost, so that requests the guard refuses are traced and counted too.
    telemetry::observe(shedding)
}

/// The header every answer carries its causal token in.
pub const TOKEN_HEADER: &str = "julato-token";

/// Puts the causal token of the log as committed when the answer leaves in
/// its `julato-token` header: it covers everything the answer saw, so a
/// request given it as `after` sees at least as much.
async fn stamp_token(State(coordinator): Shared, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&coordinator.token().to_string()) {
        response.headers_mut().insert(TOKEN_HEADER, value);
    }
    response
}

/// The query of a route that takes none: anything given is refused, not
/// ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoQuery {}

pub(crate) type NoParams = Result<Query<NoQuery>, QueryRejection>;

pub(crate) fn body(bytes: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    bytes.map_err(|rejection| {
        let status = rejection.status();
        let mut cause: Option<&dyn std::error::Error> = Some(&rejection);
        while let Some(error) = cause {
            if error.is::<TimeoutError>() {
                return ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the client stopped sending the request's body",
                );
            }
            cause = error.source();
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("body_too_large", rejection.body_text())
        } else {
            ApiError::bad_request("bad_request", rejection.body_text())
        }
    })
}

/// A JSON object body as `T`. Only an object: serde would also take an array
/// of the fields' values, which no client means.
pub(crate) fn parse<T: DeserializeOwned>(
    bytes: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body(bytes)?;
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b != b'{') {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid request body: {e}")))
}

/// An optional JSON object body as `T`: its default when the body is empty.
pub(crate) fn parse_or_default<T: DeserializeOwned + Default>(
    bytes: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body(bytes)?;
    if bytes.iter().all(u8::is_ascii_whitespace) { Ok(T::default()) } else { parse(Ok(bytes)) }
}

/// Path parameters, with a JSON error when they are not valid UTF-8.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
    }
}

/// Page size: 100 unless given, at most [`MAX_PAGE`]; zero is refused.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(0) => Err(ApiError::bad_request("invalid_query", "`limit` must be at least 1")),
        Some(n) => Ok(n.min(MAX_PAGE)),
    }
}

/// The query of a POST whose body may also carry `after`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AfterQuery {
    after: Option<String>,
}

pub(crate) type AfterParam = Result<Query<AfterQuery>, QueryRejection>;

/// The causal token a request presents, as `?after=` or as `after` in its
/// body; both only if they are the same token.
pub(crate) fn presented(
    query: AfterParam,
    body: Option<String>,
) -> Result<Option<CausalToken>, ApiError> {
    let query = query_of(query)?;
    let token = match (query.after, body) {
        (Some(q), Some(b)) if q != b => {
            return Err(ApiError::bad_request(
                "invalid_token",
                "`after` is given twice, in the query and in the body, as different tokens",
            ));
        }
        (q, b) => q.or(b),
    };
    wire::parse_token(token.as_deref())
}

/// [`presented`], once the coordinator has observed it.
pub(crate) async fn observed(
    coordinator: &Coordinator,
    query: AfterParam,
    body: Option<String>,
) -> Result<Option<CausalToken>, ApiError> {
    let token = presented(query, body)?;
    if let Some(token) = &token {
        coordinator.observe(token).await?;
    }
    Ok(token)
}

pub(crate) fn query_of<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
}

/// Runs blocking coordinator work (reads that may replay handlers, checkpoints)
/// off the async executor.
pub(crate) async fn blocking<T: Send + 'static>(
    coordinator: &Arc<Coordinator>,
    work: impl FnOnce(&Coordinator) -> Result<T, julato_coordinator::Error> + Send + 'static,
) -> Result<T, ApiError> {
    let coordinator = coordinator.clone();
    tokio::task::spawn_blocking(move || work(&coordinator))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

pub(crate) fn ok(value: impl Serialize) -> ApiResult {
    Ok(Json(value).into_response())
}

/// One answer of a bulk request: the accepted event or why it was not.
#[derive(Serialize)]
#[serde(untagged)]
enum BulkResult<'a> {
    Applied(wire::AppliedView<'a>),
    Failed { error: Value },
}

/// A page of events.
#[derive(Serialize)]
struct EventPage<'a> {
    events: Vec<wire::RecordView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_from_version: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn function_name(name: &str) -> Result<FunctionName, ApiError> {
    FunctionName::new(name).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", format!("no route for `{uri}`"))
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("`{uri}` does not take {method}"),
    )
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn deploy(
    State(coordinator): Shared,
    Extension(limits): Limits,
    ApiPath(function): ApiPath<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let name = function_name(&function)?;
    let bytes = body(bytes)
        .map_err(|error| match error.status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(
                "component_too_large",
                format!("the component is over the limit of {} bytes", limits.component_bytes),
            ),
            _ => error,
        })?
        .to_vec();
    if bytes.is_empty() {
        return Err(ApiError::bad_request("empty_component", "the body must be a .wasm component"));
    }
    let worker = coordinator.clone();
    let deploy_name = name.clone();
    let (deployed, created) =
        tokio::task::spawn_blocking(move || worker.deploy(&deploy_name, bytes)).await.map_err(
            |e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        )??;
    let mut body = wire::deployed(&name, &deployed);
    body["unchanged"] = Value::Bool(!created);
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(body)).into_response())
}

async fn functions(State(coordinator): Shared) -> ApiResult {
    let list: Vec<Value> = coordinator.functions().iter().map(wire::function).collect();
    ok(json!({ "functions": list }))
}

async fn function(State(coordinator): Shared, ApiPath(function): ApiPath<String>) -> ApiResult {
    let info = coordinator.function(&function_name(&function)?)?;
    ok(wire::function(&info))
}

async fn send(
    State(coordinator): Shared,
    Extension(limits): Limits,
    ApiPath((function, key)): ApiPath<(String, String)>,
    query: AfterParam,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let answer = send_event(&coordinator, &limits, &function, &key, query, bytes).await;
    telemetry::answered(&answer);
    answer
}

async fn send_event(
    coordinator: &Coordinator,
    limits: &RequestLimits,
    function: &str,
    key: &str,
    query: AfterParam,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let process = wire::process_id(function, key)?;
    let mut body: EventBody = parse(bytes)?;
    let presented = observed(coordinator, query, body.after.take()).await?;
    let mut request = wire::send_request(process.clone(), body, limits)?;
    request.after = presented.as_ref().map(CausalToken::seq).filter(|s| s.0 > 0);
    let span = tracing::info_span!("send", function = %process.function, process = %process.key);
    let applied = coordinator.send(request).instrument(span).await?;
    let token = CausalToken::at(applied.seq).merge(&presented.unwrap_or_default());
    ok(wire::applied(&process, &applied, token))
}

async fn send_bulk(
    State(coordinator): Shared,
    Extension(limits): Limits,
    query: AfterParam,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let answer = send_events(&coordinator, &limits, query, bytes).await;
    telemetry::refused(&answer);
    answer
}

/// A bulk request; each event's answer is counted here, a request refused as
/// a whole by the caller.
async fn send_events(
    coordinator: &Coordinator,
    limits: &RequestLimits,
    query: AfterParam,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut body: BulkBody = parse(bytes)?;
    if body.events.len() > limits.bulk_events {
        return Err(ApiError::too_large(
            "too_many_events",
            format!("{} events, over the limit of {}", body.events.len(), limits.bulk_events),
        ));
    }
    let presented = observed(coordinator, query, body.after.take()).await?;

    // Events that fail validation are answered on their own; the rest are sent.
    let mut failures: Vec<Option<Value>> = Vec::with_capacity(body.events.len());
    let mut requests = Vec::new();
    for event in body.events {
        match wire::bulk_request(event, limits) {
            Ok(mut request) => {
                request.after = presented.as_ref().map(CausalToken::seq).filter(|s| s.0 > 0);
                requests.push(request);
                failures.push(None);
            }
            Err(error) => {
                telemetry::rejected(error.code);
                failures.push(Some(json!(error.body())));
            }
        }
    }
    let processes: Vec<_> = requests.iter().map(|r| r.process.clone()).collect();
    let mut answers = coordinator.send_many(requests).await.into_iter().zip(&processes);
    let (mut accepted, mut deduplicated, mut max_seq) = (0usize, 0usize, Seq(0));
    let mut results = Vec::with_capacity(failures.len());
    for failure in failures {
        let result = match failure {
            Some(error) => BulkResult::Failed { error },
            None => match answers.next() {
                Some((Ok(applied), process)) => {
                    accepted += 1;
                    deduplicated += usize::from(applied.deduplicated);
                    max_seq = max_seq.max(applied.seq);
                    let token = CausalToken::at(applied.seq);
                    BulkResult::Applied(wire::applied(process, &applied, token))
                }
                Some((Err(error), _)) => {
                    let error = ApiError::from(error);
                    telemetry::rejected(error.code);
                    BulkResult::Failed { error: error.body() }
                }
                None => {
                    telemetry::rejected("internal");
                    BulkResult::Failed {
                        error: ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            "an answer is missing",
                        )
                        .body(),
                    }
                }
            },
        };
        results.push(result);
    }
    telemetry::accepted(accepted);
    let total = results.len();
    let token = CausalToken::at(max_seq.max(coordinator.token().seq()))
        .merge(&presented.unwrap_or_default());
    #[derive(Serialize)]
    struct BulkAnswer<'a> {
        /// Events applied now or, for a repeated idempotency key, before.
        accepted: usize,
        /// How many of the accepted were repeats answered with the first answer.
        deduplicated: usize,
        rejected: usize,
        results: Vec<BulkResult<'a>>,
        token: String,
    }
    ok(BulkAnswer {
        accepted,
        deduplicated,
        rejected: total - accepted,
        results,
        token: token.to_string(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    after: Option<String>,
    version: Option<u64>,
    seq: Option<u64>,
    at: Option<String>,
}

async fn state(
    State(coordinator): Shared,
    ApiPath((function, key)): ApiPath<(String, String)>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> ApiResult {
    let query = query_of(query)?;
    let process = wire::process_id(&function, &key)?;
    let point = wire::as_of(query.version, query.seq, query.at.as_deref())?;
    let presented = wire::parse_token(query.after.as_deref())?;
    if let Some(token) = &presented {
        coordinator.observe(token).await?;
    }
    if let Some(AsOf::Time(time)) = point {
        coordinator.observe_time(time).await?;
    }
    let token = coordinator.token().merge(&presented.unwrap_or_default());
    let target = process.clone();
    let read = blocking(&coordinator, move |c| match point {
        None => c.state(&target),
        Some(point) => c.state_at(&target, point),
    })
    .await?;
    ok(wire::head(&process, &read, token))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    from_version: Option<u64>,
    limit: Option<usize>,
    version: Option<u64>,
    seq: Option<u64>,
    at: Option<String>,
}

async fn history(
    State(coordinator): Shared,
    ApiPath((function, key)): ApiPath<(String, String)>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult {
    let query = query_of(query)?;
    let process = wire::process_id(&function, &key)?;
    let limit = page_limit(query.limit)?;
    let upto = wire::as_of(query.version, query.seq, query.at.as_deref())?;
    if let Some(AsOf::Time(time)) = upto {
        coordinator.observe_time(time).await?;
    }
    let from = Version(query.from_version.unwrap_or(1));
    // One more than asked tells whether another page exists within the bound.
    let mut events =
        blocking(&coordinator, move |c| c.history(&process, from, upto, limit + 1)).await?;
    let next = (events.len() > limit).then(|| events[limit].version.0);
    events.truncate(limit);
    ok(EventPage {
        events: events.iter().map(wire::record).collect(),
        next_from_version: Some(next),
        next_from: None,
        token: None,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessesQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn processes(
    State(coordinator): Shared,
    ApiPath(function): ApiPath<String>,
    query: Result<Query<ProcessesQuery>, QueryRejection>,
) -> ApiResult {
    let query = query_of(query)?;
    let name = function_name(&function)?;
    let after = query
        .after
        .map(ProcessKey::new)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let limit = page_limit(query.limit)?;
    let page = coordinator.processes(&name, after.as_ref(), limit)?;
    let next = (page.len() == limit).then(|| page.last().map(|p| p.key.clone())).flatten();
    let list: Vec<Value> = page.iter().map(wire::summary).collect();
    ok(json!({ "function": name, "processes": list, "next_after": next }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    from: Option<u64>,
    limit: Option<usize>,
    /// Read the events a restore archived instead of the live timeline.
    branch: Option<u64>,
}

async fn log(
    State(coordinator): Shared,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult {
    let query = query_of(query)?;
    let limit = page_limit(query.limit)?;
    let from = Seq(query.from.unwrap_or(1).max(1));
    let branch = query.branch;
    let events = blocking(&coordinator, move |c| c.log(from, limit, branch)).await?;
    let next = events.last().map(|r| r.seq.0 + 1).unwrap_or(from.0);
    ok(EventPage {
        events: events
            .iter()
            .map(|r| wire::RecordView { archived_by: branch, ..wire::record(r) })
            .collect(),
        next_from_version: None,
        next_from: Some(next),
        token: Some(coordinator.token().to_string()),
    })
}

async fn event(
    State(coordinator): Shared,
    ApiPath(seq): ApiPath<String>,
    query: NoParams,
) -> ApiResult {
    query_of(query)?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::bad_request("bad_request", format!("`{seq}` is not a seq")))?;
    let (record, archived_by) = coordinator.event(Seq(seq))?;
    ok(wire::RecordView { archived_by, ..wire::record(&record) })
}

async fn managers(State(coordinator): Shared) -> ApiResult {
    let (fsyncs, commits) = coordinator.commit_stats();
    let (pending, delivered, dead_lettered) = coordinator.delivery_stats();
    let internal = |e: serde_json::Error| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    };
    let shards = serde_json::to_value(coordinator.managers()).map_err(internal)?;
    let scaling = serde_json::to_value(coordinator.scaling()).map_err(internal)?;
    ok(json!({
        "shards": shards,
        "scaling": scaling,
        "store": { "fsyncs": fsyncs, "commits": commits },
        "delivery": { "pending": pending, "delivered": delivered, "dead_lettered": dead_lettered },
    }))
}

async fn evict(State(coordinator): Shared) -> ApiResult {
    let evicted = coordinator.evict_all().await;
    ok(json!({ "evicted": evicted }))
}

async fn take_checkpoint(State(coordinator): Shared) -> ApiResult {
    let checkpoint = blocking(&coordinator, |c| c.checkpoint()).await?;
    Ok((StatusCode::CREATED, Json(wire::checkpoint(&checkpoint))).into_response())
}

async fn checkpoints(State(coordinator): Shared) -> ApiResult {
    let list = blocking(&coordinator, |c| c.checkpoints()).await?;
    let list: Vec<Value> = list.iter().map(wire::checkpoint).collect();
    ok(json!({ "checkpoints": list }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    seq: Option<u64>,
    at: Option<String>,
}

async fn restore(State(coordinator): Shared, bytes: Result<Bytes, BytesRejection>) -> ApiResult {
    let body: RestoreBody = parse(bytes)?;
    let target = match (body.seq, body.at) {
        (Some(seq), None) => RestoreTarget::Seq(Seq(seq)),
        (None, Some(at)) => RestoreTarget::Time(
            EventTime::parse_rfc3339(&at)
                .map_err(|message| ApiError::bad_request("invalid_time", message))?,
        ),
        _ => {
            return Err(ApiError::bad_request("bad_request", "give exactly one of `seq` and `at`"));
        }
    };
    let report = coordinator.restore(target).await?;
    ok(wire::restore_report(&report, coordinator.token()))
}

async fn restores(State(coordinator): Shared) -> ApiResult {
    let list: Vec<Value> = coordinator.restores().iter().map(wire::branch).collect();
    ok(json!({ "restores": list }))
}

#[cfg(test)]
mod tests {
    use super::OPENAPI;

    /// Every route the router serves is described in the OpenAPI document.
    #[test]
    fn openapi_describes_every_route() {
        let spec: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let routes = [
            ("/healthz", "get"),
            ("/v1/openapi.json", "get"),
            ("/metrics", "get"),
            ("/v1/functions", "get"),
            ("/v1/functions/{function}", "put"),
            ("/v1/functions/{function}", "get"),
            ("/v1/functions/{function}/processes", "get"),
            ("/v1/functions/{function}/processes/{key}", "get"),
            ("/v1/functions/{function}/processes/{key}/events", "post"),
            ("/v1/functions/{function}/processes/{key}/events", "get"),
            ("/v1/events", "post"),
            ("/v1/log", "get"),
            ("/v1/events/{seq}", "get"),
            ("/v1/managers", "get"),
            ("/v1/managers/evict", "post"),
            ("/v1/checkpoints", "post"),
            ("/v1/checkpoints", "get"),
            ("/v1/restore", "post"),
            ("/v1/restores", "get"),
            ("/v1/transactions", "post"),
            ("/v1/transactions/begin", "post"),
            ("/v1/transactions/{id}", "get"),
            ("/v1/transactions/{id}/events", "post"),
            ("/v1/transactions/{id}/commit", "post"),
            ("/v1/transactions/{id}/rollback", "post"),
            ("/v1/events/{seq}/graph", "get"),
            ("/v1/states", "post"),
            ("/v1/dead-letters", "get"),
            ("/v1/dead-letters/{id}/redrive", "post"),
        ];
        for (path, method) in routes {
            assert!(spec["paths"][path][method].is_object(), "{method} {path} is not described");
        }
    }
}
