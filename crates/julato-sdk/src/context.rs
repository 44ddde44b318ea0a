//! [`Context`]: what a handler knows about the event besides its data, and how it
//! replies, emits events, logs and dispatches.

use std::any::{Any, type_name};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::{Event, Function, HandlerError, Payload};

/// How deeply [`Context::dispatch`] may nest before failing, which stops adapters
/// that dispatch to each other from looping forever.
pub const MAX_DISPATCH_DEPTH: u32 = 32;

/// What the host says about the event being applied: the world's `context` record.
///
/// Everything a handler may depend on besides the event and the state comes from
/// here, so that replaying the log reproduces every state exactly. `Default` gives an
/// empty context, handy in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ContextInfo {
    /// Name of the deployed function.
    pub function: String,
    /// Key of the process within the function.
    pub key: String,
    /// Position of this event in the global log.
    pub seq: u64,
    /// Version the process will have once this event is applied (1 for the first).
    pub version: u64,
    /// Event time, nanoseconds since the Unix epoch, taken from the event record.
    pub time_unix_nanos: u64,
    /// Version of the function that handles this event.
    pub function_version: u32,
}

/// An event a handler sends to another process (or to another key of the same
/// function); the host delivers emitted events in emission order once the handler's
/// outcome is committed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmittedEvent {
    /// The receiving function.
    pub function: String,
    /// The receiving process's key.
    pub key: String,
    /// The event type.
    pub event_type: String,
    /// The event data.
    pub data: Payload,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the function handled.
    Warn,
    /// Something failed.
    Error,
}

/// A handler's view of the event being applied, and its way to act beyond the new
/// state: reply to the sender, emit events to other processes, log, and dispatch
/// another event through the same function.
///
/// The SDK creates one context per event the host delivers; a test can make one with
/// [`Context::new`].
#[derive(Debug)]
pub struct Context {
    info: ContextInfo,
    reply: Option<String>,
    emits: Vec<EmittedEvent>,
    failure: Option<HandlerError>,
    function: Option<&'static (dyn Any + Send + Sync)>,
    depth: u32,
}

impl Context {
    /// A context for an event described by `info`, with no reply and no emitted event
    /// yet.
    ///
    /// It is attached to no function until [`Function::call`] or
    /// [`Function::handle`] uses it, so [`Context::dispatch`] fails before that.
    pub fn new(info: ContextInfo) -> Self {
        Self { info, reply: None, emits: Vec::new(), failure: None, function: None, depth: 0 }
    }

    /// Everything the host said about the event.
    pub fn context_info(&self) -> &ContextInfo {
        &self.info
    }

    /// Name of the deployed function.
    pub fn function(&self) -> &str {
        &self.info.function
    }

    /// Key of the process the event is applied to.
    pub fn key(&self) -> &str {
        &self.info.key
    }

    /// Position of the event in the global log.
    pub fn seq(&self) -> u64 {
        self.info.seq
    }

    /// Version the process will have once this event is applied (1 for the first).
    pub fn version(&self) -> u64 {
        self.info.version
    }

    /// Event time in nanoseconds since the Unix epoch, from the event record (not the
    /// clock, so that replays agree).
    pub fn time_unix_nanos(&self) -> u64 {
        self.info.time_unix_nanos
    }

    /// Event time, from the event record.
    pub fn time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.info.time_unix_nanos)
    }

    /// Version of the function that handles this event.
    pub fn function_version(&self) -> u32 {
        self.info.function_version
    }

    /// Replies `value`, as JSON, to the sender of the event. A later reply replaces an
    /// earlier one.
    ///
    /// If `value` cannot be encoded as JSON (a map with non-string keys, say), the
    /// handler's outcome becomes [`HandlerError::Rejected`] explaining why.
    ///
    /// ```
    /// use julato_sdk::{Context, ContextInfo};
    ///
    /// let mut ctx = Context::new(ContextInfo::default());
    /// ctx.reply("done");
    /// assert_eq!(ctx.replied(), Some("\"done\""));
    /// ```
    pub fn reply(&mut self, value: impl Serialize) {
        match serde_json::to_string(&value) {
            Ok(json) => self.reply = Some(json),
            Err(e) => self.fail(format!("the reply cannot be encoded as JSON: {e}")),
        }
    }

    /// The reply so far, as JSON text.
    pub fn replied(&self) -> Option<&str> {
        self.reply.as_deref()
    }

    /// Sends the typed `event` to process `key` of `function`, as JSON with the
    /// event's [`Event::TYPE`].
    ///
    /// If `event` cannot be encoded as JSON, the handler's outcome becomes
    /// [`HandlerError::Rejected`] explaining why.
    ///
    /// ```
    /// use julato_sdk::{Context, ContextInfo, Event, Payload};
    /// use serde::Serialize;
    ///
    /// #[derive(Serialize, Event)]
    /// struct Deposit {
    ///     amount: i64,
    /// }
    ///
    /// let mut ctx = Context::new(ContextInfo::default());
    /// ctx.emit("account", "alice", Deposit { amount: 5 });
    /// let sent = &ctx.emitted()[0];
    /// assert_eq!((sent.function.as_str(), sent.key.as_str()), ("account", "alice"));
    /// assert_eq!(sent.event_type, "Deposit");
    /// assert_eq!(sent.data, Payload::Json(r#"{"amount":5}"#.into()));
    /// ```
    pub fn emit<E: Event + Serialize>(
        &mut self,
        function: impl Into<String>,
        key: impl Into<String>,
        event: E,
    ) {
        self.emit_json(function, key, E::TYPE, event);
    }

    /// Sends `value`, as JSON, to process `key` of `function` as an event of type
    /// `event_type`: for events without a Rust type.
    ///
    /// If `value` cannot be encoded as JSON, the handler's outcome becomes
    /// [`HandlerError::Rejected`] explaining why.
    pub fn emit_json(
        &mut self,
        function: impl Into<String>,
        key: impl Into<String>,
        event_type: impl Into<String>,
        value: impl Serialize,
    ) {
        let event_type = event_type.into();
        match serde_json::to_string(&value) {
            Ok(json) => self.emits.push(EmittedEvent {
                function: function.into(),
                key: key.into(),
                event_type,
                data: Payload::Json(json),
            }),
            Err(e) => self.fail(format!("emitted event {event_type} cannot be encoded: {e}")),
        }
    }

    /// Sends raw bytes to process `key` of `function` as an event of type
    /// `event_type`.
    pub fn emit_bytes(
        &mut self,
        function: impl Into<String>,
        key: impl Into<String>,
        event_type: impl Into<String>,
        data: impl Into<Vec<u8>>,
    ) {
        self.emits.push(EmittedEvent {
            function: function.into(),
            key: key.into(),
            event_type: event_type.into(),
            data: Payload::Bytes(data.into()),
        });
    }

    /// The events emitted so far, in emission order.
    pub fn emitted(&self) -> &[EmittedEvent] {
        &self.emits
    }

    /// Writes a line to the host's log, which tags it with the function, the process
    /// and the event's seq. Off WebAssembly (in tests), the line goes to stderr.
    pub fn log(&self, level: LogLevel, message: impl AsRef<str>) {
        crate::glue::log(level, message.as_ref());
    }

    /// Logs at [`LogLevel::Trace`].
    pub fn trace(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Trace, message);
    }

    /// Logs at [`LogLevel::Debug`].
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Debug, message);
    }

    /// Logs at [`LogLevel::Info`].
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Info, message);
    }

    /// Logs at [`LogLevel::Warn`].
    pub fn warn(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Warn, message);
    }

    /// Logs at [`LogLevel::Error`].
    pub fn error(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Error, message);
    }

    /// Handles `event` with `state` as if it had arrived from the host: through the
    /// same function's handler for [`Event::TYPE`], with this context (so replies and
    /// emitted events accumulate). Returns that handler's new state.
    ///
    /// This is how an adapter handler turns one event into another.
    ///
    /// # Errors
    ///
    /// Whatever the handler returns; [`HandlerError::UnsupportedEventType`] when the
    /// function has no handler for the type; [`HandlerError::InvalidEvent`] when the
    /// event cannot be encoded; [`HandlerError::Rejected`] when dispatches nest deeper
    /// than [`MAX_DISPATCH_DEPTH`] or the context is attached to no function (see
    /// [`Context::new`]); [`HandlerError::InvalidState`] when `S` is not the
    /// function's state type.
    pub fn dispatch<E: Event + Serialize, S: 'static>(
        &mut self,
        event: E,
        state: S,
    ) -> Result<S, HandlerError> {
        let json = serde_json::to_string(&event).map_err(|e| {
            HandlerError::InvalidEvent(format!("event {} cannot be encoded: {e}", E::TYPE))
        })?;
        self.dispatch_payload(E::TYPE, Payload::Json(json), state)
    }

    /// Handles an event of type `event_type` with data `payload`, like
    /// [`Context::dispatch`] but untyped.
    ///
    /// # Errors
    ///
    /// As [`Context::dispatch`].
    pub fn dispatch_payload<S: 'static>(
        &mut self,
        event_type: &str,
        payload: Payload,
        state: S,
    ) -> Result<S, HandlerError> {
        let Some(function) = self.function else {
            return Err(HandlerError::Rejected(format!(
                "cannot dispatch {event_type}: the context is attached to no function"
            )));
        };
        let Some(function) = function.downcast_ref::<Function<S>>() else {
            return Err(HandlerError::InvalidState(format!(
                "cannot dispatch {event_type}: the function's state is not a {}",
                type_name::<S>()
            )));
        };
        function.call(self, event_type, payload, state)
    }

    /// Records the first encoding failure of a reply or an emitted event.
    fn fail(&mut self, message: String) {
        self.failure.get_or_insert(HandlerError::Rejected(message));
    }

    /// Attaches the context to `function` for one more level of dispatch, or fails
    /// when that is too deep. Returns the previous attachment for [`Context::leave`].
    pub(crate) fn enter(
        &mut self,
        function: &'static (dyn Any + Send + Sync),
        event_type: &str,
    ) -> Result<Option<&'static (dyn Any + Send + Sync)>, HandlerError> {
        if self.depth >= MAX_DISPATCH_DEPTH {
            return Err(HandlerError::Rejected(format!(
                "cannot dispatch {event_type}: dispatches nest deeper than \
                 {MAX_DISPATCH_DEPTH} (do adapters dispatch to each other?)"
            )));
        }
        self.depth += 1;
        Ok(self.function.replace(function))
    }

    /// Undoes [`Context::enter`].
    pub(crate) fn leave(&mut self, previous: Option<&'static (dyn Any + Send + Sync)>) {
        self.depth -= 1;
        self.function = previous;
    }

    /// Takes the reply, the emitted events and the first encoding failure.
    pub(crate) fn finish(self) -> (Option<String>, Vec<EmittedEvent>, Option<HandlerError>) {
        (self.reply, self.emits, self.failure)
    }
}
