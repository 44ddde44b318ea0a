//! Causality end to end: transactions (one-shot and interactive), emitted events
//! and their delivery (graphs, crashes, dead letters, the hop limit), and
//! consistent multi-process reads, against a real `julato serve`.
//!
//! Needs the example components: run `make functions` first.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Answer, Api, Server};
use serde_json::{Value, json};

/// Longest wait for the emitted events to be delivered (a debug build).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(180);

fn as_u64(value: &Value, what: &str) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("{what} is not an unsigned integer: {value}"))
}

fn as_i64(value: &Value, what: &str) -> i64 {
    value.as_i64().unwrap_or_else(|| panic!("{what} is not an integer: {value}"))
}

/// One event of a transaction or of a bulk request.
fn event(function: &str, key: &str, kind: &str, data: Value) -> Value {
    json!({ "function": function, "key": key, "type": kind, "data": data })
}

fn deposit(key: &str, amount: i64) -> Value {
    event("account", key, "Deposit", json!({ "amount": amount }))
}

fn withdraw(key: &str, amount: i64) -> Value {
    event("account", key, "Withdraw", json!({ "amount": amount }))
}

#[track_caller]
fn transaction(api: &Api, events: &[Value]) -> Answer {
    api.post_json("/v1/transactions", &json!({ "events": events }))
}

/// (balance, version) of an account as stored.
#[track_caller]
fn account(api: &Api, key: &str) -> (i64, u64) {
    let body = api.state("account", key).ok();
    (as_i64(&body["state"]["balance"], "balance"), as_u64(&body["version"], "version"))
}

/// The `/v1/managers` delivery counters.
#[track_caller]
fn delivery(api: &Api) -> Value {
    let managers = api.get("/v1/managers").ok();
    let delivery = managers["delivery"].clone();
    assert!(delivery["pending"].is_u64(), "no delivery.pending in {managers}");
    delivery
}

/// Waits, at most [`DELIVERY_TIMEOUT`], until no emitted event awaits delivery.
#[track_caller]
fn wait_delivered(api: &Api) {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let delivery = delivery(api);
        if delivery["pending"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "still pending after {DELIVERY_TIMEOUT:?}: {delivery}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The states of processes in one consistent cut, keyed by process key.
#[track_caller]
fn states(api: &Api, function: &str, keys: &[&str]) -> (u64, BTreeMap<String, Value>) {
    let processes: Vec<Value> =
        keys.iter().map(|k| json!({ "function": function, "key": k })).collect();
    let body = api.post_json("/v1/states", &json!({ "processes": processes })).ok();
    let listed = body["states"].as_array().unwrap_or_else(|| panic!("no states in {body}"));
    assert_eq!(listed.len(), keys.len(), "{body}");
    let mut out = BTreeMap::new();
    for (key, state) in keys.iter().zip(listed) {
        assert_eq!(state["function"], json!(function), "{body}");
        assert_eq!(state["key"], json!(key), "states must come in request order: {body}");
        out.insert((*key).to_owned(), state.clone());
    }
    (as_u64(&body["cut"], "cut"), out)
}

/// Every dead letter, every page.
#[track_caller]
fn dead_letters(api: &Api) -> Vec<Value> {
    let mut all = Vec::new();
    let mut path = "/v1/dead-letters?limit=1000".to_owned();
    for _ in 0..1000 {
        let page = api.get(&path).ok();
        all.extend(page["dead_letters"].as_array().expect("dead_letters").iter().cloned());
        match page["next_after"].as_str() {
            Some(next) => path = format!("/v1/dead-letters?limit=1000&after={}", common::enc(next)),
            None => return all,
        }
    }
    panic!("dead-letter paging does not end");
}

/// (departures, arrivals, dep_delay) of an airport state.
fn airport(state: &Value) -> (i64, i64, i64) {
    (
        as_i64(&state["departures"], "departures"),
        as_i64(&state["arrivals"], "arrivals"),
        as_i64(&state["dep_delay"], "dep_delay"),
    )
}

/// A `Flight` row as the `planes` function takes it.
fn flight(
    tailnum: &str,
    origin: &str,
    dest: &str,
    dep_time: Option<i64>,
    dep_delay: Option<i64>,
    arr_time: Option<i64>,
) -> Value {
    let data = json!({
        "year": 2013, "month": 1, "day": 1, "dep_time": dep_time, "sched_dep_time": 515,
        "dep_delay": dep_delay, "arr_time": arr_time, "sched_arr_time": 819,
        "arr_delay": arr_time.map(|_| 11), "carrier": "UA", "flight": 1545,
        "tailnum": tailnum, "origin": origin, "dest": dest, "air_time": 227,
        "distance": 1400, "hour": 5, "minute": 15, "time_hour": "2013-01-01T10:00:00Z",
    });
    event("planes", tailnum, "Flight", data)
}

/// What the airports should hold after `flights`: (departures, arrivals, dep_delay).
fn expected_airports(flights: &[Value]) -> BTreeMap<String, (i64, i64, i64)> {
    let mut expected: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for flight in flights {
        let data = &flight["data"];
        if data["dep_time"].is_null() {
            continue;
        }
        let origin = expected.entry(data["origin"].as_str().unwrap().to_owned()).or_default();
        origin.0 += 1;
        origin.2 += data["dep_delay"].as_i64().unwrap_or(0);
        if !data["arr_time"].is_null() {
            expected.entry(data["dest"].as_str().unwrap().to_owned()).or_default().1 += 1;
        }
    }
    expected
}

/// Checks every airport of `expected` (and `others`, which must be untouched) in
/// one cut; each airport's version must be its number of events.
#[track_caller]
fn check_airports(api: &Api, expected: &BTreeMap<String, (i64, i64, i64)>, others: &[&str]) {
    let mut keys: Vec<&str> = expected.keys().map(String::as_str).collect();
    keys.extend_from_slice(others);
    let (_, got) = states(api, "airports", &keys);
    for key in keys {
        let want = expected.get(key).copied().unwrap_or_default();
        let state = &got[key];
        assert_eq!(airport(&state["state"]), want, "airport {key}: {state}");
        assert_eq!(as_u64(&state["version"], "version"), (want.0 + want.1) as u64, "{state}");
    }
}

/// A tiny deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------
// 1. One-shot transactions
// ---------------------------------------------------------------------------

/// A transfer commits both events under one transaction id: each event names it,
/// and the second event has a `transaction` cause.
#[test]
fn one_shot_transfer_commits_under_one_transaction() {
    let server = Server::start();
    server.deploy("account");
    server.send("account", "a", &json!({ "type": "Deposit", "data": { "amount": 100 } })).ok();

    let answer = transaction(&server, &[withdraw("a", 30), deposit("b", 30)]).ok();
    let events = answer["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{answer}");
    let (first, second) = (as_u64(&events[0]["seq"], "seq"), as_u64(&events[1]["seq"], "seq"));
    assert_eq!(answer["transaction"], json!(first), "{answer}");
    assert!(second > first, "{answer}");
    assert_eq!(events[0]["key"], "a");
    assert_eq!(events[0]["state"], json!({ "balance": 70 }), "{answer}");
    assert_eq!(events[0]["version"], 2, "{answer}");
    assert_eq!(events[1]["state"], json!({ "balance": 30 }), "{answer}");
    assert_eq!(events[1]["version"], 1, "{answer}");
    assert!(answer["token"].is_string(), "{answer}");
    assert_eq!(account(&server, "a"), (70, 2));
    assert_eq!(account(&server, "b"), (30, 1));

    for seq in [first, second] {
        let stored = server.get(&format!("/v1/events/{seq}")).ok();
        assert_eq!(stored["transaction"], json!(first), "event {seq}: {stored}");
    }
    let stored = server.get(&format!("/v1/events/{second}")).ok();
    let causes = stored["causes"].as_array().expect("causes");
    let tx_causes: Vec<&Value> = causes.iter().filter(|c| c["kind"] == "transaction").collect();
    assert_eq!(tx_causes.len(), 1, "one transaction cause expected: {stored}");
    let tx_cause = as_u64(&tx_causes[0]["seq"], "cause seq");
    assert!(tx_cause >= first && tx_cause < second, "transaction cause {tx_cause}: {stored}");

    // An event outside any transaction has none.
    let plain = server.send("account", "c", &json!({ "type": "Deposit", "data": { "amount": 1 } }));
    let seq = as_u64(&plain.ok()["seq"], "seq");
    let stored = server.get(&format!("/v1/events/{seq}")).ok();
    assert!(stored["transaction"].is_null(), "{stored}");
}

/// A transaction whose second event is rejected stores nothing: states, versions,
/// the log and the idempotency keys are as before, and the error names the event.
#[test]
fn rejected_transaction_leaves_no_trace() {
    let server = Server::start();
    server.deploy("account");
    transaction(&server, &[deposit("a", 50), deposit("b", 20)]).ok();
    let log_before = server.log();

    let mut first = deposit("b", 5);
    first["idempotency_key"] = json!("tx-key-1");
    let mut second = withdraw("a", 1000);
    second["idempotency_key"] = json!("tx-key-2");
    let failed = transaction(&server, &[first, second]);
    failed.expect_error(422, "handler_rejected");
    let error = &failed.body["error"];
    assert_eq!(error["event"], 1, "{failed:?}");
    assert_eq!(error["function"], "account", "{failed:?}");
    assert_eq!(error["key"], "a", "{failed:?}");

    assert_eq!(account(&server, "a"), (50, 1));
    assert_eq!(account(&server, "b"), (20, 1));
    assert_eq!(server.log(), log_before, "the log changed");
    assert_eq!(server.history("account", "b").len(), 1);

    // The keys were never used: plain sends under them apply.
    let body = json!({ "type": "Deposit", "data": { "amount": 7 }, "idempotency_key": "tx-key-1" });
    let answer = server.send("account", "b", &body).ok();
    assert_eq!(answer["deduplicated"], false, "{answer}");
    assert_eq!(answer["version"], 2, "{answer}");
    assert_eq!(answer["state"], json!({ "balance": 27 }), "{answer}");
    let body = json!({ "type": "Deposit", "data": { "amount": 1 }, "idempotency_key": "tx-key-2" });
    let answer = server.send("account", "a", &body).ok();
    assert_eq!(answer["deduplicated"], false, "{answer}");
    assert_eq!(answer["state"], json!({ "balance": 51 }), "{answer}");

    // An unknown function fails the same way, naming its event.
    let failed = transaction(&server, &[deposit("a", 1), event("nope", "k", "X", json!({}))]);
    failed.expect_error(404, "function_not_found");
    assert_eq!(failed.body["error"]["event"], 1, "{failed:?}");
    assert_eq!(account(&server, "a"), (51, 2));
}

/// Several events to one process in one transaction each see the ones before.
#[test]
fn events_to_one_process_in_a_transaction_see_each_other() {
    let server = Server::start();
    server.deploy("account");
    // The withdrawal is only possible after the deposit before it.
    let answer = transaction(
        &server,
        &[deposit("c", 10), withdraw("c", 10), deposit("c", 5), deposit("d", 1), deposit("c", 5)],
    )
    .ok();
    let events = answer["events"].as_array().expect("events");
    let seen: Vec<(i64, u64)> = events
        .iter()
        .filter(|e| e["key"] == "c")
        .map(|e| (as_i64(&e["state"]["balance"], "balance"), as_u64(&e["version"], "version")))
        .collect();
    assert_eq!(seen, [(10, 1), (0, 2), (5, 3), (10, 4)], "{answer}");
    assert_eq!(account(&server, "c"), (10, 4));
    assert_eq!(account(&server, "d"), (1, 1));
    let history = server.history("account", "c");
    assert_eq!(history.len(), 4);
    let tx = &answer["transaction"];
    for stored in &history {
        let seq = as_u64(&stored["seq"], "seq");
        let full = server.get(&format!("/v1/events/{seq}")).ok();
        assert_eq!(&full["transaction"], tx, "{full}");
    }

    // The same sequence but overdrawn halfway: nothing.
    let failed = transaction(&server, &[deposit("c", 1), withdraw("c", 12), deposit("c", 100)]);
    failed.expect_error(422, "handler_rejected");
    assert_eq!(failed.body["error"]["event"], 1, "{failed:?}");
    assert_eq!(account(&server, "c"), (10, 4));
}

// ---------------------------------------------------------------------------
// 2. Interactive transactions
// ---------------------------------------------------------------------------

#[track_caller]
fn begin(api: &Api, body: Option<Value>) -> String {
    let answer = match body {
        Some(body) => api.post_json("/v1/transactions/begin", &body),
        None => api.post_raw("/v1/transactions/begin", Vec::new()),
    };
    let body = answer.expect(201);
    body["id"].as_str().map(str::to_owned).unwrap_or_else(|| body["id"].to_string())
}

#[track_caller]
fn add(api: &Api, id: &str, event: &Value) -> Answer {
    api.post_json(&format!("/v1/transactions/{id}/events"), event)
}

/// Begin, add (tentative), inspect, commit: the events are stored only at commit.
#[test]
fn interactive_transaction_commits() {
    let server = Server::start();
    server.deploy("account");
    server.send("account", "a", &json!({ "type": "Deposit", "data": { "amount": 100 } })).ok();

    let id = begin(&server, None);
    let added = add(&server, &id, &withdraw("a", 40)).ok();
    assert_eq!(added["tentative"], true, "{added}");
    assert_eq!(added["state"], json!({ "balance": 60 }), "{added}");
    assert_eq!(added["version"], 2, "{added}");
    let added = add(&server, &id, &deposit("b", 40)).ok();
    assert_eq!(added["state"], json!({ "balance": 40 }), "{added}");
    // Nothing is visible outside yet.
    assert_eq!(account(&server, "a"), (100, 1));
    assert_eq!(server.state("account", "b").status, 404);

    let open = server.get(&format!("/v1/transactions/{id}")).ok();
    assert_eq!(open["events"], 2, "{open}");
    let processes = open["processes"].as_array().expect("processes");
    assert_eq!(processes.len(), 2, "{open}");
    let a = processes.iter().find(|p| p["key"] == "a").expect("a");
    assert_eq!((&a["read_version"], &a["version"]), (&json!(1), &json!(2)), "{open}");

    let committed = server.post_json(&format!("/v1/transactions/{id}/commit"), &json!({})).ok();
    let events = committed["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{committed}");
    assert_eq!(committed["transaction"], events[0]["seq"], "{committed}");
    assert_eq!(account(&server, "a"), (60, 2));
    assert_eq!(account(&server, "b"), (40, 1));
    for e in events {
        let full = server.get(&format!("/v1/events/{}", e["seq"])).ok();
        assert_eq!(full["transaction"], committed["transaction"], "{full}");
    }
    // Closed.
    server.get(&format!("/v1/transactions/{id}")).expect_error(404, "transaction_not_found");
    server
        .post_json(&format!("/v1/transactions/{id}/commit"), &json!({}))
        .expect_error(404, "transaction_not_found");
}

/// An added event that fails aborts its transaction: later adds and the commit
/// are refused, so the events the client meant as one never commit in part.
#[test]
fn a_failed_add_aborts_the_transaction() {
    let server = Server::start();
    server.deploy("account");
    server.send("account", "a", &json!({ "type": "Deposit", "data": { "amount": 100 } })).ok();
    let log_before = server.log().len();

    // A transfer whose withdrawal is rejected: the deposit must not commit alone.
    let id = begin(&server, None);
    add(&server, &id, &deposit("b", 500)).ok();
    let failed = add(&server, &id, &withdraw("a", 500));
    failed.expect_error(422, "handler_rejected");
    assert_eq!(failed.body["error"]["transaction_aborted"], true, "{failed:?}");
    assert_eq!(failed.body["error"]["transaction"], id.as_str(), "{failed:?}");

    let open = server.get(&format!("/v1/transactions/{id}")).ok();
    assert_eq!(open["aborted"], true, "{open}");
    assert!(open["aborted_by"].as_str().is_some_and(|r| r.contains("rejected")), "{open}");
    add(&server, &id, &deposit("c", 1)).expect_error(409, "transaction_aborted");
    let refused = server.post_json(&format!("/v1/transactions/{id}/commit"), &json!({}));
    refused.expect_error(409, "transaction_aborted");
    assert!(refused.message().contains("rolled back"), "{refused:?}");
    // The commit rolled it back; nothing was stored.
    server.get(&format!("/v1/transactions/{id}")).expect_error(404, "transaction_not_found");
    assert_eq!(account(&server, "a"), (100, 1));
    assert_eq!(server.state("account", "b").status, 404, "b must not exist");
    assert_eq!(server.log().len(), log_before);

    // An unmet expected version aborts too; a rollback then ends it cleanly.
    let id = begin(&server, None);
    let mut stale = withdraw("a", 1);
    stale["expected_version"] = json!(7);
    add(&server, &id, &stale).expect_error(409, "version_conflict");
    add(&server, &id, &withdraw("a", 1)).expect_error(409, "transaction_aborted");
    let rolled = server.post_json(&format!("/v1/transactions/{id}/rollback"), &json!({})).ok();
    assert_eq!(rolled["events"], 0, "{rolled}");

    // A request refused before it reaches the transaction (a malformed event)
    // leaves it as it was.
    let id = begin(&server, None);
    add(&server, &id, &json!({ "function": "account", "key": "a", "type": "Deposit", "data": { "amount": 5 }, "bogus": 1 }))
        .expect_error(400, "invalid_json");
    add(&server, &id, &deposit("a", 5)).ok();
    server.post_json(&format!("/v1/transactions/{id}/commit"), &json!({})).ok();
    assert_eq!(account(&server, "a"), (105, 2));
}

/// Adds to one transaction sent at once run one at a time: none is refused
/// for racing another, and the process's versions follow one another.
#[test]
fn concurrent_adds_to_one_transaction_run_in_turn() {
    let server = Server::start();
    server.deploy("account");
    let id = begin(&server, None);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (api, id) = (server.api(), id.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let added = add(&api, &id, &deposit("race", 1)).ok();
                    assert_eq!(added["tentative"], true, "{added}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("an adding client");
    }
    let committed = server.post_json(&format!("/v1/transactions/{id}/commit"), &json!({})).ok();
    let versions: Vec<u64> = committed["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| as_u64(&e["version"], "version"))
        .collect();
    assert_eq!(versions, (1..=40).collect::<Vec<_>>(), "{committed}");
    assert_eq!(account(&server, "race"), (40, 40));
}

/// An added event's idempotency key is checked as a send's is: a key used by a
/// committed event or earlier in the transaction answers the first answer and
/// adds nothing; one reused for another event aborts.
#[test]
fn interactive_adds_honour_idempotency_keys() {
    let server = Server::start();
    server.deploy("account");
    let keyed = |key: &str, event: Value| {
        let mut event = event;
        event["idempotency_key"] = json!(key);
        event
    };
    let first = server
        .send(
            "account",
            "bob",
            &json!({ "type": "Deposit", "data": { "amount": 30 }, "idempotency_key": "t1" }),
        )
        .ok();

    let id = begin(&server, None);
    let again = add(&server, &id, &keyed("t1", deposit("bob", 30))).ok();
    assert_eq!(
        (&again["deduplicated"], &again["version"]),
        (&json!(true), &first["version"]),
        "{again}"
    );
    let added = add(&server, &id, &keyed("t2", withdraw("bob", 20))).ok();
    assert_eq!(added["state"], json!({ "balance": 10 }), "{added}");
    let repeated = add(&server, &id, &keyed("t2", withdraw("bob", 20))).ok();
    assert_eq!(
        (&repeated["deduplicated"], &repeated["version"]),
        (&json!(true), &json!(2)),
        "{repeated}"
    );
    let shown = server.get(&format!("/v1/transactions/{id}")).ok();
    assert_eq!(shown["events"], 1, "{shown}");
    server.post_json(&format!("/v1/transactions/{id}/commit"), &json!({})).ok();
    assert_eq!(account(&server, "bob"), (10, 2));

    // Reused for a different event: refused at the add, which aborts.
    let id = begin(&server, None);
    add(&server, &id, &keyed("t1", deposit("bob", 31))).expect_error(409, "idempotency_key_reused");
    add(&server, &id, &deposit("bob", 1)).expect_error(409, "transaction_aborted");
    let id = begin(&server, None);
    add(&server, &id, &keyed("t3", deposit("bob", 1))).ok();
    add(&server, &id, &keyed("t3", deposit("bob", 2))).expect_error(409, "idempotency_key_reused");
    assert_eq!(account(&server, "bob"), (10, 2));
}

/// Edges of the interactive API: an empty commit, a zero timeout, `after` on
/// begin and on one added event.
#[test]
fn interactive_transaction_edges() {
    let server = Server::start();
    server.deploy("account");
    let first =
        server.send("account", "a", &json!({ "type": "Deposit", "data": { "amount": 100 } })).ok();

    // An empty commit is refused and closes nothing: the client may go on.
    let id = begin(&server, None);
    server
        .post_json(&format!("/v1/transactions/{id}/commit"), &json!({}))
        .expect_error(400, "empty_transaction");
    add(&server, &id, &deposit("e", 1)).ok();
    server.post_raw(&format!("/v1/transactions/{id}/commit"), Vec::new()).ok();
    assert_eq!(account(&server, "e"), (1, 1));
    transaction(&server, &[]).expect_error(400, "empty_transaction");
    // A route that takes no query refuses one; a commit takes `after`.
    let id = begin(&server, None);
    server
        .post_json(&format!("/v1/transactions/{id}/rollback?bogus=1"), &json!({}))
        .expect_error(400, "invalid_query");
    server.get(&format!("/v1/transactions/{id}?bogus=1")).expect_error(400, "invalid_query");
    server
        .post_json(&format!("/v1/transactions/{id}/commit?after=nope"), &json!({}))
        .expect_error(400, "invalid_token");

    server
        .post_json("/v1/transactions/begin", &json!({ "timeout_ms": 0 }))
        .expect_error(400, "invalid_timeout");
    // A timeout past ten times the server's is capped, and the answer says so.
    let begun =
        server.post_json("/v1/transactions/begin", &json!({ "timeout_ms": u64::MAX })).expect(201);
    assert_eq!(begun["timeout_ms"], 300_000, "{begun}");

    // A malformed token is a 400.
    server
        .post_json("/v1/transactions/begin", &json!({ "after": "v2.0-nope" }))
        .expect_error(400, "invalid_token");

    // `after` on begin is a cause of every event added without a token of its own.
    let token = first["token"].as_str().expect("token").to_owned();
    let begun =
        server.post_json(&format!("/v1/transactions/begin?after={token}"), &json!({})).expect(201);
    let id = begun["id"].as_str().expect("id").to_owned();
    assert!(begun["token"].as_str().is_some(), "{begun}");
    add(&server, &id, &deposit("b", 1)).ok();
    // An added event's own token, in its body.
    let other =
        server.send("account", "c", &json!({ "type": "Deposit", "data": { "amount": 1 } })).ok();
    let mut own = deposit("d", 1);
    own["after"] = other["token"].clone();
    add(&server, &id, &own).ok();
    let committed = server.post_json(&format!("/v1/transactions/{id}/commit"), &json!({})).ok();
    let seqs: Vec<u64> = committed["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| as_u64(&e["seq"], "seq"))
        .collect();
    let token_causes = |seq: u64| -> Vec<u64> {
        let event = server.get(&format!("/v1/events/{seq}")).ok();
        event["causes"]
            .as_array()
            .expect("causes")
            .iter()
            .filter(|c| c["kind"] == "token")
            .map(|c| as_u64(&c["seq"], "cause seq"))
            .collect()
    };
    assert_eq!(token_causes(seqs[0]), vec![as_u64(&first["seq"], "seq")]);
    assert_eq!(token_causes(seqs[1]), vec![as_u64(&other["seq"], "seq")]);

    // Only an added event takes `after` of its own: in a bulk request or a
    // one-shot transaction it goes at the top.
    let mut inner = deposit("a", 1);
    inner["after"] = json!(token);
    let refused = transaction(&server, &[inner]);
    refused.expect_error(400, "bad_request");
    assert_eq!(refused.body["error"]["event"], 0, "{refused:?}");
}

/// A plain send to a touched process between add and commit fails the commit with
/// a conflict, and nothing of the transaction is stored.
#[test]
fn interactive_commit_conflicts_with_a_concurrent_send() {
    let server = Server::start();
    server.deploy("account");
    server.send("account", "a", &json!({ "type": "Deposit", "data": { "amount": 100 } })).ok();
    let log_before = server.log().len();

    let id = begin(&server, None);
    add(&server, &id, &deposit("b", 10)).ok();
    add(&server, &id, &withdraw("a", 10)).ok();
    server.send("account", "a", &json!({ "type": "Deposit", "data": { "amount": 1 } })).ok();
    server
        .post_json(&format!("/v1/transactions/{id}/commit"), &json!({}))
        .expect_error(409, "version_conflict");

    assert_eq!(account(&server, "a"), (101, 2));
    assert_eq!(server.state("account", "b").status, 404, "b must not exist");
    assert_eq!(server.log().len(), log_before + 1, "only the plain send is stored");
    server.get(&format!("/v1/transactions/{id}")).expect_error(404, "transaction_not_found");
}

/// Rollback discards; an idle transaction times out.
#[test]
fn interactive_rollback_and_timeout() {
    let server = Server::start();
    server.deploy("account");
    server.send("account", "a", &json!({ "type": "Deposit", "data": { "amount": 100 } })).ok();

    let id = begin(&server, Some(json!({})));
    add(&server, &id, &withdraw("a", 60)).ok();
    add(&server, &id, &withdraw("a", 30)).ok();
    let rolled = server.post_json(&format!("/v1/transactions/{id}/rollback"), &json!({})).ok();
    assert_eq!(rolled["rolled_back"], true, "{rolled}");
    assert_eq!(rolled["events"], 2, "{rolled}");
    assert_eq!(account(&server, "a"), (100, 1));
    add(&server, &id, &withdraw("a", 1)).expect_error(404, "transaction_not_found");
    server
        .post_json(&format!("/v1/transactions/{id}/commit"), &json!({}))
        .expect_error(404, "transaction_not_found");

    let begun = server.post_json("/v1/transactions/begin", &json!({ "timeout_ms": 300 }));
    let begun = begun.expect(201);
    assert_eq!(begun["timeout_ms"], 300, "{begun}");
    let id = begun["id"].as_str().map(str::to_owned).unwrap_or_else(|| begun["id"].to_string());
    add(&server, &id, &withdraw("a", 50)).ok();
    std::thread::sleep(Duration::from_secs(1));
    add(&server, &id, &withdraw("a", 1)).expect_error(404, "transaction_not_found");
    server
        .post_json(&format!("/v1/transactions/{id}/commit"), &json!({}))
        .expect_error(404, "transaction_not_found");
    assert_eq!(account(&server, "a"), (100, 1));

    server.get("/v1/transactions/no-such-id").expect_error(404, "transaction_not_found");
}

// ---------------------------------------------------------------------------
// 3. Emitted events
// ---------------------------------------------------------------------------

/// Flights reach the airports; the causal graph shows the emit edges.
#[test]
fn flights_are_delivered_to_airports_with_a_graph() {
    let server = Server::start();
    server.deploy("planes");
    server.deploy("airports");

    let flights = [
        flight("N1", "EWR", "IAH", Some(517), Some(2), Some(830)),
        flight("N1", "IAH", "JFK", Some(600), Some(5), None), // diverted
        flight("N2", "JFK", "EWR", None, None, None),         // cancelled
        flight("N2", "LGA", "EWR", Some(700), Some(-3), Some(900)),
        flight("N3", "EWR", "LGA", Some(800), None, Some(1000)), // no delay known
    ];
    let mut seqs = Vec::new();
    for f in &flights {
        let body = json!({ "type": "Flight", "data": f["data"] });
        let answer = server.send("planes", f["key"].as_str().unwrap(), &body).ok();
        seqs.push(as_u64(&answer["seq"], "seq"));
    }
    wait_delivered(&server);
    let expected = expected_airports(&flights);
    assert_eq!(expected["EWR"], (2, 1, 2));
    check_airports(&server, &expected, &["JFK", "SFO"]);
    let counters = delivery(&server);
    assert_eq!(counters["delivered"], 7, "{counters}");
    assert_eq!(counters["dead_lettered"], 0, "{counters}");

    // The first flight's effects: its departure from EWR, then its arrival at IAH.
    let root = seqs[0];
    let graph = server.get(&format!("/v1/events/{root}/graph?direction=effects&depth=1")).ok();
    assert_eq!(graph["root"], root, "{graph}");
    assert_eq!(graph["direction"], "effects", "{graph}");
    let emits: Vec<&Value> =
        graph["edges"].as_array().expect("edges").iter().filter(|e| e["kind"] == "emit").collect();
    assert_eq!(emits.len(), 2, "{graph}");
    let nodes = graph["nodes"].as_array().expect("nodes");
    let mut targets = Vec::new();
    for edge in &emits {
        assert_eq!(edge["cause"], root, "{graph}");
        let effect = &edge["effect"];
        let node = nodes.iter().find(|n| &n["seq"] == effect).expect("the effect's node");
        assert_eq!(node["function"], "airports", "{graph}");
        assert_eq!(node["depth"], 1, "{graph}");
        targets.push((as_u64(effect, "seq"), node["key"].clone(), node["type"].clone()));
        let full = server.get(&format!("/v1/events/{effect}")).ok();
        assert_eq!(full["origin"]["seq"], root, "{full}");
        assert_eq!(full["hops"], 1, "{full}");
        let causes = full["causes"].as_array().expect("causes");
        assert!(causes.iter().any(|c| c["seq"] == root && c["kind"] == "emit"), "{full}");
        assert!(as_u64(effect, "seq") > root, "an effect comes after its cause: {full}");
    }
    targets.sort_by_key(|t| t.0);
    let in_order: Vec<(Value, Value)> = targets.into_iter().map(|t| (t.1, t.2)).collect();
    assert_eq!(
        in_order,
        [(json!("EWR"), json!("Departure")), (json!("IAH"), json!("Arrival"))],
        "delivered in emission order"
    );
    let first_effect = &emits[0]["effect"];
    let full = server.get(&format!("/v1/events/{first_effect}")).ok();
    assert!(full["origin"]["index"].is_u64(), "{full}");

    // Backwards from an effect: the flight.
    let causes =
        server.get(&format!("/v1/events/{first_effect}/graph?direction=causes&depth=1")).ok();
    let edges = causes["edges"].as_array().expect("edges");
    assert!(edges.iter().any(|e| e["cause"] == root && e["kind"] == "emit"), "{causes}");

    let dot = server.get(&format!("/v1/events/{root}/graph?direction=effects&depth=1&format=dot"));
    assert_eq!(dot.status, 200, "{dot:?}");
    let text = dot.body.as_str().expect("dot is text");
    assert!(text.contains("->"), "{text}");
    assert!(text.starts_with("digraph effects {"), "{text}");
    assert!(!text.contains("truncated"), "{text}");

    // A cancelled flight emits nothing (its only effect is the plane's next event).
    let graph = server.get(&format!("/v1/events/{}/graph?direction=effects&depth=1", seqs[2]));
    let graph = graph.ok();
    let edges = graph["edges"].as_array().expect("edges");
    assert!(edges.iter().all(|e| e["kind"] == "process"), "{graph}");
}

/// Emits of a bulk request survive a kill -9 right after the answer, and are
/// delivered exactly once after the restart.
#[test]
fn delivery_survives_a_crash_exactly_once() {
    const FLIGHTS: usize = 1500;
    let mut server = Server::start();
    server.deploy("planes");
    server.deploy("airports");

    let airports = ["EWR", "JFK", "LGA", "IAH", "ORD", "SFO", "BOS"];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let flights: Vec<Value> = (0..FLIGHTS)
        .map(|_| {
            let tail = format!("N{}", rng.below(40));
            let origin = airports[rng.below(3) as usize];
            let dest = airports[3 + rng.below(4) as usize];
            let roll = rng.below(10);
            let delay = rng.below(120) as i64 - 20;
            match roll {
                0 => flight(&tail, origin, dest, None, None, None),
                1 => flight(&tail, origin, dest, Some(900), Some(delay), None),
                2 => flight(&tail, origin, dest, Some(900), None, Some(1200)),
                _ => flight(&tail, origin, dest, Some(900), Some(delay), Some(1200)),
            }
        })
        .collect();
    let answer = server.bulk(&flights);
    server.kill();
    assert_eq!(answer["accepted"], json!(FLIGHTS), "{}", answer["rejected"]);

    server.restart();
    wait_delivered(&server);
    let expected = expected_airports(&flights);
    check_airports(&server, &expected, &[]);
    assert!(dead_letters(&server).is_empty(), "no dead letters expected");

    // Another restart delivers nothing again.
    server.restart();
    wait_delivered(&server);
    check_airports(&server, &expected, &[]);
}

/// Emits to a missing function become dead letters; redriven after its deploy,
/// they update the airports.
#[test]
fn dead_letters_are_redriven() {
    let server = Server::start();
    server.deploy("planes");
    let f = flight("N9", "EWR", "IAH", Some(517), Some(4), Some(830));
    let answer = server.send("planes", "N9", &json!({ "type": "Flight", "data": f["data"] })).ok();
    let seq = as_u64(&answer["seq"], "seq");
    wait_delivered(&server);
    // The plane itself is unaffected.
    assert_eq!(server.state("planes", "N9").ok()["state"]["flights"], 1);

    let mut letters = dead_letters(&server);
    assert_eq!(letters.len(), 2, "{letters:?}");
    letters.sort_by_key(|l| as_u64(&l["origin"]["index"], "index"));
    let expected = [("EWR", "Departure", 0), ("IAH", "Arrival", 1)];
    for (letter, (key, kind, index)) in letters.iter().zip(expected) {
        assert_eq!(letter["code"], "function_not_found", "{letter}");
        assert!(letter["message"].as_str().is_some_and(|m| !m.is_empty()), "{letter}");
        assert_eq!(letter["function"], "airports", "{letter}");
        assert_eq!(letter["key"], key, "{letter}");
        assert_eq!(letter["type"], kind, "{letter}");
        assert_eq!(letter["origin"]["seq"], seq, "{letter}");
        assert_eq!(letter["origin"]["index"], index, "{letter}");
        assert_eq!(letter["id"], json!(format!("{seq}.{index}")), "{letter}");
    }
    assert_eq!(letters[0]["data"], json!({ "dep_delay": 4 }));
    assert!(as_u64(&delivery(&server)["dead_lettered"], "dead_lettered") >= 2);

    server.deploy("airports");
    for letter in &letters {
        let id = letter["id"].as_str().expect("id");
        let redriven = server.post_json(&format!("/v1/dead-letters/{id}/redrive"), &json!({}));
        let redriven = redriven.expect(202);
        assert!(redriven["redriven"].is_object(), "{redriven}");
    }
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        wait_delivered(&server);
        let (_, got) = states(&server, "airports", &["EWR", "IAH"]);
        let now = (airport(&got["EWR"]["state"]), airport(&got["IAH"]["state"]));
        if now == ((1, 0, 4), (0, 1, 0)) {
            break;
        }
        assert!(Instant::now() < deadline, "redriven letters not applied: {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
        .post_json("/v1/dead-letters/999999.0/redrive", &json!({}))
        .expect_error(404, "dead_letter_not_found");
}

/// A cycle of emits ends at the hop limit as a dead letter, and the server goes on.
#[test]
fn an_emit_cycle_stops_at_the_hop_limit() {
    let server = Server::start_with(&["--max-hops", "5"]);
    server.deploy("relay");
    let answer =
        server.send("relay", "a", &json!({ "type": "Ping", "data": { "to": "b", "left": 1000 } }));
    let answer = answer.ok();
    assert_eq!(answer["reply"], 1, "{answer}");

    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let letter = loop {
        let letters = dead_letters(&server);
        if let Some(letter) = letters.iter().find(|l| l["code"] == "hop_limit") {
            break letter.clone();
        }
        assert!(Instant::now() < deadline, "no hop_limit dead letter: {letters:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(letter["function"], "relay", "{letter}");
    wait_delivered(&server);
    assert!(server.healthy());
    let (_, got) = states(&server, "relay", &["a", "b"]);
    let pings = as_i64(&got["a"]["state"], "a") + as_i64(&got["b"]["state"], "b");
    // The client's ping and at most 5 hops after it.
    assert!((2..=6).contains(&pings), "pings delivered: {pings}: {got:?}");
    assert_eq!(dead_letters(&server).len(), 1, "exactly one dead letter");
    // Still answering writes.
    let again =
        server.send("relay", "c", &json!({ "type": "Ping", "data": { "to": "d", "left": 0 } }));
    assert_eq!(again.ok()["reply"], 1);
}

// ---------------------------------------------------------------------------
// 4. Consistent reads
// ---------------------------------------------------------------------------

/// Random transfers between five accounts, while a reader checks every cut: the
/// total never changes and no version or cut ever goes backwards.
#[test]
fn consistent_reads_see_whole_transfers() {
    const KEYS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];
    const EACH: i64 = 1000;
    const WRITERS: u64 = 4;
    const RUN: Duration = Duration::from_secs(5);
    let server = Server::start();
    server.deploy("account");
    let seed: Vec<Value> = KEYS.iter().map(|k| deposit(k, EACH)).collect();
    transaction(&server, &seed).ok();
    let total = EACH * KEYS.len() as i64;

    let (committed, reads) = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let api = server.api();
                scope.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w + 1));
                    let started = Instant::now();
                    let mut committed = 0u64;
                    while started.elapsed() < RUN {
                        let from = rng.below(5) as usize;
                        let to = (from + 1 + rng.below(4) as usize) % 5;
                        let amount = 1 + rng.below(400) as i64;
                        let answer = transaction(
                            &api,
                            &[withdraw(KEYS[from], amount), deposit(KEYS[to], amount)],
                        );
                        match answer.status {
                            200 => committed += 1,
                            422 => assert_eq!(answer.code(), "handler_rejected", "{answer:?}"),
                            _ => panic!("unexpected transfer answer: {answer:?}"),
                        }
                    }
                    committed
                })
            })
            .collect();
        let reader = {
            let api = server.api();
            scope.spawn(move || {
                let started = Instant::now();
                let mut last_cut = 0u64;
                let mut last_versions = [0u64; 5];
                let mut reads = 0u64;
                while started.elapsed() < RUN + Duration::from_millis(200) {
                    let (cut, got) = states(&api, "account", &KEYS);
                    let mut sum = 0;
                    for (i, key) in KEYS.iter().enumerate() {
                        let state = &got[*key];
                        sum += as_i64(&state["state"]["balance"], "balance");
                        let version = as_u64(&state["version"], "version");
                        assert!(version >= last_versions[i], "{key} went back: {state}");
                        last_versions[i] = version;
                        if let Some(seq) = state["seq"].as_u64() {
                            assert!(seq <= cut, "{key} is past the cut {cut}: {state}");
                        }
                    }
                    assert_eq!(sum, total, "a cut saw part of a transfer (cut {cut}): {got:?}");
                    assert!(cut >= last_cut, "the cut went back: {cut} after {last_cut}");
                    last_cut = cut;
                    reads += 1;
                }
                reads
            })
        };
        let committed: u64 = writers.into_iter().map(|w| w.join().expect("a writer")).sum();
        (committed, reader.join().expect("the reader"))
    });
    eprintln!("{committed} transfers committed, {reads} consistent reads");
    assert!(committed > 10, "too few transfers: {committed}");
    assert!(reads > 10, "too few reads: {reads}");

    // At rest: the total, and each version is 1 + the transfers that touched it.
    let (_, got) = states(&server, "account", &KEYS);
    let sum: i64 = got.values().map(|s| as_i64(&s["state"]["balance"], "balance")).sum();
    assert_eq!(sum, total);
    let versions: u64 = got.values().map(|s| as_u64(&s["version"], "version")).sum();
    assert_eq!(versions, KEYS.len() as u64 + 2 * committed, "{got:?}");
}

#[test]
fn emits_of_a_transaction_are_sent_only_if_it_commits() {
    let server = Server::start();
    for function in ["planes", "airports", "account"] {
        server.deploy(function);
    }
    let flown = flight("N7", "JFK", "ORD", Some(900), Some(4), Some(1100));
    // The flight emits, then the overdraft fails the transaction: nothing is sent.
    let failed = transaction(&server, &[flown.clone(), withdraw("poor", 1)]);
    failed.expect_error(422, "handler_rejected");
    wait_delivered(&server);
    assert_eq!(server.state("airports", "JFK").status, 404, "a rolled-back emit was delivered");
    assert_eq!(delivery(&server)["delivered"], json!(0));

    let committed = transaction(&server, &[flown, deposit("rich", 5)]).ok();
    let flight_seq = as_u64(&committed["events"][0]["seq"], "seq");
    wait_delivered(&server);
    let jfk = server.state("airports", "JFK").ok();
    assert_eq!(airport(&jfk["state"]), (1, 0, 4));
    assert!(as_u64(&jfk["seq"], "seq") > flight_seq, "delivered before its cause");
}

#[test]
fn a_restore_delivers_again_what_it_took_back() {
    let server = Server::start();
    server.deploy("planes");
    server.deploy("airports");
    let f = flight("N8", "EWR", "SFO", Some(900), Some(7), Some(1300));
    let body = json!({ "type": "Flight", "data": f["data"] });
    let sent = server.send("planes", "N8", &body).ok();
    let flight_seq = as_u64(&sent["seq"], "seq");
    wait_delivered(&server);
    let before = server.state("airports", "EWR").ok();
    assert_eq!(airport(&before["state"]), (1, 0, 7));

    // Back to just after the flight: its deliveries are archived, and the
    // emits, whose cause stays, are delivered again, once.
    server.post_json("/v1/restore", &json!({ "seq": flight_seq })).ok();
    wait_delivered(&server);
    let ewr = server.state("airports", "EWR").ok();
    assert_eq!(airport(&ewr["state"]), (1, 0, 7), "{ewr}");
    assert_eq!(ewr["version"], json!(1));
    assert!(as_u64(&ewr["seq"], "seq") > as_u64(&before["seq"], "seq"), "not delivered anew");
    let sfo = server.state("airports", "SFO").ok();
    assert_eq!(airport(&sfo["state"]), (0, 1, 0));
    assert!(dead_letters(&server).is_empty());

    // Back to before the flight: nothing it emitted is delivered again.
    server.post_json("/v1/restore", &json!({ "seq": flight_seq - 1 })).ok();
    wait_delivered(&server);
    assert_eq!(server.state("airports", "EWR").status, 404);
    assert_eq!(server.state("planes", "N8").status, 404);
}

// ---------------------------------------------------------------------------
// 6. The CLI
// ---------------------------------------------------------------------------

/// `julato tx`, `read` and `graph` as a user runs them.
#[test]
fn the_cli_runs_transactions_reads_and_graphs() {
    let server = Server::start();
    server.deploy("account");
    server.send("account", "a", &json!({ "type": "Deposit", "data": { "amount": 100 } })).ok();

    // One shot, from a file holding a bare array of events.
    let dir = tempfile::tempdir().expect("a folder");
    let file = dir.path().join("transfer.json");
    std::fs::write(&file, json!([withdraw("a", 30), deposit("b", 30)]).to_string())
        .expect("the file");
    let file = file.to_str().expect("a UTF-8 path");
    let committed = server.cli(&["--json", "tx", file]).json();
    assert_eq!(committed["events"].as_array().map(Vec::len), Some(2), "{committed}");
    let token = committed["token"].as_str().expect("token").to_owned();

    // Interactive: begin after the token, add, show, commit.
    let begun = server.cli(&["--json", "tx", "begin", "--after", &token]).json();
    let id = begun["id"].as_str().expect("id").to_owned();
    let added = server
        .cli(&["--json", "tx", "add", &id, "account/b", "Withdraw", r#"{"amount": 10}"#])
        .json();
    assert_eq!(added["state"], json!({ "balance": 20 }), "{added}");
    let shown = server.cli(&["tx", "show", &id]).ok().to_owned();
    assert!(shown.contains("1 event added") && shown.contains("account/b"), "{shown}");
    server.cli(&["--json", "tx", "commit", &id]).json();
    assert_eq!(account(&server, "b"), (20, 2));

    // A failed add fails the command and aborts the transaction.
    let id = server.cli(&["--json", "tx", "begin"]).json()["id"].as_str().expect("id").to_owned();
    let failed = server.cli(&["tx", "add", &id, "account/a", "Withdraw", r#"{"amount": 1000}"#]);
    assert!(!failed.status.success(), "{failed:#?}");
    assert!(failed.stderr.contains("handler_rejected"), "{failed:#?}");
    let shown = server.cli(&["tx", "show", &id]).ok().to_owned();
    assert!(shown.contains("aborted"), "{shown}");
    let commit = server.cli(&["tx", "commit", &id]);
    assert!(commit.stderr.contains("transaction_aborted"), "{commit:#?}");

    // A consistent read of both, and the graph of the transfer's second event.
    let read = server.cli(&["--json", "read", "account/a", "account/b", "--after", &token]).json();
    let balances: Vec<&Value> =
        read["states"].as_array().expect("states").iter().map(|s| &s["state"]["balance"]).collect();
    assert_eq!(balances, [&json!(70), &json!(20)], "{read}");
    let second = committed["events"][1]["seq"].to_string();
    let dot = server.cli(&["graph", &second, "--dot"]).ok().to_owned();
    assert!(dot.starts_with("digraph causes {") && dot.contains("transaction"), "{dot}");
    let graph = server
        .cli(&["--json", "graph", &committed["events"][0]["seq"].to_string(), "--effects"])
        .json();
    assert!(graph["edges"].as_array().is_some_and(|e| !e.is_empty()), "{graph}");
}
