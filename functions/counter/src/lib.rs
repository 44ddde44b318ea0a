//! `counter`: counts what is said to it.
//!
//! The state is a JSON integer, 0 for a new process. Each `Say {"text": s}` adds 1 and
//! replies the JSON string `handle: Say("s"), state: n`, where `n` is the new state and
//! the text is Debug-quoted. Raw bytes (event type `bytes`) are said as their UTF-8
//! text. Any other event type is unsupported.

use julato_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Says something to the counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
pub struct Say {
    /// What is said.
    pub text: String,
}

/// Counts one more `Say` and replies what was said with the new count.
///
/// # Errors
///
/// [`HandlerError::Rejected`] if the count would overflow.
#[handler]
pub fn say(event: Say, state: i64, ctx: &mut Context) -> Result<i64, HandlerError> {
    let state =
        state.checked_add(1).ok_or_else(|| HandlerError::rejected("the count overflows"))?;
    ctx.reply(format!("handle: Say({:?}), state: {state}", event.text));
    Ok(state)
}

/// Adapts raw bytes: says their UTF-8 text.
///
/// # Errors
///
/// [`HandlerError::InvalidEvent`] if the bytes are not UTF-8; otherwise as [`say`].
#[handler(event = "bytes")]
pub fn bytes(data: Vec<u8>, state: i64, ctx: &mut Context) -> Result<i64, HandlerError> {
    let text = String::from_utf8(data)
        .map_err(|e| HandlerError::invalid_event(format!("bytes are not UTF-8 text: {e}")))?;
    ctx.dispatch(Say { text }, state)
}

julato_sdk::function! {
    state: i64 = 0,
    handlers: [say, bytes],
}

#[cfg(test)]
mod tests {
    use super::*;
    use julato_sdk::ContextInfo;

    fn handle(
        event_type: &str,
        payload: Payload,
        state: &str,
    ) -> Result<(String, String), HandlerError> {
        let outcome = FUNCTION.handle(ContextInfo::default(), event_type, payload, state)?;
        Ok((outcome.state, outcome.reply.expect("a reply")))
    }

    #[test]
    fn starts_at_zero() {
        assert_eq!(FUNCTION.init_json().unwrap(), "0");
        assert_eq!(FUNCTION.event_types(), ["Say", "bytes"]);
    }

    #[test]
    fn say_counts_and_replies() {
        let (state, reply) = handle("Say", Payload::Json(r#"{"text":"hi"}"#.into()), "0").unwrap();
        assert_eq!(state, "1");
        assert_eq!(reply, r#""handle: Say(\"hi\"), state: 1""#);
        let reply: String = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply, r#"handle: Say("hi"), state: 1"#);
    }

    #[test]
    fn bytes_are_said_as_text() {
        let (state, reply) = handle("bytes", Payload::Bytes(b"a \"q\"".to_vec()), "41").unwrap();
        assert_eq!(state, "42");
        let reply: String = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply, r#"handle: Say("a \"q\""), state: 42"#);
    }

    #[test]
    fn invalid_utf8_is_an_invalid_event() {
        let error = handle("bytes", Payload::Bytes(vec![0xc3, 0x28]), "0").unwrap_err();
        assert!(matches!(error, HandlerError::InvalidEvent(_)), "{error:?}");
    }

    #[test]
    fn other_event_types_are_unsupported() {
        let error = handle("Shout", Payload::Json("{}".into()), "0").unwrap_err();
        assert_eq!(error, HandlerError::UnsupportedEventType("Shout".into()));
    }

    #[test]
    fn say_without_text_is_an_invalid_event() {
        let error = handle("Say", Payload::Json("{}".into()), "0").unwrap_err();
        assert_eq!(
            error,
            HandlerError::InvalidEvent("missing field `text` at line 1 column 2".into())
        );
    }
}
