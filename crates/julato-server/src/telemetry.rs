//! Observability: the Prometheus endpoint `GET /metrics`, the span and the
//! metrics of every HTTP request, and the counters of accepted and refused
//! events. Counters and histograms go through the `metrics` facade to one
//! process-wide recorder; the coordinator's figures are read at each scrape.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use julato_coordinator::Coordinator;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::ApiError;

/// Counter: events durably accepted (a repeated idempotency key included).
const EVENTS_ACCEPTED: &str = "julato_events_accepted_total";
/// Counter: events refused, by error `code`.
const EVENTS_REJECTED: &str = "julato_events_rejected_total";
/// Counter: HTTP requests by `method`, `route` and `status`.
const HTTP_REQUESTS: &str = "julato_http_requests_total";
/// Histogram: seconds from a request's arrival to its answer, by `method` and `route`.
const HTTP_DURATION: &str = "julato_http_request_duration_seconds";

/// The `route` of a request no route matched: one label value for all of them.
const UNMATCHED: &str = "unmatched";

/// Bucket bounds of every histogram of seconds: 50 µs to 10 s.
const SECONDS_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// How often recorded histogram samples are folded into their buckets when
/// nobody scrapes, so that memory stays bounded.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder, once; later calls return the
/// same handle. `None` when another recorder was installed first: then
/// `/metrics` serves only the figures read from the coordinator.
pub fn install_metrics() -> Option<&'static PrometheusHandle> {
    RECORDER.get_or_init(install).as_ref()
}

fn install() -> Option<PrometheusHandle> {
    // Group sizes: 1 to 131,072 (a bulk request of 100,000 events is one commit).
    let counts: Vec<f64> = (0..18).map(|power| f64::from(1u32 << power)).collect();
    let installed = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Prefix("julato_store_fsync_batch_".into()), &counts)
        })
        .and_then(PrometheusBuilder::install_recorder);
    let handle = match installed {
        Ok(handle) => handle,
        Err(error) => {
            tracing::warn!(
                error = %error,
                "metrics recorder not installed; `/metrics` serves only the coordinator's figures"
            );
            return None;
        }
    };
    describe();
    let upkeep = handle.clone();
    let started = std::thread::Builder::new().name("julato-metrics".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        }
    });
    if let Err(error) = started {
        // Scrapes fold the samples too, so only an unscraped server grows.
        tracing::warn!(error = %error, "metrics upkeep thread not started");
    }
    Some(handle)
}

fn describe() {
    metrics::describe_counter!(
        EVENTS_ACCEPTED,
        "Events durably accepted, a repeated idempotency key included"
    );
    metrics::describe_counter!(
        EVENTS_REJECTED,
        "Events refused, by error code; a request refused as a whole counts once"
    );
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by method, route and status");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time from a request's arrival to its answer, by method and route"
    );
    julato_store::telemetry::describe();
    julato_executor::telemetry::describe();
}

/// Counts events durably accepted.
pub(crate) fn accepted(events: usize) {
    metrics::counter!(EVENTS_ACCEPTED).increment(events as u64);
}

/// Counts one refused event, or one request refused as a whole.
pub(crate) fn rejected(code: &'static str) {
    metrics::counter!(EVENTS_REJECTED, "code" => code).increment(1);
}

/// Counts the answer to a request of one event.
pub(crate) fn answered<T>(answer: &Result<T, ApiError>) {
    match answer {
        Ok(_) => accepted(1),
        Err(error) => rejected(error.code),
    }
}

/// Counts a request of several events refused as a whole; the events of an
/// accepted one are counted where they are answered.
pub(crate) fn refused<T>(answer: &Result<T, ApiError>) {
    if let Err(error) = answer {
        rejected(error.code);
    }
}

/// Wraps every route of `router` in a span and in the request metrics. The
/// span is at `debug` so that default logs stay quiet; it carries the method,
/// the route template and, once answered, the status.
pub(crate) fn observe(router: Router) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            tracing::debug_span!(
                "request",
                method = %request.method(),
                route = route_of(request),
                status = tracing::field::Empty,
            )
        })
        .on_request(())
        .on_response(|response: &Response, latency: Duration, span: &Span| {
            span.record("status", response.status().as_u16());
            tracing::debug!(took_us = latency.as_micros() as u64, "answered");
        })
        // Errors worth a line are logged where they happen; an `overloaded`
        // answer under load is not one.
        .on_failure(());
    router.layer(axum::middleware::from_fn(track)).layer(trace)
}

/// Middleware: counts and times every request by its route template, never by
/// its raw path, so that the number of series stays bounded.
async fn track(request: Request, next: Next) -> Response {
    let route = route_of(&request).to_owned();
    let method = method_of(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route.clone())
        .record(started.elapsed());
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

fn route_of(request: &Request) -> &str {
    request.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str)
}

/// The method as a label: any the API does not know is `other`, since clients
/// may send any token there.
fn method_of(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// `GET /metrics`: every metric in the Prometheus text format.
pub(crate) async fn scrape(State(coordinator): State<Arc<Coordinator>>) -> Response {
    let mut text = install_metrics().map(PrometheusHandle::render).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    write_coordinator(&coordinator, &mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// The coordinator's figures, read now. They are written here rather than
/// kept in the recorder so that a retired shard's series goes away with it.
fn write_coordinator(coordinator: &Coordinator, out: &mut String) {
    let shards = coordinator.managers();
    let scaling = coordinator.scaling();
    let (pending, delivered, dead_lettered) = coordinator.delivery_stats();
    let (fsyncs, commits) = coordinator.commit_stats();
    let per_shard = |value: &dyn Fn(&julato_coordinator::ShardStats) -> f64| -> Vec<Sample> {
        shards.iter().map(|s| (format!("{{shard=\"{}\"}}", s.shard), value(s))).collect()
    };
    let one = |value: f64| vec![(String::new(), value)];

    let families: Vec<(&str, &str, &str, Vec<Sample>)> = vec![
        ("julato_shards", "gauge", "Running process-manager shards", one(shards.len() as f64)),
        (
            "julato_shard_queue_depth",
            "gauge",
            "Commands queued on a shard",
            per_shard(&|s| s.queued as f64),
        ),
        (
            "julato_shard_queue_capacity",
            "gauge",
            "Commands a shard may queue before senders are told to back off",
            per_shard(&|s| s.capacity as f64),
        ),
        (
            "julato_shard_partitions",
            "gauge",
            "Partitions of the process space (of 4,096) a shard owns",
            per_shard(&|s| s.partitions as f64),
        ),
        (
            "julato_shard_busy_ratio",
            "gauge",
            "Share of the autoscaler's last interval a shard spent applying events",
            per_shard(&|s| s.busy_percent / 100.0),
        ),
        (
            "julato_shard_resident_processes",
            "gauge",
            "Processes whose state a shard holds in memory",
            per_shard(&|s| s.resident_processes as f64),
        ),
        (
            "julato_shard_resident_bytes",
            "gauge",
            "Bytes of process state a shard holds in memory",
            per_shard(&|s| s.resident_bytes as f64),
        ),
        (
            "julato_shard_snapshots_total",
            "counter",
            "Snapshots a shard took",
            per_shard(&|s| s.snapshots as f64),
        ),
        (
            "julato_shard_evictions_total",
            "counter",
            "Processes a shard evicted from memory",
            per_shard(&|s| s.evicted as f64),
        ),
        (
            "julato_shard_rehydrations_total",
            "counter",
            "Processes a shard rebuilt from a snapshot and the log",
            per_shard(&|s| s.rehydrated as f64),
        ),
        (
            "julato_delivery_pending",
            "gauge",
            "Emitted events not yet delivered",
            one(pending as f64),
        ),
        (
            "julato_delivery_delivered_total",
            "counter",
            "Emitted events delivered",
            one(delivered as f64),
        ),
        (
            "julato_delivery_dead_lettered_total",
            "counter",
            "Emitted events given up on as dead letters",
            one(dead_lettered as f64),
        ),
        (
            "julato_autoscaler_decisions_total",
            "counter",
            "Decisions the autoscaler carried out, by action",
            vec![
                ("{action=\"add\"}".to_owned(), scaling.added as f64),
                ("{action=\"retire\"}".to_owned(), scaling.retired as f64),
                ("{action=\"rebalance\"}".to_owned(), scaling.rebalanced as f64),
            ],
        ),
        ("julato_store_fsyncs_total", "counter", "Groups the store fsync'd", one(fsyncs as f64)),
        ("julato_store_commits_total", "counter", "Commits the store wrote", one(commits as f64)),
    ];
    for (name, kind, help, samples) in families {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
        out.push('\n');
    }
}

/// A sample's label set, written out (`{shard="0"}`, or empty), and its value.
type Sample = (String, f64);
