//! [`TableClient`]: the entry point of the SDK, the table-management calls, and the one retry loop every
//! call goes through.
//!
//! The retry loop ([`TableClient::call`]) owns the rules of when a call may be repeated:
//!
//! - `NotLeader` is a refusal made before anything was proposed: any call retries, at the named leader
//!   at once (at most [`MAX_IMMEDIATE_REDIRECTS`] hops in a row, against two nodes that name each other),
//!   otherwise after a backoff.
//! - `ServerBusy` is retried after a backoff for reads; a write gets it back, since the node also answers
//!   it for a proposal in flight when it stopped (the error's `may_have_applied()` is true).
//! - A connection that could not be made sent nothing: any call retries, at the next seed.
//! - A failure after the request may have been sent is retried for reads ([`Idempotency::Read`]) only.
//!   A write ([`Idempotency::Write`]) then fails with [`Error::Ambiguous`], and so does a write whose
//!   response had not come back when the deadline passed.
//! - Everything else is the answer.
//!
//! One deadline (`ClientConfig::deadline`) bounds the whole call, retries and lookups included. When it
//! passes between attempts the call fails with [`Error::Timeout`]; for a write this means no attempt was
//! applied, since every earlier one was a definite refusal.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Status;
use tonic::transport::Channel;
use trestle_proto::admin::LocateRequest;
use trestle_proto::admin::admin_client::AdminClient;
use trestle_proto::table as pb;
use trestle_proto::table::table_service_client::TableServiceClient;
use trestle_types::TableInfo;

use crate::backoff::Backoff;
use crate::config::ClientConfig;
use crate::error::{Error, Failure, Result, classify};
use crate::routing::{RouteKey, Router};
use crate::table::Table;
use trestle_proto::auth::method;

/// Redirects to a named leader taken without a pause before backing off.
pub(crate) const MAX_IMMEDIATE_REDIRECTS: u32 = 2;
/// The longest a leader lookup may hold up a call; past it the call just goes to a seed.
const LOCATE_TIMEOUT: Duration = Duration::from_secs(1);

/// May a call be repeated after its request may have reached a node?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Reads: repeating them changes nothing.
    Read,
    /// Writes (entities, batches, table creation and deletion): repeating one that was applied could
    /// apply it twice or turn its success into a spurious conflict.
    Write,
    /// Safe to repeat, like a read, but one attempt may take this long (a waiting lock acquire).
    RepeatableWithin(Duration),
}

/// A client of a Trestle cluster over gRPC. Cheap to clone; clones share connections and the leader
/// cache.
#[derive(Clone)]
pub struct TableClient {
    shared: Arc<Shared>,
    account: String,
}

pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) config: ClientConfig,
}

/// One page of [`TableClient::list_tables_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePage {
    pub tables: Vec<TableInfo>,
    /// Where the next page starts, when more tables follow.
    pub next: Option<String>,
}

impl TableClient {
    /// A client of the cluster behind `endpoints` (any nodes of it; `http://host:port` or `host:port`),
    /// with the default configuration. Nothing is connected yet: connections are made on first use, so a
    /// node that is down now costs nothing until a call needs it.
    pub async fn connect(endpoints: impl IntoIterator<Item = String>) -> Result<TableClient> {
        TableClient::connect_with(endpoints, ClientConfig::default()).await
    }

    /// [`TableClient::connect`] with a configuration.
    pub async fn connect_with(
        endpoints: impl IntoIterator<Item = String>,
        config: ClientConfig,
    ) -> Result<TableClient> {
        config.validate()?;
        let router = Router::new(endpoints.into_iter().collect(), &config)?;
        let account = match config.account.as_str() {
            "" => config.credentials.account().unwrap_or_default().to_string(),
            a => a.to_string(),
        };
        Ok(TableClient {
            shared: Arc::new(Shared { router, config }),
            account,
        })
    }

    /// The same client acting on another storage account (connections and cache are shared).
    pub fn with_account(mut self, account: impl Into<String>) -> TableClient {
        self.account = account.into();
        self
    }

    /// The account this client acts on (empty: the node's default).
    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// A handle on one table; no call is made.
    pub fn table(&self, name: impl Into<String>) -> Table {
        Table::new(self.clone(), name.into())
    }

    /// Creates a table; `TableAlreadyExists` if one of that name (in any case) exists.
    pub async fn create_table(&self, name: &str) -> Result<TableInfo> {
        let req = pb::CreateTableRequest {
            account: self.account.clone(),
            table: name.to_string(),
        };
        let resp = self
            .call(None, Idempotency::Write, self.deadline(), |mut c| {
                let req = self.request(method::CREATE_TABLE, req.clone());
                async move { c.create_table(req).await }
            })
            .await?;
        let t = resp
            .table
            .ok_or_else(|| Error::Protocol("CreateTable answered without a table".into()))?;
        Ok(table_info(t))
    }

    /// Deletes a table and its entities; `ResourceNotFound` if it does not exist.
    pub async fn delete_table(&self, name: &str) -> Result<()> {
        let req = pb::DeleteTableRequest {
            account: self.account.clone(),
            table: name.to_string(),
        };
        self.call(None, Idempotency::Write, self.deadline(), |mut c| {
            let req = self.request(method::DELETE_TABLE, req.clone());
            async move { c.delete_table(req).await }
        })
        .await?;
        Ok(())
    }

    /// One page of tables in (case-folded) name order, starting at `start` (inclusive), at most `limit`
    /// (0: the server's page size, 1000).
    pub async fn list_tables_page(&self, start: Option<&str>, limit: u32) -> Result<TablePage> {
        let req = pb::ListTablesRequest {
            account: self.account.clone(),
            start_after: start.unwrap_or_default().to_string(),
            limit,
        };
        let resp = self
            .call(None, Idempotency::Read, self.deadline(), |mut c| {
                let req = self.request(method::LIST_TABLES, req.clone());
                async move { c.list_tables(req).await }
            })
            .await?;
        Ok(TablePage {
            tables: resp.tables.into_iter().map(table_info).collect(),
            next: resp.next_table,
        })
    }

    /// Every table of the account, page by page.
    pub async fn list_tables(&self) -> Result<Vec<TableInfo>> {
        let mut tables = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = self.list_tables_page(start.as_deref(), 0).await?;
            tables.extend(page.tables);
            match page.next {
                // A server that hands back the same start would loop forever.
                Some(next) if start.as_deref() != Some(next.as_str()) => start = Some(next),
                _ => return Ok(tables),
            }
        }
    }

    /// Escape hatch: the generated gRPC client on the current seed's channel, for calls the SDK does not
    /// wrap. No routing or retries.
    pub fn raw(&self) -> Result<TableServiceClient<Channel>> {
        let channel = self.shared.router.channel(&self.shared.router.seed())?;
        Ok(self.grpc(channel))
    }

    /// `msg` as a request of `method`, with the client's credentials attached (signed afresh on every
    /// attempt, so the date is current).
    pub(crate) fn request<T: prost::Message>(&self, method: &str, msg: T) -> tonic::Request<T> {
        self.shared
            .config
            .credentials
            .request(method, &self.account, msg)
    }

    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.shared.config.deadline
    }

    fn grpc(&self, channel: Channel) -> TableServiceClient<Channel> {
        let max = self.shared.config.max_message_bytes;
        TableServiceClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// Runs `attempt` against the right node until it succeeds, fails for good, or `deadline` passes
    /// (see the module header for the rules). `route` is what the call touches, for the leader cache;
    /// `None` (table management) goes to a seed.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        route: Option<&RouteKey>,
        idempotency: Idempotency,
        deadline: Instant,
        attempt: F,
    ) -> Result<T>
    where
        F: FnMut(TableServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_on(|c| self.grpc(c), route, idempotency, deadline, attempt)
            .await
    }

    /// [`TableClient::call`] for any generated client of the node's gRPC port (`wrap` builds it on a
    /// channel), e.g. the Lock service.
    pub(crate) async fn call_on<C, W, T, F, Fut>(
        &self,
        wrap: W,
        route: Option<&RouteKey>,
        idempotency: Idempotency,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T>
    where
        W: Fn(Channel) -> C,
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let router = &self.shared.router;
        let cfg = &self.shared.config;
        if let Some(key) = route {
            self.locate(key, deadline).await;
        }
        let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
        let mut redirect: Option<String> = None;
        let mut redirects = 0;
        loop {
            let addr = redirect.take().unwrap_or_else(|| router.address_for(route));
            let client = wrap(router.channel(&addr)?);
            let remaining = deadline.saturating_duration_since(Instant::now());
            // A read may try another node when one does not answer (a paused or partitioned node
            // keeps its connections open); a write waits for its answer, since repeating it is unsafe.
            let budget = match idempotency {
                Idempotency::Read => remaining.min(cfg.attempt_timeout),
                Idempotency::RepeatableWithin(d) => remaining.min(d),
                Idempotency::Write => remaining,
            };
            let status = match tokio::time::timeout(budget, attempt(client)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => {
                    // Whatever happens next, calls should not keep going to a node that is silent.
                    router.cache().forget_address(&addr, Instant::now());
                    router.skip_seed(&addr);
                    let what = format!("no response from {addr} within {budget:?}");
                    match idempotency {
                        Idempotency::Write => return Err(Error::Ambiguous(what)),
                        _ if budget >= remaining => return Err(Error::Timeout(what)),
                        _ => {
                            tracing::debug!(%addr, "read attempt timed out; trying another node");
                            continue;
                        }
                    }
                }
            };
            tracing::debug!(%addr, code = ?status.code(), message = status.message(), "attempt failed");
            match classify(&status) {
                Failure::Final(e) => return Err(e),
                Failure::NotLeader { leader } => {
                    let leader = leader.map(|l| router.normalize(&l));
                    if let Some(key) = route {
                        let mut cache = router.cache();
                        cache.forget(key, &addr);
                        if let Some(l) = &leader {
                            cache.learn(key, l, Instant::now());
                        }
                    }
                    match leader {
                        Some(l) if l != addr && redirects < MAX_IMMEDIATE_REDIRECTS => {
                            redirects += 1;
                            redirect = Some(l);
                            continue;
                        }
                        Some(l) => redirect = Some(l),
                        // An election is under way; another node may know more.
                        None => router.skip_seed(&addr),
                    }
                }
                Failure::Busy(e) => {
                    if idempotency == Idempotency::Write {
                        return Err(e);
                    }
                }
                Failure::NotSent => {
                    router.cache().forget_address(&addr, Instant::now());
                    router.skip_seed(&addr);
                }
                Failure::Transport => {
                    router.cache().forget_address(&addr, Instant::now());
                    router.skip_seed(&addr);
                    if idempotency == Idempotency::Write {
                        return Err(Error::Ambiguous(format!("{addr}: {}", status.message())));
                    }
                }
            }
            redirects = 0;
            // Bound first: the thread-local RNG must not live across the sleep (the future must be Send).
            let delay = backoff.next_before(&mut rand::thread_rng(), deadline);
            match delay {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    return Err(Error::Timeout(format!(
                        "gave up after the last attempt at {addr} failed: {}",
                        Error::from_status(&status)
                    )));
                }
            }
        }
    }

    /// Asks a node where `key`'s leader is, if nothing fresh is cached and lookups are enabled. Failures
    /// only cost the hint: the call then goes to a seed and is forwarded or redirected from there.
    async fn locate(&self, key: &RouteKey, deadline: Instant) {
        let router = &self.shared.router;
        if !self.shared.config.locate {
            return;
        }
        {
            let mut cache = router.cache();
            if !cache.needs_locate(key, Instant::now()) {
                return;
            }
            // Concurrent calls on the same table go to a seed meanwhile instead of looking it up too.
            cache.mark_unknown(key, Instant::now());
        }
        let seed = router.seed();
        let Ok(channel) = router.channel(&seed) else {
            return;
        };
        let req = self.request(
            method::LOCATE,
            LocateRequest {
                account: key.account.clone(),
                table: key.table.clone(),
                partition_key: key.partition_key.clone(),
            },
        );
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .min(LOCATE_TIMEOUT)
            / 2;
        match tokio::time::timeout(budget, AdminClient::new(channel).locate(req)).await {
            Ok(Ok(resp)) if !resp.get_ref().leader_grpc_addr.is_empty() => {
                let resp = resp.into_inner();
                let leader = router.normalize(&resp.leader_grpc_addr);
                let span = crate::routing::PartitionSpan {
                    first: resp.first_partition_key,
                    end: resp.end_partition_key,
                };
                router
                    .cache()
                    .learn_range(key, span, &leader, Instant::now());
            }
            Ok(Err(status)) if classify(&status) == Failure::NotSent => {
                router.skip_seed(&seed);
            }
            _ => {}
        }
    }
}

fn table_info(t: pb::TableInfo) -> TableInfo {
    TableInfo {
        name: t.name,
        id: t.id,
        policies: Vec::new(),
    }
}

impl std::fmt::Debug for TableClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableClient")
            .field("account", &self.account)
            .field("seed", &self.shared.router.seed())
            .finish_non_exhaustive()
    }
}
