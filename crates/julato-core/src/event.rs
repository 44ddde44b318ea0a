//! Events as the log stores them, and the rules for applying one to a process:
//! version checks and the shape of what a handler hands back.

use serde::{Deserialize, Serialize};

use crate::{EventTime, FunctionName, FunctionVersion, ProcessKey, Seq, Version};

/// Body of an event: JSON text (the default) or raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// JSON text, already validated.
    Json(String),
    /// Raw bytes, sent over HTTP as `data_base64`.
    Bytes(Vec<u8>),
}

impl Payload {
    /// Size in bytes, for limits.
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(s) => s.len(),
            Payload::Bytes(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An event a handler emitted, recorded with the event that emitted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmittedEvent {
    pub function: String,
    pub key: String,
    pub event_type: String,
    pub payload: Payload,
}

/// Why one event depends on another: the edges of the causal dependency graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CauseKind {
    /// The previous event of the same process (program order of the process).
    Process,
    /// The event whose handler emitted this one.
    Emit,
    /// The newest event covered by the causal token the client presented.
    Token,
    /// The previous event of the same transaction (the client's program order).
    Transaction,
}

impl CauseKind {
    /// The stable name used on the wire and in graphs.
    pub fn as_str(self) -> &'static str {
        match self {
            CauseKind::Process => "process",
            CauseKind::Emit => "emit",
            CauseKind::Token => "token",
            CauseKind::Transaction => "transaction",
        }
    }
}

/// One direct cause of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cause {
    pub seq: Seq,
    pub kind: CauseKind,
}

impl Cause {
    /// Adds a cause unless an event before the log's start (`Seq(0)`) or one
    /// already listed; the first kind named for a seq wins.
    pub fn push(causes: &mut Vec<Cause>, seq: Seq, kind: CauseKind) {
        if seq.0 > 0 && !causes.iter().any(|c| c.seq == seq) {
            causes.push(Cause { seq, kind });
        }
    }
}

/// Where an emitted event came from: the emitting event and its position among
/// that event's emits. Also the identity of the delivery, so it happens once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    pub seq: Seq,
    pub index: u32,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.seq.0, self.index)
    }
}

impl std::str::FromStr for Origin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not an emitted event's id (SEQ.INDEX)");
        let (seq, index) = s.split_once('.').ok_or_else(bad)?;
        Ok(Origin {
            seq: Seq(seq.parse().map_err(|_| bad())?),
            index: index.parse().map_err(|_| bad())?,
        })
    }
}

/// One accepted event, exactly as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: Seq,
    pub function: FunctionName,
    pub key: ProcessKey,
    /// Version of the process after this event.
    pub version: Version,
    pub event_type: String,
    pub payload: Payload,
    pub time: EventTime,
    /// Version of the function that handled this event; replay uses the same one.
    pub function_version: FunctionVersion,
    pub idempotency_key: Option<String>,
    /// Events this one directly depends on, and why.
    pub causes: Vec<Cause>,
    /// The transaction that committed this event: the seq of its first event.
    pub transaction: Option<Seq>,
    /// For an emitted event, the event that emitted it.
    pub origin: Option<Origin>,
    /// How many emits lie between this event and one a client sent (0 for that).
    pub hops: u32,
    /// The handler's reply, as JSON text.
    pub reply: Option<String>,
    /// Events the handler emitted, in emission order.
    pub emitted: Vec<EmittedEvent>,
}

/// What the store keeps about a process's newest version; the state itself is
/// rebuilt from snapshots and the log, or held in memory while the process is hot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessHead {
    pub version: Version,
    /// Seq of the newest event applied; `Seq(0)` before any.
    pub last_seq: Seq,
    /// Function version that produced this state.
    pub function_version: FunctionVersion,
    /// Time of the first event.
    pub created: EventTime,
    /// Time of the newest event.
    pub updated: EventTime,
}

/// The sender's expectation did not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected version {expected}, but the process is at version {actual}")]
pub struct VersionConflict {
    pub expected: Version,
    pub actual: Version,
}

/// Checks an optional expected version against the process's current one.
///
/// # Errors
/// Returns [`VersionConflict`] when `expected` is given and differs from `current`.
pub fn check_expected_version(
    current: Version,
    expected: Option<Version>,
) -> Result<(), VersionConflict> {
    match expected {
        Some(expected) if expected != current => Err(VersionConflict { expected, actual: current }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_must_match_exactly() {
        assert!(check_expected_version(Version(3), None).is_ok());
        assert!(check_expected_version(Version(3), Some(Version(3))).is_ok());
        let err = check_expected_version(Version(3), Some(Version(2))).unwrap_err();
        assert_eq!(err.actual, Version(3));
        assert_eq!(err.expected, Version(2));
        assert!(check_expected_version(Version(0), Some(Version(1))).is_err());
    }
}
