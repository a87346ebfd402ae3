//! The sending side: one thread per outgoing snapshot, holding the engine view the snapshot was taken
//! from and streaming it chunk by chunk.
//!
//! Life of an outgoing snapshot:
//! 1. `prepare` (driver thread, inside `raft::Storage::snapshot`): refuses past
//!    `max_sending_snapshots`; otherwise starts the thread and returns once the thread has taken its
//!    view, so the view holds exactly what was applied when raft-rs asked (apply runs on the driver
//!    thread, which waits).
//! 2. `start` (driver thread, when raft-rs emits the `MsgSnapshot`): hands the message to the thread.
//!    A view whose message never comes is dropped after [`GO_TIMEOUT`].
//! 3. The thread reads the span lazily from the view (never more than one chunk in memory), sends the
//!    chunks, waits for the receiver's acknowledgement, frees its slot, and reports the outcome through
//!    the driver's command channel: raft-rs's `report_snapshot` runs on the driver thread.
//!
//! Every stream ends: by the receiver's answer, by `snapshot-timeout-ms`, or by cancellation (the
//! leader stepped down, the node stops). `shutdown` cancels and joins every thread, so no view outlives
//! its node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use trestle_engine::{Engine, Snapshot};

use super::chunk::ChunkBuilder;
use super::{SnapshotAck, SnapshotError, StreamControl};
use crate::driver::Cmd;
use crate::{Envelope, Span, Transport};

/// How long a registered view waits for its `MsgSnapshot` to be emitted (it is emitted in the same
/// driver turn; this only bounds a view whose message was lost before it went out).
pub(crate) const GO_TIMEOUT: Duration = Duration::from_secs(10);

/// The sending side's knobs (from the replication `Config`).
#[derive(Debug, Clone)]
pub(crate) struct SendConfig {
    pub(crate) chunk_bytes: usize,
    pub(crate) max_sending: usize,
    pub(crate) timeout: Duration,
}

/// A node's outgoing snapshots.
pub(crate) struct Outgoing {
    node: u64,
    config: SendConfig,
    transport: Arc<dyn Transport>,
    /// The driver's command channel, for the outcome of each stream.
    report: mpsc::Sender<Cmd>,
    jobs: Mutex<HashMap<u64, Job>>,
    next_id: AtomicU64,
}

struct Job {
    group: u64,
    /// Taken by `start`; dropping it unblocks a thread still waiting for its message.
    go: Option<mpsc::SyncSender<Envelope>>,
    ctl: StreamControl,
    thread: Option<JoinHandle<()>>,
}

impl Outgoing {
    pub(crate) fn new(
        node: u64,
        config: SendConfig,
        transport: Arc<dyn Transport>,
        report: mpsc::Sender<Cmd>,
    ) -> Arc<Outgoing> {
        Arc::new(Outgoing {
            node,
            config,
            transport,
            report,
            jobs: Mutex::default(),
            next_id: AtomicU64::new(1),
        })
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<u64, Job>> {
        // The map stays consistent whatever a panicking holder did: every change is one insert/remove.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Snapshots being sent (or waiting for their message).
    pub(crate) fn in_flight(&self) -> usize {
        self.jobs().len()
    }

    /// Takes a view of `span` for a snapshot of `group` to node `to` and registers it; returns its id,
    /// or `None` when `max_sending_snapshots` are already in flight. Runs on the driver thread.
    pub(crate) fn prepare(
        self: &Arc<Self>,
        group: u64,
        to: u64,
        engine: Arc<dyn Engine>,
        span: Span,
    ) -> Option<u64> {
        let (go_tx, go_rx) = mpsc::sync_channel(1);
        let (taken_tx, taken_rx) = mpsc::sync_channel(1);
        let id = {
            let mut jobs = self.jobs();
            if jobs.len() >= self.config.max_sending {
                tracing::debug!(
                    node = self.node,
                    group,
                    to,
                    "snapshot deferred: the node is sending its maximum"
                );
                return None;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let ctl = StreamControl::new(self.config.timeout);
            let this = self.clone();
            let thread_ctl = ctl.clone();
            let thread = std::thread::Builder::new()
                .name(format!("snap-send-{}-{id}", self.node))
                .spawn(move || {
                    this.run(
                        id,
                        Stream {
                            group,
                            to,
                            span,
                            ctl: thread_ctl,
                        },
                        engine,
                        go_rx,
                        taken_tx,
                    )
                });
            let thread = match thread {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(node = self.node, error = %e, "cannot start a snapshot sender");
                    return None;
                }
            };
            jobs.insert(
                id,
                Job {
                    group,
                    go: Some(go_tx),
                    ctl,
                    thread: Some(thread),
                },
            );
            id
        };
        // The thread signals right after taking its view (or hangs up if it could not).
        taken_rx.recv().ok().map(|()| id)
    }

    /// Hands the emitted `MsgSnapshot` of snapshot `id` to its thread; false if the snapshot is gone
    /// (its view expired), in which case raft-rs must hear `Failure`.
    pub(crate) fn start(&self, id: u64, env: Envelope) -> bool {
        let go = self.jobs().get_mut(&id).and_then(|job| job.go.take());
        go.is_some_and(|go| go.send(env).is_ok())
    }

    /// Cancels every stream of `group` (its replica here stopped leading it).
    pub(crate) fn cancel_group(&self, group: u64) {
        for job in self.jobs().values().filter(|j| j.group == group) {
            job.ctl.cancel();
        }
    }

    /// Cancels every stream and waits for every thread: no view outlives the node.
    pub(crate) fn shutdown(&self) {
        let jobs: Vec<Job> = self.jobs().drain().map(|(_, job)| job).collect();
        let threads: Vec<JoinHandle<()>> = jobs
            .into_iter()
            .filter_map(|mut job| {
                job.ctl.cancel();
                job.go = None;
                job.thread.take()
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }

    fn forget(&self, id: u64) {
        self.jobs().remove(&id);
    }

    fn run(
        &self,
        id: u64,
        stream: Stream,
        engine: Arc<dyn Engine>,
        go: mpsc::Receiver<Envelope>,
        taken: mpsc::SyncSender<()>,
    ) {
        let view = engine.snapshot();
        let _ = taken.send(());
        drop(taken);
        let Ok(env) = go.recv_timeout(GO_TIMEOUT) else {
            tracing::debug!(
                node = self.node,
                group = stream.group,
                id,
                "snapshot view dropped: its message never went out"
            );
            self.forget(id);
            return;
        };
        let started = Instant::now();
        let result = stream.send(
            view.as_ref(),
            env,
            self.transport.as_ref(),
            self.config.chunk_bytes,
        );
        drop(view);
        let elapsed = started.elapsed();
        match &result {
            Ok(ack) => tracing::info!(
                node = self.node,
                group = stream.group,
                to = stream.to,
                id,
                chunks = ack.chunks,
                bytes = ack.bytes,
                ms = elapsed.as_millis() as u64,
                "snapshot sent"
            ),
            Err(e) => tracing::info!(
                node = self.node,
                group = stream.group,
                to = stream.to,
                id,
                error = %e,
                "snapshot not delivered; raft will send another"
            ),
        }
        self.forget(id);
        let _ = self.report.send(Cmd::SnapshotSent {
            group: stream.group,
            to: stream.to,
            ok: result.is_ok(),
        });
    }
}

/// What one sender thread streams.
struct Stream {
    group: u64,
    to: u64,
    span: Span,
    ctl: StreamControl,
}

impl Stream {
    /// Streams the span from `view` behind `first` (the `MsgSnapshot`); the receiver's acknowledgement.
    fn send(
        &self,
        view: &dyn Snapshot,
        first: Envelope,
        transport: &dyn Transport,
        chunk_bytes: usize,
    ) -> Result<SnapshotAck, SnapshotError> {
        let mut sink = transport.open_snapshot(self.to, first, &self.ctl)?;
        let mut chunk = ChunkBuilder::new(chunk_bytes);
        let span = &self.span;
        let records = view
            .scan(span.cf, &span.start, span.end.as_deref())
            .map_err(|e| SnapshotError::Transport(format!("reading the snapshot view: {e}")))?;
        for kv in records {
            let (key, value) = kv
                .map_err(|e| SnapshotError::Transport(format!("reading the snapshot view: {e}")))?;
            chunk.push(&key, &value);
            if chunk.is_full() {
                self.ctl.check()?;
                sink.send(chunk.take(false))?;
            }
        }
        self.ctl.check()?;
        sink.send(chunk.take(true))?;
        sink.finish()
    }
}
