//! Reading what a replica holds, bypassing the leader: straight from a node's engine (in-process) or from
//! a stopped node's RocksDB directory (process clusters). This is how tests prove that an acknowledged
//! write is on *every* replica, not merely readable through the leader.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use trestle_engine::{Cf, Engine, RocksConfig, RocksEngine, keys};
use trestle_storage_node::{meta_sm, query};
use trestle_types::Entity;

use crate::ProcessCluster;
use crate::process::admin_status;
use crate::wait::eventually;

/// The table id the replica's own catalog holds for `table` (no Raft read: what this replica applied).
pub fn table_id(engine: &dyn Engine, account: &str, table: &str) -> anyhow::Result<Option<u64>> {
    Ok(meta_sm::get_table(engine, account, table)?.map(|r| r.id))
}

/// One entity as stored on this replica.
pub fn entity(
    engine: &dyn Engine,
    account: &str,
    table: &str,
    pk: &str,
    rk: &str,
) -> anyhow::Result<Option<Entity>> {
    let Some(id) = table_id(engine, account, table)? else {
        return Ok(None);
    };
    let view = engine.snapshot();
    Ok(query::get_entity(view.as_ref(), id, pk, rk)?)
}

/// Every (PartitionKey, RowKey) of `table` stored in the RocksDB at `path` (the node must be stopped).
pub fn entities_on_disk(
    path: &Path,
    account: &str,
    table: &str,
) -> anyhow::Result<BTreeSet<(String, String)>> {
    let engine = RocksEngine::open(path, &RocksConfig::for_test())
        .with_context(|| format!("opening {}", path.display()))?;
    let id = table_id(&engine, account, table)?.context("the table is in the replica's catalog")?;
    let prefix = keys::table_prefix(id);
    let end = keys::prefix_end(&prefix);
    let mut out = BTreeSet::new();
    for kv in engine.scan(Cf::Data, &prefix, end.as_deref())? {
        let (k, _) = kv?;
        if let Some((_, pk, rk)) = keys::decode_data_key(&k) {
            out.insert((pk, rk));
        }
    }
    Ok(out)
}

/// The range holding `table`, from the Admin service of the node at `endpoint`.
pub async fn range_of_table(endpoint: &str, account: &str, table: &str) -> anyhow::Result<u64> {
    let mut c =
        trestle_proto::admin::admin_client::AdminClient::connect(endpoint.to_string()).await?;
    let mut request = tonic::Request::new(trestle_proto::admin::LocateRequest {
        account: account.into(),
        table: table.into(),
        partition_key: String::new(),
    });
    crate::sign_as_dev_account(&mut request, trestle_proto::auth::method::LOCATE, account);
    let r = c.locate(request).await?;
    Ok(r.into_inner().range_id)
}

/// Waits until, for every range, every running node reports the same applied index.
pub async fn wait_converged(cluster: &ProcessCluster, limit: Duration) -> bool {
    eventually(limit, || async {
        let mut views = Vec::new();
        for id in 1..=3u64 {
            if let Some(s) = admin_status(
                &cluster.grpc_endpoint(id),
                crate::process::PROCESS_CLUSTER_TOKEN,
            )
            .await
            {
                views.push(s);
            }
        }
        if views.len() < 3 {
            return None;
        }
        let applied = |s: &trestle_proto::admin::StatusResponse| -> Vec<(u64, u64)> {
            s.ranges
                .iter()
                .map(|r| {
                    (
                        r.range_id,
                        r.replicas.first().map(|x| x.applied_index).unwrap_or(0),
                    )
                })
                .collect()
        };
        let first = applied(&views[0]);
        views.iter().all(|v| applied(v) == first).then_some(())
    })
    .await
    .is_some()
}
