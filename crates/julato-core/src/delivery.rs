//! Emitted events on their way to their targets: the outbox entry written
//! atomically with the event that emitted it, and the dead letter an entry
//! becomes when its target rejects it or the hop limit stops it.

use serde::{Deserialize, Serialize};

use crate::{EventTime, Origin, Payload};

/// An emitted event not yet delivered. It is stored in the same commit as the
/// event that emitted it and removed in the same commit as its delivery, so a
/// crash can neither lose it nor deliver it twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub origin: Origin,
    /// Target function and key, as the handler named them (checked on delivery).
    pub function: String,
    pub key: String,
    pub event_type: String,
    pub payload: Payload,
    /// Hops of the delivered event: the emitting event's hops plus one.
    pub hops: u32,
    /// Re-driven by an operator from the dead letters: the hop limit no longer applies.
    pub redriven: bool,
}

/// An emitted event that was not delivered, kept until an operator re-drives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub entry: OutboxEntry,
    /// The stable error code of why it was not delivered.
    pub code: String,
    pub message: String,
    /// When it was given up.
    pub time: EventTime,
}
