//! The lock state and its transitions (see the crate header for the model).
//!
//! Invariants, checked by the property tests after every command:
//! - a lock record exists only while it has a holder; a held lock's holder is a live lease whose `held`
//!   set names it, and a lease's `held`/`waiting` sets name exactly the locks that list it;
//! - a lease waits for a lock at most once, never for a lock it holds, and a lock with no holder has no
//!   waiters (a release hands the lock to the first waiter at once);
//! - the tokens of successive grants of one lock strictly increase (each is the index of the granting
//!   command, and commands apply in index order, which [`LockState::apply`] enforces).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::LockError;
use crate::names::{validate_name, validate_owner, validate_ttl};

/// A lease's id: the Raft index of the command that granted it.
pub type LeaseId = u64;
/// A fencing token: the Raft index of the command that granted the lock.
pub type Token = u64;

/// Leases alive at once, at most.
pub const MAX_LEASES: usize = 100_000;
/// Locks one lease holds or waits for, at most.
pub const MAX_LOCKS_PER_LEASE: usize = 64;
/// Waiters of one lock, at most.
pub const MAX_WAITERS_PER_LOCK: usize = 1024;

/// A replicated lock command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    GrantLease {
        ttl_ms: u64,
        owner: String,
    },
    KeepAlive {
        lease: LeaseId,
    },
    Revoke {
        lease: LeaseId,
    },
    /// Take `name` under `lease`; when another lease holds it, queue (`wait`) or fail with `Held`.
    Acquire {
        lease: LeaseId,
        name: String,
        wait: bool,
    },
    Release {
        lease: LeaseId,
        name: String,
    },
    /// Leave the queue of `name` (a waiter's deadline passed, or it gave up).
    CancelWait {
        lease: LeaseId,
        name: String,
    },
    /// Proposed by the meta leader only, when the lease's TTL ran out on its clock.
    Expire {
        lease: LeaseId,
    },
}

/// A command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    LeaseGranted {
        lease: LeaseId,
        ttl_ms: u64,
    },
    KeptAlive {
        lease: LeaseId,
        ttl_ms: u64,
    },
    /// The lease is gone; these locks were released (and possibly handed to waiters).
    Revoked {
        released: Vec<String>,
    },
    Expired {
        released: Vec<String>,
    },
    /// The lock is held under the lease with this token (also when it already was).
    Acquired {
        token: Token,
    },
    /// The lease waits; `ahead` waiters are before it.
    Queued {
        ahead: usize,
    },
    Released,
    WaitCancelled,
}

/// A lock handed to a waiter by the command (a release, revoke or expiry of its holder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub lease: LeaseId,
    pub token: Token,
}

/// What the host must persist after a command: the records of these leases and locks as they now are
/// in the state (absent there: delete the record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub leases: BTreeSet<LeaseId>,
    pub locks: BTreeSet<String>,
}

/// The result of applying one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: Result<Reply, LockError>,
    pub grants: Vec<Grant>,
    pub changes: Changes,
}

/// A client session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl_ms: u64,
    pub owner: String,
    /// The index of the last committed keep-alive (the grant's index before any).
    pub renewed_at: u64,
    pub held: BTreeSet<String>,
    pub waiting: BTreeSet<String>,
}

/// Who holds a lock, and since which command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub lease: LeaseId,
    pub token: Token,
}

/// A held lock and its FIFO queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub name: String,
    pub holder: Holder,
    pub waiters: VecDeque<LeaseId>,
}

/// Every lease and held lock, and the index of the last applied command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockState {
    leases: BTreeMap<LeaseId, Lease>,
    locks: BTreeMap<String, Lock>,
    applied: u64,
}

impl LockState {
    pub fn new() -> LockState {
        LockState::default()
    }

    /// The state the host persisted: its lease and lock records and the index they were written at.
    pub fn restore(
        leases: impl IntoIterator<Item = Lease>,
        locks: impl IntoIterator<Item = Lock>,
        applied: u64,
    ) -> LockState {
        LockState {
            leases: leases.into_iter().map(|l| (l.id, l)).collect(),
            locks: locks.into_iter().map(|l| (l.name.clone(), l)).collect(),
            applied,
        }
    }

    pub fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn lock(&self, name: &str) -> Option<&Lock> {
        self.locks.get(name)
    }

    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// Held locks in name order.
    pub fn locks(&self) -> impl Iterator<Item = &Lock> {
        self.locks.values()
    }

    /// The index of the last command applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies the command committed at `index` (indexes must grow).
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        let mut out = Outcome {
            result: Ok(Reply::Released),
            grants: Vec::new(),
            changes: Changes::default(),
        };
        if index <= self.applied {
            out.result = Err(LockError::OutOfOrder {
                index,
                applied: self.applied,
            });
            return out;
        }
        self.applied = index;
        out.result = self.run(index, command, &mut out);
        out
    }

    fn run(
        &mut self,
        index: u64,
        command: &Command,
        out: &mut Outcome,
    ) -> Result<Reply, LockError> {
        match command {
            Command::GrantLease { ttl_ms, owner } => {
                validate_ttl(*ttl_ms)?;
                validate_owner(owner)?;
                if self.leases.len() >= crate::MAX_LEASES {
                    return Err(LockError::TooManyLeases);
                }
                self.leases.insert(
                    index,
                    Lease {
                        id: index,
                        ttl_ms: *ttl_ms,
                        owner: owner.clone(),
                        renewed_at: index,
                        held: BTreeSet::new(),
                        waiting: BTreeSet::new(),
                    },
                );
                out.changes.leases.insert(index);
                Ok(Reply::LeaseGranted {
                    lease: index,
                    ttl_ms: *ttl_ms,
                })
            }
            Command::KeepAlive { lease } => {
                let l = self
                    .leases
                    .get_mut(lease)
                    .ok_or(LockError::LeaseNotFound(*lease))?;
                l.renewed_at = index;
                out.changes.leases.insert(*lease);
                Ok(Reply::KeptAlive {
                    lease: *lease,
                    ttl_ms: l.ttl_ms,
                })
            }
            Command::Revoke { lease } => Ok(Reply::Revoked {
                released: self.end_lease(index, *lease, out)?,
            }),
            Command::Expire { lease } => Ok(Reply::Expired {
                released: self.end_lease(index, *lease, out)?,
            }),
            Command::Acquire { lease, name, wait } => {
                validate_name(name)?;
                self.acquire(index, *lease, name, *wait, out)
            }
            Command::Release { lease, name } => {
                validate_name(name)?;
                self.release(index, *lease, name, out)?;
                Ok(Reply::Released)
            }
            Command::CancelWait { lease, name } => {
                validate_name(name)?;
                let l = self
                    .leases
                    .get_mut(lease)
                    .ok_or(LockError::LeaseNotFound(*lease))?;
                if !l.waiting.remove(name) {
                    return Err(LockError::NotWaiting {
                        name: name.clone(),
                        lease: *lease,
                    });
                }
                if let Some(lock) = self.locks.get_mut(name) {
                    lock.waiters.retain(|w| w != lease);
                }
                out.changes.leases.insert(*lease);
                out.changes.locks.insert(name.clone());
                Ok(Reply::WaitCancelled)
            }
        }
    }

    fn acquire(
        &mut self,
        index: u64,
        lease: LeaseId,
        name: &str,
        wait: bool,
        out: &mut Outcome,
    ) -> Result<Reply, LockError> {
        let l = self
            .leases
            .get(&lease)
            .ok_or(LockError::LeaseNotFound(lease))?;
        let busy = l.held.len() + l.waiting.len();
        match self.locks.get_mut(name) {
            Some(lock) if lock.holder.lease == lease => Ok(Reply::Acquired {
                token: lock.holder.token,
            }),
            Some(lock) => {
                if let Some(ahead) = lock.waiters.iter().position(|w| *w == lease) {
                    return Ok(Reply::Queued { ahead });
                }
                if !wait {
                    return Err(LockError::Held {
                        name: name.to_string(),
                        holder: lock.holder.lease,
                    });
                }
                if busy >= crate::MAX_LOCKS_PER_LEASE {
                    return Err(LockError::TooManyLocks);
                }
                if lock.waiters.len() >= crate::MAX_WAITERS_PER_LOCK {
                    return Err(LockError::TooManyWaiters);
                }
                lock.waiters.push_back(lease);
                let ahead = lock.waiters.len() - 1;
                if let Some(l) = self.leases.get_mut(&lease) {
                    l.waiting.insert(name.to_string());
                }
                out.changes.leases.insert(lease);
                out.changes.locks.insert(name.to_string());
                Ok(Reply::Queued { ahead })
            }
            None => {
                if busy >= crate::MAX_LOCKS_PER_LEASE {
                    return Err(LockError::TooManyLocks);
                }
                self.locks.insert(
                    name.to_string(),
                    Lock {
                        name: name.to_string(),
                        holder: Holder {
                            lease,
                            token: index,
                        },
                        waiters: VecDeque::new(),
                    },
                );
                if let Some(l) = self.leases.get_mut(&lease) {
                    l.held.insert(name.to_string());
                }
                out.changes.leases.insert(lease);
                out.changes.locks.insert(name.to_string());
                Ok(Reply::Acquired { token: index })
            }
        }
    }

    /// Releases `name` held by `lease` and hands it to the first waiter, if any.
    fn release(
        &mut self,
        index: u64,
        lease: LeaseId,
        name: &str,
        out: &mut Outcome,
    ) -> Result<(), LockError> {
        if !self.leases.contains_key(&lease) {
            return Err(LockError::LeaseNotFound(lease));
        }
        let holds = self
            .locks
            .get(name)
            .is_some_and(|lock| lock.holder.lease == lease);
        if !holds {
            return Err(LockError::NotHolder {
                name: name.to_string(),
                lease,
            });
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.held.remove(name);
        }
        out.changes.leases.insert(lease);
        out.changes.locks.insert(name.to_string());
        let next = self
            .locks
            .get_mut(name)
            .and_then(|lock| lock.waiters.pop_front());
        match next {
            Some(next) => {
                if let Some(lock) = self.locks.get_mut(name) {
                    lock.holder = Holder {
                        lease: next,
                        token: index,
                    };
                }
                if let Some(l) = self.leases.get_mut(&next) {
                    l.waiting.remove(name);
                    l.held.insert(name.to_string());
                }
                out.changes.leases.insert(next);
                out.grants.push(Grant {
                    name: name.to_string(),
                    lease: next,
                    token: index,
                });
            }
            None => {
                self.locks.remove(name);
            }
        }
        Ok(())
    }

    /// Removes `lease`: releases what it holds (handing each lock on) and leaves every queue.
    fn end_lease(
        &mut self,
        index: u64,
        lease: LeaseId,
        out: &mut Outcome,
    ) -> Result<Vec<String>, LockError> {
        let l = self
            .leases
            .get(&lease)
            .ok_or(LockError::LeaseNotFound(lease))?
            .clone();
        for name in &l.waiting {
            if let Some(lock) = self.locks.get_mut(name) {
                lock.waiters.retain(|w| *w != lease);
            }
            out.changes.locks.insert(name.clone());
        }
        let released: Vec<String> = l.held.iter().cloned().collect();
        for name in &released {
            self.release(index, lease, name, out)?;
        }
        self.leases.remove(&lease);
        out.changes.leases.insert(lease);
        Ok(released)
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
