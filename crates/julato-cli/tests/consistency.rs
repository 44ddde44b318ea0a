//! A consistency checker. Concurrent clients run random transfers between
//! accounts as transactions, plain sends whose handlers emit events, and
//! consistent reads of every account, while the server is killed (SIGKILL)
//! and restarted at random moments. From the recorded history and the final
//! log it checks: versions of every process gapless and in seq order; money
//! conserved in every consistent read; no read sees part of a transaction,
//! and each read is exactly the cut it names; every emitted event delivered
//! exactly once, after its cause and in emission order; nothing acknowledged
//! lost; causal tokens recorded as causes that come before.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Api, Server};
use serde_json::{Value, json};

const ACCOUNTS: usize = 6;
const OPENING: u64 = 1_000;
const CYCLES: usize = 4;
const AIRPORTS: [&str; 5] = ["EWR", "JFK", "LGA", "ORD", "ATL"];

/// A small deterministic generator, seeded per thread and printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn account(i: usize) -> String {
    format!("acct-{i}")
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("not an unsigned integer: {value}"))
}

/// One account as a consistent read showed it: key, version, balance.
type Balance = (String, u64, i64);

/// What the clients saw.
#[derive(Default)]
struct History {
    /// Acknowledged transfers: (transaction id, seqs of its events).
    transfers: Vec<(u64, Vec<u64>)>,
    /// Acknowledged flights: (seq, tail, departed, arrived).
    flights: Vec<(u64, String, bool, bool)>,
    /// Consistent reads: (cut, [(account, version, balance)]).
    reads: Vec<(u64, Vec<Balance>)>,
    /// Unexpected answers.
    errors: Vec<String>,
}

type Shared = Arc<Mutex<History>>;

fn record(history: &Shared, f: impl FnOnce(&mut History)) {
    f(&mut history.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Transfers random amounts between random accounts until the server dies.
fn transferrer(api: Api, seed: u64, killed: Arc<AtomicBool>, history: Shared) {
    let mut rng = Rng(seed | 1);
    let mut token: Option<String> = None;
    while !killed.load(Ordering::SeqCst) {
        let from = rng.below(ACCOUNTS as u64) as usize;
        let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
        let amount = 1 + rng.below(400);
        let mut body = json!({ "events": [
            { "function": "account", "key": account(from), "type": "Withdraw", "data": { "amount": amount } },
            { "function": "account", "key": account(to), "type": "Deposit", "data": { "amount": amount } },
        ]});
        if let Some(token) = &token {
            body["after"] = json!(token);
        }
        let request = api.http().post(api.full("/v1/transactions")).json(&body);
        match api.try_call(request) {
            Ok(answer) if answer.status == 200 => {
                let b = &answer.body;
                let seqs: Vec<u64> = b["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .map(|e| number(&e["seq"]))
                    .collect();
                token = b["token"].as_str().map(str::to_owned);
                record(&history, |h| h.transfers.push((number(&b["transaction"]), seqs)));
            }
            // An overdraft: nothing is stored.
            Ok(answer) if answer.status == 422 && answer.code() == "handler_rejected" => {}
            Ok(_) | Err(_) if killed.load(Ordering::SeqCst) => return,
            Ok(answer) => record(&history, |h| h.errors.push(format!("transfer: {answer:?}"))),
            Err(_) => return,
        }
    }
}

/// Sends flights to `planes`, whose handler emits to `airports`.
fn flyer(api: Api, seed: u64, killed: Arc<AtomicBool>, history: Shared) {
    let mut rng = Rng(seed | 1);
    let mut token: Option<String> = None;
    while !killed.load(Ordering::SeqCst) {
        let tail = format!("N{}", rng.below(8));
        let departed = rng.below(10) != 0;
        let arrived = departed && rng.below(10) != 0;
        let origin = AIRPORTS[rng.below(3) as usize];
        let dest = AIRPORTS[rng.below(AIRPORTS.len() as u64) as usize];
        let delay = rng.below(60) as i64 - 10;
        let data = json!({
            "tailnum": tail, "origin": origin, "dest": dest,
            "dep_time": if departed { json!(900) } else { Value::Null },
            "arr_time": if arrived { json!(1200) } else { Value::Null },
            "dep_delay": if departed { json!(delay) } else { Value::Null },
            "arr_delay": Value::Null, "distance": 100, "air_time": 50,
        });
        let mut body = json!({ "type": "Flight", "data": data });
        if let Some(token) = &token {
            body["after"] = json!(token);
        }
        let request = api.http().post(api.full(&Api::events_path("planes", &tail))).json(&body);
        match api.try_call(request) {
            Ok(answer) if answer.status == 200 => {
                token = answer.body["token"].as_str().map(str::to_owned);
                let seq = number(&answer.body["seq"]);
                record(&history, |h| h.flights.push((seq, tail, departed, arrived)));
            }
            Ok(_) | Err(_) if killed.load(Ordering::SeqCst) => return,
            Ok(answer) => record(&history, |h| h.errors.push(format!("flight: {answer:?}"))),
            Err(_) => return,
        }
    }
}

/// Reads every account at one cut, again and again.
fn reader(api: Api, killed: Arc<AtomicBool>, history: Shared) {
    let processes: Vec<Value> =
        (0..ACCOUNTS).map(|i| json!({ "function": "account", "key": account(i) })).collect();
    while !killed.load(Ordering::SeqCst) {
        let request =
            api.http().post(api.full("/v1/states")).json(&json!({ "processes": processes }));
        match api.try_call(request) {
            Ok(answer) if answer.status == 200 => {
                let cut = number(&answer.body["cut"]);
                let states = answer.body["states"]
                    .as_array()
                    .expect("states")
                    .iter()
                    .map(|s| {
                        let key = s["key"].as_str().expect("key").to_owned();
                        let balance = s["state"]["balance"].as_i64().expect("balance");
                        (key, number(&s["version"]), balance)
                    })
                    .collect();
                record(&history, |h| h.reads.push((cut, states)));
            }
            Ok(_) | Err(_) if killed.load(Ordering::SeqCst) => return,
            Ok(answer) => record(&history, |h| h.errors.push(format!("read: {answer:?}"))),
            Err(_) => return,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (bounded) until the outbox is empty.
fn drain(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let managers = server.get("/v1/managers").ok();
        if managers["delivery"]["pending"] == json!(0) {
            return;
        }
        assert!(Instant::now() < deadline, "deliveries did not drain: {}", managers["delivery"]);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn transfers_reads_and_emits_stay_consistent_across_kills() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    eprintln!("consistency checker seed: {seed}");
    let mut server = Server::start_with(&["--snapshot-every", "7"]);
    for function in ["account", "planes", "airports"] {
        server.deploy(function);
    }
    let opening: Vec<Value> = (0..ACCOUNTS)
        .map(|i| json!({ "function": "account", "key": account(i), "type": "Deposit", "data": { "amount": OPENING } }))
        .collect();
    let opened = server.post_json("/v1/transactions", &json!({ "events": opening })).ok();
    let history: Shared = Arc::default();
    record(&history, |h| {
        let seqs = opened["events"].as_array().unwrap().iter().map(|e| number(&e["seq"])).collect();
        h.transfers.push((number(&opened["transaction"]), seqs));
    });

    let mut rng = Rng(seed | 1);
    let thread_seed = AtomicU64::new(seed);
    for cycle in 0..CYCLES {
        let killed = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for _ in 0..3 {
            let (api, k, h) = (server.api(), killed.clone(), history.clone());
            let s = thread_seed.fetch_add(0x9E37_79B9, Ordering::Relaxed);
            threads.push(std::thread::spawn(move || transferrer(api, s, k, h)));
        }
        for _ in 0..2 {
            let (api, k, h) = (server.api(), killed.clone(), history.clone());
            let s = thread_seed.fetch_add(0x9E37_79B9, Ordering::Relaxed);
            threads.push(std::thread::spawn(move || flyer(api, s, k, h)));
        }
        let (api, k, h) = (server.api(), killed.clone(), history.clone());
        threads.push(std::thread::spawn(move || reader(api, k, h)));

        std::thread::sleep(Duration::from_millis(400 + rng.below(1200)));
        killed.store(true, Ordering::SeqCst);
        if cycle + 1 < CYCLES {
            server.kill();
        }
        for thread in threads {
            thread.join().expect("a client thread panicked");
        }
        if cycle + 1 < CYCLES {
            server.restart();
        }
    }
    drain(&server);

    let history = Arc::try_unwrap(history).ok().expect("clients are done").into_inner().unwrap();
    assert!(history.errors.is_empty(), "unexpected answers: {:#?}", history.errors);
    assert!(
        history.transfers.len() > ACCOUNTS,
        "too few transfers ran: {}",
        history.transfers.len()
    );
    assert!(!history.reads.is_empty(), "no consistent read ran");
    verify(&server, &history);
}

fn verify(server: &Server, history: &History) {
    let log = server.log();
    let by_seq: HashMap<u64, &Value> = log.iter().map(|e| (number(&e["seq"]), e)).collect();

    // Versions gapless and in seq order, per process; token causes come before.
    let mut per_process: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for event in &log {
        let id = (
            event["function"].as_str().unwrap().to_owned(),
            event["key"].as_str().unwrap().to_owned(),
        );
        per_process.entry(id).or_default().push(event);
        let seq = number(&event["seq"]);
        for cause in event["causes"].as_array().expect("causes") {
            let cause_seq = number(&cause["seq"]);
            assert!(cause_seq < seq, "event {seq} names a later cause {cause_seq}");
            assert!(
                by_seq.contains_key(&cause_seq),
                "event {seq}: cause {cause_seq} is not in the log"
            );
        }
    }
    for (id, events) in &per_process {
        for (i, event) in events.iter().enumerate() {
            assert_eq!(number(&event["version"]), i as u64 + 1, "{id:?}: versions must be 1..n");
        }
    }

    // Nothing acknowledged lost; transactions all-or-nothing.
    let mut transactions: HashMap<u64, Vec<u64>> = HashMap::new();
    for event in &log {
        if let Some(tx) = event["transaction"].as_u64() {
            transactions.entry(tx).or_default().push(number(&event["seq"]));
        }
    }
    for (tx, seqs) in &history.transfers {
        let stored =
            transactions.get(tx).unwrap_or_else(|| panic!("acknowledged transaction {tx} lost"));
        assert_eq!(stored, seqs, "transaction {tx}: stored events differ from the acknowledged");
    }
    for (tx, seqs) in &transactions {
        let expected = if *tx == history.transfers[0].0 { ACCOUNTS } else { 2 };
        assert_eq!(seqs.len(), expected, "transaction {tx} is stored in part: {seqs:?}");
    }
    for (seq, tail, _, _) in &history.flights {
        let event = by_seq.get(seq).unwrap_or_else(|| panic!("acknowledged flight {seq} lost"));
        assert_eq!(event["key"], json!(tail));
    }

    // Money conserved and each read exactly its cut.
    let total = (ACCOUNTS as i64) * OPENING as i64;
    let account_events: Vec<(u64, String)> = log
        .iter()
        .filter(|e| e["function"] == json!("account"))
        .map(|e| (number(&e["seq"]), e["key"].as_str().unwrap().to_owned()))
        .collect();
    for (cut, states) in &history.reads {
        for (key, version, _) in states {
            let at_cut = account_events.iter().filter(|(s, k)| s <= cut && k == key).count() as u64;
            assert_eq!(
                *version, at_cut,
                "read at cut {cut}: {key} at version {version}, cut holds {at_cut}"
            );
        }
        for (tx, seqs) in &transactions {
            let inside = seqs.iter().filter(|s| *s <= cut).count();
            assert!(
                inside == 0 || inside == seqs.len(),
                "cut {cut} splits transaction {tx}: {:?}; read {states:?}",
                seqs.iter().map(|s| by_seq[s]).collect::<Vec<_>>()
            );
        }
        let sum: i64 = states.iter().map(|(_, _, b)| b).sum();
        assert_eq!(sum, total, "read at cut {cut}: money is not conserved: {states:?}");
    }
    let finals: i64 = (0..ACCOUNTS)
        .map(|i| server.state("account", &account(i)).ok()["state"]["balance"].as_i64().unwrap())
        .sum();
    assert_eq!(finals, total, "money is not conserved at the end");

    // Every emit delivered exactly once, after its cause, in emission order.
    let mut deliveries: HashMap<(u64, u64), Vec<&Value>> = HashMap::new();
    for event in &log {
        if let Some(origin) = event.get("origin").filter(|o| !o.is_null()) {
            deliveries
                .entry((number(&origin["seq"]), number(&origin["index"])))
                .or_default()
                .push(event);
        }
    }
    let mut expected_emits = 0;
    let mut last_per_target: HashMap<String, (u64, u64)> = HashMap::new();
    let mut emitted: Vec<(u64, u64, &Value)> = Vec::new();
    for event in log.iter().filter(|e| e["function"] == json!("planes")) {
        let seq = number(&event["seq"]);
        for (index, emit) in event["emitted"].as_array().expect("emitted").iter().enumerate() {
            expected_emits += 1;
            emitted.push((seq, index as u64, emit));
        }
    }
    emitted.sort_by_key(|(s, i, _)| (*s, *i));
    for (seq, index, emit) in emitted {
        let got = deliveries.get(&(seq, index)).map_or(&[][..], Vec::as_slice);
        assert_eq!(got.len(), 1, "emit {seq}.{index} delivered {} times", got.len());
        let delivered = got[0];
        let at = number(&delivered["seq"]);
        assert!(at > seq, "emit {seq}.{index} delivered at {at}, before its cause");
        assert_eq!(delivered["key"], emit["key"], "emit {seq}.{index} went elsewhere");
        assert!(
            delivered["causes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| number(&c["seq"]) == seq && c["kind"] == json!("emit")),
            "delivery {at} does not name its cause {seq}"
        );
        let target = emit["key"].as_str().unwrap().to_owned();
        if let Some((_, previous_at)) = last_per_target.insert(target.clone(), (seq, at)) {
            assert!(previous_at < at, "deliveries to {target} out of emission order");
        }
    }
    assert_eq!(deliveries.len(), expected_emits, "deliveries without an emit in the log");

    // The airports agree with the deliveries.
    let mut departures: BTreeMap<String, u64> = BTreeMap::new();
    let mut arrivals: BTreeMap<String, u64> = BTreeMap::new();
    for list in deliveries.values() {
        let e = list[0];
        let key = e["key"].as_str().unwrap().to_owned();
        match e["type"].as_str().unwrap() {
            "Departure" => *departures.entry(key).or_default() += 1,
            _ => *arrivals.entry(key).or_default() += 1,
        }
    }
    for airport in AIRPORTS {
        let read = server.state("airports", airport);
        if read.status == 404 {
            assert!(!departures.contains_key(airport) && !arrivals.contains_key(airport));
            continue;
        }
        let state = read.ok()["state"].clone();
        assert_eq!(
            state["departures"],
            json!(departures.get(airport).copied().unwrap_or(0)),
            "{airport}"
        );
        assert_eq!(
            state["arrivals"],
            json!(arrivals.get(airport).copied().unwrap_or(0)),
            "{airport}"
        );
    }
    let seen: HashSet<u64> = history.flights.iter().map(|f| f.0).collect();
    eprintln!(
        "checked {} events, {} transfers, {} flights ({} acknowledged), {} deliveries, {} reads",
        log.len(),
        transactions.len(),
        log.iter().filter(|e| e["function"] == json!("planes")).count(),
        seen.len(),
        deliveries.len(),
        history.reads.len()
    );
}
