//! Queries: [`QueryBuilder`], the resumable entity stream behind `Table::query`, and `Table::query_page`.
//!
//! The server streams a query as pages (one `QueryResponse` per page, the last one carrying the
//! continuation when the query stopped at its limit). The stream here turns that into one entity at a
//! time and survives the stream breaking: when a node restarts or loses its leadership mid-query, the
//! query is reopened at the last entity already yielded (continuations are inclusive) and that entity is
//! skipped if it comes back. So the caller sees every matching entity once, in key order, and never more
//! than `limit` of them.
//!
//! Invariant: each reopen must be preceded by progress or a backoff, and the time without progress is
//! bounded by the client's deadline, so a query against a dead cluster ends with `Timeout`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Instant;

use futures::Stream;
use trestle_proto::auth::method;
use trestle_proto::table as pb;
use trestle_types::{Entity, EntityKey, QueryPage, limits};

use crate::backoff::Backoff;
use crate::client::Idempotency;
use crate::error::{Error, Failure, Result, classify};
use crate::table::{Table, continuation_to_proto, entity_from_proto};

/// The entities of a query, one at a time.
pub type EntityStream = Pin<Box<dyn Stream<Item = Result<Entity>> + Send>>;

/// What to query: an OData `$filter`, a projection, a total limit, a page size and where to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryBuilder {
    filter: String,
    select: Vec<String>,
    limit: Option<u32>,
    page_size: Option<u32>,
    continuation: Option<EntityKey>,
}

impl QueryBuilder {
    /// Everything in the table.
    pub fn new() -> QueryBuilder {
        QueryBuilder::default()
    }

    /// `$filter` text as Azure accepts it, e.g. `PartitionKey eq 'p1' and Age gt 30`. Parsed (and
    /// rejected with `InvalidInput`) by the server.
    pub fn filter(mut self, filter: impl Into<String>) -> QueryBuilder {
        self.filter = filter.into();
        self
    }

    /// Only these properties come back (keys and timestamp always do).
    pub fn select(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> QueryBuilder {
        self.select = names.into_iter().map(Into::into).collect();
        self
    }

    /// At most this many entities in total.
    pub fn limit(mut self, limit: u32) -> QueryBuilder {
        self.limit = Some(limit);
        self
    }

    /// Entities per page (at most 1000, the default).
    pub fn page_size(mut self, page_size: u32) -> QueryBuilder {
        self.page_size = Some(page_size.clamp(1, limits::MAX_PAGE_ENTITIES as u32));
        self
    }

    /// Start at this key (inclusive): the `next` of a previous page.
    pub fn continuation(mut self, next: EntityKey) -> QueryBuilder {
        self.continuation = Some(next);
        self
    }

    fn request(
        &self,
        table: &Table,
        from: Option<&EntityKey>,
        limit: Option<u32>,
    ) -> pb::QueryRequest {
        pb::QueryRequest {
            account: table.client().account().to_string(),
            table: table.name().to_string(),
            filter: self.filter.clone(),
            select: self.select.clone(),
            continuation: from.map(continuation_to_proto),
            limit: limit.unwrap_or(0),
            page_size: self.page_size.unwrap_or(0),
        }
    }
}

/// One page: at most `page_size` entities (and at most `limit`), plus where the next page starts.
pub(crate) async fn page(table: &Table, q: QueryBuilder) -> Result<QueryPage> {
    let size = q.page_size.unwrap_or(limits::MAX_PAGE_ENTITIES as u32);
    let n = q.limit.map_or(size, |l| l.min(size));
    if n == 0 {
        return Ok(QueryPage {
            entities: Vec::new(),
            next: q.continuation,
        });
    }
    let req = q.request(table, q.continuation.as_ref(), Some(n));
    let client = table.client();
    let route = table.route("");
    let (entities, next) = client
        .call(
            Some(&route),
            Idempotency::Read,
            client.deadline(),
            |mut c| {
                let req = client.request(method::QUERY, req.clone());
                async move {
                    let response = c.query(req).await?;
                    let mut stream = response.into_inner();
                    let mut entities = Vec::new();
                    let mut next = None;
                    while let Some(m) = stream.message().await? {
                        entities.extend(m.entities);
                        next = m.continuation.or(next);
                    }
                    Ok(tonic::Response::new((entities, next)))
                }
            },
        )
        .await?;
    Ok(QueryPage {
        entities: entities
            .into_iter()
            .map(entity_from_proto)
            .collect::<Result<_>>()?,
        next: next.map(|c| EntityKey::new(c.next_partition_key, c.next_row_key)),
    })
}

/// The entity stream of `Table::query`.
pub(crate) fn stream(table: Table, q: QueryBuilder) -> EntityStream {
    let cfg = table.client().config();
    let backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    let cursor = Cursor {
        from: q.continuation.clone(),
        table,
        q,
        stream: None,
        buffer: VecDeque::new(),
        skip: None,
        yielded: 0,
        progress_deadline: None,
        backoff,
        done: false,
    };
    Box::pin(futures::stream::unfold(cursor, |mut c| async move {
        c.next().await.map(|item| (item, c))
    }))
}

/// Where a streamed query stands.
struct Cursor {
    table: Table,
    q: QueryBuilder,
    /// The open server stream, if any.
    stream: Option<tonic::Streaming<pb::QueryResponse>>,
    buffer: VecDeque<pb::Entity>,
    /// Where a (re)opened stream starts: the last yielded key, or the query's continuation.
    from: Option<EntityKey>,
    /// After a reopen at the last yielded key, that entity comes back first and is skipped.
    skip: Option<EntityKey>,
    yielded: u32,
    /// Reopening gives up past this point; reset whenever an entity is yielded.
    progress_deadline: Option<Instant>,
    backoff: Backoff,
    done: bool,
}

impl Cursor {
    async fn next(&mut self) -> Option<Result<Entity>> {
        loop {
            if self.done || self.q.limit.is_some_and(|l| self.yielded >= l) {
                self.done = true;
                return None;
            }
            if let Some(e) = self.buffer.pop_front() {
                let key = EntityKey::new(e.partition_key.clone(), e.row_key.clone());
                if self.skip.take().is_some_and(|s| s == key) {
                    continue;
                }
                return Some(self.yield_entity(e, key));
            }
            if let Err(e) = self.fill().await {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    fn yield_entity(&mut self, e: pb::Entity, key: EntityKey) -> Result<Entity> {
        self.yielded += 1;
        self.from = Some(key);
        self.progress_deadline = None;
        self.backoff.reset();
        entity_from_proto(e).inspect_err(|_| self.done = true)
    }

    fn deadline(&mut self) -> Instant {
        *self
            .progress_deadline
            .get_or_insert_with(|| self.table.client().deadline())
    }

    /// Gets more entities into the buffer: opens the stream, or reads its next message. Ends the query
    /// when the stream is finished; reopens it when it broke.
    async fn fill(&mut self) -> Result<()> {
        let deadline = self.deadline();
        let Some(stream) = self.stream.as_mut() else {
            self.stream = Some(self.open(deadline).await?);
            return Ok(());
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let status = match tokio::time::timeout(remaining, stream.message()).await {
            Ok(Ok(Some(m))) => {
                self.buffer.extend(m.entities);
                return Ok(());
            }
            Ok(Ok(None)) => {
                // The server sends everything that matches up to our limit, so a finished stream is a
                // finished query.
                self.done = true;
                return Ok(());
            }
            Ok(Err(status)) => status,
            Err(_) => {
                return Err(Error::Timeout(
                    "no query results within the deadline".into(),
                ));
            }
        };
        self.stream = None;
        match classify(&status) {
            Failure::Final(e) => Err(e),
            _ => {
                // Broken mid-stream: reopen after the last yielded entity, after a pause.
                let Some(delay) = self.backoff.next_before(&mut rand::thread_rng(), deadline)
                else {
                    return Err(Error::Timeout(format!(
                        "query stream broke: {}",
                        status.message()
                    )));
                };
                tokio::time::sleep(delay).await;
                Ok(())
            }
        }
    }

    async fn open(&mut self, deadline: Instant) -> Result<tonic::Streaming<pb::QueryResponse>> {
        // Resuming at the last yielded key asks for one entity more, since it comes back first.
        let resuming = self.yielded > 0;
        self.skip = if resuming { self.from.clone() } else { None };
        let limit = self.q.limit.map(|l| l - self.yielded + u32::from(resuming));
        let req = self.q.request(&self.table, self.from.as_ref(), limit);
        let route = self.table.route("");
        let client = self.table.client();
        client
            .call(Some(&route), Idempotency::Read, deadline, |mut c| {
                let req = client.request(method::QUERY, req.clone());
                async move { c.query(req).await }
            })
            .await
    }
}
