//! What goes in comes back out: event data is stored and returned verbatim,
//! idempotency keys are bound to the event they were first used for, deploys
//! of unchanged bytes make no new version, and malformed paths and queries get
//! JSON errors.
//!
//! Needs the example components: run `make functions` first.

mod common;

use common::{Api, Server};
use serde_json::json;

/// The raw text of a GET, for bodies serde_json would refuse to parse.
fn get_text(server: &Server, path: &str) -> String {
    let response = server.http().get(server.full(path)).send().expect("a GET");
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    response.text().expect("a text body")
}

#[test]
fn unusual_event_data_reads_back_verbatim() {
    let server = Server::start();
    server.deploy("hostile");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let cases = [
        r#"{"junk":"\ud800"}"#.to_owned(),
        format!(r#"{{"junk":{deep}}}"#),
        r#"{"n":1.0e400000000000,"big":123456789012345678901234567890}"#.to_owned(),
    ];
    for (i, data) in cases.iter().enumerate() {
        let key = format!("k{i}");
        let body = format!(r#"{{"type":"Fine","data":{data}}}"#);
        let answer = server.post_raw(&Api::events_path("hostile", &key), body.into_bytes());
        if answer.status != 200 {
            // Refusing an out-of-range number is fine; accepting and then losing
            // it is not. The first two are valid JSON text and must be kept.
            assert!(i >= 2, "{data}: {answer:?}");
            assert_eq!(answer.status, 400, "{answer:?}");
            continue;
        }
        let history = get_text(&server, &Api::events_path("hostile", &key));
        assert!(history.contains(data.as_str()), "data {data} came back as {history}");
        let seq = answer.body["seq"].as_u64().expect("a seq");
        let event = get_text(&server, &format!("/v1/events/{seq}"));
        assert!(event.contains(data.as_str()), "data {data} came back as {event}");
    }
    assert!(server.healthy());
}

#[test]
fn an_idempotency_key_is_bound_to_its_first_event() {
    let server = Server::start();
    server.deploy("counter");
    let path = Api::events_path("counter", "p1");
    let first = json!({"type": "Say", "data": {"text": "a"}, "idempotency_key": "shared"});
    let applied = server.post_json(&path, &first).ok();
    let again = server.post_json(&path, &first).ok();
    assert_eq!(again["seq"], applied["seq"]);
    assert_eq!(again["deduplicated"], true);

    let other = json!({"type": "Say", "data": {"text": "DIFFERENT"}, "idempotency_key": "shared"});
    server.post_json(&path, &other).expect_error(409, "idempotency_key_reused");
    let bytes = json!({"type": "bytes", "data_base64": "aGV5", "idempotency_key": "shared"});
    server.post_json(&path, &bytes).expect_error(409, "idempotency_key_reused");
    assert_eq!(server.state("counter", "p1").ok()["version"], 1);

    // Whitespace between the data's tokens is not a different event; inside a
    // string it is.
    let spaced = br#"{ "type": "Say", "data": { "text" : "a" },
        "idempotency_key": "shared" }"#;
    let retried = server.post_raw(&path, spaced.to_vec()).ok();
    assert_eq!(
        (retried["seq"].clone(), retried["deduplicated"].clone()),
        (applied["seq"].clone(), json!(true))
    );
    let padded = json!({"type": "Say", "data": {"text": "a "}, "idempotency_key": "shared"});
    server.post_json(&path, &padded).expect_error(409, "idempotency_key_reused");

    // Keys are scoped to one process.
    let elsewhere = server.post_json(&Api::events_path("counter", "p2"), &other).ok();
    assert_eq!(elsewhere["deduplicated"], false);
    assert_eq!(elsewhere["version"], 1);
}

#[test]
fn deploying_unchanged_bytes_makes_no_new_version() {
    let server = Server::start();
    let first = server.deploy("counter");
    assert_eq!(first["version"], 1);
    let bytes = std::fs::read(common::function_wasm("counter")).expect("the component");
    let again = server.put_raw("/v1/functions/counter", bytes).expect(200);
    assert_eq!((again["version"].clone(), again["unchanged"].clone()), (json!(1), json!(true)));
    let other = std::fs::read(common::function_wasm("account")).expect("the component");
    let next = server.put_raw("/v1/functions/counter", other).expect(201);
    assert_eq!((next["version"].clone(), next["unchanged"].clone()), (json!(2), json!(false)));
}

#[test]
fn malformed_paths_and_queries_get_json_errors() {
    let server = Server::start();
    server.deploy("counter");
    server.say("counter", "k", "x");
    for path in [
        "/v1/functions/counter/processes/%FF/events",
        "/v1/functions/%FF",
        "/v1/events/%FF",
        "/v1/log?limit=0",
        "/v1/log?limit=-1",
        "/v1/functions/counter/processes?limit=0",
        "/v1/functions/counter/processes/k/events?limit=0",
    ] {
        let answer = server.raw("GET", path, b"");
        assert_eq!(answer.status, 400, "GET {path}: {answer:?}");
        assert!(
            !answer.code().is_empty() && !answer.message().is_empty(),
            "GET {path}: {answer:?}"
        );
    }
    assert_eq!(server.log().len(), 1);
}

/// A POST that takes a causal token takes it as `?after=` or in its body, and
/// refuses what it does not know rather than ignoring it.
#[test]
fn posted_requests_take_after_in_the_query_or_the_body() {
    let server = Server::start();
    server.deploy("counter");
    let sent = server.say("counter", "k", "x");
    let token = sent["token"].as_str().expect("token").to_owned();
    let cut = json!({ "processes": [{ "function": "counter", "key": "k" }] });

    let read = server.post_json(&format!("/v1/states?after={token}"), &cut).ok();
    assert_eq!(read["states"][0]["version"], 1, "{read}");
    // On a send, the token's event becomes a cause of the new one.
    let elsewhere = server.say("counter", "other", "x");
    let other_token = elsewhere["token"].as_str().expect("token").to_owned();
    let path = Api::events_path("counter", "k");
    let again = server
        .post_json(
            &format!("{path}?after={other_token}"),
            &json!({"type": "Say", "data": {"text": "y"}}),
        )
        .ok();
    let event = server.get(&format!("/v1/events/{}", again["seq"])).ok();
    let causes = event["causes"].as_array().expect("causes");
    assert!(causes.iter().any(|c| c["kind"] == "token" && c["seq"] == elsewhere["seq"]), "{event}");

    // Read, not ignored: a malformed token, two different ones, an unknown parameter.
    for (route, body) in [
        ("/v1/states", cut.clone()),
        (path.as_str(), json!({"type": "Say", "data": {"text": "z"}})),
    ] {
        server.post_json(&format!("{route}?after=nope"), &body).expect_error(400, "invalid_token");
        let mut both = body.clone();
        both["after"] = json!(token);
        server
            .post_json(&format!("{route}?after={other_token}"), &both)
            .expect_error(400, "invalid_token");
        server.post_json(&format!("{route}?version=1"), &body).expect_error(400, "invalid_query");
    }

    // Every answer, a read of one event or an error too, carries a token in
    // its header, which covers what it saw.
    let seq = again["seq"].as_u64().expect("seq");
    for path in
        [format!("/v1/events/{seq}"), "/v1/functions".to_owned(), "/v1/events/99999".to_owned()]
    {
        let (answer, headers) = server.call_with_headers(server.http().get(server.full(&path)));
        let header = headers.get("julato-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let covered: u64 = header.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(covered >= seq, "GET {path}: token `{header}`, {answer:?}");
    }

    // Bodies are JSON objects: the array of a struct's fields is not taken.
    server
        .post_raw(
            "/v1/transactions",
            br#"[[{"function":"counter","key":"k","type":"Say","data":{"text":"t"}}]]"#.to_vec(),
        )
        .expect_error(400, "invalid_json");
    server.post_raw(&path, br#"["Say", {"text": "t"}]"#.to_vec()).expect_error(400, "invalid_json");

    // An event with a bad name in a transaction is named.
    let refused = server.post_json(
        "/v1/transactions",
        &json!({ "events": [{ "function": "counter", "key": "", "type": "Say", "data": {"text": "t"} }] }),
    );
    refused.expect_error(400, "invalid_name");
    let error = &refused.body["error"];
    assert_eq!(
        (&error["event"], &error["function"], &error["key"]),
        (&json!(0), &json!("counter"), &json!("")),
        "{refused:?}"
    );
    assert_eq!(server.state("counter", "k").ok()["version"], 2);
}
