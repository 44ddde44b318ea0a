//! Which shard owns which process. A process's id hashes to one of a fixed
//! number of partitions, and each partition is owned by one shard slot; the
//! autoscaler moves partitions between shards, so the table is read on every
//! send and changed only by the shard that gives a partition up.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use julato_core::ProcessId;

/// Partitions of the process space. Many more than shards, so that load can
/// be moved in small pieces; few enough that the table is a few pages.
pub const PARTITIONS: usize = 4096;

/// A partition of the process space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(pub u32);

impl Partition {
    /// The partition a process belongs to, for the life of the server (the
    /// hash is not stored anywhere, so it may change between builds).
    pub fn of(process: &ProcessId) -> Self {
        let mut hasher = DefaultHasher::new();
        process.hash(&mut hasher);
        Partition((hasher.finish() % PARTITIONS as u64) as u32)
    }

    fn index(self) -> usize {
        self.0 as usize
    }
}

/// The partition table and the load each partition put on its shard since the
/// autoscaler last looked.
pub struct Routing {
    /// Partition → shard slot.
    owners: Vec<AtomicU32>,
    /// Partition → nanoseconds its events spent in handlers and bookkeeping.
    load: Vec<AtomicU64>,
}

impl Routing {
    /// Spreads the partitions round robin over the first `shards` slots.
    pub fn new(shards: usize) -> Self {
        let shards = shards.max(1) as u32;
        Self {
            owners: (0..PARTITIONS as u32).map(|p| AtomicU32::new(p % shards)).collect(),
            load: (0..PARTITIONS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The slot of the shard that owns `partition` now.
    pub fn owner(&self, partition: Partition) -> usize {
        // Acquire: a shard hands a partition over by filling the new owner's
        // resident map first and storing the owner last (Release), so whoever
        // sees the new owner also sees the states it took over.
        self.owners[partition.index()].load(Ordering::Acquire) as usize
    }

    /// The slot of the shard that owns `process` now.
    pub fn owner_of(&self, process: &ProcessId) -> usize {
        self.owner(Partition::of(process))
    }

    /// Hands `partition` to `slot`. Only the shard that owns it may call
    /// this, between its batches.
    pub fn hand_over(&self, partition: Partition, slot: usize) {
        self.owners[partition.index()].store(slot as u32, Ordering::Release);
    }

    /// Counts work done for a partition.
    pub fn charge(&self, partition: Partition, nanos: u64) {
        self.load[partition.index()].fetch_add(nanos, Ordering::Relaxed);
    }

    /// Each partition's owner and the load it put on it since the previous
    /// call; resets the load.
    pub fn take_load(&self) -> Vec<(usize, u64)> {
        (0..PARTITIONS)
            .map(|p| {
                (
                    self.owners[p].load(Ordering::Acquire) as usize,
                    self.load[p].swap(0, Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// How many partitions each of `slots` slots owns.
    pub fn counts(&self, slots: usize) -> Vec<usize> {
        let mut counts = vec![0; slots];
        for owner in &self.owners {
            let slot = owner.load(Ordering::Acquire) as usize;
            if slot < slots {
                counts[slot] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use julato_core::{FunctionName, ProcessKey};

    fn process(key: &str) -> ProcessId {
        ProcessId::new(FunctionName::new("f").unwrap(), ProcessKey::new(key).unwrap())
    }

    #[test]
    fn partitions_start_round_robin_and_move_when_handed_over() {
        let routing = Routing::new(3);
        assert_eq!(routing.counts(3), [1366, 1365, 1365]);
        let p = Partition::of(&process("a"));
        assert_eq!(p, Partition::of(&process("a")));
        assert_eq!(routing.owner(p), p.0 as usize % 3);
        routing.hand_over(p, 7);
        assert_eq!(routing.owner_of(&process("a")), 7);
    }

    #[test]
    fn load_is_taken_once() {
        let routing = Routing::new(2);
        routing.charge(Partition(5), 100);
        routing.charge(Partition(5), 20);
        let load = routing.take_load();
        assert_eq!(load[5], (1, 120));
        assert_eq!(routing.take_load()[5], (1, 0));
    }
}
