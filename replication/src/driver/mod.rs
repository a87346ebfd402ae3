//! The driver: one thread per node that runs every replica on the node.
//!
//! Each loop turn:
//! 1. wait for work (a mailbox message or the next tick), then drain the mailbox: inbound Raft messages
//!    are stepped, proposals and reads handed to their replica;
//! 2. tick every replica when a tick is due;
//! 3. run the Ready sequence for every replica that has one, in raft-rs's documented order — send the
//!    messages a leader may send before persisting, stage snapshot / entries / hard state of **all**
//!    replicas into one write batch and write it with **one fsync** (group commit), then send the
//!    messages that had to wait for persistence, advance, and apply committed entries (each with its apply
//!    state, in one batch). The fsync is skipped when the batch holds nothing that must be durable
//!    before a message goes out — no entries, no snapshot, no new term or vote, only a higher commit
//!    index: a lost commit index is learned again from the leader, and apply raises the stored one
//!    together with the applied data (`PeerStorage::set_commit`), so on restart `applied <= commit`
//!    still holds. Without this, every write cost each replica a second fsync for its commit index.
//!
//! The thread blocks on RocksDB's fsync, which is why it is a plain thread and not a tokio task. Callers
//! talk to it through [`RaftNode`], whose async methods resolve through oneshot channels.
//!
//! Snapshots are streamed beside the loop, never through it (see [`crate::snapshot`]): a leader's
//! `MsgSnapshot` goes to the snapshot's sender thread instead of the transport, and the thread's
//! outcome comes back as a command, so raft-rs's `report_snapshot` runs here. On the receiving node
//! the stream's transport asks the driver (commands again, [`snapshots`]) to check and fence the
//! replica before it writes the records, and to step the snapshot after the last chunk; the records
//! themselves are written on the transport's thread.
//!
//! Failure policy: an apply or storage error stops the node (every waiting request gets `Stopped`); Raft
//! rather than a half-written replica.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::oneshot;
use trestle_engine::{Engine, WriteBatch};

use crate::desc::{self, ADMIN_SPLIT, MergeStep, SplitRequest};
use crate::peer::{Effect, MERGED_AWAY, MembershipChange, Peer, Reply};
use crate::snapshot::recv::Ticket;
use crate::snapshot::send::Outgoing;
use crate::snapshot::{Header, SnapshotError};
use crate::storage::{self, PeerStorage};
use crate::{Envelope, GroupDesc, GroupHost, ProposeError, Transport};

mod config;
mod snapshots;

pub use config::Config;

/// A replica's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    PreCandidate,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
        }
    }

    fn from_raft(r: StateRole) -> Role {
        match r {
            StateRole::Leader => Role::Leader,
            StateRole::Follower => Role::Follower,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
        }
    }
}

/// One replica's view of its group, refreshed by the driver after every turn that touched it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStatus {
    pub group: u64,
    pub role: Role,
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    /// Leader only: (peer, matched index) for every voter.
    pub progress: Vec<(u64, u64)>,
    pub recovering: bool,
    /// The replica's descriptor; `None` while uninitialized (waiting for its first snapshot).
    pub desc: Option<GroupDesc>,
    /// Set while the group is frozen for a merge (from its prepare entry on, as this replica applied).
    pub merging: Option<crate::Merging>,
}

pub(crate) enum Cmd {
    Messages(Vec<Envelope>),
    /// A snapshot stream opened: check and fence the replica (see [`crate::snapshot`]).
    SnapshotBegin {
        env: Envelope,
        reply: mpsc::SyncSender<Result<Ticket, SnapshotError>>,
    },
    /// A snapshot stream's last chunk is written: step its `MsgSnapshot`.
    SnapshotFinish {
        group: u64,
        id: u64,
        reply: mpsc::SyncSender<Result<(), SnapshotError>>,
    },
    /// A snapshot stream broke off before its end.
    SnapshotAbort {
        group: u64,
        id: u64,
    },
    /// A snapshot this node sent was acknowledged (`ok`) or not: tell raft-rs.
    SnapshotSent {
        group: u64,
        to: u64,
        ok: bool,
    },
    Propose {
        group: u64,
        data: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    ReadIndex {
        group: u64,
        reply: Reply<()>,
    },
    TransferLeader {
        group: u64,
        to: u64,
        reply: Reply<()>,
    },
    Campaign {
        group: u64,
        reply: Reply<()>,
    },
    Split {
        group: u64,
        req: SplitRequest,
        reply: Reply<Vec<u8>>,
    },
    ChangeMembership {
        group: u64,
        changes: Vec<MembershipChange>,
        reply: Reply<Vec<u8>>,
    },
    Merge {
        group: u64,
        step: MergeStep,
        reply: Reply<Vec<u8>>,
    },
    DestroyReplica {
        group: u64,
        removed_at: u64,
        reply: Reply<bool>,
    },
    CreateGroup {
        desc: GroupDesc,
        reply: Reply<()>,
    },
    RestoreGroups {
        reply: Reply<Vec<u64>>,
    },
    Shutdown,
}

/// A handle that delivers inbound Raft messages to a node's driver (given to transports).
#[derive(Clone)]
pub struct Mailbox {
    tx: mpsc::Sender<Cmd>,
}

impl Mailbox {
    pub fn deliver(&self, batch: Vec<Envelope>) {
        let _ = self.tx.send(Cmd::Messages(batch));
    }

    /// Sends `cmd` to the driver; false once the driver is gone.
    pub(crate) fn command(&self, cmd: Cmd) -> bool {
        self.tx.send(cmd).is_ok()
    }
}

type StatusMap = Arc<RwLock<HashMap<u64, GroupStatus>>>;

/// A node's multi-Raft runtime: owns the driver thread; cheap to share behind an `Arc`.
pub struct RaftNode {
    id: u64,
    tx: mpsc::Sender<Cmd>,
    outgoing: Arc<Outgoing>,
    engine: Arc<dyn Engine>,
    status: StatusMap,
    stopped: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    read_timeout: Duration,
    propose_timeout: Duration,
}

impl RaftNode {
    /// Starts the driver thread of node `id`. Groups are added with [`RaftNode::create_group`].
    pub fn start(
        id: u64,
        engine: Arc<dyn Engine>,
        transport: Arc<dyn Transport>,
        config: Config,
        host: Arc<dyn GroupHost>,
    ) -> std::io::Result<RaftNode> {
        let (tx, rx) = mpsc::channel();
        let read_timeout = Duration::from_millis(
            config.tick_ms
                * 2
                * config
                    .fixed_election_ticks
                    .unwrap_or(config.election_ticks * 2) as u64,
        );
        let propose_timeout = Duration::from_millis(config.propose_timeout_ms);
        let status: StatusMap = Arc::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let outgoing = Outgoing::new(id, config.send_config(), transport.clone(), tx.clone());
        let driver = Driver {
            id,
            engine: engine.clone(),
            transport,
            config,
            host,
            peers: HashMap::new(),
            status: status.clone(),
            stopped: stopped.clone(),
            outgoing: outgoing.clone(),
            incoming: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("raft-driver-{id}"))
            .spawn(move || driver.run(rx))?;
        Ok(RaftNode {
            id,
            tx,
            outgoing,
            engine,
            status,
            stopped,
            thread: Mutex::new(Some(thread)),
            read_timeout,
            propose_timeout,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn mailbox(&self) -> Mailbox {
        Mailbox {
            tx: self.tx.clone(),
        }
    }

    /// Snapshots this node is sending now (each holds an engine view until its stream ends).
    pub fn snapshots_in_flight(&self) -> usize {
        self.outgoing.in_flight()
    }

    /// Whether the driver has stopped (shutdown or a fatal storage error).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| ProposeError::Stopped)?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Hosts a replica of `desc` on this node: loads it from the engine, or bootstraps it with
    /// `desc.voters` as its configuration when the engine has nothing for it. A replica the engine
    /// already has keeps its own span and epoch (its log may have split it since bootstrap).
    pub async fn create_group(&self, desc: GroupDesc) -> Result<(), ProposeError> {
        self.call(|reply| Cmd::CreateGroup { desc, reply }).await
    }

    /// Starts every replica the engine holds state for (groups created by splits or snapshots since
    /// bootstrap, and uninitialized replicas that may have voted); returns their ids. Run once at start,
    /// before [`RaftNode::create_group`] for the bootstrap layout.
    pub async fn restore_groups(&self) -> Result<Vec<u64>, ProposeError> {
        self.call(|reply| Cmd::RestoreGroups { reply }).await
    }

    /// Splits `group` (this replica must lead it) at `req.key`; resolves with the two descriptors once the
    /// split is applied here. The right half's replicas start on every node as they apply it.
    pub async fn split(
        &self,
        group: u64,
        req: SplitRequest,
    ) -> Result<(GroupDesc, GroupDesc), ProposeError> {
        let call = self.call(|reply| Cmd::Split { group, req, reply });
        let bytes = tokio::time::timeout(self.propose_timeout, call)
            .await
            .unwrap_or(Err(ProposeError::Timeout))?;
        match desc::decode_split_result(&bytes) {
            Some(Ok(pair)) => Ok(pair),
            Some(Err(refused)) => Err(ProposeError::SplitRefused(refused)),
            None => Err(ProposeError::Stopped),
        }
    }

    /// Takes one step of a merge in `group`'s log (this replica must lead it; see [`MergeStep`]);
    /// resolves once the step is applied here with the group's descriptor after it and, for a prepare,
    /// the index the group froze at.
    pub async fn merge_step(
        &self,
        group: u64,
        step: MergeStep,
    ) -> Result<(GroupDesc, u64), ProposeError> {
        let call = self.call(|reply| Cmd::Merge { group, step, reply });
        let bytes = tokio::time::timeout(self.propose_timeout, call)
            .await
            .unwrap_or(Err(ProposeError::Timeout))?;
        match desc::decode_merge_result(&bytes) {
            Some(Ok(done)) => Ok(done),
            Some(Err(refused)) => Err(ProposeError::MergeRefused(refused)),
            None => Err(ProposeError::Stopped),
        }
    }

    /// Proposes `command` to `group` (this replica must be the leader) and resolves with the state
    /// machine's response once the command is committed and applied here.
    ///
    /// After `propose-timeout-ms` the caller gets `Timeout`: the outcome is unknown (the command may still
    /// be applied), exactly like a lost response.
    pub async fn propose(&self, group: u64, command: Vec<u8>) -> Result<Vec<u8>, ProposeError> {
        let call = self.call(|reply| Cmd::Propose {
            group,
            data: command,
            reply,
        });
        tokio::time::timeout(self.propose_timeout, call)
            .await
            .unwrap_or(Err(ProposeError::Timeout))
    }

    /// Resolves once this replica is the leader and has applied everything committed when the read was
    /// requested (ReadIndex): a read of the engine afterwards is linearizable.
    ///
    /// Works on followers too (the leader is asked for the read index). A read that raft-rs drops — the
    /// leader changed while it was in flight — fails with `NotLeader` after two election timeouts.
    pub async fn read_index(&self, group: u64) -> Result<(), ProposeError> {
        match tokio::time::timeout(
            self.read_timeout,
            self.call(|reply| Cmd::ReadIndex { group, reply }),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ProposeError::NotLeader { leader: None }),
        }
    }

    /// Changes `group`'s membership (this replica must lead it; see [`MembershipChange`]) and resolves
    /// with the descriptor once the change is applied here. Changing more than one voter at once goes
    /// through a joint configuration that the leader leaves by itself right after; an empty `changes`
    /// leaves a joint configuration a previous leader entered and did not leave.
    pub async fn change_membership(
        &self,
        group: u64,
        changes: Vec<MembershipChange>,
    ) -> Result<GroupDesc, ProposeError> {
        let call = self.call(|reply| Cmd::ChangeMembership {
            group,
            changes,
            reply,
        });
        let bytes = tokio::time::timeout(self.propose_timeout, call)
            .await
            .unwrap_or(Err(ProposeError::Timeout))?;
        crate::peer::decode_desc_bytes(&bytes).ok_or(ProposeError::Stopped)
    }

    /// Destroys this node's replica of `group` if it is uninitialized or its configuration is older than
    /// conf version `removed_at`, at which the group no longer has it (a replica removed while it was cut
    /// off never applies its own removal). Resolves with whether a replica was destroyed.
    pub async fn destroy_replica(&self, group: u64, removed_at: u64) -> Result<bool, ProposeError> {
        self.call(|reply| Cmd::DestroyReplica {
            group,
            removed_at,
            reply,
        })
        .await
    }

    /// Asks the leader of `group` (this replica) to hand leadership to `to`.
    pub async fn transfer_leader(&self, group: u64, to: u64) -> Result<(), ProposeError> {
        self.call(|reply| Cmd::TransferLeader { group, to, reply })
            .await
    }

    /// Makes this replica campaign now (tests and operator action).
    pub async fn campaign(&self, group: u64) -> Result<(), ProposeError> {
        self.call(|reply| Cmd::Campaign { group, reply }).await
    }

    /// This replica's last known leader of `group`.
    pub fn leader(&self, group: u64) -> Option<u64> {
        self.status.read().ok()?.get(&group)?.leader
    }

    pub fn group_status(&self, group: u64) -> Option<GroupStatus> {
        self.status.read().ok()?.get(&group).cloned()
    }

    /// Every hosted group's status, by group id.
    pub fn status(&self) -> Vec<GroupStatus> {
        let mut all: Vec<GroupStatus> = self
            .status
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by_key(|s| s.group);
        all
    }

    /// Stops the driver thread and waits for it. Idempotent.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Cmd::Shutdown);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Driver {
    id: u64,
    engine: Arc<dyn Engine>,
    transport: Arc<dyn Transport>,
    config: Config,
    host: Arc<dyn GroupHost>,
    peers: HashMap<u64, Peer>,
    status: StatusMap,
    stopped: Arc<AtomicBool>,
    /// Snapshots this node is sending.
    outgoing: Arc<Outgoing>,
    /// Snapshots this node is receiving, by group (one per group at a time).
    incoming: HashMap<u64, snapshots::Incoming>,
}

/// Most mailbox messages handled before the replicas' Ready is processed, so a flood of inbound
/// messages cannot starve persistence and apply.
const MAX_COMMANDS_PER_TURN: usize = 4096;

impl Driver {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let tick = Duration::from_millis(self.config.tick_ms);
        let mut next_tick = Instant::now() + tick;
        'turns: loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut touched = HashSet::new();
            match rx.recv_timeout(wait) {
                Ok(cmd) => {
                    if !self.handle(cmd, &mut touched) {
                        break 'turns;
                    }
                    for _ in 0..MAX_COMMANDS_PER_TURN {
                        match rx.try_recv() {
                            Ok(cmd) => {
                                if !self.handle(cmd, &mut touched) {
                                    break 'turns;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                next_tick += tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
                for (id, peer) in self.peers.iter_mut() {
                    if peer.may_tick() {
                        peer.raw.tick();
                    }
                    touched.insert(*id);
                }
            }
            for group in &touched {
                if let Some(peer) = self.peers.get_mut(group) {
                    peer.flush_reads();
                }
            }
            if let Err(e) = self.process_readies(&mut touched) {
                tracing::error!(node = self.id, error = %e, "stopping node after a storage failure");
                break;
            }
            self.publish_status(&touched);
        }
        self.stopped.store(true, Ordering::SeqCst);
        self.outgoing.shutdown();
        // Dropping the peers drops every waiting reply: callers see `Stopped`.
        self.peers.clear();
    }

    /// Handles one command; returns false on shutdown.
    fn handle(&mut self, cmd: Cmd, touched: &mut HashSet<u64>) -> bool {
        match cmd {
            Cmd::Messages(batch) => {
                for env in batch {
                    self.step(env, touched);
                }
            }
            Cmd::SnapshotBegin { env, reply } => match self.begin_snapshot(env, touched) {
                Ok(answer) => {
                    let _ = reply.send(answer);
                }
                Err(e) => {
                    tracing::error!(node = self.id, error = %e, "stopping node after a storage failure");
                    return false;
                }
            },
            Cmd::SnapshotFinish { group, id, reply } => {
                let _ = reply.send(self.finish_snapshot(group, id, touched));
            }
            Cmd::SnapshotAbort { group, id } => self.abort_snapshot(group, id),
            Cmd::SnapshotSent { group, to, ok } => {
                if let Some(peer) = self.peers.get_mut(&group) {
                    let status = if ok {
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    };
                    peer.raw.report_snapshot(to, status);
                    touched.insert(group);
                }
            }
            Cmd::Propose { group, data, reply } => {
                if data.len() > self.config.max_proposal_bytes {
                    let _ = reply.send(Err(ProposeError::TooLarge(data.len())));
                } else if let Some(peer) = self.peers.get_mut(&group) {
                    peer.propose(data, reply);
                    touched.insert(group);
                } else {
                    let _ = reply.send(Err(ProposeError::GroupNotFound(group)));
                }
            }
            Cmd::ReadIndex { group, reply } => match self.peers.get_mut(&group) {
                Some(peer) => {
                    peer.read_index(reply);
                    touched.insert(group);
                }
                None => {
                    let _ = reply.send(Err(ProposeError::GroupNotFound(group)));
                }
            },
            Cmd::TransferLeader { group, to, reply } => match self.peers.get_mut(&group) {
                Some(peer) if peer.is_leader() => {
                    peer.raw.transfer_leader(to);
                    touched.insert(group);
                    let _ = reply.send(Ok(()));
                }
                Some(peer) => {
                    let _ = reply.send(Err(ProposeError::NotLeader {
                        leader: peer.leader_id(),
                    }));
                }
                None => {
                    let _ = reply.send(Err(ProposeError::GroupNotFound(group)));
                }
            },
            Cmd::Campaign { group, reply } => match self.peers.get_mut(&group) {
                Some(peer) => {
                    let _ = peer.raw.campaign();
                    touched.insert(group);
                    let _ = reply.send(Ok(()));
                }
                None => {
                    let _ = reply.send(Err(ProposeError::GroupNotFound(group)));
                }
            },
            Cmd::Split { group, req, reply } => match self.peers.get_mut(&group) {
                Some(peer) => {
                    peer.propose_with(ADMIN_SPLIT.to_vec(), req.encode(), reply);
                    touched.insert(group);
                }
                None => {
                    let _ = reply.send(Err(ProposeError::GroupNotFound(group)));
                }
            },
            Cmd::Merge { group, step, reply } => match self.peers.get_mut(&group) {
                Some(peer) => {
                    peer.propose_merge(&step, reply);
                    touched.insert(group);
                }
                None => {
                    let _ = reply.send(Err(ProposeError::GroupNotFound(group)));
                }
            },
            Cmd::ChangeMembership {
                group,
                changes,
                reply,
            } => match self.peers.get_mut(&group) {
                Some(peer) => {
                    peer.propose_membership(&changes, reply);
                    touched.insert(group);
                }
                None => {
                    let _ = reply.send(Err(ProposeError::GroupNotFound(group)));
                }
            },
            Cmd::DestroyReplica {
                group,
                removed_at,
                reply,
            } => {
                let stale = self
                    .peers
                    .get(&group)
                    .is_some_and(|p| p.desc().is_none_or(|d| d.epoch.conf_ver < removed_at));
                let result = if stale {
                    self.destroy(group, removed_at).map(|()| true).map_err(|e| {
                        tracing::error!(node = self.id, group, error = %e, "destroying a replica");
                        ProposeError::Stopped
                    })
                } else {
                    Ok(false)
                };
                touched.insert(group);
                let _ = reply.send(result);
            }
            Cmd::CreateGroup { desc, reply } => {
                let group = desc.id;
                let result = self.create_group(group, Some(&desc));
                touched.insert(group);
                let _ = reply.send(result);
            }
            Cmd::RestoreGroups { reply } => {
                let result = self.restore_groups();
                if let Ok(groups) = &result {
                    touched.extend(groups.iter().copied());
                }
                let _ = reply.send(result);
            }
            Cmd::Shutdown => return false,
        }
        true
    }

    /// Starts the replica of `group`: bootstrapped from `desc`, loaded from the engine, or (no state and
    /// no `desc`) uninitialized.
    fn create_group(&mut self, group: u64, desc: Option<&GroupDesc>) -> Result<(), ProposeError> {
        if self.peers.contains_key(&group) {
            return Ok(());
        }
        // A destroyed replica is never bootstrapped again (only a newer configuration's snapshot may
        // bring the group back to this node, through an empty replica).
        if desc.is_some()
            && let Ok(Some(_)) = self.engine.get(
                trestle_engine::Cf::Raft,
                &trestle_engine::keys::tombstone_key(group),
            )
        {
            tracing::info!(
                node = self.id,
                group,
                "not bootstrapping a destroyed replica"
            );
            return Ok(());
        }
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(node = self.id, group, error = %e, "{what}");
            ProposeError::Stopped
        };
        let (storage, created) =
            PeerStorage::open(group, self.engine.clone(), desc, self.outgoing.clone())
                .map_err(|e| fail("opening raft storage", &e))?;
        let applied = storage.applied().0;
        let initialized = storage.is_initialized();
        let logger = slog::Logger::root(
            TracingDrain {
                node: self.id,
                group,
            },
            slog::o!(),
        );
        let raw = RawNode::new(&self.config.raft_config(self.id, applied), storage, &logger)
            .map_err(|e| fail("starting raft", &e))?;
        tracing::info!(
            node = self.id,
            group,
            created,
            applied,
            initialized,
            "replica started"
        );
        // A replica created empty on first contact (a new learner, or one whose disk was lost) may
        // have voted before in the terms its peers are in: it votes only in later terms.
        let recovering = desc.is_none() && !initialized;
        let peer = Peer::new(
            self.id,
            group,
            raw,
            self.host.clone(),
            recovering,
            self.config.log_compact_threshold,
        );
        self.peers.insert(group, peer);
        // Publish at once, so a group is in `status()` as soon as `create_group` returns.
        self.publish_status(&HashSet::from([group]));
        Ok(())
    }

    /// Starts every replica the engine has state for (see [`RaftNode::restore_groups`]). Groups with a
    /// raft-local state but no range state were bootstrapped before range states existed: the
    /// bootstrap layout (`create_group` with a descriptor) starts those.
    fn restore_groups(&mut self) -> Result<Vec<u64>, ProposeError> {
        let mut found: HashMap<u64, HashSet<u8>> = HashMap::new();
        let end = trestle_engine::keys::group_start(u64::MAX);
        let iter = self
            .engine
            .scan(trestle_engine::Cf::Raft, &[], Some(&end))
            .map_err(|e| {
                tracing::error!(node = self.id, error = %e, "scanning raft states");
                ProposeError::Stopped
            })?;
        for kv in iter {
            let (key, _) = kv.map_err(|e| {
                tracing::error!(node = self.id, error = %e, "scanning raft states");
                ProposeError::Stopped
            })?;
            if let Some((group, suffix)) = trestle_engine::keys::group_of_state_key(&key) {
                found.entry(group).or_default().insert(suffix);
            }
        }
        let mut started = Vec::new();
        let mut groups: Vec<(u64, HashSet<u8>)> = found.into_iter().collect();
        groups.sort_by_key(|(g, _)| *g);
        for (group, suffixes) in groups {
            let has_range = suffixes.contains(&trestle_engine::keys::RANGE_STATE_KEY_SUFFIX);
            let has_local = suffixes.contains(&trestle_engine::keys::RAFT_LOCAL_KEY_SUFFIX);
            let voted = suffixes.contains(&trestle_engine::keys::HARD_STATE_KEY_SUFFIX);
            let fenced = suffixes.contains(&trestle_engine::keys::SNAPSHOT_MARKER_KEY_SUFFIX);
            if has_range || fenced || (!has_local && voted) {
                self.create_group(group, None)?;
                started.push(group);
            }
        }
        Ok(started)
    }

    /// Starts the right half of a split this replica applied (its state is durable), replacing an
    /// uninitialized replica of it; the parent's leader makes it campaign at once.
    fn start_split_right(&mut self, right: &GroupDesc, campaign: bool) -> Result<(), String> {
        if let Some(old) = self.peers.get(&right.id)
            && old.is_initialized()
        {
            return Ok(());
        }
        self.peers.remove(&right.id);
        self.create_group(right.id, None)
            .map_err(|e| format!("starting split group {}: {e}", right.id))?;
        if campaign && let Some(peer) = self.peers.get_mut(&right.id) {
            let _ = peer.raw.campaign();
        }
        Ok(())
    }

    /// Whether a snapshot for `group` is from a configuration no newer than the one that removed this
    /// node's replica (a stale leader's): it must not bring the destroyed replica back.
    fn snapshot_buried(&self, group: u64, msg: &Message) -> bool {
        let Ok(Some(bytes)) = self.engine.get(
            trestle_engine::Cf::Raft,
            &trestle_engine::keys::tombstone_key(group),
        ) else {
            return false;
        };
        let removed_at = bytes
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(u64::MAX, u64::from_be_bytes);
        storage::snapshot_range(msg.get_snapshot().get_data())
            .is_none_or(|r| r.epoch.conf_ver <= removed_at)
    }

    /// Drops this node's replica of `source`, whose merge into the range to its left committed here
    /// (its raft state was deleted and its tombstone written with the commit; its keys stay).
    fn retire_merged(&mut self, source: u64) {
        let Some(mut peer) = self.peers.remove(&source) else {
            return;
        };
        let target = peer.merging().map_or(0, |m| m.target);
        peer.fail_waiting(&ProposeError::Merging { target });
        self.outgoing.cancel_group(source);
        self.forget_replica(source);
        tracing::info!(
            node = self.id,
            group = source,
            target,
            "replica merged away"
        );
    }

    /// Drops a replica that is gone from this node from the published statuses and tells the host.
    fn forget_replica(&self, group: u64) {
        if let Ok(mut map) = self.status.write() {
            map.remove(&group);
        }
        self.host.on_removed(group);
    }

    /// Before a snapshot of `group` is taken in: this node's replicas frozen for a merge into `group`
    /// whose span the snapshot covers go (the merge committed — only a commit grows the target over
    /// them — and the snapshot brings their keys as the target's). This node missed the commit.
    fn retire_merged_sources(&mut self, group: u64, msg: &Message) -> Result<(), String> {
        let Some(range) = storage::snapshot_range(msg.get_snapshot().get_data()) else {
            return Ok(());
        };
        let sources: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.merging().is_some_and(|m| m.target == group))
            .filter(|(_, p)| {
                p.raw
                    .store()
                    .range()
                    .is_some_and(|r| range.span.covers(&r.span))
            })
            .map(|(&id, _)| id)
            .collect();
        for source in sources {
            let mut batch = WriteBatch::new();
            storage::stage_tombstone(source, MERGED_AWAY, &mut batch);
            self.engine
                .write(&batch, true)
                .map_err(|e| format!("retiring merged replica {source}: {e}"))?;
            self.retire_merged(source);
        }
        Ok(())
    }

    /// Whether `group`'s replica on this node merged away (see [`Driver::retire_merged`]).
    fn merged_away(&self, group: u64) -> bool {
        matches!(
            self.engine.get(
                trestle_engine::Cf::Raft,
                &trestle_engine::keys::tombstone_key(group),
            ),
            Ok(Some(b)) if b.as_slice() == MERGED_AWAY.to_be_bytes()
        )
    }

    /// Destroys this node's replica of `group`: its raft state and its keys go, a tombstone stays (see
    /// [`Driver::snapshot_buried`]), and the host forgets it.
    fn destroy(&mut self, group: u64, removed_at: u64) -> Result<(), String> {
        let Some(peer) = self.peers.remove(&group) else {
            return Ok(());
        };
        let mut batch = WriteBatch::new();
        storage::stage_tombstone(group, removed_at, &mut batch);
        if let Some(range) = peer.raw.store().range() {
            let span = &range.span;
            // Keys another replica here owns now (it restored a snapshot after a split) stay.
            let shared = self
                .peers
                .values()
                .any(|p| p.raw.store().range().is_some_and(|r| r.span.overlaps(span)));
            if !shared {
                let end = span.end.clone().unwrap_or_else(|| vec![0xFF; 32]);
                batch.delete_range(span.cf, span.start.clone(), end);
            }
        }
        self.engine
            .write(&batch, true)
            .map_err(|e| format!("destroying replica {group}: {e}"))?;
        self.forget_replica(group);
        tracing::info!(node = self.id, group, removed_at, "replica destroyed");
        Ok(())
    }

    /// Whether a snapshot for `group` would overlap the span of another initialized replica on this
    /// node (a split this node has not applied yet), or of a snapshot being received for another
    /// group: such a snapshot waits until the split applies or the other snapshot is done.
    fn snapshot_overlaps(&self, group: u64, msg: &Message) -> bool {
        let Some(range) = storage::snapshot_range(msg.get_snapshot().get_data()) else {
            return false;
        };
        let initialized = self.peers.iter().any(|(&id, peer)| {
            id != group
                && peer
                    .raw
                    .store()
                    .range()
                    .is_some_and(|r| r.span.overlaps(&range.span))
        });
        let receiving = self
            .incoming
            .iter()
            .any(|(&id, inc)| id != group && inc.span.overlaps(&range.span));
        initialized || receiving
    }

    fn step(&mut self, env: Envelope, touched: &mut HashSet<u64>) {
        if env.to != self.id {
            return;
        }
        let msg = match Message::parse_from_bytes(&env.message) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(node = self.id, group = env.group, error = %e, "undecodable raft message");
                return;
            }
        };
        if !self.peers.contains_key(&env.group) {
            // A leader contacting a node without a replica: the node was added to the group, or has
            // not applied the split that creates it yet. An empty replica answers and waits for a
            // snapshot. Votes create nothing (a node not in the group has no business voting).
            let from_leader = matches!(
                msg.get_msg_type(),
                MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
            );
            if !from_leader || !self.host.may_host(env.group) || self.merged_away(env.group) {
                tracing::trace!(
                    node = self.id,
                    group = env.group,
                    "message for an unknown group dropped"
                );
                return;
            }
            if self.create_group(env.group, None).is_err() {
                return;
            }
        }
        if msg.get_msg_type() == MessageType::MsgSnapshot
            && Header::decode(msg.get_snapshot().get_data()).is_some()
        {
            // A streamed snapshot's message is stepped by its stream's end, never on its own: its
            // records are not here.
            tracing::debug!(
                node = self.id,
                group = env.group,
                "streamed snapshot header outside its stream; dropped"
            );
            return;
        }
        if msg.get_msg_type() == MessageType::MsgSnapshot
            && let Err(e) = self.retire_merged_sources(env.group, &msg)
        {
            tracing::warn!(node = self.id, group = env.group, error = %e, "snapshot dropped");
            return;
        }
        if msg.get_msg_type() == MessageType::MsgSnapshot
            && (self.snapshot_overlaps(env.group, &msg) || self.snapshot_buried(env.group, &msg))
        {
            tracing::debug!(
                node = self.id,
                group = env.group,
                "snapshot overlaps a replica that has not split yet; dropped"
            );
            return;
        }
        let Some(peer) = self.peers.get_mut(&env.group) else {
            return;
        };
        if msg.from != env.from || msg.to != env.to || !peer.admit(&msg) {
            return;
        }
        let mut msg = msg;
        // A leader's view of a follower that lost its disk is stale: it believes the follower holds
        // entries up to its old matched index, so it never probes below it, and its heartbeats carry a
        // commit index beyond the follower's (now empty) log, which raft-rs treats as fatal. The
        // follower's log is a prefix of the leader's, so committing only what it has is safe; and it
        // asks the leader for a snapshot with a rejection that names `request_snapshot`, the one
        // rejection raft-rs honours even at or below the matched index.
        // An empty replica takes its first state from a snapshot only: entries from the start of a
        // log it never had would reach a state machine it does not have yet. It hears the append as
        // a heartbeat (learning the leader and term) and asks for a snapshot.
        if !peer.is_initialized() && msg.get_msg_type() == MessageType::MsgAppend {
            let mut beat = Message::default();
            beat.set_msg_type(MessageType::MsgHeartbeat);
            beat.from = msg.from;
            beat.to = msg.to;
            beat.term = msg.term;
            beat.commit = msg.commit;
            msg = beat;
        }
        let mut ask_snapshot = None;
        if msg.get_msg_type() == MessageType::MsgHeartbeat {
            let last = peer.raw.raft.raft_log.last_index();
            if msg.commit > last {
                msg.commit = last;
                let mut ask = Message::default();
                ask.set_msg_type(MessageType::MsgAppendResponse);
                ask.from = self.id;
                ask.to = msg.from;
                ask.term = msg.term;
                ask.reject = true;
                ask.index = u64::MAX;
                ask.reject_hint = last;
                ask.request_snapshot = last.max(1);
                ask_snapshot = Some(ask);
            }
        }
        if let Err(e) = peer.raw.step(msg) {
            tracing::debug!(node = self.id, group = env.group, error = %e, "raft step");
        }
        if let Some(ask) = ask_snapshot {
            tracing::info!(
                node = self.id,
                group = env.group,
                "replica is behind its leader's view; asking for a snapshot"
            );
            let mut outbox = HashMap::new();
            collect_messages(peer, env.group, vec![ask], &mut outbox, &self.outgoing);
            self.flush(&mut outbox);
        }
        touched.insert(env.group);
    }

    fn process_readies(&mut self, touched: &mut HashSet<u64>) -> Result<(), String> {
        let mut batch = WriteBatch::new();
        let mut readies = Vec::new();
        let mut outbox: HashMap<u64, Vec<Envelope>> = HashMap::new();
        let mut restored = Vec::new();
        let mut must_sync = false;
        for (&group, peer) in self.peers.iter_mut() {
            if !peer.raw.has_ready() {
                continue;
            }
            touched.insert(group);
            let mut rd = peer.raw.ready();
            collect_messages(peer, group, rd.take_messages(), &mut outbox, &self.outgoing);
            if !rd.snapshot().is_empty() {
                peer.raw
                    .mut_store()
                    .apply_snapshot(rd.snapshot(), &mut batch)
                    .map_err(|e| format!("group {group}: applying snapshot: {e}"))?;
                restored.push(group);
            }
            // raft-rs's rule: entries, a snapshot, or a new term or vote.
            must_sync |= rd.must_sync();
            let store = peer.raw.mut_store();
            store
                .append(rd.entries(), &mut batch)
                .map_err(|e| format!("group {group}: append: {e}"))?;
            if let Some(hs) = rd.hs() {
                store
                    .set_hard_state(hs, &mut batch)
                    .map_err(|e| format!("group {group}: hard state: {e}"))?;
            }
            peer.on_read_states(rd.take_read_states());
            let is_leader = peer.is_leader();
            if peer.was_leader && !is_leader {
                peer.on_lost_leadership();
                self.outgoing.cancel_group(group);
            }
            peer.was_leader = is_leader;
            readies.push((group, rd));
        }
        // Sends what may go out before persistence (a leader's appends to followers) right away.
        self.flush(&mut outbox);
        if !batch.is_empty() {
            let must_sync =
                must_sync && !crate::planted::active(crate::planted::Bug::AckBeforeFsync);
            self.engine
                .write(&batch, must_sync)
                .map_err(|e| format!("persisting raft state: {e}"))?;
        }
        for group in restored {
            if let Some(peer) = self.peers.get_mut(&group) {
                peer.restored().map_err(|e| format!("group {group}: {e}"))?;
            }
        }
        let mut compaction = WriteBatch::new();
        let mut effects_due = Effects::default();
        for (group, mut rd) in readies {
            if effects_due.merged_away.contains(&group) {
                continue;
            }
            let Some(peer) = self.peers.get_mut(&group) else {
                continue;
            };
            let mut effects = peer
                .apply_committed(rd.take_committed_entries())
                .map_err(|e| format!("group {group}: {e}"))?;
            let outgoing = &self.outgoing;
            collect_messages(
                peer,
                group,
                rd.take_persisted_messages(),
                &mut outbox,
                outgoing,
            );
            let mut light = peer.raw.advance(rd);
            collect_messages(peer, group, light.take_messages(), &mut outbox, outgoing);
            effects.extend(
                peer.apply_committed(light.take_committed_entries())
                    .map_err(|e| format!("group {group}: {e}"))?,
            );
            peer.raw.advance_apply();
            peer.serve_reads();
            peer.maybe_compact(&mut compaction)
                .map_err(|e| format!("group {group}: compaction: {e}"))?;
            effects_due.collect(group, peer, effects);
        }
        // Groups whose merge commit waited for their source replica here to catch up.
        let waiting: Vec<u64> = self
            .peers
            .iter()
            .filter(|(g, p)| p.has_blocked() && !effects_due.merged_away.contains(*g))
            .map(|(&g, _)| g)
            .collect();
        for group in waiting {
            let source = self.peers.get(&group).and_then(Peer::blocked_on);
            if let Some((source, prepare_index)) = source
                && let Some(src) = self.peers.get_mut(&source)
                && src.learn_commit(prepare_index)
            {
                touched.insert(source);
            }
            let Some(peer) = self.peers.get_mut(&group) else {
                continue;
            };
            let effects = peer
                .apply_committed(Vec::new())
                .map_err(|e| format!("group {group}: {e}"))?;
            peer.serve_reads();
            effects_due.collect(group, peer, effects);
            touched.insert(group);
        }
        for source in effects_due.merged_away {
            self.retire_merged(source);
            touched.remove(&source);
        }
        for (right, campaign) in effects_due.splits {
            self.start_split_right(&right, campaign)?;
            touched.insert(right.id);
        }
        for (group, conf_ver) in effects_due.removed {
            self.destroy(group, conf_ver)?;
            touched.remove(&group);
        }
        if !compaction.is_empty() {
            self.engine
                .write(&compaction, false)
                .map_err(|e| format!("compacting raft logs: {e}"))?;
        }
        self.flush(&mut outbox);
        Ok(())
    }

    fn flush(&self, outbox: &mut HashMap<u64, Vec<Envelope>>) {
        for (node, batch) in outbox.drain() {
            if !batch.is_empty() {
                self.transport.send(node, batch);
            }
        }
    }

    fn publish_status(&self, touched: &HashSet<u64>) {
        if touched.is_empty() {
            return;
        }
        let Ok(mut map) = self.status.write() else {
            return;
        };
        for group in touched {
            if let Some(peer) = self.peers.get(group) {
                map.insert(*group, peer_status(peer));
            }
        }
    }
}

/// Sorts a replica's outgoing messages into `outbox` by node; a `MsgSnapshot` goes to its snapshot's
/// sender thread instead, which reports the outcome back (a snapshot that cannot go is a `Failure` at
/// once, so raft-rs retries).
fn collect_messages(
    peer: &mut Peer,
    group: u64,
    msgs: Vec<Message>,
    outbox: &mut HashMap<u64, Vec<Envelope>>,
    outgoing: &Outgoing,
) {
    for msg in msgs {
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let bytes = match msg.write_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(group, error = %e, "unencodable raft message");
                if is_snapshot {
                    peer.raw.report_snapshot(msg.to, SnapshotStatus::Failure);
                }
                continue;
            }
        };
        let env = Envelope {
            group,
            from: msg.from,
            to: msg.to,
            message: bytes.into(),
        };
        if is_snapshot {
            let started = Header::decode(msg.get_snapshot().get_data())
                .is_some_and(|h| outgoing.start(h.id, env));
            if !started {
                tracing::debug!(
                    group,
                    to = msg.to,
                    "snapshot view expired before its message"
                );
                peer.raw.report_snapshot(msg.to, SnapshotStatus::Failure);
            }
            continue;
        }
        outbox.entry(msg.to).or_default().push(env);
    }
}

/// What this turn's applied entries ask of the driver once every group has applied (see [`Effect`]).
#[derive(Default)]
struct Effects {
    /// Right halves of splits to start, and whether to campaign (the parent's leader applied it).
    splits: Vec<(GroupDesc, bool)>,
    /// Replicas removed from their groups, with the conf version that removed them.
    removed: Vec<(u64, u64)>,
    /// Sources whose merge committed here this turn: they apply nothing more (their raft state is
    /// already deleted) and go once the loop is done.
    merged_away: HashSet<u64>,
}

impl Effects {
    fn collect(&mut self, group: u64, peer: &Peer, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Split { right, start_right } if start_right => {
                    self.splits.push((right, peer.is_leader()))
                }
                Effect::Split { .. } => {}
                Effect::Removed => {
                    let conf_ver = peer.desc().map_or(0, |d| d.epoch.conf_ver);
                    self.removed.push((group, conf_ver));
                }
                Effect::Merged { source } => {
                    self.merged_away.insert(source);
                }
            }
        }
    }
}

fn peer_status(peer: &Peer) -> GroupStatus {
    let raft = &peer.raw.raft;
    let store = peer.raw.store();
    let progress = if peer.is_leader() {
        let mut p: Vec<(u64, u64)> = raft
            .prs()
            .iter()
            .map(|(id, pr)| (*id, pr.matched))
            .collect();
        p.sort_unstable();
        p
    } else {
        Vec::new()
    };
    GroupStatus {
        group: peer.group,
        role: Role::from_raft(raft.state),
        leader: peer.leader_id(),
        term: raft.term,
        commit_index: raft.raft_log.committed,
        applied_index: store.applied().0,
        first_index: store.first_index_value(),
        last_index: store.last_index_value(),
        progress,
        recovering: peer.recovery.as_ref().is_some_and(|r| r.floor.is_none()),
        desc: peer.desc(),
        merging: peer.merging(),
    }
}

/// Forwards raft-rs's slog records to `tracing` (raft-rs's info level is chatty, so it becomes debug).
struct TracingDrain {
    node: u64,
    group: u64,
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        _values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let (node, group) = (self.node, self.group);
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", node, group, "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", node, group, "{}", record.msg()),
            slog::Level::Info => tracing::debug!(target: "raft", node, group, "{}", record.msg()),
            _ => tracing::trace!(target: "raft", node, group, "{}", record.msg()),
        }
        Ok(())
    }
}
