//! The executor runs function handlers in a wasmtime sandbox.
//!
//! Each function version is compiled once and kept on disk, so a restart loads
//! machine code instead of compiling again. Every invocation gets a fresh
//! instance from a pooling allocator, a deterministic fuel budget, a wall-clock
//! backstop and a memory cap. The only thing a guest can call is `log`: it sees
//! no clock, randomness, file, network or environment besides the event record.

mod limits;
mod sandbox;
pub mod telemetry;

pub use limits::Limits;
pub use sandbox::{EmittedEvent, Executor, HandlerContext, Loaded, Outcome, inspect_digest};

/// Why an invocation did not produce an accepted outcome. Each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no handler for event type `{0}`")]
    UnsupportedEventType(String),
    #[error("the event does not fit its handler: {0}")]
    InvalidEvent(String),
    #[error("the stored state does not fit this function version: {0}")]
    InvalidState(String),
    #[error("the handler rejected the event: {0}")]
    Rejected(String),
    #[error("the handler trapped: {0}")]
    Trap(String),
    #[error("the handler ran out of fuel ({0} units)")]
    FuelExhausted(u64),
    #[error("the handler ran past its wall-clock limit of {0} ms")]
    Timeout(u64),
    /// Wasm's call stack ran out, as in unbounded recursion. A guest whose own
    /// stack in linear memory runs out first traps on an out-of-bounds access
    /// instead, a [`Rejection::Trap`].
    #[error("the handler exhausted the call stack (unbounded recursion)")]
    StackOverflow,
    #[error("the handler tried to use more than {0} bytes of memory")]
    MemoryLimit(usize),
    #[error("the handler returned {what} of {size} bytes, over the limit of {limit}")]
    OutputTooLarge { what: &'static str, size: usize, limit: usize },
    #[error("the handler emitted {count} events, over the limit of {limit}")]
    TooManyEmits { count: usize, limit: usize },
    #[error("the handler returned {what} that is not valid JSON: {message}")]
    InvalidOutput { what: &'static str, message: String },
}

impl Rejection {
    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::UnsupportedEventType(_) => "unsupported_event_type",
            Rejection::InvalidEvent(_) => "invalid_event",
            Rejection::InvalidState(_) => "invalid_state",
            Rejection::Rejected(_) => "handler_rejected",
            Rejection::Trap(_) => "handler_trapped",
            Rejection::FuelExhausted(_) => "fuel_exhausted",
            Rejection::Timeout(_) => "handler_timeout",
            Rejection::StackOverflow => "stack_overflow",
            Rejection::MemoryLimit(_) => "memory_limit_exceeded",
            Rejection::OutputTooLarge { what: "state", .. } => "state_too_large",
            Rejection::OutputTooLarge { what: "reply", .. } => "reply_too_large",
            Rejection::OutputTooLarge { .. } => "output_too_large",
            Rejection::TooManyEmits { .. } => "too_many_emits",
            Rejection::InvalidOutput { .. } => "invalid_handler_output",
        }
    }
}

/// Errors of loading and compiling components (not of running handlers).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a valid Julato component: {0}")]
    InvalidComponent(String),
    #[error("the component does not match the Julato function world: {0}")]
    WorldMismatch(String),
    #[error(
        "the component imports {}, which the host does not provide (a function may import \
         only `log`)",
        .0.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
    )]
    UnknownImports(Vec<String>),
    #[error("the component failed while describing itself: {0}")]
    Describe(Rejection),
    #[error("the component failed while building the initial state of a process: {0}")]
    Init(Rejection),
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    #[error("compile cache I/O on `{path}`: {source}")]
    Cache {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
