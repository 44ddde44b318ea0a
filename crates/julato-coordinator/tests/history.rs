//! Coordinator-level tests of history: event times that never go backwards
//! under an injected clock (across reopens and restores too), and a property
//! test that every version of a process reads the same live, from snapshots
//! plus replay, and from a replay of the whole log.
//!
//! Needs the example components: run `make functions` first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use julato_coordinator::{Applied, Config, Coordinator, ProcessState, RestoreTarget, SendRequest};
use julato_core::{
    AsOf, Clock, EventTime, FunctionName, Payload, ProcessId, ProcessKey, Seq, SnapshotPolicy,
    Version,
};
use julato_executor::{Executor, Limits};
use julato_manager::{Catalog, Replayer};
use julato_store::Store;
use proptest::prelude::*;

/// Longest wait for a data folder that a dropped coordinator's threads still hold.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// A wall clock the test sets by hand, backwards as well as forwards.
struct ManualClock(AtomicU64);

impl ManualClock {
    fn new(nanos: u64) -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(nanos)))
    }

    fn set(&self, nanos: u64) {
        self.0.store(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> EventTime {
        EventTime(self.0.load(Ordering::SeqCst))
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bytes of `target/functions/counter.wasm`.
fn counter_wasm() -> Vec<u8> {
    let path = workspace_root().join("target/functions/counter.wasm");
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make functions` first", path.display()))
}

fn counter() -> FunctionName {
    FunctionName::new("counter").expect("a function name")
}

fn process(key: &str) -> ProcessId {
    ProcessId::new(counter(), ProcessKey::new(key).expect("a process key"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A coordinator on `dir`; retries for a while when a coordinator dropped just
/// before still holds the folder.
fn open(dir: &Path, clock: Arc<dyn Clock>, every: u64) -> Arc<Coordinator> {
    let deadline = Instant::now() + REOPEN_TIMEOUT;
    loop {
        let mut config = Config::new(dir);
        config.shards = 2;
        config.clock = clock.clone();
        config.snapshots = SnapshotPolicy { every };
        config.idle_eviction = None;
        match Coordinator::open(config) {
            Ok(coordinator) => return Arc::new(coordinator),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => {
                panic!("cannot open {} within {REOPEN_TIMEOUT:?}: {error}", dir.display())
            }
        }
    }
}

/// Drops the last handle of a coordinator.
fn close(coordinator: Arc<Coordinator>) {
    match Arc::try_unwrap(coordinator) {
        Ok(coordinator) => drop(coordinator),
        Err(_) => panic!("the coordinator is still shared"),
    }
}

fn say_request(key: &str, text: &str) -> SendRequest {
    let payload = Payload::Json(serde_json::json!({ "text": text }).to_string());
    SendRequest::new(process(key), "Say", payload)
}

fn say(rt: &tokio::runtime::Runtime, coordinator: &Coordinator, key: &str, text: &str) -> Applied {
    rt.block_on(coordinator.send(say_request(key, text)))
        .unwrap_or_else(|e| panic!("sending to {key}: {e} ({})", e.code()))
}

#[track_caller]
fn read_at(coordinator: &Coordinator, key: &str, point: AsOf) -> ProcessState {
    coordinator
        .state_at(&process(key), point)
        .unwrap_or_else(|e| panic!("reading {key} at {point:?}: {e} ({})", e.code()))
}

/// One accepted event as the test saw it.
#[derive(Debug, Clone)]
struct Sent {
    key: &'static str,
    version: Version,
    seq: Seq,
    time: EventTime,
}

/// The version of `key` a time names: how many of its live events are at or before it.
fn expected_at(sent: &[Sent], key: &str, time: EventTime) -> Version {
    Version(sent.iter().filter(|s| s.key == key && s.time <= time).count() as u64)
}

/// Checks that `key`'s live history is exactly `sent` (its part), gapless, with
/// times that never decrease; and that every point of time names the right version.
#[track_caller]
fn check_times(coordinator: &Coordinator, sent: &[Sent], key: &'static str) {
    let mine: Vec<&Sent> = sent.iter().filter(|s| s.key == key).collect();
    let history = coordinator.history(&process(key), Version(1), None, 1000).expect("a history");
    assert_eq!(history.len(), mine.len(), "{key}: history length");
    let mut last = EventTime(0);
    for (i, (record, sent)) in history.iter().zip(&mine).enumerate() {
        assert_eq!(record.version, Version(i as u64 + 1), "{key}: versions must be gapless");
        assert_eq!((record.seq, record.time), (sent.seq, sent.time), "{key} v{}", i + 1);
        assert!(record.time >= last, "{key}: time went back at v{}", i + 1);
        last = record.time;
    }
    for s in &mine {
        let at = read_at(coordinator, key, AsOf::Time(s.time));
        let want = expected_at(sent, key, s.time);
        assert!(want >= s.version, "an event at exactly `at` is included");
        assert_eq!(at.head.version, want, "{key} at the time of v{}", s.version.0);
        assert_eq!(at.state, want.0.to_string(), "{key} at the time of v{}", s.version.0);
        let before = EventTime(s.time.0 - 1);
        let want = expected_at(sent, key, before);
        assert_eq!(read_at(coordinator, key, AsOf::Time(before)).head.version, want);
    }
}

/// Event times never go backwards when the wall clock does: not within a run,
/// not across a reopen with the clock set back further, not after a restore;
/// and `at` reads and restores by time resolve events that share a time.
#[test]
fn event_times_never_decrease_when_the_clock_goes_back() {
    const T0: u64 = 1_750_000_000_000_000_000;
    const SECOND: u64 = 1_000_000_000;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let clock = ManualClock::new(T0);
    let coordinator = open(dir.path(), clock.clone(), 3);
    coordinator.deploy(&counter(), counter_wasm()).expect("deploying counter");

    // Readings of the wall clock before each send, and the process it goes to.
    let steps: [(u64, &'static str); 9] = [
        (T0, "a"),
        (T0 - SECOND, "a"),
        (T0 - 2 * SECOND, "b"),
        (T0 + 5, "a"),
        (T0 + 3, "b"),
        (T0 + 3, "a"),
        (T0 + 100, "b"),
        (T0 - 3600 * SECOND, "a"),
        (T0 + 101, "a"),
    ];
    let mut sent: Vec<Sent> = Vec::new();
    let mut last = EventTime(0);
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, (reading, key)) in steps.iter().enumerate() {
        clock.set(*reading);
        let applied = say(&rt, &coordinator, key, &format!("step {i}"));
        // The later of the clock and the previous event's time.
        assert_eq!(applied.time, EventTime((*reading).max(last.0)), "step {i}");
        if let Some(previous) = sent.last() {
            assert!(applied.seq > previous.seq, "step {i}: seqs must increase");
        }
        let version = versions.entry(key).or_default();
        *version += 1;
        assert_eq!(applied.version, Version(*version), "step {i}");
        last = applied.time;
        sent.push(Sent { key, version: applied.version, seq: applied.seq, time: applied.time });
    }
    // The first two of `a` share a time: `at` that time includes both.
    assert_eq!(read_at(&coordinator, "a", AsOf::Time(EventTime(T0))).head.version, Version(2));
    assert_eq!(read_at(&coordinator, "a", AsOf::Time(EventTime(T0 - 1))).head.version, Version(0));
    assert_eq!(read_at(&coordinator, "b", AsOf::Time(EventTime(T0))).head.version, Version(1));
    check_times(&coordinator, &sent, "a");
    check_times(&coordinator, &sent, "b");
    let log = coordinator.log(Seq(1), 1000, None).expect("the log");
    assert_eq!(
        log.iter().map(|r| r.seq).collect::<Vec<_>>(),
        sent.iter().map(|s| s.seq).collect::<Vec<_>>()
    );
    assert!(log.windows(2).all(|w| w[0].time <= w[1].time), "log times must not decrease");

    // Reopen with the clock an hour before anything in the log.
    rt.block_on(coordinator.evict_all());
    close(coordinator);
    clock.set(T0 - 7200 * SECOND);
    let coordinator = open(dir.path(), clock.clone(), 3);
    let applied = say(&rt, &coordinator, "b", "after reopen");
    assert_eq!(applied.time, last, "a reopened log goes on from its newest time");
    assert!(applied.seq > sent.last().expect("events").seq);
    assert_eq!(applied.version, Version(4));
    sent.push(Sent { key: "b", version: applied.version, seq: applied.seq, time: applied.time });
    check_times(&coordinator, &sent, "a");
    check_times(&coordinator, &sent, "b");

    // Restore by time to T0: keeps every event stamped T0 or earlier, three of
    // them sharing that time.
    let report = rt
        .block_on(coordinator.restore(RestoreTarget::Time(EventTime(T0))))
        .expect("a restore by time");
    assert_eq!(report.restored_to, sent[2].seq, "the last event at T0 is the third");
    let branch = report.branch.clone().expect("events were archived");
    assert_eq!((branch.id, branch.restored_to), (1, sent[2].seq));
    assert_eq!(branch.events, sent.len() as u64 - 3);
    assert_eq!(report.processes, 2);
    sent.truncate(3);
    assert_eq!(coordinator.state(&process("a")).expect("a").head.version, Version(2));
    assert_eq!(coordinator.state(&process("b")).expect("b").state, "1");
    check_times(&coordinator, &sent, "a");
    check_times(&coordinator, &sent, "b");

    // The clock further back still: new events get the newest time ever used,
    // archived events included, and reopening keeps all of it.
    clock.set(T0 - 10_000 * SECOND);
    let applied = say(&rt, &coordinator, "a", "after restore");
    assert_eq!((applied.version, applied.time), (Version(3), last));
    sent.push(Sent { key: "a", version: applied.version, seq: applied.seq, time: applied.time });
    close(coordinator);
    let coordinator = open(dir.path(), clock.clone(), 3);
    let applied = say(&rt, &coordinator, "b", "after the second reopen");
    assert_eq!((applied.version, applied.time), (Version(2), last));
    sent.push(Sent { key: "b", version: applied.version, seq: applied.seq, time: applied.time });
    check_times(&coordinator, &sent, "a");
    check_times(&coordinator, &sent, "b");
    assert_eq!(read_at(&coordinator, "a", AsOf::Time(EventTime(T0))).head.version, Version(2));
    assert_eq!(read_at(&coordinator, "a", AsOf::Time(last)).head.version, Version(3));
    let live = coordinator.log(Seq(1), 1000, None).expect("the live log");
    assert_eq!(
        live.iter().map(|r| r.seq).collect::<Vec<_>>(),
        sent.iter().map(|s| s.seq).collect::<Vec<_>>()
    );
    close(coordinator);
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Step {
    Say { process: usize, text: String },
    Evict,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..3usize, "[a-z0-9 ]{0,6}").prop_map(|(process, text)| Step::Say { process, text }),
        1 => Just(Step::Evict),
    ]
}

/// A data folder whose compile cache already holds the counter, so each case
/// loads machine code instead of compiling it again.
fn template() -> &'static tempfile::TempDir {
    static TEMPLATE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let coordinator = open(dir.path(), Arc::new(julato_core::SystemClock), 0);
        coordinator.deploy(&counter(), counter_wasm()).expect("deploying counter");
        close(coordinator);
        dir
    })
}

fn copy_cache(to: &Path) {
    let from = template().path().join("cache");
    let into = to.join("cache");
    std::fs::create_dir_all(&into).expect("a cache folder");
    for entry in std::fs::read_dir(&from).expect("the template's cache") {
        let entry = entry.expect("a cache entry");
        std::fs::copy(entry.path(), into.join(entry.file_name())).expect("copying the cache");
    }
}

/// Opens the bare store and catalog of a closed data folder for replays.
fn replayer(dir: &Path) -> Replayer {
    let deadline = Instant::now() + REOPEN_TIMEOUT;
    let store = loop {
        match Store::open(dir) {
            Ok(store) => break store,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => panic!("cannot open the store within {REOPEN_TIMEOUT:?}: {error}"),
        }
    };
    let executor =
        Arc::new(Executor::new(&dir.join("cache"), Limits::default()).expect("an executor"));
    let catalog = Arc::new(Catalog::open(store.clone(), executor).expect("the catalog"));
    Replayer::new(store, catalog)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// For random sends to one to three processes, random snapshot intervals
    /// and evictions at random moments, the state at every version is the same
    /// byte for byte: as answered when it was made, as read back through
    /// snapshots and replay, and as replayed from the first event.
    #[test]
    fn every_version_reads_the_same_three_ways(
        processes in 1..=3usize,
        every in 0..=7u64,
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let rt = runtime();
        let dir = tempfile::tempdir().expect("a temporary folder");
        copy_cache(dir.path());
        let coordinator = open(dir.path(), Arc::new(julato_core::SystemClock), every);
        coordinator.deploy(&counter(), counter_wasm()).expect("deploying counter");

        const KEYS: [&str; 3] = ["p0", "p1", "p2"];
        // Per process: the state answered at each version, version 0 first.
        let mut live: Vec<Vec<String>> = vec![vec!["0".to_owned()]; processes];
        let mut replies: Vec<Vec<Option<String>>> = vec![Vec::new(); processes];
        // Per process: versions an eviction left a snapshot of.
        let mut snapshotted: Vec<std::collections::BTreeSet<u64>> =
            vec![Default::default(); processes];
        for step in &steps {
            match step {
                Step::Say { process: p, text } => {
                    let p = p % processes;
                    let applied = say(&rt, &coordinator, KEYS[p], text);
                    prop_assert_eq!(applied.version, Version(live[p].len() as u64));
                    live[p].push(applied.state.clone());
                    replies[p].push(applied.reply.clone());
                }
                Step::Evict => {
                    let resident = live.iter().filter(|states| states.len() > 1).count();
                    let evicted = rt.block_on(coordinator.evict_all());
                    prop_assert!(evicted <= resident, "evicted {} of {}", evicted, resident);
                    for (p, states) in live.iter().enumerate() {
                        if states.len() > 1 {
                            snapshotted[p].insert(states.len() as u64 - 1);
                        }
                    }
                }
            }
        }

        for (p, states) in live.iter().enumerate() {
            let key = KEYS[p];
            let newest = Version(states.len() as u64 - 1);
            if newest == Version(0) {
                let missing = coordinator.state(&process(key)).map(|_| ()).unwrap_err();
                prop_assert_eq!(missing.code(), "process_not_found");
                continue;
            }
            let history =
                coordinator.history(&process(key), Version(1), None, 1000).expect("a history");
            let versions: Vec<u64> = history.iter().map(|r| r.version.0).collect();
            prop_assert_eq!(versions, (1..=newest.0).collect::<Vec<_>>());
            let logged: Vec<Option<String>> = history.iter().map(|r| r.reply.clone()).collect();
            prop_assert_eq!(&logged, &replies[p]);
            let now = coordinator.state(&process(key)).expect("a state");
            prop_assert_eq!(&now.state, &states[newest.0 as usize]);
            for (v, state) in states.iter().enumerate() {
                let read = read_at(&coordinator, key, AsOf::Version(Version(v as u64)));
                prop_assert_eq!(&read.state, state, "{} v{} (snapshots every {})", key, v, every);
                prop_assert_eq!(read.head.version, Version(v as u64));
                prop_assert_eq!(read.newest, newest);
            }
        }
        close(coordinator);

        // The same folder, closed: snapshots plus replay, and replay from the start.
        let replayer = replayer(dir.path());
        for (p, states) in live.iter().enumerate() {
            let key = KEYS[p];
            for (v, state) in states.iter().enumerate().skip(1) {
                let target = Version(v as u64);
                let rebuilt = replayer.rebuild(&process(key), target).expect("a rebuild");
                prop_assert_eq!(&rebuilt.state, state, "{} rebuilt at version {}", key, v);
                // Snapshots every `every` versions and at each eviction; a
                // rebuild starts from the newest at or before its target.
                let by_interval = (v as u64).checked_div(every).map_or(0, |n| n * every);
                let by_eviction =
                    snapshotted[p].range(..=v as u64).next_back().copied().unwrap_or(0);
                let newest = by_interval.max(by_eviction);
                let expected = (newest > 0).then_some(Version(newest));
                prop_assert_eq!(rebuilt.from_snapshot, expected, "{} at version {}", key, v);
                prop_assert_eq!(rebuilt.replayed, v as u64 - newest);
                let replayed = replayer.replay_from_start(&process(key), target).expect("a replay");
                prop_assert_eq!(&replayed.state, state, "{} replayed at version {}", key, v);
                prop_assert_eq!(replayed.from_snapshot, None);
                prop_assert_eq!(replayed.replayed, v as u64);
            }
        }
    }
}
