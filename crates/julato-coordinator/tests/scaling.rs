//! Coordinator-level tests of the autoscaler's moves: partitions handed from
//! shard to shard, shards added and retired, all while clients send, never
//! apply a process on two shards at once, never lose or reorder an event, and
//! never show a reader a state that was not committed.
//!
//! Needs the example components: run `make functions` first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use julato_coordinator::{Config, Coordinator, SendRequest};
use julato_core::{FunctionName, Payload, ProcessId, ProcessKey, Version};
use julato_manager::Decision;
use julato_manager::routing::{PARTITIONS, Partition};

const CLIENTS: usize = 6;
const KEYS: usize = 40;

fn counter_wasm() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/functions/counter.wasm");
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make functions` first", path.display()))
}

fn process(key: usize) -> ProcessId {
    ProcessId::new(
        FunctionName::new("counter").expect("a function name"),
        ProcessKey::new(format!("k{key}")).expect("a process key"),
    )
}

fn say(key: usize, text: &str) -> SendRequest {
    let payload = Payload::Json(serde_json::json!({ "text": text }).to_string());
    SendRequest::new(process(key), "Say", payload)
}

fn open(dir: &Path) -> Arc<Coordinator> {
    let mut config = Config::new(PathBuf::from(dir));
    config.shards = 2;
    config.scaling.min_shards = 1;
    config.scaling.max_shards = 4;
    // Moves come from the test only.
    config.scaling.interval = None;
    config.idle_eviction = None;
    Arc::new(Coordinator::open(config).expect("opening a coordinator"))
}

/// Every partition `from` owns whose number is `p % modulus == rest`.
fn some_of(coordinator: &Coordinator, from: usize, modulus: u32, rest: u32) -> Vec<Partition> {
    (0..PARTITIONS as u32)
        .map(Partition)
        .filter(|p| p.0 % modulus == rest && coordinator.partition_owner(*p) == from)
        .collect()
}

#[test]
fn moves_under_load_keep_every_process_gapless_and_in_order() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let coordinator = open(dir.path());
    coordinator.deploy(&FunctionName::new("counter").unwrap(), counter_wasm()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (coordinator, stop) = (coordinator.clone(), stop.clone());
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                // (key, the version each accepted event got), in send order.
                let mut sent: Vec<(usize, Version, String)> = Vec::new();
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let key = (client * 7 + n * 13) % KEYS;
                    let text = format!("c{client}-{n}");
                    if n % 5 == 4 {
                        // A bulk of two events to one process keeps their order.
                        let answers = handle.block_on(
                            coordinator
                                .send_many(vec![say(key, &text), say(key, &format!("{text}b"))]),
                        );
                        for (answer, t) in
                            answers.into_iter().zip([text.clone(), format!("{text}b")])
                        {
                            let applied = answer.unwrap_or_else(|e| panic!("bulk to k{key}: {e}"));
                            sent.push((key, applied.version, t));
                        }
                    } else {
                        let applied = handle
                            .block_on(coordinator.send(say(key, &text)))
                            .unwrap_or_else(|e| panic!("send to k{key}: {e} ({})", e.code()));
                        sent.push((key, applied.version, text));
                    }
                    n += 1;
                }
                sent
            })
        })
        .collect();

    // Shuffle partitions around while the clients send: add two shards,
    // move load back and forth, retire shards, ending on one.
    type Step = Box<dyn Fn(&Coordinator) -> Decision>;
    let reason = || "test".to_owned();
    let steps: Vec<Step> = vec![
        Box::new(move |c| Decision::Add {
            slot: 2,
            from: 0,
            partitions: some_of(c, 0, 2, 0),
            reason: reason(),
        }),
        Box::new(move |c| Decision::Add {
            slot: 3,
            from: 1,
            partitions: some_of(c, 1, 3, 1),
            reason: reason(),
        }),
        Box::new(move |c| Decision::Rebalance {
            from: 2,
            to: 1,
            partitions: some_of(c, 2, 2, 0),
            reason: reason(),
        }),
        Box::new(move |c| Decision::Rebalance {
            from: 1,
            to: 2,
            partitions: some_of(c, 1, 5, 3),
            reason: reason(),
        }),
    ];
    for step in steps {
        std::thread::sleep(Duration::from_millis(150));
        rt.block_on(coordinator.rescale(step(&coordinator))).expect("a decision carried out");
    }
    for retiring in [3, 2, 1] {
        std::thread::sleep(Duration::from_millis(150));
        let moves = (0..PARTITIONS as u32)
            .map(Partition)
            .filter(|p| coordinator.partition_owner(*p) == retiring)
            .map(|p| (p, 0))
            .collect();
        let record = rt
            .block_on(coordinator.rescale(Decision::Retire {
                slot: retiring,
                moves,
                reason: "test".into(),
            }))
            .expect("a retirement carried out");
        assert_eq!(record.shards, retiring, "running shards after retiring {retiring}");
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::SeqCst);
    let sent: Vec<_> = clients.into_iter().flat_map(|c| c.join().expect("a client")).collect();
    assert!(sent.len() > 100, "too little load to test anything: {} events", sent.len());

    let scaling = coordinator.scaling();
    assert_eq!((scaling.shards, scaling.added, scaling.retired, scaling.rebalanced), (1, 2, 3, 2));
    assert_eq!(coordinator.managers().len(), 1);

    // Every process: versions 1..=n with no gap and no repeat, each event's
    // text where the answer put it, and the state equal to the count.
    for key in 0..KEYS {
        let mut mine: Vec<_> = sent.iter().filter(|(k, ..)| *k == key).collect();
        mine.sort_by_key(|(_, version, _)| *version);
        let history =
            coordinator.history(&process(key), Version(1), None, 100_000).unwrap_or_default();
        assert_eq!(history.len(), mine.len(), "k{key}: stored events vs acknowledged");
        for (i, ((_, version, text), record)) in mine.iter().zip(&history).enumerate() {
            assert_eq!(version.0, i as u64 + 1, "k{key}: versions gapless");
            assert_eq!(record.version, *version);
            let data = match &record.payload {
                Payload::Json(json) => json.clone(),
                Payload::Bytes(_) => panic!("k{key}: bytes"),
            };
            assert!(
                data.contains(&format!("\"{text}\"")),
                "k{key} v{}: {data} is not {text}",
                version.0
            );
        }
        if !mine.is_empty() {
            let state = coordinator.state(&process(key)).expect("a state");
            assert_eq!(state.state, mine.len().to_string(), "k{key}: state");
        }
    }
    // Seqs strictly increase with versions within each process.
    for key in 0..KEYS {
        let history =
            coordinator.history(&process(key), Version(1), None, 100_000).unwrap_or_default();
        assert!(history.windows(2).all(|w| w[0].seq < w[1].seq), "k{key}: seq order");
    }
}
