//! End-to-end tests of the `julato` binary: a real server process on a temporary
//! data folder, driven over HTTP and through the binary's client verbs.
//!
//! Needs the example components: run `make functions` first.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::{Api, Server, b64, run_cli, say_reply, time_key};
use serde_json::{Value, json};

fn as_u64(value: &Value, what: &str) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("{what} is not an unsigned integer: {value}"))
}

/// (a) Concurrent senders over shared processes: every event counted exactly once,
/// versions 1..n without gaps, seqs increasing, replies right.
#[test]
fn concurrent_says_are_counted_exactly_once() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 250;
    const PROCESSES: usize = 20;
    let server = Server::start();
    server.deploy("counter");

    let key_of = |thread: usize, i: usize| format!("p{:02}", (thread * 7 + i) % PROCESSES);
    let sent: Vec<Vec<(String, String, Value)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let api = server.api();
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let key = key_of(thread, i);
                            let text = format!("t{thread}-e{i}");
                            let answer = api.say("counter", &key, &text);
                            (key, text, answer)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a sender thread panicked")).collect()
    });

    // Every answer on its own.
    let mut by_text: HashMap<String, (String, Value)> = HashMap::new();
    let mut seqs = HashSet::new();
    let mut versions = HashSet::new();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for answers in &sent {
        let mut last_of_key: HashMap<&str, (u64, u64)> = HashMap::new();
        for (key, text, answer) in answers {
            *expected.entry(key.clone()).or_default() += 1;
            let seq = as_u64(&answer["seq"], "seq");
            let version = as_u64(&answer["version"], "version");
            assert_eq!(answer["function"], "counter", "{answer}");
            assert_eq!(answer["key"], json!(key), "{answer}");
            assert_eq!(answer["state"], json!(version), "counter state must equal its version");
            assert_eq!(answer["reply"], json!(say_reply(text, version)), "{answer}");
            assert_eq!(answer["deduplicated"], json!(false), "{answer}");
            assert_eq!(answer["token"], json!(format!("v2.0-{seq}")), "{answer}");
            assert!(seqs.insert(seq), "seq {seq} given twice");
            assert!(versions.insert((key.clone(), version)), "{key} v{version} given twice");
            // One thread sends one event at a time, so what it sees of a process
            // only moves forward.
            if let Some((last_seq, last_version)) = last_of_key.get(key.as_str()) {
                assert!(seq > *last_seq && version > *last_version, "{key} went back: {answer}");
            }
            last_of_key.insert(key, (seq, version));
            by_text.insert(text.clone(), (key.clone(), answer.clone()));
        }
    }
    assert_eq!(by_text.len(), THREADS * PER_THREAD);
    assert_eq!(expected.len(), PROCESSES);

    // Every process as stored.
    for (key, &count) in &expected {
        let state = server.state("counter", key).ok();
        assert_eq!(state["state"], json!(count), "{key}: {state}");
        assert_eq!(state["version"], json!(count), "{key}: {state}");

        let history = server.history("counter", key);
        assert_eq!(history.len() as u64, count, "{key}: history length");
        let mut last_seq = 0;
        for (i, event) in history.iter().enumerate() {
            let version = as_u64(&event["version"], "version");
            let seq = as_u64(&event["seq"], "seq");
            assert_eq!(version, i as u64 + 1, "{key}: versions must be 1..n without gaps");
            assert!(seq > last_seq, "{key}: seqs must increase: {seq} after {last_seq}");
            last_seq = seq;
            assert_eq!(event["type"], "Say");
            assert_eq!((&event["function"], &event["key"]), (&json!("counter"), &json!(key)));
            let text = event["data"]["text"].as_str().expect("Say text");
            let (sent_key, answer) = by_text.get(text).expect("an event nobody sent");
            assert_eq!(sent_key, key, "event {text} landed in the wrong process");
            assert_eq!(event["seq"], answer["seq"], "{text}: seq differs from the answer");
            assert_eq!(event["version"], answer["version"], "{text}");
            assert_eq!(event["reply"], answer["reply"], "{text}");
            assert_eq!(event["time"], answer["time"], "{text}");
        }
        assert_eq!(state["seq"], json!(last_seq), "{key}: head seq is the newest event's");
    }

    // The global log holds exactly these events, in seq order.
    let log = server.log();
    assert_eq!(log.len(), THREADS * PER_THREAD, "log length");
    let (mut last, mut last_time) = (0, time_key(&log[0]["time"]));
    for event in &log {
        let seq = as_u64(&event["seq"], "seq");
        assert!(seq > last, "log seqs must increase: {seq} after {last}");
        last = seq;
        let time = time_key(&event["time"]);
        assert!(time >= last_time, "event times must follow seq order: {event}");
        last_time = time;
        let text = event["data"]["text"].as_str().expect("Say text");
        assert_eq!(by_text[text].1["seq"], event["seq"], "{text}");
    }
    let one = server.get(&format!("/v1/events/{last}")).ok();
    assert_eq!(one, *log.last().expect("a log"));

    let listed = server.processes("counter");
    let listed: BTreeMap<String, u64> = listed
        .iter()
        .map(|p| (p["key"].as_str().expect("key").to_owned(), as_u64(&p["version"], "version")))
        .collect();
    assert_eq!(listed, expected, "process listing");
}

/// (b) An event type the function does not handle is refused and changes nothing.
#[test]
fn unsupported_event_type_is_refused_without_effect() {
    let server = Server::start();
    let deployed = server.deploy("counter");
    let types = deployed["event_types"].as_array().expect("event_types");
    assert!(types.contains(&json!("Say")), "{deployed}");

    server.say("counter", "a", "one");
    let before = server.state("counter", "a").ok();

    let refused = server.send("counter", "a", &json!({ "type": "Shout", "data": { "text": "x" } }));
    refused.expect_error(422, "unsupported_event_type");
    assert!(refused.message().contains("Shout"), "message must name the type: {refused:?}");

    let after = server.state("counter", "a").ok();
    assert_eq!(after["version"], 1);
    assert_eq!(after["state"], 1);
    assert_eq!((&after["seq"], &after["updated"]), (&before["seq"], &before["updated"]));
    assert_eq!(server.history("counter", "a").len(), 1);

    // On a new process, a refused first event creates nothing.
    server
        .send("counter", "fresh", &json!({ "type": "Shout" }))
        .expect_error(422, "unsupported_event_type");
    server.state("counter", "fresh").expect_error(404, "process_not_found");
    server.get(&Api::events_path("counter", "fresh")).expect_error(404, "process_not_found");

    // The next accepted event takes the next version.
    let next = server.say("counter", "a", "two");
    assert_eq!((&next["version"], &next["state"]), (&json!(2), &json!(2)));
    assert_eq!(server.log().len(), 2, "refused events must not reach the log");
}

/// (c) Raw bytes go through the `bytes` adapter to the same handler as `Say`.
#[test]
fn bytes_adapter_matches_say() {
    let server = Server::start();
    server.deploy("counter");
    let text = "héllo wörld ✓ 42";

    let said = server.say("counter", "json", text);
    let raw =
        server.send("counter", "raw", &json!({ "type": "bytes", "data_base64": b64(text) })).ok();
    assert_eq!(raw["reply"], said["reply"], "bytes must reply as the equivalent Say");
    assert_eq!(raw["reply"], json!(say_reply(text, 1)));
    assert_eq!((&raw["state"], &raw["version"]), (&said["state"], &said["version"]));

    let history = server.history("counter", "raw");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["type"], "bytes");
    assert_eq!(history[0]["data_base64"], json!(b64(text)), "bytes are stored as sent");
    assert!(history[0].get("data").is_none(), "{}", history[0]);

    // Bytes that are not UTF-8 are refused and change nothing.
    let bad = server.send(
        "counter",
        "raw",
        &json!({ "type": "bytes", "data_base64": b64([0xff, 0xfe, 0x80, b'a']) }),
    );
    assert_eq!(bad.status, 422, "invalid UTF-8 must be refused: {bad:?}");
    assert!(!bad.code().is_empty(), "{bad:?}");
    let state = server.state("counter", "raw").ok();
    assert_eq!((&state["version"], &state["state"]), (&json!(1), &json!(1)));

    // Not base64, or both kinds of data: refused before reaching the function.
    server
        .send("counter", "raw", &json!({ "type": "bytes", "data_base64": "%%%not base64" }))
        .expect_error(400, "invalid_base64");
    server
        .send(
            "counter",
            "raw",
            &json!({ "type": "Say", "data": { "text": "x" }, "data_base64": b64("x") }),
        )
        .expect_error(400, "bad_request");

    // A Say after the bytes continues the same count.
    let next = server.say("counter", "raw", "again");
    assert_eq!(next["reply"], json!(say_reply("again", 2)));
}

/// (d) A retry under the same idempotency key gets the first answer back.
#[test]
fn idempotent_retries_return_the_first_answer() {
    let server = Server::start();
    server.deploy("counter");
    let body = json!({ "type": "Say", "data": { "text": "once" }, "idempotency_key": "req-1" });

    let first = server.send("counter", "idem", &body).ok();
    assert_eq!(first["deduplicated"], false);
    assert_eq!(first["version"], 1);

    let same_fields = ["seq", "version", "reply", "state", "time", "token", "function_version"];
    let check_retry = |retry: &Value| {
        assert_eq!(retry["deduplicated"], true, "{retry}");
        for field in same_fields {
            assert_eq!(retry[field], first[field], "retry differs in `{field}`: {retry}");
        }
    };
    check_retry(&server.send("counter", "idem", &body).ok());
    let state = server.state("counter", "idem").ok();
    assert_eq!((&state["version"], &state["state"]), (&json!(1), &json!(1)));

    // Still the first answer after another event moved the process on.
    server.say("counter", "idem", "other");
    check_retry(&server.send("counter", "idem", &body).ok());
    let state = server.state("counter", "idem").ok();
    assert_eq!((&state["version"], &state["state"]), (&json!(2), &json!(2)));
    let history = server.history("counter", "idem");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["idempotency_key"], "req-1");

    // A retry whose expected version went stale still gets its first answer.
    let guarded = json!({
        "type": "Say", "data": { "text": "guarded" },
        "idempotency_key": "req-2", "expected_version": 2,
    });
    let first_guarded = server.send("counter", "idem", &guarded).ok();
    assert_eq!(first_guarded["version"], 3);
    let retry = server.send("counter", "idem", &guarded).ok();
    assert_eq!((&retry["deduplicated"], &retry["seq"]), (&json!(true), &first_guarded["seq"]));

    // Keys are scoped to their process.
    let elsewhere = server.send("counter", "idem-2", &body).ok();
    assert_eq!((&elsewhere["deduplicated"], &elsewhere["version"]), (&json!(false), &json!(1)));

    // Many simultaneous retries of one new send: applied once, all told the same.
    let racing = json!({ "type": "Say", "data": { "text": "race" }, "idempotency_key": "r" });
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let api = server.api();
                let racing = &racing;
                scope.spawn(move || api.send("counter", "race", racing).ok())
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a sender panicked")).collect()
    });
    let fresh = answers.iter().filter(|a| a["deduplicated"] == false).count();
    assert_eq!(fresh, 1, "exactly one of the racing sends applies: {answers:?}");
    for answer in &answers {
        assert_eq!((&answer["seq"], &answer["version"]), (&answers[0]["seq"], &json!(1)));
    }
    let state = server.state("counter", "race").ok();
    assert_eq!((&state["version"], &state["state"]), (&json!(1), &json!(1)));
}

/// (e) `expected_version`: a mismatch is a conflict, a match applies.
#[test]
fn expected_version_is_checked() {
    let server = Server::start();
    server.deploy("counter");
    let say = |expected: u64| json!({ "type": "Say", "data": { "text": "v" }, "expected_version": expected });

    server.send("counter", "ev", &say(1)).expect_error(409, "version_conflict");
    server.state("counter", "ev").expect_error(404, "process_not_found");
    assert_eq!(server.send("counter", "ev", &say(0)).ok()["version"], 1);
    let conflict = server.send("counter", "ev", &say(0));
    conflict.expect_error(409, "version_conflict");
    assert_eq!(server.send("counter", "ev", &say(1)).ok()["version"], 2);
    server.send("counter", "ev", &say(7)).expect_error(409, "version_conflict");
    assert_eq!(server.send("counter", "ev", &say(2)).ok()["version"], 3);

    let state = server.state("counter", "ev").ok();
    assert_eq!((&state["version"], &state["state"]), (&json!(3), &json!(3)));
    assert_eq!(server.history("counter", "ev").len(), 3);
}

/// (f) A handler's business rule refuses an overdraft and keeps the balance.
#[test]
fn account_refuses_overdraft() {
    let server = Server::start();
    server.deploy("account");
    let event = |kind: &str, amount: u64| json!({ "type": kind, "data": { "amount": amount } });

    let deposited = server.send("account", "alice", &event("Deposit", 100)).ok();
    assert_eq!(deposited["state"]["balance"], 100, "{deposited}");
    let withdrawn = server.send("account", "alice", &event("Withdraw", 30)).ok();
    assert_eq!(withdrawn["state"]["balance"], 70, "{withdrawn}");

    let refused = server.send("account", "alice", &event("Withdraw", 100));
    refused.expect_error(422, "handler_rejected");
    let state = server.state("account", "alice").ok();
    assert_eq!(state["state"]["balance"], 70, "{state}");
    assert_eq!(state["version"], 2);

    // Down to exactly zero is allowed; one more is not.
    let emptied = server.send("account", "alice", &event("Withdraw", 70)).ok();
    assert_eq!((&emptied["state"]["balance"], &emptied["version"]), (&json!(0), &json!(3)));
    server.send("account", "alice", &event("Withdraw", 1)).expect_error(422, "handler_rejected");

    // A new account has nothing to withdraw, and the refusal creates nothing.
    server.send("account", "bob", &event("Withdraw", 1)).expect_error(422, "handler_rejected");
    server.state("account", "bob").expect_error(404, "process_not_found");

    let history = server.history("account", "alice");
    let kinds: Vec<&str> = history.iter().map(|e| e["type"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds, ["Deposit", "Withdraw", "Withdraw"]);
}

/// (g) Malformed, unknown, oversized and hostile input gets a clean error, and
/// the server keeps serving.
#[test]
fn bad_input_is_refused_and_the_server_keeps_serving() {
    let server = Server::start();
    server.deploy("counter");
    let events = Api::events_path("counter", "k");

    // Bodies that are not the expected JSON.
    for body in [
        &b"{\"type\": \"Say\", "[..],
        b"not json at all",
        b"",
        b"[1, 2, 3]",
        b"{\"data\": {\"text\": \"no type\"}}",
        b"{\"type\": \"Say\", \"surprise\": 1}",
        b"{\"type\": \"Say\", \"expected_version\": -1}",
    ] {
        let answer = server.post_raw(&events, body.to_vec());
        answer.expect_error(400, "invalid_json");
    }
    server.post_raw("/v1/events", b"{\"events\": [".to_vec()).expect_error(400, "invalid_json");
    server.post_raw("/v1/events", b"{}".to_vec()).expect_error(400, "invalid_json");

    // Bad event types and idempotency keys.
    for event_type in ["", "a\u{7}b", &"T".repeat(129)] {
        server
            .send("counter", "k", &json!({ "type": event_type }))
            .expect_error(400, "invalid_event_type");
    }
    server
        .send(
            "counter",
            "k",
            &json!({ "type": "Say", "data": {"text": "x"}, "idempotency_key": "" }),
        )
        .expect_error(400, "invalid_idempotency_key");

    // Unknown functions, processes, events and routes.
    server
        .send("nope", "k", &json!({ "type": "Say", "data": { "text": "x" } }))
        .expect_error(404, "function_not_found");
    server.state("nope", "k").expect_error(404, "function_not_found");
    server.get("/v1/functions/nope").expect_error(404, "function_not_found");
    server.get("/v1/functions/nope/processes").expect_error(404, "function_not_found");
    server.state("counter", "nobody").expect_error(404, "process_not_found");
    server.get("/v1/events/999999").expect_error(404, "event_not_found");
    server.get("/v1/events/abc").expect_error(400, "bad_request");
    server.get("/v1/nothing-here").expect_error(404, "route_not_found");
    server.get("/v1/log?limit=lots").expect_error(400, "invalid_query");

    // Process keys with path tricks or control characters, in the path as sent on
    // the wire (a URL library would resolve the dot segments before sending).
    let say = br#"{"type": "Say", "data": {"text": "x"}}"#;
    for key in ["..", "%2E%2E", ".%2e", ".", "%2E", "a%2Fb", "..%2F..%2Fetc", "a%5Cb", "a%0Ab"]
        .into_iter()
        .chain(["a%00b", "%7F", "%1B%5B31m"])
    {
        let path = format!("/v1/functions/counter/processes/{key}/events");
        server.raw("POST", &path, say).expect_error(400, "invalid_name");
        server.raw("GET", &path, b"").expect_error(400, "invalid_name");
        let path = format!("/v1/functions/counter/processes/{key}");
        server.raw("GET", &path, b"").expect_error(400, "invalid_name");
    }
    let long_key = "k".repeat(257);
    server
        .send("counter", &long_key, &json!({ "type": "Say", "data": { "text": "x" } }))
        .expect_error(400, "invalid_name");
    // Same rules inside a bulk request, answered per event.
    let bulk = server.bulk(&[
        json!({ "function": "counter", "key": "..", "type": "Say", "data": { "text": "x" } }),
        json!({ "function": "counter", "key": "ok", "type": "Say", "data": { "text": "x" } }),
        json!({ "function": "Counter", "key": "ok", "type": "Say", "data": { "text": "x" } }),
        json!({ "function": "counter", "key": "ok", "type": "Shout" }),
    ]);
    assert_eq!((&bulk["accepted"], &bulk["rejected"]), (&json!(1), &json!(3)), "{bulk}");
    let codes: Vec<&str> = bulk["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["error"]["code"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(codes, ["invalid_name", "ok", "invalid_name", "unsupported_event_type"]);

    // Bad function names and components.
    server.put_raw("/v1/functions/Bad%20Name", b"\0asm".to_vec()).expect_error(400, "invalid_name");
    server.put_raw("/v1/functions/junk", Vec::new()).expect_error(400, "empty_component");
    for garbage in [
        b"this is not wasm".to_vec(),
        b"\0asm\x01\0\0\0garbage".to_vec(),
        b"\0asm\x01\0\0\0".to_vec(),
    ] {
        let answer = server.put_raw("/v1/functions/junk", garbage);
        assert!((400..500).contains(&answer.status), "garbage deploy: {answer:?}");
        assert!(!answer.code().is_empty() && !answer.message().is_empty(), "{answer:?}");
    }
    server.get("/v1/functions/junk").expect_error(404, "function_not_found");

    // Oversized: event data, a single-event body, a bulk request's event count.
    let big_text = "x".repeat(300 << 10);
    server
        .send("counter", "k", &json!({ "type": "Say", "data": { "text": big_text } }))
        .expect_error(413, "event_too_large");
    let huge_text = "x".repeat(3 << 20);
    let huge =
        server.send("counter", "k", &json!({ "type": "Say", "data": { "text": huge_text } }));
    huge.expect_error(413, "body_too_large");
    let bulk_text = "x".repeat(65 << 20);
    let event = json!({ "function": "counter", "key": "k", "type": "Say", "data": bulk_text });
    server
        .post_json("/v1/events", &json!({ "events": [event] }))
        .expect_error(413, "body_too_large");
    let component = vec![0u8; 33 << 20];
    server.put_raw("/v1/functions/junk", component).expect_error(413, "component_too_large");
    let too_many: Vec<Value> = (0..100_001)
        .map(|i| json!({ "function": "counter", "key": format!("m{}", i % 10), "type": "Say" }))
        .collect();
    server
        .post_json("/v1/events", &json!({ "events": too_many }))
        .expect_error(413, "too_many_events");

    // After all of it: healthy, and only the one valid event was applied.
    assert!(server.healthy());
    let answer = server.say("counter", "k", "still here");
    assert_eq!(answer["reply"], json!(say_reply("still here", 1)));
    assert_eq!(server.state("counter", "ok").ok()["version"], 1);
    assert_eq!(server.log().len(), 2, "only accepted events reach the log");
    assert_eq!(server.get("/v1/functions").ok()["functions"].as_array().map(Vec::len), Some(1));
    server.get("/v1/openapi.json").ok();
    server.get("/v1/managers").ok();
}

/// (h) A graceful restart keeps every state, history and idempotency answer, and
/// the log continues after it.
#[test]
fn graceful_restart_keeps_everything() {
    let mut server = Server::start();
    server.deploy("counter");
    server.deploy("account");
    for (i, key) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        for n in 0..=i {
            server.say("counter", key, &format!("{key}{n}"));
        }
    }
    let idempotent =
        json!({ "type": "Say", "data": { "text": "idem" }, "idempotency_key": "restart-1" });
    let first = server.send("counter", "a", &idempotent).ok();
    server.send("account", "acct", &json!({ "type": "Deposit", "data": { "amount": 5 } })).ok();

    let snapshot = |server: &Server| {
        let mut heads = BTreeMap::new();
        for function in ["counter", "account"] {
            for process in server.processes(function) {
                let key = process["key"].as_str().expect("key").to_owned();
                let mut head = server.state(function, &key).ok();
                head.as_object_mut().expect("a head").remove("token");
                let history = server.history(function, &key);
                heads.insert(format!("{function}/{key}"), (head, history));
            }
        }
        let functions = server.get("/v1/functions").ok();
        (heads, functions, server.log())
    };
    let before = snapshot(&server);
    assert_eq!(before.0.len(), 6);

    server.restart();
    let after = snapshot(&server);
    assert_eq!(after.0, before.0, "states and histories must survive a restart");
    assert_eq!(after.1, before.1, "deployed functions must survive a restart");
    assert_eq!(after.2, before.2, "the log must survive a restart");

    let last_seq = before.2.iter().map(|e| as_u64(&e["seq"], "seq")).max().expect("a log");
    for (key, n) in [("a", 2u64), ("e", 5)] {
        let next = server.say("counter", key, "after");
        assert_eq!(next["version"], n + 1, "{key} continues at n+1: {next}");
        assert_eq!(next["state"], n + 1);
        assert!(as_u64(&next["seq"], "seq") > last_seq, "seqs continue after the log: {next}");
    }
    let retry = server.send("counter", "a", &idempotent).ok();
    assert_eq!(retry["deduplicated"], true, "{retry}");
    assert_eq!((&retry["seq"], &retry["version"]), (&first["seq"], &first["version"]));
    assert_eq!(retry["reply"], first["reply"]);

    // And once more, with the new events.
    let again = snapshot(&server);
    server.restart();
    assert_eq!(snapshot(&server).0, again.0);
}

/// (i) The binary's client verbs against a running server.
#[test]
fn cli_verbs_work_against_a_server() {
    let server = Server::start();
    let counter = common::function_wasm("counter");
    let counter = counter.to_str().expect("a UTF-8 path");

    // deploy: a table, then JSON for a second version.
    let out = server.cli(&["deploy", "counter", counter]);
    let table = out.ok();
    for expected in ["function", "counter", "version", "digest", "Say"] {
        assert!(table.contains(expected), "deploy table lacks `{expected}`:\n{table}");
    }
    // The same bytes again make no new version.
    let deployed = server.cli(&["--json", "deploy", "counter", counter]).json();
    assert_eq!(
        (&deployed["function"], &deployed["version"], &deployed["unchanged"]),
        (&json!("counter"), &json!(1), &json!(true))
    );

    // send: table, JSON, raw bytes, idempotency key, expected version.
    let table = server.cli(&["send", "counter/alice", "Say", r#"{"text": "hi"}"#]).ok().to_owned();
    assert!(table.contains(&say_reply("hi", 1)), "send table:\n{table}");
    let sent = server.cli(&["--json", "send", "counter/alice", "Say", r#"{"text":"yo"}"#]).json();
    assert_eq!((&sent["version"], &sent["state"]), (&json!(2), &json!(2)));
    assert_eq!(sent["reply"], json!(say_reply("yo", 2)));
    let raw = server.cli(&["--json", "send", "counter/alice", "bytes", "hey", "--bytes"]).json();
    assert_eq!(raw["reply"], json!(say_reply("hey", 3)));
    let args =
        ["--json", "send", "counter/bob", "Say", r#"{"text":"b"}"#, "--idempotency-key", "i1"];
    let first = server.cli(&args).json();
    let retry = server.cli(&args).json();
    assert_eq!((&retry["seq"], &retry["deduplicated"]), (&first["seq"], &json!(true)));
    let dedup_table = server
        .cli(&["send", "counter/bob", "Say", r#"{"text":"b"}"#, "--idempotency-key", "i1"])
        .ok()
        .to_owned();
    assert!(dedup_table.contains("deduplicated"), "{dedup_table}");
    let conflict =
        server.cli(&["send", "counter/bob", "Say", r#"{"text":"c"}"#, "--expected-version", "5"]);
    assert!(conflict.failed().contains("version_conflict"), "{conflict:?}");
    let matched = server
        .cli(&[
            "--json",
            "send",
            "counter/bob",
            "Say",
            r#"{"text":"c"}"#,
            "--expected-version",
            "1",
        ])
        .json();
    assert_eq!(matched["version"], 2);

    // state
    let state = server.cli(&["state", "counter/alice", "--json"]).json();
    assert_eq!((&state["version"], &state["state"]), (&json!(3), &json!(3)));
    let table = server.cli(&["state", "counter/alice"]).ok().to_owned();
    assert!(table.contains("counter/alice") && table.contains("version"), "{table}");

    // history
    let history = server.cli(&["--json", "history", "counter/alice"]).json();
    let events = history["events"].as_array().expect("events");
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["data_base64"], json!(b64("hey")));
    let table = server.cli(&["history", "counter/alice"]).ok().to_owned();
    for expected in ["Say", "bytes", "counter/alice", "base64:"] {
        assert!(table.contains(expected), "history table lacks `{expected}`:\n{table}");
    }
    let page =
        server.cli(&["--json", "history", "counter/alice", "--from-version", "2", "--limit", "1"]);
    let page = page.json();
    assert_eq!(page["events"][0]["version"], 2);
    assert_eq!(page["next_from_version"], 3);

    // functions, processes, log
    let table = server.cli(&["functions"]).ok().to_owned();
    assert!(table.contains("counter") && table.contains("Say"), "{table}");
    let functions = server.cli(&["functions", "--json"]).json();
    assert_eq!(functions["functions"][0]["name"], "counter");
    assert_eq!(functions["functions"][0]["latest_version"], 1);
    let table = server.cli(&["processes", "counter"]).ok().to_owned();
    assert!(table.contains("alice") && table.contains("bob"), "{table}");
    let processes = server.cli(&["--json", "processes", "counter"]).json();
    let keys: Vec<&str> = processes["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| p["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["alice", "bob"]);
    let paged = server.cli(&["processes", "counter", "--limit", "1"]);
    assert!(paged.ok().contains("alice") && !paged.stdout.contains("bob"), "{paged:?}");
    assert!(paged.stderr.contains("--after alice"), "{paged:?}");
    let log = server.cli(&["--json", "log"]).json();
    assert_eq!(log["events"].as_array().map(Vec::len), Some(5), "{log}");
    let table = server.cli(&["log", "--from", "2"]).ok().to_owned();
    assert!(table.contains("counter/bob") && table.contains("counter/alice"), "{table}");

    // JULATO_URL instead of --url.
    let via_env = run_cli(&["state", "counter/bob", "--json"], &[("JULATO_URL", server.url())]);
    assert_eq!(via_env.json()["version"], 2);

    // Errors: stderr, nonzero exit, nothing on stdout.
    let check_error = |out: common::CliOutput, expected: &str| {
        let stderr = out.failed();
        assert!(stderr.contains(expected), "stderr lacks `{expected}`: {out:?}");
        assert!(out.stdout.trim().is_empty(), "an error printed on stdout: {out:?}");
    };
    check_error(server.cli(&["send", "counter/alice", "Shout", "{}"]), "unsupported_event_type");
    check_error(server.cli(&["send", "counter/alice", "Shout", "{}"]), "Shout");
    check_error(server.cli(&["state", "counter/nobody"]), "process_not_found");
    check_error(server.cli(&["state", "nope/x", "--json"]), "function_not_found");
    check_error(server.cli(&["send", "counter-alice", "Say", "{}"]), "FUNCTION/KEY");
    check_error(server.cli(&["send", "counter/alice", "Say", "{not json"]), "not JSON");
    check_error(server.cli(&["deploy", "counter", "/nonexistent/x.wasm"]), "/nonexistent/x.wasm");
    check_error(
        run_cli(&["--url", "http://127.0.0.1:1", "functions"], &[]),
        "cannot reach the Julato server",
    );
    let usage = run_cli(&["send"], &[]);
    assert!(!usage.status.success(), "{usage:?}");

    // Nothing the failures tried reached the store.
    assert_eq!(server.state("counter", "alice").ok()["version"], 3);
}

/// The ingest verb feeds a CSV file through the bulk route.
#[test]
fn cli_ingest_feeds_a_csv() {
    let server = Server::start();
    server.deploy("planes");
    let csv = common::data_file("data/flights-2013-01.csv");
    let csv = csv.to_str().expect("a UTF-8 path");
    // `julato --json ingest` of the first `limit` rows, with extra flags.
    let ingest = |limit: &str, batch: &str, extra: &[&str]| {
        let mut args = vec!["--json", "ingest", "planes", csv, "--key-column", "tailnum"];
        args.extend(["--type", "Flight", "--limit", limit, "--batch", batch]);
        args.extend(extra);
        server.cli(&args)
    };
    let versions = || -> u64 {
        server.processes("planes").iter().map(|p| as_u64(&p["version"], "version")).sum()
    };
    let out = ingest("500", "128", &[]);
    let summary = out.json();
    let (accepted, rejected, skipped) = (
        as_u64(&summary["accepted"], "accepted"),
        as_u64(&summary["rejected"], "rejected"),
        as_u64(&summary["skipped"], "skipped"),
    );
    assert_eq!(rejected, 0, "{out:?}");
    assert_eq!(accepted + skipped, 500, "{summary}");

    // The versions of all planes add up to the accepted rows.
    let total = versions();
    assert_eq!(total, accepted);

    // With per-row idempotency keys, running the same ingest again (say, after a
    // failure part way) applies no row twice.
    let resumable = |limit: &str| ingest(limit, "64", &["--idempotency-prefix", "jan"]).json();
    let first = resumable("200");
    assert_eq!(first["already_applied"], 0, "{first}");
    let applied = as_u64(&first["accepted"], "accepted");
    let again = resumable("300");
    assert_eq!(again["already_applied"], applied, "{again}");
    assert_eq!(versions(), total + as_u64(&again["accepted"], "accepted"));
}

/// A reader tailing the global log while writers send never misses an event, nor
/// sees one appear behind its position (seqs of refused events stay unused).
#[test]
fn log_tail_sees_every_event_once_in_order() {
    const WRITERS: usize = 6;
    const PER_WRITER: usize = 150;
    let server = Server::start();
    server.deploy("counter");
    let done = std::sync::atomic::AtomicBool::new(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);

    let (seen, written) = std::thread::scope(|scope| {
        let reader = {
            let (api, done) = (server.api(), &done);
            scope.spawn(move || {
                let (mut seen, mut from) = (Vec::new(), 1u64);
                loop {
                    assert!(std::time::Instant::now() < deadline, "the reader never caught up");
                    // Read the flag first: a pass that starts after the writers are
                    // done and finds nothing new has seen everything.
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let page = api.get(&format!("/v1/log?from={from}&limit=1000")).ok();
                    let events = page["events"].as_array().expect("events");
                    seen.extend(events.iter().map(|e| as_u64(&e["seq"], "seq")));
                    from = as_u64(&page["next_from"], "next_from");
                    if events.is_empty() {
                        if finished {
                            return seen;
                        }
                        // Pacing only: the loop's exit does not depend on it.
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            })
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let api = server.api();
                scope.spawn(move || {
                    let mut seqs = Vec::new();
                    for i in 0..PER_WRITER {
                        let key = format!("w{}", (w + i) % 9);
                        if i % 10 == 3 {
                            // Refused: burns a seq that never reaches the log.
                            let answer = api.send("counter", &key, &json!({ "type": "Nope" }));
                            answer.expect_error(422, "unsupported_event_type");
                        } else {
                            seqs.push(as_u64(&api.say("counter", &key, "tail")["seq"], "seq"));
                        }
                    }
                    seqs
                })
            })
            .collect();
        let written: Vec<u64> =
            writers.into_iter().flat_map(|w| w.join().expect("a writer panicked")).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (reader.join().expect("the reader panicked"), written)
    });

    assert!(seen.windows(2).all(|w| w[0] < w[1]), "the tail went back or repeated");
    let mut written = written;
    written.sort_unstable();
    assert_eq!(seen, written, "the tail must see exactly the accepted events");
}

/// Causal tokens: reads and sends wait for a token, refuse a malformed one, and
/// give up on one that is never reached.
#[test]
fn causal_tokens_are_honoured() {
    let server = Server::start();
    server.deploy("counter");
    let sent = server.say("counter", "t", "x");
    let token = sent["token"].as_str().expect("a token").to_owned();
    let path = Api::process_path("counter", "t");

    let read = server.get(&format!("{path}?after={token}")).ok();
    assert_eq!(read["version"], 1);
    let covered: u64 = read["token"]
        .as_str()
        .and_then(|t| t.strip_prefix("v2.0-"))
        .map_or(0, |n| n.parse().expect("a token number"));
    assert!(covered >= as_u64(&sent["seq"], "seq"), "{read}");
    let body = json!({ "type": "Say", "data": { "text": "y" }, "after": token });
    assert_eq!(server.send("counter", "t", &body).ok()["version"], 2);
    let bulk = json!({
        "events": [{ "function": "counter", "key": "t", "type": "Say", "data": { "text": "z" } }],
        "after": token,
    });
    assert_eq!(server.post_json("/v1/events", &bulk).ok()["accepted"], 1);

    server.get(&format!("{path}?after=yesterday")).expect_error(400, "invalid_token");
    let body = json!({ "type": "Say", "data": { "text": "y" }, "after": "v2.x" });
    server.send("counter", "t", &body).expect_error(400, "invalid_token");

    let future = server.http().get(server.full(&format!("{path}?after=v1.999999999"))).send();
    let future = future.expect("an answer");
    assert_eq!(future.status().as_u16(), 503);
    assert!(future.headers().contains_key("retry-after"), "{:?}", future.headers());
    let body: Value = future.json().expect("a JSON error");
    assert_eq!(body["error"]["code"], "token_not_reached", "{body}");
    assert_eq!(server.state("counter", "t").ok()["version"], 3);
}

/// A new deploy is a new immutable version: new events use it, old events keep
/// the one that handled them, the state carries on.
#[test]
fn a_new_function_version_handles_new_events() {
    let mut server = Server::start();
    let v1 = server.deploy("counter");
    assert_eq!(v1["version"], 1);
    server.say("counter", "c", "one");
    server.say("counter", "c", "two");
    // The same code with one more custom section: new bytes, same behaviour.
    let mut bytes = std::fs::read(common::function_wasm("counter")).expect("the component");
    let name = b"julato-test";
    bytes.extend_from_slice(&[0, (1 + name.len() + 2) as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(b"v2");
    let v2 = server.put_raw("/v1/functions/counter", bytes).expect(201);
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["event_types"], v1["event_types"]);
    assert_ne!(v2["digest"], v1["digest"]);

    let third = server.say("counter", "c", "three");
    assert_eq!((&third["function_version"], &third["state"]), (&json!(2), &json!(3)));
    let versions: Vec<u64> = server
        .history("counter", "c")
        .iter()
        .map(|e| as_u64(&e["function_version"], "function_version"))
        .collect();
    assert_eq!(versions, [1, 1, 2]);
    let function = server.get("/v1/functions/counter").ok();
    assert_eq!(function["latest_version"], 2, "{function}");
    assert_eq!(function["versions"].as_array().map(Vec::len), Some(2), "{function}");

    server.restart();
    assert_eq!(server.get("/v1/functions/counter").ok(), function);
    let fourth = server.say("counter", "c", "four");
    assert_eq!((&fourth["function_version"], &fourth["state"]), (&json!(2), &json!(4)));
    assert_eq!(server.state("counter", "c").ok()["function_version"], 2);
}

/// Keys with spaces, escapes, Unicode and URL syntax are valid and round-trip
/// exactly through sends, reads, the listing's paging and the bulk route.
#[test]
fn unusual_but_valid_keys_round_trip() {
    let server = Server::start();
    server.deploy("counter");
    let long = "k".repeat(256);
    let keys = [
        "user@example.com",
        "ünïcode key",
        "a b",
        "50%",
        "plus+sign",
        "q?x=1&y",
        "hash#tag",
        "...",
        "%2E%2E",
        "dots.in.key",
        "emoji 🦀",
        "semi;colon",
        long.as_str(),
    ];
    for key in keys {
        let answer = server.say("counter", key, key);
        assert_eq!(answer["key"], json!(key), "{answer}");
        let state = server.state("counter", key).ok();
        assert_eq!((&state["key"], &state["version"]), (&json!(key), &json!(1)), "{state}");
        let history = server.history("counter", key);
        assert_eq!(history.len(), 1, "{key}");
        assert_eq!(history[0]["key"], json!(key));
    }
    let bulk: Vec<Value> = keys
        .iter()
        .map(|k| json!({ "function": "counter", "key": k, "type": "Say", "data": { "text": k } }))
        .collect();
    let answer = server.bulk(&bulk);
    assert_eq!(answer["accepted"], json!(keys.len()), "{answer}");
    for (key, result) in keys.iter().zip(answer["results"].as_array().expect("results")) {
        assert_eq!((&result["key"], &result["version"]), (&json!(key), &json!(2)), "{result}");
    }

    // Page through the listing three at a time.
    let (mut listed, mut after) = (Vec::new(), None::<String>);
    loop {
        let mut path = "/v1/functions/counter/processes?limit=3".to_owned();
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", common::enc(after)));
        }
        let page = server.get(&path).ok();
        for process in page["processes"].as_array().expect("processes") {
            listed.push(process["key"].as_str().expect("key").to_owned());
            assert_eq!(process["version"], 2, "{process}");
        }
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(listed.len() <= keys.len(), "paging does not end: {listed:?}");
    }
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected, "the listing holds every key once, in byte order");

    let via_cli = server.cli(&["--json", "state", "counter/ünïcode key"]).json();
    assert_eq!(via_cli["version"], 2);
}

/// Every error answer, including the router's own, has the JSON error shape.
#[test]
fn every_error_answer_is_json() {
    let server = Server::start();
    server.deploy("counter");
    server.say("counter", "k", "x");
    let cases = [
        ("DELETE", "/v1/functions/counter"),
        ("POST", "/healthz"),
        ("PUT", "/v1/functions/counter/processes/k/events"),
        ("DELETE", "/v1/functions/counter/processes/k"),
        ("GET", "/v1/events"),
        ("GET", "/nowhere"),
    ];
    let mut bad = Vec::new();
    for (method, path) in cases {
        let answer = server.raw(method, path, b"");
        let shaped = answer.code().len() > 1 && !answer.message().is_empty();
        if !(400..500).contains(&answer.status) || !shaped {
            bad.push(format!("{method} {path} -> {answer:?}"));
        }
    }
    assert!(bad.is_empty(), "error answers without the JSON error shape:\n{}", bad.join("\n"));
    assert!(server.healthy());
}

/// One data folder is served by one server at a time; Ctrl-C (SIGINT) is a
/// graceful stop too.
#[test]
fn a_data_folder_is_locked_to_one_server() {
    let mut server = Server::start();
    server.deploy("counter");
    server.say("counter", "k", "x");
    let dir = server.data_dir().to_str().expect("a UTF-8 path").to_owned();
    let second = run_cli(&["serve", "--data", &dir, "--listen", "127.0.0.1:0"], &[]);
    assert!(second.failed().contains("data folder"), "{second:?}");
    assert!(!second.stderr.contains("julato listening on"), "{second:?}");
    assert!(server.healthy());
    assert_eq!(server.state("counter", "k").ok()["version"], 1);

    let status = server.stop_with("INT");
    assert!(status.success(), "SIGINT exited with {status}");
    server.restart();
    assert_eq!(server.say("counter", "k", "y")["version"], 2);
}
