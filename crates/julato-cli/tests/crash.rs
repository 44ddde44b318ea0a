//! Durability under SIGKILL: whatever the server acknowledged survives a crash,
//! each process's history stays gapless and its state matches its history.
//!
//! Needs the example components: run `make functions` first.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Api, Server, say_reply, time_key};
use serde_json::{Value, json};

const THREADS: usize = 8;
const PROCESSES: usize = 24;
const CYCLES: usize = 3;
/// Upper bound of sends per thread and cycle, so a cycle ends even if the kill
/// never came.
const MAX_PER_THREAD: usize = 20_000;
/// Longest wait for the next acknowledgement while senders run.
const ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// An event the server answered 200 to.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    text: String,
    seq: u64,
    version: u64,
}

enum Report {
    Ack(Ack),
    /// An answer other than 200 while the server was up.
    Unexpected(String),
}

fn key_of(thread: usize, i: usize) -> String {
    format!("p{:02}", (thread * 5 + i) % PROCESSES)
}

fn number(value: &Value, what: &str) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("{what} is not an unsigned integer: {value}"))
}

/// Sends `Say` events until the server stops answering; reports every answer.
fn sender(
    api: Api,
    cycle: usize,
    thread: usize,
    killed: Arc<AtomicBool>,
    tx: mpsc::Sender<Report>,
) {
    for i in 0..MAX_PER_THREAD {
        let key = key_of(thread, i);
        let text = format!("c{cycle}-t{thread}-e{i}");
        let body = json!({ "type": "Say", "data": { "text": text } });
        let request = api.http().post(api.full(&Api::events_path("counter", &key))).json(&body);
        let report = match api.try_call(request) {
            Ok(answer) if answer.status == 200 => {
                let seq = number(&answer.body["seq"], "seq");
                let version = number(&answer.body["version"], "version");
                if answer.body["reply"] != json!(say_reply(&text, version)) {
                    Report::Unexpected(format!("wrong reply: {answer:?}"))
                } else {
                    Report::Ack(Ack { key, text, seq, version })
                }
            }
            // Killed while this request was in flight.
            Ok(_) if killed.load(Ordering::SeqCst) => return,
            Ok(answer) => Report::Unexpected(format!("{answer:?}")),
            // The server is gone: stop.
            Err(_) => return,
        };
        let stop = matches!(report, Report::Unexpected(_));
        if tx.send(report).is_err() || stop {
            return;
        }
    }
}

/// Checks the store against every acknowledged event; returns each process's
/// version.
fn verify(server: &Server, acked: &[Ack]) -> BTreeMap<String, u64> {
    let log = server.log();
    let mut by_seq: HashMap<u64, &Value> = HashMap::new();
    let mut per_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    let mut last = 0;
    let mut last_time = log.first().map(|e| time_key(&e["time"]));
    for event in &log {
        let seq = number(&event["seq"], "seq");
        assert!(seq > last, "log seqs must increase: {seq} after {last}");
        last = seq;
        let time = Some(time_key(&event["time"]));
        assert!(time >= last_time, "event times must follow seq order, across restarts too");
        last_time = time;
        by_seq.insert(seq, event);
        let key = event["key"].as_str().expect("key").to_owned();
        per_key.entry(key).or_default().push(event);
    }

    let mut seen = HashSet::new();
    for ack in acked {
        assert!(seen.insert(ack.seq), "seq {} acknowledged twice", ack.seq);
        let Some(event) = by_seq.get(&ack.seq) else {
            panic!("acknowledged event lost: {ack:?}");
        };
        assert_eq!(event["key"], json!(ack.key), "acknowledged {ack:?}, stored {event}");
        assert_eq!(event["version"], json!(ack.version), "acknowledged {ack:?}, stored {event}");
        assert_eq!(event["data"]["text"], json!(ack.text), "acknowledged {ack:?}, stored {event}");
    }

    let mut versions = BTreeMap::new();
    for (key, events) in &per_key {
        for (i, event) in events.iter().enumerate() {
            let version = number(&event["version"], "version");
            assert_eq!(version, i as u64 + 1, "{key}: versions must be 1..n in seq order");
            let text = event["data"]["text"].as_str().expect("text");
            assert_eq!(event["reply"], json!(say_reply(text, version)), "{key}: {event}");
        }
        let n = events.len() as u64;
        let state = server.state("counter", key).ok();
        assert_eq!((&state["version"], &state["state"]), (&json!(n), &json!(n)), "{key}");
        assert_eq!(state["seq"], events[events.len() - 1]["seq"], "{key}: head seq");
        let history = server.history("counter", key);
        let history: Vec<&Value> = history.iter().collect();
        assert_eq!(history, *events, "{key}: history and log disagree");
        versions.insert(key.clone(), n);
    }
    let listed: BTreeMap<String, u64> = server
        .processes("counter")
        .iter()
        .map(|p| (p["key"].as_str().expect("key").to_owned(), number(&p["version"], "version")))
        .collect();
    assert_eq!(listed, versions, "the process listing disagrees with the log");
    versions
}

#[test]
fn acknowledged_events_survive_sigkill() {
    let started = Instant::now();
    let mut server = Server::start();
    server.deploy("counter");
    let mut acked: Vec<Ack> = Vec::new();

    for cycle in 0..CYCLES {
        // Kill at a different depth each cycle.
        let kill_after = 500 + 300 * cycle;
        let killed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (api, killed, tx) = (server.api(), killed.clone(), tx.clone());
                std::thread::spawn(move || sender(api, cycle, thread, killed, tx))
            })
            .collect();
        drop(tx);

        let mut this_cycle = 0;
        while this_cycle < kill_after {
            match rx.recv_timeout(ACK_TIMEOUT) {
                Ok(Report::Ack(ack)) => {
                    acked.push(ack);
                    this_cycle += 1;
                }
                Ok(Report::Unexpected(answer)) => panic!("cycle {cycle}: unexpected {answer}"),
                Err(error) => panic!("cycle {cycle}: senders stalled after {this_cycle}: {error}"),
            }
        }
        killed.store(true, Ordering::SeqCst);
        server.kill();
        // Answers that arrived before the kill count too.
        for report in rx {
            match report {
                Report::Ack(ack) => {
                    acked.push(ack);
                    this_cycle += 1;
                }
                Report::Unexpected(answer) => panic!("cycle {cycle}: unexpected {answer}"),
            }
        }
        for worker in workers {
            worker.join().expect("a sender panicked");
        }

        server.restart();
        let versions = verify(&server, &acked);
        let stored: u64 = versions.values().sum();
        eprintln!(
            "cycle {cycle}: {this_cycle} acknowledged, {} in total, {stored} stored ({:.1?})",
            acked.len(),
            started.elapsed()
        );
        assert!(stored >= acked.len() as u64);

        // New events continue right after the recovered ones.
        let last_seq = acked.iter().map(|a| a.seq).max().unwrap_or(0);
        for (key, n) in &versions {
            let text = format!("c{cycle}-after");
            let answer = server.say("counter", key, &text);
            let (seq, version) = (number(&answer["seq"], "seq"), number(&answer["version"], "v"));
            assert_eq!(version, n + 1, "{key} must continue at n+1: {answer}");
            assert_eq!(answer["state"], json!(n + 1), "{answer}");
            assert!(seq > last_seq, "{key}: new seq {seq} is not after {last_seq}");
            acked.push(Ack { key: key.clone(), text, seq, version });
        }
    }

    // A last graceful restart changes nothing.
    server.restart();
    verify(&server, &acked);
}

/// SIGTERM under load: requests in flight finish, the server exits cleanly, and
/// every acknowledged event is there after a restart.
#[test]
fn graceful_stop_under_load_keeps_every_acknowledged_event() {
    let mut server = Server::start();
    server.deploy("counter");
    let mut acked: Vec<Ack> = Vec::new();
    let stopping = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (api, stopping, tx) = (server.api(), stopping.clone(), tx.clone());
            std::thread::spawn(move || sender(api, 0, thread, stopping, tx))
        })
        .collect();
    drop(tx);
    while acked.len() < 300 {
        match rx.recv_timeout(ACK_TIMEOUT) {
            Ok(Report::Ack(ack)) => acked.push(ack),
            Ok(Report::Unexpected(answer)) => panic!("unexpected {answer}"),
            Err(error) => panic!("senders stalled after {}: {error}", acked.len()),
        }
    }
    stopping.store(true, Ordering::SeqCst);
    let status = server.stop();
    for report in rx {
        match report {
            Report::Ack(ack) => acked.push(ack),
            Report::Unexpected(answer) => panic!("unexpected {answer}"),
        }
    }
    for worker in workers {
        worker.join().expect("a sender panicked");
    }
    assert!(status.success(), "a graceful stop under load exited with {status}");

    server.restart();
    let versions = verify(&server, &acked);
    let stored: u64 = versions.values().sum();
    eprintln!("graceful stop: {} acknowledged, {stored} stored", acked.len());
    for (key, n) in &versions {
        assert_eq!(server.say("counter", key, "after")["version"], n + 1, "{key}");
    }
}
