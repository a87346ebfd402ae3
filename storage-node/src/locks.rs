//! The lock manager inside a node: its state hosted by the meta group's state machine, persisted as
//! records of the meta group (so restarts, log compaction and snapshots keep it), and the meta leader's
//! expiry of leases whose TTL ran out.
//!
//! - **Apply** ([`LockHost::apply`]): a `LockCommand` of the meta log runs through
//!   [`trestle_lock_manager::LockState::apply`] at its Raft index; the records of the leases and locks
//!   it changed go into the apply batch (sealed like every catalog record), with the lock manager's
//!   applied index. Lock names are scoped by account: the state machine sees `{account}/{name}`.
//! - **Grants to waiters** are announced on a broadcast channel, so a waiting `Acquire` (on whichever
//!   node serves it; every replica applies every command) learns its token when the release, revoke or
//!   expiry that handed it the lock is applied.
//! - **Expiry is decided by the meta leader alone** ([`LockHost::expired`], driven by the node): a
//!   lease expires when its TTL has run out on the leader's monotonic clock since the latest of
//!   1. the last keep-alive (or grant) this node applied,
//!   2. the moment this node became leader — a new leader cannot know when the old one last renewed,
//!      so it waits one full TTL from its election before expiring anything, and
//!   3. the last **jump** of this node's clock — a step of more than [`MAX_CLOCK_STEP`] between two
//!      consecutive readings (a SIGSTOP, a paused VM, a faulty clock source; see `clock`). Time that
//!      passed while the node was not running is time in which it could not apply keep-alives, so a
//!      jump is treated like a new election: one more full TTL of steady time before anything expires.
//!
//!   Followers track the same times but never propose. The clock is injected ([`Clock`]) so tests can
//!   move it. Each rule only ever delays expiry, never hastens it.
//!
//! **Clock assumptions.** The leader's clock is monotonic and, between jumps, runs at real time's rate
//! within the holders' margin (below); the expiry loop reads it at least every 100 ms on every node, so
//! any forward step longer than [`MAX_CLOCK_STEP`] is noticed. A step shorter than that goes unnoticed
//! and counts in full: it must fit in the holders' margin, which it does (the margin is at least
//! 500 ms). Wall-clock time is never used.
//!
//! Client-side rule (documented for SDK users): a holder treats its lease as valid for `ttl` minus a
//! drift margin, counted from when it *sent* the keep-alive that was acknowledged. The leader counts
//! from when it applied that keep-alive, which is later, so the holder always gives up first as long as
//! the two clocks' rates differ by less than the margin over one TTL (the SDK uses 10 % plus 500 ms).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::broadcast;
use trestle_engine::{Cf, Engine, WriteBatch, keys};
use trestle_lock_manager::{
    Command, Grant, Holder, Lease, LeaseId, Lock, LockError, LockState, Reply,
};
use trestle_proto::internal::{
    LeaseRecord, LockCommand, LockRecord, LockReply, command_result::Kind, lock_command,
};
use trestle_replication::ApplyError;
use trestle_types::{Error, ErrorCode, Result};

use crate::clock::JumpDetector;
pub use crate::clock::{Clock, MAX_CLOCK_STEP};
use crate::codec::{seal, unseal};

/// The scoped name the state machine sees for `name` of `account`.
pub fn scoped(account: &str, name: &str) -> String {
    format!("{account}/{name}")
}

/// The name within its account, for answers.
pub fn unscoped<'a>(account: &str, full: &'a str) -> &'a str {
    full.strip_prefix(account)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(full)
}

struct Inner {
    state: LockState,
    /// When this node applied each lease's grant or last keep-alive, on its clock.
    seen: HashMap<LeaseId, Duration>,
    /// Every reading of the clock goes through here, so jumps are noticed (see `clock`).
    readings: JumpDetector,
}

/// The node's lock-manager state (see the module header).
pub struct LockHost {
    inner: Mutex<Inner>,
    grants: broadcast::Sender<Grant>,
    clock: Arc<dyn Clock>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ApplyError {
    ApplyError(format!("lock manager {what}: {e}"))
}

impl LockHost {
    /// An empty host (tests); nodes use [`LockHost::load`].
    pub fn new(clock: Arc<dyn Clock>) -> Arc<LockHost> {
        let (grants, _) = broadcast::channel(1024);
        let readings = JumpDetector::new(clock.now());
        Arc::new(LockHost {
            inner: Mutex::new(Inner {
                state: LockState::new(),
                seen: HashMap::new(),
                readings,
            }),
            grants,
            clock,
        })
    }

    /// The host with the state persisted in `engine`.
    pub fn load(engine: &dyn Engine, clock: Arc<dyn Clock>) -> Result<Arc<LockHost>, ApplyError> {
        let host = LockHost::new(clock);
        host.reload(engine)?;
        Ok(host)
    }

    fn lock_inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Apply finishes every mutation before it releases the guard; a panic mid-apply stops the node.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rebuilds the state from the engine (after a snapshot replaced the meta group's keys).
    pub fn reload(&self, engine: &dyn Engine) -> Result<(), ApplyError> {
        let leases = scan_records::<LeaseRecord>(engine, &keys::lock_leases_prefix())?
            .into_iter()
            .map(|r| Lease {
                id: r.id,
                ttl_ms: r.ttl_ms,
                owner: r.owner,
                renewed_at: r.renewed_at,
                held: r.held.into_iter().collect(),
                waiting: r.waiting.into_iter().collect(),
            });
        let locks = scan_records::<LockRecord>(engine, &keys::locks_prefix())?
            .into_iter()
            .map(|r| Lock {
                name: r.name,
                holder: Holder {
                    lease: r.holder_lease,
                    token: r.token,
                },
                waiters: r.waiters.into_iter().collect(),
            });
        let applied = match engine
            .get(Cf::Meta, &keys::lock_applied_key())
            .map_err(|e| corrupt("applied index", e))?
        {
            None => 0,
            Some(v) => {
                let body = unseal(&v).map_err(|e| corrupt("applied index", e.message))?;
                u64::from_be_bytes(
                    body.try_into()
                        .map_err(|_| corrupt("applied index", "not 8 bytes"))?,
                )
            }
        };
        let mut inner = self.lock_inner();
        let now = self.read_clock(&mut inner);
        inner.state = LockState::restore(leases, locks, applied);
        // Every lease counts as renewed now: its real last renewal is unknown here.
        inner.seen = inner.state.leases().map(|l| (l.id, now)).collect();
        Ok(())
    }

    /// Applies a lock command committed at `index`, staging its records in `batch`.
    pub fn apply(
        &self,
        batch: &mut WriteBatch,
        index: u64,
        command: LockCommand,
    ) -> std::result::Result<Kind, Error> {
        let command = to_command(&command)?;
        let mut inner = self.lock_inner();
        let now = self.read_clock(&mut inner);
        let outcome = inner.state.apply(index, &command);
        for id in &outcome.changes.leases {
            match inner.state.lease(*id) {
                Some(l) => batch.put(
                    Cf::Meta,
                    keys::lock_lease_key(*id),
                    seal(&lease_record(l).encode_to_vec()),
                ),
                None => batch.delete(Cf::Meta, keys::lock_lease_key(*id)),
            }
        }
        for name in &outcome.changes.locks {
            match inner.state.lock(name) {
                Some(l) => batch.put(
                    Cf::Meta,
                    keys::lock_key(name),
                    seal(&lock_record(l).encode_to_vec()),
                ),
                None => batch.delete(Cf::Meta, keys::lock_key(name)),
            }
        }
        batch.put(
            Cf::Meta,
            keys::lock_applied_key(),
            seal(&inner.state.applied().to_be_bytes()),
        );
        match &outcome.result {
            Ok(Reply::LeaseGranted { lease, .. }) | Ok(Reply::KeptAlive { lease, .. }) => {
                inner.seen.insert(*lease, now);
            }
            _ => {}
        }
        if let Command::Revoke { lease } | Command::Expire { lease } = &command
            && outcome.result.is_ok()
        {
            inner.seen.remove(lease);
        }
        drop(inner);
        for g in &outcome.grants {
            // No receiver: nobody waits on this node.
            let _ = self.grants.send(g.clone());
        }
        let reply = outcome.result.map_err(lock_error)?;
        Ok(Kind::Lock(reply_to_proto(reply)))
    }

    /// Grants to waiters, as they are applied on this node.
    pub fn subscribe(&self) -> broadcast::Receiver<Grant> {
        self.grants.subscribe()
    }

    /// Reads the clock through the jump detector (every reading must, or a jump between two readings
    /// taken elsewhere would go unnoticed).
    fn read_clock(&self, inner: &mut Inner) -> Duration {
        let reading = inner.readings.observe(self.clock.now());
        if let Some(step) = reading.jumped {
            tracing::warn!(
                ?step,
                "the lock manager's clock jumped forward; no lease expires before one more TTL"
            );
        }
        reading.now
    }

    /// Since when `lease`'s TTL runs (see the module header), if it exists.
    fn running_since(
        inner: &Inner,
        lease: LeaseId,
        now: Duration,
        leading_since: Duration,
    ) -> Duration {
        inner
            .seen
            .get(&lease)
            .copied()
            .unwrap_or(now)
            .max(leading_since)
            .max(inner.readings.steady_since())
    }

    /// The leases whose TTL has run out on this node's clock, counting from the latest of their last
    /// applied keep-alive, `leading_since` (when this node became the meta leader) and the clock's last
    /// jump.
    pub fn expired(&self, leading_since: Duration) -> Vec<LeaseId> {
        let mut inner = self.lock_inner();
        let now = self.read_clock(&mut inner);
        let inner = &*inner;
        inner
            .state
            .leases()
            .filter(|l| {
                let since = Self::running_since(inner, l.id, now, leading_since);
                now.saturating_sub(since) > Duration::from_millis(l.ttl_ms)
            })
            .map(|l| l.id)
            .collect()
    }

    /// This node's clock, read through the jump detector.
    pub fn now(&self) -> Duration {
        let mut inner = self.lock_inner();
        self.read_clock(&mut inner)
    }

    /// The time left on `lease` by this node's clock (meaningful on the meta leader), if it exists.
    pub fn remaining(&self, lease: LeaseId, leading_since: Duration) -> Option<Duration> {
        let mut inner = self.lock_inner();
        let now = self.read_clock(&mut inner);
        let l = inner.state.lease(lease)?;
        let since = Self::running_since(&inner, lease, now, leading_since);
        Some((since + Duration::from_millis(l.ttl_ms)).saturating_sub(now))
    }

    /// Reads the state (linearizable after a `read_index` on the meta group). `f` must not call back
    /// into the host (its lock is not reentrant).
    pub fn read<T>(&self, f: impl FnOnce(&LockState) -> T) -> T {
        f(&self.lock_inner().state)
    }
}

/// Every sealed record under `prefix` of the meta group, decoded.
fn scan_records<M: prost::Message + Default>(
    engine: &dyn Engine,
    prefix: &[u8],
) -> Result<Vec<M>, ApplyError> {
    let end = keys::prefix_end(prefix);
    let mut out = Vec::new();
    for kv in engine
        .scan(Cf::Meta, prefix, end.as_deref())
        .map_err(|e| corrupt("scan", e))?
    {
        let (_, v) = kv.map_err(|e| corrupt("scan", e))?;
        let body = unseal(&v).map_err(|e| corrupt("record", e.message))?;
        out.push(M::decode(body).map_err(|e| corrupt("record", e))?);
    }
    Ok(out)
}

fn lease_record(l: &Lease) -> LeaseRecord {
    LeaseRecord {
        id: l.id,
        ttl_ms: l.ttl_ms,
        owner: l.owner.clone(),
        renewed_at: l.renewed_at,
        held: l.held.iter().cloned().collect(),
        waiting: l.waiting.iter().cloned().collect(),
    }
}

fn lock_record(l: &Lock) -> LockRecord {
    LockRecord {
        name: l.name.clone(),
        holder_lease: l.holder.lease,
        token: l.holder.token,
        waiters: l.waiters.iter().copied().collect(),
    }
}

fn to_command(c: &LockCommand) -> Result<Command> {
    use lock_command::Kind as K;
    let kind = K::try_from(c.kind)
        .map_err(|_| Error::invalid_input(format!("unknown lock command kind {}", c.kind)))?;
    Ok(match kind {
        K::GrantLease => Command::GrantLease {
            ttl_ms: c.ttl_ms,
            owner: c.owner.clone(),
        },
        K::KeepAlive => Command::KeepAlive { lease: c.lease },
        K::Revoke => Command::Revoke { lease: c.lease },
        K::Acquire => Command::Acquire {
            lease: c.lease,
            name: c.name.clone(),
            wait: c.wait,
        },
        K::Release => Command::Release {
            lease: c.lease,
            name: c.name.clone(),
        },
        K::CancelWait => Command::CancelWait {
            lease: c.lease,
            name: c.name.clone(),
        },
        K::Expire => Command::Expire { lease: c.lease },
    })
}

fn reply_to_proto(r: Reply) -> LockReply {
    let mut out = LockReply::default();
    match r {
        Reply::LeaseGranted { lease, ttl_ms } | Reply::KeptAlive { lease, ttl_ms } => {
            out.lease = lease;
            out.ttl_ms = ttl_ms;
        }
        Reply::Revoked { released } | Reply::Expired { released } => out.released = released,
        Reply::Acquired { token } => out.token = token,
        Reply::Queued { ahead } => out.ahead = Some(ahead as u64),
        Reply::Released | Reply::WaitCancelled => {}
    }
    out
}

/// The typed error of a refused lock command.
pub fn lock_error(e: LockError) -> Error {
    let code = match &e {
        LockError::InvalidName(_) | LockError::InvalidTtl(_) | LockError::InvalidOwner => {
            ErrorCode::InvalidInput
        }
        LockError::LeaseNotFound(_) => ErrorCode::LeaseNotFound,
        LockError::Held { .. } => ErrorCode::LockHeld,
        LockError::NotHolder { .. } | LockError::NotWaiting { .. } => ErrorCode::LockNotHeld,
        LockError::TooManyLocks | LockError::TooManyWaiters | LockError::TooManyLeases => {
            ErrorCode::LockLimitExceeded
        }
        LockError::OutOfOrder { .. } => ErrorCode::InternalError,
    };
    Error::new(code, e.to_string())
}

#[cfg(test)]
#[path = "locks_tests.rs"]
mod tests;
