//! The lock workloads (issue 8), the same for both systems: Trestle's lock manager through the SDK's
//! [`LockClient`] (signed gRPC, like the table workloads), and etcd's lock service ([`crate::etcd`]).
//!
//! - **`lock`** (uncontended): each worker holds its own lease and loops acquire + release on a lock of
//!   its own (`bench/<run>/w<worker>`). One operation is one acquire + release; its latency is both
//!   calls. The lease is granted on the worker's first operation (in the warm-up) and revoked at the end.
//! - **`lock-handoff`** (contended): every worker loops acquire + (hold) + release on ONE lock
//!   (`bench/<run>/handoff`). A **hand-off** is a grant to a worker that was already waiting when the
//!   previous holder sent its release; its latency runs from the moment the holder *sends* release to
//!   the moment the next holder's acquire *returns*, both read from one monotonic clock in this process
//!   ([`HandoffClock`]). A grant to a worker whose acquire was sent after that release (the lock may
//!   have been free) is not a hand-off: it counts as an operation, untimed. So for this workload
//!   operations are acquisitions, "entities" are hand-offs, and the latency percentiles are the
//!   hand-offs'.
//!
//! Both systems grant in FIFO order (Trestle: a queue per lock; etcd: creation revisions), so with `C`
//! workers each waits behind `C − 1` others and hand-offs per second measure how fast the lock moves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trestle_client::{Lease, LockClient};

use crate::driver::{Done, OpError, sdk_error};
use crate::etcd::EtcdLocks;

/// Lease TTL for the workers of both systems (Trestle's SDK renews its lease every third of it; an
/// etcd lease is not renewed, so a round must end sooner: the runner revokes it at the end anyway).
pub const LEASE_TTL: Duration = Duration::from_secs(120);
/// How long one Trestle acquire waits in the queue before the server answers `LockHeld` (then it is
/// counted as an error and asked again). Below the node's request timeout (10 s by default).
const ACQUIRE_WAIT: Duration = Duration::from_secs(5);

/// The shared clock of a hand-off run: when the current holder sent its release.
///
/// Nanoseconds since `base`, plus one (zero: no release pending). Only the holder writes it and only
/// the next holder takes it, and the lock orders the two, so one atomic suffices.
#[derive(Debug)]
pub struct HandoffClock {
    base: Instant,
    released_at: AtomicU64,
}

impl Default for HandoffClock {
    fn default() -> Self {
        HandoffClock::new()
    }
}

impl HandoffClock {
    pub fn new() -> HandoffClock {
        HandoffClock {
            base: Instant::now(),
            released_at: AtomicU64::new(0),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64 + 1
    }

    /// The holder is about to send its release, at `at`.
    pub fn releasing(&self, at: Instant) {
        self.released_at.store(self.stamp(at), Ordering::SeqCst);
    }

    /// The release sent at the last [`HandoffClock::releasing`] failed: there is no hand-off to time.
    pub fn release_failed(&self) {
        self.released_at.store(0, Ordering::SeqCst);
    }

    /// A worker that sent its acquire at `acquire_sent` was granted the lock at `granted`: the hand-off
    /// latency, if it was one (a release was pending and sent after this worker started waiting).
    pub fn granted(&self, acquire_sent: Instant, granted: Instant) -> Option<Duration> {
        let released = self.released_at.swap(0, Ordering::SeqCst);
        if released == 0 || released < self.stamp(acquire_sent) {
            return None;
        }
        let released = self.base + Duration::from_nanos(released - 1);
        Some(granted.saturating_duration_since(released))
    }
}

/// One worker's lock session on either system.
pub struct LockConn {
    system: System,
    /// The lock this worker takes: its own, or the one every worker contends for.
    name: String,
    /// Set for the hand-off workload.
    handoffs: Option<Arc<HandoffClock>>,
    hold: Duration,
}

enum System {
    Trestle {
        locks: LockClient,
        lease: Option<Lease>,
    },
    Etcd {
        locks: Box<EtcdLocks>,
        lease: Option<i64>,
    },
}

impl LockConn {
    pub fn trestle(locks: LockClient, name: String) -> LockConn {
        LockConn::new(System::Trestle { locks, lease: None }, name)
    }

    pub fn etcd(locks: EtcdLocks, name: String) -> LockConn {
        let locks = Box::new(locks);
        LockConn::new(System::Etcd { locks, lease: None }, name)
    }

    fn new(system: System, name: String) -> LockConn {
        LockConn {
            system,
            name,
            handoffs: None,
            hold: Duration::ZERO,
        }
    }

    /// Contends with every worker sharing `clock` (the hand-off workload), holding the lock `hold`.
    pub fn contended(mut self, clock: Arc<HandoffClock>, hold: Duration) -> LockConn {
        self.handoffs = Some(clock);
        self.hold = hold;
        self
    }

    /// One acquire + release (see the module header for what is timed).
    pub async fn cycle(&mut self) -> Result<Done, OpError> {
        let acquire_sent = Instant::now();
        let held = self.acquire().await?;
        let handoff = self
            .handoffs
            .as_ref()
            .map(|c| c.granted(acquire_sent, Instant::now()));
        if !self.hold.is_zero() {
            tokio::time::sleep(self.hold).await;
        }
        if let Some(c) = &self.handoffs {
            c.releasing(Instant::now());
        }
        if let Err(e) = self.release(held).await {
            if let Some(c) = &self.handoffs {
                c.release_failed();
            }
            return Err(e);
        }
        Ok(match handoff {
            None => Done::call(1),
            Some(Some(latency)) => Done::timed(1, latency),
            Some(None) => Done::untimed(0),
        })
    }

    /// Takes the lock (granting this worker's lease first if it has none): what releases it.
    async fn acquire(&mut self) -> Result<Held, OpError> {
        match &mut self.system {
            System::Trestle { locks, lease: slot } => {
                let lease = match slot.take() {
                    Some(l) => l,
                    None => locks.lease(LEASE_TTL).await.map_err(sdk_error)?,
                };
                let lease = slot.insert(lease);
                let guard = lease
                    .acquire(&self.name, ACQUIRE_WAIT)
                    .await
                    .map_err(sdk_error)?;
                Ok(Held::Trestle(guard))
            }
            System::Etcd { locks, lease } => {
                let id = match lease {
                    Some(id) => *id,
                    None => *lease.insert(locks.grant(LEASE_TTL).await?),
                };
                Ok(Held::Etcd(locks.lock(&self.name, id).await?))
            }
        }
    }

    async fn release(&mut self, held: Held) -> Result<(), OpError> {
        match (held, &mut self.system) {
            (Held::Trestle(guard), _) => guard.release().await.map_err(sdk_error),
            (Held::Etcd(key), System::Etcd { locks, .. }) => locks.unlock(key).await,
            (Held::Etcd(_), System::Trestle { .. }) => Err(OpError::new("etcd key on Trestle")),
        }
    }

    /// Ends the worker's lease (releasing anything still held under it).
    pub async fn finish(&mut self) {
        match &mut self.system {
            System::Trestle { lease, .. } => {
                if let Some(l) = lease.take() {
                    let _ = l.revoke().await;
                }
            }
            System::Etcd { locks, lease } => {
                if let Some(id) = lease.take() {
                    let _ = locks.revoke(id).await;
                }
            }
        }
    }
}

/// A held lock: the SDK's guard, or etcd's ownership key.
enum Held {
    Trestle(trestle_client::LockGuard),
    Etcd(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(clock: &HandoffClock, ms: u64) -> Instant {
        clock.base + Duration::from_millis(ms)
    }

    #[test]
    fn a_waiter_granted_after_the_release_is_a_hand_off_timed_from_the_release() {
        let c = HandoffClock::new();
        c.releasing(at(&c, 10));
        // The waiter sent its acquire at 4 ms, before the release; granted at 13 ms.
        assert_eq!(
            c.granted(at(&c, 4), at(&c, 13)),
            Some(Duration::from_millis(3))
        );
        // Taken: the next grant without a new release is not a hand-off.
        assert_eq!(c.granted(at(&c, 4), at(&c, 20)), None);
    }

    #[test]
    fn a_grant_without_a_pending_release_is_not_a_hand_off() {
        let c = HandoffClock::new();
        assert_eq!(c.granted(at(&c, 0), at(&c, 5)), None, "first grant");
        c.releasing(at(&c, 10));
        // This worker asked after the release was sent: the lock may have been free, so its wait says
        // nothing about hand-offs.
        assert_eq!(c.granted(at(&c, 11), at(&c, 12)), None);
    }

    #[test]
    fn a_failed_release_leaves_nothing_to_time() {
        let c = HandoffClock::new();
        c.releasing(at(&c, 10));
        c.release_failed();
        assert_eq!(c.granted(at(&c, 1), at(&c, 30)), None);
    }

    #[test]
    fn a_release_at_the_clock_base_still_counts() {
        let c = HandoffClock::new();
        c.releasing(c.base);
        assert_eq!(
            c.granted(c.base, at(&c, 2)),
            Some(Duration::from_millis(2)),
            "sent at the same instant as the release: it was waiting"
        );
    }
}
