//! Per-process admission: how many of one process's events may wait in the
//! shards' queues at once. A process over its share is told to back off
//! (`process_overloaded`), so one hot process fills at most a bounded part of
//! its shard's queue and the other processes of that shard still get in.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use julato_core::ProcessId;
use parking_lot::Mutex;

use crate::SendError;

/// Independent locks the counts are spread over, so concurrent senders to
/// different processes rarely wait for each other.
const STRIPES: usize = 64;

/// Counts of events waiting per process, bounded by `limit`.
#[derive(Debug)]
pub struct Admission {
    limit: usize,
    hasher: RandomState,
    stripes: Vec<Mutex<HashMap<ProcessId, usize>>>,
}

/// One admitted event; dropping it (answered, failed or abandoned) frees its
/// place.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    process: ProcessId,
}

impl Admission {
    /// At most `limit` events of one process waiting at once (at least one).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            hasher: RandomState::new(),
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn stripe(&self, process: &ProcessId) -> &Mutex<HashMap<ProcessId, usize>> {
        &self.stripes[self.hasher.hash_one(process) as usize % STRIPES]
    }

    /// Takes a place for one event of `process`.
    ///
    /// # Errors
    /// [`SendError::ProcessOverloaded`] when `limit` of its events already wait.
    pub fn admit(self: &Arc<Self>, process: &ProcessId) -> Result<Ticket, SendError> {
        let mut waiting = self.stripe(process).lock();
        let count = waiting.entry(process.clone()).or_default();
        if *count >= self.limit {
            return Err(SendError::ProcessOverloaded {
                process: process.to_string(),
                limit: self.limit,
            });
        }
        *count += 1;
        Ok(Ticket { admission: self.clone(), process: process.clone() })
    }

    /// Events of `process` waiting now.
    pub fn waiting(&self, process: &ProcessId) -> usize {
        self.stripe(process).lock().get(process).copied().unwrap_or(0)
    }

    /// Processes with at least one event waiting now.
    pub fn processes(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().len()).sum()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut waiting = self.admission.stripe(&self.process).lock();
        if let Some(count) = waiting.get_mut(&self.process) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&self.process);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use julato_core::{FunctionName, ProcessKey};

    use super::*;

    fn process(key: &str) -> ProcessId {
        ProcessId::new(FunctionName::new("f").unwrap(), ProcessKey::new(key).unwrap())
    }

    #[test]
    fn a_process_past_its_share_is_refused_and_others_are_not() {
        let admission = Admission::new(2);
        let hot = process("hot");
        let first = admission.admit(&hot).expect("first");
        let _second = admission.admit(&hot).expect("second");
        let refused = admission.admit(&hot).unwrap_err();
        assert_eq!(refused.code(), "process_overloaded");
        assert!(refused.to_string().contains("f/hot"), "{refused}");
        let _cold = admission.admit(&process("cold")).expect("another process still gets in");
        drop(first);
        let _third = admission.admit(&hot).expect("a freed place is taken again");
        assert_eq!(admission.waiting(&hot), 2);
    }

    #[test]
    fn dropped_tickets_leave_nothing_behind() {
        let admission = Admission::new(4);
        let tickets: Vec<_> =
            (0..100).map(|i| admission.admit(&process(&format!("k{i}"))).unwrap()).collect();
        assert_eq!(admission.processes(), 100);
        drop(tickets);
        assert_eq!(admission.processes(), 0);
    }
}
