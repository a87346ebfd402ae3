//! Targets and connections, over either protocol: what the runner talks to.
//!
//! A target is written `[label=]rest:URL` or `[label=]grpc:ADDR[,ADDR...]` on the command line, e.g.
//! `trestle=rest:http://127.0.0.1:10002/devstoreaccount1`, `azurite=rest:http://127.0.0.1:10012/devstoreaccount1`
//! or `grpc:127.0.0.1:10101,127.0.0.1:10102,127.0.0.1:10103`. [`Target::connection`] gives each worker its
//! own [`Conn`]; [`Target::prepare`] creates the table and runs the load phase a workload needs.
//!
//! TLS: `rest:https://...` and `grpc:https://ADDR,...` verify the server against `--ca-file`
//! ([`ConnectOptions::ca_file`]). `grpc-unsigned:ADDR,...` is the gRPC target whose calls carry no
//! credentials (the node must have `allow-anonymous = true`): against `grpc:` on the same node, it
//! measures what signing costs.
//!
//! The gRPC driver lives here too: Trestle's own API through the Rust SDK (`trestle-client`), as an
//! application would use it. All workers share one [`TableClient`] (one HTTP/2 channel per node,
//! multiplexed; `--grpc-channels` gives them more), which routes each call to the range's leader and
//! follows `NotLeader` redirects. The REST driver, larger, is [`crate::rest`].
//!
//! The lock workloads ([`crate::locks`]) run on a `grpc:` target (Trestle's lock service through the same
//! SDK clients) or on an `etcd:ADDR[,ADDR...]` target (etcd's lock service, [`crate::etcd`]), which runs
//! nothing else.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use trestle_client::{ClientConfig, Credentials, ErrorCode, QueryBuilder, Table, TableClient, op};

use crate::bodies::Payload;
use crate::etcd::EtcdTarget;
use crate::locks::{HandoffClock, LockConn};
use crate::rest::{self, BatchKind, RestConn, RestTarget};
use crate::workload::{
    Op, WorkloadConfig, WorkloadKind, partition_key, query_partition_key, record_key,
    record_row_key,
};

/// A failed operation, by kind (`http-409 EntityAlreadyExists`, `timeout`, `grpc NotFound`...): the
/// report counts errors per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError(String);

impl OpError {
    pub fn new(kind: impl Into<String>) -> OpError {
        OpError(kind.into())
    }

    pub fn kind(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OpError {}

/// How many times `needle` occurs in `haystack` (non-overlapping): entities in a query page.
pub fn count_occurrences(haystack: &[u8], needle: &[u8]) -> u64 {
    let Some(&first) = needle.first() else {
        return 0;
    };
    let mut count = 0;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        match haystack[i..].iter().position(|&b| b == first) {
            Some(off) => {
                i += off;
                if haystack[i..].starts_with(needle) {
                    count += 1;
                    i += needle.len();
                } else {
                    i += 1;
                }
            }
            None => break,
        }
    }
    count
}

/// The protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Rest,
    Grpc,
    Etcd,
}

/// What every target of a run shares: who signs, and what `https://` endpoints are verified against.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Account name (default: from a REST URL's path, or the development account for gRPC).
    pub account: Option<String>,
    /// Account key, base64.
    pub key: String,
    /// PEM certificates trusted on `https://` endpoints (REST and gRPC).
    pub ca_file: Option<PathBuf>,
}

/// A gRPC target's spec: the seed addresses and whether calls are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcSpec {
    pub addrs: Vec<String>,
    pub signed: bool,
}

impl GrpcSpec {
    /// `grpc:ADDR,...` (signed) or `grpc-unsigned:ADDR,...`; `None` for anything else.
    pub fn parse(spec: &str) -> Option<GrpcSpec> {
        let (signed, addrs) = if let Some(a) = spec.strip_prefix("grpc:") {
            (true, a)
        } else {
            (false, spec.strip_prefix("grpc-unsigned:")?)
        };
        let addrs: Vec<String> = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        Some(GrpcSpec { addrs, signed })
    }

    pub fn tls(&self) -> bool {
        self.addrs.iter().any(|a| a.starts_with("https://"))
    }
}

/// An endpoint under test.
#[derive(Clone)]
pub enum Endpoint {
    Rest(Arc<RestTarget>),
    /// One SDK client per HTTP/2 channel set; workers are spread over them round-robin.
    Grpc(Vec<TableClient>),
    /// An etcd cluster, for the lock workloads only.
    Etcd(EtcdTarget),
}

/// A labelled endpoint, as given on the command line.
#[derive(Clone)]
pub struct Target {
    pub label: String,
    pub spec: String,
    pub endpoint: Endpoint,
    /// The server process whose CPU time each round reports per operation (`--server-pid`), if any.
    pub server_pid: Option<u32>,
}

impl Target {
    /// Parses `[label=]rest:URL` / `[label=]grpc:ADDR,...` / `[label=]grpc-unsigned:ADDR,...` /
    /// `[label=]etcd:ADDR,...`; the options' account (default: the development account) and key sign
    /// every request of either Trestle protocol, except on `grpc-unsigned`.
    pub async fn parse(spec: &str, opts: &ConnectOptions) -> anyhow::Result<Target> {
        let (label, rest) = match spec.split_once('=') {
            Some((l, r)) if !l.contains(':') => (Some(l.to_string()), r),
            _ => (None, spec),
        };
        let endpoint = if let Some(url) = rest.strip_prefix("rest:") {
            let account = opts.account.as_deref();
            let t = RestTarget::parse(url, account, &opts.key, opts.ca_file.as_deref())?;
            Endpoint::Rest(Arc::new(t))
        } else if let Some(g) = GrpcSpec::parse(rest) {
            Endpoint::Grpc(vec![grpc_client(&g, opts).await?])
        } else if let Some(addrs) = rest.strip_prefix("etcd:") {
            Endpoint::Etcd(EtcdTarget::parse(addrs, 1)?)
        } else {
            bail!(
                "a target is rest:URL, grpc:ADDR[,ADDR...], grpc-unsigned:ADDR[,ADDR...] or \
                 etcd:ADDR[,ADDR...], optionally label=...; got {spec}"
            );
        };
        let label = label.unwrap_or_else(|| rest.to_string());
        Ok(Target {
            label,
            spec: rest.to_string(),
            endpoint,
            server_pid: None,
        })
    }

    /// Gives a gRPC target `n` independent SDK clients (each with its own HTTP/2 connection to every
    /// node) instead of one: 64 workers multiplexed on one connection are served by one connection task
    /// on each side, which this separates from the server's own cost. An etcd target gets `n`
    /// connections to each member the same way. REST targets are unchanged.
    pub async fn with_grpc_channels(
        mut self,
        n: usize,
        opts: &ConnectOptions,
    ) -> anyhow::Result<Target> {
        if let (Endpoint::Grpc(clients), Some(g)) =
            (&mut self.endpoint, GrpcSpec::parse(&self.spec))
        {
            while clients.len() < n {
                clients.push(grpc_client(&g, opts).await?);
            }
        }
        if let (Endpoint::Etcd(t), Some(addrs)) =
            (&mut self.endpoint, self.spec.strip_prefix("etcd:"))
        {
            *t = EtcdTarget::parse(addrs, n)?;
        }
        Ok(self)
    }

    pub fn protocol(&self) -> Protocol {
        match self.endpoint {
            Endpoint::Rest(_) => Protocol::Rest,
            Endpoint::Grpc(_) => Protocol::Grpc,
            Endpoint::Etcd(_) => Protocol::Etcd,
        }
    }

    /// Whether this target can run `kind`: table workloads need Trestle or an Azure Table endpoint,
    /// lock workloads Trestle's gRPC API or etcd.
    pub fn check_workload(&self, kind: WorkloadKind) -> anyhow::Result<()> {
        match (&self.endpoint, kind.is_lock()) {
            (Endpoint::Rest(_), true) => {
                bail!(
                    "{}: lock workloads need a grpc: or etcd: target",
                    self.label
                )
            }
            (Endpoint::Etcd(_), false) => {
                bail!(
                    "{}: an etcd target runs the lock workloads only",
                    self.label
                )
            }
            _ => Ok(()),
        }
    }

    /// Worker `worker`'s table connection.
    pub fn connection(&self, table: &str, payload: Payload, worker: usize) -> anyhow::Result<Conn> {
        Ok(match &self.endpoint {
            Endpoint::Rest(t) => Conn::Rest(Box::new(RestConn::new(t.clone(), table, payload))),
            Endpoint::Grpc(clients) => {
                let client = &clients[worker % clients.len()];
                Conn::Grpc(GrpcConn::new(client, table, payload))
            }
            Endpoint::Etcd(_) => bail!("{}: an etcd target has no tables", self.label),
        })
    }

    /// Worker `worker`'s connection for a measured run of `cfg`: a table connection, or for the lock
    /// workloads a lock session (contending through `handoffs` in the hand-off workload).
    pub fn worker(
        &self,
        cfg: &WorkloadConfig,
        table: &str,
        payload: Payload,
        worker: usize,
        handoffs: &Arc<HandoffClock>,
    ) -> anyhow::Result<Conn> {
        if !cfg.kind.is_lock() {
            return self.connection(table, payload, worker);
        }
        let name = crate::workload::lock_name(cfg, worker as u32);
        let conn = match &self.endpoint {
            Endpoint::Grpc(clients) => {
                LockConn::trestle(clients[worker % clients.len()].locks(), name)
            }
            Endpoint::Etcd(t) => LockConn::etcd(t.locks(worker), name),
            Endpoint::Rest(_) => bail!(
                "{}: lock workloads need a grpc: or etcd: target",
                self.label
            ),
        };
        let conn = match cfg.kind {
            WorkloadKind::LockHandoff => {
                conn.contended(handoffs.clone(), Duration::from_micros(cfg.lock_hold_us))
            }
            _ => conn,
        };
        Ok(Conn::Lock(Box::new(conn)))
    }

    /// Fails early, with a clear message, when the endpoint does not answer.
    pub async fn probe(&self) -> anyhow::Result<()> {
        match &self.endpoint {
            Endpoint::Etcd(t) => t.probe().await.with_context(|| self.spec.clone()),
            Endpoint::Rest(t) => rest::probe(t).await,
            Endpoint::Grpc(clients) => clients
                .first()
                .ok_or_else(|| anyhow!("no gRPC client"))?
                .list_tables_page(None, 1)
                .await
                .map(|_| ())
                .with_context(|| format!("reaching {}", self.spec)),
        }
    }

    /// Creates `table` and preloads what the workload reads: `records` entities for record workloads,
    /// `query_partitions` × `page_size` entities for queries. Loads with batches of up to 100
    /// insert-or-replace operations over `concurrency` connections; returns the entities loaded.
    pub async fn prepare(
        &self,
        table: &str,
        cfg: &WorkloadConfig,
        payload: &Payload,
        concurrency: usize,
    ) -> anyhow::Result<u64> {
        self.check_workload(cfg.kind)?;
        if cfg.kind.is_lock() {
            // Locks need no table: each worker's first operation grants its lease.
            return Ok(0);
        }
        let mut conn = self.connection(table, payload.clone(), 0)?;
        match (&mut conn, &self.endpoint) {
            (Conn::Rest(c), _) => c.create_table().await,
            (Conn::Grpc(_), Endpoint::Grpc(clients)) => match clients.first() {
                Some(client) => create_table(client, table).await,
                None => Ok(()),
            },
            _ => Ok(()),
        }
        .map_err(|e| anyhow!("creating table {table} on {}: {e}", self.label))?;
        let chunks = load_chunks(cfg);
        if chunks.is_empty() {
            return Ok(0);
        }
        let chunks = Arc::new(chunks);
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..concurrency.clamp(1, 16) {
            let (chunks, next) = (chunks.clone(), next.clone());
            let mut conn = self.connection(table, payload.clone(), w)?;
            tasks.push(tokio::spawn(async move {
                let mut loaded = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some((pk, rks)) = chunks.get(i) else {
                        return Ok::<u64, OpError>(loaded);
                    };
                    let rows: Vec<(&str, u64)> = rks.iter().map(|rk| (rk.as_str(), 0)).collect();
                    loaded += conn.upsert_batch(pk, &rows).await?;
                }
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t
                .await?
                .map_err(|e| anyhow!("loading {table} on {}: {e}", self.label))?;
        }
        Ok(total)
    }
}

/// An SDK client that signs every call as the account (default: the development account) with its
/// key, as an application would: the signing cost is part of what is measured. An unsigned spec sends
/// no credentials at all; `https://` addresses trust the options' CA file.
async fn grpc_client(spec: &GrpcSpec, opts: &ConnectOptions) -> anyhow::Result<TableClient> {
    if spec.addrs.is_empty() {
        bail!("a gRPC target needs at least one address");
    }
    let account = opts
        .account
        .as_deref()
        .unwrap_or(trestle_client::DEV_ACCOUNT);
    let mut config = ClientConfig::default().with_account(account);
    if spec.signed {
        config = config.with_credentials(Credentials::shared_key(account, &opts.key)?);
    }
    if spec.tls()
        && let Some(ca) = &opts.ca_file
    {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        config = config.with_tls_ca(pem);
    }
    Ok(TableClient::connect_with(spec.addrs.clone(), config).await?)
}

/// The load phase's batches: `(partition key, row keys)`, at most 100 rows each, one partition each.
pub fn load_chunks(cfg: &WorkloadConfig) -> Vec<(String, Vec<String>)> {
    let mut chunks = Vec::new();
    if cfg.kind == WorkloadKind::Query {
        for j in 0..u64::from(cfg.query_partitions) {
            let rks: Vec<String> = (0..u64::from(cfg.page_size)).map(record_row_key).collect();
            for c in rks.chunks(100) {
                chunks.push((query_partition_key(j), c.to_vec()));
            }
        }
    } else if cfg.kind.needs_records() {
        let partitions = u64::from(cfg.partitions.max(1));
        for p in 0..partitions {
            let rks: Vec<String> = (p..cfg.records)
                .step_by(partitions as usize)
                .map(|i| record_key(cfg, i).1)
                .collect();
            for c in rks.chunks(100) {
                chunks.push((partition_key(p), c.to_vec()));
            }
        }
    }
    chunks
}

/// What one operation did: the entities it wrote or read (for a lock workload: one per lock cycle, or
/// per hand-off), and what its latency is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub entities: u64,
    pub latency: Timing,
}

/// Which latency an operation records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// From the operation's due time to its answer (every table workload).
    Call,
    /// A span the operation measured itself (a lock hand-off).
    Span(Duration),
    /// None: the operation counts, its latency does not (a grant that was not a hand-off).
    Untimed,
}

impl Done {
    pub fn call(entities: u64) -> Done {
        Done {
            entities,
            latency: Timing::Call,
        }
    }

    pub fn timed(entities: u64, latency: Duration) -> Done {
        Done {
            entities,
            latency: Timing::Span(latency),
        }
    }

    pub fn untimed(entities: u64) -> Done {
        Done {
            entities,
            latency: Timing::Untimed,
        }
    }
}

/// A worker's connection: a table connection over either protocol, or a lock session.
pub enum Conn {
    Rest(Box<RestConn>),
    Grpc(GrpcConn),
    Lock(Box<LockConn>),
}

impl Conn {
    /// Runs one operation (a lock connection runs its acquire + release, whatever `op` says).
    pub async fn execute(&mut self, op: &crate::workload::Op) -> Result<Done, OpError> {
        match self {
            Conn::Rest(c) => c.execute(op).await.map(Done::call),
            Conn::Grpc(c) => c.execute(op).await.map(Done::call),
            Conn::Lock(c) => c.cycle().await,
        }
    }

    /// Ends the worker's session after its last operation (a lock worker revokes its lease).
    pub async fn finish(&mut self) {
        if let Conn::Lock(c) = self {
            c.finish().await;
        }
    }

    async fn upsert_batch(&mut self, pk: &str, rows: &[(&str, u64)]) -> Result<u64, OpError> {
        match self {
            Conn::Rest(c) => c.batch(pk, rows, BatchKind::Upsert).await,
            Conn::Grpc(c) => c.upsert_batch(pk, rows).await,
            Conn::Lock(_) => Err(OpError::new("a lock session loads no table")),
        }
    }
}

/// One worker's handle on a table (cheap: a clone of the shared client).
pub struct GrpcConn {
    table: Table,
    payload: Payload,
}

impl GrpcConn {
    pub fn new(client: &TableClient, table: &str, payload: Payload) -> GrpcConn {
        GrpcConn {
            table: client.table(table),
            payload,
        }
    }

    /// Runs one operation; returns the entities written or read.
    pub async fn execute(&mut self, op: &Op) -> Result<u64, OpError> {
        match op {
            Op::Insert { pk, rk, seq } => {
                let e = self.payload.sdk_entity(pk, rk, *seq);
                self.table.insert(e).await.map_err(sdk_error)?;
                Ok(1)
            }
            Op::Get { pk, rk } => {
                self.table.get(pk, rk).await.map_err(sdk_error)?;
                Ok(1)
            }
            Op::Upsert { pk, rk, seq } => {
                let e = self.payload.sdk_entity(pk, rk, *seq);
                self.table.upsert_replace(e).await.map_err(sdk_error)?;
                Ok(1)
            }
            Op::Merge { pk, rk, seq } => {
                let e = self.payload.sdk_entity(pk, rk, *seq);
                self.table.upsert_merge(e).await.map_err(sdk_error)?;
                Ok(1)
            }
            Op::Query { pk, top } => {
                let q = QueryBuilder::new()
                    .filter(format!("PartitionKey eq '{pk}'"))
                    .page_size(*top)
                    .limit(*top);
                let page = self.table.query_page(q).await.map_err(sdk_error)?;
                Ok(page.entities.len() as u64)
            }
            Op::Batch { pk, rks, seq } => {
                let ops = rks
                    .iter()
                    .map(|rk| op::insert(self.payload.sdk_entity(pk, rk, *seq)))
                    .collect();
                let n = self.table.batch(ops).await.map_err(sdk_error)?.len();
                Ok(n as u64)
            }
            Op::Lock => Err(OpError::new("a lock operation on a table connection")),
        }
    }

    /// Insert-or-replace of `rows` in one partition as one batch (the load phase).
    pub async fn upsert_batch(&mut self, pk: &str, rows: &[(&str, u64)]) -> Result<u64, OpError> {
        let ops = rows
            .iter()
            .map(|(rk, seq)| op::upsert_replace(self.payload.sdk_entity(pk, rk, *seq)))
            .collect();
        let n = self.table.batch(ops).await.map_err(sdk_error)?.len();
        Ok(n as u64)
    }
}

/// Creates the table; an existing table is fine.
pub async fn create_table(client: &TableClient, name: &str) -> Result<(), OpError> {
    match client.create_table(name).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::TableAlreadyExists) => Ok(()),
        Err(e) => Err(sdk_error(e)),
    }
}

/// `grpc InvalidInput`, `grpc timeout`, ...: the error code name, or the kind of transport failure.
pub(crate) fn sdk_error(e: trestle_client::Error) -> OpError {
    use trestle_client::Error as E;
    match (&e, e.code()) {
        (_, Some(code)) => OpError::new(format!("grpc {code:?}")),
        (E::Ambiguous(_), _) => OpError::new("grpc ambiguous"),
        (E::Timeout(_), _) => OpError::new("grpc timeout"),
        (E::InvalidArgument(_), _) => OpError::new("grpc invalid-argument"),
        (E::Protocol(_), _) => OpError::new("grpc protocol"),
        _ => OpError::new(format!("grpc {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::workload::KeyDistribution;

    fn cfg(kind: WorkloadKind, records: u64, partitions: u32) -> WorkloadConfig {
        WorkloadConfig {
            kind,
            entity_size: 100,
            partitions,
            records,
            distribution: KeyDistribution::Uniform,
            zipf_theta: 0.99,
            page_size: 250,
            query_partitions: 2,
            batch_size: 100,
            run_id: "r".into(),
            lock_hold_us: 0,
        }
    }

    #[test]
    fn the_load_phase_writes_every_record_once_in_single_partition_batches() {
        let c = cfg(WorkloadKind::Read, 1234, 7);
        let chunks = load_chunks(&c);
        let mut seen = HashSet::new();
        for (pk, rks) in &chunks {
            assert!(rks.len() <= 100 && !rks.is_empty());
            for rk in rks {
                assert!(seen.insert((pk.clone(), rk.clone())));
            }
        }
        let want: HashSet<_> = (0..1234).map(|i| record_key(&c, i)).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn query_partitions_hold_one_page_each() {
        let chunks = load_chunks(&cfg(WorkloadKind::Query, 0, 1));
        let total: usize = chunks.iter().map(|(_, r)| r.len()).sum();
        assert_eq!(total, 500);
        assert_eq!(chunks.len(), 6, "250 rows = 100 + 100 + 50, twice");
        assert!(load_chunks(&cfg(WorkloadKind::Insert, 10, 1)).is_empty());
    }

    #[test]
    fn occurrences_are_counted_without_overlap() {
        assert_eq!(
            count_occurrences(br#"{"RowKey":"a"},{"RowKey":"b"}"#, b"\"RowKey\":"),
            2
        );
        assert_eq!(count_occurrences(b"aaaa", b"aa"), 2);
        assert_eq!(count_occurrences(b"", b"x"), 0);
        assert_eq!(count_occurrences(b"abc", b""), 0);
    }

    fn opts() -> ConnectOptions {
        ConnectOptions {
            key: crate::signing::DEV_ACCOUNT_KEY.to_string(),
            ..ConnectOptions::default()
        }
    }

    #[tokio::test]
    async fn target_specs_parse_with_and_without_labels() {
        let opts = opts();
        let t = Target::parse("azurite=rest:http://127.0.0.1:1/devstoreaccount1", &opts)
            .await
            .unwrap();
        assert_eq!(
            (t.label.as_str(), t.protocol()),
            ("azurite", Protocol::Rest)
        );
        let g = Target::parse("grpc:127.0.0.1:1,127.0.0.1:2", &opts)
            .await
            .unwrap();
        assert_eq!(g.protocol(), Protocol::Grpc);
        assert_eq!(g.label, "grpc:127.0.0.1:1,127.0.0.1:2");
        let u = Target::parse("anon=grpc-unsigned:127.0.0.1:1", &opts)
            .await
            .unwrap();
        assert_eq!((u.label.as_str(), u.protocol()), ("anon", Protocol::Grpc));
        let e = Target::parse("etcd=etcd:127.0.0.1:1,127.0.0.1:2", &opts)
            .await
            .unwrap();
        assert_eq!((e.label.as_str(), e.protocol()), ("etcd", Protocol::Etcd));
        assert!(Target::parse("etcd:", &opts).await.is_err());
        assert!(Target::parse("http://x", &opts).await.is_err());
        assert!(Target::parse("grpc:", &opts).await.is_err());
        let https = "rest:https://127.0.0.1:1/devstoreaccount1";
        assert!(
            Target::parse(https, &opts).await.is_err(),
            "https needs --ca-file"
        );
    }

    #[tokio::test]
    async fn lock_workloads_run_on_trestle_grpc_and_etcd_only() {
        let opts = opts();
        let rest = Target::parse("rest:http://127.0.0.1:1/devstoreaccount1", &opts)
            .await
            .unwrap();
        let grpc = Target::parse("grpc:127.0.0.1:1", &opts).await.unwrap();
        let etcd = Target::parse("etcd:127.0.0.1:1", &opts).await.unwrap();
        for kind in [WorkloadKind::Lock, WorkloadKind::LockHandoff] {
            assert!(rest.check_workload(kind).is_err());
            assert!(grpc.check_workload(kind).is_ok());
            assert!(etcd.check_workload(kind).is_ok());
        }
        assert!(etcd.check_workload(WorkloadKind::Read).is_err());
        assert!(grpc.check_workload(WorkloadKind::Read).is_ok());
        let payload = Payload::new(100, 1);
        assert!(etcd.connection("t", payload.clone(), 0).is_err());
        let clock = Arc::new(HandoffClock::new());
        let c = cfg(WorkloadKind::LockHandoff, 0, 1);
        assert!(matches!(
            etcd.worker(&c, "t", payload, 3, &clock),
            Ok(Conn::Lock(_))
        ));
    }

    #[test]
    fn grpc_specs_say_whether_calls_are_signed_and_encrypted() {
        let signed = GrpcSpec::parse("grpc:127.0.0.1:1, 127.0.0.1:2").unwrap();
        assert_eq!(signed.addrs, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(signed.signed && !signed.tls());
        let unsigned = GrpcSpec::parse("grpc-unsigned:https://localhost:1").unwrap();
        assert_eq!(unsigned.addrs, ["https://localhost:1"]);
        assert!(!unsigned.signed && unsigned.tls());
        assert_eq!(GrpcSpec::parse("rest:http://h:1/a"), None);
        assert_eq!(GrpcSpec::parse("grpc:").unwrap().addrs.len(), 0);
    }
}
