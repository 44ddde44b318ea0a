//! The deliverer: takes emitted events out of the outbox, in order, and hands
//! them to their targets' shards.
//!
//! An outbox entry is written in the same commit as the event that emitted it,
//! and removed in the same commit as its delivery (or its dead letter), so a
//! crash can neither lose an emitted event nor deliver it twice. Entries are
//! read only up to the sequencer's watermark, so an entry whose emitting event
//! is still being committed is never skipped, and delivered in (emitting seq,
//! emit index) order: after their cause, in emission order. Delivery never
//! waits on a target's handler from inside a shard, so cycles between
//! processes cannot deadlock; the hop limit stops runaway chains.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use julato_core::{DeadLetter, Origin, OutboxEntry, ProcessId, Seq};
use julato_store::{Commit, Store};
use parking_lot::Mutex;

use crate::{Managers, SendError, SendRequest};

/// Most entries one round hands to the shards.
const ROUND: usize = 4096;

/// How long the deliverer sleeps when nothing told it of new entries; also
/// bounds how late an entry held back by an in-flight seq is picked up.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// How long to wait before trying again after a transient failure.
const BACKOFF: Duration = Duration::from_millis(200);

/// Handle to the running deliverer.
#[derive(Clone)]
pub struct Deliverer {
    /// Where the next round must start at the latest (an entry re-inserted
    /// below the cursor: a re-drive, a restore).
    rewind: Arc<Mutex<Option<Origin>>>,
    stop: Arc<AtomicBool>,
    ready: Arc<tokio::sync::Notify>,
}

impl Deliverer {
    /// Starts delivering on a thread of its own, beginning with whatever the
    /// outbox holds (entries a crash left undelivered).
    pub fn start(managers: Managers, store: Store) -> Self {
        let deliverer =
            Self { rewind: Arc::default(), stop: Arc::default(), ready: managers.outbox_ready() };
        let (rewind, stop) = (deliverer.rewind.clone(), deliverer.stop.clone());
        std::thread::Builder::new()
            .name("julato-deliver".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("building the deliverer's runtime");
                runtime.block_on(run(managers, store, rewind, stop));
            })
            .expect("spawning the deliverer");
        deliverer
    }

    /// Stops after the round under way; the deliverer lets go of the shards.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.ready.notify_one();
    }

    /// Makes the next round start no later than `origin`, and wakes the deliverer.
    pub fn rewind(&self, origin: Origin) {
        let mut rewind = self.rewind.lock();
        *rewind = Some(rewind.map_or(origin, |r| r.min(origin)));
        drop(rewind);
        self.ready.notify_one();
    }
}

async fn run(
    managers: Managers,
    store: Store,
    rewind: Arc<Mutex<Option<Origin>>>,
    stop: Arc<AtomicBool>,
) {
    let ready = managers.outbox_ready();
    let counters = managers.delivery().clone();
    let mut cursor = Origin { seq: Seq(0), index: 0 };
    while !stop.load(Ordering::Relaxed) {
        if let Some(to) = rewind.lock().take() {
            cursor = cursor.min(to);
        }
        let upto = managers.sequencer().watermark();
        let entries = match store.outbox(cursor, upto, ROUND) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::error!(error = %error, "cannot read the outbox");
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        let Some(last) = entries.last().map(|e| e.origin) else {
            // Nothing below the watermark: wait to be told, or poll.
            let _ = tokio::time::timeout(IDLE_POLL, ready.notified()).await;
            continue;
        };

        let mut requests = Vec::with_capacity(entries.len());
        let mut origins = Vec::with_capacity(entries.len());
        let mut undeliverable = Commit::default();
        for entry in entries {
            match ProcessId::parse(&entry.function, &entry.key) {
                Ok(process) => {
                    origins.push(entry.origin);
                    let event_type = entry.event_type.clone();
                    let payload = entry.payload.clone();
                    let mut request = SendRequest::new(process, event_type, payload);
                    request.delivery = Some(Box::new(entry));
                    requests.push(request);
                }
                Err(error) => {
                    undeliverable.delivered.push(entry.origin);
                    let time = managers.sequencer().last_time();
                    undeliverable.dead_letters.push(DeadLetter {
                        entry,
                        code: "invalid_name".into(),
                        message: error.to_string(),
                        time,
                    });
                }
            }
        }
        let refused_names = undeliverable.dead_letters.len();
        if refused_names > 0 {
            if let Err(error) = store.append(undeliverable) {
                tracing::error!(error = %error, "cannot write dead letters");
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
            counters.dead_lettered.fetch_add(refused_names as u64, Ordering::Relaxed);
            counters.pending.fetch_sub(refused_names as i64, Ordering::Relaxed);
        }

        let answers = managers.send_many(requests).await;
        let (mut delivered, mut done) = (0u64, 0i64);
        let mut retry_from: Option<Origin> = None;
        for (origin, answer) in origins.into_iter().zip(answers) {
            match answer {
                Ok(_) => {
                    delivered += 1;
                    done += 1;
                }
                Err(SendError::AlreadyDelivered(_)) => {}
                Err(error) if error.is_transient() => {
                    tracing::debug!(origin = %origin, error = %error, "delivery deferred");
                    retry_from = Some(retry_from.map_or(origin, |r| r.min(origin)));
                }
                // The shard wrote the dead letter with the same commit.
                Err(_) => done += 1,
            }
        }
        counters.delivered.fetch_add(delivered, Ordering::Relaxed);
        counters.pending.fetch_sub(done, Ordering::Relaxed);
        match retry_from {
            Some(origin) => {
                cursor = origin;
                tokio::time::sleep(BACKOFF).await;
            }
            None => cursor = next_after(last),
        }
    }
}

/// The first origin after `origin` in outbox order.
fn next_after(origin: Origin) -> Origin {
    match origin.index.checked_add(1) {
        Some(index) => Origin { seq: origin.seq, index },
        None => Origin { seq: Seq(origin.seq.0 + 1), index: 0 },
    }
}

/// An outbox entry moved back from the dead letters by an operator.
pub fn redriven(letter: DeadLetter) -> OutboxEntry {
    OutboxEntry { redriven: true, ..letter.entry }
}
