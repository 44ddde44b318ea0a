//! Rebuilding a process's state from the log: the newest snapshot at or before
//! the wanted version, then the events after it, each run by the function
//! version that first handled it. Shards use it to rehydrate an evicted
//! process; readers use it for time travel.

use std::sync::Arc;

use julato_core::{
    EventRecord, Fold, FunctionVersion, ProcessId, RebuildError, Rebuilt, Version, history,
};
use julato_executor::HandlerContext;
use julato_store::Store;

use crate::{Catalog, SendError};

/// Runs replays against the store and the catalog's compiled functions.
#[derive(Clone)]
pub struct Replayer {
    store: Store,
    catalog: Arc<Catalog>,
}

/// The executor as a [`Fold`] over one process's events.
struct HandlerFold<'a> {
    catalog: &'a Catalog,
    process: &'a ProcessId,
}

impl Fold for HandlerFold<'_> {
    type Error = SendError;

    fn init(&mut self, function_version: FunctionVersion) -> Result<String, SendError> {
        let loaded = self.catalog.loaded(&self.process.function, function_version)?;
        let state = self.catalog.executor().init(
            &loaded,
            self.process.function.as_str(),
            self.process.key.as_str(),
        )?;
        Ok(state)
    }

    fn apply(&mut self, event: &EventRecord, state: &str) -> Result<String, SendError> {
        let loaded = self.catalog.loaded(&self.process.function, event.function_version)?;
        let outcome = self.catalog.executor().handle(
            &loaded,
            &context_of(event),
            &event.event_type,
            &event.payload,
            state,
        )?;
        Ok(outcome.state)
    }
}

/// The context a handler saw when it first handled `event`; replay hands it the same.
pub fn context_of(event: &EventRecord) -> HandlerContext {
    HandlerContext {
        function: event.function.as_str().to_owned(),
        key: event.key.as_str().to_owned(),
        seq: event.seq.0,
        version: event.version.0,
        time_unix_nanos: event.time.0,
        function_version: event.function_version.0,
    }
}

impl Replayer {
    pub fn new(store: Store, catalog: Arc<Catalog>) -> Self {
        Self { store, catalog }
    }

    /// The state of `process` after exactly `target` events on the live timeline.
    ///
    /// # Errors
    /// [`SendError::Storage`] when the store fails or the log has a gap, and
    /// [`SendError::ReplayFailed`] when a handler that once accepted an event
    /// refuses it on replay (a function that is not deterministic).
    pub fn rebuild(&self, process: &ProcessId, target: Version) -> Result<Rebuilt, SendError> {
        self.rebuild_with(process, target, true)
    }

    /// Like [`Replayer::rebuild`] but ignoring every snapshot: the state is
    /// replayed from the initial one, event by event. Audits use it to check
    /// that snapshots and the log agree.
    ///
    /// # Errors
    /// As [`Replayer::rebuild`].
    pub fn replay_from_start(
        &self,
        process: &ProcessId,
        target: Version,
    ) -> Result<Rebuilt, SendError> {
        self.rebuild_with(process, target, false)
    }

    fn rebuild_with(
        &self,
        process: &ProcessId,
        target: Version,
        use_snapshots: bool,
    ) -> Result<Rebuilt, SendError> {
        let storage = |e: julato_store::Error| SendError::Storage(e.to_string());
        let snapshot = if use_snapshots {
            self.store.snapshot_at_or_before(process, target).map_err(storage)?
        } else {
            None
        };
        let base = snapshot.as_ref().map_or(Version(0), |s| s.version);
        let events =
            self.store.history(process, base.next(), target, usize::MAX).map_err(storage)?;
        let first_function_version = match (&snapshot, events.first()) {
            (Some(s), _) => s.function_version,
            (None, Some(first)) => first.function_version,
            (None, None) => self.first_function_version(process)?,
        };
        let mut fold = HandlerFold { catalog: &self.catalog, process };
        history::rebuild(&mut fold, target, snapshot, first_function_version, events).map_err(|e| {
            match e {
                RebuildError::Fold(SendError::Rejected(rejection)) => SendError::ReplayFailed {
                    process: process.to_string(),
                    message: rejection.to_string(),
                },
                RebuildError::Fold(other) => other,
                RebuildError::Gap { missing } => SendError::Storage(format!(
                    "the log of {process} has no version {missing}; it cannot be rebuilt"
                )),
            }
        })
    }

    /// The function version that made a process's initial state: the one that
    /// handled its first event, or the newest for a process with none yet.
    fn first_function_version(&self, process: &ProcessId) -> Result<FunctionVersion, SendError> {
        let first = self
            .store
            .history(process, Version(1), Version(1), 1)
            .map_err(|e| SendError::Storage(e.to_string()))?;
        match first.first() {
            Some(event) => Ok(event.function_version),
            None => self
                .catalog
                .latest(&process.function)
                .ok_or_else(|| SendError::UnknownFunction(process.function.clone())),
        }
    }
}
