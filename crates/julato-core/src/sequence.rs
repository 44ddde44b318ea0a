//! The global order of the log. A [`Sequencer`] hands out log positions and event
//! times together, so that seq order and time order agree, and tracks which
//! positions are still in flight, so readers of the log never skip one that is
//! about to be committed.

use std::collections::BTreeSet;
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
    in_flight: BTreeSet<u64>,
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
            in_flight: BTreeSet::new(),
        };
        Self { state: Arc::new(Mutex::new(state)), clock }
    }

    /// Reserves the next seq and an event time no earlier than any handed out before.
    pub fn allocate(&self) -> Allocation {
        let reading = self.clock.now();
        let mut state = self.state.lock();
        let seq = state.next;
        state.next += 1;
        state.in_flight.insert(seq);
        let time = state.clock.tick(reading);
        Allocation { seq: Seq(seq), time }
    }

    /// Marks a reserved seq as settled: committed to the log, or given up because
    /// its event was rejected.
    pub fn settle(&self, seq: Seq) {
        self.state.lock().in_flight.remove(&seq.0);
    }

    /// Marks many reserved seqs as settled at once.
    pub fn settle_all(&self, seqs: impl IntoIterator<Item = Seq>) {
        let mut state = self.state.lock();
        for seq in seqs {
            state.in_flight.remove(&seq.0);
        }
    }

    /// The highest seq below which nothing is in flight: every event at or below
    /// it is either in the log or will never be.
    pub fn watermark(&self) -> Seq {
        let state = self.state.lock();
        match state.in_flight.first() {
            Some(&lowest) => Seq(lowest - 1),
            None => Seq(state.next - 1),
        }
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

        seqs.settle(b.seq);
        assert_eq!(seqs.watermark(), Seq(4));
        seqs.settle(a.seq);
        assert_eq!(seqs.watermark(), Seq(6));
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
        Settle { pick: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..1_000).prop_map(|clock| Step::Allocate { clock }),
            any::<usize>().prop_map(|pick| Step::Settle { pick }),
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
                    Step::Settle { pick } => {
                        if !open.is_empty() {
                            let seq = *open.iter().nth(pick % open.len()).unwrap();
                            open.remove(&seq);
                            seqs.settle(Seq(seq));
                        }
                    }
                }
                let now = seqs.watermark();
                prop_assert!(now >= watermark);
                if let Some(&lowest) = open.first() {
                    prop_assert_eq!(now.0, lowest - 1);
                } else {
                    prop_assert_eq!(now, last.seq);
                }
                watermark = now;
            }
        }
    }
}
