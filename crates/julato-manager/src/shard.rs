//! Shards and their handle. A shard is one thread that owns the processes of
//! the partitions the routing table gives it. It drains its queue in batches:
//! applies every event of the batch in arrival order, writes the accepted ones
//! as one commit, and answers only once that commit is durable.
//!
//! The autoscaler adds and retires shards and moves partitions between them.
//! A shard gives a partition up only between batches, with every state it
//! applied durable and handed to the new owner; a command for a partition it
//! no longer owns is handed back to the sender, which routes it again, so a
//! process is never applied by two shards at once.
//!
//! A shard keeps the committed states of its hot processes in a map that
//! readers share; states of a batch in progress live in the batch until its
//! commit is durable, so no reader ever sees an uncommitted state. Idle
//! processes, and the least recently used when the memory budget is reached,
//! are snapshotted and evicted; the next event or read rebuilds them from
//! their newest snapshot and the events after it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use julato_core::{
    Cause, CauseKind, DeadLetter, EventRecord, EventTime, FunctionVersion, Origin, OutboxEntry,
    Payload, ProcessHead, ProcessId, Seq, Sequencer, Snapshot, SnapshotPolicy, Version,
    check_expected_version,
};
use julato_executor::HandlerContext;
use julato_store::{Commit, Store};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::admission::{Admission, Ticket};
use crate::autoscale::{Action, Decision, Planner, ScalingPolicy, ShardLoad};
use crate::replay::Replayer;
use crate::routing::{Partition, Routing};
use crate::{Catalog, SendError};

/// Bytes a resident process costs beyond its state text: its id, head and the
/// map's own bookkeeping, roughly.
const RESIDENT_OVERHEAD: usize = 256;

/// Most events one shard applies before committing.
const MAX_BATCH: usize = 1024;

/// Handler time after which a shard closes its batch: what is left of its
/// queue waits for the next batch, between which the shard can give
/// partitions away. Far above what a batch of ordinary events takes.
const BATCH_TIME: Duration = Duration::from_millis(50);

/// Times a send is routed again after the partition it went to moved.
const MAX_REROUTES: usize = 64;

/// Scaling decisions kept for operators.
const DECISIONS_KEPT: usize = 64;

/// One event to apply to one process.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub process: ProcessId,
    pub event_type: String,
    pub payload: Payload,
    pub idempotency_key: Option<String>,
    pub expected_version: Option<Version>,
    /// The newest event of the causal token the client presented, recorded as a cause.
    pub after: Option<Seq>,
    /// Set when this event delivers an emitted one: the outbox entry it consumes.
    pub delivery: Option<Box<OutboxEntry>>,
}

impl SendRequest {
    /// A plain client event: no idempotency key, expected version or token.
    pub fn new(process: ProcessId, event_type: impl Into<String>, payload: Payload) -> Self {
        Self {
            process,
            event_type: event_type.into(),
            payload,
            idempotency_key: None,
            expected_version: None,
            after: None,
            delivery: None,
        }
    }
}

/// A transaction that was not committed: which event failed and why. Nothing of
/// the transaction is stored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", match .index {
    Some(index) => format!("event {index} of the transaction failed: {}", .error),
    None => format!("the transaction failed: {}", .error),
})]
pub struct TransactionFailed {
    /// Position of the failing event in the request; `None` when the whole
    /// transaction failed (a storage error, a shutdown).
    pub index: Option<usize>,
    pub error: SendError,
}

/// The answer to a committed transaction.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The transaction's id: the seq of its first event (`None` when every
    /// event was a retry answered from its idempotency key, so nothing new was written).
    pub transaction: Option<Seq>,
    /// One answer per event, in request order, with the process it went to.
    pub events: Vec<(ProcessId, Applied)>,
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
    /// SHA-256 over the event type and data, hex. JSON data is hashed without
    /// its insignificant whitespace, so a retry that spaces the same JSON
    /// differently matches; anything else (key order, number spelling,
    /// string escapes) is compared as sent.
    pub fn digest(&self) -> String {
        self.digest_of(true)
    }

    /// Whether `stored`, the digest an idempotency key was first used with,
    /// is this request's. Keys stored before whitespace was ignored carry the
    /// digest of the text as sent, which matches too.
    pub fn matches_digest(&self, stored: &str) -> bool {
        stored == self.digest() || stored == self.digest_of(false)
    }

    fn digest_of(&self, compact: bool) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.event_type.as_bytes());
        match &self.payload {
            Payload::Json(text) if compact => {
                hasher.update(b"\0json\0");
                hasher.update(compact_json(text).as_bytes());
            }
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

/// Valid JSON text without the whitespace between its tokens; the text of
/// its strings is kept as it is.
fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

type Answer = Result<Applied, SendError>;

/// What a shard does with one request: applies it, or hands it back because
/// its partition moved to another shard.
enum Routed {
    Done(Answer),
    Moved(SendRequest),
}

/// How the process managers run.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Shards running at start, within the scaling bounds.
    pub shards: usize,
    /// Bounds and thresholds of the autoscaler.
    pub scaling: ScalingPolicy,
    /// Commands each shard may queue before senders are told to back off.
    pub queue_capacity: usize,
    /// Single sends of one process that may wait at once; past it the
    /// process's sender is told to back off, so one hot process cannot fill
    /// its shard's queue.
    pub process_queue: usize,
    pub snapshots: SnapshotPolicy,
    /// A process untouched this long is evicted; `None` keeps it.
    pub idle_eviction: Option<Duration>,
    /// Bytes of resident state all shards together may hold before the least
    /// recently used processes are evicted.
    pub memory_budget: usize,
    /// Most emits between a client's event and a delivered one; an emit past
    /// it becomes a dead letter, so runaway chains stop.
    pub max_hops: u32,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            shards: 4,
            scaling: ScalingPolicy::for_cores(4),
            queue_capacity: 4096,
            process_queue: 1024,
            snapshots: SnapshotPolicy::default(),
            idle_eviction: Some(Duration::from_secs(300)),
            memory_budget: 512 << 20,
            max_hops: 32,
        }
    }
}

enum Command {
    One {
        request: SendRequest,
        respond: oneshot::Sender<Routed>,
        /// The event's place among its process's waiting events, shared with
        /// its sender: a sender that gives up does not free the place while
        /// the event still waits here.
        ticket: Arc<Ticket>,
    },
    Many {
        requests: Vec<SendRequest>,
        respond: oneshot::Sender<Vec<Routed>>,
    },
    /// Wakes an idle shard to look at its moves.
    Nudge,
    /// Evict processes idle for at least `idle` (all of them for zero).
    Evict {
        idle: Duration,
        done: Option<oneshot::Sender<usize>>,
    },
    /// Rebuild these processes into memory, while the budget allows.
    Warm {
        processes: Vec<ProcessId>,
    },
    /// Stop between batches and take orders until the sender is dropped.
    Pause {
        paused: oneshot::Sender<()>,
        orders: std::sync::mpsc::Receiver<Order>,
    },
}

/// Give `partitions` to the shard in slot `to`; answers how many of them it
/// owned and gave, and how many resident processes went with them.
struct Move {
    partitions: Vec<Partition>,
    to: usize,
    done: std::sync::mpsc::Sender<(usize, usize)>,
}

/// What a paused shard may be told to do before it goes on.
enum Order {
    /// Apply a transaction while every shard it touches is paused.
    Transact {
        requests: Vec<SendRequest>,
        respond: oneshot::Sender<Result<Committed, TransactionFailed>>,
    },
}

/// Counters of one shard, for operators.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStats {
    pub shard: usize,
    pub queued: usize,
    pub capacity: usize,
    /// Partitions of the process space this shard owns.
    pub partitions: usize,
    /// Share of the autoscaler's last interval spent applying events, in percent.
    pub busy_percent: f64,
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

/// Counters of emitted events on their way, shared by the shards and the deliverer.
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    /// Entries in the outbox.
    pub pending: std::sync::atomic::AtomicI64,
    pub delivered: AtomicU64,
    pub dead_lettered: AtomicU64,
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
    /// Nanoseconds spent applying events, ever.
    busy_nanos: AtomicU64,
    /// Busy share of the last interval the autoscaler looked at, in millionths.
    busy_ppm: AtomicU64,
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

/// What every shard may see of each other: resident states and counters. A
/// transaction applied by one shard installs the states of processes other
/// (paused) shards own.
struct Peer {
    residents: Residents,
    counters: Arc<Counters>,
}

type Peers = Arc<Vec<Peer>>;

/// A running shard's two ways in: its bounded queue of commands, and the
/// moves the autoscaler orders, which it takes before anything queued.
struct ShardHandle {
    queue: mpsc::Sender<Command>,
    moves: std::sync::mpsc::Sender<Move>,
}

/// Every shard slot, running or not. A slot keeps its `Peer` for the life of
/// the managers, so a shard started in it again continues its counters.
struct Slots {
    handles: RwLock<Vec<Option<ShardHandle>>>,
    /// Running shards; each may hold this share of the memory budget.
    running: Arc<AtomicUsize>,
}

impl Slots {
    /// The queue of the shard in `slot`, if one runs there.
    fn queue(&self, slot: usize) -> Option<mpsc::Sender<Command>> {
        self.handles.read().get(slot)?.as_ref().map(|h| h.queue.clone())
    }

    fn running(&self) -> Vec<usize> {
        let handles = self.handles.read();
        (0..handles.len()).filter(|slot| handles[*slot].is_some()).collect()
    }
}

/// What starting a shard takes; the autoscaler starts shards with it too.
struct Spawner {
    store: Store,
    catalog: Arc<Catalog>,
    replayer: Replayer,
    sequencer: Sequencer,
    peers: Peers,
    routing: Arc<Routing>,
    running: Arc<AtomicUsize>,
    snapshots: SnapshotPolicy,
    memory_budget: usize,
    queue_capacity: usize,
    max_hops: u32,
    outbox_ready: Arc<Notify>,
    delivery: Arc<DeliveryCounters>,
    started: Instant,
}

impl Spawner {
    /// Starts the shard thread of `slot`.
    fn spawn(&self, slot: usize) -> ShardHandle {
        let (queue, rx) = mpsc::channel(self.queue_capacity.max(1));
        let (moves, moves_rx) = std::sync::mpsc::channel();
        let mut shard = Shard {
            index: slot,
            store: self.store.clone(),
            catalog: self.catalog.clone(),
            replayer: self.replayer.clone(),
            sequencer: self.sequencer.clone(),
            residents: self.peers[slot].residents.clone(),
            counters: self.peers[slot].counters.clone(),
            peers: self.peers.clone(),
            routing: self.routing.clone(),
            running: self.running.clone(),
            carry: VecDeque::new(),
            snapshots: self.snapshots,
            memory_budget: self.memory_budget,
            max_hops: self.max_hops,
            outbox_ready: self.outbox_ready.clone(),
            delivery: self.delivery.clone(),
            started: self.started,
        };
        std::thread::Builder::new()
            .name(format!("julato-shard-{slot}"))
            .spawn(move || shard.run(rx, moves_rx))
            .expect("spawning a shard thread");
        ShardHandle { queue, moves }
    }
}

/// One scaling decision, as `GET /v1/managers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingRecord {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub action: Action,
    /// The shard that gave partitions away (added: the one split).
    pub from: usize,
    /// The shards that took them.
    pub to: Vec<usize>,
    pub partitions: usize,
    /// Resident processes that moved with them.
    pub processes: usize,
    /// Running shards after the decision.
    pub shards: usize,
    pub reason: String,
}

/// The autoscaler's bounds, what it did, and how many times.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingView {
    pub enabled: bool,
    pub shards: usize,
    pub min_shards: usize,
    pub max_shards: usize,
    pub added: u64,
    pub retired: u64,
    pub rebalanced: u64,
    /// The newest decisions, oldest first.
    pub decisions: Vec<ScalingRecord>,
}

#[derive(Default)]
struct ScalingLog {
    added: u64,
    retired: u64,
    rebalanced: u64,
    decisions: VecDeque<ScalingRecord>,
}

/// Handle to every shard; cheap to clone.
#[derive(Clone)]
pub struct Managers {
    slots: Arc<Slots>,
    peers: Peers,
    routing: Arc<Routing>,
    spawner: Arc<Spawner>,
    policy: ScalingPolicy,
    log: Arc<Mutex<ScalingLog>>,
    /// Held shared by whoever pauses shards (transactions, restores) and
    /// alone by the autoscaler while it changes which shard owns what, so a
    /// paused set of shards keeps owning the processes it was paused for.
    topology: Arc<tokio::sync::RwLock<()>>,
    sequencer: Sequencer,
    started: Instant,
    outbox_ready: Arc<Notify>,
    delivery: Arc<DeliveryCounters>,
    admission: Arc<Admission>,
}

/// Some or all shards stopped between batches; dropping this lets them go on.
pub struct Paused {
    /// Order channels of the paused shards, by shard index.
    orders: Vec<(usize, std::sync::mpsc::Sender<Order>)>,
    managers: Managers,
    _topology: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl Paused {
    /// Forgets every resident state, so each process is rebuilt from the store
    /// on its next event or read. Only sound while every shard is paused.
    pub fn forget_residents(&self) {
        for peer in self.managers.peers.iter() {
            peer.residents.write().clear();
            peer.counters.resident.store(0, Ordering::Relaxed);
            peer.counters.resident_bytes.store(0, Ordering::Relaxed);
        }
    }
}

impl Managers {
    /// Starts the shard threads, the eviction timer and the autoscaler.
    pub fn start(
        config: &ManagerConfig,
        store: Store,
        catalog: Arc<Catalog>,
        sequencer: Sequencer,
    ) -> Self {
        let started = Instant::now();
        let mut policy = config.scaling.clone();
        policy.min_shards = policy.min_shards.max(1);
        policy.max_shards = policy.max_shards.max(policy.min_shards);
        let count = config.shards.clamp(policy.min_shards, policy.max_shards);
        let replayer = Replayer::new(store.clone(), catalog.clone());
        let outbox_ready = Arc::new(Notify::new());
        let delivery = Arc::new(DeliveryCounters::default());
        let pending = store.outbox_len().unwrap_or_else(|error| {
            tracing::warn!(error = %error, "cannot count the outbox");
            0
        });
        delivery.pending.store(pending as i64, Ordering::Relaxed);
        let peers: Peers = Arc::new(
            (0..policy.max_shards)
                .map(|_| Peer { residents: Arc::default(), counters: Arc::default() })
                .collect(),
        );
        let routing = Arc::new(Routing::new(count));
        let running = Arc::new(AtomicUsize::new(count));
        let spawner = Arc::new(Spawner {
            store,
            catalog,
            replayer,
            sequencer: sequencer.clone(),
            peers: peers.clone(),
            routing: routing.clone(),
            running: running.clone(),
            snapshots: config.snapshots,
            memory_budget: config.memory_budget,
            queue_capacity: config.queue_capacity,
            max_hops: config.max_hops,
            outbox_ready: outbox_ready.clone(),
            delivery: delivery.clone(),
            started,
        });
        let handles = (0..policy.max_shards)
            .map(|slot| (slot < count).then(|| spawner.spawn(slot)))
            .collect();
        let managers = Self {
            slots: Arc::new(Slots { handles: RwLock::new(handles), running }),
            peers,
            routing,
            spawner,
            policy: policy.clone(),
            log: Arc::default(),
            topology: Arc::default(),
            sequencer,
            started,
            outbox_ready,
            delivery,
            // At most a quarter of a shard's queue, so that one hot process
            // never fills it whatever the flags say.
            admission: Admission::new(config.process_queue.min(config.queue_capacity / 4)),
        };
        if let Some(idle) = config.idle_eviction {
            managers.start_eviction_timer(idle);
        }
        if let Some(every) = policy.interval {
            managers.start_autoscaler(Planner::new(policy), every);
        }
        managers
    }

    /// Asks every shard, now and then, to evict what has been idle for `idle`.
    /// The timer stops once the shards are gone.
    fn start_eviction_timer(&self, idle: Duration) {
        let slots = Arc::downgrade(&self.slots);
        let every = (idle / 2).clamp(Duration::from_millis(10), Duration::from_secs(5));
        std::thread::Builder::new()
            .name("julato-evict".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let Some(slots) = slots.upgrade() else { return };
                    for handle in slots.handles.read().iter().flatten() {
                        // A full queue means a busy shard; it checks its
                        // budget after every batch anyway.
                        let _ = handle.queue.try_send(Command::Evict { idle, done: None });
                    }
                }
            })
            .expect("spawning the eviction timer");
    }

    /// Looks at the shards every `every` and carries out what the planner
    /// decides. Holds nothing of the managers between looks, so it stops
    /// once they are gone.
    fn start_autoscaler(&self, mut planner: Planner, every: Duration) {
        let weak = Autoscaler {
            slots: Arc::downgrade(&self.slots),
            spawner: Arc::downgrade(&self.spawner),
            log: Arc::downgrade(&self.log),
            topology: self.topology.clone(),
        };
        std::thread::Builder::new()
            .name("julato-autoscale".into())
            .spawn(move || {
                let mut last = Instant::now();
                let mut busy_before: Vec<u64> = Vec::new();
                loop {
                    std::thread::sleep(every);
                    let (Some(slots), Some(spawner), Some(log)) =
                        (weak.slots.upgrade(), weak.spawner.upgrade(), weak.log.upgrade())
                    else {
                        return;
                    };
                    let elapsed = last.elapsed().as_nanos().max(1) as f64;
                    last = Instant::now();
                    let loads = look(&slots, &spawner, &mut busy_before, elapsed);
                    let partitions = spawner.routing.take_load();
                    let free = slots.handles.read().iter().position(Option::is_none);
                    if let Some(decision) = planner.observe(&loads, &partitions, free) {
                        let _alone = weak.topology.blocking_write();
                        carry_out(&slots, &spawner, &log, decision);
                    }
                }
            })
            .expect("spawning the autoscaler");
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// Woken whenever a commit adds to the outbox; the deliverer waits on it.
    pub fn outbox_ready(&self) -> Arc<Notify> {
        self.outbox_ready.clone()
    }

    /// Counters of emitted events: pending, delivered, dead-lettered.
    pub fn delivery(&self) -> &Arc<DeliveryCounters> {
        &self.delivery
    }

    /// The queue of the shard that owns `process` now. A slot without a
    /// shard is one being retired after its partitions moved on: the owner
    /// is read again.
    fn queue_of(&self, process: &ProcessId) -> Result<mpsc::Sender<Command>, SendError> {
        for _ in 0..MAX_REROUTES {
            if let Some(queue) = self.slots.queue(self.routing.owner_of(process)) {
                return Ok(queue);
            }
            std::thread::yield_now();
        }
        Err(SendError::ShuttingDown)
    }

    /// The slot of the shard that owns `partition` now.
    pub fn owner(&self, partition: Partition) -> usize {
        self.routing.owner(partition)
    }

    /// The committed head and state of a process, if it is resident.
    pub fn resident(&self, process: &ProcessId) -> Option<(ProcessHead, String)> {
        let peer = &self.peers[self.routing.owner_of(process)];
        let residents = peer.residents.read();
        let resident = residents.get(process)?;
        resident.last_used.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        Some((resident.head.clone(), resident.state.clone()))
    }

    /// Applies one event and waits until it is durable.
    ///
    /// # Errors
    /// A [`SendError`] saying why the event was not applied; then nothing of it
    /// is stored.
    pub async fn send(&self, mut request: SendRequest) -> Answer {
        // Counts this event as waiting until it is answered, or both its
        // sender and its command are gone.
        let ticket = Arc::new(self.admission.admit(&request.process)?);
        for _ in 0..MAX_REROUTES {
            let (respond, answer) = oneshot::channel();
            let queue = self.queue_of(&request.process)?;
            let command = Command::One { request, respond, ticket: ticket.clone() };
            queue.try_send(command).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => SendError::ShuttingDown,
            })?;
            match answer.await.map_err(|_| SendError::ShuttingDown)? {
                Routed::Done(answer) => return answer,
                Routed::Moved(back) => request = back,
            }
        }
        Err(SendError::Overloaded)
    }

    /// Applies many events, each on its own (not atomically); answers come back in
    /// the order of `requests`. Events to one process keep their relative order.
    pub async fn send_many(&self, requests: Vec<SendRequest>) -> Vec<Answer> {
        let total = requests.len();
        let mut answers: Vec<Option<Answer>> = (0..total).map(|_| None).collect();
        let mut left: Vec<(usize, SendRequest)> = requests.into_iter().enumerate().collect();
        for _ in 0..MAX_REROUTES {
            if left.is_empty() {
                break;
            }
            // Each process's events stay together and in order: a shard
            // applies or hands back a whole command.
            let mut per_shard: HashMap<usize, Vec<(usize, SendRequest)>> = HashMap::new();
            for (i, request) in left.drain(..) {
                per_shard
                    .entry(self.routing.owner_of(&request.process))
                    .or_default()
                    .push((i, request));
            }
            let mut waits = Vec::new();
            for (shard, items) in per_shard {
                let (indices, requests): (Vec<usize>, Vec<SendRequest>) = items.into_iter().unzip();
                let Some(queue) = self.slots.queue(shard) else {
                    // Retired meanwhile: its partitions are elsewhere now.
                    left.extend(indices.into_iter().zip(requests));
                    continue;
                };
                let (respond, answer) = oneshot::channel();
                // A bulk request waits for room instead of failing: it is one
                // request, and its size is bounded by the body limit.
                let sent = queue.send(Command::Many { requests, respond }).await.is_ok();
                waits.push((indices, sent.then_some(answer)));
            }
            for (indices, answer) in waits {
                let results = match answer {
                    Some(answer) => answer.await.ok(),
                    None => None,
                };
                match results {
                    Some(results) => {
                        for (i, routed) in indices.into_iter().zip(results) {
                            match routed {
                                Routed::Done(answer) => answers[i] = Some(answer),
                                Routed::Moved(request) => left.push((i, request)),
                            }
                        }
                    }
                    None => {
                        for i in indices {
                            answers[i] = Some(Err(SendError::ShuttingDown));
                        }
                    }
                }
            }
            left.sort_unstable_by_key(|(i, _)| *i);
        }
        for (i, _) in left {
            answers[i] = Some(Err(SendError::Overloaded));
        }
        answers.into_iter().map(|a| a.unwrap_or(Err(SendError::ShuttingDown))).collect()
    }

    /// Evicts every resident process (snapshotting each first) and answers how
    /// many left memory.
    pub async fn evict_all(&self) -> usize {
        let mut waits = Vec::new();
        for slot in self.slots.running() {
            let Some(queue) = self.slots.queue(slot) else { continue };
            let (done, wait) = oneshot::channel();
            let command = Command::Evict { idle: Duration::ZERO, done: Some(done) };
            if queue.send(command).await.is_ok() {
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
        let mut per_shard: HashMap<usize, Vec<ProcessId>> = HashMap::new();
        for process in processes {
            per_shard.entry(self.routing.owner_of(&process)).or_default().push(process);
        }
        for (shard, processes) in per_shard {
            if let Some(queue) = self.slots.queue(shard) {
                // A full queue means a busy shard; it rebuilds on demand instead.
                let _ = queue.try_send(Command::Warm { processes });
            }
        }
    }

    /// Stops every shard between batches: once this returns, nothing is being
    /// applied and everything applied is durable, until the answer is dropped.
    ///
    /// # Errors
    /// [`SendError::ShuttingDown`] when a shard is gone.
    pub async fn pause(&self) -> Result<Paused, SendError> {
        self.pause_shards(None).await
    }

    /// Pauses the shards owning `processes` (all shards for `None`), one at a
    /// time in ascending order and each before the next: every pauser takes
    /// shards in the same order, so two of them never wait on each other (no
    /// deadlock). While paused, no partition changes hands.
    async fn pause_shards(&self, processes: Option<&[ProcessId]>) -> Result<Paused, SendError> {
        let topology = self.topology.clone().read_owned().await;
        let mut shards: Vec<usize> = match processes {
            None => self.slots.running(),
            Some(processes) => processes.iter().map(|p| self.routing.owner_of(p)).collect(),
        };
        shards.sort_unstable();
        shards.dedup();
        let mut paused = Paused { orders: Vec::new(), managers: self.clone(), _topology: topology };
        for index in shards {
            let (ack, acked) = oneshot::channel();
            let (orders, wait) = std::sync::mpsc::channel();
            self.slots
                .queue(index)
                .ok_or(SendError::ShuttingDown)?
                .send(Command::Pause { paused: ack, orders: wait })
                .await
                .map_err(|_| SendError::ShuttingDown)?;
            paused.orders.push((index, orders));
            acked.await.map_err(|_| SendError::ShuttingDown)?;
        }
        Ok(paused)
    }

    /// Applies several events, to any processes, as one transaction: in the
    /// given order, each seeing the effects of those before it, committed in
    /// one atomic write or not at all.
    ///
    /// Every shard owning a process of the transaction is paused (in shard
    /// order, so transactions never deadlock), so nothing else touches those
    /// processes until the commit is durable; the lowest of them applies it.
    ///
    /// # Errors
    /// [`TransactionFailed`] naming the event that failed; then nothing of
    /// the transaction is stored, and states, versions, idempotency keys and
    /// emitted events are as before.
    pub async fn transact(
        &self,
        requests: Vec<SendRequest>,
    ) -> Result<Committed, TransactionFailed> {
        let whole = |error| TransactionFailed { index: None, error };
        if requests.is_empty() {
            return Ok(Committed { transaction: None, events: Vec::new() });
        }
        let processes: Vec<ProcessId> = requests.iter().map(|r| r.process.clone()).collect();
        let paused = self.pause_shards(Some(&processes)).await.map_err(whole)?;
        let (respond, answer) = oneshot::channel();
        let (_, leader) = &paused.orders[0];
        leader
            .send(Order::Transact { requests, respond })
            .map_err(|_| whole(SendError::ShuttingDown))?;
        let result = answer.await.map_err(|_| whole(SendError::ShuttingDown))?;
        drop(paused);
        result
    }

    /// Counters of every running shard.
    pub fn stats(&self) -> Vec<ShardStats> {
        let partitions = self.routing.counts(self.peers.len());
        let handles = self.slots.handles.read();
        handles
            .iter()
            .enumerate()
            .filter_map(|(shard, handle)| Some((shard, handle.as_ref()?)))
            .map(|(shard, handle)| {
                let c = &self.peers[shard].counters;
                let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                ShardStats {
                    shard,
                    queued: handle.queue.max_capacity() - handle.queue.capacity(),
                    capacity: handle.queue.max_capacity(),
                    partitions: partitions[shard],
                    busy_percent: load(&c.busy_ppm) as f64 / 10_000.0,
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

    /// The autoscaler's bounds and its newest decisions.
    pub fn scaling(&self) -> ScalingView {
        let log = self.log.lock();
        ScalingView {
            enabled: self.policy.interval.is_some(),
            shards: self.slots.running.load(Ordering::Relaxed),
            min_shards: self.policy.min_shards,
            max_shards: self.policy.max_shards,
            added: log.added,
            retired: log.retired,
            rebalanced: log.rebalanced,
            decisions: log.decisions.iter().cloned().collect(),
        }
    }

    /// Carries out one scaling decision now, as the autoscaler would (for
    /// tests and operators); answers what was done.
    pub async fn rescale(&self, decision: Decision) -> Option<ScalingRecord> {
        let _alone = self.topology.write().await;
        let (slots, spawner, log) = (self.slots.clone(), self.spawner.clone(), self.log.clone());
        tokio::task::spawn_blocking(move || carry_out(&slots, &spawner, &log, decision))
            .await
            .ok()
            .flatten()
    }
}

/// What the autoscaler thread holds between looks: nothing that keeps the
/// managers alive.
struct Autoscaler {
    slots: Weak<Slots>,
    spawner: Weak<Spawner>,
    log: Weak<Mutex<ScalingLog>>,
    topology: Arc<tokio::sync::RwLock<()>>,
}

/// How busy each running shard was over the last `elapsed` nanoseconds.
fn look(slots: &Slots, spawner: &Spawner, before: &mut Vec<u64>, elapsed: f64) -> Vec<ShardLoad> {
    before.resize(spawner.peers.len(), 0);
    let handles = slots.handles.read();
    let mut loads = Vec::new();
    for (slot, handle) in handles.iter().enumerate() {
        let counters = &spawner.peers[slot].counters;
        let busy_now = counters.busy_nanos.load(Ordering::Relaxed);
        let busy = (busy_now.saturating_sub(before[slot]) as f64 / elapsed).min(1.0);
        before[slot] = busy_now;
        let Some(handle) = handle else { continue };
        counters.busy_ppm.store((busy * 1_000_000.0) as u64, Ordering::Relaxed);
        let queued = handle.queue.max_capacity() - handle.queue.capacity();
        loads.push(ShardLoad { slot, busy, queued });
    }
    loads
}

/// Carries out a decision: starts a shard, moves partitions, retires one.
/// The caller holds the topology lock alone.
fn carry_out(
    slots: &Slots,
    spawner: &Spawner,
    log: &Mutex<ScalingLog>,
    decision: Decision,
) -> Option<ScalingRecord> {
    let action = decision.action();
    let reason = decision.reason().to_owned();
    let running = |slot: usize| slots.handles.read().get(slot).is_some_and(Option::is_some);
    let fits = match &decision {
        Decision::Add { slot, from, .. } => running(*from) && !running(*slot),
        Decision::Rebalance { from, to, .. } => running(*from) && running(*to),
        Decision::Retire { slot, moves, .. } => {
            running(*slot) && moves.iter().all(|(_, to)| *to != *slot && running(*to))
        }
    };
    if !fits {
        tracing::warn!(?action, "scaling decision names a shard that is not running; ignored");
        return None;
    }
    let (from, to, partitions, processes) = match decision {
        Decision::Add { slot, from, partitions, .. } => {
            {
                let mut handles = slots.handles.write();
                let free = handles.get_mut(slot)?;
                *free = Some(spawner.spawn(slot));
            }
            slots.running.fetch_add(1, Ordering::Relaxed);
            let (moved, processes) = move_partitions(slots, from, partitions, slot);
            (from, vec![slot], moved, processes)
        }
        Decision::Rebalance { from, to, partitions, .. } => {
            let (moved, processes) = move_partitions(slots, from, partitions, to);
            (from, vec![to], moved, processes)
        }
        Decision::Retire { slot, moves, .. } => {
            let mut by_target: HashMap<usize, Vec<Partition>> = HashMap::new();
            for (partition, target) in &moves {
                by_target.entry(*target).or_default().push(*partition);
            }
            let mut targets: Vec<usize> = by_target.keys().copied().collect();
            targets.sort_unstable();
            let (mut moved, mut processes) = (0, 0);
            for target in &targets {
                let partitions = by_target.remove(target).unwrap_or_default();
                let (m, p) = move_partitions(slots, slot, partitions, *target);
                moved += m;
                processes += p;
            }
            if spawner.routing.counts(spawner.peers.len())[slot] > 0 {
                tracing::warn!(shard = slot, "shard still owns partitions; not retired");
            } else if let Some(handle) = slots.handles.write()[slot].take() {
                // The shard answers what is still queued (handing it back),
                // then stops once its last sender is gone.
                drop(handle);
                slots.running.fetch_sub(1, Ordering::Relaxed);
            }
            (slot, targets, moved, processes)
        }
    };
    let record = ScalingRecord {
        at_unix_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        action,
        from,
        to,
        partitions,
        processes,
        shards: slots.running.load(Ordering::Relaxed),
        reason,
    };
    tracing::info!(
        action = ?record.action, from = record.from, to = ?record.to,
        partitions = record.partitions, processes = record.processes,
        shards = record.shards, reason = %record.reason, "process managers rescaled"
    );
    let mut log = log.lock();
    match action {
        Action::Add => log.added += 1,
        Action::Retire => log.retired += 1,
        Action::Rebalance => log.rebalanced += 1,
    }
    if log.decisions.len() == DECISIONS_KEPT {
        log.decisions.pop_front();
    }
    log.decisions.push_back(record.clone());
    Some(record)
}

/// Has the shard in `from` give `partitions` to the shard in `to` and waits
/// until it has; answers how many partitions and resident processes moved.
fn move_partitions(
    slots: &Slots,
    from: usize,
    partitions: Vec<Partition>,
    to: usize,
) -> (usize, usize) {
    if partitions.is_empty() || from == to {
        return (0, 0);
    }
    let (done, moved) = std::sync::mpsc::channel();
    {
        let handles = slots.handles.read();
        let Some(source) = handles.get(from).and_then(Option::as_ref) else { return (0, 0) };
        if source.moves.send(Move { partitions, to, done }).is_err() {
            return (0, 0);
        }
        // An idle shard sleeps on its queue; a full queue means it is busy
        // and looks at its moves before its next batch anyway.
        let _ = source.queue.try_send(Command::Nudge);
    }
    moved.recv().unwrap_or((0, 0))
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
    /// Every shard's residents and counters, this one's included, by index.
    peers: Peers,
    /// Which shard owns which partition.
    routing: Arc<Routing>,
    /// Running shards, which share the memory budget.
    running: Arc<AtomicUsize>,
    /// Commands taken from the queue but not applied yet: the rest of a batch
    /// that ran past its time, ahead of everything still queued.
    carry: VecDeque<Command>,
    snapshots: SnapshotPolicy,
    /// Bytes of resident state all shards together may hold.
    memory_budget: usize,
    max_hops: u32,
    /// Told after every commit that added to the outbox.
    outbox_ready: Arc<Notify>,
    delivery: Arc<DeliveryCounters>,
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
    delivered: HashSet<Origin>,
    /// Entries the commit adds to the outbox.
    emits: i64,
    /// Dead letters the commit writes.
    dead: u64,
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
    /// Emitted events this batch delivered (or dead-lettered).
    delivered: HashSet<Origin>,
    /// Seqs reserved for the batch's events, taken in order (a transaction's).
    reserved: std::collections::VecDeque<julato_core::Allocation>,
}

impl Shard {
    /// The shard's loop. A batch is applied while the previous one is being
    /// fsync'd: the shard submits each batch's commit and only then waits for
    /// the one before it, so applying and syncing overlap. Events of the new
    /// batch see the states of the one in flight; readers see only states
    /// whose commit is durable. Between batches it carries out the moves the
    /// autoscaler ordered, before anything queued.
    fn run(&mut self, mut rx: mpsc::Receiver<Command>, moves: std::sync::mpsc::Receiver<Move>) {
        let _span = tracing::info_span!("shard", shard = self.index).entered();
        let mut in_flight: Option<InFlight> = None;
        loop {
            while let Ok(order) = moves.try_recv() {
                self.settle_in_flight(&mut in_flight);
                self.hand_over(order, &mut rx);
            }
            let first = match self.carry.pop_front() {
                Some(command) => Some(command),
                None if in_flight.is_some() => match rx.try_recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.settle_in_flight(&mut in_flight);
                        rx.blocking_recv()
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                },
                None => rx.blocking_recv(),
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
                    item = self.carry.pop_front().or_else(|| rx.try_recv().ok());
                }
            }
            if !work.is_empty() {
                let (next, left) = self.start_batch(work, in_flight.as_ref());
                self.settle_in_flight(&mut in_flight);
                in_flight = Some(next);
                if !left.is_empty() {
                    // The batch ran out of time: what it did not reach goes
                    // first next time, and the control command after it.
                    for command in control.take().into_iter().rev().chain(left.into_iter().rev()) {
                        self.carry.push_front(command);
                    }
                }
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

    /// Whether this shard owns `process` now.
    fn owns(&self, process: &ProcessId) -> bool {
        self.routing.owner_of(process) == self.index
    }

    /// Hands a command for processes this shard no longer owns back to its
    /// sender, to be routed again; answers a command it still owns. A bulk
    /// command goes back whole if any of it moved, so each process's events
    /// stay in one command, in order.
    fn bounce(&self, command: Command) -> Option<Command> {
        match command {
            Command::One { request, respond, .. } if !self.owns(&request.process) => {
                let _ = respond.send(Routed::Moved(request));
                None
            }
            Command::Many { requests, respond }
                if requests.iter().any(|r| !self.owns(&r.process)) =>
            {
                let _ = respond.send(requests.into_iter().map(Routed::Moved).collect());
                None
            }
            other => Some(other),
        }
    }

    /// Gives partitions to another shard: their resident states (all
    /// durable, the batch in flight settled) go into its map before the
    /// routing table names it, so a reader or sender that sees the new owner
    /// finds them there; then every command already waiting here for those
    /// partitions goes back to its sender at once.
    fn hand_over(&mut self, order: Move, rx: &mut mpsc::Receiver<Command>) {
        let Move { mut partitions, to, done } = order;
        // Only what this shard owns is its to give.
        partitions.retain(|p| self.routing.owner(*p) == self.index);
        let moving: HashSet<Partition> = partitions.iter().copied().collect();
        let mut processes = 0;
        if to != self.index && to < self.peers.len() {
            let target = &self.peers[to];
            let mut mine = self.residents.write();
            let mut theirs = target.residents.write();
            let chosen: Vec<ProcessId> =
                mine.keys().filter(|p| moving.contains(&Partition::of(p))).cloned().collect();
            let (mut added, mut replaced) = (0, 0);
            for process in chosen {
                if let Some(resident) = mine.remove(&process) {
                    added += resident.bytes();
                    if let Some(old) = theirs.insert(process, resident) {
                        replaced += old.bytes();
                    }
                    processes += 1;
                }
            }
            for partition in &partitions {
                self.routing.hand_over(*partition, to);
            }
            count_residents(&self.counters, &mine, 0, added);
            count_residents(&target.counters, &theirs, added, replaced);
        }
        let queued = rx.len();
        let waiting: Vec<Command> = self
            .carry
            .drain(..)
            .chain(std::iter::from_fn(|| rx.try_recv().ok()).take(queued))
            .collect();
        let kept: VecDeque<Command> = waiting.into_iter().filter_map(|c| self.bounce(c)).collect();
        self.carry = kept;
        tracing::debug!(to, partitions = partitions.len(), processes, "partitions handed over");
        let _ = done.send((partitions.len(), processes));
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
            Command::Pause { paused, orders } => {
                let _ = paused.send(());
                // Takes orders until the pauser lets go.
                while let Ok(order) = orders.recv() {
                    match order {
                        Order::Transact { requests, respond } => {
                            let _ = respond.send(self.transact(requests));
                        }
                    }
                }
            }
            Command::Warm { processes } => {
                let mine = processes.into_iter().filter(|p| self.owns(p)).collect();
                self.warm(mine);
            }
            Command::Nudge => {}
            Command::One { .. } | Command::Many { .. } => unreachable!("not a control command"),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Applies a batch on top of the one in flight and submits its commit.
    /// Commands for partitions that moved away go back to their senders; once
    /// the batch has taken [`BATCH_TIME`], the commands it has not reached are
    /// answered as the rest, for the next batch.
    fn start_batch(
        &mut self,
        commands: Vec<Command>,
        in_flight: Option<&InFlight>,
    ) -> (InFlight, Vec<Command>) {
        let started = Instant::now();
        let mut batch = Batch::default();
        let mut answers: Vec<Vec<Answer>> = Vec::with_capacity(commands.len());
        let mut responders = Vec::with_capacity(commands.len());
        let mut accepted: Vec<Slot> = Vec::new();
        let mut left = Vec::new();

        let mut commands = commands.into_iter();
        while let Some(item) = commands.next() {
            let Some(item) = self.bounce(item) else { continue };
            let (requests, responder) = match item {
                Command::One { request, respond, ticket } => {
                    (vec![request], Responder::One(respond, ticket))
                }
                Command::Many { requests, respond } => (requests, Responder::Many(respond)),
                Command::Evict { .. }
                | Command::Pause { .. }
                | Command::Warm { .. }
                | Command::Nudge => continue,
            };
            let mut slots = Vec::with_capacity(requests.len());
            for (position, request) in requests.into_iter().enumerate() {
                let partition = Partition::of(&request.process);
                let applying = Instant::now();
                let answer = self.apply(request, &mut batch, in_flight);
                self.routing.charge(partition, applying.elapsed().as_nanos() as u64);
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
            if started.elapsed() >= BATCH_TIME {
                left.extend(commands.by_ref());
            }
        }
        let busy = started.elapsed().as_nanos() as u64;
        self.counters.busy_nanos.fetch_add(busy, Ordering::Relaxed);

        for (process, working) in &batch.working {
            batch.commit.heads.push((process.clone(), working.head.clone()));
        }
        let snapshots = batch.commit.snapshots.len() as u64;
        let emits = batch.commit.outbox.len() as i64;
        let dead = batch.commit.dead_letters.len() as u64;
        let pending = self.store.submit(std::mem::take(&mut batch.commit));
        let in_flight = InFlight {
            pending,
            working: batch.working,
            idempotent: batch.idempotent,
            delivered: batch.delivered,
            emits,
            dead,
            seqs: batch.seqs,
            answers,
            responders,
            accepted,
            snapshots,
        };
        (in_flight, left)
    }

    /// Waits until a batch's commit is durable, then makes its states visible
    /// to readers and answers its clients. A failed commit fails every event
    /// of the batch, and the store refuses every later commit (fail-stop), so
    /// no batch built on a failed one is ever written.
    fn finish(&mut self, batch: InFlight) {
        let InFlight {
            pending,
            working,
            seqs,
            mut answers,
            responders,
            accepted,
            snapshots,
            emits,
            dead,
            ..
        } = batch;
        let committed = pending.wait();
        match &committed {
            Ok(()) => {
                self.counters.snapshots.fetch_add(snapshots, Ordering::Relaxed);
                self.counters.applied.fetch_add(accepted.len() as u64, Ordering::Relaxed);
                self.install(working);
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
            self.delivery.dead_lettered.fetch_add(dead, Ordering::Relaxed);
            if emits > 0 {
                self.delivery.pending.fetch_add(emits, Ordering::Relaxed);
                // After the watermark moved, so the deliverer sees the entries.
                self.outbox_ready.notify_one();
            }
        } else {
            self.sequencer.settle_all(seqs);
        }
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        for (responder, slots) in responders.into_iter().zip(answers) {
            responder.respond(slots);
        }
    }

    /// Makes durable states visible to readers, each in the resident map of
    /// the shard that owns its process.
    fn install(&self, working: HashMap<ProcessId, Working>) {
        let now = self.now_ms();
        let mut by_shard: Vec<Vec<(ProcessId, Working)>> = Vec::new();
        by_shard.resize_with(self.peers.len(), Vec::new);
        for (process, w) in working {
            by_shard[self.routing.owner_of(&process)].push((process, w));
        }
        for (peer, states) in self.peers.iter().zip(by_shard) {
            if states.is_empty() {
                continue;
            }
            let mut residents = peer.residents.write();
            let (mut added, mut removed) = (0, 0);
            for (process, w) in states {
                let resident = Resident {
                    head: w.head,
                    state: w.state,
                    snapshotted: w.snapshotted,
                    last_used: AtomicU64::new(now),
                };
                added += resident.bytes();
                if let Some(old) = residents.insert(process, resident) {
                    removed += old.bytes();
                }
            }
            count_residents(&peer.counters, &residents, added, removed);
        }
    }

    /// Updates this shard's resident counters.
    fn count_residents(
        &self,
        residents: &HashMap<ProcessId, Resident>,
        added: usize,
        removed: usize,
    ) {
        count_residents(&self.counters, residents, added, removed);
    }

    fn resident_bytes(&self) -> usize {
        self.counters.resident_bytes.load(Ordering::Relaxed) as usize
    }

    /// Bytes of resident state this shard may hold: its share of the budget.
    fn budget(&self) -> usize {
        self.memory_budget / self.running.load(Ordering::Relaxed).max(1)
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
        let owner = &self.peers[self.routing.owner_of(process)];
        if let Some(r) = owner.residents.read().get(process) {
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

    /// Applies one event to the batch. A delivery its target refuses for good
    /// becomes a dead letter in the same commit that takes it out of the outbox.
    fn apply(
        &mut self,
        mut request: SendRequest,
        batch: &mut Batch,
        in_flight: Option<&InFlight>,
    ) -> Answer {
        let Some(entry) = request.delivery.take() else {
            return self.apply_event(request, None, batch, in_flight);
        };
        let origin = entry.origin;
        let delivered_before = batch.delivered.contains(&origin)
            || in_flight.is_some_and(|f| f.delivered.contains(&origin));
        match self.store.in_outbox(origin) {
            Ok(true) if !delivered_before => {}
            Ok(_) => return Err(SendError::AlreadyDelivered(origin.to_string())),
            Err(e) => return Err(SendError::Storage(e.to_string())),
        }
        let answer = self.apply_event(request, Some(&*entry), batch, in_flight);
        match &answer {
            Ok(_) => {}
            Err(error) if error.is_transient() => return answer,
            Err(error) => {
                tracing::info!(
                    function = %entry.function, process = %entry.key, origin = %origin,
                    code = error.code(), "emitted event refused by its target: dead letter"
                );
                let time = self.sequencer.last_time();
                batch.commit.dead_letters.push(DeadLetter {
                    entry: *entry,
                    code: error.code().to_owned(),
                    message: error.to_string(),
                    time,
                });
            }
        }
        batch.commit.delivered.push(origin);
        batch.delivered.insert(origin);
        answer
    }

    /// Applies a transaction while every shard it touches is paused: a batch
    /// of its own, committed alone and waited for, so the states it installs
    /// in other shards' maps are durable before those shards go on.
    fn transact(&mut self, requests: Vec<SendRequest>) -> Result<Committed, TransactionFailed> {
        let started = Instant::now();
        let result = self.transact_timed(requests);
        let busy = started.elapsed().as_nanos() as u64;
        self.counters.busy_nanos.fetch_add(busy, Ordering::Relaxed);
        result
    }

    fn transact_timed(
        &mut self,
        requests: Vec<SendRequest>,
    ) -> Result<Committed, TransactionFailed> {
        let reserved = self.sequencer.allocate_many(requests.len()).into();
        let mut batch = Batch { reserved, ..Batch::default() };
        let mut events = Vec::with_capacity(requests.len());
        let mut previous: Option<Seq> = None;
        let mut first: Option<Seq> = None;
        for (index, request) in requests.into_iter().enumerate() {
            let records = batch.commit.records.len();
            let process = request.process.clone();
            match self.apply(request, &mut batch, None) {
                Ok(applied) => {
                    if batch.commit.records.len() > records {
                        let record = batch.commit.records.last_mut().expect("just pushed");
                        if let Some(previous) = previous {
                            Cause::push(&mut record.causes, previous, CauseKind::Transaction);
                        }
                        previous = Some(record.seq);
                        first.get_or_insert(record.seq);
                    }
                    events.push((process, applied));
                }
                Err(error) => {
                    self.sequencer.settle_all(batch.seqs.iter().copied());
                    self.sequencer.settle_all(batch.reserved.iter().map(|a| a.seq));
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    return Err(TransactionFailed { index: Some(index), error });
                }
            }
        }
        // Seqs of events answered from their idempotency key are not used.
        self.sequencer.settle_all(batch.reserved.drain(..).map(|a| a.seq));
        for record in &mut batch.commit.records {
            record.transaction = first;
        }
        for (process, working) in &batch.working {
            batch.commit.heads.push((process.clone(), working.head.clone()));
        }
        let emits = batch.commit.outbox.len() as i64;
        let dead = batch.commit.dead_letters.len() as u64;
        let snapshots = batch.commit.snapshots.len() as u64;
        let accepted = batch.seqs.len() as u64;
        match self.store.append(batch.commit) {
            Ok(()) => {
                self.counters.snapshots.fetch_add(snapshots, Ordering::Relaxed);
                self.counters.applied.fetch_add(accepted, Ordering::Relaxed);
                self.install(batch.working);
                self.sequencer.commit_all(batch.seqs);
                self.delivery.dead_lettered.fetch_add(dead, Ordering::Relaxed);
                if emits > 0 {
                    self.delivery.pending.fetch_add(emits, Ordering::Relaxed);
                    self.outbox_ready.notify_one();
                }
                Ok(Committed { transaction: first, events })
            }
            Err(error) => {
                tracing::error!(error = %error, "transaction commit failed; nothing of it is stored");
                self.sequencer.settle_all(batch.seqs);
                Err(TransactionFailed { index: None, error: SendError::Storage(error.to_string()) })
            }
        }
    }

    fn apply_event(
        &mut self,
        request: SendRequest,
        delivery: Option<&OutboxEntry>,
        batch: &mut Batch,
        in_flight: Option<&InFlight>,
    ) -> Answer {
        let process = request.process.clone();
        let function_version = self
            .catalog
            .latest(&process.function)
            .ok_or_else(|| SendError::UnknownFunction(process.function.clone()))?;

        let digest = request.idempotency_key.as_ref().map(|_| request.digest());
        if let Some(token) = &request.idempotency_key
            && let Some(first) = self.first_answer(&process, token, batch, in_flight)?
        {
            if !request.matches_digest(&first.request_digest) {
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

        let allocation = batch.reserved.pop_front().unwrap_or_else(|| self.sequencer.allocate());
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

        let hops = delivery.map_or(0, |d| d.hops);
        let mut causes = Vec::new();
        Cause::push(&mut causes, current.last_seq, CauseKind::Process);
        if let Some(entry) = delivery {
            Cause::push(&mut causes, entry.origin.seq, CauseKind::Emit);
        }
        if let Some(after) = request.after.filter(|after| *after < allocation.seq) {
            Cause::push(&mut causes, after, CauseKind::Token);
        }
        let mut emitted = Vec::with_capacity(outcome.emits.len());
        for (index, e) in outcome.emits.into_iter().enumerate() {
            let entry = OutboxEntry {
                origin: Origin { seq: allocation.seq, index: index as u32 },
                function: e.function,
                key: e.key,
                event_type: e.event_type,
                payload: e.payload,
                hops: hops + 1,
                redriven: false,
            };
            emitted.push(julato_core::EmittedEvent {
                function: entry.function.clone(),
                key: entry.key.clone(),
                event_type: entry.event_type.clone(),
                payload: entry.payload.clone(),
            });
            if entry.hops > self.max_hops {
                let message = format!(
                    "emitted {} hops from a client's event, over the limit of {}",
                    entry.hops, self.max_hops
                );
                batch.commit.dead_letters.push(DeadLetter {
                    entry,
                    code: "hop_limit".into(),
                    message,
                    time: allocation.time,
                });
            } else {
                batch.commit.outbox.push(entry);
            }
        }
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
            causes,
            transaction: None,
            origin: delivery.map(|d| d.origin),
            hops,
            reply: outcome.reply.clone(),
            emitted,
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
        let target = self.budget() / 10 * 9;
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
        if bytes <= self.budget() {
            return;
        }
        let over = {
            let residents = self.residents.read();
            let mut by_age: Vec<(u64, usize, ProcessId)> = residents
                .iter()
                .map(|(p, r)| (r.last_used.load(Ordering::Relaxed), r.bytes(), p.clone()))
                .collect();
            by_age.sort_unstable_by_key(|(used, ..)| *used);
            let target = self.budget() / 10 * 9;
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

/// Updates a shard's resident counters after `added` bytes came in and
/// `removed` left, without walking the map.
fn count_residents(
    counters: &Counters,
    residents: &HashMap<ProcessId, Resident>,
    added: usize,
    removed: usize,
) {
    counters.resident.store(residents.len() as u64, Ordering::Relaxed);
    counters.resident_bytes.fetch_add(added as u64, Ordering::Relaxed);
    counters.resident_bytes.fetch_sub(removed as u64, Ordering::Relaxed);
}

impl Command {
    fn len(&self) -> usize {
        match self {
            Command::One { .. } => 1,
            Command::Many { requests, .. } => requests.len(),
            Command::Evict { .. }
            | Command::Pause { .. }
            | Command::Warm { .. }
            | Command::Nudge => 0,
        }
    }

    fn is_control(&self) -> bool {
        !matches!(self, Command::One { .. } | Command::Many { .. })
    }
}

enum Responder {
    /// One event's answer, and its place among its process's waiting events,
    /// freed once it is answered.
    One(oneshot::Sender<Routed>, Arc<Ticket>),
    Many(oneshot::Sender<Vec<Routed>>),
}

impl Responder {
    fn respond(self, mut answers: Vec<Answer>) {
        match self {
            Responder::One(tx, ticket) => {
                // Freed before the answer leaves, so that a client sending its
                // next event as soon as it has this answer finds the place free.
                drop(ticket);
                let answer = answers.pop().unwrap_or(Err(SendError::ShuttingDown));
                let _ = tx.send(Routed::Done(answer));
            }
            Responder::Many(tx) => {
                let _ = tx.send(answers.into_iter().map(Routed::Done).collect());
            }
        }
    }
}

#[cfg(test)]
mod digest_tests {
    use julato_core::{Payload, ProcessId};

    use super::{SendRequest, compact_json};

    fn request(data: &str) -> SendRequest {
        SendRequest::new(
            ProcessId::parse("account", "alice").unwrap(),
            "Deposit",
            Payload::Json(data.to_owned()),
        )
    }

    #[test]
    fn whitespace_between_tokens_does_not_change_the_digest() {
        let spaced = request("{ \"amount\" : 1,\n\t\"note\": \"a  b\" }");
        let tight = request("{\"amount\":1,\"note\":\"a  b\"}");
        assert_eq!(spaced.digest(), tight.digest());
        assert!(spaced.matches_digest(&tight.digest()));
    }

    #[test]
    fn anything_else_does() {
        let base = request("{\"amount\":1,\"note\":\"a b\"}").digest();
        for other in [
            "{\"amount\":2,\"note\":\"a b\"}",
            "{\"amount\":1,\"note\":\"a  b\"}",
            "{\"amount\":1.0,\"note\":\"a b\"}",
            "{\"note\":\"a b\",\"amount\":1}",
            "{\"amount\":1,\"note\":\"a\\\" b\"}",
        ] {
            assert_ne!(request(other).digest(), base, "{other}");
        }
    }

    #[test]
    fn strings_keep_their_whitespace_and_escapes() {
        assert_eq!(compact_json(r#" [ "a \" b" , "\\" , 1 ] "#), r#"["a \" b","\\",1]"#);
    }

    #[test]
    fn a_digest_of_the_text_as_sent_still_matches() {
        let spaced = request("{ \"amount\": 1 }");
        assert!(spaced.matches_digest(&spaced.digest_of(false)));
        assert!(!request("{\"amount\": 2}").matches_digest(&spaced.digest_of(false)));
    }
}
