//! Events: the [`Event`] trait that names a typed event, and the raw [`Payload`].

use serde::de::DeserializeOwned;

use crate::HandlerError;

/// A typed event: a `serde` type with an event type name.
///
/// Derive it: the name is the type's name, unless `#[event(name = "...")]` says
/// otherwise. The name is what the host calls the event's `event-type`, what a
/// [`#[handler]`](crate::handler) taking this type handles, and what
/// [`Context::emit`](crate::Context::emit) and
/// [`Context::dispatch`](crate::Context::dispatch) send.
///
/// ```
/// use julato_sdk::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Event)]
/// struct Deposit {
///     amount: i64,
/// }
///
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(name = "account.closed")]
/// struct Closed {}
///
/// assert_eq!(Deposit::TYPE, "Deposit");
/// assert_eq!(Closed::TYPE, "account.closed");
/// ```
pub trait Event {
    /// The event type name.
    const TYPE: &'static str;
}

/// The body of an event as it crosses the boundary: JSON text, or raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Payload {
    /// JSON text.
    Json(String),
    /// Raw bytes, such as a file or a line of a data set.
    Bytes(Vec<u8>),
}

impl Payload {
    /// The payload as a JSON value of an event type.
    ///
    /// [`Payload::Bytes`] are parsed as JSON text too.
    ///
    /// # Errors
    ///
    /// [`HandlerError::InvalidEvent`] with `serde_json`'s message when the payload is
    /// not JSON of that type.
    ///
    /// ```
    /// use julato_sdk::{HandlerError, Payload};
    ///
    /// let n: i64 = Payload::Json("42".into()).decode().unwrap();
    /// assert_eq!(n, 42);
    /// let e = Payload::Json("\"x\"".into()).decode::<i64>().unwrap_err();
    /// assert!(matches!(e, HandlerError::InvalidEvent(_)));
    /// ```
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        let decoded = match self {
            Self::Json(text) => serde_json::from_str(text),
            Self::Bytes(bytes) => serde_json::from_slice(bytes),
        };
        decoded.map_err(|e| HandlerError::InvalidEvent(e.to_string()))
    }

    /// The payload's bytes: raw bytes as they are, JSON as its UTF-8 text.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Self::Json(text) => text.into_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }

    /// The payload's bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Json(text) => text.as_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }
}
