//! [`HandlerError`]: why a function did not fold an event into the state.

use std::fmt;

/// Why a handler did not accept an event. Returning an error leaves the process's state
/// unchanged; the host reports the error to the sender.
///
/// The variants map one to one onto the world's `handler-error` variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HandlerError {
    /// The function has no handler for this event type; carries the event type.
    ///
    /// The SDK returns it by itself for event types not listed in
    /// [`function!`](crate::function).
    UnsupportedEventType(String),
    /// The event data could not be decoded for its handler (the SDK returns it with
    /// `serde_json`'s message when the JSON does not fit the event struct), or the
    /// handler found it malformed.
    InvalidEvent(String),
    /// The stored state could not be decoded by this function version, or the new
    /// state could not be encoded.
    InvalidState(String),
    /// The handler refused the event: a business rule, such as an overdraft.
    Rejected(String),
}

impl HandlerError {
    /// A refusal by a business rule, such as an overdraft.
    ///
    /// ```
    /// use julato_sdk::HandlerError;
    ///
    /// let e = HandlerError::rejected("insufficient funds");
    /// assert_eq!(e, HandlerError::Rejected("insufficient funds".into()));
    /// ```
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::Rejected(message.into())
    }

    /// An event whose data is malformed for its handler.
    pub fn invalid_event(message: impl Into<String>) -> Self {
        Self::InvalidEvent(message.into())
    }

    /// A state the function cannot work with.
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::InvalidState(message.into())
    }

    /// An event type the function does not handle.
    pub fn unsupported_event_type(event_type: impl Into<String>) -> Self {
        Self::UnsupportedEventType(event_type.into())
    }

    /// The message (or, for [`HandlerError::UnsupportedEventType`], the event type).
    pub fn message(&self) -> &str {
        match self {
            Self::UnsupportedEventType(m)
            | Self::InvalidEvent(m)
            | Self::InvalidState(m)
            | Self::Rejected(m) => m,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedEventType(t) => write!(f, "unsupported event type {t:?}"),
            Self::InvalidEvent(m) => write!(f, "invalid event: {m}"),
            Self::InvalidState(m) => write!(f, "invalid state: {m}"),
            Self::Rejected(m) => write!(f, "rejected: {m}"),
        }
    }
}

impl std::error::Error for HandlerError {}
