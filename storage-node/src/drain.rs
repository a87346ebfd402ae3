//! Draining a node's leaderships for a restart or an upgrade (`trestle ctl node drain ID`), the
//! "upgrade domain" of the system Trestle follows: the node is marked ([`LocalTables::set_leaders_drained`],
//! kept on its own disk so the mark outlives the restart), and while marked it hands every range it
//! leads, the meta group included, to another voter ([`run_shed`]: at once, and again whenever it wins
//! an election). The leader balancer never gives it a range. Its replicas stay: it keeps voting and
//! replicating, so the ranges keep three copies and lose nothing while it restarts. `--cancel` clears
//! the mark and the balancer brings leaders back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trestle_proto::node as npb;
use trestle_proto::node::node_forward_client::NodeForwardClient;
use trestle_replication::Role;
use trestle_types::{Error, ErrorCode, Result};

use crate::cluster::ClusterTableService;
use crate::tables::LocalTables;

/// The local key (`Cf::Meta`) of the mark; present while the node's leaderships are drained.
const LEADERS_DRAINED_KEY: &str = "leaders-drained";

/// How often a drained node looks for ranges it leads.
const SHED_INTERVAL: Duration = Duration::from_millis(100);

/// How long `trestle ctl node drain` waits for the node to lead nothing.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

impl LocalTables {
    /// Whether this node's leaderships are drained (see the module docs).
    pub fn leaders_drained(&self) -> bool {
        self.local_mark(LEADERS_DRAINED_KEY)
    }

    /// Sets or clears the mark; durable before it returns.
    pub fn set_leaders_drained(&self, drained: bool) -> Result<()> {
        self.set_local_mark(LEADERS_DRAINED_KEY, drained)?;
        tracing::info!(drained, "leadership drain mark set");
        Ok(())
    }

    /// Hands every group this node leads to another voter (the one with the most of the log, a
    /// different one on each `attempt` so a silent voter is not asked forever); how many it led.
    async fn shed_leaderships(&self, attempt: usize) -> usize {
        let led: Vec<_> = self
            .group_statuses()
            .into_iter()
            .filter(|g| g.role == Role::Leader)
            .collect();
        for g in &led {
            let mut others: Vec<(u64, u64)> = g
                .progress
                .iter()
                .copied()
                .filter(|(peer, _)| *peer != self.raft().id())
                .collect();
            others.sort_by_key(|&(peer, matched)| (std::cmp::Reverse(matched), peer));
            if others.is_empty() {
                continue;
            }
            let (to, _) = others[attempt % others.len()];
            if let Err(e) = self.raft().transfer_leader(g.group, to).await {
                tracing::debug!(group = g.group, to, error = %e, "handing leadership over");
            }
        }
        led.len()
    }
}

/// While this node's leaderships are drained, hands over every range it leads, until `stop`.
pub async fn run_shed(local: Arc<LocalTables>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut attempt = 0usize;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SHED_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        if local.leaders_drained() && local.shed_leaderships(attempt / 10).await > 0 {
            // A transfer takes a few Raft round trips: ask the same voter for about a second first.
            attempt = attempt.wrapping_add(1);
        }
    }
}

impl ClusterTableService {
    /// Sets or clears node `node`'s leadership drain mark, on that node.
    pub async fn set_leaders_drained(&self, node: u64, drained: bool) -> Result<()> {
        if node == self.node_id() {
            return self.local().set_leaders_drained(drained);
        }
        let link = self.link(node)?;
        let mut client = NodeForwardClient::new(link.channel.clone());
        let call = client
            .set_leaders_drained(link.request(npb::SetLeadersDrainedRequest { drained }, None));
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .map_err(|_| Error::new(ErrorCode::ServerBusy, format!("node {node} did not answer")))?
            .map_err(|s| crate::forward::error_from_status(&s))?;
        Ok(())
    }

    /// Drains node `node`'s leaderships and waits until it leads no range (up to `timeout`).
    pub async fn drain_leaders(&self, node: u64, timeout: Duration) -> Result<()> {
        self.set_leaders_drained(node, true).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let leading = self
                .member_statuses()
                .await
                .into_iter()
                .find(|(n, _)| *n == node)
                .map(|(_, s)| s.ranges.iter().filter(|r| r.leader_node_id == node).count());
            match leading {
                Some(0) => return Ok(()),
                _ if Instant::now() >= deadline => {
                    return Err(Error::new(
                        ErrorCode::OperationTimedOut,
                        format!(
                            "node {node} still leads {} range(s); it stays drained and hands \
                             them over as it can",
                            leading.map_or("unknown".into(), |n| n.to_string())
                        ),
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
