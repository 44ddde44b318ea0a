//! The autoscaler's rule: from how busy each shard was and how much load each
//! partition put on it, decide whether to add a shard, move load between
//! shards, or retire one. Pure: it sees numbers and answers a decision; the
//! shards carry it out (`Managers`).

use std::time::Duration;

use serde::Serialize;

use crate::routing::Partition;

/// Bounds and thresholds of the autoscaler.
#[derive(Debug, Clone)]
pub struct ScalingPolicy {
    /// Fewest shards; the autoscaler never retires below it.
    pub min_shards: usize,
    /// Most shards; the autoscaler never adds above it.
    pub max_shards: usize,
    /// How often the autoscaler looks; `None` turns it off (the shard count
    /// then stays as started).
    pub interval: Option<Duration>,
    /// A shard busy for more than this fraction of the interval is hot.
    pub hot_busy: f64,
    /// A shard with this many commands queued is hot, whatever its busy time.
    pub hot_queue: usize,
    /// Every shard below this fraction, with nothing queued, means idle.
    pub idle_busy: f64,
    /// Consecutive hot looks before a shard is added or load is moved.
    pub up_after: u32,
    /// Consecutive idle looks before a shard is retired.
    pub down_after: u32,
    /// Cores the shards share: no shard is added while the shards together
    /// already keep this many busy.
    pub cores: usize,
}

impl ScalingPolicy {
    /// Defaults for `cores` cores: between one and sixteen shards per core,
    /// looking every second.
    pub fn for_cores(cores: usize) -> Self {
        let cores = cores.max(1);
        Self {
            min_shards: cores,
            max_shards: 16 * cores,
            interval: Some(Duration::from_secs(1)),
            hot_busy: 0.75,
            hot_queue: 256,
            idle_busy: 0.05,
            up_after: 2,
            down_after: 30,
            cores,
        }
    }
}

/// What the autoscaler saw of one running shard over the last interval.
#[derive(Debug, Clone, Copy)]
pub struct ShardLoad {
    pub slot: usize,
    /// Fraction of the interval spent applying events (0 to 1).
    pub busy: f64,
    /// Commands waiting in its queue now.
    pub queued: usize,
}

/// One change of the shard layout.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Start a shard in `slot` and give it `partitions` of shard `from`.
    Add { slot: usize, from: usize, partitions: Vec<Partition>, reason: String },
    /// Move `partitions` from shard `from` to shard `to`.
    Rebalance { from: usize, to: usize, partitions: Vec<Partition>, reason: String },
    /// Give every partition of shard `slot` to the shards named, then stop it.
    Retire { slot: usize, moves: Vec<(Partition, usize)>, reason: String },
}

/// The kind of a decision, as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Add,
    Rebalance,
    Retire,
}

impl Decision {
    pub fn action(&self) -> Action {
        match self {
            Decision::Add { .. } => Action::Add,
            Decision::Rebalance { .. } => Action::Rebalance,
            Decision::Retire { .. } => Action::Retire,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Decision::Add { reason, .. }
            | Decision::Rebalance { reason, .. }
            | Decision::Retire { reason, .. } => reason,
        }
    }
}

/// The autoscaler's memory between looks: how long the shards have been hot
/// or idle.
#[derive(Debug)]
pub struct Planner {
    policy: ScalingPolicy,
    hot_streak: u32,
    idle_streak: u32,
}

impl Planner {
    pub fn new(policy: ScalingPolicy) -> Self {
        Self { policy, hot_streak: 0, idle_streak: 0 }
    }

    pub fn policy(&self) -> &ScalingPolicy {
        &self.policy
    }

    /// One look: `shards` are the running shards, `partitions[p]` is the
    /// owner and load of partition `p`, `free` a slot a new shard could take.
    pub fn observe(
        &mut self,
        shards: &[ShardLoad],
        partitions: &[(usize, u64)],
        free: Option<usize>,
    ) -> Option<Decision> {
        let hottest = shards.iter().copied().max_by(|a, b| {
            (a.busy, a.queued).partial_cmp(&(b.busy, b.queued)).unwrap_or(std::cmp::Ordering::Equal)
        })?;
        let is_hot =
            |s: &ShardLoad| s.busy >= self.policy.hot_busy || s.queued >= self.policy.hot_queue;
        let loaded =
            partitions.iter().filter(|(owner, load)| *owner == hottest.slot && *load > 0).count();

        // A hot shard with two or more busy partitions has load that can be
        // split; one hot partition (a hot key) cannot be split, only kept alone.
        if is_hot(&hottest) && loaded >= 2 {
            self.idle_streak = 0;
            self.hot_streak += 1;
            if self.hot_streak < self.policy.up_after {
                return None;
            }
            self.hot_streak = 0;
            let total_busy: f64 = shards.iter().map(|s| s.busy).sum();
            let why = format!(
                "shard {} busy {:.0}% with {} commands queued over {loaded} busy partitions",
                hottest.slot,
                hottest.busy * 100.0,
                hottest.queued
            );
            if shards.len() < self.policy.max_shards
                && total_busy + 0.5 <= self.policy.cores as f64
                && let Some(slot) = free
            {
                let partitions = split(partitions, hottest.slot, true);
                return Some(Decision::Add { slot, from: hottest.slot, partitions, reason: why });
            }
            let coolest =
                shards.iter().copied().filter(|s| s.slot != hottest.slot && !is_hot(s)).min_by(
                    |a, b| a.busy.partial_cmp(&b.busy).unwrap_or(std::cmp::Ordering::Equal),
                )?;
            if coolest.busy * 2.0 >= hottest.busy {
                return None;
            }
            let partitions = split(partitions, hottest.slot, false);
            if partitions.is_empty() {
                return None;
            }
            let reason = format!("{why}; shard {} busy {:.0}%", coolest.slot, coolest.busy * 100.0);
            return Some(Decision::Rebalance {
                from: hottest.slot,
                to: coolest.slot,
                partitions,
                reason,
            });
        }
        self.hot_streak = 0;

        let idle = shards.iter().all(|s| s.busy < self.policy.idle_busy && s.queued == 0);
        if !idle || shards.len() <= self.policy.min_shards.max(1) {
            self.idle_streak = 0;
            return None;
        }
        self.idle_streak += 1;
        if self.idle_streak < self.policy.down_after {
            return None;
        }
        self.idle_streak = 0;
        let retiring = shards.iter().map(|s| s.slot).max()?;
        let others: Vec<usize> = shards.iter().map(|s| s.slot).filter(|s| *s != retiring).collect();
        let moves = spread(partitions, retiring, &others);
        let reason = format!(
            "all {} shards under {:.0}% busy with empty queues for {} looks",
            shards.len(),
            self.policy.idle_busy * 100.0,
            self.policy.down_after
        );
        Some(Decision::Retire { slot: retiring, moves, reason })
    }
}

/// The partitions of shard `from` to move away so that the load left and the
/// load moved are as even as a greedy split makes them: busiest first, each to
/// whichever side has less so far, so the busiest partition stays and the
/// ones that queued behind it leave. With `cold_too`, every other idle
/// partition moves as well, so new processes spread over both shards.
fn split(partitions: &[(usize, u64)], from: usize, cold_too: bool) -> Vec<Partition> {
    let mut busy: Vec<(u64, u32)> = partitions
        .iter()
        .enumerate()
        .filter(|(_, (owner, load))| *owner == from && *load > 0)
        .map(|(p, (_, load))| (*load, p as u32))
        .collect();
    busy.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let (mut kept, mut moved) = (0u64, 0u64);
    let mut moving = Vec::new();
    for (load, p) in busy {
        if kept <= moved {
            kept += load;
        } else {
            moved += load;
            moving.push(Partition(p));
        }
    }
    if cold_too {
        let cold = partitions
            .iter()
            .enumerate()
            .filter(|(_, (owner, load))| *owner == from && *load == 0)
            .map(|(p, _)| Partition(p as u32));
        moving.extend(cold.skip(1).step_by(2));
    }
    moving.sort_unstable();
    moving
}

/// Where each partition of a retiring shard goes: busiest first to the least
/// loaded of `others`, idle ones to whichever has fewest partitions.
fn spread(
    partitions: &[(usize, u64)],
    retiring: usize,
    others: &[usize],
) -> Vec<(Partition, usize)> {
    if others.is_empty() {
        return Vec::new();
    }
    let mut load: Vec<(usize, u64, usize)> = others
        .iter()
        .map(|&slot| {
            let mine = partitions.iter().filter(|(owner, _)| *owner == slot);
            let (count, total) = mine.fold((0, 0), |(c, t), (_, l)| (c + 1, t + l));
            (slot, total, count)
        })
        .collect();
    let mut leaving: Vec<(u64, u32)> = partitions
        .iter()
        .enumerate()
        .filter(|(_, (owner, _))| *owner == retiring)
        .map(|(p, (_, l))| (*l, p as u32))
        .collect();
    leaving.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut moves = Vec::with_capacity(leaving.len());
    for (l, p) in leaving {
        let target = if l > 0 {
            load.iter_mut().min_by_key(|(slot, total, _)| (*total, *slot))
        } else {
            load.iter_mut().min_by_key(|(slot, _, count)| (*count, *slot))
        }
        .expect("others is not empty");
        target.1 += l;
        target.2 += 1;
        moves.push((Partition(p), target.0));
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ScalingPolicy {
        ScalingPolicy { up_after: 2, down_after: 3, ..ScalingPolicy::for_cores(2) }
    }

    /// 8 partitions: owner = p % shards, with the given loads.
    fn table(shards: usize, loads: &[u64]) -> Vec<(usize, u64)> {
        loads.iter().enumerate().map(|(p, l)| (p % shards, *l)).collect()
    }

    fn load(slot: usize, busy: f64, queued: usize) -> ShardLoad {
        ShardLoad { slot, busy, queued }
    }

    #[test]
    fn a_hot_shard_with_several_busy_partitions_gets_a_new_shard_after_two_looks() {
        let mut planner = Planner::new(policy());
        let shards = [load(0, 0.9, 40), load(1, 0.1, 0)];
        // Partitions 0, 2, 4, 6 are shard 0's; 0 is hot, 2 and 4 queued behind it.
        let table = table(2, &[1000, 0, 10, 0, 10, 0, 0, 0]);
        assert_eq!(planner.observe(&shards, &table, Some(2)), None);
        let Some(Decision::Add { slot, from, partitions, .. }) =
            planner.observe(&shards, &table, Some(2))
        else {
            panic!("expected a new shard");
        };
        assert_eq!((slot, from), (2, 0));
        // The hot partition stays; the two that waited behind it leave, and
        // every other idle one.
        assert_eq!(partitions, [Partition(2), Partition(4)]);
    }

    #[test]
    fn a_hot_key_alone_is_not_split() {
        let mut planner = Planner::new(policy());
        let shards = [load(0, 1.0, 500), load(1, 0.0, 0)];
        let table = table(2, &[1000, 0, 0, 0, 0, 0, 0, 0]);
        for _ in 0..5 {
            assert_eq!(planner.observe(&shards, &table, Some(2)), None);
        }
    }

    #[test]
    fn without_spare_cores_load_moves_to_the_coolest_shard_instead() {
        let mut planner = Planner::new(ScalingPolicy { cores: 1, ..policy() });
        let shards = [load(0, 0.9, 0), load(1, 0.2, 0)];
        let table = table(2, &[500, 0, 400, 0, 100, 0, 0, 0]);
        planner.observe(&shards, &table, Some(2));
        let decision = planner.observe(&shards, &table, Some(2));
        assert!(
            matches!(&decision, Some(Decision::Rebalance { from: 0, to: 1, partitions, .. })
                if partitions == &[Partition(2), Partition(4)]),
            "{decision:?}"
        );
    }

    #[test]
    fn at_the_maximum_nothing_is_added() {
        let mut planner = Planner::new(ScalingPolicy { max_shards: 2, ..policy() });
        let shards = [load(0, 0.9, 0), load(1, 0.8, 0)];
        let table = table(2, &[500, 500, 400, 400, 0, 0, 0, 0]);
        for _ in 0..4 {
            assert_eq!(planner.observe(&shards, &table, Some(2)), None);
        }
    }

    #[test]
    fn idle_shards_retire_down_to_the_minimum() {
        let mut planner = Planner::new(policy());
        let shards = [load(0, 0.0, 0), load(1, 0.01, 0), load(2, 0.0, 0)];
        let table = table(3, &[0, 0, 0, 0, 0, 9, 0, 0]);
        assert_eq!(planner.observe(&shards, &table, None), None);
        assert_eq!(planner.observe(&shards, &table, None), None);
        let Some(Decision::Retire { slot, moves, .. }) = planner.observe(&shards, &table, None)
        else {
            panic!("expected a retirement");
        };
        assert_eq!(slot, 2);
        // Shard 2 owns partitions 2 and 5; the busy one goes to the least
        // loaded shard, the idle one to the one with fewest partitions.
        let targets: Vec<_> = moves.iter().map(|(p, to)| (p.0, *to)).collect();
        assert_eq!(targets, [(5, 0), (2, 1)]);

        let two = [load(0, 0.0, 0), load(1, 0.0, 0)];
        for _ in 0..10 {
            assert_eq!(planner.observe(&two, &table, None), None, "never below the minimum");
        }
    }

    #[test]
    fn any_activity_restarts_the_idle_count() {
        let mut planner = Planner::new(policy());
        let idle = [load(0, 0.0, 0), load(1, 0.0, 0), load(2, 0.0, 0)];
        let busy = [load(0, 0.3, 0), load(1, 0.0, 0), load(2, 0.0, 0)];
        let table = table(3, &[0; 8]);
        planner.observe(&idle, &table, None);
        planner.observe(&idle, &table, None);
        planner.observe(&busy, &table, None);
        planner.observe(&idle, &table, None);
        planner.observe(&idle, &table, None);
        assert!(planner.observe(&idle, &table, None).is_some());
    }
}
