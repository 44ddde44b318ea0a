//! Rebuilds from snapshots against live folds, and point resolution against a
//! linear scan, for random histories.

use std::collections::BTreeMap;
use std::convert::Infallible;

use proptest::prelude::*;

use super::*;
use crate::{FunctionName, Payload, ProcessKey};

/// A deterministic fold whose state depends on every event and its order.
struct Mix;

impl Fold for Mix {
    type Error = Infallible;
    fn init(&mut self, function_version: FunctionVersion) -> Result<String, Infallible> {
        Ok(format!("[{}]", function_version.0))
    }
    fn apply(&mut self, event: &EventRecord, state: &str) -> Result<String, Infallible> {
        let Payload::Json(data) = &event.payload else { unreachable!() };
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in state.bytes().chain(data.bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        Ok(format!(
            "{{\"v\":{},\"h\":{hash},\"fv\":{}}}",
            event.version.0, event.function_version.0
        ))
    }
}

fn events(datas: &[(u8, u8, u64)]) -> Vec<EventRecord> {
    let mut seq = 0;
    let mut time = 1_000;
    let mut function_version = 1;
    datas
        .iter()
        .enumerate()
        .map(|(i, &(data, upgrade, gap))| {
            seq += 1 + gap;
            time += gap * 7 % 3;
            function_version += u32::from(upgrade % 5 == 0);
            EventRecord {
                seq: Seq(seq),
                function: FunctionName::new("f").unwrap(),
                key: ProcessKey::new("k").unwrap(),
                version: Version(i as u64 + 1),
                event_type: "E".into(),
                payload: Payload::Json(data.to_string()),
                time: EventTime(time),
                function_version: FunctionVersion(function_version),
                idempotency_key: None,
                causes: Vec::new(),
                transaction: None,
                origin: None,
                hops: 0,
                reply: None,
                emitted: Vec::new(),
            }
        })
        .collect()
}

struct Index<'a>(&'a [EventRecord]);

impl VersionIndex for Index<'_> {
    type Error = AsOfError;
    fn position(&self, version: Version) -> Result<(Seq, EventTime), AsOfError> {
        let e = &self.0[version.0 as usize - 1];
        Ok((e.seq, e.time))
    }
}

proptest! {
    /// For any history and snapshot interval, the state at every version is the
    /// same live, from the newest snapshot at or before it, and from full replay.
    #[test]
    fn snapshot_and_full_replay_agree_with_the_live_fold(
        datas in proptest::collection::vec((any::<u8>(), any::<u8>(), 0u64..4), 0..120),
        every in 0u64..17,
    ) {
        let log = events(&datas);
        let policy = SnapshotPolicy { every };
        let first = log.first().map_or(FunctionVersion(1), |e| e.function_version);

        // The live fold, taking snapshots as a shard would.
        let mut live = vec![Mix.init(first).unwrap()];
        let mut snapshots = BTreeMap::new();
        for event in &log {
            let next = Mix.apply(event, live.last().unwrap()).unwrap();
            if policy.due(event.version) {
                snapshots.insert(event.version, Snapshot {
                    version: event.version,
                    seq: event.seq,
                    time: event.time,
                    function_version: event.function_version,
                    state: next.clone(),
                });
            }
            live.push(next);
        }

        for target in 0..=log.len() as u64 {
            let target = Version(target);
            let snapshot = snapshots.range(..=target).next_back().map(|(_, s)| s.clone());
            let base = snapshot.as_ref().map_or(0, |s| s.version.0) as usize;
            let from_snapshot =
                rebuild(&mut Mix, target, snapshot, first, log[base..].iter().cloned()).unwrap();
            let full = rebuild(&mut Mix, target, None, first, log.iter().cloned()).unwrap();
            prop_assert_eq!(&from_snapshot.state, &live[target.0 as usize]);
            prop_assert_eq!(&full.state, &live[target.0 as usize]);
            prop_assert_eq!(full.replayed, target.0);
            prop_assert!(every == 0 || from_snapshot.replayed < every);
        }
    }

    /// Binary search over the index finds what a linear scan finds.
    #[test]
    fn points_resolve_like_a_linear_scan(
        datas in proptest::collection::vec((any::<u8>(), any::<u8>(), 0u64..4), 0..80),
        probe in 0u64..400,
    ) {
        let log = events(&datas);
        let newest = Version(log.len() as u64);
        let end = Seq(log.last().map_or(0, |e| e.seq.0) + 3);
        let index = Index(&log);

        let by_seq = log.iter().filter(|e| e.seq.0 <= probe).count() as u64;
        let by_time = log.iter().filter(|e| e.time.0 <= probe + 990).count() as u64;
        if Seq(probe) <= end {
            prop_assert_eq!(resolve(&index, newest, end, AsOf::Seq(Seq(probe))), Ok(Version(by_seq)));
        } else {
            prop_assert!(resolve(&index, newest, end, AsOf::Seq(Seq(probe))).is_err());
        }
        prop_assert_eq!(
            resolve(&index, newest, end, AsOf::Time(EventTime(probe + 990))),
            Ok(Version(by_time))
        );
    }
}

#[test]
fn version_bounds() {
    let log = events(&[(1, 1, 1), (2, 1, 1), (3, 1, 1)]);
    let index = Index(&log);
    let end = Seq(3);
    assert_eq!(resolve(&index, Version(3), end, AsOf::Version(Version(0))), Ok(Version(0)));
    assert_eq!(resolve(&index, Version(3), end, AsOf::Version(Version(3))), Ok(Version(3)));
    assert_eq!(
        resolve(&index, Version(3), end, AsOf::Version(Version(4))),
        Err(AsOfError::VersionOutOfRange { asked: Version(4), newest: Version(3) })
    );
    // A time equal to an event's time includes it; one before the first gives 0;
    // one in the future gives the newest.
    let t2 = log[1].time;
    assert_eq!(resolve(&index, Version(3), end, AsOf::Time(t2)), Ok(Version(2)));
    assert_eq!(resolve(&index, Version(3), end, AsOf::Time(EventTime(0))), Ok(Version(0)));
    assert_eq!(resolve(&index, Version(3), end, AsOf::Time(EventTime(u64::MAX))), Ok(Version(3)));
}

#[test]
fn a_gap_in_the_replayed_events_is_an_error() {
    let log = events(&[(1, 1, 0), (2, 1, 0), (3, 1, 0)]);
    let skipping = vec![log[0].clone(), log[2].clone()];
    let err = rebuild(&mut Mix, Version(3), None, FunctionVersion(1), skipping).unwrap_err();
    assert_eq!(err, RebuildError::Gap { missing: Version(2) });
}

#[test]
fn the_policy_snapshots_every_nth_version() {
    let policy = SnapshotPolicy { every: 3 };
    let due: Vec<u64> = (0..10).filter(|&v| policy.due(Version(v))).collect();
    assert_eq!(due, vec![3, 6, 9]);
    assert!(!SnapshotPolicy { every: 0 }.due(Version(5)));
}
