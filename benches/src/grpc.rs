//! The gRPC driver: Trestle's own API through the Rust SDK (`trestle-client`), as an application would use
//! it. All workers share one [`TableClient`] (one HTTP/2 channel per node, multiplexed), which routes each
//! call to the range's leader and follows `NotLeader` redirects.

use trestle_client::{ErrorCode, QueryBuilder, Table, TableClient, op};

use crate::bodies::Payload;
use crate::driver::OpError;
use crate::workload::Op;

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
fn sdk_error(e: trestle_client::Error) -> OpError {
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
