//! End-to-end tests of API access: tokens of the `admin` and `client` scopes
//! (from the environment, from a tokens file, through the CLI), the refusal to
//! serve other hosts without tokens, and the per-client request rate.
//!
//! Needs the example components: run `make functions` first.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Answer, Api, Server, run_cli};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789";
const CLIENT: &str = "client-token-0123456789";
/// Another client token, of the same length as [`CLIENT`].
const OTHER_CLIENT: &str = "client-token-9876543210";

fn with_tokens() -> Server {
    Server::start_with_env(
        &[],
        &[
            ("JULATO_ADMIN_TOKEN", ADMIN),
            ("JULATO_CLIENT_TOKEN", &format!("{CLIENT},{OTHER_CLIENT}")),
        ],
    )
}

fn say(text: &str) -> Value {
    json!({ "type": "Say", "data": { "text": text } })
}

#[track_caller]
fn expect_unauthorized(api: &Api, request: reqwest::blocking::RequestBuilder) {
    let (answer, headers) = api.call_with_headers(request);
    answer.expect_error(401, "unauthorized");
    let challenge = headers.get("www-authenticate").map(|v| v.to_str().unwrap_or(""));
    assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "challenge: {challenge:?}");
}

#[test]
fn routes_need_a_token_of_their_scope() {
    let server = with_tokens();
    let anonymous = server.api();
    let admin = anonymous.with_token(ADMIN);
    let client = anonymous.with_token(CLIENT);
    let wasm = std::fs::read(common::function_wasm("counter")).expect("the component");

    // Health and the API's description stay open.
    assert!(anonymous.healthy());
    anonymous.get("/v1/openapi.json").ok();

    // Without a token: sends, deploys, reads and unknown routes are refused.
    let http = anonymous.http();
    let events = anonymous.full(&Api::events_path("counter", "a"));
    expect_unauthorized(&anonymous, http.post(&events).json(&say("hi")));
    expect_unauthorized(
        &anonymous,
        http.put(anonymous.full("/v1/functions/counter")).body(wasm.clone()),
    );
    expect_unauthorized(&anonymous, http.get(anonymous.full(&Api::process_path("counter", "a"))));
    expect_unauthorized(&anonymous, http.get(anonymous.full("/metrics")));
    expect_unauthorized(&anonymous, http.get(anonymous.full("/v1/no-such-route")));

    // A wrong token of the same length as a real one, or the right one under
    // another scheme, is no token.
    let mut near = ADMIN.as_bytes().to_vec();
    near[ADMIN.len() / 2] ^= 1;
    let near = anonymous.with_token(std::str::from_utf8(&near).expect("ASCII"));
    expect_unauthorized(
        &near,
        near.http().put(near.full("/v1/functions/counter")).body(wasm.clone()),
    );
    expect_unauthorized(&near, near.http().post(&events).json(&say("hi")));
    let basic =
        http.get(anonymous.full("/v1/functions")).header("authorization", format!("Basic {ADMIN}"));
    expect_unauthorized(&anonymous, basic);

    // A client token may not deploy, and nothing is deployed.
    client.put_raw("/v1/functions/counter", wasm.clone()).expect_error(403, "forbidden");
    assert_eq!(client.get("/v1/functions").ok()["functions"], json!([]));
    admin.deploy("counter");
    admin.deploy("relay");

    // A client token sends (single, bulk, transaction) and reads everything.
    let first = client.say("counter", "a", "one");
    assert_eq!(first["version"], json!(1));
    let bulk = client.bulk(&[
        json!({ "function": "counter", "key": "b", "type": "Say", "data": { "text": "two" } }),
    ]);
    assert_eq!(bulk["accepted"], json!(1), "{bulk}");
    let tx = json!({ "events": [{ "function": "counter", "key": "a", "type": "Say", "data": { "text": "three" } }] });
    client.post_json("/v1/transactions", &tx).ok();
    let seq = first["seq"].as_u64().expect("a seq");
    for path in [
        Api::process_path("counter", "a"),
        Api::events_path("counter", "a"),
        "/v1/functions".to_owned(),
        "/v1/functions/counter".to_owned(),
        "/v1/functions/counter/processes".to_owned(),
        "/v1/log".to_owned(),
        format!("/v1/events/{seq}"),
        format!("/v1/events/{seq}/graph"),
        "/v1/managers".to_owned(),
        "/v1/dead-letters".to_owned(),
        "/v1/checkpoints".to_owned(),
        "/v1/restores".to_owned(),
        "/metrics".to_owned(),
    ] {
        let answer = client.get(&path);
        assert_eq!(answer.status, 200, "GET {path} with a client token: {answer:?}");
    }
    let cut = json!({ "processes": [{ "function": "counter", "key": "a" }] });
    assert_eq!(client.post_json("/v1/states", &cut).ok()["states"][0]["version"], json!(2));
    client.get("/v1/no-such-route").expect_error(404, "route_not_found");

    // ... but gets 403 on every admin route, which then changes nothing.
    client.post_json("/v1/checkpoints", &json!({})).expect_error(403, "forbidden");
    client.post_json("/v1/restore", &json!({ "seq": 1 })).expect_error(403, "forbidden");
    client.post_json("/v1/managers/evict", &json!({})).expect_error(403, "forbidden");
    client.post_json("/v1/dead-letters/1.0/redrive", &json!({})).expect_error(403, "forbidden");
    assert_eq!(client.get("/v1/checkpoints").ok()["checkpoints"], json!([]));
    assert_eq!(client.get("/v1/restores").ok()["restores"], json!([]));
    assert_eq!(client.state("counter", "a").ok()["version"], json!(2));

    // The admin token does all of it.
    admin.post_json("/v1/checkpoints", &json!({})).expect(201);
    admin.post_json("/v1/managers/evict", &json!({})).ok();
    admin
        .post_json("/v1/dead-letters/1.0/redrive", &json!({}))
        .expect_error(404, "dead_letter_not_found");
    admin.post_json("/v1/restore", &json!({ "seq": seq })).ok();
    assert_eq!(admin.state("counter", "a").ok()["version"], json!(1));
    assert_eq!(admin.say("counter", "a", "four")["version"], json!(2));
}

#[test]
fn a_tokens_file_configures_tokens() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let file = folder.path().join("tokens");
    let text = format!("# Julato API tokens\n\nadmin {ADMIN}\nclient   {CLIENT}\n");
    std::fs::write(&file, text).expect("writing the tokens file");
    let server = Server::start_with(&["--tokens-file", file.to_str().expect("a UTF-8 path")]);
    let admin = server.api().with_token(ADMIN);
    let client = server.api().with_token(CLIENT);

    server.put_raw("/v1/functions/counter", b"\0asm".to_vec()).expect_error(401, "unauthorized");
    let wasm = std::fs::read(common::function_wasm("counter")).expect("the component");
    client.put_raw("/v1/functions/counter", wasm).expect_error(403, "forbidden");
    admin.deploy("counter");
    assert_eq!(client.say("counter", "k", "hi")["version"], json!(1));
    server.send("counter", "k", &say("hi")).expect_error(401, "unauthorized");
    server.api().with_token(OTHER_CLIENT).state("counter", "k").expect_error(401, "unauthorized");
}

/// Runs `julato serve` expecting it to refuse to start; returns its stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let data = tempfile::tempdir().expect("a temporary data folder");
    let mut full = vec!["serve", "--data", data.path().to_str().expect("a UTF-8 path")];
    full.extend_from_slice(args);
    let output = run_cli(&full, env);
    let stderr = output.failed().to_owned();
    assert!(!stderr.contains("julato listening"), "it served: {stderr}");
    stderr
}

#[test]
fn bad_token_configurations_refuse_to_start() {
    let stderr = refused_start(&["--listen", "0.0.0.0:0"], &[]);
    assert!(stderr.contains("refusing to listen on 0.0.0.0:0 without API tokens"), "{stderr}");
    assert!(stderr.contains("JULATO_ADMIN_TOKEN"), "the message names the way out: {stderr}");

    let stderr =
        refused_start(&["--listen", "127.0.0.1:0"], &[("JULATO_ADMIN_TOKEN", "short-token")]);
    assert!(stderr.contains("`JULATO_ADMIN_TOKEN`: a token is 11 bytes"), "{stderr}");
    assert!(!stderr.contains("short-token"), "the error shows the token: {stderr}");

    let folder = tempfile::tempdir().expect("a temporary folder");
    let file = folder.path().join("tokens");
    std::fs::write(&file, format!("admin {ADMIN}\nroot {CLIENT}\n")).expect("writing a file");
    let path = file.to_str().expect("a UTF-8 path");
    let stderr = refused_start(&["--listen", "127.0.0.1:0", "--tokens-file", path], &[]);
    assert!(stderr.contains("line 2: expected `admin TOKEN` or `client TOKEN`"), "{stderr}");
    assert!(stderr.contains(path), "the error names the file: {stderr}");
    assert!(
        !stderr.contains(CLIENT) && !stderr.contains(ADMIN),
        "the error shows a token: {stderr}"
    );

    std::fs::write(&file, "# nothing yet\n").expect("writing a file");
    let stderr = refused_start(&["--tokens-file", path], &[]);
    assert!(stderr.contains("holds no token"), "{stderr}");
}

#[test]
fn the_cli_sends_its_token() {
    let server = with_tokens();
    let url = server.url().to_owned();
    let counter = common::function_wasm("counter");
    let counter = counter.to_str().expect("a UTF-8 path");

    let refused =
        run_cli(&["--url", &url, "deploy", "counter", counter], &[("JULATO_TOKEN", CLIENT)]);
    assert!(refused.failed().contains("forbidden"), "{refused:?}");
    run_cli(&["--url", &url, "--token", ADMIN, "deploy", "counter", counter], &[]).ok();

    let send = ["--url", &url, "--json", "send", "counter/cli", "Say", r#"{"text": "hi"}"#];
    let refused = run_cli(&send, &[]);
    assert!(refused.failed().contains("unauthorized"), "{refused:?}");
    let sent = run_cli(&send, &[("JULATO_TOKEN", CLIENT)]).json();
    assert_eq!((&sent["version"], &sent["reply"]), (&json!(1), &json!(common::say_reply("hi", 1))));
    let state =
        run_cli(&["--url", &url, "--json", "state", "counter/cli"], &[("JULATO_TOKEN", CLIENT)])
            .json();
    assert_eq!(state["state"], json!(1));
    let wrong = run_cli(&send, &[("JULATO_TOKEN", OTHER_CLIENT.replace('9', "8").as_str())]);
    assert!(wrong.failed().contains("401"), "{wrong:?}");
}

/// Sends `count` reads as fast as it can; returns the answers that were
/// refused for the rate, with their `Retry-After`, and how many passed.
fn burst(
    api: &Api,
    client: &reqwest::blocking::Client,
    count: usize,
) -> (Vec<(Answer, u64)>, usize) {
    let mut limited = Vec::new();
    let mut passed = 0;
    for _ in 0..count {
        let (answer, headers) = api.call_with_headers(client.get(api.full("/v1/functions")));
        if answer.status == 200 {
            passed += 1;
            continue;
        }
        answer.expect_error(429, "rate_limited");
        let retry = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("429 without a Retry-After in seconds: {headers:?}"));
        limited.push((answer, retry));
    }
    (limited, passed)
}

#[test]
fn the_rate_limit_holds_back_one_token_only() {
    let server = Server::start_with_env(
        &["--rate-limit", "5"],
        &[
            ("JULATO_ADMIN_TOKEN", ADMIN),
            ("JULATO_CLIENT_TOKEN", &format!("{CLIENT},{OTHER_CLIENT}")),
        ],
    );
    let client = server.api().with_token(CLIENT);

    let started = Instant::now();
    let (limited, passed) = burst(&client, client.http(), 40);
    let elapsed = started.elapsed().as_secs_f64();
    assert!(!limited.is_empty(), "40 requests in {elapsed:.2} s at 5 per second all passed");
    assert!(limited.iter().all(|(_, retry)| *retry >= 1), "{limited:?}");
    let allowed = 5.0 + 5.0 * elapsed + 1.0;
    assert!((passed as f64) <= allowed, "{passed} passed in {elapsed:.2} s at 5 per second");

    // Other tokens have their own budget; health checks are never limited.
    let other = server.api().with_token(OTHER_CLIENT);
    assert_eq!(other.get("/v1/functions").status, 200);
    assert_eq!(server.api().with_token(ADMIN).get("/v1/functions").status, 200);
    assert!(client.healthy());

    // After the wait it named, the limited client goes on.
    let wait = limited.last().map_or(1, |(_, retry)| *retry);
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(client.get("/v1/functions").status, 200);
}

#[test]
fn without_tokens_the_rate_limit_counts_by_address() {
    let server = Server::start_with(&["--rate-limit", "5", "--rate-burst", "3"]);
    let api = server.api();
    let (limited, passed) = burst(&api, api.http(), 30);
    assert!(!limited.is_empty() && passed >= 3, "{passed} passed, {} limited", limited.len());

    // Another loopback address is another client.
    let other = reqwest::blocking::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client bound to 127.0.0.2");
    let (limited_other, passed_other) = burst(&api, &other, 3);
    assert_eq!((limited_other.len(), passed_other), (0, 3), "{limited_other:?}");
}
