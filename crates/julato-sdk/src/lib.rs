//! Write Julato functions in Rust.
//!
//! A Julato function is a stateful, event-sourced handler deployed as a WebAssembly
//! component of the `julato:function/function` world (see `wit/julato.wit`). For each
//! key (a *process*) the host keeps a state and folds every event sent to that key
//! into it by calling the function. This crate lets you write such a function as plain
//! Rust:
//!
//! - the **state** is any `serde` type, with an initial value;
//! - each **event** is a `serde` struct deriving [`Event`]; its event type name is the
//!   struct's name (`Say`), unless renamed with `#[event(name = "...")]`;
//! - each **handler** is a function marked [`#[handler]`](handler) that takes the
//!   event, the current state and a [`Context`], and returns the new state or a
//!   [`HandlerError`]. A handler taking `Vec<u8>` receives the raw payload bytes of the
//!   event type named by `#[handler(event = "...")]`;
//! - [`function!`] names the state type, its initial value and the handlers, and
//!   exports the component.
//!
//! The SDK does the rest: decoding the state and the event from JSON, picking the
//! handler, turning an event type with no handler into
//! [`HandlerError::UnsupportedEventType`], an undecodable event into
//! [`HandlerError::InvalidEvent`] and encoding the new state, the reply and the emitted
//! events for the host.
//!
//! # Example
//!
//! A counter that counts `Say` events and accepts raw bytes as a `Say` of their text:
//!
//! ```
//! use julato_sdk::{Context, Event, HandlerError, Payload, handler};
//! use serde::{Deserialize, Serialize};
//!
//! /// Says something to the counter.
//! #[derive(Debug, Serialize, Deserialize, Event)]
//! pub struct Say {
//!     pub text: String,
//! }
//!
//! #[handler]
//! fn say(event: Say, state: i64, ctx: &mut Context) -> Result<i64, HandlerError> {
//!     let state = state + 1;
//!     ctx.reply(format!("handle: Say({:?}), state: {state}", event.text));
//!     Ok(state)
//! }
//!
//! /// Raw bytes are UTF-8 text to say.
//! #[handler(event = "bytes")]
//! fn bytes(data: Vec<u8>, state: i64, ctx: &mut Context) -> Result<i64, HandlerError> {
//!     let text = String::from_utf8(data)
//!         .map_err(|e| HandlerError::invalid_event(format!("not UTF-8: {e}")))?;
//!     ctx.dispatch(Say { text }, state)
//! }
//!
//! julato_sdk::function! {
//!     state: i64 = 0,
//!     handlers: [say, bytes],
//! }
//!
//! # fn main() {
//! // `function!` also defines `FUNCTION`, the handler table, to test the function
//! // on the host without any WebAssembly.
//! let info = julato_sdk::ContextInfo::default();
//! let state = FUNCTION.init_json().unwrap();
//! assert_eq!(state, "0");
//! let outcome = FUNCTION
//!     .handle(info.clone(), "bytes", Payload::Bytes(b"hi".to_vec()), &state)
//!     .unwrap();
//! assert_eq!(outcome.state, "1");
//! assert_eq!(outcome.reply.as_deref(), Some(r#""handle: Say(\"hi\"), state: 1""#));
//! let error = FUNCTION.handle(info, "Shout", Payload::Json("{}".into()), "1").unwrap_err();
//! assert_eq!(error, HandlerError::UnsupportedEventType("Shout".into()));
//! # }
//! ```
//!
//! # Building
//!
//! A function is a `cdylib` crate built for `wasm32-unknown-unknown`; the resulting
//! core module is turned into a component by `julato-componentize`. The component
//! imports nothing but the world's `log` function: no WASI. See `functions/README.md`
//! in the repository (`make functions` builds the examples).

// Lets the macros' `::julato_sdk::...` paths resolve inside this crate's own tests.
extern crate self as julato_sdk;

#[doc(hidden)]
pub mod bindings;
mod context;
mod error;
mod event;
mod function;
mod glue;

pub use context::{Context, ContextInfo, EmittedEvent, LogLevel, MAX_DISPATCH_DEPTH};
pub use error::HandlerError;
pub use event::{Event, Payload};
pub use function::{Function, Handler, Outcome};
pub use julato_sdk_macros::{Event, function, handler};

/// Support code for the macros' expansions; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::glue::{event_types, handle, init};
}

pub mod prelude {
    //! Everything a typical function needs, for `use julato_sdk::prelude::*;`.
    pub use crate::{Context, Event, HandlerError, LogLevel, Payload, function, handler};
}
