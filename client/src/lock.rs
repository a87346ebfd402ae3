//! Leases and locks: [`LockClient`] over the cluster's `Lock` service.
//!
//! ```no_run
//! # async fn demo(client: trestle_client::TableClient) -> trestle_client::Result<()> {
//! use std::time::Duration;
//! let locks = client.locks();
//! let lease = locks.lease(Duration::from_secs(10)).await?;       // kept alive in the background
//! let guard = lease.acquire("jobs/nightly", Duration::from_secs(5)).await?;
//! // Pass guard.token() with every write the lock protects (Table::with_fencing); a resource that
//! // has seen a higher token refuses it.
//! if lease.is_lost() { /* stop: someone else may hold the lock now */ }
//! guard.release().await?;
//! lease.revoke().await?;
//! # Ok(()) }
//! ```
//!
//! **When is a lease still mine?** The holder counts from when it *sent* the last keep-alive that was
//! acknowledged, and gives the lease up `ttl − margin` later (margin: 10 % of the TTL plus 500 ms,
//! [`Lease::valid_for`]). The meta leader counts from when it *applied* that keep-alive, which is later,
//! so the holder gives up first unless the two clocks' rates differ by more than the margin over one
//! TTL. The keep-alive task renews every third of the TTL; [`Lease::lost`] fires when the lease is
//! gone (refused as unknown, or not renewed in time), after which the lock's fencing token must no
//! longer be used.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::transport::Channel;
use trestle_proto::auth::method;
use trestle_proto::lock as pb;
use trestle_proto::lock::lock_client::LockClient as GrpcLockClient;
use trestle_types::ErrorCode;

use crate::client::{Idempotency, TableClient};
use crate::error::Result;

/// The lock calls of a [`TableClient`] (same nodes, credentials and retry rules).
#[derive(Clone, Debug)]
pub struct LockClient {
    client: TableClient,
}

/// A lock's state as the meta leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub name: String,
    /// The holding lease; `None` when the lock is free.
    pub holder: Option<u64>,
    pub holder_owner: String,
    pub token: u64,
    pub waiters: Vec<u64>,
    pub ttl: Duration,
    /// Time left on the holder's lease by the meta leader's clock.
    pub remaining: Duration,
}

impl From<pb::LockInfo> for LockInfo {
    fn from(i: pb::LockInfo) -> Self {
        LockInfo {
            name: i.name,
            holder: (i.holder_lease != 0).then_some(i.holder_lease),
            holder_owner: i.holder_owner,
            token: i.token,
            waiters: i.waiters,
            ttl: Duration::from_millis(i.ttl_ms),
            remaining: Duration::from_millis(i.remaining_ms),
        }
    }
}

impl TableClient {
    /// Leases and locks on this client's account.
    pub fn locks(&self) -> LockClient {
        LockClient {
            client: self.clone(),
        }
    }
}

fn grpc(channel: Channel) -> GrpcLockClient<Channel> {
    GrpcLockClient::new(channel)
}

impl LockClient {
    async fn call<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        msg: Req,
        idempotency: Idempotency,
        deadline: Instant,
        mut f: F,
    ) -> Result<Resp>
    where
        Req: prost::Message + Clone,
        F: FnMut(GrpcLockClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.client
            .call_on(grpc, None, idempotency, deadline, |c| {
                f(c, self.client.request(method, msg.clone()))
            })
            .await
    }

    /// A new lease of `ttl` (1 s to 5 min), kept alive by a background task until revoked or dropped.
    pub async fn lease(&self, ttl: Duration) -> Result<Lease> {
        self.lease_with_owner(ttl, &default_owner()).await
    }

    /// [`LockClient::lease`] with an owner label shown by `describe` and `trestle ctl locks`.
    pub async fn lease_with_owner(&self, ttl: Duration, owner: &str) -> Result<Lease> {
        let sent = Instant::now();
        let msg = pb::GrantLeaseRequest {
            account: self.client.account().to_string(),
            ttl_ms: ttl.as_millis() as u64,
            owner: owner.to_string(),
        };
        let resp = self
            .call(
                method::GRANT_LEASE,
                msg,
                Idempotency::Write,
                self.client.deadline(),
                |mut c, r| async move { c.grant_lease(r).await },
            )
            .await?;
        let ttl = Duration::from_millis(resp.ttl_ms);
        let (lost_tx, lost) = watch::channel(false);
        let valid_until = Arc::new(Mutex::new(sent + Lease::valid_for(ttl)));
        let keeper = tokio::spawn(keep_alive(
            self.clone(),
            resp.lease,
            ttl,
            valid_until.clone(),
            lost_tx,
        ));
        Ok(Lease {
            locks: self.clone(),
            id: resp.lease,
            ttl,
            valid_until,
            lost,
            keeper,
        })
    }

    /// The lock `name` as the meta leader sees it.
    pub async fn describe(&self, name: &str) -> Result<LockInfo> {
        let msg = pb::DescribeRequest {
            account: self.client.account().to_string(),
            name: name.to_string(),
        };
        let info = self
            .call(
                method::DESCRIBE,
                msg,
                Idempotency::Read,
                self.client.deadline(),
                |mut c, r| async move { c.describe(r).await },
            )
            .await?;
        Ok(info.into())
    }

    /// Every held lock whose name starts with `prefix`, in name order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        let msg = pb::ListRequest {
            account: self.client.account().to_string(),
            prefix: prefix.to_string(),
        };
        let resp = self
            .call(
                method::LIST,
                msg,
                Idempotency::Read,
                self.client.deadline(),
                |mut c, r| async move { c.list(r).await },
            )
            .await?;
        Ok(resp.locks.into_iter().map(LockInfo::from).collect())
    }
}

/// A lease: a client session under which locks are held. Kept alive in the background; dropping it
/// stops the keep-alives (the lease then expires after its TTL) — call [`Lease::revoke`] to end it now.
#[derive(Debug)]
pub struct Lease {
    locks: LockClient,
    id: u64,
    ttl: Duration,
    valid_until: Arc<Mutex<Instant>>,
    lost: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// A held lock: its fencing token, and whether the lease under it is still valid.
#[derive(Debug)]
pub struct LockGuard {
    locks: LockClient,
    lease: u64,
    name: String,
    token: u64,
    lost: watch::Receiver<bool>,
}

impl Lease {
    /// How long after sending an acknowledged keep-alive the holder may count on the lease.
    pub fn valid_for(ttl: Duration) -> Duration {
        ttl.saturating_sub(ttl / 10 + Duration::from_millis(500))
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Until when the holder may count on the lease (see the module header).
    pub fn valid_until(&self) -> Instant {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the lease is gone or past its validity: its locks must no longer be used.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow() || Instant::now() >= self.valid_until()
    }

    /// Resolves when the lease is lost.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Takes `name`, waiting up to `wait` in its queue; `LockHeld` if it is still held then.
    pub async fn acquire(&self, name: &str, wait: Duration) -> Result<LockGuard> {
        let msg = pb::AcquireRequest {
            account: self.locks.client.account().to_string(),
            lease: self.id,
            name: name.to_string(),
            wait_ms: wait.as_millis() as u64,
        };
        let deadline = Instant::now() + wait + self.locks.client.config().deadline;
        // Safe to repeat: acquiring a lock the lease holds returns its grant, and a lease already in
        // the queue keeps its place (the state machine makes Acquire idempotent per lease and name).
        let attempt = wait + self.locks.client.config().attempt_timeout;
        let resp = self
            .locks
            .call(
                method::ACQUIRE,
                msg,
                Idempotency::RepeatableWithin(attempt),
                deadline,
                |mut c, r| async move { c.acquire(r).await },
            )
            .await?;
        Ok(LockGuard {
            locks: self.locks.clone(),
            lease: self.id,
            name: name.to_string(),
            token: resp.token,
            lost: self.lost.clone(),
        })
    }

    /// Takes `name` only if it is free (or already held by this lease).
    pub async fn try_acquire(&self, name: &str) -> Result<LockGuard> {
        self.acquire(name, Duration::ZERO).await
    }

    /// Ends the lease now, releasing every lock held under it.
    pub async fn revoke(self) -> Result<Vec<String>> {
        self.keeper.abort();
        let msg = pb::RevokeRequest {
            account: self.locks.client.account().to_string(),
            lease: self.id,
        };
        let resp = self
            .locks
            .call(
                method::REVOKE,
                msg,
                Idempotency::Write,
                self.locks.client.deadline(),
                |mut c, r| async move { c.revoke(r).await },
            )
            .await?;
        Ok(resp.released)
    }
}

impl LockGuard {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token: pass it with every write the lock protects.
    pub fn token(&self) -> u64 {
        self.token
    }

    pub fn lease(&self) -> u64 {
        self.lease
    }

    /// A [`crate::Fencing`] for [`crate::Table::with_fencing`].
    pub fn fencing(&self) -> crate::Fencing {
        crate::Fencing {
            lock: self.name.clone(),
            token: self.token,
        }
    }

    /// Resolves when the lease under the lock is lost.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Releases the lock (the next waiter gets it with a higher token).
    pub async fn release(self) -> Result<()> {
        let msg = pb::ReleaseRequest {
            account: self.locks.client.account().to_string(),
            lease: self.lease,
            name: self.name.clone(),
        };
        self.locks
            .call(
                method::RELEASE,
                msg,
                Idempotency::Write,
                self.locks.client.deadline(),
                |mut c, r| async move { c.release(r).await },
            )
            .await?;
        Ok(())
    }
}

/// Renews `lease` every third of its TTL; marks it lost when it is refused or not renewed in time.
async fn keep_alive(
    locks: LockClient,
    lease: u64,
    ttl: Duration,
    valid_until: Arc<Mutex<Instant>>,
    lost: watch::Sender<bool>,
) {
    let every = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let until = *valid_until.lock().unwrap_or_else(PoisonError::into_inner);
        if Instant::now() >= until {
            let _ = lost.send(true);
            return;
        }
        let sent = Instant::now();
        let msg = pb::KeepAliveRequest {
            account: locks.client.account().to_string(),
            lease,
        };
        match locks
            .call(
                method::KEEP_ALIVE,
                msg,
                Idempotency::Read,
                until,
                |mut c, r| async move { c.keep_alive(r).await },
            )
            .await
        {
            Ok(_) => {
                *valid_until.lock().unwrap_or_else(PoisonError::into_inner) =
                    sent + Lease::valid_for(ttl);
            }
            Err(e) if e.code() == Some(ErrorCode::LeaseNotFound) => {
                let _ = lost.send(true);
                return;
            }
            Err(e) => tracing::debug!(lease, error = %e, "keep-alive failed; retrying"),
        }
    }
}

fn default_owner() -> String {
    format!("pid {}", std::process::id())
}
