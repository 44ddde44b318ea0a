//! The coordinator: Julato's entry point behind the HTTP API. It opens the event
//! store, keeps the catalog of deployed functions, routes events to the process
//! managers that own their processes, and serves reads of states, histories and
//! the global log, now or as of an earlier point. It takes checkpoints and
//! restores the whole system to an earlier point.

pub mod graph;
mod recovery;
pub mod transactions;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use julato_core::{
    AsOf, AsOfError, Branch, CausalToken, Checkpoint, Clock, DeadLetter, DeployedVersion,
    EventRecord, EventTime, FunctionInfo, FunctionName, InvalidName, LOCAL_PARTITION, Origin,
    ProcessHead, ProcessId, ProcessKey, Seq, Sequencer, SnapshotPolicy, SystemClock, Timeline,
    Version, VersionIndex,
};
use julato_executor::{Executor, Limits};
use julato_manager::routing::Partition;
use julato_manager::{
    Catalog, Decision, Deliverer, ManagerConfig, Managers, Replayer, ScalingPolicy, ScalingRecord,
    ScalingView,
};
use julato_store::Store;
use parking_lot::{Mutex, RwLock};

pub use julato_manager::catalog::DeployError;
pub use julato_manager::{Applied, Committed, SendError, SendRequest, ShardStats};
pub use recovery::{RestoreReport, RestoreTarget};

/// How the coordinator is set up.
#[derive(Clone)]
pub struct Config {
    /// The one folder that holds all data.
    pub data_dir: PathBuf,
    /// Process-manager shards at start.
    pub shards: usize,
    /// Bounds and thresholds of the autoscaler; the bounds widen to include
    /// `shards`.
    pub scaling: ScalingPolicy,
    /// Commands each shard may queue before senders are told to back off.
    pub queue_capacity: usize,
    /// Single sends of one process that may wait at once
    /// (`process_overloaded` past it).
    pub process_queue: usize,
    /// Sandbox budgets per invocation.
    pub limits: Limits,
    /// Longest wait for a causal token to be covered.
    pub token_wait: Duration,
    /// Source of wall-clock readings for event times.
    pub clock: Arc<dyn Clock>,
    /// How often a running process is snapshotted.
    pub snapshots: SnapshotPolicy,
    /// A process idle this long leaves memory; `None` keeps idle processes.
    pub idle_eviction: Option<Duration>,
    /// Bytes of hot state all shards may hold before evicting the least recently used.
    pub memory_budget: usize,
    /// Most emits between a client's event and a delivered one.
    pub max_hops: u32,
    /// An interactive transaction idle this long rolls back.
    pub transaction_timeout: Duration,
    /// Events per transaction and interactive transactions open at once.
    pub transactions: transactions::TransactionLimits,
}

impl Config {
    /// Defaults for a data folder: four shards per core, at least four.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            data_dir: data_dir.into(),
            shards: (cores * 4).max(4),
            scaling: ScalingPolicy::for_cores(cores),
            queue_capacity: 4096,
            process_queue: 1024,
            limits: Limits::default(),
            token_wait: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
            snapshots: SnapshotPolicy::default(),
            idle_eviction: Some(Duration::from_secs(300)),
            memory_budget: 512 << 20,
            max_hops: 32,
            transaction_timeout: Duration::from_secs(30),
            transactions: transactions::TransactionLimits::default(),
        }
    }
}

/// Errors of the coordinator, each with a stable code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Send(#[from] SendError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("no function named `{0}` is deployed")]
    UnknownFunction(FunctionName),
    #[error("process `{0}` has no events")]
    UnknownProcess(ProcessId),
    #[error("no event has seq {0}")]
    UnknownEvent(Seq),
    #[error(transparent)]
    OutOfRange(#[from] AsOfError),
    #[error("no restore made branch {0}")]
    UnknownBranch(u64),
    #[error("cannot restore to seq {asked}: the log ends at {end}")]
    RestorePointOutOfRange { asked: Seq, end: Seq },
    #[error("events at or before {0} are still being committed after waiting {1:?}")]
    TimeNotSettled(EventTime, Duration),
    #[error("causal token {0} is not covered after waiting {1:?}")]
    TokenNotReached(CausalToken, Duration),
    #[error("causal token {0} names log partition {1}, which this node does not hold")]
    TokenPartition(CausalToken, u32),
    #[error("{}", match .index {
        Some(index) => format!("event {index} of the transaction failed, nothing was committed: {}", .source),
        None => format!("the transaction failed, nothing was committed: {}", .source),
    })]
    Transaction {
        /// Position of the failing event in the transaction, if one failed.
        index: Option<usize>,
        /// The process that event went to.
        process: Option<ProcessId>,
        source: SendError,
    },
    #[error("a transaction holds at most {limit} events, not {count}")]
    TooManyEvents { count: usize, limit: usize },
    #[error(
        "no open transaction `{0}` (it may have been committed, rolled back or timed out, \
         or the server restarted)"
    )]
    UnknownTransaction(String),
    /// An event added to an open transaction failed; the transaction is now
    /// aborted, so that it can never commit without that event.
    #[error("{source}; transaction `{id}` is aborted and can only be rolled back")]
    AbortedBy { id: String, source: Box<Error> },
    /// A commit or an add to a transaction an earlier failed event aborted.
    #[error("{}", if *.rolled_back {
        format!("transaction `{id}` was aborted by a failed event ({reason}), so it is rolled back")
    } else {
        format!("transaction `{id}` was aborted by a failed event ({reason}); roll it back")
    })]
    TransactionAborted { id: String, reason: String, rolled_back: bool },
    #[error("{limit} interactive transactions are open, the most this server allows")]
    TooManyTransactions { limit: usize },
    #[error("transaction `{0}` holds no events: nothing to commit")]
    EmptyTransaction(String),
    #[error("an idle timeout of 0 ms would roll the transaction back at once")]
    ZeroTimeout,
    #[error("no dead letter {0}")]
    UnknownDeadLetter(Origin),
    #[error(transparent)]
    Store(#[from] julato_store::Error),
    #[error(transparent)]
    Executor(#[from] julato_executor::Error),
}

impl Error {
    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Send(e) | Error::Transaction { source: e, .. } => e.code(),
            Error::Deploy(e) => match e {
                DeployError::Component(julato_executor::Error::InvalidComponent(_)) => {
                    "invalid_component"
                }
                DeployError::Component(julato_executor::Error::WorldMismatch(_)) => {
                    "component_world_mismatch"
                }
                DeployError::Component(julato_executor::Error::UnknownImports(_)) => {
                    "component_import_unknown"
                }
                DeployError::Component(julato_executor::Error::Describe(_)) => {
                    "component_describe_failed"
                }
                DeployError::Component(julato_executor::Error::Init(_)) => "component_init_failed",
                DeployError::Component(_) => "internal",
                DeployError::NoEventTypes => "component_without_handlers",
                DeployError::Storage(_) => "storage_failed",
            },
            Error::InvalidName(_) => "invalid_name",
            Error::UnknownFunction(_) => "function_not_found",
            Error::UnknownProcess(_) => "process_not_found",
            Error::UnknownEvent(_) => "event_not_found",
            Error::OutOfRange(AsOfError::VersionOutOfRange { .. }) => "version_out_of_range",
            Error::OutOfRange(AsOfError::SeqOutOfRange { .. }) => "seq_out_of_range",
            Error::UnknownBranch(_) => "branch_not_found",
            Error::RestorePointOutOfRange { .. } => "restore_point_out_of_range",
            Error::TokenNotReached(..) => "token_not_reached",
            Error::TokenPartition(..) => "token_partition_unknown",
            Error::TooManyEvents { .. } => "too_many_events",
            Error::UnknownTransaction(_) => "transaction_not_found",
            Error::AbortedBy { source, .. } => source.code(),
            Error::TransactionAborted { .. } => "transaction_aborted",
            Error::TooManyTransactions { .. } => "overloaded",
            Error::EmptyTransaction(_) => "empty_transaction",
            Error::ZeroTimeout => "invalid_timeout",
            Error::UnknownDeadLetter(_) => "dead_letter_not_found",
            Error::TimeNotSettled(..) => "time_not_settled",
            Error::Store(_) => "storage_failed",
            Error::Executor(_) => "internal",
        }
    }
}

/// One process as a list shows it.
#[derive(Debug, Clone)]
pub struct ProcessSummary {
    pub key: ProcessKey,
    pub head: ProcessHead,
}

/// A process's state at one version, with where that version sits.
#[derive(Debug, Clone)]
pub struct ProcessState {
    /// The version read; its `last_seq` and `updated` are those of the event
    /// that made it (zero for version 0).
    pub head: ProcessHead,
    pub state: String,
    /// The process's newest version when it was read.
    pub newest: Version,
}

/// The running core of a Julato node; cheap to share behind an `Arc`.
pub struct Coordinator {
    store: Store,
    catalog: Arc<Catalog>,
    managers: Managers,
    replayer: Replayer,
    token_wait: Duration,
    clock: Arc<dyn Clock>,
    /// Restores archived parts of the log. Readers hold it shared for the
    /// length of a read; a restore holds it alone.
    timeline: RwLock<Timeline>,
    /// One checkpoint at a time.
    checkpointing: Mutex<()>,
    /// One restore at a time.
    restoring: tokio::sync::Mutex<()>,
    deliverer: Deliverer,
    sessions: transactions::Sessions,
    transaction_timeout: Duration,
    transaction_limits: transactions::TransactionLimits,
}

/// The live version index of one process, for resolving points.
struct LiveIndex<'a> {
    store: &'a Store,
    process: &'a ProcessId,
}

impl VersionIndex for LiveIndex<'_> {
    type Error = Error;
    fn position(&self, version: Version) -> Result<(Seq, EventTime), Error> {
        self.store.position(self.process, version)?.ok_or_else(|| {
            julato_store::Error::Corrupt {
                what: "versions",
                message: format!("{} has no entry for version {version}", self.process),
            }
            .into()
        })
    }
}

impl Coordinator {
    /// Opens the data folder, recovers the log and starts the process managers.
    /// Nothing is replayed here: a process is rebuilt from its newest snapshot
    /// (every checkpoint leaves one per process) when it is first used.
    ///
    /// # Errors
    /// Fails when the store cannot be opened or the engine configured.
    pub fn open(config: Config) -> Result<Self, Error> {
        let store = Store::open(&config.data_dir)?;
        let executor = Arc::new(Executor::new(&config.data_dir.join("cache"), config.limits)?);
        let catalog = Arc::new(Catalog::open(store.clone(), executor)?);
        let (last_seq, last_time) = store.tail()?;
        let timeline = Timeline::new(store.branches()?);
        let checkpoints = store.checkpoints()?;
        let newest_checkpoint = checkpoints.iter().rev().find(|c| c.archived_by.is_none()).cloned();
        // A rejected event's seq is never stored, but a restore branch or a
        // checkpoint may have published it; never hand one out again.
        let published = timeline
            .branches()
            .iter()
            .map(|b| b.upto)
            .chain(checkpoints.iter().map(|c| c.seq))
            .max()
            .unwrap_or(Seq(0));
        let sequencer = Sequencer::new(last_seq.max(published), last_time, config.clock.clone());
        let managers = Managers::start(
            &ManagerConfig {
                shards: config.shards,
                scaling: ScalingPolicy {
                    min_shards: config.scaling.min_shards.min(config.shards),
                    max_shards: config.scaling.max_shards.max(config.shards),
                    ..config.scaling.clone()
                },
                queue_capacity: config.queue_capacity,
                process_queue: config.process_queue,
                snapshots: config.snapshots,
                idle_eviction: config.idle_eviction,
                memory_budget: config.memory_budget,
                max_hops: config.max_hops,
            },
            store.clone(),
            catalog.clone(),
            sequencer,
        );
        tracing::info!(
            data = %config.data_dir.display(),
            last_seq = last_seq.0,
            checkpoint = newest_checkpoint.as_ref().map(|c| c.seq.0),
            restores = timeline.branches().len(),
            functions = catalog.list().len(),
            shards = config.shards,
            "coordinator open"
        );
        let coordinator = Self {
            replayer: Replayer::new(store.clone(), catalog.clone()),
            deliverer: Deliverer::start(managers.clone(), store.clone()),
            store,
            catalog,
            managers,
            token_wait: config.token_wait,
            clock: config.clock,
            timeline: RwLock::new(timeline),
            checkpointing: Mutex::new(()),
            restoring: tokio::sync::Mutex::new(()),
            sessions: transactions::Sessions::default(),
            transaction_timeout: config.transaction_timeout,
            transaction_limits: config.transactions,
        };
        coordinator.warm_after(newest_checkpoint.map_or(Seq(0), |c| c.seq), last_seq);
        Ok(coordinator)
    }

    /// Deploys a new version of a function; the same bytes as the newest version
    /// answer that version and `false`. Compiles the component, so run it off
    /// the async executor.
    ///
    /// # Errors
    /// [`Error::Deploy`] when the bytes are not a fitting component, or when
    /// the component cannot build the initial state of a process.
    pub fn deploy(
        &self,
        name: &FunctionName,
        bytes: Vec<u8>,
    ) -> Result<(DeployedVersion, bool), Error> {
        // The initial state takes no input, so a component that fails to build
        // it would fail the first event of every process: refuse it now. The
        // compiled code stays in the cache for the catalog's own compile.
        let executor = self.catalog.executor();
        let loaded = executor.compile(&bytes).map_err(DeployError::Component)?;
        executor
            .init(&loaded, name.as_str(), "")
            .map_err(|e| DeployError::Component(julato_executor::Error::Init(e)))?;
        Ok(self.catalog.deploy(name, bytes)?)
    }

    pub fn functions(&self) -> Vec<FunctionInfo> {
        self.catalog.list()
    }

    /// One function with its versions.
    ///
    /// # Errors
    /// [`Error::UnknownFunction`] when none has that name.
    pub fn function(&self, name: &FunctionName) -> Result<FunctionInfo, Error> {
        self.catalog.get(name).ok_or_else(|| Error::UnknownFunction(name.clone()))
    }

    /// The token covering everything committed so far.
    pub fn token(&self) -> CausalToken {
        CausalToken::at(self.managers.sequencer().watermark())
    }

    /// Waits until everything `token` covers is visible.
    ///
    /// # Errors
    /// [`Error::TokenNotReached`] when that takes longer than the configured
    /// wait; [`Error::TokenPartition`] when the token names a log partition
    /// this node does not hold (the embedded store holds partition 0 only).
    pub async fn observe(&self, token: &CausalToken) -> Result<(), Error> {
        if let Some((partition, _)) = token.positions().find(|(p, _)| *p != LOCAL_PARTITION) {
            return Err(Error::TokenPartition(token.clone(), partition));
        }
        let deadline = tokio::time::Instant::now() + self.token_wait;
        while self.managers.sequencer().watermark() < token.seq() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::TokenNotReached(token.clone(), self.token_wait));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Waits until no event with a time at or before `time` is still in
    /// flight, so a read as of `time` gives the same answer whenever it is
    /// repeated. (A time ahead of the clock can still gain events: a read as of
    /// the future is a read of the newest state.)
    ///
    /// # Errors
    /// [`Error::TimeNotSettled`] when that takes longer than the configured wait.
    pub async fn observe_time(&self, time: EventTime) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.token_wait;
        while self.managers.sequencer().unsettled_at_or_before(time) {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::TimeNotSettled(time, self.token_wait));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Sends one event and waits until it is durable.
    ///
    /// # Errors
    /// [`Error::Send`] when the event was not applied.
    pub async fn send(&self, request: SendRequest) -> Result<Applied, Error> {
        Ok(self.managers.send(request).await?)
    }

    /// Sends many events, each applied on its own; answers in request order.
    pub async fn send_many(&self, requests: Vec<SendRequest>) -> Vec<Result<Applied, Error>> {
        self.managers
            .send_many(requests)
            .await
            .into_iter()
            .map(|r| r.map_err(Error::from))
            .collect()
    }

    /// The newest head of a process.
    fn head(&self, process: &ProcessId) -> Result<ProcessHead, Error> {
        self.function(&process.function)?;
        self.store.head(process)?.ok_or_else(|| Error::UnknownProcess(process.clone()))
    }

    /// The current state of a process: from memory when it is hot, else rebuilt
    /// from its newest snapshot and the events after it. May run handlers, so
    /// call it off the async executor.
    ///
    /// # Errors
    /// [`Error::UnknownFunction`] or [`Error::UnknownProcess`].
    pub fn state(&self, process: &ProcessId) -> Result<ProcessState, Error> {
        let _timeline = self.timeline.read_recursive();
        // A resident process belongs to a deployed function; `head` checks the
        // function for the others.
        if let Some((head, state)) = self.managers.resident(process) {
            return Ok(ProcessState { newest: head.version, head, state });
        }
        let head = self.head(process)?;
        let rebuilt = self.replayer.rebuild(process, head.version)?;
        Ok(ProcessState { newest: head.version, head, state: rebuilt.state })
    }

    /// The state of a process as of an earlier point. Version 0, and any point
    /// before the first event, give the initial state; a time in the future
    /// gives the newest state; a version past the newest is an error.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a version past the newest or a seq past the
    /// log's end, [`Error::UnknownFunction`] or [`Error::UnknownProcess`].
    pub fn state_at(&self, process: &ProcessId, point: AsOf) -> Result<ProcessState, Error> {
        let _timeline = self.timeline.read_recursive();
        let newest = self.head(process)?;
        let version = self.resolve(process, &newest, point)?;
        if version == newest.version
            && let Some((head, state)) = self.managers.resident(process)
            && head.version == version
        {
            return Ok(ProcessState { newest: head.version, head, state });
        }
        let rebuilt = self.replayer.rebuild(process, version)?;
        let head = if version == Version(0) {
            let first = self.store.history(process, Version(1), Version(1), 1)?;
            ProcessHead {
                version,
                last_seq: Seq(0),
                function_version: first
                    .first()
                    .map_or(newest.function_version, |e| e.function_version),
                created: EventTime(0),
                updated: EventTime(0),
            }
        } else {
            let (seq, time) = LiveIndex { store: &self.store, process }.position(version)?;
            let event = self.store.event(seq)?.ok_or(Error::UnknownEvent(seq))?;
            ProcessHead {
                version,
                last_seq: seq,
                function_version: event.function_version,
                created: newest.created,
                updated: time,
            }
        };
        Ok(ProcessState { head, state: rebuilt.state, newest: newest.version })
    }

    fn resolve(
        &self,
        process: &ProcessId,
        newest: &ProcessHead,
        point: AsOf,
    ) -> Result<Version, Error> {
        let index = LiveIndex { store: &self.store, process };
        let end = self.managers.sequencer().watermark();
        julato_core::history::resolve(&index, newest.version, end, point)
    }

    /// A page of a process's history from version `from`, up to the point
    /// `upto` names (the newest version if none).
    ///
    /// # Errors
    /// [`Error::UnknownFunction`], [`Error::UnknownProcess`] or [`Error::OutOfRange`].
    pub fn history(
        &self,
        process: &ProcessId,
        from: Version,
        upto: Option<AsOf>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, Error> {
        let _timeline = self.timeline.read();
        let newest = self.head(process)?;
        let to = match upto {
            Some(point) => self.resolve(process, &newest, point)?,
            None => newest.version,
        };
        Ok(self.store.history(process, from.max(Version(1)), to, limit)?)
    }

    /// A page of a function's processes in key order, after `after`.
    ///
    /// # Errors
    /// [`Error::UnknownFunction`].
    pub fn processes(
        &self,
        function: &FunctionName,
        after: Option<&ProcessKey>,
        limit: usize,
    ) -> Result<Vec<ProcessSummary>, Error> {
        self.function(function)?;
        let page = self.store.processes(function, after, limit)?;
        Ok(page.into_iter().map(|(key, head)| ProcessSummary { key, head }).collect())
    }

    /// A page of the log from `from`, never past an event still in flight: the
    /// live timeline, or the events a restore archived as `branch`.
    ///
    /// # Errors
    /// [`Error::UnknownBranch`], or [`Error::Store`] on a read failure.
    pub fn log(
        &self,
        from: Seq,
        limit: usize,
        branch: Option<u64>,
    ) -> Result<Vec<EventRecord>, Error> {
        let timeline = self.timeline.read();
        let upto = self.managers.sequencer().watermark();
        let ranges = match branch {
            None => timeline.live_ranges(from, upto),
            Some(id) => {
                timeline.branch(id).ok_or(Error::UnknownBranch(id))?;
                timeline.branch_ranges(id, from, upto)
            }
        };
        let mut out = Vec::new();
        for (start, end) in ranges {
            if out.len() >= limit {
                break;
            }
            out.extend(self.store.log(start, end, limit - out.len())?);
        }
        Ok(out)
    }

    /// One event record, and the branch it was archived to if a restore took it
    /// off the live timeline.
    ///
    /// # Errors
    /// [`Error::UnknownEvent`] when no committed event has that seq.
    pub fn event(&self, seq: Seq) -> Result<(EventRecord, Option<u64>), Error> {
        if seq > self.managers.sequencer().watermark() {
            return Err(Error::UnknownEvent(seq));
        }
        let record = self.store.event(seq)?.ok_or(Error::UnknownEvent(seq))?;
        Ok((record, self.timeline.read().branch_of(seq)))
    }

    /// Every restore so far, oldest first; each archived a branch of the log.
    pub fn restores(&self) -> Vec<Branch> {
        self.timeline.read().branches().to_vec()
    }

    /// Every checkpoint, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] on a read failure.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, Error> {
        Ok(self.store.checkpoints()?)
    }

    /// Evicts every resident process, snapshotting each first; answers how many left.
    pub async fn evict_all(&self) -> usize {
        self.managers.evict_all().await
    }

    /// Flushes the store's in-memory tables so the next start replays almost
    /// no journal. Call after the last request is answered; every
    /// acknowledged event is durable whether or not this runs.
    ///
    /// # Errors
    /// [`Error::Store`] when the engine cannot write.
    pub fn flush(&self) -> Result<(), Error> {
        Ok(self.store.flush()?)
    }

    /// Load of each process-manager shard.
    pub fn managers(&self) -> Vec<ShardStats> {
        self.managers.stats()
    }

    /// How big transactions may get, and how many may be open.
    pub fn transaction_limits(&self) -> transactions::TransactionLimits {
        self.transaction_limits
    }

    /// The autoscaler's bounds and newest decisions.
    pub fn scaling(&self) -> ScalingView {
        self.managers.scaling()
    }

    /// The shard slot that owns a partition of the process space now.
    pub fn partition_owner(&self, partition: Partition) -> usize {
        self.managers.owner(partition)
    }

    /// Carries out one scaling decision now, as the autoscaler would; answers
    /// what was done (`None` when the decision no longer fits, such as a
    /// slot already taken).
    pub async fn rescale(&self, decision: Decision) -> Option<ScalingRecord> {
        self.managers.rescale(decision).await
    }

    /// Emitted events their target refused, or the hop limit stopped, after
    /// `after` (exclusive), oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] on a read failure.
    pub fn dead_letters(
        &self,
        after: Option<Origin>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, Error> {
        Ok(self.store.dead_letters(after, limit)?)
    }

    /// Puts a dead letter back in the outbox, to be delivered again (past the
    /// hop limit, if that stopped it); answers the entry re-driven.
    ///
    /// # Errors
    /// [`Error::UnknownDeadLetter`], or [`Error::Store`] when it cannot be written.
    pub fn redrive(&self, origin: Origin) -> Result<DeadLetter, Error> {
        let _one_at_a_time = self.checkpointing.lock();
        let letter = self.store.dead_letter(origin)?.ok_or(Error::UnknownDeadLetter(origin))?;
        let commit = julato_store::Commit {
            redriven: vec![origin],
            outbox: vec![julato_manager::outbox::redriven(letter.clone())],
            ..Default::default()
        };
        self.store.append(commit)?;
        let counters = self.managers.delivery();
        counters.pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.deliverer.rewind(origin);
        Ok(letter)
    }

    /// Emitted events waiting for delivery, delivered so far, and dead-lettered so far.
    pub fn delivery_stats(&self) -> (i64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.managers.delivery();
        (c.pending.load(Relaxed).max(0), c.delivered.load(Relaxed), c.dead_lettered.load(Relaxed))
    }

    /// Number of fsyncs and of commits so far.
    pub fn commit_stats(&self) -> (u64, u64) {
        self.store.commit_stats()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        // The deliverer holds the shards' queues; let it go so they can stop.
        self.deliverer.stop();
    }
}
