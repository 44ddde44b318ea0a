//! Observability end to end: `GET /metrics` against a real server counts exactly
//! what the server answered, and `--log-format json` logs carry the span of each
//! request and of each handler invocation with their fields.

mod common;

use std::time::{Duration, Instant};

use common::{Api, Server};
use serde_json::{Value, json};

const EVENTS_ROUTE: &str = "/v1/functions/{function}/processes/{key}/events";

/// Longest wait for a log line the server writes after answering.
const LOG_TIMEOUT: Duration = Duration::from_secs(30);

/// One scrape of `/metrics`, in the Prometheus text format.
struct Scrape(String);

impl Scrape {
    #[track_caller]
    fn take(server: &Server) -> Self {
        let request = server.http().get(server.full("/metrics"));
        let (answer, headers) = server.call_with_headers(request);
        assert_eq!(answer.status, 200, "scrape failed: {answer:?}");
        let kind = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(kind.starts_with("text/plain"), "content type of a scrape: {kind}");
        let Value::String(text) = answer.body else { panic!("a scrape is text: {answer:?}") };
        Scrape(text)
    }

    /// The sum of the samples named `name` whose labels include all of
    /// `labels`; 0 when there is none (a counter not yet incremented).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|(set, _)| labels.iter().all(|(k, v)| set.contains(&format!("{k}=\"{v}\""))))
            .map(|(_, value)| value)
            .sum()
    }

    /// Every sample of `name`: its label set as written and its value.
    fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.0.lines().filter(|line| !line.starts_with('#')).filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let value = value.parse().unwrap_or_else(|_| panic!("bad sample value: {line}"));
            Some((labels, value))
        })
    }

    #[track_caller]
    fn assert_kind(&self, name: &str, kind: &str) {
        let line = format!("# TYPE {name} {kind}");
        assert!(self.0.lines().any(|l| l == line), "no `{line}` in:\n{}", self.0);
    }
}

/// A server whose logs stay at `info` whatever the test run's environment, and
/// whose shard count holds still.
fn quiet_server() -> Server {
    Server::start_with_env(&["--scale-interval-ms", "0"], &[("JULATO_LOG", "info")])
}

#[test]
fn metrics_count_exactly_what_the_server_answered() {
    let server = quiet_server();
    server.deploy("counter");
    let before = Scrape::take(&server);

    // Accepted: 3 sends, 2 of a bulk request and 2 of a transaction.
    for text in ["a", "b", "c"] {
        server.say("counter", "m", text);
    }
    let shout = json!({ "type": "Shout", "data": { "text": "!" } });
    let bulk = server.bulk(&[
        json!({ "function": "counter", "key": "m", "type": "Say", "data": { "text": "d" } }),
        json!({ "function": "counter", "key": "n", "type": "Shout" }),
        json!({ "function": "counter", "key": "n", "type": "Say", "data": { "text": "e" } }),
    ]);
    assert_eq!((bulk["accepted"].as_u64(), bulk["rejected"].as_u64()), (Some(2), Some(1)));
    let events = [
        json!({ "function": "counter", "key": "m", "type": "Say", "data": { "text": "f" } }),
        json!({ "function": "counter", "key": "o", "type": "Say", "data": { "text": "g" } }),
    ];
    server.post_json("/v1/transactions", &json!({ "events": events })).ok();

    // Refused: 2 sends the handler has no handler for, 1 unreadable body.
    for _ in 0..2 {
        server.send("counter", "m", &shout).expect_error(422, "unsupported_event_type");
    }
    server
        .post_raw(&Api::events_path("counter", "m"), "{not json")
        .expect_error(400, "invalid_json");
    server.get("/no/such/route").expect_error(404, "route_not_found");

    let after = Scrape::take(&server);
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);

    assert_eq!(moved("julato_events_accepted_total", &[]), 7.0);
    assert_eq!(moved("julato_events_rejected_total", &[("code", "unsupported_event_type")]), 3.0);
    assert_eq!(moved("julato_events_rejected_total", &[("code", "invalid_json")]), 1.0);
    assert_eq!(moved("julato_events_rejected_total", &[]), 4.0, "no other refusal counted");
    after.assert_kind("julato_events_rejected_total", "counter");

    // Every handler call counted by how it ended.
    assert_eq!(moved("julato_handler_invocations_total", &[("outcome", "accepted")]), 7.0);
    let unsupported = [("outcome", "unsupported_event_type")];
    assert_eq!(moved("julato_handler_invocations_total", &unsupported), 3.0);
    assert_eq!(moved("julato_handler_duration_seconds_count", &[]), 10.0);
    after.assert_kind("julato_handler_duration_seconds", "histogram");

    // Requests by route template and status; the raw path never becomes a label.
    let sends = [("method", "POST"), ("route", EVENTS_ROUTE)];
    assert_eq!(moved("julato_http_requests_total", &[sends[0], sends[1], ("status", "200")]), 3.0);
    assert_eq!(moved("julato_http_requests_total", &[sends[0], sends[1], ("status", "422")]), 2.0);
    assert_eq!(moved("julato_http_requests_total", &[sends[0], sends[1], ("status", "400")]), 1.0);
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(moved("julato_http_requests_total", &unmatched), 1.0);
    assert!(!after.0.contains("/no/such/route"), "a raw path became a label");
    assert!(!after.0.contains("route=\"/v1/functions/counter"), "a raw path became a label");
    assert_eq!(moved("julato_http_request_duration_seconds_count", &sends), 6.0);
    let inf = [sends[0], sends[1], ("le", "+Inf")];
    assert_eq!(moved("julato_http_request_duration_seconds_bucket", &inf), 6.0);
    after.assert_kind("julato_http_request_duration_seconds", "histogram");

    // The store: every fsync'd group is sampled, and it wrote the 7 events.
    after.assert_kind("julato_store_fsync_batch_events", "histogram");
    assert!(after.sum("julato_store_fsync_batch_events_count", &[]) > 0.0);
    assert_eq!(moved("julato_store_fsync_batch_events_sum", &[]), 7.0);
    assert_eq!(
        moved("julato_store_fsync_batch_events_count", &[]),
        moved("julato_store_fsyncs_total", &[]),
        "one sample per fsync'd group"
    );
    assert!(moved("julato_store_fsync_duration_seconds_count", &[]) > 0.0);

    // The coordinator's figures match what `/v1/managers` serves.
    let managers = server.get("/v1/managers").ok();
    let shards = managers["shards"].as_array().expect("shards").len() as f64;
    assert_eq!(after.sum("julato_shards", &[]), shards);
    assert_eq!(managers["scaling"]["shards"].as_f64(), Some(shards));
    assert_eq!(after.samples("julato_shard_queue_depth").count() as f64, shards);
    assert_eq!(after.sum("julato_shard_partitions", &[]), 4096.0);
    let resident: u64 = managers["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s["resident_processes"].as_u64().expect("resident_processes"))
        .sum();
    assert_eq!(after.sum("julato_shard_resident_processes", &[]), resident as f64);
    assert_eq!(
        after.sum("julato_store_fsyncs_total", &[]),
        managers["store"]["fsyncs"].as_f64().unwrap()
    );
    assert_eq!(after.sum("julato_autoscaler_decisions_total", &[]), 0.0);

    // Default logs stay quiet: no line per request or per invocation.
    let stderr = server.stderr();
    assert!(!stderr.contains("event accepted"), "invocations logged at info:\n{stderr}");
    assert!(!stderr.contains("answered"), "requests logged at info:\n{stderr}");
}

#[test]
fn json_logs_carry_the_request_and_invocation_spans() {
    let filter = "info,julato_server=debug,julato_executor=debug";
    let server = Server::start_with_env(&["--log-format", "json"], &[("JULATO_LOG", filter)]);
    server.deploy("counter");
    let sent = server.say("counter", "logged", "hello");
    let seq = sent["seq"].as_u64().expect("seq");

    let invocation = |line: &Value| {
        let span = &line["span"];
        span["name"] == "invoke"
            && span["function"] == "counter"
            && span["process"] == "logged"
            && span["seq"].as_u64() == Some(seq)
    };
    let request = |line: &Value| {
        let span = &line["span"];
        span["name"] == "request"
            && span["method"] == "POST"
            && span["route"] == EVENTS_ROUTE
            && span["status"].as_u64() == Some(200)
    };
    let deadline = Instant::now() + LOG_TIMEOUT;
    loop {
        let lines: Vec<Value> =
            server.stderr().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if lines.iter().any(invocation) && lines.iter().any(request) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no JSON line with the invoke span of seq {seq} and the request span:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
