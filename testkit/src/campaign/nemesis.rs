//! Applies a scheduled [`Fault`] to a [`ProcessCluster`] and heals it. A target such as "the data
//! leader" is resolved to a node when the fault is applied.

use std::fmt;

use anyhow::Context as _;

use super::schedule::{Fault, Target};
use crate::process::ProcessCluster;

/// The meta group's range id, and the data range the campaign's tables live in (one data range).
const META_RANGE: u64 = 1;
const DATA_RANGE: u64 = 2;

/// A fault in force, with what healing it takes.
#[derive(Clone, Debug)]
pub struct Applied {
    fault: Fault,
    nodes: Vec<u64>,
    /// What a power cut dropped.
    lost: String,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.to_string()).collect();
        write!(f, "{} (node {}{})", self.fault, nodes.join(", "), self.lost)
    }
}

async fn resolve(cluster: &ProcessCluster, target: Target) -> u64 {
    let range = match target {
        Target::Node(n) => return n,
        Target::DataLeader => DATA_RANGE,
        Target::MetaLeader => META_RANGE,
    };
    cluster.leader_of(range).await.unwrap_or(1)
}

fn others(cluster: &ProcessCluster, node: u64) -> Vec<u64> {
    cluster.ids().filter(|&m| m != node).collect()
}

/// Injects `fault`.
pub async fn apply(cluster: &mut ProcessCluster, fault: Fault) -> anyhow::Result<Applied> {
    let mut lost = String::new();
    let nodes = match fault {
        Fault::Kill(t) => {
            let n = resolve(cluster, t).await;
            cluster.kill9(n)?;
            vec![n]
        }
        Fault::Pause(t) => {
            let n = resolve(cluster, t).await;
            cluster.pause(n)?;
            vec![n]
        }
        Fault::Isolate(t) | Fault::CutOutbound(t) | Fault::CutInbound(t) => {
            let n = resolve(cluster, t).await;
            let others = others(cluster, n);
            let net = cluster
                .network()
                .context("partitions need network namespaces")?;
            for m in others {
                match fault {
                    Fault::Isolate(_) => net.cut(n, m)?,
                    Fault::CutOutbound(_) => net.cut_one_way(n, m)?,
                    _ => net.cut_one_way(m, n)?,
                }
            }
            vec![n]
        }
        Fault::ClockStep(t, secs) => {
            let n = resolve(cluster, t).await;
            cluster.set_clock_offset(n, secs)?;
            vec![n]
        }
        Fault::PowerOff(t) => {
            let n = resolve(cluster, t).await;
            let dropped = cluster.power_off(n)?;
            lost = format!("; {} bytes not fsynced lost", dropped.bytes);
            vec![n]
        }
        Fault::PowerOffAll => {
            let all: Vec<u64> = cluster.ids().collect();
            // Every process dies before any disk forgets: a power cut is one instant for all.
            for &n in &all {
                cluster.kill9(n)?;
            }
            let mut bytes = 0;
            for &n in &all {
                bytes += cluster.power_off(n)?.bytes;
            }
            lost = format!("; {bytes} bytes not fsynced lost");
            all
        }
    };
    Ok(Applied { fault, nodes, lost })
}

/// Heals what [`apply`] did.
pub async fn heal(cluster: &mut ProcessCluster, applied: Applied) -> anyhow::Result<()> {
    match applied.fault {
        Fault::Kill(_) | Fault::PowerOff(_) | Fault::PowerOffAll => {
            for n in applied.nodes {
                cluster.restart(n).await?;
            }
        }
        Fault::Pause(_) => {
            for n in applied.nodes {
                cluster.resume(n)?;
            }
        }
        Fault::Isolate(_) | Fault::CutOutbound(_) | Fault::CutInbound(_) => {
            cluster.network().context("no network")?.heal()?;
        }
        Fault::ClockStep(..) => {
            for n in applied.nodes {
                cluster.set_clock_offset(n, 0)?;
            }
        }
    }
    Ok(())
}
