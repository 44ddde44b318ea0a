//! Budgets each invocation runs under, with the defaults a server starts with.

use std::time::Duration;

/// Per-invocation budgets of the sandbox.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Deterministic fuel: roughly one unit per wasm instruction.
    pub fuel: u64,
    /// Wall-clock backstop, for time spent that fuel does not count.
    pub wall_time: Duration,
    /// Largest linear memory a guest may grow to, in bytes.
    pub memory_bytes: usize,
    /// Largest state a handler may return, in bytes of JSON.
    pub state_bytes: usize,
    /// Largest reply a handler may return, in bytes of JSON.
    pub reply_bytes: usize,
    /// Most events one invocation may emit.
    pub emits: usize,
    /// Most log lines one invocation may write; more are counted and dropped.
    pub log_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 100_000_000,
            wall_time: Duration::from_secs(2),
            memory_bytes: 64 << 20,
            state_bytes: 1 << 20,
            reply_bytes: 64 << 10,
            emits: 100,
            log_lines: 64,
        }
    }
}
