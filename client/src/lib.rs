//! The Trestle Rust SDK: tables and entities over gRPC, routed to the leader, retried safely.
//!
//! ```no_run
//! # async fn demo() -> trestle_client::Result<()> {
//! use futures::TryStreamExt;
//! use trestle_client::{QueryBuilder, TableClient};
//! use trestle_types::{Entity, Value};
//!
//! use trestle_client::{ClientConfig, Credentials};
//!
//! // `trestle dev`'s development account; a real account: Credentials::from_connection_string(..).
//! let config = ClientConfig::default().with_credentials(Credentials::development());
//! let client = TableClient::connect_with(["http://127.0.0.1:10101".to_string()], config).await?;
//! client.create_table("people").await?;
//! let people = client.table("people");
//! people.insert(Entity::new("team-a", "ann").with("age", Value::Int32(41))).await?;
//! let ann = people.get("team-a", "ann").await?;
//! let found: Vec<Entity> = people.query(QueryBuilder::new().filter("age gt 40")).try_collect().await?;
//! # let _ = (ann, found); Ok(()) }
//! ```
//!
//! # How calls travel
//! A [`TableClient`] knows some nodes of a cluster (any of them will do: every node serves every request,
//! forwarding to the leader of the range involved). To skip that hop, the client keeps a cache of leader
//! addresses per table and PartitionKey, filled by `Admin.Locate` and by `NotLeader` redirects, and sends
//! each entity call straight to the leader it expects (module `routing`).
//!
//! # When calls are retried
//! One loop (`TableClient::call`) decides, within one deadline per call (10 s by default): refusals made
//! before anything was proposed (`NotLeader`) and connections that could not be made are retried for
//! every call, with exponential backoff and jitter; `ServerBusy` and failures after a request may have
//! been sent are retried for reads only. A write in that situation fails ([`Error::Ambiguous`], or the
//! `ServerBusy` code) with [`Error::may_have_applied`] true: it may have been applied, and repeating it
//! could apply it twice. [`Error::Timeout`] on a write means it was not applied.
//!
//! # Credentials
//! Every call is signed with the account key or carries a SAS ([`Credentials`], from code or an Azure
//! connection string); the node checks it exactly as the REST API checks Shared Key and SAS requests.
//!
//! # Types
//! The public API speaks `trestle_types` ([`Entity`](trestle_types::Entity), [`WriteOp`],
//! [`IfMatch`](trestle_types::IfMatch), [`ErrorCode`](trestle_types::ErrorCode), ...). Protobuf types
//! appear only behind the escape hatch [`TableClient::raw`].

mod backoff;
mod client;
mod config;
mod credentials;
mod error;
mod lock;
mod query;
mod routing;
mod table;

pub use client::{TableClient, TablePage};
pub use config::{ClientConfig, TlsSettings};
pub use credentials::{Credentials, DEV_ACCOUNT, DEV_ACCOUNT_KEY};
pub use error::{ERROR_CODE_HEADER, Error, FAILED_INDEX_HEADER, LEADER_HEADER, Result};
pub use lock::{Lease, LockClient, LockGuard, LockInfo};
pub use query::{EntityStream, QueryBuilder};
pub use table::{Fencing, Table};
/// The domain types of the public API, re-exported for convenience.
pub use trestle_types::{
    BatchError, ETag, Entity, EntityKey, ErrorCode, IfMatch, QueryPage, TableInfo, Value,
    WriteKind, WriteOp, WriteOutcome,
};

/// Builders of [`WriteOp`]s, for batches: `vec![op::insert(a), op::merge(b, IfMatch::Any)]`.
pub mod op {
    use trestle_types::{Entity, IfMatch, WriteKind, WriteOp};

    fn op(kind: WriteKind, entity: Entity, if_match: IfMatch) -> WriteOp {
        WriteOp {
            kind,
            entity,
            if_match,
        }
    }

    /// Insert Entity.
    pub fn insert(entity: Entity) -> WriteOp {
        op(WriteKind::Insert, entity, IfMatch::None)
    }

    /// Update Entity (replace an existing one).
    pub fn replace(entity: Entity, if_match: IfMatch) -> WriteOp {
        op(WriteKind::Replace, entity, if_match)
    }

    /// Merge Entity (into an existing one).
    pub fn merge(entity: Entity, if_match: IfMatch) -> WriteOp {
        op(WriteKind::Merge, entity, if_match)
    }

    /// Insert Or Replace Entity.
    pub fn upsert_replace(entity: Entity) -> WriteOp {
        op(WriteKind::InsertOrReplace, entity, IfMatch::None)
    }

    /// Insert Or Merge Entity.
    pub fn upsert_merge(entity: Entity) -> WriteOp {
        op(WriteKind::InsertOrMerge, entity, IfMatch::None)
    }

    /// Delete Entity.
    pub fn delete(partition_key: &str, row_key: &str, if_match: IfMatch) -> WriteOp {
        op(
            WriteKind::Delete,
            Entity::new(partition_key, row_key),
            if_match,
        )
    }
}
