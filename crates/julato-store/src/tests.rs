//! Store tests on a real data folder: round trips, group commit under
//! concurrency, and recovery after reopening.

use std::sync::Arc;

use julato_core::{
    EventRecord, EventTime, FunctionName, FunctionVersion, Payload, ProcessHead, ProcessId,
    ProcessKey, Seq, Version,
};

use crate::{Commit, Store};

fn process(key: &str) -> ProcessId {
    ProcessId::new(FunctionName::new("counter").unwrap(), ProcessKey::new(key).unwrap())
}

fn record(process: &ProcessId, seq: u64, version: u64) -> EventRecord {
    EventRecord {
        seq: Seq(seq),
        function: process.function.clone(),
        key: process.key.clone(),
        version: Version(version),
        event_type: "Say".into(),
        payload: Payload::Json(format!(r#"{{"text":"{seq}"}}"#)),
        time: EventTime(seq * 10),
        function_version: FunctionVersion(1),
        idempotency_key: None,
        causes: Vec::new(),
        reply: None,
        emitted: Vec::new(),
    }
}

fn head(version: u64, seq: u64) -> ProcessHead {
    ProcessHead {
        version: Version(version),
        last_seq: Seq(seq),
        function_version: FunctionVersion(1),
        created: EventTime(0),
        updated: EventTime(seq * 10),
    }
}

fn commit_one(store: &Store, p: &ProcessId, seq: u64, version: u64) {
    let commit = Commit {
        records: vec![record(p, seq, version)],
        heads: vec![(p.clone(), head(version, seq))],
        ..Commit::default()
    };
    store.append(commit).unwrap();
}

#[test]
fn events_round_trip_through_log_history_and_heads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = process("a");
    let b = process("b");
    commit_one(&store, &a, 1, 1);
    commit_one(&store, &b, 2, 1);
    commit_one(&store, &a, 3, 2);

    assert_eq!(store.tail().unwrap().0, Seq(3));
    let log = store.log(Seq(1), Seq(3), 10).unwrap();
    assert_eq!(log.iter().map(|r| r.seq.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(store.log(Seq(2), Seq(2), 10).unwrap().len(), 1);

    let history = store.history(&a, Version(1), Version(u64::MAX), 10).unwrap();
    assert_eq!(history.iter().map(|r| r.version.0).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(store.history(&a, Version(2), Version(u64::MAX), 10).unwrap()[0].seq, Seq(3));
    assert_eq!(store.head(&a).unwrap().unwrap().version, Version(2));
    assert!(store.head(&process("c")).unwrap().is_none());

    let listed = store.processes(&a.function, None, 10).unwrap();
    assert_eq!(listed.len(), 2);
    let after_a = store.processes(&a.function, Some(&a.key), 10).unwrap();
    assert_eq!(after_a.len(), 1);
    assert_eq!(after_a[0].0, b.key);
}

#[test]
fn concurrent_writers_share_fsyncs_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let p = process(&format!("p{t}"));
                    for v in 1..=50u64 {
                        commit_one(&store, &p, t * 1000 + v, v);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (fsyncs, commits) = store.commit_stats();
        assert_eq!(commits, 400);
        assert!(fsyncs <= commits);
    }
    let store = Store::open(dir.path()).unwrap();
    for t in 0..8u64 {
        let p = process(&format!("p{t}"));
        assert_eq!(store.head(&p).unwrap().unwrap().version, Version(50));
        let versions: Vec<u64> = store
            .history(&p, Version(1), Version(u64::MAX), 100)
            .unwrap()
            .iter()
            .map(|r| r.version.0)
            .collect();
        assert_eq!(versions, (1..=50).collect::<Vec<_>>());
    }
}

#[test]
fn idempotency_answers_are_kept_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = process("a");
    let commit = Commit {
        idempotency: vec![(a.clone(), "retry-1".into(), b"answer".to_vec())],
        ..Commit::default()
    };
    store.append(commit).unwrap();
    assert_eq!(store.idempotent_answer(&a, "retry-1").unwrap().unwrap(), b"answer");
    assert!(store.idempotent_answer(&process("b"), "retry-1").unwrap().is_none());
}
