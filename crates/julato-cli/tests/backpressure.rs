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

/// Opens a connection to `server` and sends `bytes`, then nothing more.
fn stall(server: &Server, bytes: &[u8]) -> std::net::TcpStream {
    use std::io::Write as _;
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connecting");
    stream.write_all(bytes).expect("sending the first part");
    stream
}

/// A stalled body is answered 408 `body_timeout` once the client has been
/// silent for `--body-timeout-secs`, which frees its place among the requests
/// in flight; and a stalled client cannot keep a SIGTERM from stopping the
/// server within `--shutdown-grace-secs`.
#[test]
fn stalled_clients_neither_hold_their_place_nor_the_shutdown() {
    use std::io::Read as _;
    let mut server = Server::start_with(&[
        "--max-in-flight",
        "2",
        "--body-timeout-secs",
        "1",
        "--shutdown-grace-secs",
        "2",
    ]);
    server.deploy("counter");
    let head = b"POST /v1/functions/counter/processes/slow/events HTTP/1.1\r\nHost: julato\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\"";
    let mut stalled: Vec<_> = (0..2).map(|_| stall(&server, head)).collect();
    std::thread::sleep(Duration::from_millis(300));
    server
        .send("counter", "other", &json!({ "type": "Say", "data": { "text": "x" } }))
        .expect_error(503, "overloaded");
    for stream in &mut stalled {
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_timeout"), "{answer}");
    }
    assert_eq!(server.say("counter", "other", "x")["version"], 1);

    // A client stuck in its headers, another in its body (neither times out
    // within the grace period alone), then SIGTERM.
    let _headers = stall(&server, b"GET /healthz HTTP/1.1\r\nHo");
    let _body = stall(&server, head);
    std::thread::sleep(Duration::from_millis(300));
    let asked = std::time::Instant::now();
    let status = server.stop();
    assert!(status.success(), "{status}: {}", server.stderr());
    assert!(asked.elapsed() < Duration::from_secs(20), "stopped after {:?}", asked.elapsed());
    server.restart();
    assert_eq!(server.state("counter", "other").ok()["version"], 1);
}
