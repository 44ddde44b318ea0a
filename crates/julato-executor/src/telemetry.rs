//! The executor's metrics, recorded through the `metrics` facade: how long
//! each handler call took and how it ended. Without an installed recorder they
//! cost next to nothing.

use std::time::Duration;

use crate::Rejection;

/// Histogram: seconds one handler call took, checks of its output included.
pub const HANDLER_DURATION: &str = "julato_handler_duration_seconds";
/// Counter: handler calls by `outcome`, `accepted` or the rejection's code.
pub const HANDLER_INVOCATIONS: &str = "julato_handler_invocations_total";

/// Describes the executor's metrics to the installed recorder.
pub fn describe() {
    metrics::describe_histogram!(
        HANDLER_DURATION,
        metrics::Unit::Seconds,
        "Time one handler call took, checks of its output included"
    );
    metrics::describe_counter!(
        HANDLER_INVOCATIONS,
        "Handler calls by outcome: `accepted` or the rejection's code"
    );
}

/// Records one handler call and how it ended.
pub(crate) fn invoked<T>(result: &Result<T, Rejection>, took: Duration) {
    let outcome = match result {
        Ok(_) => "accepted",
        Err(rejection) => rejection.code(),
    };
    metrics::histogram!(HANDLER_DURATION).record(took);
    metrics::counter!(HANDLER_INVOCATIONS, "outcome" => outcome).increment(1);
}
