//! [`Table`]: the entity calls on one table — writes, point reads, batches and queries.
//!
//! Every call is routed by (account, table, PartitionKey) so it goes straight to the leader of the
//! range that holds the entity, and runs through the client's retry loop. Writes are never repeated
//! after their request may have reached a node (see `client`); reads are.

use trestle_proto::auth::method;
use trestle_proto::table as pb;
use trestle_types::{
    BatchError, DateTime, ETag, Entity, EntityKey, IfMatch, QueryPage, WriteKind, WriteOp,
    WriteOutcome,
};

use crate::client::{Idempotency, TableClient};
use crate::error::{Error, Result};
use crate::op;
use crate::query::{EntityStream, QueryBuilder};
use crate::routing::RouteKey;

/// A fencing token from the lock manager, attached to writes: the range rejects any token lower than the
/// highest it has seen for the same lock (`FencingTokenStale`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fencing {
    pub lock: String,
    pub token: u64,
}

/// A handle on one table of one account. Cheap to clone; makes no call until used.
#[derive(Debug, Clone)]
pub struct Table {
    client: TableClient,
    name: String,
    fencing: Option<Fencing>,
}

impl Table {
    pub(crate) fn new(client: TableClient, name: String) -> Table {
        Table {
            client,
            name,
            fencing: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn client(&self) -> &TableClient {
        &self.client
    }

    /// The same table with every write (and batch) carrying `fencing`.
    pub fn with_fencing(mut self, fencing: Fencing) -> Table {
        self.fencing = Some(fencing);
        self
    }

    pub(crate) fn route(&self, partition_key: &str) -> RouteKey {
        RouteKey::new(self.client.account(), &self.name, partition_key)
    }

    /// Insert Entity; `EntityAlreadyExists` if the key is taken.
    pub async fn insert(&self, entity: Entity) -> Result<WriteOutcome> {
        self.write(op::insert(entity)).await
    }

    /// Update Entity: replaces an existing entity. `IfMatch::Any` (or `None`) needs it to exist
    /// (`ResourceNotFound`); `IfMatch::ETag` needs that version (`UpdateConditionNotSatisfied`).
    pub async fn replace(&self, entity: Entity, if_match: IfMatch) -> Result<WriteOutcome> {
        self.write(op::replace(entity, if_match)).await
    }

    /// Merge Entity: sets the given properties on an existing entity, keeping the others.
    pub async fn merge(&self, entity: Entity, if_match: IfMatch) -> Result<WriteOutcome> {
        self.write(op::merge(entity, if_match)).await
    }

    /// Insert Or Replace Entity.
    pub async fn upsert_replace(&self, entity: Entity) -> Result<WriteOutcome> {
        self.write(op::upsert_replace(entity)).await
    }

    /// Insert Or Merge Entity.
    pub async fn upsert_merge(&self, entity: Entity) -> Result<WriteOutcome> {
        self.write(op::upsert_merge(entity)).await
    }

    /// Delete Entity; `ResourceNotFound` if it does not exist, `UpdateConditionNotSatisfied` if an ETag
    /// is given and does not match.
    pub async fn delete(
        &self,
        partition_key: &str,
        row_key: &str,
        if_match: IfMatch,
    ) -> Result<()> {
        self.write(op::delete(partition_key, row_key, if_match))
            .await?;
        Ok(())
    }

    /// Any single write.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        let route = self.route(&op.entity.partition_key);
        let req = pb::WriteRequest {
            account: self.client.account().to_string(),
            table: self.name.clone(),
            op: Some(write_op_to_proto(&op)),
            fencing: self.fencing_proto(),
        };
        let resp = self
            .client
            .call(
                Some(&route),
                Idempotency::Write,
                self.client.deadline(),
                |mut c| {
                    let req = self.client.request(method::WRITE, req.clone());
                    async move { c.write(req).await }
                },
            )
            .await?;
        outcome(resp)
    }

    /// An entity group transaction: up to 100 operations on one PartitionKey, each entity at most once,
    /// applied all together or not at all. The results are in operation order. A failure is
    /// [`Error::Batch`] with the failed operation's index, when one failed.
    /// An empty batch succeeds without a call.
    pub async fn batch(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>> {
        let Some(first) = ops.first() else {
            return Ok(Vec::new());
        };
        let route = self.route(&first.entity.partition_key);
        let req = pb::BatchRequest {
            account: self.client.account().to_string(),
            table: self.name.clone(),
            ops: ops.iter().map(write_op_to_proto).collect(),
            fencing: self.fencing_proto(),
        };
        let resp = self
            .client
            .call(
                Some(&route),
                Idempotency::Write,
                self.client.deadline(),
                |mut c| {
                    let req = self.client.request(method::BATCH, req.clone());
                    async move { c.batch(req).await }
                },
            )
            .await
            .map_err(|e| match e {
                // A failure of the whole batch is still a batch failure, without an index.
                Error::Server { code, message } => Error::Batch(BatchError {
                    index: None,
                    error: trestle_types::Error::new(code, message),
                }),
                other => other,
            })?;
        if resp.results.len() != ops.len() {
            return Err(Error::Protocol(format!(
                "a batch of {} operations answered with {} results",
                ops.len(),
                resp.results.len()
            )));
        }
        resp.results.into_iter().map(outcome).collect()
    }

    /// Get Entity: all properties. `ResourceNotFound` if it does not exist.
    pub async fn get(&self, partition_key: &str, row_key: &str) -> Result<Entity> {
        self.get_selected(partition_key, row_key, Vec::<String>::new())
            .await
    }

    /// Get Entity with only the `select`ed properties (keys and timestamp always come back; an empty
    /// selection returns everything).
    pub async fn get_selected(
        &self,
        partition_key: &str,
        row_key: &str,
        select: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Entity> {
        let route = self.route(partition_key);
        let req = pb::GetRequest {
            account: self.client.account().to_string(),
            table: self.name.clone(),
            partition_key: partition_key.to_string(),
            row_key: row_key.to_string(),
            select: select.into_iter().map(Into::into).collect(),
        };
        let resp = self
            .client
            .call(
                Some(&route),
                Idempotency::Read,
                self.client.deadline(),
                |mut c| {
                    let req = self.client.request(method::GET, req.clone());
                    async move { c.get(req).await }
                },
            )
            .await?;
        let entity = resp
            .entity
            .ok_or_else(|| Error::Protocol("Get answered without an entity".into()))?;
        entity_from_proto(entity)
    }

    /// The entities the query matches, in (PartitionKey, RowKey) order, streamed from the server page
    /// by page. A stream interrupted by a leader change or a restarting node resumes after the last
    /// entity it yielded, so no entity is yielded twice or skipped.
    pub fn query(&self, query: QueryBuilder) -> EntityStream {
        crate::query::stream(self.clone(), query)
    }

    /// One page of the query (at most its page size, 1000 by default) and where the next page starts.
    /// Pass `page.next` to [`QueryBuilder::continuation`] to continue.
    pub async fn query_page(&self, query: QueryBuilder) -> Result<QueryPage> {
        crate::query::page(self, query).await
    }

    fn fencing_proto(&self) -> Option<pb::Fencing> {
        self.fencing.as_ref().map(|f| pb::Fencing {
            lock: f.lock.clone(),
            token: f.token,
        })
    }
}

pub(crate) fn write_kind_to_proto(kind: WriteKind) -> pb::WriteKind {
    match kind {
        WriteKind::Insert => pb::WriteKind::Insert,
        WriteKind::Replace => pb::WriteKind::Replace,
        WriteKind::Merge => pb::WriteKind::Merge,
        WriteKind::InsertOrReplace => pb::WriteKind::InsertOrReplace,
        WriteKind::InsertOrMerge => pb::WriteKind::InsertOrMerge,
        WriteKind::Delete => pb::WriteKind::Delete,
    }
}

pub(crate) fn write_op_to_proto(op: &WriteOp) -> pb::WriteOp {
    let entity = match op.kind {
        // A delete needs only the keys; the properties would only cost bytes.
        WriteKind::Delete => {
            Entity::new(op.entity.partition_key.clone(), op.entity.row_key.clone())
        }
        _ => op.entity.clone(),
    };
    pb::WriteOp {
        kind: write_kind_to_proto(op.kind) as i32,
        entity: Some(pb::Entity::from(&entity)),
        if_match: trestle_proto::convert::if_match_to_proto(op.if_match),
    }
}

pub(crate) fn entity_from_proto(e: pb::Entity) -> Result<Entity> {
    Entity::try_from(e).map_err(|e| Error::Protocol(e.to_string()))
}

fn outcome(r: pb::WriteResponse) -> Result<WriteOutcome> {
    Ok(WriteOutcome {
        etag: r.etag_ticks.map(|t| ETag(DateTime(t))),
        entity: r.entity.map(entity_from_proto).transpose()?,
    })
}

pub(crate) fn continuation_to_proto(k: &EntityKey) -> pb::Continuation {
    pb::Continuation {
        next_partition_key: k.partition_key.clone(),
        next_row_key: k.row_key.clone(),
    }
}

#[cfg(test)]
mod tests {
    use trestle_types::Value;

    use super::*;

    #[test]
    fn writes_go_out_with_their_kind_and_condition() {
        let e = Entity::new("p", "r").with("n", Value::Int64(1));
        let etag = ETag(DateTime(42));
        let w = write_op_to_proto(&op::merge(e.clone(), IfMatch::ETag(etag)));
        assert_eq!(w.kind, pb::WriteKind::Merge as i32);
        assert_eq!(
            trestle_proto::convert::if_match_from_proto(w.if_match.as_ref()),
            IfMatch::ETag(etag)
        );
        assert_eq!(w.entity.map(|e| e.properties.len()), Some(1));

        let d = write_op_to_proto(&op::delete(&e.partition_key, &e.row_key, IfMatch::Any));
        assert_eq!(d.kind, pb::WriteKind::Delete as i32);
        let keys = d.entity.unwrap();
        assert_eq!(
            (
                keys.partition_key.as_str(),
                keys.row_key.as_str(),
                keys.properties.len()
            ),
            ("p", "r", 0)
        );
    }

    #[test]
    fn outcomes_carry_the_etag_and_the_stored_entity() {
        let stored = Entity {
            timestamp: Some(DateTime(7)),
            ..Entity::new("p", "r")
        };
        let o = outcome(pb::WriteResponse {
            etag_ticks: Some(7),
            entity: Some(pb::Entity::from(&stored)),
        })
        .unwrap();
        assert_eq!(o.etag, Some(ETag(DateTime(7))));
        assert_eq!(o.entity, Some(stored));
        let deleted = outcome(pb::WriteResponse::default()).unwrap();
        assert_eq!(
            deleted,
            WriteOutcome {
                etag: None,
                entity: None
            }
        );
        let bad = pb::Entity {
            properties: vec![pb::Property {
                name: "x".into(),
                value: None,
            }],
            ..pb::Entity::default()
        };
        let malformed = outcome(pb::WriteResponse {
            etag_ticks: None,
            entity: Some(bad),
        });
        assert!(matches!(malformed, Err(Error::Protocol(_))));
    }
}
