//! `hostile`: a function that misbehaves on purpose, so tests can check that the
//! sandbox's budgets hold and that nothing of a failed event is stored.
//!
//! The state is a JSON integer counting accepted `Fine` events. Every other event
//! type breaks a rule: it loops forever, grows memory without bound, traps,
//! or returns a state or reply larger than the host accepts.

use julato_sdk::prelude::*;
use serde::{Deserialize, Serialize};

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

/// Recurses without end, overflowing the guest's stack.
#[derive(Debug, Serialize, Deserialize, Event)]
pub struct Recurse {}

#[handler]
fn fine(_event: Fine, state: i64, _ctx: &mut Context) -> Result<i64, HandlerError> {
    Ok(state + 1)
}

#[handler]
fn spin(_event: Spin, state: i64, _ctx: &mut Context) -> Result<i64, HandlerError> {
    let mut n = state as u64;
    loop {
        n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
        if n == u64::MAX && std::hint::black_box(false) {
            return Ok(n as i64);
        }
    }
}

#[handler]
fn grow(event: Grow, state: i64, _ctx: &mut Context) -> Result<i64, HandlerError> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..event.mib {
        let block = vec![1u8; 1 << 20];
        blocks.push(std::hint::black_box(block));
    }
    Ok(state + blocks.len() as i64 - event.mib as i64)
}

#[handler]
fn panic(_event: Panic, _state: i64, _ctx: &mut Context) -> Result<i64, HandlerError> {
    panic!("hostile guest panics on purpose")
}

#[handler]
fn huge_reply(event: HugeReply, state: i64, ctx: &mut Context) -> Result<i64, HandlerError> {
    ctx.reply("x".repeat(event.bytes));
    Ok(state)
}

fn depth(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 64]);
    if pad[0] == u64::MAX {
        return 0;
    }
    depth(pad[(n % 64) as usize] + 1) + pad[1]
}

#[handler]
fn recurse(_event: Recurse, state: i64, _ctx: &mut Context) -> Result<i64, HandlerError> {
    Ok(state + depth(std::hint::black_box(0)) as i64)
}

julato_sdk::function! {
    state: i64 = 0,
    handlers: [fine, spin, grow, panic, huge_reply, recurse],
}
