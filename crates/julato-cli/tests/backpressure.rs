//! Backpressure against a real server: every queue is bounded, and a full one
//! answers at once (429 or 503 with `Retry-After`) instead of growing memory.
//! A process flooded with slow events is told to back off while the other
//! processes of its shard keep being served; a server working on as many
//! requests as it allows sheds the rest but still answers health checks.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Answer, Api, Server};
use serde_json::json;

/// Fuel that keeps a spinning handler busy for some milliseconds.
const SLOW_FUEL: &str = "20000000";

/// Sends a `Spin` (which burns all its fuel) to `hostile/key`; answers the
/// answer and its `Retry-After` header.
fn spin(api: &Api, key: &str) -> (Answer, Option<String>) {
    let request = api
        .http()
        .post(api.full(&Api::events_path("hostile", key)))
        .json(&json!({ "type": "Spin", "data": {} }));
    let (answer, headers) = api.call_with_headers(request);
    let retry = headers
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    (answer, retry)
}

/// Tallies of what `threads` clients saw while spinning for `duration`, each
/// on the key `key(thread)`: (fuel exhausted, refused with `code`).
fn flood(
    server: &Server,
    threads: usize,
    duration: Duration,
    code: &'static str,
    status: u16,
    key: impl Fn(usize) -> String,
) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (spent, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let (api, stop, spent, refused) =
                (server.api(), stop.clone(), spent.clone(), refused.clone());
            let key = key(thread);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (answer, retry) = spin(&api, &key);
                    match (answer.status, answer.code()) {
                        (422, "fuel_exhausted") => spent.fetch_add(1, Ordering::SeqCst),
                        (s, c) if s == status && c == code => {
                            let retry = retry.expect("a refusal says when to retry");
                            assert!(retry.parse::<u64>().is_ok_and(|s| s >= 1), "{retry}");
                            refused.fetch_add(1, Ordering::SeqCst)
                        }
                        _ => panic!("unexpected answer to a spin: {answer:?}"),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().expect("a flooding client");
    }
    (spent.load(Ordering::SeqCst), refused.load(Ordering::SeqCst))
}

#[test]
fn a_hot_process_is_told_to_back_off_while_its_shard_serves_the_others() {
    // One shard, never split: the hot process and the others share its queue.
    let server = Server::start_with(&[
        "--shards",
        "1",
        "--min-shards",
        "1",
        "--scale-interval-ms",
        "0",
        "--fuel",
        SLOW_FUEL,
        "--process-queue",
        "3",
    ]);
    server.deploy("counter");
    server.deploy("hostile");

    let served = {
        let api = server.api();
        let stop = Arc::new(AtomicBool::new(false));
        let client = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let answer = api.say("counter", &format!("cold{}", n % 10), "x");
                    assert!(answer["version"].as_u64().is_some(), "{answer}");
                    n += 1;
                }
                n
            })
        };
        let (spent, refused) =
            flood(&server, 12, Duration::from_secs(3), "process_overloaded", 429, |_| "hot".into());
        stop.store(true, Ordering::SeqCst);
        let served = client.join().expect("the well-behaved client");
        assert!(spent > 0, "some spins ran");
        assert!(refused > 0, "twelve clients on one process past a queue of 3 were refused");
        served
    };
    assert!(served > 0, "the other processes of the shard were served");
    // Every acknowledged cold event is there, in order.
    let total: u64 = (0..10)
        .map(|i| server.state("counter", &format!("cold{i}")).ok()["version"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, served, "every acknowledged event of the cold processes is stored");
    let answer = server.get("/v1/functions/hostile/processes/hot");
    answer.expect_error(404, "process_not_found");
}

#[test]
fn a_full_shard_queue_answers_overloaded_with_retry_after() {
    let server = Server::start_with(&[
        "--shards",
        "1",
        "--min-shards",
        "1",
        "--scale-interval-ms",
        "0",
        "--fuel",
        SLOW_FUEL,
        "--queue-capacity",
        "2",
    ]);
    server.deploy("counter");
    server.deploy("hostile");
    let (spent, refused) =
        flood(&server, 12, Duration::from_secs(2), "overloaded", 503, |t| format!("p{t}"));
    assert!(spent > 0 && refused > 0, "spent {spent}, refused {refused}");
    server.say("counter", "after", "x");
}

#[test]
fn past_the_in_flight_limit_requests_are_shed_but_health_checks_answered() {
    let server = Server::start_with(&["--fuel", SLOW_FUEL, "--max-in-flight", "2"]);
    server.deploy("counter");
    server.deploy("hostile");
    let health = {
        let api = server.api();
        std::thread::spawn(move || {
            for _ in 0..20 {
                assert!(api.healthy(), "health checks are never shed");
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let (spent, refused) =
        flood(&server, 10, Duration::from_secs(2), "overloaded", 503, |t| format!("p{t}"));
    health.join().expect("the health checker");
    assert!(spent > 0 && refused > 0, "spent {spent}, refused {refused}");
    assert_eq!(server.say("counter", "after", "x")["version"], 1);
}
