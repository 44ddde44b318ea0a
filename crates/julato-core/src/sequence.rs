//! The global order of the log. A [`Sequencer`] hands out log positions and event
//! times together, so that seq order and time order agree, and tracks which
//! positions are still in flight, so readers of the log never skip one that is
//! about to be committed.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{Clock, EventTime, MonotonicClock, Seq};

/// A log position and event time reserved for one event being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub seq: Seq,
    pub time: EventTime,
}

struct State {
    next: u64,
    clock: MonotonicClock,
    /// Reserved seqs not yet settled, with their times.
    in_flight: BTreeMap<u64, EventTime>,
    /// The highest seq committed to the log. Seqs above it that were given up
    /// are never shown to readers, so after a restart nobody has seen them and
    /// handing them out again is harmless.
    committed: u64,
}

/// Hands out seqs and times; cheap to clone, shared by every process manager.
#[derive(Clone)]
pub struct Sequencer {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

impl Sequencer {
    /// Continues after the newest committed event (`last_seq`, `last_time`).
    pub fn new(last_seq: Seq, last_time: EventTime, clock: Arc<dyn Clock>) -> Self {
        let state = State {
            next: last_seq.0 + 1,
            clock: MonotonicClock::starting_after(last_time),
            in_flight: BTreeMap::new(),
            committed: last_seq.0,
        };
        Self { state: Arc::new(Mutex::new(state)), clock }
    }

    /// Reserves the next seq and an event time no earlier than any handed out before.
    pub fn allocate(&self) -> Allocation {
        let reading = self.clock.now();
        let mut state = self.state.lock();
        let seq = state.next;
        state.next += 1;
        let time = state.clock.tick(reading);
        state.in_flight.insert(seq, time);
        Allocation { seq: Seq(seq), time }
    }

    /// Reserves `n` consecutive seqs, with their times, at once: a
    /// transaction's events take them, so that no other event's seq falls
    /// between two of its own and the watermark, a prefix of the log, never
    /// ends inside it.
    pub fn allocate_many(&self, n: usize) -> Vec<Allocation> {
        let reading = self.clock.now();
        let mut state = self.state.lock();
        (0..n)
            .map(|_| {
                let seq = state.next;
                state.next += 1;
                let time = state.clock.tick(reading);
                state.in_flight.insert(seq, time);
                Allocation { seq: Seq(seq), time }
            })
            .collect()
    }

    /// Marks a reserved seq as given up: its event was rejected or its commit
    /// failed, so it will never be in the log.
    pub fn settle(&self, seq: Seq) {
        self.state.lock().in_flight.remove(&seq.0);
    }

    /// Marks many reserved seqs as given up at once.
    pub fn settle_all(&self, seqs: impl IntoIterator<Item = Seq>) {
        let mut state = self.state.lock();
        for seq in seqs {
            state.in_flight.remove(&seq.0);
        }
    }

    /// Marks reserved seqs as committed: their events are durable in the log.
    pub fn commit_all(&self, seqs: impl IntoIterator<Item = Seq>) {
        let mut state = self.state.lock();
        for seq in seqs {
            state.in_flight.remove(&seq.0);
            state.committed = state.committed.max(seq.0);
        }
    }

    /// The log position readers may see: every event at or below it is either
    /// in the log or never will be, and it is never past the newest committed
    /// event, so no seq a reader was shown is ever handed out again, even after
    /// a restart forgets the seqs given up at the end.
    pub fn watermark(&self) -> Seq {
        let state = self.state.lock();
        let settled = match state.in_flight.first_key_value() {
            Some((&lowest, _)) => lowest - 1,
            None => state.next - 1,
        };
        Seq(settled.min(state.committed))
    }

    /// Whether an event with a time at or before `time` may still be committed:
    /// a read as of `time` must wait until this is false to be repeatable.
    pub fn unsettled_at_or_before(&self, time: EventTime) -> bool {
        let state = self.state.lock();
        // Times follow seqs, so the lowest seq in flight has the earliest time.
        state.in_flight.first_key_value().is_some_and(|(_, &t)| t <= time)
    }

    /// The newest event time handed out.
    pub fn last_time(&self) -> EventTime {
        self.state.lock().clock.last()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    struct Manual(AtomicU64);
    impl Clock for Manual {
        fn now(&self) -> EventTime {
            EventTime(self.0.load(Ordering::SeqCst))
        }
    }

    #[test]
    fn watermark_waits_for_the_lowest_in_flight_seq() {
        let clock = Arc::new(Manual(AtomicU64::new(10)));
        let seqs = Sequencer::new(Seq(4), EventTime(5), clock.clone());
        assert_eq!(seqs.watermark(), Seq(4));

        let a = seqs.allocate();
        let b = seqs.allocate();
        assert_eq!((a.seq, b.seq), (Seq(5), Seq(6)));
        assert_eq!(seqs.watermark(), Seq(4));

        seqs.commit_all([b.seq]);
        assert_eq!(seqs.watermark(), Seq(4));
        seqs.commit_all([a.seq]);
        assert_eq!(seqs.watermark(), Seq(6));

        // Given-up seqs at the end are never shown: the watermark stays at the
        // newest committed event until a later one commits.
        let c = seqs.allocate();
        let d = seqs.allocate();
        assert!(seqs.unsettled_at_or_before(c.time));
        seqs.settle(c.seq);
        assert_eq!(seqs.watermark(), Seq(6));
        seqs.commit_all([d.seq]);
        assert_eq!(seqs.watermark(), d.seq);
        assert!(!seqs.unsettled_at_or_before(d.time));
    }

    #[test]
    fn a_block_is_consecutive_and_no_watermark_ends_inside_it() {
        let clock = Arc::new(Manual(AtomicU64::new(10)));
        let seqs = Sequencer::new(Seq(0), EventTime(0), clock);
        let block = seqs.allocate_many(3);
        let other = seqs.allocate();
        let numbers: Vec<Seq> = block.iter().map(|a| a.seq).collect();
        assert_eq!(numbers, [Seq(1), Seq(2), Seq(3)]);
        assert_eq!(other.seq, Seq(4));
        assert!(block.windows(2).all(|w| w[0].time <= w[1].time) && block[2].time <= other.time);
        // Another event commits first: the watermark stays below the block.
        seqs.commit_all([other.seq]);
        assert_eq!(seqs.watermark(), Seq(0));
        // The block's last seq was not needed: given up, then the rest commits at once.
        seqs.settle(block[2].seq);
        assert_eq!(seqs.watermark(), Seq(0));
        seqs.commit_all([block[0].seq, block[1].seq]);
        assert_eq!(seqs.watermark(), Seq(4));
    }

    #[test]
    fn times_follow_seqs_even_when_the_clock_goes_back() {
        let clock = Arc::new(Manual(AtomicU64::new(1_000)));
        let seqs = Sequencer::new(Seq(0), EventTime(0), clock.clone());
        let first = seqs.allocate();
        clock.0.store(10, Ordering::SeqCst);
        let second = seqs.allocate();
        assert!(second.seq > first.seq);
        assert!(second.time >= first.time);
        assert_eq!(second.time, EventTime(1_000));
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicU64, Ordering};

    use proptest::prelude::*;

    use super::*;

    struct Jumpy(AtomicU64);
    impl Clock for Jumpy {
        fn now(&self) -> EventTime {
            EventTime(self.0.load(Ordering::SeqCst))
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Allocate { clock: u64 },
        Settle { pick: usize, commit: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..1_000).prop_map(|clock| Step::Allocate { clock }),
            (any::<usize>(), any::<bool>())
                .prop_map(|(pick, commit)| Step::Settle { pick, commit }),
        ]
    }

    proptest! {
        /// Whatever the order of allocations and settlements and however the
        /// clock jumps: seqs and times never decrease, and the watermark never
        /// passes a seq still in flight and never moves back.
        #[test]
        fn watermark_and_times_are_monotonic(steps in proptest::collection::vec(step(), 1..200)) {
            let clock = Arc::new(Jumpy(AtomicU64::new(0)));
            let seqs = Sequencer::new(Seq(10), EventTime(500), clock.clone());
            let mut open: BTreeSet<u64> = BTreeSet::new();
            let mut last = Allocation { seq: Seq(10), time: EventTime(500) };
            let mut watermark = seqs.watermark();
            let mut committed = 10;
            for step in steps {
                match step {
                    Step::Allocate { clock: reading } => {
                        clock.0.store(reading, Ordering::SeqCst);
                        let next = seqs.allocate();
                        prop_assert_eq!(next.seq.0, last.seq.0 + 1);
                        prop_assert!(next.time >= last.time);
                        open.insert(next.seq.0);
                        last = next;
                    }
                    Step::Settle { pick, commit } => {
                        if !open.is_empty() {
                            let seq = *open.iter().nth(pick % open.len()).unwrap();
                            open.remove(&seq);
                            if commit {
                                seqs.commit_all([Seq(seq)]);
                                committed = committed.max(seq);
                            } else {
                                seqs.settle(Seq(seq));
                            }
                        }
                    }
                }
                let now = seqs.watermark();
                prop_assert!(now >= watermark);
                let settled = open.first().map_or(last.seq.0, |&lowest| lowest - 1);
                prop_assert_eq!(now.0, settled.min(committed));
                watermark = now;
            }
        }
    }
}
