//! Group commit. One committer thread owns all writes: it takes every commit that
//! queued while the previous fsync ran, writes them as one atomic batch, syncs
//! once, and then wakes each waiting writer. No lock is held across the fsync.
//!
//! Commits are written in the order they were submitted, so a writer may
//! submit a commit that builds on one still in flight. That is only sound if a
//! failed commit stops every later one: after a failed group the committer
//! refuses everything (fail-stop), and a restart recovers what was durable.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::PersistMode;
use julato_core::{
    Branch, Checkpoint, DeadLetter, EventRecord, EventTime, FunctionInfo, FunctionVersion, Origin,
    OutboxEntry, ProcessHead, ProcessId, Seq, Snapshot, Version,
};
use parking_lot::{Condvar, Mutex};

use crate::{Error, Result, Tables, encode, keys, telemetry};

/// Everything one writer wants stored atomically.
#[derive(Debug, Default)]
pub struct Commit {
    /// New events, each with its seq and version already assigned.
    pub records: Vec<EventRecord>,
    /// The newest head of each process the records touched.
    pub heads: Vec<(ProcessId, ProcessHead)>,
    /// Answers to remember under idempotency keys.
    pub idempotency: Vec<(ProcessId, String, Vec<u8>)>,
    /// A new function version and its component bytes.
    pub deploy: Option<(FunctionInfo, FunctionVersion, Vec<u8>)>,
    /// Snapshots to keep (or overwrite, for the same version).
    pub snapshots: Vec<(ProcessId, Snapshot)>,
    /// A checkpoint to record; its snapshots ride in `snapshots`.
    pub checkpoint: Option<Checkpoint>,
    /// A point-in-time restore.
    pub restore: Option<Restore>,
    /// Emitted events to deliver, written with the events that emitted them.
    pub outbox: Vec<OutboxEntry>,
    /// Outbox entries delivered (or dead-lettered) by this commit.
    pub delivered: Vec<Origin>,
    /// Emitted events given up on.
    pub dead_letters: Vec<DeadLetter>,
    /// Dead letters moved back to the outbox by this commit (re-driven).
    pub redriven: Vec<Origin>,
}

/// Everything a point-in-time restore changes, written as one atomic batch.
/// No event record is touched: archived events stay in the log.
#[derive(Debug, Default)]
pub struct Restore {
    pub branch: Option<Branch>,
    /// Version entries that leave the live index for the branch's archive.
    pub archived: Vec<(ProcessId, Version, Seq, EventTime)>,
    /// Each touched process's head as of the restore point; `None` when the
    /// process had no event yet at that point.
    pub heads: Vec<(ProcessId, Option<ProcessHead>)>,
    /// Idempotency keys consumed only by archived events, released.
    pub released_keys: Vec<(ProcessId, String)>,
    /// Snapshots of archived versions, dropped from the live timeline.
    pub dropped_snapshots: Vec<(ProcessId, Version)>,
    /// Checkpoints past the restore point, rewritten as archived.
    pub checkpoints: Vec<Checkpoint>,
    /// Outbox entries of archived events, which will never be delivered.
    pub dropped_outbox: Vec<Origin>,
    /// Deliveries that were archived but whose cause was not: back to the outbox.
    pub restored_outbox: Vec<OutboxEntry>,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.heads.is_empty()
            && self.idempotency.is_empty()
            && self.deploy.is_none()
            && self.snapshots.is_empty()
            && self.checkpoint.is_none()
            && self.restore.is_none()
            && self.outbox.is_empty()
            && self.delivered.is_empty()
            && self.dead_letters.is_empty()
            && self.redriven.is_empty()
    }
}

type Done = SyncSender<Result<(), String>>;

struct Queue {
    pending: Vec<(Commit, Done)>,
    closed: bool,
    /// Why a group failed; once set, nothing more is written.
    failed: Option<String>,
    fsyncs: u64,
    commits: u64,
}

/// A submitted commit; [`Pending::wait`] returns once it is durable or failed.
#[must_use = "a commit is not durable until `wait` says so"]
pub struct Pending {
    outcome: PendingOutcome,
}

enum PendingOutcome {
    Now(Result<()>),
    Later(std::sync::mpsc::Receiver<Result<(), String>>),
}

impl Pending {
    /// Blocks until the commit is fsync'd (or failed).
    ///
    /// # Errors
    /// Fails when the commit was not written; then nothing of it is durable.
    pub fn wait(self) -> Result<()> {
        match self.outcome {
            PendingOutcome::Now(result) => result,
            PendingOutcome::Later(wait) => match wait.recv() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(Error::Commit(message)),
                Err(_) => Err(Error::Closed),
            },
        }
    }
}

pub(crate) struct Committer {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    pub fn start(tables: Arc<Tables>) -> Self {
        let queue = Arc::new((
            Mutex::new(Queue {
                pending: Vec::new(),
                closed: false,
                failed: None,
                fsyncs: 0,
                commits: 0,
            }),
            Condvar::new(),
        ));
        let worker_queue = queue.clone();
        let thread = std::thread::Builder::new()
            .name("julato-commit".into())
            .spawn(move || run(&tables, &worker_queue))
            .expect("spawning the commit thread");
        Self { queue, thread: Mutex::new(Some(thread)) }
    }

    pub fn append(&self, commit: Commit) -> Result<()> {
        self.submit(commit).wait()
    }

    /// Queues a commit behind every commit submitted before it.
    pub fn submit(&self, commit: Commit) -> Pending {
        if commit.is_empty() {
            return Pending { outcome: PendingOutcome::Now(Ok(())) };
        }
        let (done, wait) = sync_channel(1);
        let (lock, ready) = &*self.queue;
        let mut queue = lock.lock();
        if queue.closed {
            return Pending { outcome: PendingOutcome::Now(Err(Error::Closed)) };
        }
        if let Some(reason) = &queue.failed {
            let refused =
                Error::Commit(format!("the store stopped writing after a failure: {reason}"));
            return Pending { outcome: PendingOutcome::Now(Err(refused)) };
        }
        queue.pending.push((commit, done));
        ready.notify_one();
        Pending { outcome: PendingOutcome::Later(wait) }
    }

    pub fn stats(&self) -> (u64, u64) {
        let queue = self.queue.0.lock();
        (queue.fsyncs, queue.commits)
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        {
            let (lock, ready) = &*self.queue;
            lock.lock().closed = true;
            ready.notify_all();
        }
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

fn run(tables: &Tables, queue: &(Mutex<Queue>, Condvar)) {
    let (lock, ready) = queue;
    loop {
        let group = {
            let mut state = lock.lock();
            while state.pending.is_empty() && !state.closed {
                ready.wait(&mut state);
            }
            if state.pending.is_empty() && state.closed {
                return;
            }
            std::mem::take(&mut state.pending)
        };

        let size = group.len();
        let earlier = lock.lock().failed.clone();
        let outcome = match earlier {
            Some(reason) => Err(format!("the store stopped writing after a failure: {reason}")),
            None => write_group(tables, group.iter().map(|(commit, _)| commit))
                .map(|took| {
                    let events = group.iter().map(|(commit, _)| commit.records.len()).sum();
                    telemetry::group_written(size, events, took);
                })
                .map_err(|e| e.to_string()),
        };
        {
            let mut state = lock.lock();
            if let Err(e) = &outcome
                && state.failed.is_none()
            {
                tracing::error!(
                    error = %e, commits = size,
                    "group commit failed; the store writes nothing more until restarted"
                );
                state.failed = Some(e.clone());
            }
            state.fsyncs += 1;
            state.commits += size as u64;
        }
        for (_, done) in group {
            let _ = done.send(outcome.clone());
        }
    }
}

/// Writes commits as one atomic batch and fsyncs it; answers how long the
/// write and fsync took.
fn write_group<'a>(
    tables: &Tables,
    commits: impl Iterator<Item = &'a Commit>,
) -> Result<Duration, Error> {
    let mut batch = tables.db.batch().durability(Some(PersistMode::SyncAll));
    for commit in commits {
        for record in &commit.records {
            batch.insert(&tables.log, keys::seq(record.seq), encode(record));
            let version = keys::version(&record.function, &record.key, record.version);
            batch.insert(&tables.versions, version, keys::position(record.seq, record.time));
            for cause in &record.causes {
                batch.insert(&tables.effects, keys::edge(cause.seq, record.seq), []);
            }
        }
        for entry in &commit.outbox {
            batch.insert(&tables.outbox, keys::origin(entry.origin), encode(entry));
        }
        for origin in &commit.delivered {
            batch.remove(&tables.outbox, keys::origin(*origin));
        }
        for letter in &commit.dead_letters {
            batch.insert(&tables.dead_letters, keys::origin(letter.entry.origin), encode(letter));
        }
        for origin in &commit.redriven {
            batch.remove(&tables.dead_letters, keys::origin(*origin));
        }
        for (process, head) in &commit.heads {
            batch.insert(
                &tables.heads,
                keys::process(&process.function, &process.key),
                encode(head),
            );
        }
        for (process, token, answer) in &commit.idempotency {
            let key = keys::idempotency(&process.function, &process.key, token);
            batch.insert(&tables.idempotency, key, answer.as_slice());
        }
        if let Some((info, version, bytes)) = &commit.deploy {
            batch.insert(&tables.functions, info.name.as_str(), encode(info));
            batch.insert(
                &tables.components,
                keys::component(&info.name, *version),
                bytes.as_slice(),
            );
        }
        for (process, snapshot) in &commit.snapshots {
            let key = keys::version(&process.function, &process.key, snapshot.version);
            batch.insert(&tables.snapshots, key, encode(snapshot));
        }
        if let Some(checkpoint) = &commit.checkpoint {
            batch.insert(&tables.checkpoints, checkpoint.id.to_be_bytes(), encode(checkpoint));
        }
        if let Some(restore) = &commit.restore {
            write_restore(tables, &mut batch, restore);
        }
    }
    let started = Instant::now();
    batch.commit().map_err(|source| Error::Engine { doing: "committing a group", source })?;
    Ok(started.elapsed())
}

fn write_restore(tables: &Tables, batch: &mut fjall::OwnedWriteBatch, restore: &Restore) {
    let branch = restore.branch.as_ref().map_or(0, |b| b.id);
    for (process, version, seq, time) in &restore.archived {
        let live = keys::version(&process.function, &process.key, *version);
        batch.remove(&tables.versions, live);
        let archived = keys::archived(branch, &process.function, &process.key, *version);
        batch.insert(&tables.archive, archived, keys::position(*seq, *time));
    }
    for (process, head) in &restore.heads {
        let key = keys::process(&process.function, &process.key);
        match head {
            Some(head) => batch.insert(&tables.heads, key, encode(head)),
            None => batch.remove(&tables.heads, key),
        }
    }
    for (process, token) in &restore.released_keys {
        batch
            .remove(&tables.idempotency, keys::idempotency(&process.function, &process.key, token));
    }
    for (process, version) in &restore.dropped_snapshots {
        batch.remove(&tables.snapshots, keys::version(&process.function, &process.key, *version));
    }
    for checkpoint in &restore.checkpoints {
        batch.insert(&tables.checkpoints, checkpoint.id.to_be_bytes(), encode(checkpoint));
    }
    for origin in &restore.dropped_outbox {
        batch.remove(&tables.outbox, keys::origin(*origin));
    }
    for entry in &restore.restored_outbox {
        batch.insert(&tables.outbox, keys::origin(entry.origin), encode(entry));
    }
    if let Some(b) = &restore.branch {
        batch.insert(&tables.branches, b.id.to_be_bytes(), encode(b));
    }
}
