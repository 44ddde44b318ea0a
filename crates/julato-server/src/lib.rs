//! Julato's HTTP API: the routes of the product contract over the coordinator,
//! JSON in and out, errors as `{"error": {"code", "message"}}` with stable codes.

mod auth;
mod causal;
mod error;
mod rate;
mod routes;
mod shed;
mod telemetry;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use julato_coordinator::Coordinator;

pub use auth::{MIN_TOKEN_BYTES, Scope, TokenError, Tokens};
pub use error::ApiError;
pub use rate::RateLimit;
pub use routes::router;
pub use telemetry::install_metrics;

/// Default largest body of a single-event request.
pub const MAX_EVENT_BODY: usize = 1 << 20;
/// Default largest body of a bulk request.
pub const MAX_BULK_BODY: usize = 64 << 20;
/// Default largest component accepted by a deploy.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;
/// Default largest event data, in bytes of JSON or raw bytes.
pub const MAX_EVENT_DATA: usize = 256 << 10;
/// Default most events in one bulk request.
pub const MAX_BULK_EVENTS: usize = 100_000;
/// Default most requests worked on at once.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// What the HTTP layer enforces itself, before the coordinator sees a request.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub limits: RequestLimits,
    /// API tokens; when empty, every route is open.
    pub tokens: Tokens,
    /// Requests each client may make; `None` lets every client go as fast as
    /// the server answers.
    pub rate_limit: Option<RateLimit>,
}

/// Sizes and counts of requests; a request past one is refused alone, with
/// the limit's own code.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Largest body of a request other than a bulk request, a transaction or a
    /// deploy (`body_too_large`).
    pub event_body: usize,
    /// Largest body of a bulk request or a transaction (`body_too_large`).
    pub bulk_body: usize,
    /// Most events in one bulk request, or processes in one read
    /// (`too_many_events`).
    pub bulk_events: usize,
    /// Largest component a deploy accepts (`component_too_large`).
    pub component_bytes: usize,
    /// Largest event data, in bytes of JSON or raw bytes (`event_too_large`).
    pub event_data: usize,
    /// Most requests worked on at once; past it a request is answered 503
    /// `overloaded` (`/healthz` and `/metrics` are always answered).
    pub in_flight: usize,
    /// Longest wait for the next part of a request's body; a client silent
    /// longer is answered 408 `body_timeout`, so a stalled upload cannot hold
    /// its place among the requests in flight.
    pub body_timeout: std::time::Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            event_body: MAX_EVENT_BODY,
            bulk_body: MAX_BULK_BODY,
            bulk_events: MAX_BULK_EVENTS,
            component_bytes: MAX_COMPONENT_BYTES,
            event_data: MAX_EVENT_DATA,
            in_flight: MAX_IN_FLIGHT,
            body_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes the
/// requests in flight.
///
/// # Errors
/// Fails when the listener fails.
pub async fn serve(
    coordinator: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(coordinator, config);
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "listening");
    // The peer address keys the request rate of callers without a token.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
