//! Reading a process as of an earlier point: snapshots, the bounds a reader may
//! name (a version, a log position or a time), and the rule that rebuilds a
//! state from the newest snapshot at or before a version plus the events after it.
//!
//! A snapshot is a cache of a fold over the log, never a second source of truth:
//! every state can be rebuilt from the log alone, and a state rebuilt from a
//! snapshot is byte-identical to one replayed from the first event.

use serde::{Deserialize, Serialize};

use crate::{EventRecord, EventTime, FunctionVersion, Seq, Version};

/// The stored state of one process at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: Version,
    /// Seq of the event that produced this version.
    pub seq: Seq,
    /// Time of that event.
    pub time: EventTime,
    /// The function version that produced the state.
    pub function_version: FunctionVersion,
    /// The state, as the handler returned it.
    pub state: String,
}

/// When a process is snapshotted as it runs: every `every` versions; zero turns
/// interval snapshots off (eviction and checkpoints still take them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    pub every: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self { every: 100 }
    }
}

impl SnapshotPolicy {
    /// Whether the state at `version` is due for a snapshot.
    pub fn due(self, version: Version) -> bool {
        self.every > 0 && version.0 > 0 && version.0.is_multiple_of(self.every)
    }
}

/// A point in a process's history that a reader names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// After exactly this many events; 0 is the initial state.
    Version(Version),
    /// After every event of the process at or before this log position.
    Seq(Seq),
    /// After every event of the process whose time is at or before this one.
    Time(EventTime),
}

/// Why a point could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsOfError {
    #[error("version {asked} is past the process's newest version {newest}")]
    VersionOutOfRange { asked: Version, newest: Version },
    #[error("seq {asked} is past the end of the log ({end})")]
    SeqOutOfRange { asked: Seq, end: Seq },
}

/// Where each version of a process sits in the log.
pub trait VersionIndex {
    type Error;
    /// Seq and time of the event that produced `version` (1 ≤ version ≤ newest).
    fn position(&self, version: Version) -> Result<(Seq, EventTime), Self::Error>;
}

/// The version a point names, for a process whose newest version is `newest`
/// and a log that ends at `log_end`.
///
/// Versions of a process have increasing seqs and non-decreasing times, so the
/// last version at or before a seq or time is found by binary search: about
/// 20 index reads for a process with a million events.
///
/// # Errors
/// [`AsOfError`] (wrapped with `E::from`) for a version past `newest` or a seq
/// past `log_end`; index read failures as they come.
pub fn resolve<I, E>(index: &I, newest: Version, log_end: Seq, point: AsOf) -> Result<Version, E>
where
    I: VersionIndex<Error = E>,
    E: From<AsOfError>,
{
    match point {
        AsOf::Version(asked) if asked > newest => {
            Err(AsOfError::VersionOutOfRange { asked, newest }.into())
        }
        AsOf::Version(asked) => Ok(asked),
        AsOf::Seq(asked) if asked > log_end => {
            Err(AsOfError::SeqOutOfRange { asked, end: log_end }.into())
        }
        AsOf::Seq(asked) => last_version_where(newest, |v| Ok(index.position(v)?.0 <= asked)),
        AsOf::Time(asked) => last_version_where(newest, |v| Ok(index.position(v)?.1 <= asked)),
    }
}

/// The largest version `v` in `1..=newest` for which `holds(v)`, or 0 if none;
/// `holds` must be true up to some version and false after it.
fn last_version_where<E>(
    newest: Version,
    mut holds: impl FnMut(Version) -> Result<bool, E>,
) -> Result<Version, E> {
    let (mut low, mut high) = (0u64, newest.0);
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        if holds(Version(middle))? {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    Ok(Version(low))
}

/// How a handler folds one event into a state, for replay.
pub trait Fold {
    type Error;
    /// The initial state, made by the function version that handled the first event.
    fn init(&mut self, function_version: FunctionVersion) -> Result<String, Self::Error>;
    /// The state after `event`, made by `event.function_version`.
    fn apply(&mut self, event: &EventRecord, state: &str) -> Result<String, Self::Error>;
}

/// A state rebuilt at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub version: Version,
    pub state: String,
    /// The version of the snapshot the rebuild started from, if any.
    pub from_snapshot: Option<Version>,
    /// Events replayed on top of it.
    pub replayed: u64,
}

/// Why a rebuild failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuildError<E> {
    #[error("replay failed: {0}")]
    Fold(E),
    #[error("the log is missing version {missing} of the process")]
    Gap { missing: Version },
}

/// Rebuilds the state at `target` from the newest snapshot at or before it (if
/// any) and the events after it, which must be the process's events with
/// versions `snapshot + 1 ..= target` in order. `first_function_version` makes
/// the initial state when there is no snapshot.
///
/// # Errors
/// [`RebuildError::Gap`] when the events are not exactly the versions needed;
/// [`RebuildError::Fold`] when the fold fails.
pub fn rebuild<F: Fold>(
    fold: &mut F,
    target: Version,
    snapshot: Option<Snapshot>,
    first_function_version: FunctionVersion,
    events: impl IntoIterator<Item = EventRecord>,
) -> Result<Rebuilt, RebuildError<F::Error>> {
    let snapshot = snapshot.filter(|s| s.version <= target);
    let from_snapshot = snapshot.as_ref().map(|s| s.version);
    let (mut version, mut state) = match snapshot {
        Some(s) => (s.version, s.state),
        None => (Version(0), fold.init(first_function_version).map_err(RebuildError::Fold)?),
    };
    let mut replayed = 0;
    let mut events = events.into_iter();
    while version < target {
        let missing = version.next();
        let event = events.next().filter(|e| e.version == missing);
        let Some(event) = event else {
            return Err(RebuildError::Gap { missing });
        };
        state = fold.apply(&event, &state).map_err(RebuildError::Fold)?;
        version = missing;
        replayed += 1;
    }
    Ok(Rebuilt { version, state, from_snapshot, replayed })
}

#[cfg(test)]
mod tests;
