//! Shards and their handle. A shard is one thread that owns the processes whose
//! id hashes to it. It drains its queue in batches: applies every event of the
//! batch in arrival order, writes the accepted ones as one commit, and answers
//! only once that commit is durable.
//!
//! A shard keeps the committed states of its hot processes in a map that
//! readers share; states of a batch in progress live in the batch until its
//! commit is durable, so no reader ever sees an uncommitted state. Idle
//! processes, and the least recently used when the memory budget is reached,
//! are snapshotted and evicted; the next event or read rebuilds them from
//! their newest snapshot and the events after it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use julato_core::{
    EventRecord, EventTime, FunctionVersion, Payload, ProcessHead, ProcessId, Seq, Sequencer,
    Snapshot, SnapshotPolicy, Version, check_expected_version,
};
use julato_executor::HandlerContext;
use julato_store::{Commit, Store};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::replay::Replayer;
use crate::{Catalog, SendError};

/// Bytes a resident process costs beyond its state text: its id, head and the
/// map's own bookkeeping, roughly.
const RESIDENT_OVERHEAD: usize = 256;

/// Most events one shard applies before committing.
const MAX_BATCH: usize = 1024;

/// One event to apply to one process.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub process: ProcessId,
    pub event_type: String,
    pub payload: Payload,
    pub idempotency_key: Option<String>,
    pub expected_version: Option<Version>,
}

/// The answer to an accepted event. A retry with the same idempotency key gets
/// the same answer back, with `deduplicated` set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub seq: Seq,
    pub version: Version,
    pub time: EventTime,
    pub function_version: FunctionVersion,
    /// The state after the event, as JSON text.
    pub state: String,
    /// The handler's reply, as JSON text.
    pub reply: Option<String>,
    #[serde(skip)]
    pub deduplicated: bool,
    /// Fingerprint of the event that got this answer, so that reusing its
    /// idempotency key for a different event is caught.
    #[serde(default)]
    pub request_digest: String,
}

impl SendRequest {
    /// SHA-256 over the event type and data, hex.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.event_type.as_bytes());
        match &self.payload {
            Payload::Json(text) => {
                hasher.update(b"\0json\0");
                hasher.update(text.as_bytes());
            }
            Payload::Bytes(bytes) => {
                hasher.update(b"\0bytes\0");
                hasher.update(bytes);
            }
        }
        hex::encode(hasher.finalize())
    }
}

type Answer = Result<Applied, SendError>;

/// How the process managers run.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub shards: usize,
    /// Commands each shard may queue before senders are told to back off.
    pub queue_capacity: usize,
    pub snapshots: SnapshotPolicy,
    /// A process untouched this long is evicted; `None` keeps it.
    pub idle_eviction: Option<Duration>,
    /// Bytes of resident state all shards together may hold before the least
    /// recently used processes are evicted.
    pub memory_budget: usize,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            shards: 4,
            queue_capacity: 4096,
            snapshots: SnapshotPolicy::default(),
            idle_eviction: Some(Duration::from_secs(300)),
            memory_budget: 512 << 20,
        }
    }
}

enum Command {
    One {
        request: SendRequest,
        respond: oneshot::Sender<Answer>,
    },
    Many {
        requests: Vec<SendRequest>,
        respond: oneshot::Sender<Vec<Answer>>,
    },
    /// Evict processes idle for at least `idle` (all of them for zero).
    Evict {
        idle: Duration,
        done: Option<oneshot::Sender<usize>>,
    },
    /// Rebuild these processes into memory, while the budget allows.
    Warm {
        processes: Vec<ProcessId>,
    },
    /// Stop between batches until told to go on.
    Pause {
        paused: oneshot::Sender<()>,
        resume: std::sync::mpsc::Receiver<()>,
    },
}

/// Counters of one shard, for operators.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStats {
    pub shard: usize,
    pub queued: usize,
    pub capacity: usize,
    pub resident_processes: u64,
    pub resident_bytes: u64,
    pub applied: u64,
    pub rejected: u64,
    pub batches: u64,
    pub snapshots: u64,
    pub evicted: u64,
    pub rehydrated: u64,
    pub replayed: u64,
}

#[derive(Default)]
struct Counters {
    resident: AtomicU64,
    resident_bytes: AtomicU64,
    applied: AtomicU64,
    rejected: AtomicU64,
    batches: AtomicU64,
    snapshots: AtomicU64,
    evicted: AtomicU64,
    rehydrated: AtomicU64,
    replayed: AtomicU64,
}

/// The committed state of a hot process.
struct Resident {
    head: ProcessHead,
    state: String,
    /// Newest version that has a snapshot in the store (0 if none is known).
    snapshotted: Version,
    /// Milliseconds since the shard started, at the last event or read.
    last_used: AtomicU64,
}

impl Resident {
    fn bytes(&self) -> usize {
        self.state.len() + RESIDENT_OVERHEAD
    }
}

type Residents = Arc<RwLock<HashMap<ProcessId, Resident>>>;

struct ShardHandle {
    queue: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    residents: Residents,
}

/// Handle to every shard; cheap to clone.
#[derive(Clone)]
pub struct Managers {
    shards: Arc<Vec<ShardHandle>>,
    sequencer: Sequencer,
    started: Instant,
}

/// Every shard stopped between batches; dropping this lets them go on.
pub struct Paused {
    resume: Vec<std::sync::mpsc::Sender<()>>,
    managers: Managers,
}

impl Paused {
    /// Forgets every resident state, so each process is rebuilt from the store
    /// on its next event or read. Only sound while paused.
    pub fn forget_residents(&self) {
        for shard in self.managers.shards.iter() {
            shard.residents.write().clear();
            shard.counters.resident.store(0, Ordering::Relaxed);
            shard.counters.resident_bytes.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        for resume in self.resume.drain(..) {
            let _ = resume.send(());
        }
    }
}

impl Managers {
    /// Starts the shard threads and the eviction timer.
    pub fn start(
        config: &ManagerConfig,
        store: Store,
        catalog: Arc<Catalog>,
        sequencer: Sequencer,
    ) -> Self {
        let started = Instant::now();
        let count = config.shards.max(1);
        let replayer = Replayer::new(store.clone(), catalog.clone());
        let shards: Vec<ShardHandle> = (0..count)
            .map(|index| {
                let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
                let counters = Arc::new(Counters::default());
                let residents: Residents = Arc::default();
                let mut shard = Shard {
                    index,
                    store: store.clone(),
                    catalog: catalog.clone(),
                    replayer: replayer.clone(),
                    sequencer: sequencer.clone(),
                    residents: residents.clone(),
                    counters: counters.clone(),
                    snapshots: config.snapshots,
                    budget: config.memory_budget / count,
                    started,
                };
                std::thread::Builder::new()
                    .name(format!("julato-shard-{index}"))
                    .spawn(move || shard.run(rx))
                    .expect("spawning a shard thread");
                ShardHandle { queue: tx, counters, residents }
            })
            .collect();
        let managers = Self { shards: Arc::new(shards), sequencer, started };
        if let Some(idle) = config.idle_eviction {
            managers.start_eviction_timer(idle);
        }
        managers
    }

    /// Asks every shard, now and then, to evict what has been idle for `idle`.
    /// The timer stops once the shards are gone.
    fn start_eviction_timer(&self, idle: Duration) {
        let queues: Vec<_> = self.shards.iter().map(|s| s.queue.downgrade()).collect();
        let every = (idle / 2).clamp(Duration::from_millis(10), Duration::from_secs(5));
        std::thread::Builder::new()
            .name("julato-evict".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let mut alive = false;
                    for queue in &queues {
                        if let Some(queue) = queue.upgrade() {
                            alive = true;
                            // A full queue means a busy shard; it checks its
                            // budget after every batch anyway.
                            let _ = queue.try_send(Command::Evict { idle, done: None });
                        }
                    }
                    if !alive {
                        return;
                    }
                }
            })
            .expect("spawning the eviction timer");
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    fn shard_of(&self, process: &ProcessId) -> usize {
        let mut hasher = DefaultHasher::new();
        process.hash(&mut hasher);
        (hasher.finish() % self.shards.len() as u64) as usize
    }

    /// The committed head and state of a process, if it is resident.
    pub fn resident(&self, process: &ProcessId) -> Option<(ProcessHead, String)> {
        let shard = &self.shards[self.shard_of(process)];
        let residents = shard.residents.read();
        let resident = residents.get(process)?;
        resident.last_used.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        Some((resident.head.clone(), resident.state.clone()))
    }

    /// Applies one event and waits until it is durable.
    ///
    /// # Errors
    /// A [`SendError`] saying why the event was not applied; then nothing of it
    /// is stored.
    pub async fn send(&self, request: SendRequest) -> Answer {
        let (respond, answer) = oneshot::channel();
        let shard = self.shard_of(&request.process);
        self.shards[shard].queue.try_send(Command::One { request, respond }).map_err(
            |e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => SendError::ShuttingDown,
            },
        )?;
        answer.await.map_err(|_| SendError::ShuttingDown)?
    }

    /// Applies many events, each on its own (not atomically); answers come back in
    /// the order of `requests`. Events to one process keep their relative order.
    pub async fn send_many(&self, requests: Vec<SendRequest>) -> Vec<Answer> {
        let total = requests.len();
        let mut per_shard: Vec<Vec<(usize, SendRequest)>> = vec![Vec::new(); self.shards.len()];
        for (i, request) in requests.into_iter().enumerate() {
            per_shard[self.shard_of(&request.process)].push((i, request));
        }

        let mut waits = Vec::new();
        for (shard, items) in per_shard.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let (indices, requests): (Vec<usize>, Vec<SendRequest>) = items.into_iter().unzip();
            let (respond, answer) = oneshot::channel();
            // A bulk request waits for room instead of failing: it is one
            // request, and its size is bounded by the body limit.
            let sent = self.shards[shard].queue.send(Command::Many { requests, respond }).await;
            waits.push((indices, sent.ok().map(|()| answer)));
        }

        let mut answers: Vec<Option<Answer>> = (0..total).map(|_| None).collect();
        for (indices, answer) in waits {
            let results = match answer {
                Some(answer) => answer.await.ok(),
                None => None,
            };
            match results {
                Some(results) => {
                    for (i, result) in indices.into_iter().zip(results) {
                        answers[i] = Some(result);
                    }
                }
                None => {
                    for i in indices {
                        answers[i] = Some(Err(SendError::ShuttingDown));
                    }
                }
            }
        }
        answers.into_iter().map(|a| a.unwrap_or(Err(SendError::ShuttingDown))).collect()
    }

    /// Evicts every resident process (snapshotting each first) and answers how
    /// many left memory.
    pub async fn evict_all(&self) -> usize {
        let mut waits = Vec::new();
        for shard in self.shards.iter() {
            let (done, wait) = oneshot::channel();
            let command = Command::Evict { idle: Duration::ZERO, done: Some(done) };
            if shard.queue.send(command).await.is_ok() {
                waits.push(wait);
            }
        }
        let mut evicted = 0;
        for wait in waits {
            evicted += wait.await.unwrap_or(0);
        }
        evicted
    }

    /// Asks each shard to rebuild the given processes into memory in the
    /// background, within its budget; most recently used first.
    pub fn warm(&self, processes: Vec<ProcessId>) {
        let mut per_shard: Vec<Vec<ProcessId>> = vec![Vec::new(); self.shards.len()];
        for process in processes {
            per_shard[self.shard_of(&process)].push(process);
        }
        for (shard, processes) in self.shards.iter().zip(per_shard) {
            if !processes.is_empty() {
                // A full queue means a busy shard; it rebuilds on demand instead.
                let _ = shard.queue.try_send(Command::Warm { processes });
            }
        }
    }

    /// Stops every shard between batches: once this returns, nothing is being
    /// applied and everything applied is durable, until the answer is dropped.
    ///
    /// # Errors
    /// [`SendError::ShuttingDown`] when a shard is gone.
    pub async fn pause(&self) -> Result<Paused, SendError> {
        let mut paused = Paused { resume: Vec::new(), managers: self.clone() };
        let mut acks = Vec::new();
        for shard in self.shards.iter() {
            let (ack, acked) = oneshot::channel();
            let (resume, wait) = std::sync::mpsc::channel();
            shard
                .queue
                .send(Command::Pause { paused: ack, resume: wait })
                .await
                .map_err(|_| SendError::ShuttingDown)?;
            paused.resume.push(resume);
            acks.push(acked);
        }
        for acked in acks {
            acked.await.map_err(|_| SendError::ShuttingDown)?;
        }
        Ok(paused)
    }

    /// Counters of every shard.
    pub fn stats(&self) -> Vec<ShardStats> {
        self.shards
            .iter()
            .enumerate()
            .map(|(shard, handle)| {
                let c = &handle.counters;
                let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                ShardStats {
                    shard,
                    queued: handle.queue.max_capacity() - handle.queue.capacity(),
                    capacity: handle.queue.max_capacity(),
                    resident_processes: load(&c.resident),
                    resident_bytes: load(&c.resident_bytes),
                    applied: load(&c.applied),
                    rejected: load(&c.rejected),
                    batches: load(&c.batches),
                    snapshots: load(&c.snapshots),
                    evicted: load(&c.evicted),
                    rehydrated: load(&c.rehydrated),
                    replayed: load(&c.replayed),
                }
            })
            .collect()
    }
}

/// Where the answer to one event of a batch goes.
#[derive(Clone, Copy)]
struct Slot {
    command: usize,
    position: usize,
}

struct Shard {
    index: usize,
    store: Store,
    catalog: Arc<Catalog>,
    replayer: Replayer,
    sequencer: Sequencer,
    /// Committed states of the hot processes this shard owns.
    residents: Residents,
    counters: Arc<Counters>,
    snapshots: SnapshotPolicy,
    /// Bytes of resident state this shard may hold.
    budget: usize,
    started: Instant,
}

/// A process's state as a batch in progress has left it.
struct Working {
    head: ProcessHead,
    state: String,
    snapshotted: Version,
}

/// A batch whose commit is submitted but not yet known to be durable.
struct InFlight {
    pending: julato_store::Pending,
    working: HashMap<ProcessId, Working>,
    idempotent: HashMap<(ProcessId, String), Applied>,
    seqs: Vec<Seq>,
    answers: Vec<Vec<Answer>>,
    responders: Vec<Responder>,
    accepted: Vec<Slot>,
    snapshots: u64,
}

/// The accepted events of one batch, waiting to be committed together.
#[derive(Default)]
struct Batch {
    commit: Commit,
    seqs: Vec<Seq>,
    /// States the batch changed, not yet durable.
    working: HashMap<ProcessId, Working>,
    /// Answers given in this batch under an idempotency key, for retries inside it.
    idempotent: HashMap<(ProcessId, String), Applied>,
}

impl Shard {
    // FIXME(#5): one shard runs one handler at a time, so a handler that burns
    // its whole budget holds up every other process of its shard until it is
    // stopped; fair scheduling and more executor workers come with autoscaling.
    /// The shard's loop. A batch is applied while the previous one is being
    /// fsync'd: the shard submits each batch's commit and only then waits for
    /// the one before it, so applying and syncing overlap. Events of the new
    /// batch see the states of the one in flight; readers see only states
    /// whose commit is durable.
    fn run(&mut self, mut rx: mpsc::Receiver<Command>) {
        let _span = tracing::info_span!("shard", shard = self.index).entered();
        let mut in_flight: Option<InFlight> = None;
        loop {
            let first = if in_flight.is_some() {
                match rx.try_recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.settle_in_flight(&mut in_flight);
                        rx.blocking_recv()
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            } else {
                rx.blocking_recv()
            };
            let Some(first) = first else { break };

            let mut work = Vec::new();
            let mut control = None;
            let mut events = 0;
            let mut item = Some(first);
            while let Some(command) = item.take() {
                if command.is_control() {
                    control = Some(command);
                    break;
                }
                events += command.len();
                work.push(command);
                if events < MAX_BATCH {
                    item = rx.try_recv().ok();
                }
            }
            if !work.is_empty() {
                let next = self.start_batch(work, in_flight.as_ref());
                self.settle_in_flight(&mut in_flight);
                in_flight = Some(next);
            }
            if let Some(control) = control {
                // Control commands see everything before them durable.
                self.settle_in_flight(&mut in_flight);
                self.control(control);
            }
        }
        self.settle_in_flight(&mut in_flight);
        tracing::debug!("shard stopped");
    }

    /// Waits for the batch in flight, if any, answers its clients, and keeps
    /// the resident states within budget.
    fn settle_in_flight(&mut self, in_flight: &mut Option<InFlight>) {
        if let Some(batch) = in_flight.take() {
            self.finish(batch);
            self.enforce_budget();
        }
    }

    fn control(&mut self, command: Command) {
        match command {
            Command::Evict { idle, done } => {
                let evicted = self.evict_idle(idle);
                if let Some(done) = done {
                    let _ = done.send(evicted);
                }
            }
            Command::Pause { paused, resume } => {
                let _ = paused.send(());
                // Blocks until resumed, or until the pauser is gone.
                let _ = resume.recv();
            }
            Command::Warm { processes } => self.warm(processes),
            Command::One { .. } | Command::Many { .. } => unreachable!("not a control command"),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Applies a batch on top of the one in flight and submits its commit.
    fn start_batch(&mut self, commands: Vec<Command>, in_flight: Option<&InFlight>) -> InFlight {
        let mut batch = Batch::default();
        let mut answers: Vec<Vec<Answer>> = Vec::with_capacity(commands.len());
        let mut responders = Vec::with_capacity(commands.len());
        let mut accepted: Vec<Slot> = Vec::new();

        for item in commands {
            let (requests, responder) = match item {
                Command::One { request, respond } => (vec![request], Responder::One(respond)),
                Command::Many { requests, respond } => (requests, Responder::Many(respond)),
                Command::Evict { .. } | Command::Pause { .. } | Command::Warm { .. } => continue,
            };
            let mut slots = Vec::with_capacity(requests.len());
            for (position, request) in requests.into_iter().enumerate() {
                let answer = self.apply(request, &mut batch, in_flight);
                match &answer {
                    Ok(_) => accepted.push(Slot { command: answers.len(), position }),
                    Err(_) => {
                        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                slots.push(answer);
            }
            answers.push(slots);
            responders.push(responder);
        }

        for (process, working) in &batch.working {
            batch.commit.heads.push((process.clone(), working.head.clone()));
        }
        let snapshots = batch.commit.snapshots.len() as u64;
        let pending = self.store.submit(std::mem::take(&mut batch.commit));
        InFlight {
            pending,
            working: batch.working,
            idempotent: batch.idempotent,
            seqs: batch.seqs,
            answers,
            responders,
            accepted,
            snapshots,
        }
    }

    /// Waits until a batch's commit is durable, then makes its states visible
    /// to readers and answers its clients. A failed commit fails every event
    /// of the batch, and the store refuses every later commit (fail-stop), so
    /// no batch built on a failed one is ever written.
    fn finish(&mut self, batch: InFlight) {
        let InFlight {
            pending, working, seqs, mut answers, responders, accepted, snapshots, ..
        } = batch;
        let committed = pending.wait();
        match &committed {
            Ok(()) => {
                self.counters.snapshots.fetch_add(snapshots, Ordering::Relaxed);
                self.counters.applied.fetch_add(accepted.len() as u64, Ordering::Relaxed);
                let now = self.now_ms();
                let mut residents = self.residents.write();
                let (mut added, mut removed) = (0, 0);
                for (process, working) in working {
                    let resident = Resident {
                        head: working.head,
                        state: working.state,
                        snapshotted: working.snapshotted,
                        last_used: AtomicU64::new(now),
                    };
                    added += resident.bytes();
                    if let Some(old) = residents.insert(process, resident) {
                        removed += old.bytes();
                    }
                }
                self.count_residents(&residents, added, removed);
            }
            Err(error) => {
                tracing::error!(error = %error, "commit failed; the batch's events are not stored");
                let failure = SendError::Storage(error.to_string());
                for slot in &accepted {
                    answers[slot.command][slot.position] = Err(failure.clone());
                }
            }
        }
        if committed.is_ok() {
            self.sequencer.commit_all(seqs);
        } else {
            self.sequencer.settle_all(seqs);
        }
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        for (responder, slots) in responders.into_iter().zip(answers) {
            responder.respond(slots);
        }
    }

    /// Updates the resident counters after `added` bytes came in and `removed`
    /// left, without walking the map.
    fn count_residents(
        &self,
        residents: &HashMap<ProcessId, Resident>,
        added: usize,
        removed: usize,
    ) {
        self.counters.resident.store(residents.len() as u64, Ordering::Relaxed);
        let bytes = &self.counters.resident_bytes;
        bytes.fetch_add(added as u64, Ordering::Relaxed);
        bytes.fetch_sub(removed as u64, Ordering::Relaxed);
    }

    fn resident_bytes(&self) -> usize {
        self.counters.resident_bytes.load(Ordering::Relaxed) as usize
    }

    /// The process's state as of everything this shard has applied: from the
    /// batch in progress, from memory, or rebuilt from the store. `None` for a
    /// process without events.
    fn current(
        &self,
        process: &ProcessId,
        batch: &Batch,
        in_flight: Option<&InFlight>,
    ) -> Result<Option<(ProcessHead, String, Version)>, SendError> {
        let newer = batch.working.get(process).or_else(|| in_flight?.working.get(process));
        if let Some(w) = newer {
            return Ok(Some((w.head.clone(), w.state.clone(), w.snapshotted)));
        }
        if let Some(r) = self.residents.read().get(process) {
            r.last_used.store(self.now_ms(), Ordering::Relaxed);
            return Ok(Some((r.head.clone(), r.state.clone(), r.snapshotted)));
        }
        let Some(head) = self.store.head(process).map_err(|e| SendError::Storage(e.to_string()))?
        else {
            return Ok(None);
        };
        let rebuilt = self.replayer.rebuild(process, head.version)?;
        self.counters.rehydrated.fetch_add(1, Ordering::Relaxed);
        self.counters.replayed.fetch_add(rebuilt.replayed, Ordering::Relaxed);
        tracing::debug!(
            function = %process.function, process = %process.key, version = head.version.0,
            replayed = rebuilt.replayed, "rehydrated"
        );
        let snapshotted = rebuilt.from_snapshot.unwrap_or(Version(0));
        Ok(Some((head, rebuilt.state, snapshotted)))
    }

    fn apply(
        &mut self,
        request: SendRequest,
        batch: &mut Batch,
        in_flight: Option<&InFlight>,
    ) -> Answer {
        let process = request.process.clone();
        let function_version = self
            .catalog
            .latest(&process.function)
            .ok_or_else(|| SendError::UnknownFunction(process.function.clone()))?;

        let digest = request.idempotency_key.as_ref().map(|_| request.digest());
        if let (Some(token), Some(digest)) = (&request.idempotency_key, &digest)
            && let Some(first) = self.first_answer(&process, token, batch, in_flight)?
        {
            if first.request_digest != *digest {
                return Err(SendError::IdempotencyKeyReused(token.clone()));
            }
            return Ok(first);
        }

        let loaded = self.catalog.loaded(&process.function, function_version)?;
        let executor = self.catalog.executor().clone();
        let (current, state, snapshotted) = match self.current(&process, batch, in_flight)? {
            Some(found) => found,
            None => {
                let state =
                    executor.init(&loaded, process.function.as_str(), process.key.as_str())?;
                let head = ProcessHead {
                    version: Version(0),
                    last_seq: Seq(0),
                    function_version,
                    created: EventTime(0),
                    updated: EventTime(0),
                };
                (head, state, Version(0))
            }
        };
        check_expected_version(current.version, request.expected_version)?;

        let allocation = self.sequencer.allocate();
        let version = current.version.next();
        let ctx = HandlerContext {
            function: process.function.as_str().to_owned(),
            key: process.key.as_str().to_owned(),
            seq: allocation.seq.0,
            version: version.0,
            time_unix_nanos: allocation.time.0,
            function_version: function_version.0,
        };
        let outcome =
            match executor.handle(&loaded, &ctx, &request.event_type, &request.payload, &state) {
                Ok(outcome) => outcome,
                Err(rejection) => {
                    self.sequencer.settle(allocation.seq);
                    tracing::debug!(
                        function = %process.function, process = %process.key,
                        seq = allocation.seq.0, code = rejection.code(), "event rejected"
                    );
                    return Err(rejection.into());
                }
            };

        let record = EventRecord {
            seq: allocation.seq,
            function: process.function.clone(),
            key: process.key.clone(),
            version,
            event_type: request.event_type,
            payload: request.payload,
            time: allocation.time,
            function_version,
            idempotency_key: request.idempotency_key.clone(),
            causes: Vec::new(),
            reply: outcome.reply.clone(),
            emitted: outcome
                .emits
                .into_iter()
                .map(|e| julato_core::EmittedEvent {
                    function: e.function,
                    key: e.key,
                    event_type: e.event_type,
                    payload: e.payload,
                })
                .collect(),
        };
        let head = ProcessHead {
            version,
            last_seq: allocation.seq,
            function_version,
            created: if current.version == Version(0) { allocation.time } else { current.created },
            updated: allocation.time,
        };
        let applied = Applied {
            seq: allocation.seq,
            version,
            time: allocation.time,
            function_version,
            state: outcome.state.clone(),
            reply: outcome.reply,
            deduplicated: false,
            request_digest: digest.unwrap_or_default(),
        };

        let mut snapshotted = snapshotted;
        if self.snapshots.due(version) {
            let snapshot = Snapshot {
                version,
                seq: allocation.seq,
                time: allocation.time,
                function_version,
                state: outcome.state.clone(),
            };
            batch.commit.snapshots.push((process.clone(), snapshot));
            snapshotted = version;
        }
        if let Some(token) = request.idempotency_key {
            let stored = serde_json::to_vec(&applied).expect("serialising an answer");
            batch.commit.idempotency.push((process.clone(), token.clone(), stored));
            batch.idempotent.insert((process.clone(), token), applied.clone());
        }
        batch.commit.records.push(record);
        batch.seqs.push(allocation.seq);
        batch.working.insert(process, Working { head, state: outcome.state, snapshotted });
        Ok(applied)
    }

    fn first_answer(
        &self,
        process: &ProcessId,
        token: &str,
        batch: &Batch,
        in_flight: Option<&InFlight>,
    ) -> Result<Option<Applied>, SendError> {
        let key = (process.clone(), token.to_owned());
        let earlier = batch.idempotent.get(&key).or_else(|| in_flight?.idempotent.get(&key));
        if let Some(first) = earlier {
            return Ok(Some(Applied { deduplicated: true, ..first.clone() }));
        }
        let stored = self
            .store
            .idempotent_answer(process, token)
            .map_err(|e| SendError::Storage(e.to_string()))?;
        match stored {
            None => Ok(None),
            Some(bytes) => {
                let first: Applied = serde_json::from_slice(&bytes)
                    .map_err(|e| SendError::Storage(format!("stored answer is corrupt: {e}")))?;
                Ok(Some(Applied { deduplicated: true, ..first }))
            }
        }
    }

    /// Rebuilds processes into memory until nine tenths of the budget is used.
    /// A process that cannot be rebuilt is left for its next use to report.
    fn warm(&mut self, processes: Vec<ProcessId>) {
        let target = self.budget / 10 * 9;
        let mut warmed = 0u64;
        for process in processes {
            if self.resident_bytes() >= target {
                break;
            }
            if self.residents.read().contains_key(&process) {
                continue;
            }
            match self.current(&process, &Batch::default(), None) {
                Ok(Some((head, state, snapshotted))) => {
                    let resident = Resident {
                        head,
                        state,
                        snapshotted,
                        last_used: AtomicU64::new(self.now_ms()),
                    };
                    let added = resident.bytes();
                    let mut residents = self.residents.write();
                    residents.insert(process, resident);
                    self.count_residents(&residents, added, 0);
                    warmed += 1;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(process = %process, error = %error, "cannot warm a process");
                }
            }
        }
        tracing::debug!(warmed, "warmed processes after a restart");
    }

    /// Evicts processes idle for at least `idle`; answers how many left.
    fn evict_idle(&mut self, idle: Duration) -> usize {
        let now = self.now_ms();
        let idle_ms = idle.as_millis() as u64;
        let chosen: Vec<ProcessId> = self
            .residents
            .read()
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.last_used.load(Ordering::Relaxed)) >= idle_ms)
            .map(|(p, _)| p.clone())
            .collect();
        self.evict(chosen)
    }

    /// Evicts the least recently used processes until resident state fits in
    /// nine tenths of the budget, so one eviction makes room for a while.
    fn enforce_budget(&mut self) {
        let bytes = self.resident_bytes();
        if bytes <= self.budget {
            return;
        }
        let over = {
            let residents = self.residents.read();
            let mut by_age: Vec<(u64, usize, ProcessId)> = residents
                .iter()
                .map(|(p, r)| (r.last_used.load(Ordering::Relaxed), r.bytes(), p.clone()))
                .collect();
            by_age.sort_unstable_by_key(|(used, ..)| *used);
            let target = self.budget / 10 * 9;
            let mut remaining = bytes;
            let mut chosen = Vec::new();
            for (_, size, process) in by_age {
                if remaining <= target {
                    break;
                }
                remaining -= size;
                chosen.push(process);
            }
            chosen
        };
        self.evict(over);
    }

    /// Snapshots each chosen process that has changed since its last snapshot,
    /// then drops it from memory. A failed snapshot write loses nothing: the
    /// state can still be rebuilt from an older snapshot and the log.
    fn evict(&mut self, chosen: Vec<ProcessId>) -> usize {
        if chosen.is_empty() {
            return 0;
        }
        let mut residents = self.residents.write();
        let mut commit = Commit::default();
        let (mut evicted, mut freed) = (0, 0);
        for process in chosen {
            let Some(resident) = residents.remove(&process) else { continue };
            evicted += 1;
            freed += resident.bytes();
            if resident.head.version > resident.snapshotted {
                let snapshot = Snapshot {
                    version: resident.head.version,
                    seq: resident.head.last_seq,
                    time: resident.head.updated,
                    function_version: resident.head.function_version,
                    state: resident.state,
                };
                commit.snapshots.push((process, snapshot));
            }
        }
        self.count_residents(&residents, 0, freed);
        drop(residents);
        let snapshots = commit.snapshots.len() as u64;
        match self.store.append(commit) {
            Ok(()) => {
                self.counters.snapshots.fetch_add(snapshots, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(error = %error, "eviction snapshots not written; replay covers them");
            }
        }
        self.counters.evicted.fetch_add(evicted as u64, Ordering::Relaxed);
        tracing::debug!(evicted, snapshots, "evicted idle processes");
        evicted
    }
}

impl Command {
    fn len(&self) -> usize {
        match self {
            Command::One { .. } => 1,
            Command::Many { requests, .. } => requests.len(),
            Command::Evict { .. } | Command::Pause { .. } | Command::Warm { .. } => 0,
        }
    }

    fn is_control(&self) -> bool {
        matches!(self, Command::Evict { .. } | Command::Pause { .. } | Command::Warm { .. })
    }
}

enum Responder {
    One(oneshot::Sender<Answer>),
    Many(oneshot::Sender<Vec<Answer>>),
}

impl Responder {
    fn respond(self, mut answers: Vec<Answer>) {
        match self {
            Responder::One(tx) => {
                let answer = answers.pop().unwrap_or(Err(SendError::ShuttingDown));
                let _ = tx.send(answer);
            }
            Responder::Many(tx) => {
                let _ = tx.send(answers);
            }
        }
    }
}
