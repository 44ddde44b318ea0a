//! Julato's durable event store: the embedded log, one data folder, on the fjall
//! storage engine. Only this crate touches the data folder's store files.
//!
//! Writers hand a [`Commit`] to [`Store::append`], which returns only once the
//! commit is fsync'd. Commits arriving while an fsync is under way are gathered
//! and written together with the next one (group commit), so concurrent writers
//! share the cost of each fsync.

mod commit;
mod keys;
pub mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use julato_core::{
    Branch, Checkpoint, DeadLetter, EventRecord, EventTime, FunctionInfo, FunctionName,
    FunctionVersion, Origin, OutboxEntry, ProcessHead, ProcessId, ProcessKey, Seq, Snapshot,
    Version,
};

use commit::Committer;
pub use commit::{Commit, Pending, Restore};

/// Errors of the event store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage engine failed while {doing}: {source}")]
    Engine {
        doing: &'static str,
        #[source]
        source: fjall::Error,
    },
    #[error("stored value under `{what}` is corrupt: {message}")]
    Corrupt { what: &'static str, message: String },
    #[error("cannot create the data folder `{path}`: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("group commit failed, nothing of it is acknowledged: {0}")]
    Commit(String),
    #[error("the store is shutting down")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn engine(doing: &'static str) -> impl FnOnce(fjall::Error) -> Error {
    move |source| Error::Engine { doing, source }
}

fn decode_position(value: &[u8]) -> Result<(Seq, EventTime)> {
    keys::decode_position(value)
        .ok_or_else(|| Error::Corrupt { what: "versions", message: "bad position".into() })
}

/// Decodes the value of the entry an iterator step found, if it found one.
fn decode_found<T: serde::de::DeserializeOwned>(
    found: Option<fjall::Guard>,
    doing: &'static str,
    what: &'static str,
) -> Result<Option<T>> {
    match found {
        None => Ok(None),
        Some(guard) => {
            let (_, value) = guard.into_inner().map_err(engine(doing))?;
            decode(what, &value).map(Some)
        }
    }
}

/// Decodes every value of an iterator, in order.
fn decode_all<T: serde::de::DeserializeOwned>(
    entries: impl Iterator<Item = fjall::Guard>,
    doing: &'static str,
    what: &'static str,
) -> Result<Vec<T>> {
    entries
        .map(|guard| {
            let (_, value) = guard.into_inner().map_err(engine(doing))?;
            decode(what, &value)
        })
        .collect()
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt { what, message: e.to_string() })
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain structs into a Vec cannot fail.
    postcard::to_allocvec(value).expect("postcard encoding of a store value")
}

/// The keyspaces of the data folder.
pub(crate) struct Tables {
    pub db: Database,
    /// seq → [`EventRecord`].
    pub log: Keyspace,
    /// function, key, version → seq.
    pub versions: Keyspace,
    /// function, key → [`ProcessHead`].
    pub heads: Keyspace,
    /// function, key, idempotency key → the first answer, as the coordinator wrote it.
    pub idempotency: Keyspace,
    /// function → [`FunctionInfo`].
    pub functions: Keyspace,
    /// function, version → component bytes.
    pub components: Keyspace,
    /// function, key, version → [`Snapshot`].
    pub snapshots: Keyspace,
    /// checkpoint id → [`Checkpoint`].
    pub checkpoints: Keyspace,
    /// restore id → [`Branch`].
    pub branches: Keyspace,
    /// branch, function, key, version → seq and time: version entries a restore
    /// took off the live timeline.
    pub archive: Keyspace,
    /// emitting seq, emit index → [`OutboxEntry`]: emitted events not yet delivered.
    pub outbox: Keyspace,
    /// emitting seq, emit index → [`DeadLetter`].
    pub dead_letters: Keyspace,
    /// cause seq, effect seq → nothing: the causal graph read forwards.
    pub effects: Keyspace,
}

/// Most journal the engine keeps before it flushes the oldest tables; the
/// engine's smallest allowed bound.
const MAX_JOURNAL_BYTES: u64 = 64 << 20;

/// Size at which a keyspace's in-memory table is flushed to disk.
const MAX_MEMTABLE_BYTES: u64 = 16 << 20;

/// Handle to the embedded event store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tables: Arc<Tables>,
    committer: Arc<Committer>,
    dir: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `dir/store`, recovering every committed event.
    ///
    /// # Errors
    /// Fails when the folder cannot be created or the engine cannot recover it.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("store");
        std::fs::create_dir_all(&path)
            .map_err(|source| Error::DataDir { path: path.clone(), source })?;
        // The journal holds what is not yet flushed to tables, and opening the
        // store replays all of it; a smaller bound keeps a restart after a
        // crash short. (A graceful stop flushes, see `Store::flush`.)
        let db = Database::builder(&path)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .open()
            .map_err(engine("opening the database"))?;
        // Small in-memory tables flush often, and each flush lets the engine
        // rotate and drop journal, which keeps the replay at open short.
        let options = || KeyspaceCreateOptions::default().max_memtable_size(MAX_MEMTABLE_BYTES);
        let open = |name: &str| db.keyspace(name, options).map_err(engine("opening a keyspace"));
        let tables = Arc::new(Tables {
            log: open("log")?,
            versions: open("versions")?,
            heads: open("heads")?,
            idempotency: open("idempotency")?,
            functions: open("functions")?,
            components: open("components")?,
            snapshots: open("snapshots")?,
            checkpoints: open("checkpoints")?,
            branches: open("branches")?,
            archive: open("archive")?,
            outbox: open("outbox")?,
            dead_letters: open("dead_letters")?,
            effects: open("effects")?,
            db,
        });
        let committer = Arc::new(Committer::start(tables.clone()));
        Ok(Self { tables, committer, dir: dir.to_path_buf() })
    }

    /// Flushes every keyspace's in-memory table to disk and waits, so the
    /// journal can be dropped and the next open has almost nothing to replay.
    /// Called on a graceful stop; durability never depends on it.
    ///
    /// # Errors
    /// Fails when the engine cannot write a table.
    pub fn flush(&self) -> Result<()> {
        let t = &self.tables;
        let keyspaces = [
            &t.log,
            &t.versions,
            &t.heads,
            &t.idempotency,
            &t.functions,
            &t.components,
            &t.snapshots,
            &t.checkpoints,
            &t.branches,
            &t.outbox,
            &t.dead_letters,
            &t.effects,
            &t.archive,
        ];
        for keyspace in keyspaces {
            keyspace.rotate_memtable_and_wait().map_err(engine("flushing a keyspace"))?;
        }
        Ok(())
    }

    /// The data folder this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a commit atomically and returns once it is fsync'd.
    ///
    /// # Errors
    /// Fails when the engine cannot write or sync; then nothing of the commit is
    /// acknowledged and the caller must not treat it as stored.
    pub fn append(&self, commit: Commit) -> Result<()> {
        self.committer.append(commit)
    }

    /// Queues a commit to be written after every commit queued before it, and
    /// returns at once; [`Pending::wait`] tells when it is durable. A failed
    /// commit stops the store from writing anything after it.
    pub fn submit(&self, commit: Commit) -> Pending {
        self.committer.submit(commit)
    }

    /// Number of fsyncs and of commits so far; their ratio is the group size.
    pub fn commit_stats(&self) -> (u64, u64) {
        self.committer.stats()
    }

    /// The newest event in the log, if any.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt record.
    pub fn last_event(&self) -> Result<Option<EventRecord>> {
        decode_found(self.tables.log.last_key_value(), "reading the log tail", "log")
    }

    /// The seq and time to continue after.
    ///
    /// # Errors
    /// As [`Store::last_event`].
    pub fn tail(&self) -> Result<(Seq, EventTime)> {
        Ok(self.last_event()?.map_or((Seq(0), EventTime(0)), |r| (r.seq, r.time)))
    }

    /// The newest state of a process, or `None` if it has no event yet.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt value.
    pub fn head(&self, process: &ProcessId) -> Result<Option<ProcessHead>> {
        let key = keys::process(&process.function, &process.key);
        match self.tables.heads.get(key).map_err(engine("reading a process head"))? {
            None => Ok(None),
            Some(bytes) => decode("heads", &bytes).map(Some),
        }
    }

    /// The answer stored for an idempotency key of a process.
    ///
    /// # Errors
    /// Fails on an engine error.
    pub fn idempotent_answer(
        &self,
        process: &ProcessId,
        idempotency_key: &str,
    ) -> Result<Option<Vec<u8>>> {
        let key = keys::idempotency(&process.function, &process.key, idempotency_key);
        let value = self.tables.idempotency.get(key).map_err(engine("reading idempotency"))?;
        Ok(value.map(|v| v.to_vec()))
    }

    /// One event by seq.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt record.
    pub fn event(&self, seq: Seq) -> Result<Option<EventRecord>> {
        match self.tables.log.get(keys::seq(seq)).map_err(engine("reading an event"))? {
            None => Ok(None),
            Some(bytes) => decode("log", &bytes).map(Some),
        }
    }

    /// Undelivered emitted events from `from` on, whose emitting event is at
    /// or before `upto`, in delivery order; at most `limit`.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt entry.
    pub fn outbox(&self, from: Origin, upto: Seq, limit: usize) -> Result<Vec<OutboxEntry>> {
        if from.seq > upto {
            return Ok(Vec::new());
        }
        let end = keys::origin(Origin { seq: upto, index: u32::MAX });
        let range = self.tables.outbox.range(keys::origin(from)..=end);
        decode_all(range.take(limit), "scanning the outbox", "outbox")
    }

    /// Whether an emitted event still waits for delivery.
    ///
    /// # Errors
    /// Fails on an engine error.
    pub fn in_outbox(&self, origin: Origin) -> Result<bool> {
        self.tables.outbox.contains_key(keys::origin(origin)).map_err(engine("reading the outbox"))
    }

    /// Emitted events waiting for delivery, counted (a scan: for start-up and operators).
    ///
    /// # Errors
    /// Fails on an engine error.
    pub fn outbox_len(&self) -> Result<u64> {
        let mut count = 0;
        for guard in self.tables.outbox.iter() {
            guard.key().map_err(engine("counting the outbox"))?;
            count += 1;
        }
        Ok(count)
    }

    /// Dead letters after `after` (exclusive; `None` from the first), oldest first.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt entry.
    pub fn dead_letters(&self, after: Option<Origin>, limit: usize) -> Result<Vec<DeadLetter>> {
        let start = match after {
            None => std::ops::Bound::Unbounded,
            Some(origin) => std::ops::Bound::Excluded(keys::origin(origin)),
        };
        let range = self.tables.dead_letters.range((start, std::ops::Bound::Unbounded));
        decode_all(range.take(limit), "scanning dead letters", "dead_letters")
    }

    /// One dead letter.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt entry.
    pub fn dead_letter(&self, origin: Origin) -> Result<Option<DeadLetter>> {
        let found = self
            .tables
            .dead_letters
            .get(keys::origin(origin))
            .map_err(engine("reading a dead letter"))?;
        found.map(|bytes| decode("dead_letters", &bytes)).transpose()
    }

    /// Seqs of the events that name `cause` among their direct causes, oldest
    /// first, at most `limit`.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt entry.
    pub fn effects(&self, cause: Seq, limit: usize) -> Result<Vec<Seq>> {
        let range = keys::edge(cause, Seq(0))..=keys::edge(cause, Seq(u64::MAX));
        let mut out = Vec::new();
        for guard in self.tables.effects.range(range).take(limit) {
            let key = guard.key().map_err(engine("scanning effects"))?;
            let (_, effect) = keys::decode_edge(&key)
                .ok_or_else(|| Error::Corrupt { what: "effects", message: "bad edge".into() })?;
            out.push(effect);
        }
        Ok(out)
    }

    /// Events of the global log with `from <= seq <= upto`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt record.
    pub fn log(&self, from: Seq, upto: Seq, limit: usize) -> Result<Vec<EventRecord>> {
        if from > upto {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for guard in self.tables.log.range(keys::seq(from)..=keys::seq(upto)).take(limit) {
            let (_, value) = guard.into_inner().map_err(engine("scanning the log"))?;
            out.push(decode("log", &value)?);
        }
        Ok(out)
    }

    /// A process's live events with `from <= version <= to`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt record.
    pub fn history(
        &self,
        process: &ProcessId,
        from: Version,
        to: Version,
        limit: usize,
    ) -> Result<Vec<EventRecord>> {
        if from > to {
            return Ok(Vec::new());
        }
        let start = keys::version(&process.function, &process.key, from);
        let end = keys::version(&process.function, &process.key, to);
        let mut out = Vec::new();
        for guard in self.tables.versions.range(start..=end).take(limit) {
            let (_, value) = guard.into_inner().map_err(engine("scanning a history"))?;
            let (seq, _) = decode_position(&value)?;
            let record = self.event(seq)?.ok_or_else(|| Error::Corrupt {
                what: "versions",
                message: format!("version index points at missing seq {seq}"),
            })?;
            out.push(record);
        }
        Ok(out)
    }

    /// Seq and time of the event that made `version` of a process, on the live timeline.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt entry.
    pub fn position(
        &self,
        process: &ProcessId,
        version: Version,
    ) -> Result<Option<(Seq, EventTime)>> {
        let key = keys::version(&process.function, &process.key, version);
        match self.tables.versions.get(key).map_err(engine("reading a version entry"))? {
            None => Ok(None),
            Some(value) => decode_position(&value).map(Some),
        }
    }

    /// The newest snapshot of a process at or before `version`.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt snapshot.
    pub fn snapshot_at_or_before(
        &self,
        process: &ProcessId,
        version: Version,
    ) -> Result<Option<Snapshot>> {
        let start = keys::version(&process.function, &process.key, Version(1));
        let end = keys::version(&process.function, &process.key, version);
        if version < Version(1) {
            return Ok(None);
        }
        let found = self.tables.snapshots.range(start..=end).next_back();
        decode_found(found, "reading a snapshot", "snapshots")
    }

    /// Versions of a process's snapshots after `after`, oldest first.
    ///
    /// # Errors
    /// Fails on an engine error.
    pub fn snapshot_versions_after(
        &self,
        process: &ProcessId,
        after: Version,
    ) -> Result<Vec<Version>> {
        let Some(first) = after.0.checked_add(1) else { return Ok(Vec::new()) };
        let start = keys::version(&process.function, &process.key, Version(first));
        let end = keys::version(&process.function, &process.key, Version(u64::MAX));
        let mut out = Vec::new();
        for guard in self.tables.snapshots.range(start..=end) {
            let key = guard.key().map_err(engine("listing snapshots"))?;
            let bytes: [u8; 8] = key[key.len() - 8..]
                .try_into()
                .map_err(|_| Error::Corrupt { what: "snapshots", message: "short key".into() })?;
            out.push(Version(u64::from_be_bytes(bytes)));
        }
        Ok(out)
    }

    /// Every checkpoint, oldest first.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt value.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        decode_all(self.tables.checkpoints.iter(), "listing checkpoints", "checkpoints")
    }

    /// Every restore so far, oldest first.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt value.
    pub fn branches(&self) -> Result<Vec<Branch>> {
        decode_all(self.tables.branches.iter(), "listing branches", "branches")
    }

    /// The first event at or after `seq`, if any.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt record.
    pub fn event_at_or_after(&self, seq: Seq) -> Result<Option<EventRecord>> {
        decode_found(self.tables.log.range(keys::seq(seq)..).next(), "seeking the log", "log")
    }

    /// The newest seq at or below `upto` whose event time is at or before `time`,
    /// or 0 if none. Event times never decrease along the log, so this is a
    /// binary search of about 64 seeks however long the log is.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt record.
    pub fn last_seq_at_or_before(&self, time: EventTime, upto: Seq) -> Result<Seq> {
        // Invariant: every event with seq <= low has time <= `time` (low may hold
        // no event), and every event with seq > high has a later time.
        let (mut low, mut high) = (0u64, upto.0);
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            match self.event_at_or_after(Seq(middle))? {
                Some(record) if record.seq.0 <= high => {
                    if record.time <= time {
                        low = record.seq.0;
                    } else {
                        high = middle - 1;
                    }
                }
                // No event in middle..=high: the answer is below middle.
                _ => high = middle - 1,
            }
        }
        // `low` may be a seq no event has (a gap); step back to a real one.
        Ok(self.event_at_or_before(Seq(low))?.map_or(Seq(0), |r| r.seq))
    }

    /// The newest event at or before `seq`, if any.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt record.
    pub fn event_at_or_before(&self, seq: Seq) -> Result<Option<EventRecord>> {
        decode_found(self.tables.log.range(..=keys::seq(seq)).next_back(), "seeking the log", "log")
    }

    /// Processes of a function in key order, starting after `after`, at most `limit`.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt value.
    pub fn processes(
        &self,
        function: &FunctionName,
        after: Option<&ProcessKey>,
        limit: usize,
    ) -> Result<Vec<(ProcessKey, ProcessHead)>> {
        let prefix = keys::function_prefix(function);
        let mut out = Vec::new();
        let iter = match after {
            Some(after) => {
                let mut start = keys::process(function, after);
                start.push(0);
                let mut end = prefix.clone();
                end.push(0xff);
                self.tables.heads.range(start..end)
            }
            None => self.tables.heads.prefix(&prefix),
        };
        for guard in iter.take(limit) {
            let (key, value) = guard.into_inner().map_err(engine("listing processes"))?;
            let process_key = std::str::from_utf8(&key[prefix.len()..])
                .ok()
                .and_then(|k| ProcessKey::new(k).ok())
                .ok_or_else(|| Error::Corrupt { what: "heads", message: "bad key".into() })?;
            out.push((process_key, decode("heads", &value)?));
        }
        Ok(out)
    }

    /// Every deployed function, by name.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt value.
    pub fn functions(&self) -> Result<Vec<FunctionInfo>> {
        decode_all(self.tables.functions.iter(), "listing functions", "functions")
    }

    /// One function with its versions.
    ///
    /// # Errors
    /// Fails on an engine error or a corrupt value.
    pub fn function(&self, name: &FunctionName) -> Result<Option<FunctionInfo>> {
        match self.tables.functions.get(name.as_str()).map_err(engine("reading a function"))? {
            None => Ok(None),
            Some(bytes) => decode("functions", &bytes).map(Some),
        }
    }

    /// The component bytes of one function version.
    ///
    /// # Errors
    /// Fails on an engine error.
    pub fn component(
        &self,
        name: &FunctionName,
        version: FunctionVersion,
    ) -> Result<Option<Vec<u8>>> {
        let value = self
            .tables
            .components
            .get(keys::component(name, version))
            .map_err(engine("reading a component"))?;
        Ok(value.map(|v| v.to_vec()))
    }
}

#[cfg(test)]
mod tests;
