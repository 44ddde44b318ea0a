//! API errors: a status, a stable code and a message, written as JSON.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use julato_coordinator::Error;
use serde_json::json;

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// More fields of the error object, such as the failing event of a transaction.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: serde_json::Map::new() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }

    /// The body of this error, for answers that carry several.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "code": self.code, "message": self.message });
        for (name, value) in &self.details {
            body[name] = value.clone();
        }
        body
    }

    /// This error with one more field.
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(name.to_owned(), value.into());
        self
    }
}

/// The HTTP status of each coordinator error code.
fn status_of(code: &str) -> StatusCode {
    match code {
        "invalid_name"
        | "restore_point_out_of_range"
        | "token_partition_unknown"
        | "empty_transaction"
        | "invalid_timeout" => StatusCode::BAD_REQUEST,
        "too_many_events" => StatusCode::PAYLOAD_TOO_LARGE,
        "function_not_found"
        | "process_not_found"
        | "event_not_found"
        | "branch_not_found"
        | "version_out_of_range"
        | "seq_out_of_range"
        | "transaction_not_found"
        | "dead_letter_not_found" => StatusCode::NOT_FOUND,
        "version_conflict" | "idempotency_key_reused" | "transaction_aborted" => {
            StatusCode::CONFLICT
        }
        "process_overloaded" => StatusCode::TOO_MANY_REQUESTS,
        "handler_timeout" => StatusCode::GATEWAY_TIMEOUT,
        "overloaded" | "shutting_down" | "token_not_reached" | "time_not_settled" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        "storage_failed" | "component_unavailable" | "replay_failed" | "internal" => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let code = error.code();
        let status = status_of(code);
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(code, error = %error, "request failed");
        }
        let answer = Self::new(status, code, error.to_string());
        let (answer, error) = match error {
            // The event's own error, marked: the transaction it was added to
            // is aborted.
            Error::AbortedBy { id, source } => {
                (answer.with("transaction", id).with("transaction_aborted", true), *source)
            }
            error => (answer, error),
        };
        match error {
            Error::Transaction { index: Some(index), process, .. } => match process {
                Some(process) => answer
                    .with("event", index)
                    .with("function", process.function.as_str())
                    .with("key", process.key.as_str()),
                None => answer.with("event", index),
            },
            _ => answer,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.body() });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE
            || self.status == StatusCode::REQUEST_TIMEOUT
        {
            // A body over its limit is left unread, after which the server
            // closes the connection: say so, so the client does not reuse it.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
