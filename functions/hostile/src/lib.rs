//! `hostile`: a function that misbehaves on purpose, so tests can check that the
//! sandbox's budgets hold and that nothing of a failed event is stored.
//!
//! The state is a JSON integer counting accepted `Fine` events. Every other event
//! type breaks a rule: it loops forever, grows memory without bound, traps,
//! recurses without end, returns a state or reply larger than the host accepts,
//! or emits more events than one call may.

use julato_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// The state: the count of accepted `Fine` events. `HugeState` returns padding
/// instead, a JSON string the host refuses for its size, so a stored state is
/// always a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tally {
    Count(i64),
    Padding(String),
}

impl Tally {
    /// The count; padding counts as nothing.
    pub fn count(&self) -> i64 {
        match self {
            Tally::Count(n) => *n,
            Tally::Padding(_) => 0,
        }
    }
}

/// A well-behaved event: counts one.
#[derive(Debug, Serialize, Deserialize, Event)]
pub struct Fine {}

/// Loops forever.
#[derive(Debug, Serialize, Deserialize, Event)]
pub struct Spin {}

/// Allocates `mib` MiB and touches every page.
#[derive(Debug, Serialize, Deserialize, Event)]
pub struct Grow {
    pub mib: usize,
}

/// Panics, which aborts the guest: a trap.
#[derive(Debug, Serialize, Deserialize, Event)]
pub struct Panic {}

/// Returns a reply of `bytes` bytes.
#[derive(Debug, Serialize, Deserialize, Event)]
pub struct HugeReply {
    pub bytes: usize,
}

/// Recurses without end, overflowing wasm's call stack.
#[derive(Debug, Serialize, Deserialize, Event)]
pub struct Recurse {}

/// Returns a new state of `bytes` bytes.
#[derive(Debug, Serialize, Deserialize, Event)]
pub struct HugeState {
    pub bytes: usize,
}

/// Emits `count` `Fine` events to `hostile/sink`.
#[derive(Debug, Serialize, Deserialize, Event)]
pub struct ManyEmits {
    pub count: usize,
}

#[handler]
fn fine(_event: Fine, state: Tally, _ctx: &mut Context) -> Result<Tally, HandlerError> {
    Ok(Tally::Count(state.count() + 1))
}

#[handler]
fn spin(_event: Spin, state: Tally, _ctx: &mut Context) -> Result<Tally, HandlerError> {
    let mut n = state.count() as u64;
    loop {
        n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
        if n == u64::MAX && std::hint::black_box(false) {
            return Ok(Tally::Count(n as i64));
        }
    }
}

#[handler]
fn grow(event: Grow, state: Tally, _ctx: &mut Context) -> Result<Tally, HandlerError> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..event.mib {
        let block = vec![1u8; 1 << 20];
        blocks.push(std::hint::black_box(block));
    }
    Ok(Tally::Count(state.count() + blocks.len() as i64 - event.mib as i64))
}

#[handler]
fn panic(_event: Panic, _state: Tally, _ctx: &mut Context) -> Result<Tally, HandlerError> {
    panic!("hostile guest panics on purpose")
}

#[handler]
fn huge_reply(event: HugeReply, state: Tally, ctx: &mut Context) -> Result<Tally, HandlerError> {
    ctx.reply("x".repeat(event.bytes));
    Ok(state)
}

/// Calls itself until the engine's call stack runs out. Its frames are small
/// and keep nothing in linear memory, so wasm's call stack, not the guest's own
/// stack in its memory, is what overflows.
fn depth(n: u64) -> u64 {
    if std::hint::black_box(n) == u64::MAX {
        return 0;
    }
    depth(n + 1).wrapping_mul(31).wrapping_add(n)
}

#[handler]
fn recurse(_event: Recurse, state: Tally, _ctx: &mut Context) -> Result<Tally, HandlerError> {
    Ok(Tally::Count(state.count() + depth(std::hint::black_box(0)) as i64))
}

#[handler]
fn huge_state(event: HugeState, _state: Tally, _ctx: &mut Context) -> Result<Tally, HandlerError> {
    // The JSON string's two quotes count too.
    Ok(Tally::Padding("x".repeat(event.bytes.saturating_sub(2))))
}

#[handler]
fn many_emits(event: ManyEmits, state: Tally, ctx: &mut Context) -> Result<Tally, HandlerError> {
    for _ in 0..event.count {
        ctx.emit("hostile", "sink", Fine {});
    }
    Ok(state)
}

julato_sdk::function! {
    state: Tally = Tally::Count(0),
    handlers: [fine, spin, grow, panic, huge_reply, recurse, huge_state, many_emits],
}
