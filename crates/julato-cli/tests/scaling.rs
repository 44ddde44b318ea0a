//! The autoscaler against a real server: a shard kept busy by a spinning
//! handler gets a new shard beside it, the processes that queued behind the
//! spinner move there, and once the load stops the extra shard retires; every
//! process stays gapless and exact across the moves.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

const KEYS: usize = 20;

fn scaling(server: &Server) -> Value {
    server.get("/v1/managers").ok()["scaling"].clone()
}

/// Polls `/v1/managers` until `done` holds of its `scaling`, or panics after
/// `within`.
#[track_caller]
fn wait_for(server: &Server, within: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let now = scaling(server);
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}; scaling: {now:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_busy_shard_is_split_and_the_extra_shard_retires_when_idle() {
    let server = Server::start_with(&[
        "--shards",
        "1",
        "--min-shards",
        "1",
        "--max-shards",
        "3",
        "--scale-interval-ms",
        "200",
    ]);
    server.deploy("counter");
    server.deploy("hostile");
    let start = scaling(&server);
    assert_eq!(start["shards"], 1, "{start:#}");
    assert_eq!((start["min_shards"].as_u64(), start["max_shards"].as_u64()), (Some(1), Some(3)));

    let stop = Arc::new(AtomicBool::new(false));
    // Spinners keep the one shard busy: each event runs out of fuel.
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (api, stop) = (server.api(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    api.send("hostile", "spinner", &json!({ "type": "Spin", "data": {} }))
                        .expect_error(422, "fuel_exhausted");
                }
            })
        })
        .collect();
    // Well-behaved clients count how many of their events were acknowledged.
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (api, stop) = (server.api(), stop.clone());
            std::thread::spawn(move || {
                let mut acknowledged = vec![0u64; KEYS];
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let key = (client * 5 + n) % KEYS;
                    let answer = api.say("counter", &format!("k{key}"), &format!("c{client}-{n}"));
                    acknowledged[key] += 1;
                    assert!(answer["version"].as_u64().is_some(), "{answer}");
                    n += 1;
                }
                acknowledged
            })
        })
        .collect();

    let added = wait_for(&server, Duration::from_secs(30), "a shard added", |s| {
        s["added"].as_u64() >= Some(1)
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for spinner in spinners {
        spinner.join().expect("a spinner");
    }
    let mut acknowledged = [0u64; KEYS];
    for client in clients {
        for (key, count) in client.join().expect("a client").into_iter().enumerate() {
            acknowledged[key] += count;
        }
    }

    let decision = &added["decisions"][0];
    assert_eq!(decision["action"], "add", "{added:#}");
    assert_eq!(decision["from"], 0, "{added:#}");
    assert!(decision["partitions"].as_u64() > Some(0), "{added:#}");
    assert!(decision["reason"].as_str().is_some_and(|r| r.contains("busy")), "{added:#}");
    let managers = server.get("/v1/managers").ok();
    let shards = managers["shards"].as_array().expect("shards");
    assert!(shards.len() >= 2, "{managers:#}");
    let partitions: u64 = shards.iter().map(|s| s["partitions"].as_u64().unwrap()).sum();
    assert_eq!(partitions, 4096, "every partition has one owner: {managers:#}");

    // Once idle, the shards retire back to the minimum.
    let idle =
        wait_for(&server, Duration::from_secs(60), "back to one shard", |s| s["shards"] == 1);
    assert!(idle["retired"].as_u64() >= Some(1), "{idle:#}");
    let managers = server.get("/v1/managers").ok();
    assert_eq!(managers["shards"][0]["partitions"], 4096, "{managers:#}");
    assert!(server.stderr().contains("process managers rescaled"), "decisions are logged");

    // Nothing acknowledged was lost or applied twice across the moves.
    for (key, count) in acknowledged.iter().enumerate() {
        let key = format!("k{key}");
        if *count == 0 {
            continue;
        }
        let state = server.state("counter", &key).ok();
        assert_eq!(state["version"].as_u64(), Some(*count), "{key}: {state}");
        assert_eq!(state["state"].as_u64(), Some(*count), "{key}: {state}");
        let history = server.history("counter", &key);
        let versions: Vec<u64> = history.iter().map(|e| e["version"].as_u64().unwrap()).collect();
        assert_eq!(versions, (1..=*count).collect::<Vec<_>>(), "{key}: gapless");
    }
    let spinner = server.get("/v1/functions/hostile/processes/spinner");
    spinner.expect_error(404, "process_not_found");
}
