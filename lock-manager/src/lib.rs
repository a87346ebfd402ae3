//! Lease locks with fencing tokens: the deterministic lock state machine Trestle's meta group hosts.
//!
//! Clients hold **leases** (a TTL and an owner label; a client session) and take **locks** by name under
//! a lease; a lock has at most one holder and a FIFO queue of waiters. Every grant carries a **fencing
//! token**: the Raft index of the command that granted it, so tokens only grow — across holders, leader
//! changes and restarts — and a resource that remembers the highest token it has accepted can refuse a
//! holder that lost its lock without knowing it (see ARCHITECTURE.md, "Lock manager").
//!
//! [`LockState::apply`] is pure: no IO, no clock, no randomness. Time enters only through commands:
//! the meta leader proposes [`Command::Expire`] for a lease whose TTL ran out on its own monotonic clock
//! since the last keep-alive it saw committed (and never sooner than one TTL after it became leader, since
//! it cannot know when the previous leader last renewed); waiting with a deadline is a
//! [`Command::CancelWait`] proposed when the deadline passes. Followers never expire anything.
//!
//! The host persists the state: each applied command reports which leases and locks it changed
//! ([`Changes`]), the host writes those records (and deletes the removed ones) in the same batch as the
//! apply, and rebuilds the state with [`LockState::restore`] after a restart or a snapshot.

mod names;
mod state;

pub use names::{
    MAX_NAME_BYTES, MAX_OWNER_BYTES, MAX_TTL_MS, MIN_TTL_MS, RESERVED_PREFIX, validate_name,
    validate_owner, validate_ttl,
};
pub use state::{
    Changes, Command, Grant, Holder, Lease, LeaseId, Lock, LockState, MAX_LEASES,
    MAX_LOCKS_PER_LEASE, MAX_WAITERS_PER_LOCK, Outcome, Reply, Token,
};

/// Why a lock command was refused. Every variant is a result of the command and the state (the same
/// on every replica), never an internal failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("invalid lock name {0}")]
    InvalidName(String),
    #[error("a lease TTL must be between {MIN_TTL_MS} and {MAX_TTL_MS} ms, not {0}")]
    InvalidTtl(u64),
    #[error("an owner label is at most {MAX_OWNER_BYTES} bytes of printable ASCII")]
    InvalidOwner,
    #[error("lease {0} does not exist (it expired or was revoked)")]
    LeaseNotFound(LeaseId),
    #[error("lock {name} is held by lease {holder}")]
    Held { name: String, holder: LeaseId },
    #[error("lease {lease} does not hold lock {name}")]
    NotHolder { name: String, lease: LeaseId },
    #[error("lease {lease} is not waiting for lock {name}")]
    NotWaiting { name: String, lease: LeaseId },
    #[error("a lease holds or waits for at most {MAX_LOCKS_PER_LEASE} locks")]
    TooManyLocks,
    #[error("a lock has at most {MAX_WAITERS_PER_LOCK} waiters")]
    TooManyWaiters,
    #[error("the lock manager holds at most {MAX_LEASES} leases")]
    TooManyLeases,
    #[error("command at index {index} applied after index {applied}")]
    OutOfOrder { index: u64, applied: u64 },
}
