//! Shards and their handle. A shard is one thread that owns the processes whose
//! id hashes to it. It drains its queue in batches: applies every event of the
//! batch in arrival order, writes the accepted ones as one commit, and answers
//! only once that commit is durable.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use julato_core::{
    EventRecord, EventTime, FunctionVersion, Payload, ProcessHead, ProcessId, Seq, Sequencer,
    Version, check_expected_version,
};
use julato_executor::HandlerContext;
use julato_store::{Commit, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::{Catalog, SendError};

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

enum Command {
    One { request: SendRequest, respond: oneshot::Sender<Answer> },
    Many { requests: Vec<SendRequest>, respond: oneshot::Sender<Vec<Answer>> },
}

/// Counters of one shard, for operators.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStats {
    pub shard: usize,
    pub queued: usize,
    pub capacity: usize,
    pub resident_processes: u64,
    pub applied: u64,
    pub rejected: u64,
    pub batches: u64,
}

#[derive(Default)]
struct Counters {
    resident: AtomicU64,
    applied: AtomicU64,
    rejected: AtomicU64,
    batches: AtomicU64,
}

/// Handle to every shard; cheap to clone.
#[derive(Clone)]
pub struct Managers {
    shards: Arc<Vec<(mpsc::Sender<Command>, Arc<Counters>)>>,
    sequencer: Sequencer,
}

impl Managers {
    /// Starts `shards` shard threads, each with a queue of `queue_capacity` commands.
    pub fn start(
        shards: usize,
        queue_capacity: usize,
        store: Store,
        catalog: Arc<Catalog>,
        sequencer: Sequencer,
    ) -> Self {
        let shards = (0..shards.max(1))
            .map(|index| {
                let (tx, rx) = mpsc::channel(queue_capacity.max(1));
                let counters = Arc::new(Counters::default());
                let mut shard = Shard {
                    index,
                    store: store.clone(),
                    catalog: catalog.clone(),
                    sequencer: sequencer.clone(),
                    processes: HashMap::new(),
                    counters: counters.clone(),
                };
                std::thread::Builder::new()
                    .name(format!("julato-shard-{index}"))
                    .spawn(move || shard.run(rx))
                    .expect("spawning a shard thread");
                (tx, counters)
            })
            .collect();
        Self { shards: Arc::new(shards), sequencer }
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    fn shard_of(&self, process: &ProcessId) -> usize {
        let mut hasher = DefaultHasher::new();
        process.hash(&mut hasher);
        (hasher.finish() % self.shards.len() as u64) as usize
    }

    /// Applies one event and waits until it is durable.
    ///
    /// # Errors
    /// A [`SendError`] saying why the event was not applied; then nothing of it
    /// is stored.
    pub async fn send(&self, request: SendRequest) -> Answer {
        let (respond, answer) = oneshot::channel();
        let shard = self.shard_of(&request.process);
        self.shards[shard].0.try_send(Command::One { request, respond }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => SendError::ShuttingDown,
        })?;
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
            let sent = self.shards[shard].0.send(Command::Many { requests, respond }).await;
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

    /// Counters of every shard.
    pub fn stats(&self) -> Vec<ShardStats> {
        self.shards
            .iter()
            .enumerate()
            .map(|(shard, (tx, c))| ShardStats {
                shard,
                queued: tx.max_capacity() - tx.capacity(),
                capacity: tx.max_capacity(),
                resident_processes: c.resident.load(Ordering::Relaxed),
                applied: c.applied.load(Ordering::Relaxed),
                rejected: c.rejected.load(Ordering::Relaxed),
                batches: c.batches.load(Ordering::Relaxed),
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
    sequencer: Sequencer,
    /// Hot states of the processes this shard owns.
    // FIXME(#3): residents are never evicted; idle eviction and a memory budget
    // come with snapshots.
    processes: HashMap<ProcessId, ProcessHead>,
    counters: Arc<Counters>,
}

/// The accepted events of one batch, waiting to be committed together.
#[derive(Default)]
struct Batch {
    commit: Commit,
    seqs: Vec<Seq>,
    touched: Vec<ProcessId>,
    /// Answers given in this batch under an idempotency key, for retries inside it.
    idempotent: HashMap<(ProcessId, String), Applied>,
}

impl Shard {
    // FIXME(#5): one shard runs one handler at a time, so a handler that burns
    // its whole budget holds up every other process of its shard until it is
    // stopped; fair scheduling and more executor workers come with autoscaling.
    fn run(&mut self, mut rx: mpsc::Receiver<Command>) {
        let _span = tracing::info_span!("shard", shard = self.index).entered();
        while let Some(first) = rx.blocking_recv() {
            let mut commands = vec![first];
            let mut events = commands[0].len();
            while events < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => {
                        events += command.len();
                        commands.push(command);
                    }
                    Err(_) => break,
                }
            }
            self.run_batch(commands);
        }
        tracing::debug!("shard stopped");
    }

    fn run_batch(&mut self, commands: Vec<Command>) {
        let mut batch = Batch::default();
        let mut answers: Vec<Vec<Answer>> = Vec::with_capacity(commands.len());
        let mut responders = Vec::with_capacity(commands.len());
        let mut accepted: Vec<Slot> = Vec::new();

        for (command, item) in commands.into_iter().enumerate() {
            let (requests, responder) = match item {
                Command::One { request, respond } => (vec![request], Responder::One(respond)),
                Command::Many { requests, respond } => (requests, Responder::Many(respond)),
            };
            let mut slots = Vec::with_capacity(requests.len());
            for (position, request) in requests.into_iter().enumerate() {
                let answer = self.apply(request, &mut batch);
                match &answer {
                    Ok(_) => accepted.push(Slot { command, position }),
                    Err(_) => {
                        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                slots.push(answer);
            }
            answers.push(slots);
            responders.push(responder);
        }

        if let Err(error) = self.commit(&mut batch) {
            let failure = SendError::Storage(error.to_string());
            for slot in &accepted {
                answers[slot.command][slot.position] = Err(failure.clone());
            }
        } else {
            self.counters.applied.fetch_add(accepted.len() as u64, Ordering::Relaxed);
        }
        self.counters.batches.fetch_add(1, Ordering::Relaxed);

        for (responder, slots) in responders.into_iter().zip(answers) {
            responder.respond(slots);
        }
    }

    /// Writes the batch's accepted events and the new heads in one durable commit.
    fn commit(&mut self, batch: &mut Batch) -> Result<(), julato_store::Error> {
        if batch.commit.records.is_empty() {
            return Ok(());
        }
        batch.touched.sort();
        batch.touched.dedup();
        for process in &batch.touched {
            if let Some(head) = self.processes.get(process) {
                batch.commit.heads.push((process.clone(), head.clone()));
            }
        }
        // FIXME(#6): the shard waits here for the group's fsync, so it applies
        // nothing meanwhile; pipelining the next batch behind the fsync would
        // raise throughput on a hot shard.
        let result = self.store.append(std::mem::take(&mut batch.commit));
        if let Err(error) = &result {
            // The cached states ran ahead of the log; forget them so the next
            // event rebuilds each from what was really stored.
            tracing::error!(error = %error, "commit failed; dropping cached states of the batch");
            for process in &batch.touched {
                self.processes.remove(process);
            }
            self.count_residents();
        }
        self.sequencer.settle_all(batch.seqs.drain(..));
        result
    }

    fn count_residents(&self) {
        self.counters.resident.store(self.processes.len() as u64, Ordering::Relaxed);
    }

    fn head(&mut self, process: &ProcessId) -> Result<Option<&ProcessHead>, SendError> {
        if !self.processes.contains_key(process) {
            match self.store.head(process).map_err(|e| SendError::Storage(e.to_string()))? {
                Some(head) => {
                    self.processes.insert(process.clone(), head);
                    self.count_residents();
                }
                None => return Ok(None),
            }
        }
        Ok(self.processes.get(process))
    }

    fn apply(&mut self, request: SendRequest, batch: &mut Batch) -> Answer {
        let process = request.process.clone();
        let function_version = self
            .catalog
            .latest(&process.function)
            .ok_or_else(|| SendError::UnknownFunction(process.function.clone()))?;

        let digest = request.idempotency_key.as_ref().map(|_| request.digest());
        if let (Some(token), Some(digest)) = (&request.idempotency_key, &digest)
            && let Some(first) = self.first_answer(&process, token, batch)?
        {
            if first.request_digest != *digest {
                return Err(SendError::IdempotencyKeyReused(token.clone()));
            }
            return Ok(first);
        }

        let loaded = self.catalog.loaded(&process.function, function_version)?;
        let executor = self.catalog.executor().clone();
        let current = match self.head(&process)? {
            Some(head) => head.clone(),
            None => {
                let state =
                    executor.init(&loaded, process.function.as_str(), process.key.as_str())?;
                ProcessHead {
                    version: Version(0),
                    last_seq: Seq(0),
                    state,
                    function_version,
                    created: EventTime(0),
                    updated: EventTime(0),
                }
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
        let outcome = match executor.handle(
            &loaded,
            &ctx,
            &request.event_type,
            &request.payload,
            &current.state,
        ) {
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
            state: outcome.state,
            function_version,
            created: if current.version == Version(0) { allocation.time } else { current.created },
            updated: allocation.time,
        };
        let applied = Applied {
            seq: allocation.seq,
            version,
            time: allocation.time,
            function_version,
            state: head.state.clone(),
            reply: outcome.reply,
            deduplicated: false,
            request_digest: digest.unwrap_or_default(),
        };

        if let Some(token) = request.idempotency_key {
            let stored = serde_json::to_vec(&applied).expect("serialising an answer");
            batch.commit.idempotency.push((process.clone(), token.clone(), stored));
            batch.idempotent.insert((process.clone(), token), applied.clone());
        }
        batch.commit.records.push(record);
        batch.seqs.push(allocation.seq);
        batch.touched.push(process.clone());
        self.processes.insert(process, head);
        self.count_residents();
        Ok(applied)
    }

    fn first_answer(
        &self,
        process: &ProcessId,
        token: &str,
        batch: &Batch,
    ) -> Result<Option<Applied>, SendError> {
        if let Some(first) = batch.idempotent.get(&(process.clone(), token.to_owned())) {
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
}

impl Command {
    fn len(&self) -> usize {
        match self {
            Command::One { .. } => 1,
            Command::Many { requests, .. } => requests.len(),
        }
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
