//! Checkpoints and point-in-time restores.
//!
//! A checkpoint is a consistent cut at one log position: for every process the
//! log changed since the previous checkpoint, a snapshot at its version as of
//! that position. Together with earlier checkpoints, every process then has a
//! snapshot exactly at its state in the cut, so nothing before the cut is ever
//! replayed to rebuild it.
//!
//! A restore puts every process back to an earlier log position without
//! deleting any event: the live events after it become an archived branch,
//! their version entries move to the branch's archive, and the timeline goes
//! on from the restored point with new, higher seqs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use julato_core::{
    Branch, Checkpoint, EventTime, FunctionVersion, Origin, OutboxEntry, ProcessHead, ProcessId,
    Seq, Snapshot, Version,
};
use julato_store::{Commit, Restore};
use serde::Serialize;

use crate::{Coordinator, Error};

/// Most events after the newest checkpoint a restart reads to warm processes.
const WARM_SCAN: u64 = 100_000;
/// Snapshots written per commit while taking a checkpoint.
const CHECKPOINT_CHUNK: usize = 256;
/// Log records read per page while scanning.
const SCAN_PAGE: usize = 4096;

/// Where a restore goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreTarget {
    /// Keep every live event at or below this seq.
    Seq(Seq),
    /// Keep every live event whose time is at or before this one.
    Time(EventTime),
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The log position the live timeline now ends at.
    pub restored_to: Seq,
    /// The branch the archived events form; `None` when nothing was after the point.
    pub branch: Option<Branch>,
    /// Processes whose state went back.
    pub processes: u64,
}

/// The newest event of one process within a scanned range.
struct Newest {
    version: Version,
    seq: Seq,
    time: EventTime,
    function_version: FunctionVersion,
}

impl Coordinator {
    /// Visits every live event in `(after, upto]`, oldest first.
    fn scan_live(
        &self,
        timeline: &julato_core::Timeline,
        after: Seq,
        upto: Seq,
        mut visit: impl FnMut(&julato_core::EventRecord),
    ) -> Result<(), Error> {
        for (start, end) in timeline.live_ranges(Seq(after.0 + 1), upto) {
            let mut from = start;
            loop {
                let page = self.store.log(from, end, SCAN_PAGE)?;
                let Some(last) = page.last().map(|r| r.seq) else { break };
                page.iter().for_each(&mut visit);
                if page.len() < SCAN_PAGE || last >= end {
                    break;
                }
                from = Seq(last.0 + 1);
            }
        }
        Ok(())
    }

    /// After a restart: reads the live log after the newest checkpoint (at most
    /// its last [`WARM_SCAN`] events) in the background and has the shards
    /// rebuild the processes it touched, most recent first, so the processes
    /// that were hot before the restart are hot again. Serving does not wait.
    pub(crate) fn warm_after(&self, checkpoint: Seq, tail: Seq) {
        let from = Seq(checkpoint.0.max(tail.0.saturating_sub(WARM_SCAN)));
        if from >= tail {
            return;
        }
        let store = self.store.clone();
        let managers = self.managers.clone();
        let timeline = self.timeline.read().clone();
        let spawned = std::thread::Builder::new().name("julato-warm".into()).spawn(move || {
            let mut order: Vec<ProcessId> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (start, end) in timeline.live_ranges(Seq(from.0 + 1), tail).into_iter().rev() {
                let mut upto = end;
                // Newest first, page by page backwards.
                while upto >= start {
                    let low = Seq(upto.0.saturating_sub(SCAN_PAGE as u64 - 1).max(start.0));
                    let page = match store.log(low, upto, SCAN_PAGE) {
                        Ok(page) => page,
                        Err(error) => {
                            tracing::warn!(error = %error, "cannot read the log to warm processes");
                            return;
                        }
                    };
                    for record in page.iter().rev() {
                        let process = ProcessId::new(record.function.clone(), record.key.clone());
                        if seen.insert(process.clone()) {
                            order.push(process);
                        }
                    }
                    if low.0 <= start.0 || low.0 == 0 {
                        break;
                    }
                    upto = Seq(low.0 - 1);
                }
            }
            tracing::info!(
                after = checkpoint.0,
                processes = order.len(),
                "warming the processes the log touched after the newest checkpoint"
            );
            managers.warm(order);
        });
        if let Err(error) = spawned {
            tracing::warn!(error = %error, "cannot start warming processes");
        }
    }

    /// The newest event at or before `seq` on the live timeline.
    fn newest_live_event(
        &self,
        timeline: &julato_core::Timeline,
        seq: Seq,
    ) -> Result<Option<julato_core::EventRecord>, Error> {
        let mut point = timeline.live_at_or_before(seq);
        loop {
            match self.store.event_at_or_before(point)? {
                Some(record) if !timeline.is_live(record.seq) => {
                    point = timeline.live_at_or_before(record.seq);
                }
                found => return Ok(found),
            }
        }
    }

    /// Takes a checkpoint at the newest fully committed log position. Blocks
    /// while it rebuilds states, so run it off the async executor.
    ///
    /// # Errors
    /// [`Error::Store`] when the store fails, [`Error::Send`] when a state
    /// cannot be rebuilt.
    pub fn checkpoint(&self) -> Result<Checkpoint, Error> {
        let _one = self.checkpointing.lock();
        let timeline = self.timeline.read();
        let cut = self.managers.sequencer().watermark();
        let checkpoints = self.store.checkpoints()?;
        let previous =
            checkpoints.iter().rev().find(|c| c.archived_by.is_none()).map_or(Seq(0), |c| c.seq);
        let id = checkpoints.last().map_or(1, |c| c.id + 1);

        let mut changed: HashMap<ProcessId, Newest> = HashMap::new();
        let mut cut_time = EventTime(0);
        self.scan_live(&timeline, previous, cut, |record| {
            cut_time = record.time;
            changed.insert(
                ProcessId::new(record.function.clone(), record.key.clone()),
                Newest {
                    version: record.version,
                    seq: record.seq,
                    time: record.time,
                    function_version: record.function_version,
                },
            );
        })?;
        if cut_time == EventTime(0) {
            cut_time = self.newest_live_event(&timeline, cut)?.map_or(EventTime(0), |r| r.time);
        }

        let processes = changed.len() as u64;
        let mut written = 0u64;
        let mut pending = Vec::new();
        for (process, newest) in changed {
            let existing = self.store.snapshot_at_or_before(&process, newest.version)?;
            if existing.is_some_and(|s| s.version == newest.version) {
                continue;
            }
            let state = match self.managers.resident(&process) {
                Some((head, state)) if head.version == newest.version => state,
                _ => self.replayer.rebuild(&process, newest.version)?.state,
            };
            let snapshot = Snapshot {
                version: newest.version,
                seq: newest.seq,
                time: newest.time,
                function_version: newest.function_version,
                state,
            };
            pending.push((process, snapshot));
            written += 1;
            if pending.len() == CHECKPOINT_CHUNK {
                let chunk = Commit { snapshots: std::mem::take(&mut pending), ..Commit::default() };
                self.store.append(chunk)?;
            }
        }
        let checkpoint = Checkpoint {
            id,
            seq: cut,
            time: cut_time,
            taken_at: self.clock.now(),
            processes,
            snapshots: written,
            archived_by: None,
        };
        let last = Commit {
            snapshots: pending,
            checkpoint: Some(checkpoint.clone()),
            ..Commit::default()
        };
        self.store.append(last)?;
        tracing::info!(
            checkpoint = id,
            seq = cut.0,
            processes,
            snapshots = written,
            "checkpoint taken"
        );
        Ok(checkpoint)
    }

    /// Restores every process to `target`. Every shard stops between batches
    /// while the restore is written as one atomic batch, so no event is applied
    /// against a state that is going back.
    ///
    /// # Errors
    /// [`Error::RestorePointOutOfRange`] for a seq past the log's end,
    /// [`Error::Store`] when the store fails.
    pub async fn restore(self: &Arc<Self>, target: RestoreTarget) -> Result<RestoreReport, Error> {
        let _one = self.restoring.lock().await;
        let paused = self.managers.pause().await?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let report = me.restore_paused(target, &paused);
            drop(paused);
            report
        })
        .await
        .map_err(|e| {
            Error::Store(julato_store::Error::Commit(format!("restore task failed: {e}")))
        })?
    }

    fn restore_paused(
        &self,
        target: RestoreTarget,
        paused: &julato_manager::Paused,
    ) -> Result<RestoreReport, Error> {
        let mut timeline = self.timeline.write();
        let tail = self.managers.sequencer().watermark();
        let point = match target {
            RestoreTarget::Seq(asked) if asked > tail => {
                return Err(Error::RestorePointOutOfRange { asked, end: tail });
            }
            RestoreTarget::Seq(asked) => asked,
            RestoreTarget::Time(time) => self.store.last_seq_at_or_before(time, tail)?,
        };
        // A point inside an archived branch means the live point before it.
        let point = timeline.live_at_or_before(point);

        let mut restore = Restore::default();
        // Each touched process's oldest archived version; it goes back to the one before.
        let mut touched: BTreeMap<ProcessId, Version> = BTreeMap::new();
        self.scan_live(&timeline, point, tail, |record| {
            let process = ProcessId::new(record.function.clone(), record.key.clone());
            restore.archived.push((process.clone(), record.version, record.seq, record.time));
            if let Some(key) = &record.idempotency_key {
                restore.released_keys.push((process.clone(), key.clone()));
            }
            // What an archived event emitted will not be delivered; what an
            // archived delivery brought whose cause stays must be delivered again.
            for index in 0..record.emitted.len() {
                restore.dropped_outbox.push(Origin { seq: record.seq, index: index as u32 });
            }
            if let Some(origin) = record.origin.filter(|o| o.seq <= point) {
                restore.restored_outbox.push(OutboxEntry {
                    origin,
                    function: record.function.as_str().to_owned(),
                    key: record.key.as_str().to_owned(),
                    event_type: record.event_type.clone(),
                    payload: record.payload.clone(),
                    hops: record.hops,
                    redriven: false,
                });
            }
            touched.entry(process).or_insert(record.version);
        })?;
        if restore.archived.is_empty() {
            return Ok(RestoreReport { restored_to: point, branch: None, processes: 0 });
        }

        for (process, oldest) in &touched {
            let kept = Version(oldest.0 - 1);
            let head = if kept == Version(0) {
                None
            } else {
                let position = |v| {
                    self.store.position(process, v)?.ok_or_else(|| {
                        Error::Store(julato_store::Error::Corrupt {
                            what: "versions",
                            message: format!("{process} has no entry for version {v}"),
                        })
                    })
                };
                let (seq, time) = position(kept)?;
                let (_, created) = position(Version(1))?;
                let event = self.store.event(seq)?.ok_or(Error::UnknownEvent(seq))?;
                Some(ProcessHead {
                    version: kept,
                    last_seq: seq,
                    function_version: event.function_version,
                    created,
                    updated: time,
                })
            };
            restore.heads.push((process.clone(), head));
            for version in self.store.snapshot_versions_after(process, kept)? {
                restore.dropped_snapshots.push((process.clone(), version));
            }
        }

        let branch = Branch {
            id: timeline.next_id(),
            restored_to: point,
            upto: tail,
            events: restore.archived.len() as u64,
            restored_at: self.clock.now(),
        };
        restore.checkpoints = self
            .store
            .checkpoints()?
            .into_iter()
            .filter(|c| c.seq > point && c.archived_by.is_none())
            .map(|c| Checkpoint { archived_by: Some(branch.id), ..c })
            .collect();
        restore.branch = Some(branch.clone());
        let processes = touched.len() as u64;
        self.store.append(Commit { restore: Some(restore), ..Commit::default() })?;
        timeline.push(branch.clone());
        // Still under the timeline lock, so no reader sees a state that went back.
        paused.forget_residents();
        let pending = self.store.outbox_len()?;
        let delivery = self.managers.delivery();
        delivery.pending.store(pending as i64, std::sync::atomic::Ordering::Relaxed);
        self.deliverer.rewind(Origin { seq: Seq(0), index: 0 });
        tracing::info!(
            branch = branch.id,
            restored_to = point.0,
            upto = tail.0,
            events = branch.events,
            processes,
            "restored"
        );
        Ok(RestoreReport { restored_to: point, branch: Some(branch), processes })
    }
}
