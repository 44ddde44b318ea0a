//! Julato's pure core: the vocabulary of events and processes and the rules that
//! order them. Nothing here touches a disk, a network or a clock of its own, so
//! every rule is tested with plain values.

pub mod clock;
pub mod delivery;
pub mod event;
pub mod function;
pub mod history;
pub mod id;
pub mod sequence;
pub mod timeline;
pub mod token;

pub use clock::{Clock, EventTime, MonotonicClock, SystemClock};
pub use delivery::{DeadLetter, OutboxEntry};
pub use event::{
    Cause, CauseKind, EmittedEvent, EventRecord, Origin, Payload, ProcessHead, VersionConflict,
    check_expected_version,
};
pub use function::{DeployedVersion, FunctionInfo};
pub use history::{
    AsOf, AsOfError, Fold, RebuildError, Rebuilt, Snapshot, SnapshotPolicy, VersionIndex,
};
pub use id::{FunctionName, FunctionVersion, InvalidName, ProcessId, ProcessKey, Seq, Version};
pub use sequence::{Allocation, Sequencer};
pub use timeline::{Branch, Checkpoint, Timeline};
pub use token::{CausalToken, LOCAL_PARTITION};
