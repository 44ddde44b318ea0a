//! End-to-end tests of hostile guests: each misbehaving handler, initial state
//! or upload is refused with its own status and code, nothing of it is stored,
//! and a well-behaved process keeps being served correctly while hostile events
//! run on other threads.
//!
//! Needs the example components (`hostile`, `bad-init`, `counter`): run
//! `make functions` first. The non-components are built here from WebAssembly
//! text.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Api, Server, function_wasm};
use serde_json::{Value, json};

/// Small budgets, so that every hostile event fails fast.
const FLAGS: &[&str] = &[
    "--fuel",
    "20000000",
    "--memory-mib",
    "16",
    "--max-state-kib",
    "64",
    "--max-reply-kib",
    "16",
    "--max-emits",
    "10",
];

/// A hostile event: its type, its data, and the status and code it must get.
struct Case {
    event_type: &'static str,
    data: Value,
    status: u16,
    code: &'static str,
    /// A fragment of the error message that tells this case from others of the
    /// same code.
    says: &'static str,
}

fn cases() -> Vec<Case> {
    let case = |event_type, data, status, code, says| Case { event_type, data, status, code, says };
    vec![
        case("Spin", json!({}), 422, "fuel_exhausted", "fuel"),
        case("Grow", json!({ "mib": 64 }), 422, "memory_limit_exceeded", "memory"),
        case("Recurse", json!({}), 422, "stack_overflow", "call stack"),
        case("Panic", json!({}), 422, "handler_trapped", "panics on purpose"),
        case("HugeReply", json!({ "bytes": 100_000 }), 422, "reply_too_large", "reply"),
        case("HugeState", json!({ "bytes": 100_000 }), 422, "state_too_large", "state"),
        case("ManyEmits", json!({ "count": 1000 }), 422, "too_many_emits", "1000"),
    ]
}

impl Case {
    #[track_caller]
    fn send(&self, api: &Api, key: &str) {
        let body = json!({ "type": self.event_type, "data": self.data });
        let answer = api.send("hostile", key, &body);
        answer.expect_error(self.status, self.code);
        assert!(answer.message().contains(self.says), "{}: {answer:?}", self.event_type);
    }
}

/// An upload that is not a fitting component: its bytes, and the code and a
/// fragment of the message it must get.
struct Upload {
    name: &'static str,
    bytes: Vec<u8>,
    code: &'static str,
    says: &'static str,
}

fn uploads() -> Vec<Upload> {
    let wat = |text: &str| wat::parse_str(text).expect("valid WebAssembly text");
    let bad_init = std::fs::read(function_wasm("bad-init")).expect("reading bad-init");
    vec![
        Upload {
            name: "garbage",
            bytes: b"\0asm\x0d\0\x01\0 this is no component".to_vec(),
            code: "invalid_component",
            says: "not a valid",
        },
        Upload {
            name: "core-module",
            bytes: wat(r#"(module (func (export "handle")))"#),
            code: "invalid_component",
            says: "not a valid",
        },
        Upload {
            name: "evil",
            bytes: wat(r#"(component (import "evil:host/steal" (func)))"#),
            code: "component_import_unknown",
            says: "`evil:host/steal`",
        },
        Upload {
            name: "wasi",
            bytes: wat(r#"(component
                (import "log" (func (param "level" u8) (param "message" string)))
                (import "wasi:filesystem/types@0.2.0" (instance
                  (export "open-at" (func (param "path" string) (result u32))))))"#),
            code: "component_import_unknown",
            says: "`wasi:filesystem/types@0.2.0`",
        },
        Upload {
            name: "bad-init",
            bytes: bad_init,
            code: "component_init_failed",
            says: "panics while building the initial state",
        },
    ]
}

impl Upload {
    #[track_caller]
    fn deploy(&self, api: &Api) {
        let answer = api.put_raw(&format!("/v1/functions/{}", self.name), self.bytes.clone());
        answer.expect_error(422, self.code);
        assert!(answer.message().contains(self.says), "{}: {answer:?}", self.name);
    }
}

#[track_caller]
fn expect_state(api: &Api, function: &str, key: &str, version: u64, state: &Value) {
    let read = api.state(function, key).ok();
    assert_eq!((&read["version"], &read["state"]), (&json!(version), state), "{read}");
}

#[test]
fn each_hostile_guest_gets_its_own_error_and_leaves_no_trace() {
    let server = Server::start_with(FLAGS);
    server.deploy("hostile");
    let fine = json!({ "type": "Fine", "data": {} });
    assert_eq!(server.send("hostile", "h", &fine).ok()["version"], json!(1));

    for case in cases() {
        // On a process with a history, and as the first event of a new one.
        case.send(&server, "h");
        expect_state(&server, "hostile", "h", 1, &json!(1));
        let fresh = format!("fresh-{}", case.event_type);
        case.send(&server, &fresh);
        server.state("hostile", &fresh).expect_error(404, "process_not_found");
    }
    // The same events within the budgets are accepted, so each refusal above
    // was its limit's, not a broken handler's.
    let within = [
        json!({ "type": "Grow", "data": { "mib": 4 } }),
        json!({ "type": "HugeReply", "data": { "bytes": 100 } }),
        json!({ "type": "ManyEmits", "data": { "count": 2 } }),
    ];
    for body in &within {
        server.send("hostile", "within", body).ok();
    }
    expect_state(&server, "hostile", "within", 3, &json!(0));

    for upload in uploads() {
        upload.deploy(&server);
        server
            .get(&format!("/v1/functions/{}", upload.name))
            .expect_error(404, "function_not_found");
    }
    let functions = server.get("/v1/functions").ok();
    let names: Vec<&str> = functions["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| f["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["hostile"], "{functions}");

    // Only the accepted events are in the log: one Fine, three within the
    // budgets, and the two Fine events the last of them emitted to `sink`.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.state("hostile", "sink").status == 404 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.log();
    let keys: Vec<&str> = log.iter().map(|e| e["key"].as_str().expect("a key")).collect();
    assert_eq!(keys.len(), 6, "{log:#?}");
    assert!(keys.iter().all(|k| ["h", "within", "sink"].contains(k)), "{keys:?}");
    assert!(server.healthy());
}

#[test]
fn an_endless_loop_with_unlimited_fuel_meets_the_wall_clock() {
    let server =
        Server::start_with(&["--fuel", &u64::MAX.to_string(), "--handler-timeout-ms", "300"]);
    server.deploy("hostile");
    let fine = json!({ "type": "Fine", "data": {} });
    server.send("hostile", "h", &fine).ok();
    let started = Instant::now();
    server
        .send("hostile", "h", &json!({ "type": "Spin", "data": {} }))
        .expect_error(504, "handler_timeout");
    // A correctness bound, not a performance figure: the loop would never end.
    assert!(started.elapsed() < Duration::from_secs(30));
    expect_state(&server, "hostile", "h", 1, &json!(1));
    assert_eq!(server.send("hostile", "h", &fine).ok()["version"], json!(2));
}

/// Counter sends per well-behaved client.
const SENDS: u64 = 150;
/// Well-behaved clients, each on its own process.
const CLIENTS: u64 = 2;

#[test]
fn a_well_behaved_process_is_served_while_hostile_guests_run() {
    let server = Server::start_with(FLAGS);
    server.deploy("counter");
    server.deploy("hostile");
    let stop = Arc::new(AtomicBool::new(false));
    let hostile_sent = Arc::new(AtomicU64::new(0));

    // One thread per hostile event type, each on processes of its own, and one
    // that keeps uploading what is not a fitting component.
    let mut hostile: Vec<_> = cases()
        .into_iter()
        .map(|case| {
            let (api, stop, sent) = (server.api(), stop.clone(), hostile_sent.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    case.send(&api, &format!("{}-{}", case.event_type, n % 8));
                    sent.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let (api, stop_uploads) = (server.api(), stop.clone());
    hostile.push(std::thread::spawn(move || {
        let uploads = uploads();
        let mut n = 0u64;
        while !stop_uploads.load(Ordering::SeqCst) {
            uploads[n as usize % uploads.len()].deploy(&api);
            n += 1;
        }
        n
    }));

    // Let the hostile load start before the well-behaved one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while hostile_sent.load(Ordering::Relaxed) < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let api = server.api();
            std::thread::spawn(move || {
                let key = format!("well-{client}");
                for n in 1..=SENDS {
                    let answer = api.say("counter", &key, &format!("{n}"));
                    assert_eq!((&answer["version"], &answer["state"]), (&json!(n), &json!(n)));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a well-behaved client");
    }
    stop.store(true, Ordering::SeqCst);
    for (i, thread) in hostile.into_iter().enumerate() {
        let sent = thread.join().expect("a hostile client");
        assert!(sent > 0, "hostile client {i} never got an answer");
    }

    for client in 0..CLIENTS {
        expect_state(&server, "counter", &format!("well-{client}"), SENDS, &json!(SENDS));
    }
    // Not one hostile event was stored, and no upload became a function.
    assert!(server.processes("hostile").is_empty(), "{:?}", server.processes("hostile"));
    let log = server.log();
    assert_eq!(log.len() as u64, CLIENTS * SENDS, "only the counter's events are stored");
    assert!(log.iter().all(|e| e["function"] == "counter"));
    let functions = server.get("/v1/functions").ok();
    assert_eq!(functions["functions"].as_array().map(Vec::len), Some(2), "{functions}");
    assert!(server.healthy());
}
