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
//!
//! Snapshots travel on their own call, `RaftTransport.SnapshotStream`, one per snapshot on a fresh
//! connection, authenticated by the same token check. The sender's thread feeds a channel of
//! [`SNAPSHOT_WINDOW`] chunks, so at most that many are queued ahead of the network; the receiver hands
//! each chunk to a blocking task through a channel of one, and that task checks and writes it before
//! the next is read (see [`crate::snapshot::recv`]). The first message carries the `MsgSnapshot`. A
//! stream that stays silent for `SNAPSHOT_IDLE` is abandoned by the receiver.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};
use trestle_proto::raft::raft_transport_client::RaftTransportClient;
use trestle_proto::raft::raft_transport_server::{RaftTransport, RaftTransportServer};
use trestle_proto::raft::{
    RaftBatch, RaftDone, RaftEnvelope, SnapshotAck as AckProto, SnapshotChunk as ChunkProto,
};

use crate::driver::Mailbox;
use crate::snapshot::recv;
use crate::{
    Envelope, MAX_CHUNK_BYTES, SnapshotAck, SnapshotChunk, SnapshotError, SnapshotSink,
    StreamControl, Transport,
};

/// Metadata entry carrying the shared cluster secret.
pub const TOKEN_HEADER: &str = "x-trestle-cluster-token";
/// Largest message accepted or sent: a batch of coalesced Raft messages (entries up to the proposal
/// limit each), or one snapshot chunk.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Snapshot chunks a sender queues ahead of the network.
pub const SNAPSHOT_WINDOW: usize = 2;
/// How often a blocked snapshot sender looks at its deadline and cancellation.
const SNAPSHOT_POLL: Duration = Duration::from_millis(100);
/// Longest a receiver waits for the next chunk before it abandons the stream (and frees its slot).
const SNAPSHOT_IDLE: Duration = Duration::from_secs(60);
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
    /// The runtime snapshot streams run on (their senders are plain threads).
    runtime: tokio::runtime::Handle,
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
            runtime: tokio::runtime::Handle::current(),
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
        // On the transport's runtime: a node may be learned on a thread outside it (a Raft driver
        // applying the meta group's record of a joined node).
        self.runtime.spawn(sender_task(
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
    fn add_peer(&self, node: u64, addr: &str) {
        if node == self.from_node {
            return;
        }
        {
            let Ok(mut addrs) = self.addrs.write() else {
                return;
            };
            if addrs.get(&node).is_some_and(|a| a == addr) {
                return;
            }
            addrs.insert(node, addr.to_string());
        }
        // A new sender replaces the old one, whose task ends when its queue's sender is dropped.
        self.connect(node, addr.to_string());
    }

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

    fn open_snapshot(
        &self,
        to_node: u64,
        first: Envelope,
        ctl: &StreamControl,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotError> {
        let addr = self
            .addrs
            .read()
            .ok()
            .and_then(|a| a.get(&to_node).cloned())
            .ok_or_else(|| SnapshotError::Transport(format!("no address for node {to_node}")))?;
        let endpoint = self
            .tls
            .endpoint(&addr)
            .map_err(|e| SnapshotError::Transport(format!("bad address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let token = MetadataValue::try_from(self.token.as_str())
            .map_err(|e| SnapshotError::Transport(format!("cluster token: {e}")))?;
        let (tx, rx) = mpsc::channel::<ChunkProto>(SNAPSHOT_WINDOW);
        let call = self.runtime.spawn(async move {
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| Status::unavailable(format!("connecting: {e}")))?;
            let mut client = RaftTransportClient::new(channel)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            request.metadata_mut().insert(TOKEN_HEADER, token);
            client
                .snapshot_stream(request)
                .await
                .map(Response::into_inner)
        });
        Ok(Box::new(GrpcSink {
            from_node: self.from_node,
            first: Some(to_proto(first)),
            tx: Some(tx),
            call,
            runtime: self.runtime.clone(),
            ctl: ctl.clone(),
        }))
    }
}

/// The sending end of one `SnapshotStream` call.
struct GrpcSink {
    from_node: u64,
    /// Rides on the first chunk.
    first: Option<RaftEnvelope>,
    tx: Option<mpsc::Sender<ChunkProto>>,
    call: tokio::task::JoinHandle<Result<AckProto, Status>>,
    runtime: tokio::runtime::Handle,
    ctl: StreamControl,
}

impl GrpcSink {
    /// The call's outcome once it ended (the receiver's answer, or why it broke).
    fn outcome(&mut self) -> Result<AckProto, SnapshotError> {
        self.tx = None;
        let ctl = self.ctl.clone();
        let call = &mut self.call;
        self.runtime.block_on(async move {
            loop {
                ctl.check()?;
                match tokio::time::timeout(SNAPSHOT_POLL, &mut *call).await {
                    Ok(Ok(result)) => return result.map_err(status_error),
                    Ok(Err(e)) => {
                        return Err(SnapshotError::Transport(format!("stream task: {e}")));
                    }
                    Err(_) => continue,
                }
            }
        })
    }
}

impl SnapshotSink for GrpcSink {
    fn send(&mut self, chunk: SnapshotChunk) -> Result<(), SnapshotError> {
        let mut message = ChunkProto {
            envelope: self.first.take(),
            from_node: self.from_node,
            seq: chunk.seq,
            data: chunk.data,
            crc32: chunk.crc32,
            last: chunk.last,
        };
        let Some(tx) = self.tx.clone() else {
            return Err(SnapshotError::Transport("the stream is closed".into()));
        };
        let ctl = self.ctl.clone();
        let sent = self.runtime.block_on(async move {
            loop {
                ctl.check()?;
                match tokio::time::timeout(SNAPSHOT_POLL, tx.reserve()).await {
                    Ok(Ok(permit)) => {
                        permit.send(std::mem::take(&mut message));
                        return Ok(true);
                    }
                    // The call ended: its outcome says why.
                    Ok(Err(_)) => return Ok(false),
                    Err(_) => continue,
                }
            }
        });
        match sent {
            Ok(true) => Ok(()),
            Ok(false) => match self.outcome() {
                Ok(_) => Err(SnapshotError::Transport(
                    "the receiver answered before the last chunk".into(),
                )),
                Err(e) => Err(e),
            },
            Err(e) => {
                self.call.abort();
                Err(e)
            }
        }
    }

    fn finish(mut self: Box<Self>) -> Result<SnapshotAck, SnapshotError> {
        let result = self.outcome();
        if result.is_err() {
            self.call.abort();
        }
        let ack = result?;
        Ok(SnapshotAck {
            chunks: ack.chunks,
            bytes: ack.bytes,
        })
    }
}

/// The sender's view of a receiver's refusal.
fn status_error(status: Status) -> SnapshotError {
    let message = status.message().to_string();
    match status.code() {
        tonic::Code::FailedPrecondition | tonic::Code::ResourceExhausted => {
            SnapshotError::Refused(message)
        }
        tonic::Code::DataLoss | tonic::Code::InvalidArgument => SnapshotError::Corrupt(message),
        code => SnapshotError::Transport(format!("{code:?}: {message}")),
    }
}

/// The receiver's answer for a failed stream.
fn error_status(e: SnapshotError) -> Status {
    match e {
        SnapshotError::Refused(m) => Status::failed_precondition(m),
        SnapshotError::Corrupt(m) => Status::data_loss(m),
        SnapshotError::Transport(m) => Status::aborted(m),
        SnapshotError::Cancelled => Status::cancelled("snapshot stream cancelled"),
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

impl RaftService {
    /// Both calls are for peers only: the cluster token, compared in constant time (how much of a
    /// guess matched must not show in the answer's timing).
    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let presented = metadata.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
        let authorized = presented.is_some_and(|p| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                p.as_bytes(),
                self.token.as_bytes(),
            ))
        });
        if !authorized {
            return Err(Status::unauthenticated("missing or wrong cluster token"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn send(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<RaftDone>, Status> {
        self.authorize(request.metadata())?;
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

    async fn snapshot_stream(
        &self,
        request: Request<Streaming<ChunkProto>>,
    ) -> Result<Response<AckProto>, Status> {
        self.authorize(request.metadata())?;
        let mut stream: BoxStream<Result<ChunkProto, Status>> = Box::pin(request.into_inner());
        let Some(first) = stream.next().await else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        let mut first = first?;
        let Some(envelope) = first.envelope.take() else {
            return Err(Status::invalid_argument(
                "a snapshot stream opens with its envelope",
            ));
        };
        if envelope.from != first.from_node || envelope.to != self.node_id {
            return Err(Status::invalid_argument("misaddressed snapshot stream"));
        }
        let env = Envelope {
            group: envelope.group,
            from: envelope.from,
            to: envelope.to,
            message: envelope.message,
        };
        // The receiver checks and writes each chunk before the next is read from the network.
        let (tx, mut rx) = mpsc::channel::<SnapshotChunk>(1);
        let mailbox = self.mailbox.clone();
        let worker = tokio::task::spawn_blocking(move || {
            recv::receive(&mailbox, env, || rx.blocking_recv())
        });
        let mut next = Some(first);
        while let Some(message) = next.take() {
            if message.data.len() > MAX_CHUNK_BYTES {
                return Err(Status::invalid_argument("snapshot chunk too large"));
            }
            let last = message.last;
            let chunk = SnapshotChunk {
                seq: message.seq,
                data: message.data,
                crc32: message.crc32,
                last,
            };
            if tx.send(chunk).await.is_err() || last {
                break; // the receiver stopped (its answer says why), or the stream is complete
            }
            next = match tokio::time::timeout(SNAPSHOT_IDLE, stream.next()).await {
                Ok(Some(Ok(m))) => Some(m),
                Ok(Some(Err(status))) => {
                    tracing::debug!(%status, "snapshot stream broke");
                    None
                }
                Ok(None) => None,
                Err(_) => {
                    tracing::info!("snapshot stream idle too long; abandoned");
                    None
                }
            };
        }
        drop(tx);
        let ack = worker
            .await
            .map_err(|e| Status::internal(format!("snapshot receiver: {e}")))?
            .map_err(error_status)?;
        Ok(Response::new(AckProto {
            chunks: ack.chunks,
            bytes: ack.bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use protobuf::Message as _;
    use raft::eraftpb::{Message, MessageType, Snapshot};
    use trestle_engine::{Cf, Engine, MemoryEngine, WriteBatch};

    use super::*;
    use crate::desc::RangeState;
    use crate::memory::MemoryNetwork;
    use crate::snapshot::Header;
    use crate::snapshot::chunk::ChunkBuilder;
    use crate::{ApplyError, Config, Epoch, GroupDesc, GroupHost, RaftNode, Span, StateMachine};

    struct Nothing;

    impl StateMachine for Nothing {
        fn apply(
            &mut self,
            _engine: &dyn Engine,
            _batch: &mut WriteBatch,
            _index: u64,
            _command: &[u8],
        ) -> Result<Vec<u8>, ApplyError> {
            Ok(Vec::new())
        }
    }

    struct Host;

    impl GroupHost for Host {
        fn state_machine(&self, _desc: &GroupDesc) -> Box<dyn StateMachine> {
            Box::new(Nothing)
        }
    }

    const TOKEN: &str = "cluster-secret";

    fn span() -> Span {
        Span {
            cf: Cf::Data,
            start: vec![],
            end: None,
        }
    }

    /// Node 2, hosting a fresh replica of group 7 (voters 1, 2, 3), served over gRPC on loopback.
    async fn receiver() -> (Arc<RaftNode>, Arc<MemoryEngine>, String) {
        let engine = Arc::new(MemoryEngine::new());
        let net = Arc::new(MemoryNetwork::new());
        let node = Arc::new(
            RaftNode::start(
                2,
                engine.clone(),
                net.transport(2),
                Config::for_test(),
                Arc::new(Host),
            )
            .unwrap(),
        );
        node.create_group(GroupDesc {
            id: 7,
            voters: vec![1, 2, 3],
            learners: vec![],
            voters_outgoing: Vec::new(),
            span: span(),
            epoch: Epoch::INITIAL,
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let service = RaftService::new(2, TOKEN.into(), node.mailbox());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (node, engine, addr)
    }

    /// Node 1's `MsgSnapshot` of group 7 at index 10, term 2, for a streamed snapshot.
    fn first() -> Envelope {
        let mut snap = Snapshot::default();
        let range = RangeState::new(span(), Epoch::INITIAL);
        snap.set_data(Header { range, id: 1 }.encode().into());
        snap.mut_metadata().index = 10;
        snap.mut_metadata().term = 2;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgSnapshot);
        (msg.from, msg.to, msg.term) = (1, 2, 2);
        msg.set_snapshot(snap);
        Envelope {
            group: 7,
            from: 1,
            to: 2,
            message: msg.write_to_bytes().unwrap().into(),
        }
    }

    /// Streams 200 records in chunks of 512 bytes through `transport` to node 2.
    fn stream(transport: Arc<GrpcTransport>) -> Result<SnapshotAck, SnapshotError> {
        let ctl = StreamControl::new(Duration::from_secs(20));
        let mut sink = transport.open_snapshot(2, first(), &ctl)?;
        let mut chunks = ChunkBuilder::new(512);
        for i in 0..200 {
            chunks.push(format!("k{i:03}").as_bytes(), &[b'v'; 40]);
            if chunks.is_full() {
                sink.send(chunks.take(false))?;
            }
        }
        sink.send(chunks.take(true))?;
        sink.finish()
    }

    fn transport(addr: &str, token: &str) -> Arc<GrpcTransport> {
        GrpcTransport::new(
            1,
            token.into(),
            PeerTls::plaintext(),
            HashMap::from([(2, addr.to_string())]),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_streams_over_grpc_into_the_replica() {
        let (node, engine, addr) = receiver().await;
        let transport = transport(&addr, TOKEN);
        let ack = tokio::task::spawn_blocking(move || stream(transport))
            .await
            .unwrap()
            .unwrap();
        assert!(ack.chunks > 10, "{ack:?}");
        let restored = tokio::time::timeout(Duration::from_secs(10), async {
            while node.group_status(7).is_none_or(|s| s.applied_index < 10) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(restored.is_ok(), "{:?}", node.group_status(7));
        let records = engine.scan(Cf::Data, &[], None).unwrap().count();
        assert_eq!(records, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_stream_without_the_cluster_token_is_refused_and_writes_nothing() {
        let (node, engine, addr) = receiver().await;
        let transport = transport(&addr, "a-guess");
        let result = tokio::task::spawn_blocking(move || stream(transport))
            .await
            .unwrap();
        match result {
            Err(SnapshotError::Transport(m)) => assert!(m.contains("Unauthenticated"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(engine.scan(Cf::Data, &[], None).unwrap().count(), 0);
        assert_eq!(node.group_status(7).unwrap().applied_index, 0);
        assert!(node.group_status(7).unwrap().desc.is_some(), "not fenced");
    }
}
