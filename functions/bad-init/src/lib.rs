//! `bad-init`: a function whose initial state traps, so tests can check that a
//! component that cannot build the state of a new process is refused.
//!
//! It handles `Fine` like `hostile` does, but the host never gets to call it:
//! asking for the initial state panics, which aborts the guest.

use julato_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// A well-behaved event: counts one.
#[derive(Debug, Serialize, Deserialize, Event)]
pub struct Fine {}

#[handler]
fn fine(_event: Fine, state: i64, _ctx: &mut Context) -> Result<i64, HandlerError> {
    Ok(state + 1)
}

/// The initial state: never built.
fn initial() -> i64 {
    panic!("bad-init panics while building the initial state, on purpose")
}

julato_sdk::function! {
    state: i64 = initial(),
    handlers: [fine],
}
