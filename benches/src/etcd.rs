//! The etcd side of the lock comparison: etcd's own lock service (`v3lockpb.Lock`) under an etcd lease
//! (`etcdserverpb.Lease`), through a client generated from a subset of etcd's public protobuf API
//! (`benches/proto/`, same packages, services and field numbers as etcd's; `build.rs`).
//!
//! Why not the `etcd-client` crate: its build script compiles etcd's protos with `tonic-prost-build`
//! and needs a `protoc` on the PATH (or `PROTOC` exported), which the workspace avoids (a global
//! `PROTOC` pointing at protoc-bin-vendored breaks raft-proto's build). Four RPCs are all the benchmark
//! needs, and generating them the way `trestle-proto` does keeps one protoc and one tonic/prost.
//!
//! What a lock costs in etcd: `Lock` runs etcd's `concurrency.Mutex` recipe inside the member (a
//! session on the given lease, a transaction that creates `name/<lease>` at a new revision, then a wait
//! until every key of `name/` with a lower creation revision is deleted: FIFO by revision); `Unlock`
//! deletes that key, which wakes the next waiter's watch. Both go through Raft, fsynced.
//!
//! A target `etcd:ADDR[,ADDR...]` (host:port of client URLs, plain HTTP/2) spreads its workers over the
//! members round-robin, as etcd's Go client balances over its endpoints; name only the leader to
//! measure etcd without follower forwarding.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tonic::transport::{Channel, Endpoint};

use crate::driver::OpError;

/// The generated clients (package paths as in etcd: `etcdserverpb`, `v3lockpb`).
#[allow(clippy::all)]
pub mod pb {
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
}

use pb::etcdserverpb::lease_client::LeaseClient;
use pb::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use pb::v3lockpb::lock_client::LockClient;
use pb::v3lockpb::{LockRequest, UnlockRequest};

/// The longest one etcd call may take: a waiting `Lock` is answered when granted, so this bounds a
/// wait in the queue (a stalled member fails the call rather than the run).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An etcd cluster: one HTTP/2 channel per member (times `channels`), shared by the workers.
#[derive(Clone, Debug)]
pub struct EtcdTarget {
    channels: Vec<Channel>,
}

impl EtcdTarget {
    /// `ADDR[,ADDR...]` after the `etcd:` prefix; `http://` is implied. Channels connect lazily.
    pub fn parse(addrs: &str, channels: usize) -> anyhow::Result<EtcdTarget> {
        let addrs: Vec<&str> = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if addrs.is_empty() {
            bail!("an etcd target needs at least one address");
        }
        let mut out = Vec::new();
        for _ in 0..channels.max(1) {
            for a in &addrs {
                let uri = if a.contains("://") {
                    a.to_string()
                } else {
                    format!("http://{a}")
                };
                let endpoint = Endpoint::from_shared(uri.clone())
                    .with_context(|| format!("etcd address {uri}"))?
                    .tcp_nodelay(true)
                    .timeout(CALL_TIMEOUT);
                out.push(endpoint.connect_lazy());
            }
        }
        Ok(EtcdTarget { channels: out })
    }

    /// The channel worker `worker` uses.
    fn channel(&self, worker: usize) -> Channel {
        self.channels[worker % self.channels.len()].clone()
    }

    /// Worker `worker`'s lock session (no lease yet: [`EtcdLocks::grant`]).
    pub fn locks(&self, worker: usize) -> EtcdLocks {
        let channel = self.channel(worker);
        EtcdLocks {
            lease: LeaseClient::new(channel.clone()),
            lock: LockClient::new(channel),
        }
    }

    /// Fails early when no member answers: grants a short lease and revokes it.
    pub async fn probe(&self) -> anyhow::Result<()> {
        let mut locks = self.locks(0);
        let id = locks
            .grant(Duration::from_secs(5))
            .await
            .context("reaching etcd")?;
        locks.revoke(id).await.context("reaching etcd")?;
        Ok(())
    }
}

/// One worker's etcd calls.
#[derive(Clone, Debug)]
pub struct EtcdLocks {
    lease: LeaseClient<Channel>,
    lock: LockClient<Channel>,
}

impl EtcdLocks {
    /// A new lease of `ttl` (whole seconds, at least one); its ID.
    pub async fn grant(&mut self, ttl: Duration) -> Result<i64, OpError> {
        let resp = self
            .lease
            .lease_grant(LeaseGrantRequest {
                ttl: ttl.as_secs().max(1) as i64,
                id: 0,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        if !resp.error.is_empty() {
            return Err(OpError::new(format!("etcd lease {}", resp.error)));
        }
        Ok(resp.id)
    }

    pub async fn revoke(&mut self, lease: i64) -> Result<(), OpError> {
        self.lease
            .lease_revoke(LeaseRevokeRequest { id: lease })
            .await
            .map_err(status_error)?;
        Ok(())
    }

    /// Takes `name` under `lease`, waiting in its queue; the key that holds it.
    pub async fn lock(&mut self, name: &str, lease: i64) -> Result<Vec<u8>, OpError> {
        let resp = self
            .lock
            .lock(LockRequest {
                name: name.as_bytes().to_vec(),
                lease,
            })
            .await
            .map_err(status_error)?;
        Ok(resp.into_inner().key)
    }

    /// Releases the lock held by `key`.
    pub async fn unlock(&mut self, key: Vec<u8>) -> Result<(), OpError> {
        self.lock
            .unlock(UnlockRequest { key })
            .await
            .map_err(status_error)?;
        Ok(())
    }
}

fn status_error(s: tonic::Status) -> OpError {
    OpError::new(format!("etcd {:?}", s.code()))
}
