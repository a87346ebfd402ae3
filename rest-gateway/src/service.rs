//! The seam between the REST front end and the cluster: the table service as the gateway sees it.
//!
//! The storage node implements [`TableService`] (routing each call to the leader of the right range, in
//! process or over gRPC); the gateway never sees Raft, ranges or RocksDB. Every method returns the
//! domain's [`trestle_types::Error`], whose `ErrorCode` the gateway maps to Azure's status and body.

use async_trait::async_trait;
use trestle_types::{
    AccessPolicy, BatchError, Entity, QueryPage, QuerySpec, Result, TableInfo, TableName, WriteOp,
    WriteOutcome,
};

/// A write may carry a fencing token from the lock manager (`x-trestle-fencing-token` header with the lock
/// name): the range rejects tokens lower than the highest it has seen for that lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fencing {
    pub lock: String,
    pub token: u64,
}

#[async_trait]
pub trait TableService: Send + Sync + 'static {
    /// Creates a table; `TableAlreadyExists` if a table of that name (case-insensitively) exists.
    async fn create_table(&self, account: &str, table: &TableName) -> Result<TableInfo>;

    /// Deletes a table and, eventually, its entities; `ResourceNotFound` if it does not exist.
    async fn delete_table(&self, account: &str, table: &str) -> Result<()>;

    /// Looks a table up (with its access policies); `TableNotFound` if it does not exist.
    async fn get_table(&self, account: &str, table: &str) -> Result<TableInfo>;

    /// Lists tables in case-folded name order, starting at `start` (inclusive, case-folded), at most
    /// `limit`; returns the page and the next table name when more follow.
    async fn list_tables(
        &self,
        account: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TableInfo>, Option<String>)>;

    /// Replaces the table's stored access policies (at most 5).
    async fn set_table_acl(
        &self,
        account: &str,
        table: &str,
        policies: Vec<AccessPolicy>,
    ) -> Result<()>;

    /// One entity write, acknowledged once a majority of the range's replicas have it durably.
    async fn write(
        &self,
        account: &str,
        table: &str,
        op: WriteOp,
        fencing: Option<Fencing>,
    ) -> Result<WriteOutcome>;

    /// An entity group transaction: up to 100 operations on one PartitionKey, applied atomically as one
    /// Raft command. Results are in operation order.
    async fn batch(
        &self,
        account: &str,
        table: &str,
        ops: Vec<WriteOp>,
        fencing: Option<Fencing>,
    ) -> Result<Vec<WriteOutcome>, BatchError>;

    /// A linearizable point read; `ResourceNotFound` if the entity does not exist, `TableNotFound` if the
    /// table does not.
    async fn get_entity(
        &self,
        account: &str,
        table: &str,
        partition_key: &str,
        row_key: &str,
    ) -> Result<Entity>;

    /// One page of a query, evaluated on the partition server, in (PartitionKey, RowKey) order.
    async fn query(&self, account: &str, table: &str, spec: QuerySpec) -> Result<QueryPage>;

    /// The account's table service properties document (XML), if one was ever set.
    async fn get_service_properties(&self, account: &str) -> Result<Option<String>>;

    /// Stores the account's table service properties document (already validated by the gateway).
    async fn set_service_properties(&self, account: &str, xml: String) -> Result<()>;
}
