//! Load shedding: a bound on the requests the server works on at once. A
//! request past it is answered 503 `overloaded` with `Retry-After` at once,
//! instead of waiting in memory; health checks and metric scrapes are always
//! answered, so operators can still see a saturated node.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::ApiError;

/// Paths never shed.
const ALWAYS_ANSWERED: [&str; 2] = ["/healthz", "/metrics"];

#[derive(Clone)]
struct InFlight {
    permits: Arc<Semaphore>,
    limit: usize,
}

/// Wraps `router` so at most `limit` requests run at once.
pub(crate) fn layer(router: Router, limit: usize) -> Router {
    let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
    let state = InFlight { permits: Arc::new(Semaphore::new(limit)), limit };
    router.layer(middleware::from_fn_with_state(state, admit))
}

async fn admit(State(in_flight): State<InFlight>, request: Request, next: Next) -> Response {
    if ALWAYS_ANSWERED.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    // Held until the answer is built; a streamed body is already complete by
    // then, since every route answers with a full body.
    match in_flight.permits.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("the server is already working on {} requests; retry later", in_flight.limit),
        )
        .into_response(),
    }
}
