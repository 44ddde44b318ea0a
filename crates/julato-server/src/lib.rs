//! Julato's HTTP API: the routes of the product contract over the coordinator,
//! JSON in and out, errors as `{"error": {"code", "message"}}` with stable codes.

mod causal;
mod error;
mod routes;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use julato_coordinator::Coordinator;

pub use error::ApiError;
pub use routes::router;

/// Largest body of a single-event request.
pub const MAX_EVENT_BODY: usize = 1 << 20;
/// Largest body of a bulk request.
pub const MAX_BULK_BODY: usize = 64 << 20;
/// Largest component accepted by a deploy.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;
/// Largest event data, in bytes of JSON or raw bytes.
pub const MAX_EVENT_DATA: usize = 256 << 10;
/// Most events in one bulk request.
pub const MAX_BULK_EVENTS: usize = 100_000;

/// Serves the API on `listener` until `shutdown` resolves, then finishes the
/// requests in flight.
///
/// # Errors
/// Fails when the listener fails.
pub async fn serve(
    coordinator: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(coordinator);
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
