//! An in-memory network between the nodes of a test cluster, with fault injection.
//!
//! Every node's transport sends into one shared [`MemoryNetwork`], which applies its filters — partitions,
//! one-way link cuts, random drops, delays, paused nodes — and delivers surviving batches to the
//! destination node's mailbox from a single delivery thread, in order of their due time.
//!
//! Snapshot streams run the receiver's side ([`crate::snapshot::recv`]) on the sender's thread, chunk by
//! chunk, so a test exercises the same chunking, checks, fencing and reassembly as the gRPC transport.
//! The same filters apply to every chunk (a dropped chunk breaks the stream, as a reset connection
//! would), plus two of their own: cutting streams after some chunks, and corrupting a chunk.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::driver::Mailbox;
use crate::snapshot::recv::{DRIVER_WAIT, IncomingSnapshot};
use crate::{
    Envelope, SnapshotAck, SnapshotChunk, SnapshotError, SnapshotSink, StreamControl, Transport,
};

#[derive(Default)]
struct Filters {
    /// Node id → partition side; nodes on different sides cannot talk. Empty: no partition.
    sides: HashMap<u64, usize>,
    /// Cut one-way links (from, to).
    cut: HashSet<(u64, u64)>,
    /// Nodes that neither send nor receive.
    paused: HashSet<u64>,
    drop_rate: f64,
    delay: Duration,
    /// The next `streams` snapshot streams break after `after` chunks each.
    snapshot_cut: Option<SnapshotCut>,
    /// Flip a bit in the next snapshot chunk.
    corrupt_next_chunk: bool,
}

#[derive(Debug, Clone, Copy)]
struct SnapshotCut {
    after: u64,
    streams: u64,
}

/// What happened to snapshot streams on the network, for tests that must prove a path was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotCounters {
    /// Streams the receiver admitted.
    pub opened: u64,
    /// Chunks delivered (and written by the receiver).
    pub chunks: u64,
    /// Record bytes delivered.
    pub bytes: u64,
    /// Bytes of the largest chunk delivered.
    pub largest_chunk: u64,
    /// Streams broken by a filter.
    pub cut: u64,
    /// Chunks corrupted by a filter.
    pub corrupted: u64,
    /// Streams the receiver acknowledged.
    pub completed: u64,
}

impl Filters {
    fn allows(&self, from: u64, to: u64) -> bool {
        if self.paused.contains(&from)
            || self.paused.contains(&to)
            || self.cut.contains(&(from, to))
        {
            return false;
        }
        match (self.sides.get(&from), self.sides.get(&to)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

struct Pending {
    due: Instant,
    seq: u64,
    to: u64,
    batch: Vec<Envelope>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Default)]
struct State {
    mailboxes: HashMap<u64, Mailbox>,
    filters: Filters,
    queue: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    shutdown: bool,
    delivered: u64,
    dropped: u64,
    snapshots: SnapshotCounters,
}

/// The shared network of an in-process cluster.
pub struct MemoryNetwork {
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Default for MemoryNetwork {
    fn default() -> Self {
        MemoryNetwork::new()
    }
}

impl MemoryNetwork {
    pub fn new() -> MemoryNetwork {
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let worker = state.clone();
        let thread = std::thread::Builder::new()
            .name("memory-network".into())
            .spawn(move || deliver_loop(&worker))
            .ok();
        MemoryNetwork {
            state,
            thread: Mutex::new(thread),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (lock, cvar) = &*self.state;
        let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut guard);
        cvar.notify_all();
        out
    }

    /// The transport node `from` sends with.
    pub fn transport(self: &Arc<Self>, from: u64) -> Arc<dyn Transport> {
        Arc::new(MemoryTransport {
            from,
            network: self.clone(),
        })
    }

    /// Connects node `id`'s mailbox (after its `RaftNode` started); replaces an earlier one on restart.
    pub fn register(&self, id: u64, mailbox: Mailbox) {
        self.with(|s| s.mailboxes.insert(id, mailbox));
    }

    /// Disconnects node `id` (it stopped); messages to it are dropped.
    pub fn unregister(&self, id: u64) {
        self.with(|s| s.mailboxes.remove(&id));
    }

    /// Splits the nodes into sides that cannot talk to each other; nodes not named talk to everyone.
    pub fn partition(&self, sides: &[&[u64]]) {
        self.with(|s| {
            s.filters.sides = sides
                .iter()
                .enumerate()
                .flat_map(|(i, ids)| ids.iter().map(move |id| (*id, i)))
                .collect();
        });
    }

    /// Cuts the one-way link `from → to`.
    pub fn cut(&self, from: u64, to: u64) {
        self.with(|s| s.filters.cut.insert((from, to)));
    }

    /// Stops all traffic to and from `id`.
    pub fn pause(&self, id: u64) {
        self.with(|s| s.filters.paused.insert(id));
    }

    /// Drops each batch with probability `rate`.
    pub fn set_drop_rate(&self, rate: f64) {
        self.with(|s| s.filters.drop_rate = rate.clamp(0.0, 1.0));
    }

    /// Delays every batch by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.with(|s| s.filters.delay = delay);
    }

    /// Breaks the next `streams` snapshot streams after `chunks` chunks each (`u64::MAX` streams: every
    /// stream until [`MemoryNetwork::heal`]).
    pub fn cut_snapshots_after(&self, chunks: u64, streams: u64) {
        self.with(|s| {
            s.filters.snapshot_cut = Some(SnapshotCut {
                after: chunks,
                streams,
            })
        });
    }

    /// Flips one bit in the data of the next snapshot chunk sent.
    pub fn corrupt_next_snapshot_chunk(&self) {
        self.with(|s| s.filters.corrupt_next_chunk = true);
    }

    pub fn snapshot_counters(&self) -> SnapshotCounters {
        self.with(|s| s.snapshots)
    }

    /// Removes every filter.
    pub fn heal(&self) {
        self.with(|s| s.filters = Filters::default());
    }

    /// (delivered, dropped) batch counts, for tests that must prove a filter acted.
    pub fn counters(&self) -> (u64, u64) {
        self.with(|s| (s.delivered, s.dropped))
    }

    fn send(&self, from: u64, to: u64, batch: Vec<Envelope>) {
        self.with(|s| {
            let drop = !s.filters.allows(from, to)
                || (s.filters.drop_rate > 0.0 && rand::thread_rng().gen_bool(s.filters.drop_rate));
            if drop {
                s.dropped += 1;
                return;
            }
            s.seq += 1;
            let due = Instant::now() + s.filters.delay;
            let seq = s.seq;
            s.queue.push(Reverse(Pending {
                due,
                seq,
                to,
                batch,
            }));
        });
    }
}

impl Drop for MemoryNetwork {
    fn drop(&mut self) {
        self.with(|s| s.shutdown = true);
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

fn deliver_loop(state: &(Mutex<State>, Condvar)) {
    let (lock, cvar) = state;
    let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if guard.shutdown {
            return;
        }
        let now = Instant::now();
        match guard.queue.peek().map(|p| p.0.due) {
            Some(due) if due <= now => {
                let Some(Reverse(p)) = guard.queue.pop() else {
                    continue;
                };
                // A filter installed after sending still applies to undelivered messages.
                let from = p.batch.first().map(|e| e.from).unwrap_or_default();
                if guard.filters.allows(from, p.to)
                    && let Some(mb) = guard.mailboxes.get(&p.to)
                {
                    mb.deliver(p.batch);
                    guard.delivered += 1;
                    continue;
                }
                guard.dropped += 1;
            }
            Some(due) => {
                guard = cvar
                    .wait_timeout(guard, due - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            None => {
                guard = cvar.wait(guard).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

struct MemoryTransport {
    from: u64,
    network: Arc<MemoryNetwork>,
}

impl Transport for MemoryTransport {
    fn send(&self, to_node: u64, batch: Vec<Envelope>) {
        self.network.send(self.from, to_node, batch);
    }

    fn open_snapshot(
        &self,
        to_node: u64,
        first: Envelope,
        ctl: &StreamControl,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotError> {
        let (from, to) = (self.from, to_node);
        let (mailbox, cut_after) = self.network.with(|s| {
            if !s.filters.allows(from, to) {
                return Err(SnapshotError::Transport(format!(
                    "node {to} is unreachable"
                )));
            }
            let mailbox = s
                .mailboxes
                .get(&to)
                .cloned()
                .ok_or_else(|| SnapshotError::Transport(format!("node {to} is down")))?;
            let cut_after = match &mut s.filters.snapshot_cut {
                Some(cut) if cut.streams > 0 => {
                    cut.streams -= 1;
                    Some(cut.after)
                }
                _ => None,
            };
            Ok((mailbox, cut_after))
        })?;
        // The network's lock is not held: the receiving driver answers meanwhile.
        let incoming = IncomingSnapshot::begin(&mailbox, first, ctl.remaining().min(DRIVER_WAIT))?;
        self.network.with(|s| s.snapshots.opened += 1);
        Ok(Box::new(MemorySink {
            network: self.network.clone(),
            from,
            to,
            incoming: Some(incoming),
            sent: 0,
            cut_after,
            ctl: ctl.clone(),
        }))
    }
}

/// A snapshot stream on the memory network: each chunk is written by the receiver before `send`
/// returns.
struct MemorySink {
    network: Arc<MemoryNetwork>,
    from: u64,
    to: u64,
    /// `None` once the stream broke (dropping it told the receiving driver).
    incoming: Option<IncomingSnapshot>,
    sent: u64,
    cut_after: Option<u64>,
    ctl: StreamControl,
}

impl SnapshotSink for MemorySink {
    fn send(&mut self, mut chunk: SnapshotChunk) -> Result<(), SnapshotError> {
        self.ctl.check()?;
        let (from, to, sent, cut_after) = (self.from, self.to, self.sent, self.cut_after);
        let passes = self.network.with(|s| {
            let lost = !s.filters.allows(from, to)
                || (s.filters.drop_rate > 0.0 && rand::thread_rng().gen_bool(s.filters.drop_rate))
                || cut_after.is_some_and(|after| sent >= after);
            if lost {
                s.snapshots.cut += 1;
                return false;
            }
            if std::mem::take(&mut s.filters.corrupt_next_chunk) && !chunk.data.is_empty() {
                let mut data = chunk.data.to_vec();
                let mid = data.len() / 2;
                data[mid] ^= 0x01;
                chunk.data = data.into();
                s.snapshots.corrupted += 1;
            }
            true
        });
        let Some(incoming) = self.incoming.as_mut().filter(|_| passes) else {
            self.incoming = None;
            return Err(SnapshotError::Transport("the stream was cut".into()));
        };
        if let Err(e) = incoming.write(&chunk) {
            self.incoming = None;
            return Err(e);
        }
        self.sent += 1;
        let len = chunk.data.len() as u64;
        self.network.with(|s| {
            s.snapshots.chunks += 1;
            s.snapshots.bytes += len;
            s.snapshots.largest_chunk = s.snapshots.largest_chunk.max(len);
        });
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<SnapshotAck, SnapshotError> {
        let incoming = self
            .incoming
            .take()
            .ok_or_else(|| SnapshotError::Transport("the stream was cut".into()))?;
        let ack = incoming.finish(self.ctl.remaining().min(DRIVER_WAIT))?;
        self.network.with(|s| s.snapshots.completed += 1);
        Ok(ack)
    }
}
