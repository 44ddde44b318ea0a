//! Transactions: one-shot (every event at once) and interactive (begin, add
//! events one at a time and see their tentative effects, then commit or roll
//! back).
//!
//! Both commit the same way: every shard owning a process of the transaction
//! pauses, one of them applies the events in order on the committed states,
//! and one atomic write stores them all, or nothing is stored.
//!
//! Interactive transactions are optimistic. An added event runs at once on
//! the transaction's own copy of the process (read from the committed state
//! the first time the transaction touches it); nothing is locked or stored.
//! The commit requires every process the transaction touched to be still at
//! the version it first read, and then applies the events again, now with
//! their final seqs and times. Since every event reads only the process it
//! changes, this makes the transaction serializable: it commits as if it had
//! run alone at its commit. A process changed in between fails the commit
//! with a version conflict, and nothing is stored.
//!
//! An added event that fails (its handler rejects it, its expected version is
//! not met, a limit is hit) aborts the transaction: every later add and the
//! commit fail with `transaction_aborted`, so a transaction can never commit
//! without one of the events its client meant it to hold. Only a rollback
//! (or the idle timeout) ends it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use julato_core::{ProcessId, Seq, Version, check_expected_version};
use julato_executor::HandlerContext;
use julato_manager::{Applied, Committed, SendError, SendRequest};
use parking_lot::Mutex;
use serde::Serialize;

use crate::{Coordinator, Error};

/// How big transactions may get, and how many may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionLimits {
    /// Most events one transaction may hold (`too_many_events`).
    pub events: usize,
    /// Most interactive transactions open at once (`overloaded`).
    pub open: usize,
}

impl Default for TransactionLimits {
    fn default() -> Self {
        Self { events: 1_000, open: 10_000 }
    }
}

/// An event's effect inside a transaction not yet committed.
#[derive(Debug, Clone, Serialize)]
pub struct Tentative {
    pub function: String,
    pub key: String,
    /// The version the process would have after this event.
    pub version: u64,
    /// The state it would have, as JSON text.
    pub state: String,
    pub reply: Option<String>,
    /// How many events the handler emitted; they are sent only on commit.
    pub emitted: usize,
    /// The event's idempotency key was already used for this event, by a
    /// committed event or earlier in this transaction: this is the first
    /// answer, and nothing was added.
    pub deduplicated: bool,
}

/// A process an open transaction touched.
#[derive(Debug, Clone)]
pub struct Touched {
    pub process: ProcessId,
    /// The committed version the transaction first read.
    pub read_version: Version,
    /// Its version after the transaction's events so far.
    pub version: Version,
}

/// What an open transaction holds so far.
#[derive(Debug, Clone)]
pub struct OpenTransaction {
    pub events: usize,
    pub touched: Vec<Touched>,
    /// Why an added event aborted it, if one did.
    pub aborted: Option<String>,
}

/// One open interactive transaction.
struct Open {
    events: Vec<SendRequest>,
    /// Each touched process: the version first read, and its version and state
    /// after the transaction's events so far.
    touched: HashMap<ProcessId, (Version, Version, String)>,
    last_used: Instant,
    timeout: Duration,
    /// The newest seq of the causal token the client began with: a cause of
    /// every event added without a token of its own.
    after: Option<Seq>,
    /// Why an added event failed, which aborted the transaction.
    aborted: Option<String>,
    /// Held by each add from start to end, so that the adds of one
    /// transaction run one at a time, in the order they take it.
    gate: Arc<Mutex<()>>,
    /// The idempotency keys its events used, with their digests and answers.
    keys: HashMap<(ProcessId, String), (String, Tentative)>,
}

/// The open interactive transactions of a node.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Open>>,
    next: AtomicU64,
}

impl Sessions {
    /// Drops every transaction idle past its timeout: it rolls back.
    fn sweep(open: &mut HashMap<String, Open>) {
        open.retain(|id, o| {
            let keep = o.last_used.elapsed() < o.timeout;
            if !keep {
                tracing::info!(transaction = %id, "idle transaction rolled back");
            }
            keep
        });
    }
}

impl Coordinator {
    /// Applies `requests` as one transaction.
    ///
    /// # Errors
    /// [`Error::Transaction`] naming the failing event; nothing is stored.
    pub async fn transact(&self, requests: Vec<SendRequest>) -> Result<Committed, Error> {
        let limit = self.transaction_limits.events;
        if requests.len() > limit {
            return Err(Error::TooManyEvents { count: requests.len(), limit });
        }
        let processes: Vec<ProcessId> = requests.iter().map(|r| r.process.clone()).collect();
        self.managers.transact(requests).await.map_err(|failed| Error::Transaction {
            index: failed.index,
            process: failed.index.and_then(|i| processes.get(i).cloned()),
            source: failed.error,
        })
    }

    /// Opens an interactive transaction that rolls back once idle for `timeout`
    /// (the configured default if `None`, at most ten times it); answers its
    /// id and the timeout it got. `after` is the newest seq of a causal token
    /// the caller has already observed.
    ///
    /// # Errors
    /// [`Error::ZeroTimeout`]; [`Error::Overloaded`] when too many are open.
    pub fn begin(
        &self,
        timeout: Option<Duration>,
        after: Option<Seq>,
    ) -> Result<(String, Duration), Error> {
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::ZeroTimeout);
        }
        let timeout =
            timeout.unwrap_or(self.transaction_timeout).min(self.transaction_timeout * 10);
        let mut open = self.sessions.open.lock();
        Sessions::sweep(&mut open);
        if open.len() >= self.transaction_limits.open {
            return Err(Error::TooManyTransactions { limit: self.transaction_limits.open });
        }
        let n = self.sessions.next.fetch_add(1, Ordering::Relaxed);
        let nonce: u64 = rand_nonce();
        let id = format!("tx-{n:x}-{nonce:016x}");
        let session = Open {
            events: Vec::new(),
            touched: HashMap::new(),
            last_used: Instant::now(),
            timeout,
            after: after.filter(|s| s.0 > 0),
            aborted: None,
            gate: Arc::default(),
            keys: HashMap::new(),
        };
        open.insert(id.clone(), session);
        Ok((id, timeout))
    }

    /// Runs one event inside an open transaction and answers its tentative
    /// effect. Runs a handler, so call it off the async executor.
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`] for an unknown or expired id;
    /// [`Error::TransactionAborted`] when an earlier event aborted it;
    /// [`Error::AbortedBy`] wrapping why this event failed (the handler's
    /// rejection, a version conflict, a limit), which aborts the transaction.
    pub fn add(&self, id: &str, mut request: SendRequest) -> Result<Tentative, Error> {
        let process = request.process.clone();
        let gate = {
            let mut open = self.sessions.open.lock();
            live(&mut open, id)?.gate.clone()
        };
        let _turn = gate.lock();
        // The process's version and state as the transaction sees it.
        let seen = {
            let mut open = self.sessions.open.lock();
            let session = live(&mut open, id)?;
            if let Some(reason) = &session.aborted {
                return Err(Error::TransactionAborted {
                    id: id.to_owned(),
                    reason: reason.clone(),
                    rolled_back: false,
                });
            }
            if request.after.is_none() {
                request.after = session.after;
            }
            let limit = self.transaction_limits.events;
            let earlier = request
                .idempotency_key
                .as_ref()
                .and_then(|key| session.keys.get(&(process.clone(), key.clone())).cloned());
            match earlier {
                Some((digest, first)) => Err(Ok((digest, first))),
                None if session.events.len() >= limit => {
                    Err(Err(Error::TooManyEvents { count: limit + 1, limit }))
                }
                None => Ok(session.touched.get(&process).map(|(_, v, s)| (*v, s.clone()))),
            }
        };
        let tentative = match seen {
            // A key this transaction used already: its first answer, or a reuse.
            Err(Ok((digest, first))) if request.matches_digest(&digest) => {
                return Ok(Tentative { deduplicated: true, ..first });
            }
            Err(Ok(_)) => Err(Error::Send(SendError::IdempotencyKeyReused(
                request.idempotency_key.clone().unwrap_or_default(),
            ))),
            Err(Err(error)) => Err(error),
            Ok(seen) => match self.committed_answer(&request) {
                Ok(Some(first)) => return Ok(first),
                Ok(None) => self.run_tentatively(id, request, seen),
                Err(error) => Err(error),
            },
        };
        match tentative {
            Err(error @ (Error::UnknownTransaction(_) | Error::TransactionAborted { .. })) => {
                Err(error)
            }
            Err(error) => {
                let mut open = self.sessions.open.lock();
                if let Some(session) = open.get_mut(id) {
                    session.aborted.get_or_insert_with(|| error.to_string());
                }
                tracing::info!(transaction = %id, %process, code = error.code(), "event failed, transaction aborted");
                Err(Error::AbortedBy { id: id.to_owned(), source: Box::new(error) })
            }
            Ok(tentative) => Ok(tentative),
        }
    }

    /// Runs `request` on the transaction's view of its process (`seen`, or the
    /// committed state when the transaction has not touched it yet) and
    /// records the outcome in the transaction.
    fn run_tentatively(
        &self,
        id: &str,
        request: SendRequest,
        seen: Option<(Version, String)>,
    ) -> Result<Tentative, Error> {
        let process = request.process.clone();
        let (first_read, (version, state)) = match seen {
            Some(seen) => (None, seen),
            None => {
                let committed = self.committed_or_initial(&process)?;
                (Some(committed.0), committed)
            }
        };
        if let Some(first_read) = first_read {
            // Recorded before the handler runs, so that even an event that
            // fails counts the process as read.
            let mut open = self.sessions.open.lock();
            let session = live(&mut open, id)?;
            session
                .touched
                .entry(process.clone())
                .or_insert_with(|| (first_read, first_read, state.clone()));
        }
        check_expected_version(version, request.expected_version)
            .map_err(|e| Error::Send(e.into()))?;

        let function_version = self
            .catalog
            .latest(&process.function)
            .ok_or_else(|| Error::UnknownFunction(process.function.clone()))?;
        let loaded = self.catalog.loaded(&process.function, function_version)?;
        let next = version.next();
        let ctx = HandlerContext {
            function: process.function.as_str().to_owned(),
            key: process.key.as_str().to_owned(),
            // Provisional: the commit applies the event again with its final seq and time.
            seq: self.managers.sequencer().watermark().0 + 1,
            version: next.0,
            time_unix_nanos: self.managers.sequencer().last_time().0,
            function_version: function_version.0,
        };
        let outcome = self
            .catalog
            .executor()
            .handle(&loaded, &ctx, &request.event_type, &request.payload, &state)
            .map_err(|r| Error::Send(r.into()))?;

        let mut open = self.sessions.open.lock();
        let session = live(&mut open, id)?;
        if let Some(reason) = &session.aborted {
            return Err(Error::TransactionAborted {
                id: id.to_owned(),
                reason: reason.clone(),
                rolled_back: false,
            });
        }
        let entry = session
            .touched
            .entry(process.clone())
            .or_insert_with(|| (first_read.unwrap_or(version), version, String::new()));
        if entry.1 != version {
            // Another add to the same process raced this one; keep the order clear.
            return Err(Error::Send(
                julato_core::VersionConflict { expected: version, actual: entry.1 }.into(),
            ));
        }
        entry.1 = next;
        entry.2 = outcome.state.clone();
        let tentative = Tentative {
            function: process.function.as_str().to_owned(),
            key: process.key.as_str().to_owned(),
            version: next.0,
            state: outcome.state,
            reply: outcome.reply,
            emitted: outcome.emits.len(),
            deduplicated: false,
        };
        if let Some(key) = &request.idempotency_key {
            session.keys.insert((process, key.clone()), (request.digest(), tentative.clone()));
        }
        session.events.push(request);
        session.last_used = Instant::now();
        Ok(tentative)
    }

    /// The first answer of a committed event that used `request`'s
    /// idempotency key for the same event, as a send would answer it.
    ///
    /// # Errors
    /// An idempotency key reused for a different event; a storage error.
    fn committed_answer(&self, request: &SendRequest) -> Result<Option<Tentative>, Error> {
        let Some(key) = &request.idempotency_key else { return Ok(None) };
        let Some(bytes) = self.store.idempotent_answer(&request.process, key)? else {
            return Ok(None);
        };
        let first: Applied = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Send(SendError::Storage(format!("stored answer is corrupt: {e}")))
        })?;
        if !request.matches_digest(&first.request_digest) {
            return Err(Error::Send(SendError::IdempotencyKeyReused(key.clone())));
        }
        Ok(Some(Tentative {
            function: request.process.function.as_str().to_owned(),
            key: request.process.key.as_str().to_owned(),
            version: first.version.0,
            state: first.state,
            reply: first.reply,
            emitted: 0,
            deduplicated: true,
        }))
    }

    /// The events added so far, and the touched processes' tentative versions.
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`].
    pub fn open_transaction(&self, id: &str) -> Result<OpenTransaction, Error> {
        let mut open = self.sessions.open.lock();
        let session = peek(&mut open, id)?;
        let touched = session
            .touched
            .iter()
            .map(|(p, (read, now, _))| Touched {
                process: p.clone(),
                read_version: *read,
                version: *now,
            })
            .collect();
        Ok(OpenTransaction {
            events: session.events.len(),
            touched,
            aborted: session.aborted.clone(),
        })
    }

    /// Commits an interactive transaction: every process it touched must still
    /// be at the version it first read. The transaction is closed either way,
    /// unless it holds no events (an aborted one is rolled back).
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`], [`Error::TransactionAborted`],
    /// [`Error::EmptyTransaction`], or [`Error::Transaction`] (a version
    /// conflict when a touched process changed since).
    pub async fn commit(&self, id: &str) -> Result<Committed, Error> {
        let session = {
            let mut open = self.sessions.open.lock();
            let session = live(&mut open, id)?;
            if session.aborted.is_none() && session.events.is_empty() {
                // Nothing is closed: the client may still add events.
                return Err(Error::EmptyTransaction(id.to_owned()));
            }
            open.remove(id).ok_or_else(|| Error::UnknownTransaction(id.to_owned()))?
        };
        if let Some(reason) = session.aborted {
            return Err(Error::TransactionAborted { id: id.to_owned(), reason, rolled_back: true });
        }
        let mut requests = session.events;
        let mut seen: HashMap<ProcessId, ()> = HashMap::new();
        for request in &mut requests {
            if seen.insert(request.process.clone(), ()).is_none() {
                let (read, _, _) = &session.touched[&request.process];
                request.expected_version = Some(*read);
            }
        }
        self.transact(requests).await
    }

    /// Rolls an interactive transaction back: nothing of it was stored.
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`].
    pub fn rollback(&self, id: &str) -> Result<usize, Error> {
        let mut open = self.sessions.open.lock();
        live(&mut open, id)?;
        let session = open.remove(id).ok_or_else(|| Error::UnknownTransaction(id.to_owned()))?;
        Ok(session.events.len())
    }

    /// A process's committed version and state, or version 0 and the initial
    /// state when it has no events yet.
    pub(crate) fn committed_or_initial(
        &self,
        process: &ProcessId,
    ) -> Result<(Version, String), Error> {
        match self.state(process) {
            Ok(read) => Ok((read.head.version, read.state)),
            Err(Error::UnknownProcess(_)) => Ok((Version(0), self.initial_state(process)?)),
            Err(e) => Err(e),
        }
    }

    /// The state a process has before its first event.
    pub(crate) fn initial_state(&self, process: &ProcessId) -> Result<String, Error> {
        let function_version = self
            .catalog
            .latest(&process.function)
            .ok_or_else(|| Error::UnknownFunction(process.function.clone()))?;
        let loaded = self.catalog.loaded(&process.function, function_version)?;
        self.catalog
            .executor()
            .init(&loaded, process.function.as_str(), process.key.as_str())
            .map_err(|r| Error::Send(r.into()))
    }
}

/// The open transaction `id`, if it has not timed out (one that has is
/// dropped), now used: its idle time starts again.
fn live<'a>(open: &'a mut HashMap<String, Open>, id: &str) -> Result<&'a mut Open, Error> {
    let session = peek(open, id)?;
    session.last_used = Instant::now();
    Ok(session)
}

/// The open transaction `id`, if it has not timed out, only looked at: its
/// idle time goes on.
fn peek<'a>(open: &'a mut HashMap<String, Open>, id: &str) -> Result<&'a mut Open, Error> {
    let expired = open.get(id).is_some_and(|o| o.last_used.elapsed() >= o.timeout);
    if expired {
        open.remove(id);
        tracing::info!(transaction = %id, "idle transaction rolled back");
    }
    open.get_mut(id).ok_or_else(|| Error::UnknownTransaction(id.to_owned()))
}

/// An unguessable part for transaction ids, so one client cannot name
/// another's transaction by counting.
fn rand_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
