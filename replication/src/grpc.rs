//! The node-to-node Raft transport over gRPC: one long-lived client stream per peer node.
//!
//! Sending side ([`GrpcTransport`]): per peer node, a bounded queue and a task that keeps one
//! `RaftTransport.Send` stream open, coalescing whatever is queued into one `RaftBatch` per stream
//! message. When the peer is down the queue fills and further batches are dropped (Raft retransmits);
//! the task reconnects with capped exponential backoff.
//!
//! Receiving side ([`RaftService`]): checks the cluster token in the `x-trestle-cluster-token`
//! metadata entry (peers must be authenticated), checks every envelope's addressing, and hands
//! batches to the node's [`Mailbox`]. Message size is capped by tonic's decoding limit.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use trestle_proto::raft::raft_transport_client::RaftTransportClient;
use trestle_proto::raft::raft_transport_server::{RaftTransport, RaftTransportServer};
use trestle_proto::raft::{RaftBatch, RaftDone, RaftEnvelope};

use crate::driver::Mailbox;
use crate::{Envelope, Transport};

/// Metadata entry carrying the shared cluster secret.
pub const TOKEN_HEADER: &str = "x-trestle-cluster-token";
/// Largest Raft batch accepted or sent (snapshots travel inside one message for now).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Queued batches per peer before new ones are dropped.
const QUEUE_DEPTH: usize = 4096;

/// How a node opens gRPC channels to its peers: plain HTTP/2, or TLS verified against the cluster's
/// CA (presenting the node's own certificate, for clusters that require mutual TLS). Every channel to a
/// peer (Raft, forwarding, start-up probes) is made here, so one setting covers all node-to-node
/// traffic.
#[derive(Clone, Debug, Default)]
pub struct PeerTls {
    config: Option<tonic::transport::ClientTlsConfig>,
}

impl PeerTls {
    /// Plain HTTP/2 (loopback and trusted networks only).
    pub fn plaintext() -> PeerTls {
        PeerTls::default()
    }

    /// TLS with `config` (its CA, server name and optional client identity).
    pub fn with(config: tonic::transport::ClientTlsConfig) -> PeerTls {
        PeerTls {
            config: Some(config),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.config.is_some()
    }

    /// An endpoint for the peer at `addr` (`host:port`), over TLS when configured.
    pub fn endpoint(
        &self,
        addr: &str,
    ) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
        let scheme = if self.is_tls() { "https" } else { "http" };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?;
        match &self.config {
            Some(config) => endpoint.tls_config(config.clone()),
            None => Ok(endpoint),
        }
    }
}

/// Sends Raft messages to peer nodes over gRPC.
pub struct GrpcTransport {
    from_node: u64,
    token: String,
    tls: PeerTls,
    queues: RwLock<HashMap<u64, mpsc::Sender<Vec<Envelope>>>>,
    addrs: RwLock<HashMap<u64, String>>,
}

impl GrpcTransport {
    /// `peers`: node id → gRPC address (`host:port`). Must be called inside a tokio runtime: each peer's
    /// sender task is spawned on it.
    pub fn new(
        from_node: u64,
        token: String,
        tls: PeerTls,
        peers: HashMap<u64, String>,
    ) -> Arc<GrpcTransport> {
        let t = Arc::new(GrpcTransport {
            from_node,
            token,
            tls,
            queues: RwLock::default(),
            addrs: RwLock::new(peers.clone()),
        });
        for (id, addr) in peers {
            t.connect(id, addr);
        }
        t
    }

    fn connect(&self, node: u64, addr: String) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        if let Ok(mut q) = self.queues.write() {
            q.insert(node, tx);
        }
        tokio::spawn(sender_task(
            self.from_node,
            node,
            addr,
            self.token.clone(),
            self.tls.clone(),
            rx,
        ));
    }

    /// Known peer addresses.
    pub fn peers(&self) -> HashMap<u64, String> {
        self.addrs.read().map(|a| a.clone()).unwrap_or_default()
    }
}

impl Transport for GrpcTransport {
    fn send(&self, to_node: u64, batch: Vec<Envelope>) {
        let Ok(queues) = self.queues.read() else {
            return;
        };
        match queues.get(&to_node) {
            Some(q) => {
                if q.try_send(batch).is_err() {
                    tracing::trace!(to_node, "raft queue full or closed; batch dropped");
                }
            }
            None => tracing::debug!(to_node, "no address for raft peer; batch dropped"),
        }
    }
}

async fn sender_task(
    from_node: u64,
    to_node: u64,
    addr: String,
    token: String,
    tls: PeerTls,
    mut queue: mpsc::Receiver<Vec<Envelope>>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let endpoint = match tls.endpoint(&addr) {
            Ok(e) => e.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true),
            Err(e) => {
                tracing::error!(to_node, %addr, error = %e, "invalid raft peer address");
                return;
            }
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(to_node, %addr, error = %e, "raft peer unreachable");
                // Drop what queued up meanwhile: Raft will retransmit what still matters.
                while queue.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let mut client = RaftTransportClient::new(channel)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel::<RaftBatch>(64);
        let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Ok(v) = MetadataValue::try_from(token.as_str()) {
            request.metadata_mut().insert(TOKEN_HEADER, v);
        }
        let call = tokio::spawn(async move { client.send(request).await });
        loop {
            let Some(first) = queue.recv().await else {
                return; // the transport was dropped
            };
            let mut messages: Vec<RaftEnvelope> = first.into_iter().map(to_proto).collect();
            while messages.len() < 4096 {
                match queue.try_recv() {
                    Ok(more) => messages.extend(more.into_iter().map(to_proto)),
                    Err(_) => break,
                }
            }
            if tx
                .send(RaftBatch {
                    from_node,
                    messages,
                })
                .await
                .is_err()
            {
                break; // the stream ended: reconnect
            }
        }
        match call.await {
            Ok(Err(status)) => tracing::debug!(to_node, %status, "raft stream closed"),
            Err(e) => tracing::debug!(to_node, error = %e, "raft stream task failed"),
            Ok(Ok(_)) => {}
        }
        tokio::time::sleep(backoff).await;
    }
}

fn to_proto(e: Envelope) -> RaftEnvelope {
    RaftEnvelope {
        group: e.group,
        from: e.from,
        to: e.to,
        message: e.message,
    }
}

/// The receiving side, served by every node.
pub struct RaftService {
    node_id: u64,
    token: String,
    mailbox: Mailbox,
}

impl RaftService {
    pub fn new(node_id: u64, token: String, mailbox: Mailbox) -> RaftTransportServer<RaftService> {
        RaftTransportServer::new(RaftService {
            node_id,
            token,
            mailbox,
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send>>;

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn send(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<RaftDone>, Status> {
        let presented = request
            .metadata()
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok());
        // Constant time: how much of a guess matched must not show in the answer's timing.
        let authorized = presented.is_some_and(|p| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                p.as_bytes(),
                self.token.as_bytes(),
            ))
        });
        if !authorized {
            return Err(Status::unauthenticated("missing or wrong cluster token"));
        }
        let mut stream: BoxStream<Result<RaftBatch, Status>> = Box::pin(request.into_inner());
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let from_node = batch.from_node;
            let envelopes: Vec<Envelope> = batch
                .messages
                .into_iter()
                .filter(|m| m.from == from_node && m.to == self.node_id)
                .map(|m| Envelope {
                    group: m.group,
                    from: m.from,
                    to: m.to,
                    message: m.message,
                })
                .collect();
            if !envelopes.is_empty() {
                self.mailbox.deliver(envelopes);
            }
        }
        Ok(Response::new(RaftDone {}))
    }
}
