//! The store's metrics, recorded through the `metrics` facade: how many events
//! and commits each fsync'd group carried and how long its write took. Without
//! an installed recorder they cost next to nothing.

use std::time::Duration;

/// Histogram: events written by one group, that is by one fsync.
pub const FSYNC_BATCH_EVENTS: &str = "julato_store_fsync_batch_events";
/// Histogram: commits (one per shard batch, deploy, checkpoint …) in one group.
pub const FSYNC_BATCH_COMMITS: &str = "julato_store_fsync_batch_commits";
/// Histogram: seconds to write one group and fsync it.
pub const FSYNC_DURATION: &str = "julato_store_fsync_duration_seconds";

/// Describes the store's metrics to the installed recorder.
pub fn describe() {
    metrics::describe_histogram!(FSYNC_BATCH_EVENTS, "Events written by one fsync'd group");
    metrics::describe_histogram!(FSYNC_BATCH_COMMITS, "Commits written by one fsync'd group");
    metrics::describe_histogram!(
        FSYNC_DURATION,
        metrics::Unit::Seconds,
        "Time to write one group and fsync it"
    );
}

/// Records a group that is durable.
pub(crate) fn group_written(commits: usize, events: usize, took: Duration) {
    metrics::histogram!(FSYNC_BATCH_COMMITS).record(commits as f64);
    metrics::histogram!(FSYNC_BATCH_EVENTS).record(events as f64);
    metrics::histogram!(FSYNC_DURATION).record(took);
}
