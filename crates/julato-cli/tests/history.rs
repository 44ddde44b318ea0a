//! End-to-end tests of history against a real `julato serve`: time travel by
//! version, seq and time at their edges; eviction (on demand, when idle, over
//! the memory budget) and restarts keeping versions gapless; checkpoints;
//! point-in-time restores with their archived branches, released idempotency
//! keys and restarts; and the client verbs for all of it.
//!
//! Needs the example components: run `make functions` first.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Answer, Api, Server, say_reply};
use julato_core::EventTime;
use serde_json::{Value, json};

/// Longest wait for the idle-eviction timer to empty memory.
const EVICTION_TIMEOUT: Duration = Duration::from_secs(60);
const FUTURE: &str = "2100-01-01T00:00:00Z";
const PAST: &str = "2001-02-03T04:05:06Z";

#[track_caller]
fn num(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("not an unsigned integer: {value}"))
}

/// Nanoseconds since the epoch of an RFC 3339 time in an answer.
#[track_caller]
fn nanos(time: &Value) -> u64 {
    let text = time.as_str().unwrap_or_else(|| panic!("not a time: {time}"));
    EventTime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{e}")).0
}

fn rfc(nanos: u64) -> String {
    EventTime(nanos).to_rfc3339()
}

/// `GET` a process's state with a query string.
#[track_caller]
fn state_q(api: &Api, function: &str, key: &str, query: &str) -> Answer {
    api.get(&format!("{}?{query}", Api::process_path(function, key)))
}

/// `GET` a process's history with a query string.
#[track_caller]
fn history_q(api: &Api, function: &str, key: &str, query: &str) -> Answer {
    api.get(&format!("{}?{query}", Api::events_path(function, key)))
}

fn events(page: &Value) -> Vec<Value> {
    page["events"].as_array().unwrap_or_else(|| panic!("no events in {page}")).clone()
}

fn seqs(list: &[Value]) -> Vec<u64> {
    list.iter().map(|e| num(&e["seq"])).collect()
}

/// The live log's seqs, every page.
fn live_seqs(api: &Api) -> Vec<u64> {
    seqs(&api.log())
}

/// One page (at most 1000) of the events restore `branch` archived.
fn branch_log(api: &Api, branch: u64) -> Vec<Value> {
    events(&api.get(&format!("/v1/log?branch={branch}&limit=1000")).ok())
}

/// Sums of the integer counters of every shard (not its id, nor gauges such
/// as `busy_percent`).
fn totals(api: &Api) -> BTreeMap<String, u64> {
    let managers = api.get("/v1/managers").ok();
    let mut sums = BTreeMap::new();
    for shard in managers["shards"].as_array().expect("shards") {
        for (name, value) in shard.as_object().expect("a shard") {
            if name != "shard" && value.is_u64() {
                *sums.entry(name.clone()).or_default() += num(value);
            }
        }
    }
    sums
}

/// Polls `done` until it holds, at most `timeout`.
#[track_caller]
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn evict(api: &Api) -> u64 {
    num(&api.post_json("/v1/managers/evict", &json!({})).ok()["evicted"])
}

#[track_caller]
fn checkpoint(api: &Api) -> Value {
    api.post_json("/v1/checkpoints", &json!({})).expect(201)
}

#[track_caller]
fn checkpoints(api: &Api) -> Vec<Value> {
    api.get("/v1/checkpoints").ok()["checkpoints"].as_array().expect("checkpoints").clone()
}

#[track_caller]
fn restore(api: &Api, body: Value) -> Value {
    api.post_json("/v1/restore", &body).ok()
}

#[track_caller]
fn restores(api: &Api) -> Vec<Value> {
    api.get("/v1/restores").ok()["restores"].as_array().expect("restores").clone()
}

/// `account`: deposits `amount` into `key`, with an idempotency key if given.
#[track_caller]
fn deposit(api: &Api, key: &str, amount: u64, idempotency_key: Option<&str>) -> Value {
    let mut body = json!({ "type": "Deposit", "data": { "amount": amount } });
    if let Some(k) = idempotency_key {
        body["idempotency_key"] = json!(k);
    }
    api.send("account", key, &body).ok()
}

fn balance(amount: u64) -> Value {
    json!({ "balance": amount })
}

/// Checks a `counter` read at `version` against the answers of the sends that
/// made that process's versions (`sends[v - 1]` made version v).
#[track_caller]
fn check_counter_read(read: &Value, key: &str, version: usize, sends: &[Value]) {
    let newest = sends.len();
    assert_eq!((&read["function"], &read["key"]), (&json!("counter"), &json!(key)), "{read}");
    assert_eq!(read["version"], json!(version), "{key}: {read}");
    assert_eq!(read["state"], json!(version), "{key}: the count is the version: {read}");
    assert_eq!(read["newest_version"], json!(newest), "{key}: {read}");
    assert_eq!(read["function_version"], sends[0]["function_version"], "{key}: {read}");
    if version == 0 {
        assert_eq!(read["seq"], json!(0), "{key}: version 0 has no seq: {read}");
        assert_eq!((&read["created"], &read["updated"]), (&Value::Null, &Value::Null), "{read}");
    } else {
        let made = &sends[version - 1];
        assert_eq!(read["seq"], made["seq"], "{key} v{version}: {read}");
        assert_eq!(read["updated"], made["time"], "{key} v{version}: {read}");
        assert_eq!(read["created"], sends[0]["time"], "{key} v{version}: {read}");
    }
    let token = read["token"].as_str().unwrap_or("");
    assert!(token.starts_with("v2.0-"), "{key}: a read carries a token: {read}");
}

/// Reads every version of a `counter` process, 0 to the newest.
#[track_caller]
fn check_every_counter_version(api: &Api, key: &str, sends: &[Value]) {
    for version in 0..=sends.len() {
        let read = state_q(api, "counter", key, &format!("version={version}")).ok();
        check_counter_read(&read, key, version, sends);
    }
    let now = api.state("counter", key).ok();
    check_counter_read(&now, key, sends.len(), sends);
}

/// Checks that a page of history is exactly the events these sends made.
#[track_caller]
fn check_events(page: &[Value], sends: &[Value]) {
    assert_eq!(seqs(page), seqs(sends), "history seqs");
    for (event, sent) in page.iter().zip(sends) {
        for field in ["version", "time", "reply", "function_version"] {
            assert_eq!(event[field], sent[field], "`{field}` of {event}");
        }
    }
}

/// Checks a whole history: versions 1..n without a gap, seqs increasing.
#[track_caller]
fn check_gapless(history: &[Value], newest: u64) {
    let versions: Vec<u64> = history.iter().map(|e| num(&e["version"])).collect();
    assert_eq!(versions, (1..=newest).collect::<Vec<_>>(), "versions must be 1..n");
    let seqs = seqs(history);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs must increase: {seqs:?}");
}

/// Reads at every edge of a process's history, by version, seq and time, for
/// the state and for the history route, on resident states and then on states
/// rebuilt from snapshots after an eviction.
#[test]
fn time_travel_reads_at_every_edge() {
    let server = Server::start_with(&["--snapshot-every", "5", "--idle-evict-secs", "0"]);
    server.deploy("counter");

    // `a` gets 12 events; `b` one after each of `a`'s first 11, so every seq
    // between two of `a`'s events belongs to `b`.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 1..=12u64 {
        let sent = server.say("counter", "a", &format!("a{i}"));
        assert_eq!((&sent["version"], &sent["state"]), (&json!(i), &json!(i)), "{sent}");
        a.push(sent);
        if i < 12 {
            b.push(server.say("counter", "b", &format!("b{i}")));
        }
    }
    let end = num(&a[11]["seq"]);
    assert_eq!(totals(&server)["snapshots"], 4, "versions 5 and 10 of both");

    for pass in ["resident", "evicted"] {
        if pass == "evicted" {
            assert_eq!(evict(&server), 2);
            let totals = totals(&server);
            assert_eq!((totals["resident_processes"], totals["resident_bytes"]), (0, 0));
            assert_eq!(totals["snapshots"], 6, "eviction snapshots 12 of a and 11 of b");
        }
        // Every version, 0 and the snapshot versions 5 and 10 among them.
        check_every_counter_version(&server, "a", &a);
        check_every_counter_version(&server, "b", &b);
        for v in [5, 10] {
            let read = state_q(&server, "counter", "a", &format!("version={v}")).ok();
            check_counter_read(&read, "a", v, &a);
        }
    }

    // One past the end, and far past it.
    for version in ["13", "18446744073709551615"] {
        state_q(&server, "counter", "a", &format!("version={version}"))
            .expect_error(404, "version_out_of_range");
    }
    state_q(&server, "counter", "b", "version=12").expect_error(404, "version_out_of_range");
    state_q(&server, "counter", "nobody", "version=0").expect_error(404, "process_not_found");

    // Time: a future time is the newest state; any time before the first event
    // is version 0; `at` is inclusive.
    let read = |query: String| state_q(&server, "counter", "a", &query).ok();
    check_counter_read(&read(format!("at={FUTURE}")), "a", 12, &a);
    check_counter_read(&read(format!("at={PAST}")), "a", 0, &a);
    check_counter_read(&read("at=1970-01-01T00:00:00Z".into()), "a", 0, &a);
    let times: Vec<u64> = a.iter().map(|s| nanos(&s["time"])).collect();
    let count_at = |t: u64| times.iter().filter(|x| **x <= t).count();
    for k in [1usize, 2, 5, 6, 10, 11, 12] {
        let t = times[k - 1];
        assert!(count_at(t) >= k);
        // The very text the send answered with.
        let text = a[k - 1]["time"].as_str().expect("a time");
        check_counter_read(&read(format!("at={text}")), "a", count_at(t), &a);
        check_counter_read(&read(format!("at={}", rfc(t))), "a", count_at(t), &a);
        assert!(count_at(t - 1) < k);
        check_counter_read(&read(format!("at={}", rfc(t - 1))), "a", count_at(t - 1), &a);
    }

    // Seq: a seq of `b` between two of `a`'s events names the earlier one.
    let a_seqs = seqs(&a);
    for (j, between) in seqs(&b).into_iter().enumerate() {
        assert!(a_seqs[j] < between && between < a_seqs[j + 1], "b's seq must lie between");
        check_counter_read(&read(format!("seq={between}")), "a", j + 1, &a);
    }
    for (k, seq) in a_seqs.iter().enumerate() {
        check_counter_read(&read(format!("seq={seq}")), "a", k + 1, &a);
        check_counter_read(&read(format!("seq={}", seq - 1)), "a", k, &a);
    }
    check_counter_read(&read("seq=0".into()), "a", 0, &a);
    check_counter_read(&read(format!("seq={end}")), "a", 12, &a);
    let b_end = state_q(&server, "counter", "b", &format!("seq={end}")).ok();
    check_counter_read(&b_end, "b", 11, &b);
    state_q(&server, "counter", "a", &format!("seq={}", end + 1))
        .expect_error(404, "seq_out_of_range");

    // The history route, bounded the same ways.
    let history = |query: &str| events(&history_q(&server, "counter", "a", query).ok());
    check_events(&history("version=5"), &a[..5]);
    check_events(&history("version=12"), &a);
    check_events(&history("version=0"), &[]);
    check_events(&history(&format!("at={FUTURE}")), &a);
    check_events(&history(&format!("at={PAST}")), &[]);
    let text = a[5]["time"].as_str().expect("a time");
    check_events(&history(&format!("at={text}")), &a[..count_at(times[5])]);
    check_events(&history(&format!("at={}", rfc(times[5] - 1))), &a[..count_at(times[5] - 1)]);
    check_events(&history(&format!("seq={}", num(&b[6]["seq"]))), &a[..7]);
    check_events(&history(&format!("seq={}", a_seqs[6])), &a[..7]);
    check_events(&history("seq=0"), &[]);
    check_events(&history("from_version=3&version=5"), &a[2..5]);
    check_events(&history("from_version=6&version=5"), &[]);
    let page = history_q(&server, "counter", "a", "limit=2&version=5").ok();
    check_events(&events(&page), &a[..2]);
    assert_eq!(page["next_from_version"], json!(3), "{page}");
    let page = history_q(&server, "counter", "a", "from_version=5&limit=2&version=5").ok();
    check_events(&events(&page), &a[4..5]);
    assert_eq!(page["next_from_version"], Value::Null, "{page}");
    history_q(&server, "counter", "a", "version=13").expect_error(404, "version_out_of_range");
    history_q(&server, "counter", "a", &format!("seq={}", end + 1))
        .expect_error(404, "seq_out_of_range");

    // At most one bound; times must be RFC 3339.
    let conflicting = [
        format!("version=1&seq={end}"),
        format!("version=1&at={PAST}"),
        format!("seq=1&at={FUTURE}"),
        format!("version=0&seq=0&at={PAST}"),
    ];
    for query in &conflicting {
        state_q(&server, "counter", "a", query).expect_error(400, "invalid_query");
        history_q(&server, "counter", "a", query).expect_error(400, "invalid_query");
    }
    for bad in ["yesterday", "2024-13-01T00:00:00Z", "1700000000"] {
        state_q(&server, "counter", "a", &format!("at={bad}")).expect_error(400, "invalid_time");
        history_q(&server, "counter", "a", &format!("at={bad}")).expect_error(400, "invalid_time");
    }
    state_q(&server, "counter", "a", "version=-1").expect_error(400, "invalid_query");
    state_q(&server, "counter", "a", "seq=x").expect_error(400, "invalid_query");

    // Nothing of this changed the process.
    assert_eq!(server.history("counter", "a").len(), 12);
    assert_eq!(live_seqs(&server).len(), 23);
}

/// Evict, send, evict, send, restart: each rehydration continues the count and
/// the versions, nothing is numbered twice, and old versions still read.
#[test]
fn eviction_and_restart_keep_versions_gapless() {
    let mut server = Server::start_with(&["--snapshot-every", "3", "--idle-evict-secs", "0"]);
    server.deploy("counter");
    let mut sent: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut round = |server: &Server, each: usize, label: &str| {
        for i in 0..each {
            for key in ["p", "q"] {
                let list = sent.entry(key).or_default();
                let text = format!("{label}-{i}");
                let answer = server.say("counter", key, &text);
                let version = list.len() as u64 + 1;
                assert_eq!(
                    (&answer["version"], &answer["state"]),
                    (&json!(version), &json!(version))
                );
                assert_eq!(answer["reply"], json!(say_reply(&text, version)));
                list.push(answer);
            }
        }
        sent.clone()
    };

    round(&server, 4, "first");
    let totals_now = totals(&server);
    assert_eq!((totals_now["resident_processes"], totals_now["snapshots"]), (2, 2));
    assert_eq!(evict(&server), 2);
    let totals_now = totals(&server);
    assert_eq!(totals_now["resident_processes"], 0);
    assert_eq!(totals_now["resident_bytes"], 0);
    assert_eq!(totals_now["evicted"], 2);
    assert_eq!(totals_now["snapshots"], 4, "version 3 by interval, 4 on eviction");
    assert_eq!(evict(&server), 0, "nothing is left to evict");

    // Reads of evicted processes rebuild them.
    let state = server.state("counter", "p").ok();
    assert_eq!((&state["version"], &state["state"]), (&json!(4), &json!(4)));

    let now = round(&server, 2, "second");
    assert_eq!(totals(&server)["rehydrated"], 2);
    check_every_counter_version(&server, "p", &now["p"]);
    assert_eq!(evict(&server), 2);
    round(&server, 3, "third");
    assert_eq!(totals(&server)["rehydrated"], 4);
    assert_eq!(evict(&server), 2);
    let before_restart = round(&server, 0, "none");

    server.restart();
    for key in ["p", "q"] {
        let list = &before_restart[key];
        let history = server.history("counter", key);
        check_gapless(&history, 9);
        check_events(&history, list);
        let first = state_q(&server, "counter", key, "version=1").ok();
        check_counter_read(&first, key, 1, list);
        check_every_counter_version(&server, key, list);
    }

    let after = round(&server, 1, "after restart");
    let newest_before = seqs(&before_restart["q"]).into_iter().max().expect("seqs");
    assert!(num(&after["p"][9]["seq"]) > newest_before, "seqs continue after a restart");
    for key in ["p", "q"] {
        check_gapless(&server.history("counter", key), 10);
        check_every_counter_version(&server, key, &after[key]);
    }
    let mut all: Vec<u64> = after.values().flat_map(|l| seqs(l)).collect();
    all.sort_unstable();
    assert_eq!(live_seqs(&server), all, "the live log is exactly the sent events");
}

/// Processes idle past `--idle-evict-secs` leave memory by themselves and come
/// back with their versions and states, before and after a restart.
#[test]
fn idle_eviction_rehydrates_with_gapless_versions() {
    let mut server = Server::start_with(&["--idle-evict-secs", "0.2", "--snapshot-every", "0"]);
    server.deploy("counter");
    let keys = ["x", "y", "z"];
    let mut sent: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut send_round = |server: &Server, label: &str| {
        for key in keys {
            let list = sent.entry(key).or_default();
            let answer = server.say("counter", key, label);
            assert_eq!(answer["version"], json!(list.len() + 1), "{key}: {answer}");
            assert_eq!(answer["state"], json!(list.len() + 1), "{key}: {answer}");
            list.push(answer);
        }
        sent.clone()
    };
    let all_evicted = |server: &Server, at_least: u64| {
        wait_for("idle processes to be evicted", EVICTION_TIMEOUT, || {
            let totals = totals(server);
            totals["resident_processes"] == 0 && totals["evicted"] >= at_least
        });
        assert_eq!(totals(server)["resident_bytes"], 0);
    };

    send_round(&server, "one");
    send_round(&server, "two");
    all_evicted(&server, 3);
    assert!(totals(&server)["snapshots"] >= 3, "each eviction leaves a snapshot");
    let sent_now = send_round(&server, "three");
    all_evicted(&server, 6);
    for key in keys {
        check_every_counter_version(&server, key, &sent_now[key]);
        check_gapless(&server.history("counter", key), 3);
    }

    server.restart();
    for key in keys {
        check_counter_read(
            &state_q(&server, "counter", key, "version=1").ok(),
            key,
            1,
            &sent_now[key],
        );
        check_events(&server.history("counter", key), &sent_now[key]);
    }
    let after = send_round(&server, "four");
    all_evicted(&server, 3);
    for key in keys {
        check_gapless(&server.history("counter", key), 4);
        check_every_counter_version(&server, key, &after[key]);
    }
}

/// A memory budget of zero evicts every process after every batch: each send
/// rehydrates, and nothing is lost or numbered twice.
#[test]
fn a_zero_memory_budget_rehydrates_on_every_send() {
    let server = Server::start_with(&[
        "--state-memory-mib",
        "0",
        "--snapshot-every",
        "4",
        "--idle-evict-secs",
        "0",
    ]);
    server.deploy("counter");
    let keys = ["m0", "m1", "m2"];
    let mut sent: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for round in 0..5 {
        for key in keys {
            let list = sent.entry(key).or_default();
            let text = format!("r{round}");
            let answer = server.say("counter", key, &text);
            assert_eq!(answer["version"], json!(list.len() + 1), "{key}: {answer}");
            assert_eq!(answer["reply"], json!(say_reply(&text, list.len() as u64 + 1)));
            list.push(answer);
        }
    }
    // A shard evicts after answering, and counts an eviction once its snapshot is written.
    wait_for("the last batch's eviction", EVICTION_TIMEOUT, || {
        let totals = totals(&server);
        totals["resident_processes"] == 0 && totals["evicted"] >= 15
    });
    let totals = totals(&server);
    assert_eq!(totals["resident_bytes"], 0);
    assert_eq!(totals["evicted"], 15, "one eviction per send");
    assert_eq!(totals["rehydrated"], 12, "every send but each process's first");
    assert_eq!(totals["applied"], 15);
    for key in keys {
        check_gapless(&server.history("counter", key), 5);
        check_events(&server.history("counter", key), &sent[key]);
        check_every_counter_version(&server, key, &sent[key]);
    }
}

/// Restore to a seq, send, restart: the restored timeline holds (states,
/// versions going on from the restored ones, the live log), the archived branch
/// stays readable, idempotency keys of archived events are released, a process
/// born after the point is gone, and stale snapshots are never used.
#[test]
fn restore_then_restart_keeps_the_restored_timeline() {
    let mut server = Server::start_with(&["--snapshot-every", "2", "--idle-evict-secs", "0"]);
    server.deploy("account");

    let a1 = deposit(&server, "a", 1, Some("a-1"));
    let b1 = deposit(&server, "b", 2, None);
    let a2 = deposit(&server, "a", 10, None);
    let a3 = deposit(&server, "a", 100, None);
    assert_eq!((&a3["version"], &a3["state"]), (&json!(3), &balance(111)));
    let point = num(&a3["seq"]);
    let cp1 = checkpoint(&server);
    assert_eq!((&cp1["id"], &cp1["seq"], &cp1["processes"]), (&json!(1), &json!(point), &json!(2)));
    assert_eq!((&cp1["time"], &cp1["archived_by"]), (&a3["time"], &Value::Null));

    let a4 = deposit(&server, "a", 1000, Some("a-4"));
    let b2 = deposit(&server, "b", 20, None);
    let c1 = deposit(&server, "c", 5, Some("c-1"));
    let withdrawn =
        server.send("account", "a", &json!({ "type": "Withdraw", "data": { "amount": 1 } })).ok();
    let b3 = deposit(&server, "b", 200, Some("b-3"));
    assert_eq!((&withdrawn["version"], &withdrawn["state"]), (&json!(5), &balance(1110)));
    assert_eq!((&b3["version"], &b3["state"]), (&json!(3), &balance(222)));
    let archived = [a4.clone(), b2, c1, withdrawn.clone(), b3.clone()];
    let upto = num(&b3["seq"]);
    let cp2 = checkpoint(&server);
    assert_eq!((&cp2["id"], &cp2["seq"], &cp2["processes"]), (&json!(2), &json!(upto), &json!(3)));
    // Eviction snapshots at versions the restore takes back (a at 5, b at 3, c at 1).
    assert_eq!(evict(&server), 3);

    let report = restore(&server, json!({ "seq": point }));
    assert_eq!(report["restored_to"], json!(point), "{report}");
    assert_eq!(report["processes"], json!(3), "{report}");
    let branch = report["branch"].clone();
    assert_eq!(branch["branch"], json!(1), "{report}");
    assert_eq!(branch["restored_to"], json!(point), "{report}");
    assert_eq!(branch["archived_from"], json!(point + 1), "{report}");
    assert_eq!(branch["archived_upto"], json!(upto), "{report}");
    assert_eq!(branch["events"], json!(5), "{report}");
    nanos(&branch["restored_at"]);
    assert!(report["token"].as_str().is_some_and(|t| t.starts_with("v2.0-")), "{report}");

    let mut cps = vec![cp1.clone(), cp2.clone()];
    cps[1]["archived_by"] = json!(1);
    let check_archive = |server: &Server| {
        let kept = branch_log(server, 1);
        assert_eq!(seqs(&kept), seqs(&archived), "branch 1 holds the archived events");
        for (event, sent) in kept.iter().zip(&archived) {
            assert_eq!(event["archived_by"], json!(1), "{event}");
            assert_eq!((&event["version"], &event["time"]), (&sent["version"], &sent["time"]));
        }
        let one = server.get(&format!("/v1/events/{}", num(&a4["seq"]))).ok();
        assert_eq!(one["archived_by"], json!(1), "{one}");
        assert_eq!(one["data"], json!({ "amount": 1000 }), "{one}");
        let live = server.get(&format!("/v1/events/{}", num(&a1["seq"]))).ok();
        assert!(live.get("archived_by").is_none(), "a live event is not archived: {live}");
        assert_eq!(restores(server), vec![branch.clone()]);
        assert_eq!(checkpoints(server), cps, "checkpoints past the point are archived");
        server.get("/v1/log?branch=2").expect_error(404, "branch_not_found");
    };

    // Right after the restore.
    let a_now = server.state("account", "a").ok();
    assert_eq!((&a_now["version"], &a_now["state"]), (&json!(3), &balance(111)), "{a_now}");
    assert_eq!((&a_now["seq"], &a_now["newest_version"]), (&json!(point), &json!(3)));
    assert_eq!((&a_now["created"], &a_now["updated"]), (&a1["time"], &a3["time"]), "{a_now}");
    let b_now = server.state("account", "b").ok();
    assert_eq!((&b_now["version"], &b_now["state"]), (&json!(1), &balance(2)), "{b_now}");
    server.state("account", "c").expect_error(404, "process_not_found");
    state_q(&server, "account", "c", "version=0").expect_error(404, "process_not_found");
    server.get(&Api::events_path("account", "c")).expect_error(404, "process_not_found");
    let keys: Vec<Value> = server.processes("account").iter().map(|p| p["key"].clone()).collect();
    assert_eq!(keys, vec![json!("a"), json!("b")]);
    state_q(&server, "account", "a", "version=4").expect_error(404, "version_out_of_range");
    let at_archived = state_q(&server, "account", "a", &format!("seq={}", num(&a4["seq"]))).ok();
    assert_eq!((&at_archived["version"], &at_archived["state"]), (&json!(3), &balance(111)));
    check_events(&server.history("account", "a"), &[a1.clone(), a2.clone(), a3.clone()]);
    assert_eq!(live_seqs(&server), seqs(&[a1.clone(), b1.clone(), a2.clone(), a3.clone()]));
    check_archive(&server);

    // New events: versions go on from the restored ones, seqs above every seq used.
    server
        .send(
            "account",
            "b",
            &json!({ "type": "Deposit", "data": { "amount": 3 }, "expected_version": 3 }),
        )
        .expect_error(409, "version_conflict");
    let n1 = deposit(&server, "a", 7, None);
    assert_eq!((&n1["version"], &n1["state"]), (&json!(4), &balance(118)), "{n1}");
    assert!(num(&n1["seq"]) > upto, "{n1}");
    // The key of an archived event is free again: the retry applies anew.
    let n2 = deposit(&server, "a", 1000, Some("a-4"));
    assert_eq!(n2["deduplicated"], json!(false), "{n2}");
    assert_eq!((&n2["version"], &n2["state"]), (&json!(5), &balance(1118)), "{n2}");
    assert!(num(&n2["seq"]) > num(&n1["seq"]));
    let again = deposit(&server, "a", 1000, Some("a-4"));
    assert_eq!((&again["deduplicated"], &again["seq"]), (&json!(true), &n2["seq"]), "{again}");
    // A key used before the point still answers its first answer.
    let old = deposit(&server, "a", 1, Some("a-1"));
    assert_eq!((&old["deduplicated"], &old["seq"]), (&json!(true), &a1["seq"]), "{old}");
    assert_eq!(old["version"], json!(1), "{old}");
    let n3 = deposit(&server, "c", 5, Some("c-1"));
    assert_eq!((&n3["deduplicated"], &n3["version"]), (&json!(false), &json!(1)), "{n3}");
    let n4 = server
        .send(
            "account",
            "b",
            &json!({ "type": "Deposit", "data": { "amount": 3 }, "expected_version": 1 }),
        )
        .ok();
    assert_eq!((&n4["version"], &n4["state"]), (&json!(2), &balance(5)), "{n4}");

    let a_balances = [0, 1, 11, 111, 118, 1118];
    let a_sends = [a1.clone(), a2.clone(), a3.clone(), n1.clone(), n2.clone()];
    let check_restored = |server: &Server| {
        for (v, amount) in a_balances.iter().enumerate() {
            let read = state_q(server, "account", "a", &format!("version={v}")).ok();
            assert_eq!((&read["version"], &read["state"]), (&json!(v), &balance(*amount)));
            assert_eq!(read["newest_version"], json!(5), "{read}");
            if v > 0 {
                assert_eq!(read["seq"], a_sends[v - 1]["seq"], "{read}");
            }
        }
        let a_now = server.state("account", "a").ok();
        assert_eq!((&a_now["version"], &a_now["state"]), (&json!(5), &balance(1118)));
        let history = server.history("account", "a");
        check_gapless(&history, 5);
        check_events(&history, &a_sends);
        let b_now = server.state("account", "b").ok();
        assert_eq!((&b_now["version"], &b_now["state"]), (&json!(2), &balance(5)));
        let c_now = server.state("account", "c").ok();
        assert_eq!((&c_now["version"], &c_now["state"]), (&json!(1), &balance(5)));
        let live = [a1.clone(), b1.clone(), a2.clone(), a3.clone(), n1.clone(), n2.clone()];
        let mut expected = seqs(&live);
        expected.extend(seqs(&[n3.clone(), n4.clone()]));
        assert_eq!(live_seqs(server), expected, "the live log skips the archived events");
        check_archive(server);
    };
    // Rebuilt from the store: stale snapshots of archived versions must not be used.
    assert_eq!(evict(&server), 3);
    check_restored(&server);

    server.restart();
    check_restored(&server);
    let retry = deposit(&server, "a", 1000, Some("a-4"));
    assert_eq!((&retry["deduplicated"], &retry["seq"]), (&json!(true), &n2["seq"]), "{retry}");
    let n5 = deposit(&server, "a", 10000, None);
    assert_eq!((&n5["version"], &n5["state"]), (&json!(6), &balance(11118)), "{n5}");
    assert!(num(&n5["seq"]) > num(&n4["seq"]), "{n5}");
}

/// Restores by time, to the very end, twice (the second before the first), to
/// before every event, and out of range; branches keep what each archived.
#[test]
fn restores_by_time_twice_and_out_of_range() {
    let mut server = Server::start_with(&["--snapshot-every", "3", "--idle-evict-secs", "0"]);
    server.deploy("account");
    let e: Vec<Value> = (0..8u32)
        .map(|i| deposit(&server, if i % 2 == 0 { "a" } else { "b" }, 1 << i, None))
        .collect();
    let end = num(&e[7]["seq"]);

    // Refused.
    for body in [json!({ "seq": end + 1 }), json!({ "seq": u64::MAX })] {
        server.post_json("/v1/restore", &body).expect_error(400, "restore_point_out_of_range");
    }
    server.post_json("/v1/restore", &json!({})).expect_error(400, "bad_request");
    let both = json!({ "seq": 1, "at": FUTURE });
    server.post_json("/v1/restore", &both).expect_error(400, "bad_request");
    let bad_time = json!({ "at": "last tuesday" });
    server.post_json("/v1/restore", &bad_time).expect_error(400, "invalid_time");
    assert!(restores(&server).is_empty());

    // To the end, and to a future time: nothing to archive.
    for body in [json!({ "seq": end }), json!({ "at": FUTURE })] {
        let report = restore(&server, body);
        assert_eq!(report["restored_to"], json!(end), "{report}");
        assert_eq!((&report["branch"], &report["processes"]), (&Value::Null, &json!(0)));
    }
    assert!(restores(&server).is_empty());
    assert_eq!(live_seqs(&server), seqs(&e));

    // By time: `at` is inclusive.
    let t5 = nanos(&e[4]["time"]);
    let kept = e.iter().filter(|s| nanos(&s["time"]) <= t5).count();
    assert_eq!(kept, 5, "the fifth and sixth events have distinct times");
    let text = e[4]["time"].as_str().expect("a time");
    let first = restore(&server, json!({ "at": text }));
    assert_eq!(first["restored_to"], e[4]["seq"], "{first}");
    assert_eq!(first["processes"], json!(2), "{first}");
    assert_eq!(first["branch"]["branch"], json!(1), "{first}");
    assert_eq!(first["branch"]["events"], json!(3), "{first}");
    assert_eq!(first["branch"]["archived_upto"], json!(end), "{first}");
    let a = server.state("account", "a").ok();
    assert_eq!((&a["version"], &a["state"]), (&json!(3), &balance(1 + 4 + 16)), "{a}");
    let b = server.state("account", "b").ok();
    assert_eq!((&b["version"], &b["state"]), (&json!(2), &balance(2 + 8)), "{b}");

    let f1 = deposit(&server, "a", 256, None);
    let f2 = deposit(&server, "b", 512, None);
    assert_eq!((&f1["version"], &f1["state"]), (&json!(4), &balance(277)));
    assert_eq!((&f2["version"], &f2["state"]), (&json!(3), &balance(522)));
    assert!(num(&f1["seq"]) > end);

    // Second restore, to a point before the first one's.
    let second = restore(&server, json!({ "seq": num(&e[1]["seq"]) }));
    assert_eq!(second["restored_to"], e[1]["seq"], "{second}");
    assert_eq!(second["branch"]["branch"], json!(2), "{second}");
    assert_eq!(second["branch"]["archived_from"], json!(num(&e[1]["seq"]) + 1), "{second}");
    assert_eq!(second["branch"]["archived_upto"], f2["seq"], "{second}");
    assert_eq!(second["branch"]["events"], json!(5), "e3, e4, e5, f1 and f2: {second}");
    assert_eq!(second["processes"], json!(2), "{second}");

    let check = |server: &Server, live: &[Value]| {
        assert_eq!(live_seqs(server), seqs(live));
        let one = branch_log(server, 1);
        assert_eq!(seqs(&one), seqs(&e[5..]));
        assert!(one.iter().all(|x| x["archived_by"] == json!(1)), "{one:?}");
        let two = branch_log(server, 2);
        let expected = [e[2].clone(), e[3].clone(), e[4].clone(), f1.clone(), f2.clone()];
        assert_eq!(seqs(&two), seqs(&expected));
        assert!(two.iter().all(|x| x["archived_by"] == json!(2)), "{two:?}");
        for (sent, branch) in [(&e[5], 1), (&e[7], 1), (&e[2], 2), (&f1, 2), (&f2, 2)] {
            let one = server.get(&format!("/v1/events/{}", num(&sent["seq"]))).ok();
            assert_eq!(one["archived_by"], json!(branch), "{one}");
        }
    };
    check(&server, &e[..2]);
    let a = server.state("account", "a").ok();
    assert_eq!((&a["version"], &a["state"]), (&json!(1), &balance(1)), "{a}");
    let b = server.state("account", "b").ok();
    assert_eq!((&b["version"], &b["state"]), (&json!(1), &balance(2)), "{b}");
    let g1 = deposit(&server, "a", 1024, None);
    assert_eq!((&g1["version"], &g1["state"]), (&json!(2), &balance(1025)));
    assert!(num(&g1["seq"]) > num(&f2["seq"]));
    check(&server, &[e[0].clone(), e[1].clone(), g1.clone()]);
    assert_eq!(restores(&server).len(), 2);

    // To before every event: every process is gone.
    let third = restore(&server, json!({ "at": PAST }));
    assert_eq!((&third["restored_to"], &third["processes"]), (&json!(0), &json!(2)), "{third}");
    assert_eq!(third["branch"]["events"], json!(3), "e1, e2 and g1: {third}");
    assert_eq!(third["branch"]["archived_from"], json!(1), "{third}");
    server.state("account", "a").expect_error(404, "process_not_found");
    server.state("account", "b").expect_error(404, "process_not_found");
    assert!(server.processes("account").is_empty());
    assert!(live_seqs(&server).is_empty());
    let fresh = deposit(&server, "a", 5, None);
    assert_eq!((&fresh["version"], &fresh["state"]), (&json!(1), &balance(5)), "{fresh}");

    server.restart();
    assert_eq!(restores(&server).len(), 3);
    assert_eq!(seqs(&branch_log(&server, 3)), seqs(&[e[0].clone(), e[1].clone(), g1.clone()]));
    assert_eq!(live_seqs(&server), seqs(std::slice::from_ref(&fresh)));
    let a = server.state("account", "a").ok();
    assert_eq!((&a["version"], &a["state"]), (&json!(1), &balance(5)), "{a}");
    server.state("account", "b").expect_error(404, "process_not_found");
    let one = branch_log(&server, 1);
    assert_eq!(seqs(&one), seqs(&e[5..]));
    let again = deposit(&server, "b", 7, None);
    assert_eq!((&again["version"], &again["state"]), (&json!(1), &balance(7)), "{again}");
    assert!(num(&again["seq"]) > num(&fresh["seq"]));
}

/// Checkpoints: on an empty log, after events, listed before and after a
/// restart, archived by a restore, and taken after one; time travel is still
/// right after checkpoints and restarts.
#[test]
fn checkpoints_survive_restarts_and_restores() {
    let mut server = Server::start_with(&["--snapshot-every", "0", "--idle-evict-secs", "0"]);
    server.deploy("account");

    let empty = checkpoint(&server);
    let expected = json!({
        "id": 1, "seq": 0, "time": null, "processes": 0, "snapshots": 0, "archived_by": null,
        "taken_at": empty["taken_at"],
    });
    assert_eq!(empty, expected);
    nanos(&empty["taken_at"]);

    let a1 = deposit(&server, "a", 1, None);
    let b1 = deposit(&server, "b", 2, None);
    let a2 = deposit(&server, "a", 4, None);
    let b2 = deposit(&server, "b", 8, None);
    let a3 = deposit(&server, "a", 16, None);
    let second = checkpoint(&server);
    assert_eq!(
        (&second["id"], &second["seq"], &second["time"]),
        (&json!(2), &a3["seq"], &a3["time"])
    );
    assert_eq!((&second["processes"], &second["snapshots"]), (&json!(2), &json!(2)), "{second}");
    assert_eq!(second["archived_by"], Value::Null);
    let third = checkpoint(&server);
    assert_eq!((&third["id"], &third["seq"], &third["time"]), (&json!(3), &a3["seq"], &a3["time"]));
    assert_eq!((&third["processes"], &third["snapshots"]), (&json!(0), &json!(0)), "{third}");
    let listed = vec![empty.clone(), second.clone(), third.clone()];
    assert_eq!(checkpoints(&server), listed);

    let a_sends = vec![a1.clone(), a2.clone(), a3.clone()];
    let check_a = |server: &Server, balances: &[u64], sends: &[Value]| {
        for (v, amount) in balances.iter().enumerate() {
            let read = state_q(server, "account", "a", &format!("version={v}")).ok();
            assert_eq!((&read["version"], &read["state"]), (&json!(v), &balance(*amount)));
            let seq = if v == 0 { json!(0) } else { sends[v - 1]["seq"].clone() };
            assert_eq!(read["seq"], seq, "{read}");
        }
        let text = sends[1]["time"].as_str().expect("a time");
        let at = state_q(server, "account", "a", &format!("at={text}")).ok();
        assert_eq!((&at["version"], &at["state"]), (&json!(2), &balance(balances[2])), "{at}");
        let at = state_q(server, "account", "a", &format!("seq={}", num(&b1["seq"]))).ok();
        assert_eq!((&at["version"], &at["state"]), (&json!(1), &balance(1)), "{at}");
    };

    server.restart();
    assert_eq!(checkpoints(&server), listed);
    check_a(&server, &[0, 1, 5, 21], &a_sends);
    let b = state_q(&server, "account", "b", "version=2").ok();
    assert_eq!((&b["state"], &b["seq"]), (&balance(10), &b2["seq"]));

    let a4 = deposit(&server, "a", 32, None);
    assert_eq!((&a4["version"], &a4["state"]), (&json!(4), &balance(53)));
    assert!(num(&a4["seq"]) > num(&a3["seq"]));
    let mut a_sends = a_sends;
    a_sends.push(a4.clone());
    assert_eq!(evict(&server), 1);
    server.restart();
    check_a(&server, &[0, 1, 5, 21, 53], &a_sends);

    // A restore archives the checkpoints past its point.
    let report = restore(&server, json!({ "seq": num(&b1["seq"]) }));
    assert_eq!(report["branch"]["events"], json!(4), "{report}");
    let mut listed = listed;
    listed[1]["archived_by"] = json!(1);
    listed[2]["archived_by"] = json!(1);
    assert_eq!(checkpoints(&server), listed);

    let fourth = checkpoint(&server);
    assert_eq!((&fourth["id"], &fourth["archived_by"]), (&json!(4), &Value::Null), "{fourth}");
    assert_eq!((&fourth["processes"], &fourth["snapshots"]), (&json!(2), &json!(2)), "{fourth}");
    assert_eq!(fourth["time"], b1["time"], "the newest live event of the cut: {fourth}");
    listed.push(fourth);
    assert_eq!(checkpoints(&server), listed);

    server.restart();
    assert_eq!(checkpoints(&server), listed);
    let a = server.state("account", "a").ok();
    assert_eq!((&a["version"], &a["state"], &a["seq"]), (&json!(1), &balance(1), &a1["seq"]));
    let a0 = state_q(&server, "account", "a", "version=0").ok();
    assert_eq!((&a0["version"], &a0["state"]), (&json!(0), &balance(0)));
    let b = server.state("account", "b").ok();
    assert_eq!((&b["version"], &b["state"]), (&json!(1), &balance(2)));
    let next = deposit(&server, "a", 64, None);
    assert_eq!((&next["version"], &next["state"]), (&json!(2), &balance(65)));
}

/// A checkpoint taken after a restore, with no live event since the previous
/// checkpoint, is timed by the newest live event of its cut, not by an
/// archived one.
#[test]
fn a_checkpoint_after_a_restore_is_timed_by_its_live_events() {
    let server = Server::start_with(&["--idle-evict-secs", "0"]);
    server.deploy("counter");
    server.say("counter", "a", "one");
    let s2 = server.say("counter", "a", "two");
    let first = checkpoint(&server);
    assert_eq!((&first["seq"], &first["time"]), (&s2["seq"], &s2["time"]));
    server.say("counter", "a", "three");
    let s4 = server.say("counter", "b", "four");
    restore(&server, json!({ "seq": num(&s2["seq"]) }));
    assert_eq!(checkpoints(&server)[0]["archived_by"], Value::Null, "at the point, not past it");

    let second = checkpoint(&server);
    assert_eq!(second["processes"], json!(0), "nothing live changed since the first: {second}");
    assert_ne!(second["time"], s4["time"], "the time of an archived event: {second}");
    assert_eq!(second["time"], s2["time"], "the newest live event in the cut: {second}");
}

/// A rejected event uses up a seq; a restore's branch reaches up to it. After a
/// restart, new events must still get seqs above it, or they land inside the
/// archived branch.
#[test]
fn a_restart_never_hands_out_a_seq_a_restore_archived() {
    let mut server = Server::start_with(&["--idle-evict-secs", "0"]);
    server.deploy("counter");
    let s1 = server.say("counter", "a", "one");
    server.say("counter", "a", "two");
    server
        .send("counter", "a", &json!({ "type": "Shout", "data": {} }))
        .expect_error(422, "unsupported_event_type");
    let report = restore(&server, json!({ "seq": num(&s1["seq"]) }));
    let upto = num(&report["branch"]["archived_upto"]);
    assert_eq!(report["branch"]["events"], json!(1), "{report}");

    server.restart();
    let s3 = server.say("counter", "a", "three");
    assert_eq!(s3["version"], json!(2), "{s3}");
    assert!(num(&s3["seq"]) > upto, "seq {} reuses one of branch 1 (up to {upto})", s3["seq"]);
    let stored = server.get(&format!("/v1/events/{}", num(&s3["seq"]))).ok();
    assert!(stored.get("archived_by").is_none(), "a new event is live: {stored}");
    assert_eq!(live_seqs(&server), seqs(&[s1, s3]));
}

/// A checkpoint's seq is published; after a restart, a new event must get a seq
/// above it, so the next checkpoint sees that event as a change.
#[test]
fn a_checkpoint_after_a_restart_sees_the_events_since_the_previous_one() {
    let mut server = Server::start_with(&["--idle-evict-secs", "0"]);
    server.deploy("counter");
    server.say("counter", "a", "one");
    server
        .send("counter", "a", &json!({ "type": "Shout", "data": {} }))
        .expect_error(422, "unsupported_event_type");
    let first = checkpoint(&server);

    server.restart();
    let s2 = server.say("counter", "a", "two");
    assert!(num(&s2["seq"]) > num(&first["seq"]), "{s2} is not after checkpoint {first}");
    let second = checkpoint(&server);
    assert!(num(&second["seq"]) > num(&first["seq"]), "{second} after {first}");
    assert_eq!(second["processes"], json!(1), "a changed since the first checkpoint: {second}");
}

/// Seqs given to rejected events at the end of the log are never shown to a
/// reader (token, seq bound), so the answers a reader got never change when a
/// restart hands those numbers out again; a kill -9 as much as a clean stop.
#[test]
fn a_read_at_a_seq_never_changes_across_a_restart() {
    let mut server = Server::start_with(&["--idle-evict-secs", "0"]);
    server.deploy("account");
    let first = deposit(&server, "a", 5, None);
    for _ in 0..2 {
        let overdraft = json!({ "type": "Withdraw", "data": { "amount": 50 } });
        server.send("account", "a", &overdraft).expect_error(422, "handler_rejected");
    }
    let read = state_q(&server, "account", "a", "").ok();
    let token = read["token"].as_str().expect("a token").to_owned();
    assert_eq!(token, format!("v2.0-{}", num(&first["seq"])), "{read}");
    let end = num(&first["seq"]);
    state_q(&server, "account", "a", &format!("seq={}", end + 1))
        .expect_error(404, "seq_out_of_range");

    for kill in [true, false] {
        if kill {
            server.kill();
        }
        server.restart();
        let again = state_q(&server, "account", "a", &format!("seq={end}&after={token}")).ok();
        assert_eq!(again["version"], json!(1), "{again}");
        assert_eq!(again["state"], balance(5), "{again}");
        let other = deposit(&server, "b", 7, None);
        assert!(num(&other["seq"]) > end, "{other} reuses a seq readers saw");
        let still = state_q(&server, "account", "a", &format!("seq={end}")).ok();
        assert_eq!((still["version"].clone(), still["state"].clone()), (json!(1), balance(5)));
    }
}

/// A bounded history page that ends exactly at the bound has no next page.
#[test]
fn a_bounded_history_ends_at_its_bound() {
    let server = Server::start_with(&["--idle-evict-secs", "0"]);
    server.deploy("counter");
    for text in ["a", "b", "c", "d"] {
        server.say("counter", "p", text);
    }
    let page = history_q(&server, "counter", "p", "version=2&from_version=2&limit=1").ok();
    assert_eq!(events(&page).len(), 1, "{page}");
    assert!(page["next_from_version"].is_null(), "{page}");
    let page = history_q(&server, "counter", "p", "version=3&limit=2").ok();
    assert_eq!(page["next_from_version"], json!(3), "{page}");
    let page = history_q(&server, "counter", "p", "limit=4").ok();
    assert!(page["next_from_version"].is_null(), "{page}");
}

/// The client verbs for time travel, checkpoints, restores and branches, with `--json`.
#[test]
fn cli_verbs_for_history() {
    let server = Server::start_with(&["--idle-evict-secs", "0"]);
    server.deploy("counter");
    let sends: Vec<Value> =
        (1..=3).map(|i| server.say("counter", "cli", &format!("s{i}"))).collect();

    let read = server.cli(&["--json", "state", "counter/cli", "--version", "1"]).json();
    check_counter_read(&read, "cli", 1, &sends);
    let read = server.cli(&["--json", "state", "counter/cli", "--version", "0"]).json();
    check_counter_read(&read, "cli", 0, &sends);
    let seq = num(&sends[1]["seq"]).to_string();
    let read = server.cli(&["--json", "state", "counter/cli", "--seq", &seq]).json();
    check_counter_read(&read, "cli", 2, &sends);
    // The same instant with a numeric offset: the `+` must survive the URL.
    let at = sends[2]["time"].as_str().expect("a time").replace('Z', "+00:00");
    let read = server.cli(&["--json", "state", "counter/cli", "--at", &at]).json();
    check_counter_read(&read, "cli", 3, &sends);
    let failed = server.cli(&["--json", "state", "counter/cli", "--version", "9"]);
    assert!(failed.failed().contains("version_out_of_range"), "{failed:?}");
    let failed = server.cli(&["state", "counter/cli", "--version", "1", "--seq", "1"]);
    failed.failed();
    let history = server.cli(&["--json", "history", "counter/cli", "--version", "2"]).json();
    check_events(&events(&history), &sends[..2]);

    let taken = server.cli(&["--json", "checkpoint"]).json();
    let taken = taken["checkpoints"].as_array().expect("checkpoints").clone();
    assert_eq!(taken.len(), 1);
    assert_eq!((&taken[0]["id"], &taken[0]["seq"]), (&json!(1), &sends[2]["seq"]));
    let listed = server.cli(&["--json", "checkpoints"]).json();
    assert_eq!(listed["checkpoints"], json!(taken));

    let seq = num(&sends[0]["seq"]).to_string();
    let restored = server.cli(&["--json", "restore", "--seq", &seq]).json();
    assert_eq!(restored["restored_to"], sends[0]["seq"], "{restored}");
    assert_eq!(
        (&restored["branch"]["branch"], &restored["branch"]["events"]),
        (&json!(1), &json!(2))
    );
    server.cli(&["--json", "restore"]).failed();
    let listed = server.cli(&["--json", "restores"]).json();
    assert_eq!(listed["restores"], json!([restored["branch"]]));

    let branch = server.cli(&["--json", "log", "--branch", "1"]).json();
    check_events(&events(&branch), &sends[1..]);
    assert!(events(&branch).iter().all(|e| e["archived_by"] == json!(1)), "{branch}");
    let live = server.cli(&["--json", "log"]).json();
    check_events(&events(&live), &sends[..1]);
    let missing = server.cli(&["--json", "log", "--branch", "7"]);
    assert!(missing.failed().contains("branch_not_found"), "{missing:?}");

    let read = server.cli(&["--json", "state", "counter/cli"]).json();
    check_counter_read(&read, "cli", 1, &sends[..1]);
    // Table output works too.
    let table = server.cli(&["state", "counter/cli", "--version", "0"]).ok().to_owned();
    assert!(table.contains("0 of 1"), "{table}");
}

/// A time after 2554-07-21, where nanoseconds since 1970 no longer fit in 64
/// bits, is still a valid RFC 3339 time in the future: reads give the newest
/// state and a restore to it archives nothing.
#[test]
fn a_time_after_2554_is_a_future_time() {
    let server = Server::start_with(&["--idle-evict-secs", "0"]);
    server.deploy("counter");
    let sends = vec![server.say("counter", "a", "one"), server.say("counter", "a", "two")];
    let last_nanos = "2554-07-21T23:34:33.709551615Z";
    for at in [last_nanos, "2554-07-22T00:00:00Z", "2999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"] {
        let read = state_q(&server, "counter", "a", &format!("at={at}"));
        check_counter_read(&read.ok(), "a", 2, &sends);
        let history = history_q(&server, "counter", "a", &format!("at={at}"));
        check_events(&events(&history.ok()), &sends);
        let report = server.post_json("/v1/restore", &json!({ "at": at })).ok();
        assert_eq!(report["restored_to"], sends[1]["seq"], "{at}: {report}");
        assert_eq!(report["branch"], Value::Null, "{at}: {report}");
    }
}

/// A restore while other clients keep sending: every acknowledged event ends up
/// exactly once, either on the live timeline or in the branch, and the live
/// timeline of every process stays gapless and agrees with the answers, before
/// and after a restart.
#[test]
fn a_restore_amid_concurrent_sends_keeps_every_event_once() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 30;
    const KEYS: usize = 5;
    let mut server = Server::start_with(&["--snapshot-every", "3", "--idle-evict-secs", "0"]);
    server.deploy("counter");
    let acknowledged = std::sync::atomic::AtomicUsize::new(0);

    let (answers, report, point) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let api = server.api();
                let acknowledged = &acknowledged;
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let key = format!("k{}", (thread + i) % KEYS);
                            let answer = api.say("counter", &key, &format!("t{thread}-{i}"));
                            acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            (key, answer)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        wait_for("some sends", Duration::from_secs(120), || {
            acknowledged.load(std::sync::atomic::Ordering::SeqCst) >= THREADS * PER_THREAD / 4
        });
        let mine = server.say("counter", "main", "the point");
        let point = num(&mine["seq"]);
        let report = restore(&server, json!({ "seq": point }));
        let mut answers: Vec<(String, Value)> = vec![("main".into(), mine)];
        for worker in workers {
            answers.extend(worker.join().expect("a sender panicked"));
        }
        (answers, report, point)
    });
    assert_eq!(report["restored_to"], json!(point), "{report}");
    let upto =
        if report["branch"].is_null() { point } else { num(&report["branch"]["archived_upto"]) };

    type Sent<'a> = Vec<&'a (String, Value)>;
    let (mut live, mut archived): (Sent, Sent) = answers.iter().partition(|(_, a)| {
        let seq = num(&a["seq"]);
        seq <= point || seq > upto
    });
    live.sort_by_key(|(_, a)| num(&a["seq"]));
    archived.sort_by_key(|(_, a)| num(&a["seq"]));
    let live_answers: Vec<Value> = live.iter().map(|(_, a)| a.clone()).collect();
    let archived_answers: Vec<Value> = archived.iter().map(|(_, a)| a.clone()).collect();
    if !archived.is_empty() {
        assert_eq!(report["branch"]["events"], json!(archived.len()), "{report}");
    }

    let check = |server: &Server| {
        assert_eq!(live_seqs(server), seqs(&live_answers), "the live log");
        if !archived.is_empty() {
            assert_eq!(seqs(&branch_log(server, 1)), seqs(&archived_answers), "branch 1");
        }
        let mut keys: Vec<String> = (0..KEYS).map(|k| format!("k{k}")).collect();
        keys.push("main".into());
        for key in &keys {
            let mine: Vec<Value> =
                live.iter().filter(|(k, _)| k == key).map(|(_, a)| a.clone()).collect();
            if mine.is_empty() {
                server.state("counter", key).expect_error(404, "process_not_found");
                continue;
            }
            let history = server.history("counter", key);
            check_gapless(&history, mine.len() as u64);
            check_events(&history, &mine);
            let state = server.state("counter", key).ok();
            assert_eq!(
                (&state["version"], &state["state"]),
                (&json!(mine.len()), &json!(mine.len()))
            );
            for (v, answer) in mine.iter().enumerate() {
                let read = state_q(server, "counter", key, &format!("version={}", v + 1)).ok();
                assert_eq!((&read["seq"], &read["state"]), (&answer["seq"], &json!(v + 1)));
            }
        }
    };
    check(&server);
    server.restart();
    check(&server);
}

/// A function's newer version is deployed after some events: replays at every
/// version use the function version that first handled each event, before and
/// after eviction, restore and restart; a restore does not roll the deploy back.
#[test]
fn replays_use_the_function_version_of_each_event() {
    let mut server = Server::start_with(&["--snapshot-every", "3", "--idle-evict-secs", "0"]);
    server.deploy_as("mixed", "counter");
    let mut sends = vec![server.say("mixed", "m", "one"), server.say("mixed", "m", "two")];
    let v2 = server.deploy_as("mixed", "hostile");
    assert_eq!(v2["version"], json!(2), "{v2}");
    let fine = json!({ "type": "Fine", "data": {} });
    for _ in 0..3 {
        sends.push(server.send("mixed", "m", &fine).ok());
    }
    let function_versions: Vec<u64> = sends.iter().map(|s| num(&s["function_version"])).collect();
    assert_eq!(function_versions, [1, 1, 2, 2, 2]);
    server
        .send("mixed", "m", &json!({ "type": "Say", "data": { "text": "old" } }))
        .expect_error(422, "unsupported_event_type");

    let check = |server: &Server, sends: &[Value]| {
        for v in 0..=sends.len() {
            let read = state_q(server, "mixed", "m", &format!("version={v}")).ok();
            assert_eq!((&read["version"], &read["state"]), (&json!(v), &json!(v)), "{read}");
            let made_by = if v == 0 { json!(1) } else { sends[v - 1]["function_version"].clone() };
            assert_eq!(read["function_version"], made_by, "{read}");
        }
    };
    check(&server, &sends);
    assert_eq!(evict(&server), 1);
    check(&server, &sends);
    server.restart();
    check(&server, &sends);

    let report = restore(&server, json!({ "seq": num(&sends[0]["seq"]) }));
    assert_eq!(report["branch"]["events"], json!(4), "{report}");
    let function = server.get("/v1/functions/mixed").ok();
    assert_eq!(function["latest_version"], json!(2), "deploys are not rolled back: {function}");
    server
        .send("mixed", "m", &json!({ "type": "Say", "data": { "text": "again" } }))
        .expect_error(422, "unsupported_event_type");
    let next = server.send("mixed", "m", &fine).ok();
    assert_eq!(
        (&next["version"], &next["state"], &next["function_version"]),
        (&json!(2), &json!(2), &json!(2))
    );
    let sends = vec![sends[0].clone(), next];
    check(&server, &sends);
    server.restart();
    check(&server, &sends);
}
