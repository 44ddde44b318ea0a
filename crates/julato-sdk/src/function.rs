//! [`Function`]: a state type, its initial value and a table of [`Handler`]s, and how
//! an event is folded into a state through them.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Context, ContextInfo, EmittedEvent, HandlerError, Payload};

/// The code of a handler, as [`#[handler]`](crate::handler) wraps it: decodes the
/// payload for the handler and calls it.
pub type HandlerFn<S> = fn(Payload, S, &mut Context) -> Result<S, HandlerError>;

/// One entry of a function's handler table: an event type and the code that folds
/// events of that type into a state of type `S`.
///
/// [`#[handler]`](crate::handler) makes one next to the handler it marks;
/// [`function!`](crate::function) collects them.
pub struct Handler<S> {
    event_type: &'static str,
    call: HandlerFn<S>,
}

impl<S> Handler<S> {
    /// A handler of events of type `event_type`.
    pub const fn new(event_type: &'static str, call: HandlerFn<S>) -> Self {
        Self { event_type, call }
    }

    /// The event type this handler handles.
    pub const fn event_type(&self) -> &'static str {
        self.event_type
    }
}

impl<S> Clone for Handler<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Handler<S> {}

impl<S> std::fmt::Debug for Handler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").field("event_type", &self.event_type).finish_non_exhaustive()
    }
}

/// What a function returns when it accepts an event: the world's `outcome` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The new state, as JSON text.
    pub state: String,
    /// The reply to the sender, as JSON text, if the handler replied.
    pub reply: Option<String>,
    /// Events to deliver to other processes, in emission order.
    pub emits: Vec<EmittedEvent>,
}

/// A Julato function: its state type `S`, the state of a new process and the
/// handler of each event type it accepts.
///
/// [`function!`](crate::function) defines one as `FUNCTION` and exports it; the
/// methods here are what the export calls, and let a test drive the function on the
/// host.
pub struct Function<S: 'static> {
    init: fn() -> S,
    handlers: &'static [Handler<S>],
}

impl<S: 'static> Function<S> {
    /// A function whose new processes start at `init()`, handling events with
    /// `handlers`.
    ///
    /// # Panics
    ///
    /// When two handlers handle the same event type. `function!` builds the function
    /// in a `static`, so this is a compile-time error there.
    pub const fn new(init: fn() -> S, handlers: &'static [Handler<S>]) -> Self {
        let mut i = 0;
        while i < handlers.len() {
            let mut j = i + 1;
            while j < handlers.len() {
                if str_eq(handlers[i].event_type, handlers[j].event_type) {
                    panic!("two handlers of a Julato function handle the same event type");
                }
                j += 1;
            }
            i += 1;
        }
        Self { init, handlers }
    }

    /// The event types the function handles, in the order of its handlers.
    pub fn event_types(&self) -> Vec<String> {
        self.handlers.iter().map(|h| h.event_type.to_owned()).collect()
    }

    /// The handler of `event_type`, if any.
    pub fn handler(&self, event_type: &str) -> Option<&Handler<S>> {
        self.handlers.iter().find(|h| h.event_type == event_type)
    }

    /// The state of a new process.
    pub fn initial_state(&self) -> S {
        (self.init)()
    }

    /// Folds an event of type `event_type` into the typed `state` with its handler,
    /// replying and emitting through `ctx`. This is what [`Context::dispatch`] calls.
    ///
    /// # Errors
    ///
    /// [`HandlerError::UnsupportedEventType`] when no handler handles `event_type`,
    /// [`HandlerError::Rejected`] when dispatches nest deeper than
    /// [`MAX_DISPATCH_DEPTH`](crate::MAX_DISPATCH_DEPTH), or the handler's error
    /// (including [`HandlerError::InvalidEvent`] when the payload does not decode).
    pub fn call(
        &'static self,
        ctx: &mut Context,
        event_type: &str,
        payload: Payload,
        state: S,
    ) -> Result<S, HandlerError> {
        let handler = self
            .handler(event_type)
            .ok_or_else(|| HandlerError::UnsupportedEventType(event_type.to_owned()))?;
        let previous = ctx.enter(self, event_type)?;
        let result = (handler.call)(payload, state, ctx);
        ctx.leave(previous);
        result
    }
}

impl<S: Serialize + DeserializeOwned + 'static> Function<S> {
    /// The state of a new process, as JSON text: what the world's `init` returns.
    ///
    /// # Errors
    ///
    /// [`HandlerError::InvalidState`] when the state cannot be encoded as JSON.
    pub fn init_json(&self) -> Result<String, HandlerError> {
        encode_state(&self.initial_state())
    }

    /// Folds one event into a JSON state: what the world's `handle` does.
    ///
    /// Looks up the handler of `event_type`, decodes `state`, calls the handler with a
    /// fresh [`Context`] built from `info`, and encodes the new state, the reply and
    /// the emitted events.
    ///
    /// # Errors
    ///
    /// [`HandlerError::UnsupportedEventType`] when no handler handles `event_type`;
    /// [`HandlerError::InvalidState`] when `state` does not decode as `S` or the new
    /// state does not encode; [`HandlerError::Rejected`] when the reply or an emitted
    /// event does not encode; otherwise the handler's error, including
    /// [`HandlerError::InvalidEvent`] when the payload does not decode.
    pub fn handle(
        &'static self,
        info: ContextInfo,
        event_type: &str,
        payload: Payload,
        state: &str,
    ) -> Result<Outcome, HandlerError> {
        if self.handler(event_type).is_none() {
            return Err(HandlerError::UnsupportedEventType(event_type.to_owned()));
        }
        let state: S = serde_json::from_str(state)
            .map_err(|e| HandlerError::InvalidState(format!("cannot decode the state: {e}")))?;
        let mut ctx = Context::new(info);
        let state = self.call(&mut ctx, event_type, payload, state)?;
        let (reply, emits, failure) = ctx.finish();
        if let Some(failure) = failure {
            return Err(failure);
        }
        Ok(Outcome { state: encode_state(&state)?, reply, emits })
    }
}

impl<S> std::fmt::Debug for Function<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function").field("handlers", &self.handlers).finish_non_exhaustive()
    }
}

fn encode_state<S: Serialize>(state: &S) -> Result<String, HandlerError> {
    serde_json::to_string(state)
        .map_err(|e| HandlerError::InvalidState(format!("cannot encode the state: {e}")))
}

/// `a == b`, in a `const fn`.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use crate::{Context, ContextInfo, Event, HandlerError, MAX_DISPATCH_DEPTH, Payload, handler};

    #[derive(Debug, Serialize, Deserialize, Event)]
    struct Say {
        text: String,
    }

    #[derive(Debug, Serialize, Deserialize, Event)]
    #[event(name = "counter.reset")]
    struct Reset {}

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct Counter {
        count: i64,
        last: Option<String>,
    }

    #[handler]
    fn say(event: Say, state: Counter, ctx: &mut Context) -> Result<Counter, HandlerError> {
        if event.text.is_empty() {
            return Err(HandlerError::rejected("nothing to say"));
        }
        let count = state.count + 1;
        ctx.reply(format!("{}: {count}", event.text));
        ctx.emit("echo", ctx.key().to_owned(), Say { text: event.text.clone() });
        Ok(Counter { count, last: Some(event.text) })
    }

    #[handler]
    fn reset(_event: Reset, _state: Counter) -> Result<Counter, HandlerError> {
        Ok(Counter::default())
    }

    #[handler(event = "bytes")]
    fn bytes(data: Vec<u8>, state: Counter, ctx: &mut Context) -> Result<Counter, HandlerError> {
        let text =
            String::from_utf8(data).map_err(|e| HandlerError::invalid_event(e.to_string()))?;
        ctx.dispatch(Say { text }, state)
    }

    /// Dispatches to itself forever.
    #[handler(event = "loop")]
    fn forever(data: Vec<u8>, state: Counter, ctx: &mut Context) -> Result<Counter, HandlerError> {
        ctx.dispatch_payload("loop", Payload::Bytes(data), state)
    }

    /// Dispatches with the wrong state type.
    #[handler(event = "confused")]
    fn confused(
        _data: Vec<u8>,
        state: Counter,
        ctx: &mut Context,
    ) -> Result<Counter, HandlerError> {
        ctx.dispatch(Say { text: "x".into() }, state.count)?;
        Ok(state)
    }

    /// Replies something that JSON cannot encode.
    #[handler(event = "bad-reply")]
    fn bad_reply(
        _data: Vec<u8>,
        state: Counter,
        ctx: &mut Context,
    ) -> Result<Counter, HandlerError> {
        ctx.reply(BTreeMap::from([((1, 2), 3)]));
        Ok(state)
    }

    crate::function! {
        state: Counter = Counter::default(),
        handlers: [say, reset, bytes, forever, confused, bad_reply],
    }

    fn info() -> ContextInfo {
        ContextInfo { function: "counter".into(), key: "k1".into(), ..ContextInfo::default() }
    }

    fn json(s: &str) -> Payload {
        Payload::Json(s.into())
    }

    #[test]
    fn lists_event_types_in_handler_order() {
        assert_eq!(
            FUNCTION.event_types(),
            ["Say", "counter.reset", "bytes", "loop", "confused", "bad-reply"]
        );
    }

    #[test]
    fn init_encodes_the_initial_state() {
        assert_eq!(FUNCTION.init_json().unwrap(), r#"{"count":0,"last":null}"#);
    }

    #[test]
    fn typed_handler_folds_replies_and_emits() {
        let state = FUNCTION.init_json().unwrap();
        let outcome = FUNCTION.handle(info(), "Say", json(r#"{"text":"hi"}"#), &state).unwrap();
        assert_eq!(outcome.state, r#"{"count":1,"last":"hi"}"#);
        assert_eq!(outcome.reply.as_deref(), Some(r#""hi: 1""#));
        assert_eq!(outcome.emits.len(), 1);
        let emitted = &outcome.emits[0];
        assert_eq!(emitted.function, "echo");
        assert_eq!(emitted.key, "k1");
        assert_eq!(emitted.event_type, "Say");
        assert_eq!(emitted.data, json(r#"{"text":"hi"}"#));
    }

    #[test]
    fn renamed_event_and_handler_without_context() {
        let outcome =
            FUNCTION.handle(info(), "counter.reset", json("{}"), r#"{"count":7,"last":"x"}"#);
        assert_eq!(outcome.unwrap().state, r#"{"count":0,"last":null}"#);
        let error = FUNCTION.handle(info(), "Reset", json("{}"), "{}").unwrap_err();
        assert_eq!(error, HandlerError::UnsupportedEventType("Reset".into()));
    }

    #[test]
    fn bytes_adapter_dispatches_to_the_typed_handler() {
        let outcome = FUNCTION
            .handle(info(), "bytes", Payload::Bytes(b"yo".to_vec()), r#"{"count":2,"last":null}"#)
            .unwrap();
        assert_eq!(outcome.state, r#"{"count":3,"last":"yo"}"#);
        assert_eq!(outcome.reply.as_deref(), Some(r#""yo: 3""#));
        assert_eq!(outcome.emits.len(), 1);
    }

    #[test]
    fn adapter_errors_propagate() {
        let state = FUNCTION.init_json().unwrap();
        let error =
            FUNCTION.handle(info(), "bytes", Payload::Bytes(vec![0xff, 0xfe]), &state).unwrap_err();
        assert!(matches!(error, HandlerError::InvalidEvent(_)), "{error:?}");
        let error = FUNCTION.handle(info(), "bytes", Payload::Bytes(vec![]), &state).unwrap_err();
        assert_eq!(error, HandlerError::Rejected("nothing to say".into()));
    }

    #[test]
    fn unknown_event_type_is_unsupported() {
        let error = FUNCTION.handle(info(), "Shout", json("{}"), "not even json").unwrap_err();
        assert_eq!(error, HandlerError::UnsupportedEventType("Shout".into()));
    }

    #[test]
    fn event_that_does_not_fit_is_invalid() {
        let state = FUNCTION.init_json().unwrap();
        let error = FUNCTION.handle(info(), "Say", json(r#"{"text":3}"#), &state).unwrap_err();
        let HandlerError::InvalidEvent(message) = error else { panic!("{error:?}") };
        assert!(message.contains("invalid type: integer `3`"), "{message}");
        let error = FUNCTION.handle(info(), "Say", json("{"), &state).unwrap_err();
        assert!(matches!(error, HandlerError::InvalidEvent(_)), "{error:?}");
    }

    #[test]
    fn typed_handler_accepts_json_bytes() {
        let state = FUNCTION.init_json().unwrap();
        let payload = Payload::Bytes(br#"{"text":"raw"}"#.to_vec());
        let outcome = FUNCTION.handle(info(), "Say", payload, &state).unwrap();
        assert_eq!(outcome.state, r#"{"count":1,"last":"raw"}"#);
    }

    #[test]
    fn state_that_does_not_fit_is_invalid() {
        let error = FUNCTION.handle(info(), "Say", json(r#"{"text":"a"}"#), "[1]").unwrap_err();
        assert!(matches!(error, HandlerError::InvalidState(_)), "{error:?}");
    }

    #[test]
    fn endless_dispatch_is_cut() {
        let state = FUNCTION.init_json().unwrap();
        let error = FUNCTION.handle(info(), "loop", Payload::Bytes(vec![]), &state).unwrap_err();
        let HandlerError::Rejected(message) = error else { panic!("{error:?}") };
        assert!(message.contains(&MAX_DISPATCH_DEPTH.to_string()), "{message}");
    }

    #[test]
    fn dispatch_with_another_state_type_fails() {
        let state = FUNCTION.init_json().unwrap();
        let error =
            FUNCTION.handle(info(), "confused", Payload::Bytes(vec![]), &state).unwrap_err();
        assert!(matches!(error, HandlerError::InvalidState(_)), "{error:?}");
    }

    #[test]
    fn unencodable_reply_rejects_the_event() {
        let state = FUNCTION.init_json().unwrap();
        let error =
            FUNCTION.handle(info(), "bad-reply", Payload::Bytes(vec![]), &state).unwrap_err();
        assert!(matches!(error, HandlerError::Rejected(_)), "{error:?}");
    }

    #[test]
    fn handlers_are_plain_functions() {
        let mut ctx = Context::new(info());
        let state = say(Say { text: "a".into() }, Counter::default(), &mut ctx).unwrap();
        assert_eq!(state.count, 1);
        assert_eq!(ctx.replied(), Some(r#""a: 1""#));
        let error = bytes(b"a".to_vec(), Counter::default(), &mut ctx).unwrap_err();
        assert!(matches!(error, HandlerError::Rejected(_)), "{error:?}");
    }

    #[test]
    fn call_attaches_the_context_for_dispatch() {
        let mut ctx = Context::new(info());
        let state = FUNCTION
            .call(&mut ctx, "bytes", Payload::Bytes(b"b".to_vec()), Counter::default())
            .unwrap();
        assert_eq!(state.last.as_deref(), Some("b"));
        assert_eq!(ctx.emitted().len(), 1);
    }

    #[test]
    fn context_exposes_the_event_details() {
        let ctx = Context::new(ContextInfo {
            function: "f".into(),
            key: "k".into(),
            seq: 10,
            version: 2,
            time_unix_nanos: 1_500_000_000,
            function_version: 3,
        });
        assert_eq!((ctx.function(), ctx.key()), ("f", "k"));
        assert_eq!((ctx.seq(), ctx.version(), ctx.function_version()), (10, 2, 3));
        assert_eq!(ctx.time_unix_nanos(), 1_500_000_000);
        let since_epoch = ctx.time().duration_since(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since_epoch.as_millis(), 1500);
    }

    #[test]
    #[should_panic(expected = "same event type")]
    fn duplicate_event_types_are_refused() {
        static HANDLERS: [crate::Handler<i64>; 2] =
            [crate::Handler::new("A", |_, s, _| Ok(s)), crate::Handler::new("A", |_, s, _| Ok(s))];
        let _ = crate::Function::new(|| 0, &HANDLERS);
    }
}
