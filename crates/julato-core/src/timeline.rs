//! Timelines of the log. A point-in-time restore never deletes an event: the
//! events after the restore point become an archived branch, and the live
//! timeline goes on from the restored point with new, higher seqs. A
//! [`Timeline`] knows which seq ranges are archived and by which restore.

use serde::{Deserialize, Serialize};

use crate::{EventTime, Seq};

/// One restore: the live events in `(restored_to, upto]` left the timeline and
/// became branch `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// 1, 2, 3 … in the order restores happened.
    pub id: u64,
    /// The log position the live timeline went back to.
    pub restored_to: Seq,
    /// The newest seq when the restore happened; nothing above it is archived.
    pub upto: Seq,
    /// Live events archived by this restore.
    pub events: u64,
    /// Wall-clock time of the restore.
    pub restored_at: EventTime,
}

impl Branch {
    fn covers(&self, seq: Seq) -> bool {
        self.restored_to < seq && seq <= self.upto
    }
}

/// Every restore so far, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    branches: Vec<Branch>,
}

impl Timeline {
    pub fn new(mut branches: Vec<Branch>) -> Self {
        branches.sort_by_key(|b| b.id);
        Self { branches }
    }

    pub fn branches(&self) -> &[Branch] {
        &self.branches
    }

    pub fn branch(&self, id: u64) -> Option<&Branch> {
        self.branches.iter().find(|b| b.id == id)
    }

    /// The id the next restore gets.
    pub fn next_id(&self) -> u64 {
        self.branches.last().map_or(1, |b| b.id + 1)
    }

    pub fn push(&mut self, branch: Branch) {
        self.branches.push(branch);
    }

    /// The branch an event belongs to: `None` for the live timeline, else the
    /// first restore that archived it (a later restore only archives events
    /// that were still live).
    pub fn branch_of(&self, seq: Seq) -> Option<u64> {
        self.branches.iter().find(|b| b.covers(seq)).map(|b| b.id)
    }

    /// The newest position at or before `seq` that is on the live timeline: a
    /// seq a restore archived stands for the point that restore went back to.
    pub fn live_at_or_before(&self, mut seq: Seq) -> Seq {
        while let Some(id) = self.branch_of(seq) {
            // `restored_to` is below every seq its branch covers, so this ends.
            seq = self.branch(id).map_or(Seq(0), |b| b.restored_to);
        }
        seq
    }

    pub fn is_live(&self, seq: Seq) -> bool {
        self.branch_of(seq).is_none()
    }

    /// The live seq ranges within `from..=upto`, in order, as inclusive bounds.
    pub fn live_ranges(&self, from: Seq, upto: Seq) -> Vec<(Seq, Seq)> {
        self.ranges(from, upto, |seq| self.is_live(seq))
    }

    /// The seq ranges within `from..=upto` that belong to branch `id`.
    pub fn branch_ranges(&self, id: u64, from: Seq, upto: Seq) -> Vec<(Seq, Seq)> {
        self.ranges(from, upto, |seq| self.branch_of(seq) == Some(id))
    }

    /// Splits `from..=upto` at every branch boundary and keeps the pieces whose
    /// seqs pass `keep` (each piece is wholly in or out).
    fn ranges(&self, from: Seq, upto: Seq, keep: impl Fn(Seq) -> bool) -> Vec<(Seq, Seq)> {
        if from > upto {
            return Vec::new();
        }
        let mut cuts: Vec<u64> = vec![from.0, upto.0.saturating_add(1)];
        for b in &self.branches {
            for edge in [b.restored_to.0 + 1, b.upto.0.saturating_add(1)] {
                if from.0 < edge && edge <= upto.0 {
                    cuts.push(edge);
                }
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut out: Vec<(Seq, Seq)> = Vec::new();
        for pair in cuts.windows(2) {
            let (start, end) = (Seq(pair[0]), Seq(pair[1] - 1));
            if keep(start) {
                match out.last_mut() {
                    Some(last) if last.1.0 + 1 == start.0 => last.1 = end,
                    _ => out.push((start, end)),
                }
            }
        }
        out
    }
}

/// A consistent cut of the whole system: every process at one log position,
/// with a snapshot of each at its version as of that position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// 1, 2, 3 … in the order checkpoints were taken.
    pub id: u64,
    /// The log position of the cut: every event at or below it is in it.
    pub seq: Seq,
    /// Time of the newest event in the cut.
    pub time: EventTime,
    /// Wall-clock time the checkpoint was taken.
    pub taken_at: EventTime,
    /// Processes whose state changed since the previous checkpoint.
    pub processes: u64,
    /// Snapshots written for the cut (the rest already existed).
    pub snapshots: u64,
    /// The restore that archived this cut, if one did.
    pub archived_by: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branch(id: u64, restored_to: u64, upto: u64) -> Branch {
        Branch {
            id,
            restored_to: Seq(restored_to),
            upto: Seq(upto),
            events: 0,
            restored_at: EventTime(0),
        }
    }

    #[test]
    fn archived_events_belong_to_the_first_restore_that_took_them() {
        // Restore 1 went back from 100 to 50; restore 2 went back from 150 to 20.
        let timeline = Timeline::new(vec![branch(1, 50, 100), branch(2, 20, 150)]);
        assert_eq!(timeline.branch_of(Seq(20)), None);
        assert_eq!(timeline.branch_of(Seq(21)), Some(2));
        assert_eq!(timeline.branch_of(Seq(51)), Some(1));
        assert_eq!(timeline.branch_of(Seq(100)), Some(1));
        assert_eq!(timeline.branch_of(Seq(101)), Some(2));
        assert_eq!(timeline.branch_of(Seq(151)), None);
        assert_eq!(timeline.next_id(), 3);
        assert_eq!(timeline.live_at_or_before(Seq(75)), Seq(20));
        assert_eq!(timeline.live_at_or_before(Seq(120)), Seq(20));
        assert_eq!(timeline.live_at_or_before(Seq(20)), Seq(20));
        assert_eq!(timeline.live_at_or_before(Seq(160)), Seq(160));
    }

    #[test]
    fn live_and_branch_ranges_skip_each_other() {
        let timeline = Timeline::new(vec![branch(1, 50, 100), branch(2, 20, 150)]);
        assert_eq!(
            timeline.live_ranges(Seq(1), Seq(200)),
            vec![(Seq(1), Seq(20)), (Seq(151), Seq(200))]
        );
        assert_eq!(
            timeline.branch_ranges(2, Seq(1), Seq(200)),
            vec![(Seq(21), Seq(50)), (Seq(101), Seq(150))]
        );
        assert_eq!(timeline.branch_ranges(1, Seq(60), Seq(70)), vec![(Seq(60), Seq(70))]);
        assert_eq!(timeline.live_ranges(Seq(30), Seq(40)), vec![]);
        assert_eq!(Timeline::default().live_ranges(Seq(5), Seq(9)), vec![(Seq(5), Seq(9))]);
        assert_eq!(Timeline::default().live_ranges(Seq(9), Seq(5)), vec![]);
    }
}
