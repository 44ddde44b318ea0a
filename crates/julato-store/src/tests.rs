//! Store tests on a real data folder: round trips, group commit under
//! concurrency, recovery after reopening, the point-in-time reads (snapshots,
//! positions, the time search over the log) and restores.

use std::collections::BTreeSet;
use std::sync::Arc;

use julato_core::{
    Branch, Checkpoint, EventRecord, EventTime, FunctionName, FunctionVersion, Payload,
    ProcessHead, ProcessId, ProcessKey, Seq, Snapshot, Version,
};
use proptest::prelude::*;

use crate::{Commit, Restore, Store, decode_position, keys};

fn process(key: &str) -> ProcessId {
    ProcessId::new(FunctionName::new("counter").unwrap(), ProcessKey::new(key).unwrap())
}

fn record(process: &ProcessId, seq: u64, version: u64) -> EventRecord {
    record_at(process, seq, version, seq * 10)
}

fn record_at(process: &ProcessId, seq: u64, version: u64, time: u64) -> EventRecord {
    EventRecord {
        seq: Seq(seq),
        function: process.function.clone(),
        key: process.key.clone(),
        version: Version(version),
        event_type: "Say".into(),
        payload: Payload::Json(format!(r#"{{"text":"{seq}"}}"#)),
        time: EventTime(time),
        function_version: FunctionVersion(1),
        idempotency_key: None,
        causes: Vec::new(),
        transaction: None,
        origin: None,
        hops: 0,
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

fn snapshot(version: u64, state: &str) -> Snapshot {
    Snapshot {
        version: Version(version),
        seq: Seq(version * 2),
        time: EventTime(version * 20),
        function_version: FunctionVersion(1),
        state: state.into(),
    }
}

fn versions_of(records: &[EventRecord]) -> Vec<u64> {
    records.iter().map(|r| r.version.0).collect()
}

fn seqs_of(records: &[EventRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq.0).collect()
}

#[test]
fn snapshot_reads_pick_the_newest_at_or_before_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let a = process("a");
    // A key that extends `a` must not leak into `a`'s snapshot ranges.
    let ab = process("ab");
    {
        let store = Store::open(dir.path()).unwrap();
        let snapshots = vec![
            (a.clone(), snapshot(3, "a3")),
            (a.clone(), snapshot(5, "a5")),
            (a.clone(), snapshot(10, "a10")),
            (ab.clone(), snapshot(4, "ab4")),
        ];
        store.append(Commit { snapshots, ..Commit::default() }).unwrap();

        let at = |p: &ProcessId, v: u64| {
            store.snapshot_at_or_before(p, Version(v)).unwrap().map(|s| (s.version.0, s.state))
        };
        assert_eq!(at(&a, 0), None);
        assert_eq!(at(&a, 2), None, "no snapshot below the first");
        assert_eq!(at(&a, 3), Some((3, "a3".into())), "an exact hit");
        assert_eq!(at(&a, 4), Some((3, "a3".into())));
        assert_eq!(at(&a, 9), Some((5, "a5".into())));
        assert_eq!(at(&a, 10), Some((10, "a10".into())));
        assert_eq!(at(&a, u64::MAX), Some((10, "a10".into())));
        assert_eq!(at(&ab, 3), None);
        assert_eq!(at(&ab, 100), Some((4, "ab4".into())));
        assert_eq!(at(&process("b"), 100), None);
        assert_eq!(store.snapshot_at_or_before(&a, Version(3)).unwrap(), Some(snapshot(3, "a3")));

        let after = |p: &ProcessId, v: u64| {
            store
                .snapshot_versions_after(p, Version(v))
                .unwrap()
                .into_iter()
                .map(|v| v.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(after(&a, 0), vec![3, 5, 10]);
        assert_eq!(after(&a, 3), vec![5, 10], "strictly after");
        assert_eq!(after(&a, 4), vec![5, 10]);
        assert_eq!(after(&a, 10), Vec::<u64>::new());
        assert_eq!(after(&ab, 0), vec![4]);
        assert_eq!(after(&process("b"), 0), Vec::<u64>::new());

        // A snapshot at the same version overwrites the old one.
        let again = vec![(a.clone(), snapshot(5, "a5-again"))];
        store.append(Commit { snapshots: again, ..Commit::default() }).unwrap();
        assert_eq!(at(&a, 7), Some((5, "a5-again".into())));
        assert_eq!(after(&a, 0), vec![3, 5, 10]);
    }
    let store = Store::open(dir.path()).unwrap();
    let read = store.snapshot_at_or_before(&a, Version(9)).unwrap().unwrap();
    assert_eq!((read.version, read.state.as_str()), (Version(5), "a5-again"));
    assert_eq!(store.snapshot_versions_after(&a, Version(0)).unwrap().len(), 3);
}

#[test]
fn position_gives_seq_and_time_and_history_respects_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = process("a");
    let b = process("b");
    let records = vec![
        record_at(&a, 1, 1, 100),
        record_at(&b, 2, 1, 100),
        record_at(&a, 4, 2, 150),
        record_at(&a, 7, 3, 150),
        record_at(&b, 8, 2, 160),
        record_at(&a, 9, 4, 200),
    ];
    store.append(Commit { records, ..Commit::default() }).unwrap();

    let position = |p: &ProcessId, v: u64| store.position(p, Version(v)).unwrap();
    assert_eq!(position(&a, 1), Some((Seq(1), EventTime(100))));
    assert_eq!(position(&a, 2), Some((Seq(4), EventTime(150))));
    assert_eq!(position(&a, 3), Some((Seq(7), EventTime(150))));
    assert_eq!(position(&a, 4), Some((Seq(9), EventTime(200))));
    assert_eq!(position(&b, 2), Some((Seq(8), EventTime(160))));
    assert_eq!(position(&a, 0), None, "version 0 has no event");
    assert_eq!(position(&a, 5), None);
    assert_eq!(position(&process("c"), 1), None);

    let history = |p: &ProcessId, from: u64, to: u64, limit: usize| {
        store.history(p, Version(from), Version(to), limit).unwrap()
    };
    assert_eq!(versions_of(&history(&a, 1, u64::MAX, 10)), vec![1, 2, 3, 4]);
    assert_eq!(seqs_of(&history(&a, 1, u64::MAX, 10)), vec![1, 4, 7, 9]);
    assert_eq!(versions_of(&history(&a, 1, 2, 10)), vec![1, 2], "`to` is inclusive");
    assert_eq!(versions_of(&history(&a, 2, 3, 10)), vec![2, 3]);
    assert_eq!(versions_of(&history(&a, 3, 3, 10)), vec![3]);
    assert_eq!(versions_of(&history(&a, 0, 1, 10)), vec![1]);
    assert!(history(&a, 3, 2, 10).is_empty(), "from past to");
    assert!(history(&a, 0, 0, 10).is_empty());
    assert!(history(&a, 5, u64::MAX, 10).is_empty());
    assert_eq!(versions_of(&history(&a, 1, 4, 2)), vec![1, 2], "`limit` caps the page");
    assert_eq!(versions_of(&history(&b, 1, u64::MAX, 10)), vec![1, 2]);
    let second = &history(&a, 2, 2, 1)[0];
    assert_eq!((second.seq, second.time), (Seq(4), EventTime(150)));
}

/// The answer `last_seq_at_or_before` must give, by a linear scan: the newest
/// seq at or below `upto` whose time is at or before `time`, else 0.
fn scan_last_seq(log: &[(u64, u64)], time: u64, upto: u64) -> u64 {
    log.iter().filter(|&&(seq, t)| seq <= upto && t <= time).map(|&(seq, _)| seq).max().unwrap_or(0)
}

/// A store holding one event per `(seq, time)`, all of one process.
fn store_with_log(dir: &std::path::Path, log: &[(u64, u64)]) -> Store {
    let store = Store::open(dir).unwrap();
    let p = process("timed");
    let records = log
        .iter()
        .enumerate()
        .map(|(i, &(seq, time))| record_at(&p, seq, i as u64 + 1, time))
        .collect();
    store.append(Commit { records, ..Commit::default() }).unwrap();
    store
}

#[test]
fn last_seq_at_or_before_handles_gaps_equal_times_and_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    // Gaps in seq (2, 5, 6, 8..=9, 12..) and runs of equal times.
    let log = [(1, 100), (3, 100), (4, 100), (7, 200), (10, 200), (11, 300)];
    let store = store_with_log(dir.path(), &log);
    let last =
        |time: u64, upto: u64| store.last_seq_at_or_before(EventTime(time), Seq(upto)).unwrap().0;

    assert_eq!(last(0, 11), 0, "before the first event");
    assert_eq!(last(99, 11), 0);
    assert_eq!(last(100, 11), 4, "the last of a run of equal times");
    assert_eq!(last(150, 11), 4);
    assert_eq!(last(200, 11), 10);
    assert_eq!(last(299, 11), 10);
    assert_eq!(last(300, 11), 11, "inclusive at the last event");
    assert_eq!(last(u64::MAX, 11), 11, "after the last event");
    assert_eq!(last(u64::MAX, 1000), 11, "`upto` past the tail");

    // `upto` below the tail, also inside a gap.
    assert_eq!(last(u64::MAX, 9), 7);
    assert_eq!(last(u64::MAX, 7), 7);
    assert_eq!(last(u64::MAX, 6), 4);
    assert_eq!(last(100, 3), 3);
    assert_eq!(last(100, 2), 1);
    assert_eq!(last(u64::MAX, 0), 0);
    assert_eq!(last(200, 8), 7);

    for time in [0, 99, 100, 101, 199, 200, 201, 300, 301, u64::MAX] {
        for upto in 0..=13 {
            assert_eq!(
                last(time, upto),
                scan_last_seq(&log, time, upto),
                "time {time} upto {upto}"
            );
        }
    }

    // Neighbours across gaps.
    let after = |seq: u64| store.event_at_or_after(Seq(seq)).unwrap().map(|r| r.seq.0);
    let before = |seq: u64| store.event_at_or_before(Seq(seq)).unwrap().map(|r| r.seq.0);
    assert_eq!(after(0), Some(1));
    assert_eq!(after(5), Some(7));
    assert_eq!(after(12), None);
    assert_eq!(before(0), None);
    assert_eq!(before(6), Some(4));
    assert_eq!(before(u64::MAX), Some(11));
}

#[test]
fn last_seq_at_or_before_on_an_empty_log_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_seq_at_or_before(EventTime(u64::MAX), Seq(u64::MAX)).unwrap(), Seq(0));
    assert_eq!(store.last_seq_at_or_before(EventTime(0), Seq(0)).unwrap(), Seq(0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The binary search agrees with a linear scan of the log for any log with
    /// seq gaps and non-decreasing times (often equal), at every time around
    /// each event and for `upto` anywhere from 0 past the tail.
    #[test]
    fn last_seq_at_or_before_agrees_with_a_linear_scan(
        steps in proptest::collection::vec((1u64..5, prop_oneof![3 => Just(0u64), 2 => 1u64..4]), 0..60),
        start in 0u64..3,
    ) {
        let mut log = Vec::with_capacity(steps.len());
        let (mut seq, mut time) = (start, 1_000u64);
        for (gap, dt) in steps {
            seq += gap;
            time += dt;
            log.push((seq, time));
        }
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_log(dir.path(), &log);
        let tail = log.last().map_or(0, |&(seq, _)| seq);

        // Every time around an event, and every `upto` around an event or a gap.
        let mut times = BTreeSet::from([0, 999, u64::MAX]);
        let mut uptos = BTreeSet::from([0, tail + 1, u64::MAX]);
        for &(seq, time) in &log {
            times.extend([time - 1, time, time + 1]);
            uptos.extend([seq - 1, seq, seq + 1]);
        }
        for &upto in &uptos {
            for &time in &times {
                let found = store.last_seq_at_or_before(EventTime(time), Seq(upto)).unwrap();
                prop_assert_eq!(found.0, scan_last_seq(&log, time, upto), "time {} upto {}", time, upto);
            }
        }
        prop_assert_eq!(store.last_seq_at_or_before(EventTime(999), Seq(u64::MAX)).unwrap(), Seq(0));
        prop_assert_eq!(store.last_seq_at_or_before(EventTime(u64::MAX), Seq(u64::MAX)).unwrap(), Seq(tail));
    }
}

fn checkpoint(id: u64, seq: u64, archived_by: Option<u64>) -> Checkpoint {
    Checkpoint {
        id,
        seq: Seq(seq),
        time: EventTime(seq * 10),
        taken_at: EventTime(seq * 10 + 1),
        processes: id,
        snapshots: id * 2,
        archived_by,
    }
}

fn head_at(version: u64, seq: u64, created: u64, updated: u64) -> ProcessHead {
    ProcessHead {
        version: Version(version),
        last_seq: Seq(seq),
        function_version: FunctionVersion(1),
        created: EventTime(created),
        updated: EventTime(updated),
    }
}

fn with_key(mut record: EventRecord, key: &str) -> EventRecord {
    record.idempotency_key = Some(key.into());
    record
}

#[test]
fn checkpoints_and_branches_round_trip_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = process("a");
    let first = checkpoint(1, 4, None);
    let second = checkpoint(2, 9, None);
    // Ids order numerically, not as text: 300 comes after 2.
    let third = checkpoint(300, 12, None);
    let branch = |id: u64, restored_to: u64, upto: u64| Branch {
        id,
        restored_to: Seq(restored_to),
        upto: Seq(upto),
        events: upto - restored_to,
        restored_at: EventTime(upto * 10 + 5),
    };
    {
        let store = Store::open(dir.path()).unwrap();
        assert!(store.checkpoints().unwrap().is_empty());
        assert!(store.branches().unwrap().is_empty());

        // A checkpoint's snapshots ride in the same commit.
        let commit = Commit {
            snapshots: vec![(a.clone(), snapshot(2, "cut"))],
            checkpoint: Some(first.clone()),
            ..Commit::default()
        };
        store.append(commit).unwrap();
        assert_eq!(store.snapshot_at_or_before(&a, Version(2)).unwrap().unwrap().state, "cut");
        for c in [&third, &second] {
            store.append(Commit { checkpoint: Some(c.clone()), ..Commit::default() }).unwrap();
        }
        assert_eq!(
            store.checkpoints().unwrap(),
            vec![first.clone(), second.clone(), third.clone()]
        );

        for b in [branch(1, 3, 9), branch(2, 1, 12)] {
            let restore = Restore { branch: Some(b), ..Restore::default() };
            store.append(Commit { restore: Some(restore), ..Commit::default() }).unwrap();
        }
        assert_eq!(store.branches().unwrap(), vec![branch(1, 3, 9), branch(2, 1, 12)]);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.checkpoints().unwrap(), vec![first.clone(), second.clone(), third.clone()]);
    assert_eq!(store.branches().unwrap(), vec![branch(1, 3, 9), branch(2, 1, 12)]);

    // A restore rewrites a checkpoint under the same id, in the same batch as its branch.
    let archived = Checkpoint { archived_by: Some(3), ..second.clone() };
    let restore = Restore {
        branch: Some(branch(3, 5, 14)),
        checkpoints: vec![archived.clone()],
        ..Restore::default()
    };
    store.append(Commit { restore: Some(restore), ..Commit::default() }).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.checkpoints().unwrap(), vec![first, archived, third]);
    assert_eq!(store.branches().unwrap().last().unwrap(), &branch(3, 5, 14));
    assert_eq!(store.branches().unwrap().len(), 3);
}

#[test]
fn restore_moves_versions_to_the_archive_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = process("a");
    let b = process("b");
    // `c` has only events after the restore point: it ends up with no head.
    let c = process("c");
    let branch = Branch {
        id: 1,
        restored_to: Seq(4),
        upto: Seq(8),
        events: 4,
        restored_at: EventTime(1_000),
    };
    {
        let store = Store::open(dir.path()).unwrap();
        let records = vec![
            with_key(record(&a, 1, 1), "a-kept"),
            record(&b, 2, 1),
            record(&a, 3, 2),
            record(&b, 4, 2),
            with_key(record(&a, 5, 3), "a-archived"),
            record(&b, 6, 3),
            record(&a, 7, 4),
            with_key(record(&c, 8, 1), "c-archived"),
        ];
        let answer =
            |p: &ProcessId, key: &str| (p.clone(), key.to_string(), key.as_bytes().to_vec());
        let commit = Commit {
            records,
            heads: vec![
                (a.clone(), head_at(4, 7, 10, 70)),
                (b.clone(), head_at(3, 6, 20, 60)),
                (c.clone(), head_at(1, 8, 80, 80)),
            ],
            idempotency: vec![
                answer(&a, "a-kept"),
                answer(&a, "a-archived"),
                answer(&c, "c-archived"),
            ],
            snapshots: vec![
                (a.clone(), snapshot(2, "a2")),
                (a.clone(), snapshot(4, "a4")),
                (b.clone(), snapshot(3, "b3")),
                (c.clone(), snapshot(1, "c1")),
            ],
            checkpoint: Some(checkpoint(1, 4, None)),
            ..Commit::default()
        };
        store.append(commit).unwrap();
        store
            .append(Commit { checkpoint: Some(checkpoint(2, 7, None)), ..Commit::default() })
            .unwrap();

        // Restore to seq 4: everything in 5..=8 leaves the live timeline.
        let restore = Restore {
            branch: Some(branch.clone()),
            archived: vec![
                (a.clone(), Version(3), Seq(5), EventTime(50)),
                (b.clone(), Version(3), Seq(6), EventTime(60)),
                (a.clone(), Version(4), Seq(7), EventTime(70)),
                (c.clone(), Version(1), Seq(8), EventTime(80)),
            ],
            heads: vec![
                (a.clone(), Some(head_at(2, 3, 10, 30))),
                (b.clone(), Some(head_at(2, 4, 20, 40))),
                (c.clone(), None),
            ],
            released_keys: vec![(a.clone(), "a-archived".into()), (c.clone(), "c-archived".into())],
            dropped_snapshots: vec![
                (a.clone(), Version(4)),
                (b.clone(), Version(3)),
                (c.clone(), Version(1)),
            ],
            checkpoints: vec![checkpoint(2, 7, Some(1))],
            ..Restore::default()
        };
        store.append(Commit { restore: Some(restore), ..Commit::default() }).unwrap();
        assert_restored(&store, &branch);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_restored(&store, &branch);

    // The live timeline goes on with new seqs; the archived versions are reused.
    let commit = Commit {
        records: vec![record(&a, 9, 3), record(&c, 10, 1)],
        heads: vec![(a.clone(), head_at(3, 9, 10, 90)), (c.clone(), head_at(1, 10, 100, 100))],
        ..Commit::default()
    };
    store.append(commit).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        seqs_of(&store.history(&a, Version(1), Version(u64::MAX), 10).unwrap()),
        vec![1, 3, 9]
    );
    assert_eq!(store.position(&a, Version(3)).unwrap(), Some((Seq(9), EventTime(90))));
    assert_eq!(seqs_of(&store.history(&c, Version(1), Version(u64::MAX), 10).unwrap()), vec![10]);
    // The archive still knows where the old versions were.
    let archived = store.tables.archive.get(keys::archived(1, &a.function, &a.key, Version(3)));
    let archived = archived.unwrap().map(|v| decode_position(&v).unwrap());
    assert_eq!(archived, Some((Seq(5), EventTime(50))));
    assert_eq!(store.tail().unwrap().0, Seq(10));
}

/// The state right after the restore of `restore_moves_versions_…`.
fn assert_restored(store: &Store, branch: &Branch) {
    let (a, b, c) = (process("a"), process("b"), process("c"));

    // Version entries: the kept ones stay, the archived ones are gone from the
    // live index and sit in the branch's archive with their seq and time.
    let history = |p: &ProcessId| store.history(p, Version(1), Version(u64::MAX), 10).unwrap();
    assert_eq!(seqs_of(&history(&a)), vec![1, 3]);
    assert_eq!(seqs_of(&history(&b)), vec![2, 4]);
    assert!(history(&c).is_empty());
    assert!(store.history(&a, Version(3), Version(4), 10).unwrap().is_empty());
    assert_eq!(store.position(&a, Version(2)).unwrap(), Some((Seq(3), EventTime(30))));
    assert_eq!(store.position(&a, Version(3)).unwrap(), None);
    assert_eq!(store.position(&a, Version(4)).unwrap(), None);
    assert_eq!(store.position(&b, Version(3)).unwrap(), None);
    assert_eq!(store.position(&c, Version(1)).unwrap(), None);
    let archived = |p: &ProcessId, v: u64| {
        let key = keys::archived(branch.id, &p.function, &p.key, Version(v));
        store.tables.archive.get(key).unwrap().map(|v| decode_position(&v).unwrap())
    };
    assert_eq!(archived(&a, 3), Some((Seq(5), EventTime(50))));
    assert_eq!(archived(&a, 4), Some((Seq(7), EventTime(70))));
    assert_eq!(archived(&b, 3), Some((Seq(6), EventTime(60))));
    assert_eq!(archived(&c, 1), Some((Seq(8), EventTime(80))));
    assert_eq!(archived(&a, 2), None);
    assert_eq!(store.tables.archive.iter().count(), 4);

    // No event record is touched.
    assert_eq!(
        seqs_of(&store.log(Seq(1), Seq(u64::MAX), 100).unwrap()),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(store.event(Seq(7)).unwrap().unwrap().version, Version(4));
    assert_eq!(store.tail().unwrap().0, Seq(8));

    // Heads rewritten, or removed for a process with nothing left.
    assert_eq!(store.head(&a).unwrap(), Some(head_at(2, 3, 10, 30)));
    assert_eq!(store.head(&b).unwrap(), Some(head_at(2, 4, 20, 40)));
    assert_eq!(store.head(&c).unwrap(), None);
    let listed: Vec<_> =
        store.processes(&a.function, None, 10).unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(listed, vec![a.key.clone(), b.key.clone()]);

    // Keys used only by archived events are released; the others stay.
    assert_eq!(store.idempotent_answer(&a, "a-kept").unwrap().unwrap(), b"a-kept");
    assert_eq!(store.idempotent_answer(&a, "a-archived").unwrap(), None);
    assert_eq!(store.idempotent_answer(&c, "c-archived").unwrap(), None);

    // Snapshots of archived versions are dropped.
    let snap = |p: &ProcessId| {
        store.snapshot_at_or_before(p, Version(u64::MAX)).unwrap().map(|s| s.version.0)
    };
    assert_eq!(snap(&a), Some(2));
    assert_eq!(snap(&b), None);
    assert_eq!(snap(&c), None);
    assert_eq!(store.snapshot_versions_after(&a, Version(0)).unwrap(), vec![Version(2)]);

    // The checkpoint past the point is rewritten as archived; the branch is recorded.
    assert_eq!(
        store.checkpoints().unwrap(),
        vec![checkpoint(1, 4, None), checkpoint(2, 7, Some(1))]
    );
    assert_eq!(store.branches().unwrap(), vec![branch.clone()]);
}
