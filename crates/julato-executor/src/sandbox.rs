//! The wasmtime engine, its compile cache and one invocation's sandbox.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use julato_core::{FunctionName, FunctionVersion, Payload};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store, Trap,
};

use crate::{Error, Limits, Rejection, telemetry};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "function",
    });
}

use bindings::julato::function::types as wit;

/// How often the wall-clock backstop ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Instances that may be alive at once across all process managers.
const POOL_INSTANCES: u32 = 128;
/// Bytes of each linear memory reset in place rather than decommitted.
const KEEP_RESIDENT_BYTES: usize = 4 << 20;
/// Bytes of each table reset in place rather than decommitted.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;
/// Slots decommitted together.
const DECOMMIT_BATCH: usize = 16;

/// What the host tells a handler about the event it applies.
#[derive(Debug, Clone)]
pub struct HandlerContext {
    pub function: String,
    pub key: String,
    pub seq: u64,
    pub version: u64,
    pub time_unix_nanos: u64,
    pub function_version: u32,
}

/// An event a handler emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmittedEvent {
    pub function: String,
    pub key: String,
    pub event_type: String,
    pub payload: Payload,
}

/// An accepted invocation: the new state, the reply and what was emitted.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub state: String,
    pub reply: Option<String>,
    pub emits: Vec<EmittedEvent>,
}

/// A compiled, pre-linked function version, ready to instantiate.
pub struct Loaded {
    pre: bindings::FunctionPre<Guest>,
    pub digest: String,
}

/// SHA-256 of component bytes, hex: the identity of a compiled artifact.
pub fn inspect_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Per-instance host state: the memory limiter and the log budget.
struct Guest {
    memory_limit: usize,
    memory_denied: bool,
    log_budget: usize,
    logs_dropped: usize,
    /// The newest error-level line the guest logged, to explain a trap.
    last_error: Option<String>,
    span: tracing::Span,
}

impl ResourceLimiter for Guest {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl bindings::FunctionImports for Guest {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        if self.log_budget == 0 {
            self.logs_dropped += 1;
            return;
        }
        self.log_budget -= 1;
        let message: String = message.chars().take(2048).collect();
        if matches!(level, wit::LogLevel::Error) {
            self.last_error = Some(message.chars().take(300).collect());
        }
        let _enter = self.span.enter();
        match level {
            wit::LogLevel::Trace => tracing::trace!(target: "guest", "{message}"),
            wit::LogLevel::Debug => tracing::debug!(target: "guest", "{message}"),
            wit::LogLevel::Info => tracing::info!(target: "guest", "{message}"),
            wit::LogLevel::Warn => tracing::warn!(target: "guest", "{message}"),
            wit::LogLevel::Error => tracing::error!(target: "guest", "{message}"),
        }
    }
}

impl wit::Host for Guest {}

/// Compiles, caches and runs function components.
pub struct Executor {
    engine: Engine,
    linker: Linker<Guest>,
    limits: Limits,
    cache_dir: PathBuf,
    loaded: RwLock<HashMap<(FunctionName, FunctionVersion), Arc<Loaded>>>,
}

impl Executor {
    /// Builds the engine and starts the wall-clock ticker. Compiled code is kept
    /// in `cache_dir`.
    ///
    /// # Errors
    /// Fails when the engine cannot be configured or the cache folder created.
    pub fn new(cache_dir: &Path, limits: Limits) -> Result<Self, Error> {
        std::fs::create_dir_all(cache_dir)
            .map_err(|source| Error::Cache { path: cache_dir.to_path_buf(), source })?;

        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 2)
            .max_memory_size(limits.memory_bytes)
            // A slot goes back to the pool after every invocation. Resetting
            // its memory by madvise costs a TLB shootdown on every core and a
            // page fault per page on the next use; instead, the pages the
            // guest touched are found with PAGEMAP_SCAN (where the kernel has
            // it) and zeroed in place, up to this many bytes.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
            .pagemap_scan(Enabled::Auto)
            // What still has to be decommitted is done in batches, one
            // shootdown for many slots.
            .decommit_batch_size(DECOMMIT_BATCH);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        bindings::Function::add_to_linker::<Guest, wasmtime::component::HasSelf<Guest>>(
            &mut linker,
            |guest| guest,
        )
        .map_err(|e| Error::Engine(format!("{e:#}")))?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("julato-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| Error::Engine(format!("cannot start the epoch ticker: {e}")))?;

        Ok(Self {
            engine,
            linker,
            limits,
            cache_dir: cache_dir.to_path_buf(),
            loaded: RwLock::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles (or loads from the cache) a component and checks it against the
    /// function world, without remembering it under a name.
    ///
    /// # Errors
    /// [`Error::InvalidComponent`] for bytes that are not a component,
    /// [`Error::UnknownImports`] for one that imports what the host does not
    /// provide, [`Error::WorldMismatch`] for one whose imports or exports do not
    /// have the world's types.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<Loaded>, Error> {
        let digest = inspect_digest(bytes);
        let path = self.cache_dir.join(format!("{digest}.cwasm"));
        let component = match self.load_cached(&path) {
            Some(component) => component,
            None => {
                let component = Component::new(&self.engine, bytes)
                    .map_err(|e| Error::InvalidComponent(short(&e)))?;
                self.store_cached(&path, &component)?;
                component
            }
        };
        let instance_pre =
            self.linker.instantiate_pre(&component).map_err(|e| self.link_error(&component, &e))?;
        let pre = bindings::FunctionPre::new(instance_pre)
            .map_err(|e| Error::WorldMismatch(format!("{e:#}")))?;
        Ok(Arc::new(Loaded { pre, digest }))
    }

    /// Why a component does not link: the imports the host does not provide,
    /// if it has any, else the engine's reason.
    fn link_error(&self, component: &Component, error: &wasmtime::Error) -> Error {
        let unknown: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name)
            .filter(|name| !world_import(name))
            .map(str::to_owned)
            .collect();
        if unknown.is_empty() {
            Error::WorldMismatch(format!("{error:#}"))
        } else {
            Error::UnknownImports(unknown)
        }
    }

    fn load_cached(&self, path: &Path) -> Option<Component> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the cache folder holds only artifacts this executor wrote with
        // `Component::serialize`; wasmtime checks the engine version and
        // configuration before accepting one, and a rejected one is recompiled.
        match unsafe { Component::deserialize_file(&self.engine, path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring stale compiled code");
                None
            }
        }
    }

    fn store_cached(&self, path: &Path, component: &Component) -> Result<(), Error> {
        let bytes = component.serialize().map_err(|e| Error::Engine(format!("{e:#}")))?;
        // A unique temporary name, then a rename: a file another executor has
        // mapped is never truncated under it.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}.{unique}.tmp", std::process::id()));
        let io = |source| Error::Cache { path: path.to_path_buf(), source };
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The compiled code of a function version, compiling it on first use with the
    /// bytes `fetch` supplies.
    ///
    /// # Errors
    /// As [`Executor::compile`], or what `fetch` returns.
    pub fn load(
        &self,
        function: &FunctionName,
        version: FunctionVersion,
        fetch: impl FnOnce() -> Result<Vec<u8>, Error>,
    ) -> Result<Arc<Loaded>, Error> {
        let id = (function.clone(), version);
        if let Some(loaded) = self.loaded.read().get(&id) {
            return Ok(loaded.clone());
        }
        let loaded = self.compile(&fetch()?)?;
        self.loaded.write().insert(id, loaded.clone());
        Ok(loaded)
    }

    /// Asks a component for the event types it handles.
    ///
    /// # Errors
    /// [`Error::Describe`] when the guest fails or runs out of budget.
    pub fn event_types(&self, loaded: &Loaded) -> Result<Vec<String>, Error> {
        let span = tracing::debug_span!("describe", digest = %loaded.digest);
        self.invoke(loaded, span, |guest, store| guest.call_event_types(store).map(Ok))
            .map_err(Error::Describe)
    }

    /// The initial state of a new process, as JSON text.
    ///
    /// # Errors
    /// A [`Rejection`] when the guest fails, traps or returns bad JSON.
    pub fn init(&self, loaded: &Loaded, function: &str, key: &str) -> Result<String, Rejection> {
        let span = tracing::debug_span!("init", function, process = key);
        let state = self.invoke(loaded, span, |guest, store| guest.call_init(store))?;
        self.check_json("state", &state, self.limits.state_bytes)?;
        Ok(state)
    }

    /// Applies one event to a state.
    ///
    /// # Errors
    /// A [`Rejection`] naming why the event was not accepted.
    pub fn handle(
        &self,
        loaded: &Loaded,
        ctx: &HandlerContext,
        event_type: &str,
        payload: &Payload,
        state: &str,
    ) -> Result<Outcome, Rejection> {
        let span = tracing::debug_span!(
            "invoke",
            function = %ctx.function,
            process = %ctx.key,
            seq = ctx.seq,
            event_type
        );
        let wit_ctx = wit::Context {
            function: ctx.function.clone(),
            key: ctx.key.clone(),
            seq: ctx.seq,
            version: ctx.version,
            time_unix_nanos: ctx.time_unix_nanos,
            function_version: ctx.function_version,
        };
        let event = wit::Event { event_type: event_type.to_owned(), data: to_wit(payload) };
        let _entered = span.enter();
        let started = Instant::now();
        let outcome = self
            .invoke(loaded, span.clone(), |guest, store| {
                guest.call_handle(store, &wit_ctx, &event, state)
            })
            .and_then(|outcome| self.check_outcome(outcome));
        let took = started.elapsed();
        telemetry::invoked(&outcome, took);
        match &outcome {
            Ok(_) => tracing::debug!(took_us = took.as_micros() as u64, "event accepted"),
            Err(rejection) => tracing::debug!(
                took_us = took.as_micros() as u64,
                code = rejection.code(),
                "event rejected"
            ),
        }
        outcome
    }

    fn check_outcome(&self, outcome: wit::Outcome) -> Result<Outcome, Rejection> {
        let limits = &self.limits;
        self.check_json("state", &outcome.state, limits.state_bytes)?;
        if let Some(reply) = &outcome.reply {
            self.check_json("reply", reply, limits.reply_bytes)?;
        }
        if outcome.emits.len() > limits.emits {
            return Err(Rejection::TooManyEmits {
                count: outcome.emits.len(),
                limit: limits.emits,
            });
        }
        let mut emits = Vec::with_capacity(outcome.emits.len());
        for emitted in outcome.emits {
            let payload = from_wit(emitted.data);
            if let Payload::Json(text) = &payload {
                self.check_json("emitted event", text, limits.state_bytes)?;
            }
            emits.push(EmittedEvent {
                function: emitted.function,
                key: emitted.key,
                event_type: emitted.event_type,
                payload,
            });
        }
        Ok(Outcome { state: outcome.state, reply: outcome.reply, emits })
    }

    fn check_json(&self, what: &'static str, text: &str, limit: usize) -> Result<(), Rejection> {
        if text.len() > limit {
            return Err(Rejection::OutputTooLarge { what, size: text.len(), limit });
        }
        // The same check the API applies to event data, so that everything
        // stored can be written back verbatim.
        serde_json::from_str::<&serde_json::value::RawValue>(text)
            .map(|_| ())
            .map_err(|e| Rejection::InvalidOutput { what, message: e.to_string() })
    }

    /// Runs one call in a fresh instance under the budgets.
    fn invoke<R>(
        &self,
        loaded: &Loaded,
        span: tracing::Span,
        call: impl FnOnce(
            &bindings::Function,
            &mut Store<Guest>,
        ) -> wasmtime::Result<Result<R, wit::HandlerError>>,
    ) -> Result<R, Rejection> {
        let guest = Guest {
            memory_limit: self.limits.memory_bytes,
            memory_denied: false,
            log_budget: self.limits.log_lines,
            logs_dropped: 0,
            last_error: None,
            span,
        };
        let mut store = Store::new(&self.engine, guest);
        store.limiter(|guest| guest);
        store.set_fuel(self.limits.fuel).map_err(|e| Rejection::Trap(format!("{e:#}")))?;
        let ticks = self.limits.wall_time.as_millis().div_ceil(EPOCH_TICK.as_millis()) + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));

        let result =
            loaded.pre.instantiate(&mut store).and_then(|instance| call(&instance, &mut store));
        let guest = store.data();
        if guest.logs_dropped > 0 {
            let _enter = guest.span.enter();
            tracing::warn!(dropped = guest.logs_dropped, "guest wrote more log lines than allowed");
        }
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(handler_error)) => Err(rejection(handler_error)),
            Err(error) => Err(self.classify_trap(&error, guest)),
        }
    }

    fn classify_trap(&self, error: &wasmtime::Error, guest: &Guest) -> Rejection {
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Rejection::FuelExhausted(self.limits.fuel),
            Some(Trap::Interrupt) => {
                let ms = u64::try_from(self.limits.wall_time.as_millis()).unwrap_or(u64::MAX);
                Rejection::Timeout(ms)
            }
            Some(Trap::StackOverflow) => Rejection::StackOverflow,
            _ if guest.memory_denied => Rejection::MemoryLimit(self.limits.memory_bytes),
            Some(trap) => {
                tracing::debug!(error = ?error, "guest trapped");
                match &guest.last_error {
                    Some(said) => Rejection::Trap(format!("{trap}; the guest logged: {said}")),
                    None => Rejection::Trap(trap.to_string()),
                }
            }
            None => Rejection::Trap(error.to_string()),
        }
    }
}

/// Whether the function world names this import: its `log` function and its
/// interface of types. Everything else (WASI, any other host's functions) is
/// not linked.
fn world_import(name: &str) -> bool {
    name == "log" || name.starts_with("julato:function/")
}

/// An engine error in one line: its message and root cause, bounded in length.
fn short(error: &wasmtime::Error) -> String {
    let root = error.root_cause().to_string();
    let top = error.to_string();
    let text = if root == top { top } else { format!("{top}: {root}") };
    let line: String = text.lines().next().unwrap_or_default().chars().take(300).collect();
    line
}

fn rejection(error: wit::HandlerError) -> Rejection {
    match error {
        wit::HandlerError::UnsupportedEventType(t) => Rejection::UnsupportedEventType(t),
        wit::HandlerError::InvalidEvent(m) => Rejection::InvalidEvent(m),
        wit::HandlerError::InvalidState(m) => Rejection::InvalidState(m),
        wit::HandlerError::Rejected(m) => Rejection::Rejected(m),
    }
}

fn to_wit(payload: &Payload) -> wit::Payload {
    match payload {
        Payload::Json(text) => wit::Payload::Json(text.clone()),
        Payload::Bytes(bytes) => wit::Payload::Bytes(bytes.clone()),
    }
}

fn from_wit(payload: wit::Payload) -> Payload {
    match payload {
        wit::Payload::Json(text) => Payload::Json(text),
        wit::Payload::Bytes(bytes) => Payload::Bytes(bytes),
    }
}
