//! The coordinator: Julato's entry point behind the HTTP API. It opens the event
//! store, keeps the catalog of deployed functions, routes events to the process
//! managers that own their processes, and serves reads of states, histories and
//! the global log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use julato_core::{
    CausalToken, Clock, DeployedVersion, EventRecord, FunctionInfo, FunctionName, InvalidName,
    ProcessHead, ProcessId, ProcessKey, Seq, Sequencer, SystemClock, Version,
};
use julato_executor::{Executor, Limits};
use julato_manager::{Catalog, Managers};
use julato_store::Store;

pub use julato_manager::catalog::DeployError;
pub use julato_manager::{Applied, SendError, SendRequest, ShardStats};

/// How the coordinator is set up.
#[derive(Clone)]
pub struct Config {
    /// The one folder that holds all data.
    pub data_dir: PathBuf,
    /// Number of process-manager shards.
    pub shards: usize,
    /// Commands each shard may queue before senders are told to back off.
    pub queue_capacity: usize,
    /// Sandbox budgets per invocation.
    pub limits: Limits,
    /// Longest wait for a causal token to be covered.
    pub token_wait: Duration,
    /// Source of wall-clock readings for event times.
    pub clock: Arc<dyn Clock>,
}

impl Config {
    /// Defaults for a data folder: four shards per core, at least four.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            data_dir: data_dir.into(),
            shards: (cores * 4).max(4),
            queue_capacity: 4096,
            limits: Limits::default(),
            token_wait: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
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
    #[error("causal token {0} is not covered after waiting {1:?}")]
    TokenNotReached(CausalToken, Duration),
    #[error(transparent)]
    Store(#[from] julato_store::Error),
    #[error(transparent)]
    Executor(#[from] julato_executor::Error),
}

impl Error {
    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Send(e) => match e {
                SendError::UnknownFunction(_) => "function_not_found",
                SendError::Rejected(r) => r.code(),
                SendError::Conflict(_) => "version_conflict",
                SendError::IdempotencyKeyReused(_) => "idempotency_key_reused",
                SendError::Storage(_) => "storage_failed",
                SendError::Component(_) => "component_unavailable",
                SendError::Overloaded => "overloaded",
                SendError::ShuttingDown => "shutting_down",
                SendError::InvalidName(_) => "invalid_name",
            },
            Error::Deploy(e) => match e {
                DeployError::Component(julato_executor::Error::InvalidComponent(_)) => {
                    "invalid_component"
                }
                DeployError::Component(julato_executor::Error::WorldMismatch(_)) => {
                    "component_world_mismatch"
                }
                DeployError::Component(julato_executor::Error::Describe(_)) => {
                    "component_describe_failed"
                }
                DeployError::Component(_) => "internal",
                DeployError::NoEventTypes => "component_without_handlers",
                DeployError::Storage(_) => "storage_failed",
            },
            Error::InvalidName(_) => "invalid_name",
            Error::UnknownFunction(_) => "function_not_found",
            Error::UnknownProcess(_) => "process_not_found",
            Error::UnknownEvent(_) => "event_not_found",
            Error::TokenNotReached(..) => "token_not_reached",
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

/// The running core of a Julato node; cheap to share behind an `Arc`.
pub struct Coordinator {
    store: Store,
    catalog: Arc<Catalog>,
    managers: Managers,
    token_wait: Duration,
}

impl Coordinator {
    /// Opens the data folder, recovers the log and starts the process managers.
    ///
    /// # Errors
    /// Fails when the store cannot be opened or the engine configured.
    pub fn open(config: Config) -> Result<Self, Error> {
        let store = Store::open(&config.data_dir)?;
        let executor = Arc::new(Executor::new(&config.data_dir.join("cache"), config.limits)?);
        let catalog = Arc::new(Catalog::open(store.clone(), executor)?);
        let (last_seq, last_time) = store.tail()?;
        let sequencer = Sequencer::new(last_seq, last_time, config.clock.clone());
        let managers = Managers::start(
            config.shards,
            config.queue_capacity,
            store.clone(),
            catalog.clone(),
            sequencer,
        );
        tracing::info!(
            data = %config.data_dir.display(),
            last_seq = last_seq.0,
            functions = catalog.list().len(),
            shards = config.shards,
            "coordinator open"
        );
        Ok(Self { store, catalog, managers, token_wait: config.token_wait })
    }

    /// Deploys a new version of a function; the same bytes as the newest version
    /// answer that version and `false`. Compiles the component, so run it off
    /// the async executor.
    ///
    /// # Errors
    /// [`Error::Deploy`] when the bytes are not a fitting component.
    pub fn deploy(
        &self,
        name: &FunctionName,
        bytes: Vec<u8>,
    ) -> Result<(DeployedVersion, bool), Error> {
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
        CausalToken { seq: self.managers.sequencer().watermark() }
    }

    /// Waits until everything `token` covers is visible.
    ///
    /// # Errors
    /// [`Error::TokenNotReached`] when that takes longer than the configured wait.
    pub async fn observe(&self, token: CausalToken) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.token_wait;
        while self.managers.sequencer().watermark() < token.seq {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::TokenNotReached(token, self.token_wait));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
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

    /// The current state of a process.
    ///
    /// # Errors
    /// [`Error::UnknownFunction`] or [`Error::UnknownProcess`].
    pub fn state(&self, process: &ProcessId) -> Result<ProcessHead, Error> {
        self.function(&process.function)?;
        self.store.head(process)?.ok_or_else(|| Error::UnknownProcess(process.clone()))
    }

    /// A page of a process's history starting at version `from`.
    ///
    /// # Errors
    /// [`Error::UnknownFunction`] or [`Error::UnknownProcess`].
    pub fn history(
        &self,
        process: &ProcessId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<EventRecord>, Error> {
        self.state(process)?;
        Ok(self.store.history(process, from.max(Version(1)), limit)?)
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

    /// A page of the global log from `from`, never past an event still in flight.
    ///
    /// # Errors
    /// [`Error::Store`] on a read failure.
    pub fn log(&self, from: Seq, limit: usize) -> Result<Vec<EventRecord>, Error> {
        let upto = self.managers.sequencer().watermark();
        Ok(self.store.log(from, upto, limit)?)
    }

    /// One event record.
    ///
    /// # Errors
    /// [`Error::UnknownEvent`] when no committed event has that seq.
    pub fn event(&self, seq: Seq) -> Result<EventRecord, Error> {
        if seq > self.managers.sequencer().watermark() {
            return Err(Error::UnknownEvent(seq));
        }
        self.store.event(seq)?.ok_or(Error::UnknownEvent(seq))
    }

    /// Load of each process-manager shard.
    pub fn managers(&self) -> Vec<ShardStats> {
        self.managers.stats()
    }

    /// Number of fsyncs and of commits so far.
    pub fn commit_stats(&self) -> (u64, u64) {
        self.store.commit_stats()
    }
}
