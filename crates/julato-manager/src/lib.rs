//! Process managers: shards that own processes by key and apply each process's
//! events strictly one at a time, in order, while different shards run in
//! parallel. A shard keeps the hot states of its processes in memory and hands
//! each batch of accepted events to the store as one group-committed write.

pub mod admission;
pub mod autoscale;
pub mod catalog;
pub mod outbox;
pub mod replay;
pub mod routing;
mod shard;

pub use autoscale::{Decision, ScalingPolicy};
pub use catalog::Catalog;
pub use outbox::Deliverer;
pub use replay::Replayer;
pub use shard::{
    Applied, Committed, DeliveryCounters, ManagerConfig, Managers, Paused, ScalingRecord,
    ScalingView, SendRequest, ShardStats, TransactionFailed,
};

use julato_core::{FunctionName, InvalidName, VersionConflict};
use julato_executor::Rejection;

/// Why an event was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("no function named `{0}` is deployed")]
    UnknownFunction(FunctionName),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Conflict(#[from] VersionConflict),
    #[error("the event store failed, the event is not stored: {0}")]
    Storage(String),
    #[error("cannot load the function's component: {0}")]
    Component(String),
    #[error("idempotency key `{0}` was already used for a different event of this process")]
    IdempotencyKeyReused(String),
    #[error("the process manager's queue is full")]
    Overloaded,
    #[error("{limit} events of {process} are already waiting; send it fewer at once")]
    ProcessOverloaded { process: String, limit: usize },
    #[error("replaying the log of {process} failed: {message}; the function is not deterministic")]
    ReplayFailed { process: String, message: String },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("emitted event {0} was already delivered")]
    AlreadyDelivered(String),
}

impl SendError {
    /// Whether trying again later may succeed: the event was not judged, only
    /// not taken (a full queue, a shutdown, a storage failure).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SendError::Overloaded
                | SendError::ProcessOverloaded { .. }
                | SendError::ShuttingDown
                | SendError::Storage(_)
        )
    }

    /// The stable code of this error, as the API and dead letters name it.
    pub fn code(&self) -> &'static str {
        match self {
            SendError::UnknownFunction(_) => "function_not_found",
            SendError::Rejected(rejection) => rejection.code(),
            SendError::Conflict(_) => "version_conflict",
            SendError::Storage(_) => "storage_failed",
            SendError::Component(_) => "component_unavailable",
            SendError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            SendError::Overloaded => "overloaded",
            SendError::ProcessOverloaded { .. } => "process_overloaded",
            SendError::ReplayFailed { .. } => "replay_failed",
            SendError::ShuttingDown => "shutting_down",
            SendError::InvalidName(_) => "invalid_name",
            SendError::AlreadyDelivered(_) => "already_delivered",
        }
    }
}
