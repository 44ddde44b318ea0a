//! End-to-end tests of the limit flags of `julato serve`: each limit set low
//! refuses only the request that passes it, with the limit's own code, and
//! leaves no trace; the next request within the limits succeeds.
//!
//! Needs the example components: run `make functions` first.

mod common;

use common::Server;
use serde_json::{Value, json};

fn limited_server() -> Server {
    Server::start_with(&[
        "--max-event-kib",
        "4",
        "--max-state-kib",
        "1",
        "--max-reply-kib",
        "1",
        "--max-emits",
        "1",
        "--max-body-kib",
        "8",
        "--max-bulk-mib",
        "1",
        "--max-bulk-events",
        "10",
        "--max-component-mib",
        "1",
    ])
}

fn say(text: &str) -> Value {
    json!({ "type": "Say", "data": { "text": text } })
}

/// A `planes` flight with its airports and whether it departed and arrived.
fn flight(origin: &str, dest: &str, departed: bool, arrived: bool) -> Value {
    json!({
        "type": "Flight",
        "data": {
            "year": 2013, "month": 1, "day": 1,
            "dep_time": departed.then_some(517), "arr_time": arrived.then_some(830),
            "dep_delay": 2, "arr_delay": 11, "carrier": "UA", "flight": 1545,
            "tailnum": "N14228", "origin": origin, "dest": dest,
            "air_time": 227, "distance": 1400,
        },
    })
}

#[test]
fn request_limits_refuse_only_the_request_past_them() {
    let server = limited_server();

    // Component size: its own code; a component within the limit deploys.
    server
        .put_raw("/v1/functions/counter", vec![0u8; 3 << 19])
        .expect_error(413, "component_too_large");
    server.deploy("counter");

    // Event data, then a body padded past the send limit with data well within.
    server.send("counter", "a", &say(&"x".repeat(5 << 10))).expect_error(413, "event_too_large");
    let padded = format!("{}{}", say("hi"), " ".repeat(9 << 10));
    let path = common::Api::events_path("counter", "a");
    server.post_raw(&path, padded).expect_error(413, "body_too_large");
    assert_eq!(server.say("counter", "a", "hi")["version"], json!(1));

    // Bulk requests: the event count and the body size.
    let events: Vec<Value> = (0..11)
        .map(|i| json!({ "function": "counter", "key": format!("b{i}"), "type": "Say", "data": { "text": "x" } }))
        .collect();
    server
        .post_json("/v1/events", &json!({ "events": events }))
        .expect_error(413, "too_many_events");
    let padded = format!("{}{}", json!({ "events": events[..1] }), " ".repeat(1 << 20));
    server.post_raw("/v1/events", padded).expect_error(413, "body_too_large");
    assert_eq!(server.bulk(&events[..10])["accepted"], json!(10));

    // A read of several processes is held to the same count and body size.
    let processes: Vec<Value> =
        (0..11).map(|i| json!({ "function": "counter", "key": format!("b{i}") })).collect();
    server
        .post_json("/v1/states", &json!({ "processes": processes }))
        .expect_error(413, "too_many_events");
    let padded = format!("{}{}", json!({ "processes": processes[..1] }), " ".repeat(1 << 20));
    server.post_raw("/v1/states", padded).expect_error(413, "body_too_large");
    let read = server.post_json("/v1/states", &json!({ "processes": processes[..10] })).ok();
    assert_eq!(read["states"].as_array().map(Vec::len), Some(10), "{read}");

    // A transaction's events are held to the event data limit too, and fail whole.
    let tx = json!({ "events": [
        { "function": "counter", "key": "t", "type": "Say", "data": { "text": "ok" } },
        { "function": "counter", "key": "t", "type": "Say", "data": { "text": "x".repeat(5 << 10) } },
    ] });
    let refused = server.post_json("/v1/transactions", &tx);
    refused.expect_error(413, "event_too_large");
    assert_eq!(refused.body["error"]["event"], json!(1), "{refused:?}");
    server.state("counter", "t").expect_error(404, "process_not_found");
}

#[test]
fn handler_limits_refuse_only_the_event_past_them() {
    let server = limited_server();
    server.deploy("counter");
    server.deploy("planes");
    server.deploy("airports");
    server.deploy("relay");

    // Reply: 1,500 characters of text are within the event data limit, but the
    // reply that repeats them is over 1 KiB.
    server.say("counter", "r", "first");
    server.send("counter", "r", &say(&"x".repeat(1500))).expect_error(422, "reply_too_large");
    let next = server.say("counter", "r", "second");
    assert_eq!((&next["version"], &next["state"]), (&json!(2), &json!(2)), "{next}");

    // State: a plane's state keeps its last destination.
    let long_dest = "D".repeat(1500);
    server
        .send("planes", "p", &flight("EWR", &long_dest, true, true))
        .expect_error(422, "state_too_large");
    server.state("planes", "p").expect_error(404, "process_not_found");

    // Emits: a flight that departed and arrived emits two events; one that
    // never departed emits none, and one that never arrived emits one.
    server
        .send("planes", "p", &flight("EWR", "IAH", true, true))
        .expect_error(422, "too_many_emits");
    assert_eq!(
        server.send("planes", "p", &flight("EWR", "IAH", false, false)).ok()["version"],
        json!(1)
    );
    assert_eq!(
        server.send("planes", "p", &flight("EWR", "IAH", true, false)).ok()["version"],
        json!(2)
    );
    let ping = json!({ "type": "Ping", "data": { "to": "b", "left": 1 } });
    assert_eq!(server.send("relay", "a", &ping).ok()["version"], json!(1));

    // Nothing of the refused events was stored.
    let log = server.log();
    let planes: Vec<&Value> = log.iter().filter(|e| e["function"] == "planes").collect();
    assert_eq!(planes.len(), 2, "{planes:?}");
    assert!(log.iter().all(|e| e["key"] != "r" || e["data"]["text"] != json!("x".repeat(1500))));
}

#[test]
fn transaction_limits_refuse_only_the_transaction_past_them() {
    let server =
        Server::start_with(&["--max-transaction-events", "2", "--max-open-transactions", "1"]);
    server.deploy("counter");
    let event = |key: &str| json!({ "function": "counter", "key": key, "type": "Say", "data": { "text": "t" } });

    let three = json!({ "events": [event("a"), event("b"), event("c")] });
    server.post_json("/v1/transactions", &three).expect_error(413, "too_many_events");
    server.state("counter", "a").expect_error(404, "process_not_found");
    let two = json!({ "events": [event("a"), event("b")] });
    assert_eq!(
        server.post_json("/v1/transactions", &two).ok()["events"].as_array().map(Vec::len),
        Some(2)
    );

    let open = server.post_json("/v1/transactions/begin", &json!({})).ok();
    let id = open["id"].as_str().expect("a transaction id").to_owned();
    server.post_json("/v1/transactions/begin", &json!({})).expect_error(503, "overloaded");
    let add = format!("/v1/transactions/{id}/events");
    let one = json!({ "function": "counter", "key": "c", "type": "Say", "data": { "text": "t" } });
    server.post_json(&add, &one).ok();
    server.post_json(&add, &one).ok();
    server.post_json(&add, &one).expect_error(413, "too_many_events");
    server.post_json(&format!("/v1/transactions/{id}/rollback"), &json!({})).ok();
    server.post_json("/v1/transactions/begin", &json!({})).ok();
}

/// A limit no handler could run under is refused when the server starts, not
/// blamed on every component deployed after.
#[test]
fn impossible_handler_limits_are_refused_at_start() {
    let data = tempfile::tempdir().expect("a folder");
    let data = data.path().to_str().expect("a UTF-8 path");
    for (flag, value) in [
        ("--fuel", "0"),
        ("--handler-timeout-ms", "0"),
        ("--memory-mib", "1"),
        ("--memory-mib", "100000"),
    ] {
        let out = std::process::Command::new(common::binary())
            .args(["serve", "--data", data, "--listen", "127.0.0.1:0", flag, value])
            .output()
            .expect("running julato serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}
