//! `relay`: passes pings along, to test chains and cycles of emitted events.
//!
//! The state is a JSON integer, 0 for a new process: how many pings it received.
//! `Ping {"to": key, "left": n}` adds 1 and, while `n > 0`, emits
//! `Ping {"to": <this process's key>, "left": n - 1}` to `relay/{to}`, so two relays
//! naming each other ping-pong until `left` runs out. It replies the new count.

use julato_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// A ping to pass on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
pub struct Ping {
    /// The relay process to pass the ping to.
    pub to: String,
    /// How many more times the ping is passed on.
    pub left: u64,
}

/// Counts the ping and passes it on while `left` is positive.
///
/// # Errors
///
/// [`HandlerError::Rejected`] if the count would overflow.
#[handler]
pub fn ping(event: Ping, state: i64, ctx: &mut Context) -> Result<i64, HandlerError> {
    let state =
        state.checked_add(1).ok_or_else(|| HandlerError::rejected("the count overflows"))?;
    if event.left > 0 {
        let back = ctx.key().to_owned();
        ctx.emit("relay", &event.to, Ping { to: back, left: event.left - 1 });
    }
    ctx.reply(state);
    Ok(state)
}

julato_sdk::function! {
    state: i64 = 0,
    handlers: [ping],
}
