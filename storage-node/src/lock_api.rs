//! The public gRPC `trestle.lock.v1.Lock` service, served by every node: each call runs on the meta
//! group's leader, forwarded there like table calls (see `cluster`), and acts in the caller's account.
//!
//! - **Who**: callers authenticate as for `TableService` (`grpc_auth`); locks need full rights in the
//!   account (Shared Key, or a peer forwarding for it). A SAS grants no lock rights.
//! - **Acquire with a wait**: the node proposes a waiting acquire; if the lock is held, the lease joins its
//!   FIFO queue and the call waits (at most `wait_ms`, and never past the node's request timeout) for the
//!   grant to be applied. When the wait runs out the node proposes `CancelWait`; if that finds the lease no
//!   longer waiting, the grant won the race and its token is returned.
//! - **Acquire is idempotent** per lease and name (a held lock returns its grant, a queued lease keeps
//!   its place), so a forwarded acquire whose meta leader died mid-wait is retried on the new one.
//! - **Expiry** is the meta leader's ([`run_expiry`]).
//! - Errors are typed: `InvalidInput` (name, TTL, owner), `LeaseNotFound`, `LockHeld`, `LockNotHeld`,
//!   `LockLimitExceeded`, with the code in `x-trestle-error-code` as for every call.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use trestle_proto::auth::method;
use trestle_proto::internal::{LockCommand, LockReply, lock_command::Kind as K};
use trestle_proto::lock as pb;
use trestle_proto::lock::lock_client::LockClient;
use trestle_proto::lock::lock_server::{Lock, LockServer};
use trestle_replication::{RaftNode, Role};
use trestle_rest_gateway::auth::Credential;
use trestle_types::{Error, ErrorCode, Result};

use crate::cluster::{ClusterTableService, Retry};
use crate::forward::{Link, error_from_status};
use crate::grpc_api::status_from_error;
use crate::grpc_auth::Authenticator;
use crate::locks::{LockHost, scoped, unscoped};
use crate::ranges::META_RANGE_ID;
use crate::tables::LocalTables;

/// The Lock service of one node.
pub struct LockService {
    cluster: Arc<ClusterTableService>,
    local: Arc<LocalTables>,
    host: Arc<LockHost>,
    auth: Arc<Authenticator>,
    default_account: String,
    /// The longest a waiting acquire is held on this node.
    max_wait: Duration,
    leadership: Arc<Leadership>,
}

/// Since when this node has led the meta group, on the lock host's clock (None: not leading).
#[derive(Default)]
pub struct Leadership(std::sync::Mutex<Option<(u64, Duration)>>);

impl Leadership {
    /// Since when this node has led the meta group, if it does.
    pub fn since(&self) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|(_, t)| t)
    }

    /// Records the meta group's current role and term; returns since when this node leads it.
    fn observe(&self, leading_term: Option<u64>, now: Duration) -> Option<Duration> {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (leading_term, *g) {
            (None, _) => *g = None,
            (Some(term), Some((t, _))) if t == term => {}
            (Some(term), _) => *g = Some((term, now)),
        }
        g.map(|(_, t)| t)
    }
}

impl LockService {
    pub fn new(
        cluster: Arc<ClusterTableService>,
        local: Arc<LocalTables>,
        host: Arc<LockHost>,
        auth: Arc<Authenticator>,
        default_account: String,
        max_wait: Duration,
        leadership: Arc<Leadership>,
    ) -> Arc<LockService> {
        Arc::new(LockService {
            cluster,
            local,
            host,
            auth,
            default_account,
            max_wait,
            leadership,
        })
    }

    /// The tonic service of a shared `LockService` (the node's own chores use it too).
    pub fn server(service: Arc<LockService>) -> LockServer<LockService> {
        LockServer::from_arc(service)
    }

    /// A lease in `account` for Trestle's own use (no caller to authenticate), on the meta leader.
    pub(crate) async fn grant_internal(
        &self,
        account: &str,
        ttl: Duration,
        owner: &str,
    ) -> Result<u64> {
        let mut c = command(K::GrantLease, 0, "", false);
        c.ttl_ms = ttl.as_millis() as u64;
        c.owner = owner.to_string();
        let msg = pb::GrantLeaseRequest {
            account: account.to_string(),
            ttl_ms: c.ttl_ms,
            owner: owner.to_string(),
        };
        let r: pb::GrantLeaseResponse = self
            .run(Retry::RefusalsOnly, c, |link| {
                forward(
                    link,
                    msg.clone(),
                    account.to_string(),
                    |mut c, r| async move { c.grant_lease(r).await },
                )
            })
            .await?;
        Ok(r.lease)
    }

    /// Renews a lease of Trestle's own.
    pub(crate) async fn keep_alive_internal(&self, account: &str, lease: u64) -> Result<()> {
        let msg = pb::KeepAliveRequest {
            account: account.to_string(),
            lease,
        };
        let _: pb::KeepAliveResponse = self
            .run(
                Retry::Safe,
                command(K::KeepAlive, lease, "", false),
                |link| {
                    forward(
                        link,
                        msg.clone(),
                        account.to_string(),
                        |mut c, r| async move { c.keep_alive(r).await },
                    )
                },
            )
            .await?;
        Ok(())
    }

    /// Takes `name` of `account` under `lease` if it is free (or already ours): the token.
    pub(crate) async fn try_acquire_internal(
        &self,
        account: &str,
        lease: u64,
        name: &str,
    ) -> Result<u64> {
        let full = scoped(account, name);
        let msg = pb::AcquireRequest {
            account: account.to_string(),
            lease,
            name: name.to_string(),
            wait_ms: 0,
        };
        self.cluster
            .route(
                Retry::RefusalsOnly,
                || self.acquire_here(lease, &full, Duration::ZERO),
                |link| {
                    let f = forward(
                        link,
                        msg.clone(),
                        account.to_string(),
                        |mut c, r| async move { c.acquire(r).await },
                    );
                    async move { f.await.map(|r| r.token) }
                },
            )
            .await
    }

    /// The account the call acts in, after checking the caller may hold locks there.
    async fn caller<T: prost::Message>(
        &self,
        request: &Request<T>,
        method: &str,
        account: &str,
    ) -> std::result::Result<String, Status> {
        let account = if account.is_empty() {
            self.default_account.clone()
        } else {
            account.to_string()
        };
        match self.auth.authenticate(request, method, &account).await? {
            Credential::SharedKey | Credential::Anonymous => Ok(account),
            _ => Err(status_from_error(&Error::new(
                ErrorCode::AuthorizationFailure,
                "Locks need the account key; a shared access signature grants no lock rights.",
            ))),
        }
    }

    /// Runs one lock command on the meta leader (here, or forwarded by `remote`).
    async fn run<T, R, RF>(&self, retry: Retry, command: LockCommand, remote: R) -> Result<T>
    where
        T: FromReply,
        R: FnMut(Link) -> RF,
        RF: std::future::Future<Output = Result<T>>,
    {
        self.cluster
            .route(
                retry,
                || async {
                    self.local
                        .propose_lock(command.clone())
                        .await
                        .map(T::from_reply)
                },
                remote,
            )
            .await
    }

    /// A waiting acquire on this node (the meta leader).
    async fn acquire_here(&self, lease: u64, name: &str, wait: Duration) -> Result<u64> {
        let mut grants = self.host.subscribe();
        let reply = self
            .local
            .propose_lock(command(K::Acquire, lease, name, !wait.is_zero()))
            .await?;
        if reply.ahead.is_none() {
            return Ok(reply.token);
        }
        let deadline = tokio::time::Instant::now() + wait.min(self.max_wait);
        loop {
            match tokio::time::timeout_at(deadline, grants.recv()).await {
                Ok(Ok(g)) if g.lease == lease && g.name == name => return Ok(g.token),
                Ok(Ok(_)) => continue,
                // Missed grants (lagged) or a closed channel: ask the state itself.
                Ok(Err(_)) => {
                    if let Some(token) = self.holder_token(lease, name) {
                        return Ok(token);
                    }
                }
                Err(_) => break,
            }
        }
        match self
            .local
            .propose_lock(command(K::CancelWait, lease, name, false))
            .await
        {
            Ok(_) => Err(Error::new(
                ErrorCode::LockHeld,
                format!("lock {} is still held after the wait", unscoped_any(name)),
            )),
            Err(e) if e.code == ErrorCode::LockNotHeld => {
                // No longer waiting: either the lock was granted meanwhile, or the lease ended.
                self.holder_token(lease, name).ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    fn holder_token(&self, lease: u64, name: &str) -> Option<u64> {
        self.host.read(|s| {
            s.lock(name)
                .filter(|l| l.holder.lease == lease)
                .map(|l| l.holder.token)
        })
    }

    fn info(&self, account: &str, name: &str) -> pb::LockInfo {
        let since = self.leadership.since().unwrap_or_default();
        let mut info = self.host.read(|s| match s.lock(name) {
            None => pb::LockInfo {
                name: unscoped(account, name).to_string(),
                ..Default::default()
            },
            Some(l) => {
                let lease = s.lease(l.holder.lease);
                pb::LockInfo {
                    name: unscoped(account, name).to_string(),
                    holder_lease: l.holder.lease,
                    holder_owner: lease.map(|x| x.owner.clone()).unwrap_or_default(),
                    token: l.holder.token,
                    waiters: l.waiters.iter().copied().collect(),
                    ttl_ms: lease.map_or(0, |x| x.ttl_ms),
                    remaining_ms: 0,
                }
            }
        });
        // Outside `read`: the host's lock is not reentrant.
        if info.holder_lease != 0 {
            info.remaining_ms = self
                .host
                .remaining(info.holder_lease, since)
                .map_or(0, |d| d.as_millis() as u64);
        }
        info
    }
}

fn unscoped_any(full: &str) -> &str {
    full.split_once('/').map_or(full, |(_, n)| n)
}

fn command(kind: K, lease: u64, name: &str, wait: bool) -> LockCommand {
    LockCommand {
        kind: kind as i32,
        lease,
        name: name.to_string(),
        ttl_ms: 0,
        owner: String::new(),
        wait,
    }
}

fn status(e: Error) -> Status {
    status_from_error(&e)
}

/// The answer of a lock command as a gRPC response.
trait FromReply {
    fn from_reply(reply: LockReply) -> Self;
}

impl FromReply for pb::GrantLeaseResponse {
    fn from_reply(r: LockReply) -> Self {
        pb::GrantLeaseResponse {
            lease: r.lease,
            ttl_ms: r.ttl_ms,
        }
    }
}

impl FromReply for pb::KeepAliveResponse {
    fn from_reply(r: LockReply) -> Self {
        pb::KeepAliveResponse { ttl_ms: r.ttl_ms }
    }
}

impl FromReply for pb::ReleaseResponse {
    fn from_reply(_: LockReply) -> Self {
        pb::ReleaseResponse {}
    }
}

/// Sends `msg` on to the meta leader behind `link`, for `account`, with `call` (one Lock RPC).
async fn forward<Req, Resp, F, Fut>(link: Link, msg: Req, account: String, call: F) -> Result<Resp>
where
    F: FnOnce(LockClient<tonic::transport::Channel>, Request<Req>) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Response<Resp>, Status>>,
{
    let request = link.request(msg, Some(&account));
    call(LockClient::new(link.channel.clone()), request)
        .await
        .map(Response::into_inner)
        .map_err(|s| error_from_status(&s))
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn grant_lease(
        &self,
        request: Request<pb::GrantLeaseRequest>,
    ) -> std::result::Result<Response<pb::GrantLeaseResponse>, Status> {
        let account = self
            .caller(&request, method::GRANT_LEASE, &request.get_ref().account)
            .await?;
        let mut msg = request.into_inner();
        msg.account = account.clone();
        let mut c = command(K::GrantLease, 0, "", false);
        c.ttl_ms = msg.ttl_ms;
        c.owner = msg.owner.clone();
        let resp = self
            .run(Retry::RefusalsOnly, c, |link| {
                forward(link, msg.clone(), account.clone(), |mut c, r| async move {
                    c.grant_lease(r).await
                })
            })
            .await
            .map_err(status)?;
        Ok(Response::new(resp))
    }

    async fn keep_alive(
        &self,
        request: Request<pb::KeepAliveRequest>,
    ) -> std::result::Result<Response<pb::KeepAliveResponse>, Status> {
        let account = self
            .caller(&request, method::KEEP_ALIVE, &request.get_ref().account)
            .await?;
        let mut msg = request.into_inner();
        msg.account = account.clone();
        let c = command(K::KeepAlive, msg.lease, "", false);
        let resp = self
            .run(Retry::Safe, c, |link| {
                forward(link, msg.clone(), account.clone(), |mut c, r| async move {
                    c.keep_alive(r).await
                })
            })
            .await
            .map_err(status)?;
        Ok(Response::new(resp))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> std::result::Result<Response<pb::RevokeResponse>, Status> {
        let account = self
            .caller(&request, method::REVOKE, &request.get_ref().account)
            .await?;
        let mut msg = request.into_inner();
        msg.account = account.clone();
        let lease = msg.lease;
        let released = self
            .cluster
            .route(
                Retry::RefusalsOnly,
                || async {
                    let r = self
                        .local
                        .propose_lock(command(K::Revoke, lease, "", false))
                        .await?;
                    Ok(r.released
                        .iter()
                        .map(|n| unscoped(&account, n).to_string())
                        .collect())
                },
                |link| {
                    let f = forward(link, msg.clone(), account.clone(), |mut c, r| async move {
                        c.revoke(r).await
                    });
                    async move { f.await.map(|r| r.released) }
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeResponse { released }))
    }

    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> std::result::Result<Response<pb::AcquireResponse>, Status> {
        let account = self
            .caller(&request, method::ACQUIRE, &request.get_ref().account)
            .await?;
        let mut msg = request.into_inner();
        msg.account = account.clone();
        let name = scoped(&account, &msg.name);
        let wait = Duration::from_millis(msg.wait_ms);
        let token = self
            .cluster
            .route(
                Retry::SafeSlow,
                || self.acquire_here(msg.lease, &name, wait),
                |link| {
                    let f = forward(link, msg.clone(), account.clone(), |mut c, r| async move {
                        c.acquire(r).await
                    });
                    async move { f.await.map(|r| r.token) }
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AcquireResponse { token }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> std::result::Result<Response<pb::ReleaseResponse>, Status> {
        let account = self
            .caller(&request, method::RELEASE, &request.get_ref().account)
            .await?;
        let mut msg = request.into_inner();
        msg.account = account.clone();
        let c = command(K::Release, msg.lease, &scoped(&account, &msg.name), false);
        let resp = self
            .run(Retry::RefusalsOnly, c, |link| {
                forward(link, msg.clone(), account.clone(), |mut c, r| async move {
                    c.release(r).await
                })
            })
            .await
            .map_err(status)?;
        Ok(Response::new(resp))
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> std::result::Result<Response<pb::LockInfo>, Status> {
        let account = self
            .caller(&request, method::DESCRIBE, &request.get_ref().account)
            .await?;
        let mut msg = request.into_inner();
        msg.account = account.clone();
        trestle_lock_manager::validate_name(&msg.name)
            .map_err(|e| status(crate::locks::lock_error(e)))?;
        let name = scoped(&account, &msg.name);
        let info = self
            .cluster
            .route(
                Retry::Safe,
                || async {
                    self.local.meta_leader_read().await?;
                    Ok(self.info(&account, &name))
                },
                |link| {
                    forward(link, msg.clone(), account.clone(), |mut c, r| async move {
                        c.describe(r).await
                    })
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(info))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> std::result::Result<Response<pb::ListResponse>, Status> {
        let account = self
            .caller(&request, method::LIST, &request.get_ref().account)
            .await?;
        let mut msg = request.into_inner();
        msg.account = account.clone();
        let prefix = scoped(&account, &msg.prefix);
        let locks = self
            .cluster
            .route(
                Retry::Safe,
                || async {
                    self.local.meta_leader_read().await?;
                    let names: Vec<String> = self.host.read(|s| {
                        s.locks()
                            .filter(|l| l.name.starts_with(&prefix))
                            .map(|l| l.name.clone())
                            .collect()
                    });
                    Ok(names.iter().map(|n| self.info(&account, n)).collect())
                },
                |link| {
                    let f = forward(link, msg.clone(), account.clone(), |mut c, r| async move {
                        c.list(r).await
                    });
                    async move { f.await.map(|r| r.locks) }
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListResponse { locks }))
    }
}

/// The meta leader's expiry loop: every `every`, if this node leads the meta group, proposes `Expire`
/// for each lease whose TTL ran out on its clock (see `locks`). Runs until the node stops.
pub async fn run_expiry(
    raft: Arc<RaftNode>,
    local: Arc<LocalTables>,
    host: Arc<LockHost>,
    leadership: Arc<Leadership>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let leading = raft
            .group_status(META_RANGE_ID)
            .filter(|g| g.role == Role::Leader)
            .map(|g| g.term);
        let Some(since) = leadership.observe(leading, host.now()) else {
            continue;
        };
        for lease in host.expired(since) {
            match local
                .propose_lock(command(K::Expire, lease, "", false))
                .await
            {
                Ok(_) => tracing::info!(lease, "lease expired"),
                Err(e) => tracing::debug!(lease, error = %e, "expiring a lease"),
            }
        }
    }
}
