//! The glue between the world's generated bindings and a [`Function`]: what the
//! `Guest` implementation that [`function!`](crate::function) writes calls.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::julato::function::types as wit;
use crate::{ContextInfo, EmittedEvent, Function, HandlerError, LogLevel, Payload};

/// The world's `event-types` export.
pub fn event_types<S>(function: &'static Function<S>) -> Vec<String> {
    function.event_types()
}

/// Sends a panic's message to the host's log before the guest aborts, so the
/// trap the host reports can say why. Installed once, on the first call.
fn report_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|panic| {
            log(LogLevel::Error, &format!("guest panicked: {panic}"));
        }));
    });
}

/// The world's `init` export.
///
/// # Errors
///
/// As [`Function::init_json`].
pub fn init<S: Serialize + DeserializeOwned>(
    function: &'static Function<S>,
) -> Result<String, wit::HandlerError> {
    report_panics();
    function.init_json().map_err(Into::into)
}

/// The world's `handle` export.
///
/// # Errors
///
/// As [`Function::handle`].
pub fn handle<S: Serialize + DeserializeOwned>(
    function: &'static Function<S>,
    ctx: wit::Context,
    event: wit::Event,
    state: String,
) -> Result<wit::Outcome, wit::HandlerError> {
    report_panics();
    let info = ContextInfo {
        function: ctx.function,
        key: ctx.key,
        seq: ctx.seq,
        version: ctx.version,
        time_unix_nanos: ctx.time_unix_nanos,
        function_version: ctx.function_version,
    };
    let outcome = function.handle(info, &event.event_type, event.data.into(), &state)?;
    Ok(wit::Outcome {
        state: outcome.state,
        reply: outcome.reply,
        emits: outcome.emits.into_iter().map(Into::into).collect(),
    })
}

/// Writes a log line through the world's `log` import.
#[cfg(target_arch = "wasm32")]
pub(crate) fn log(level: LogLevel, message: &str) {
    crate::bindings::log(level.into(), message);
}

/// Off WebAssembly there is no host: log lines go to stderr.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn log(level: LogLevel, message: &str) {
    eprintln!("[{level:?}] {message}");
}

impl From<wit::Payload> for Payload {
    fn from(payload: wit::Payload) -> Self {
        match payload {
            wit::Payload::Json(text) => Self::Json(text),
            wit::Payload::Bytes(bytes) => Self::Bytes(bytes),
        }
    }
}

impl From<Payload> for wit::Payload {
    fn from(payload: Payload) -> Self {
        match payload {
            Payload::Json(text) => Self::Json(text),
            Payload::Bytes(bytes) => Self::Bytes(bytes),
        }
    }
}

impl From<EmittedEvent> for wit::EmittedEvent {
    fn from(event: EmittedEvent) -> Self {
        Self {
            function: event.function,
            key: event.key,
            event_type: event.event_type,
            data: event.data.into(),
        }
    }
}

impl From<HandlerError> for wit::HandlerError {
    fn from(error: HandlerError) -> Self {
        match error {
            HandlerError::UnsupportedEventType(t) => Self::UnsupportedEventType(t),
            HandlerError::InvalidEvent(m) => Self::InvalidEvent(m),
            HandlerError::InvalidState(m) => Self::InvalidState(m),
            HandlerError::Rejected(m) => Self::Rejected(m),
        }
    }
}

impl From<LogLevel> for wit::LogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => Self::Trace,
            LogLevel::Debug => Self::Debug,
            LogLevel::Info => Self::Info,
            LogLevel::Warn => Self::Warn,
            LogLevel::Error => Self::Error,
        }
    }
}
