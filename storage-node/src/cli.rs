//! `trestle ctl`: cluster status and admin actions over the Admin gRPC service.
//!
//! Every Admin call needs the admin token (the node's `admin-token`, or its `cluster-token` when none is
//! set): from `--admin-token`, else `TRESTLE_ADMIN_TOKEN`, else the file `--admin-token-file` names
//! (`trestle dev` prints its path). A flag on a shared machine shows up in `ps`; prefer the file or env.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use trestle_proto::admin::admin_client::AdminClient;
use trestle_proto::admin::{StatusRequest, StatusResponse, TransferLeaderRequest};

#[derive(Args)]
pub struct CtlArgs {
    /// gRPC address of any node.
    #[arg(long, default_value = "http://127.0.0.1:10101", global = true)]
    addr: String,
    /// The admin token.
    #[arg(
        long,
        global = true,
        env = "TRESTLE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// A file holding the admin token (e.g. a `trestle dev` data directory's `cluster-token`).
    #[arg(long, global = true)]
    admin_token_file: Option<std::path::PathBuf>,
    /// Connect over TLS, verifying the nodes' certificates against this PEM file (the cluster's CA, or
    /// `trestle dev --tls`'s certificate). Implied by an `https://` address, which without this flag
    /// trusts the public web roots.
    #[arg(long, global = true)]
    ca_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Nodes, ranges, leaders, commit and applied indexes, as every reachable node sees them.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every held lock: scope (account, or _system for Trestle's own), name, holder lease and owner,
    /// fencing token, TTL and time left (by the meta leader's clock), waiters.
    Locks {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move a range's leadership to another node.
    TransferLeader {
        #[arg(long)]
        range: u64,
        #[arg(long)]
        to: u64,
    },
    /// Range operations.
    Range {
        #[command(subcommand)]
        command: RangeCommand,
    },
    /// Node operations.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
enum NodeCommand {
    /// Mark a node as draining and move every replica off it (to the nodes with the fewest, other
    /// zones first); answers when the node holds none. The mark stays: the partition manager finishes
    /// a decommission that was cut short and places no replica there until `--cancel`.
    Decommission {
        id: u64,
        /// Take the node back: clear its draining mark (replicas already moved stay where they are).
        #[arg(long)]
        cancel: bool,
    },
    /// Move every range leadership off a node and keep new ones away, so it can be restarted or
    /// upgraded without failing a request; answers when it leads nothing. The mark stays across the
    /// node's restarts until `--cancel` (then the leader balancer brings leaders back).
    Drain {
        id: u64,
        /// Clear the mark: the node may lead ranges again.
        #[arg(long)]
        cancel: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
enum RangeCommand {
    /// Split a data range: at a partition (`--table T --partition-key PK`: that partition starts the
    /// new range), or at the partition boundary nearest the middle of its data (`--range ID`).
    Split {
        #[arg(long, required_unless_present = "table")]
        range: Option<u64>,
        /// The account of `--table` (default: the development account).
        #[arg(long, default_value = "")]
        account: String,
        #[arg(long, requires = "partition_key")]
        table: Option<String>,
        #[arg(long, requires = "table")]
        partition_key: Option<String>,
    },
    /// Merge a data range into the range just before it (both must have their replicas on the same
    /// nodes; nothing is copied). Finishes, or rolls back, a merge that was cut short.
    Merge {
        #[arg(long)]
        range: u64,
    },
    /// Move a range's replica from one node to another (the new one joins as a learner, catches up
    /// by snapshot, then replaces the old one in one joint change).
    Move {
        #[arg(long)]
        range: u64,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
}

/// How ctl reaches the nodes: the scheme and, for TLS, what it trusts.
struct Connector {
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Connector {
    fn new(args: &CtlArgs) -> anyhow::Result<Connector> {
        let tls = match &args.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading the CA file {}", path.display()))?;
                Some(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                )
            }
            None if args.addr.starts_with("https://") => {
                Some(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
            }
            None => None,
        };
        Ok(Connector { tls })
    }

    async fn admin(&self, addr: &str) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
        let bare = addr
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{bare}"))
            .with_context(|| format!("bad address {addr}"))?
            .connect_timeout(std::time::Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        Ok(AdminClient::new(channel))
    }
}

/// The admin token from the flag, the environment or the file, in that order.
fn admin_token(args: &CtlArgs) -> anyhow::Result<String> {
    if let Some(t) = &args.admin_token {
        return Ok(t.trim().to_string());
    }
    if let Some(path) = &args.admin_token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the admin token from {}", path.display()))?;
        return Ok(text.trim().to_string());
    }
    anyhow::bail!(
        "Admin calls need the admin token: pass --admin-token-file FILE (trestle dev prints it), \
         set TRESTLE_ADMIN_TOKEN, or pass --admin-token"
    )
}

/// `msg` with the admin token attached.
fn authorized<T>(msg: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(msg);
    let value = tonic::metadata::MetadataValue::try_from(token)
        .context("the admin token must be printable ASCII")?;
    request
        .metadata_mut()
        .insert(trestle_proto::auth::ADMIN_TOKEN, value);
    Ok(request)
}

async fn status_of(
    connector: &Connector,
    addr: &str,
    token: &str,
) -> anyhow::Result<StatusResponse> {
    let mut client = connector.admin(addr).await?;
    Ok(client
        .status(authorized(StatusRequest {}, token)?)
        .await?
        .into_inner())
}

pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let token = admin_token(&args)?;
    let connector = Connector::new(&args)?;
    match args.command {
        CtlCommand::Status { json } => {
            let first = status_of(&connector, &args.addr, &token).await?;
            // Ask every node for its own view: each node reports the replicas it hosts.
            let mut views = Vec::new();
            for n in &first.nodes {
                match status_of(&connector, &n.grpc_addr, &token).await {
                    Ok(s) => views.push((n.id, Some(s))),
                    Err(_) => views.push((n.id, None)),
                }
            }
            if json {
                println!("{}", render_json(&first, &views));
            } else {
                print!("{}", render_table(&first, &views));
            }
            Ok(())
        }
        CtlCommand::Locks { json } => {
            // Ask the meta leader: its TTLs left are the ones that count.
            let first = status_of(&connector, &args.addr, &token).await?;
            let leader = first
                .ranges
                .iter()
                .find(|r| r.range_id == 1)
                .map(|r| r.leader_node_id)
                .and_then(|id| first.nodes.iter().find(|n| n.id == id))
                .map_or(args.addr.clone(), |n| n.grpc_addr.clone());
            let mut client = connector.admin(&leader).await?;
            let resp = client
                .locks(authorized(trestle_proto::admin::LocksRequest {}, &token)?)
                .await?
                .into_inner();
            if json {
                let locks: Vec<serde_json::Value> = resp
                    .locks
                    .iter()
                    .map(|l| {
                        serde_json::json!({"scope": l.scope, "name": l.name, "lease": l.lease,
                            "owner": l.owner, "token": l.token, "ttl_ms": l.ttl_ms,
                            "remaining_ms": l.remaining_ms, "waiters": l.waiters})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"meta_leader": resp.meta_leader, "locks": locks})
                );
            } else {
                print!("{}", render_locks(&resp));
            }
            Ok(())
        }
        CtlCommand::TransferLeader { range, to } => {
            let mut client = connector.admin(&args.addr).await?;
            client
                .transfer_leader(authorized(
                    TransferLeaderRequest {
                        range_id: range,
                        to_node_id: to,
                    },
                    &token,
                )?)
                .await?;
            println!("asked range {range} to transfer leadership to node {to}");
            Ok(())
        }
        CtlCommand::Range {
            command: RangeCommand::Move { range, from, to },
        } => {
            let mut client = connector.admin(&args.addr).await?;
            let resp = client
                .move_replica(authorized(
                    trestle_proto::admin::MoveReplicaRequest {
                        range_id: range,
                        from_node_id: from,
                        to_node_id: to,
                    },
                    &token,
                )?)
                .await?
                .into_inner();
            match resp.range {
                Some(d) => println!(
                    "range {range} moved from node {from} to node {to}: voters {:?} (conf version {})",
                    d.voters, d.conf_ver
                ),
                None => println!("range {range} moved from node {from} to node {to}"),
            }
            Ok(())
        }
        CtlCommand::Node {
            command: NodeCommand::Drain { id, cancel },
        } => {
            let mut client = connector.admin(&args.addr).await?;
            client
                .drain(authorized(
                    trestle_proto::admin::DrainRequest {
                        node_id: id,
                        cancel,
                    },
                    &token,
                )?)
                .await?;
            if cancel {
                println!("node {id} may lead ranges again");
            } else {
                println!("node {id} leads no range");
            }
            Ok(())
        }
        CtlCommand::Node {
            command: NodeCommand::Decommission { id, cancel },
        } => {
            let mut client = connector.admin(&args.addr).await?;
            let resp = client
                .decommission(authorized(
                    trestle_proto::admin::DecommissionRequest {
                        node_id: id,
                        cancel,
                    },
                    &token,
                )?)
                .await?
                .into_inner();
            if cancel {
                println!("node {id} is no longer draining");
                return Ok(());
            }
            for m in &resp.moves {
                println!("{m}");
            }
            println!("node {id} holds no replicas ({} moved)", resp.moves.len());
            Ok(())
        }
        CtlCommand::Range {
            command:
                RangeCommand::Split {
                    range,
                    account,
                    table,
                    partition_key,
                },
        } => {
            let mut client = connector.admin(&args.addr).await?;
            let resp = client
                .split_range(authorized(
                    trestle_proto::admin::SplitRangeRequest {
                        range_id: range.unwrap_or_default(),
                        account,
                        table: table.unwrap_or_default(),
                        partition_key,
                    },
                    &token,
                )?)
                .await?
                .into_inner();
            for half in [resp.left, resp.right].into_iter().flatten() {
                let desc = crate::splits::descriptor_from_proto(&half);
                println!(
                    "range {} (version {}): {}",
                    desc.id, desc.epoch.version, desc
                );
            }
            Ok(())
        }
        CtlCommand::Range {
            command: RangeCommand::Merge { range },
        } => {
            let mut client = connector.admin(&args.addr).await?;
            let resp = client
                .merge_range(authorized(
                    trestle_proto::admin::MergeRangeRequest { range_id: range },
                    &token,
                )?)
                .await?
                .into_inner();
            let merged = resp
                .merged
                .map(|d| crate::splits::descriptor_from_proto(&d))
                .context("the answer names no merged range")?;
            println!(
                "range {range} merged into range {} (version {}): {}",
                merged.id, merged.epoch.version, merged
            );
            Ok(())
        }
    }
}

/// Renders the held locks as text, one line each.
pub fn render_locks(resp: &trestle_proto::admin::LocksResponse) -> String {
    let mut out = format!(
        "{:<18} {:<32} {:<10} {:<16} {:<10} {:>8} {:>10} WAITERS\n",
        "SCOPE", "NAME", "LEASE", "OWNER", "TOKEN", "TTL", "LEFT"
    );
    for l in &resp.locks {
        out += &format!(
            "{:<18} {:<32} {:<10} {:<16} {:<10} {:>7}s {:>9.1}s {}\n",
            l.scope,
            l.name,
            l.lease,
            l.owner,
            l.token,
            l.ttl_ms / 1000,
            l.remaining_ms as f64 / 1000.0,
            l.waiters.len()
        );
    }
    if !resp.meta_leader {
        out +=
            "(answered by a node that does not lead the meta group: times left are approximate)\n";
    }
    out
}

/// Renders the cluster as text: the nodes, then one line per (range, replica).
pub fn render_table(first: &StatusResponse, views: &[(u64, Option<StatusResponse>)]) -> String {
    let mut out = format!(
        "cluster {}\n\nNODE  GRPC                   REST                   STATE\n",
        first.cluster_id
    );
    for n in &first.nodes {
        let view = views
            .iter()
            .find(|(id, _)| *id == n.id)
            .and_then(|(_, v)| v.as_ref());
        out += &format!(
            "{:<5} {:<22} {:<22} {}\n",
            n.id,
            n.grpc_addr,
            if n.rest_addr.is_empty() {
                "-"
            } else {
                &n.rest_addr
            },
            match view {
                Some(v) if v.draining => "up, draining",
                Some(v) if v.leaders_drained => "up, leaders drained",
                Some(_) => "up",
                None => "unreachable",
            }
        );
    }
    out += "\nRANGE SPAN                          NODE  ROLE        TERM   COMMIT   APPLIED  LAST     MATCHED  LAG    SIZE       OPS\n";
    let matched = leaders_view_of_matched(views);
    let mut rows: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for (node, view) in views {
        let Some(view) = view else { continue };
        for r in &view.ranges {
            for rep in r.replicas.iter().filter(|rep| rep.node_id == *node) {
                let lag = rep.commit_index.saturating_sub(rep.applied_index);
                rows.insert(
                    (r.range_id, rep.node_id),
                    format!(
                        "{:<5} {:<29} {:<5} {:<11} {:<6} {:<8} {:<8} {:<8} {:<8} {:<6} {:<10} {}\n",
                        r.range_id,
                        r.span,
                        rep.node_id,
                        rep.role,
                        rep.term,
                        rep.commit_index,
                        rep.applied_index,
                        rep.last_index,
                        matched
                            .get(&(r.range_id, rep.node_id))
                            .map_or("-".to_string(), u64::to_string),
                        lag,
                        human_bytes(r.approximate_bytes),
                        r.writes + r.reads
                    ),
                );
            }
        }
    }
    for line in rows.values() {
        out += line;
    }
    // Ranges frozen for a merge (a merge in flight, or one cut short that the scheduler will finish).
    let frozen: BTreeMap<u64, (u64, u64)> = views
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .flat_map(|v| v.ranges.iter())
        .filter_map(|r| Some((r.range_id, (r.merging_into?, r.merge_index))))
        .collect();
    for (range, (into, index)) in frozen {
        out += &format!("range {range} is merging into range {into} (frozen at index {index})\n");
    }
    // Ranges and leaders per node, as the nodes report them.
    out += "\nNODE  REPLICAS LEADERS   BYTES LED\n";
    for (node, view) in views {
        let Some(view) = view else { continue };
        let leads = |r: &&trestle_proto::admin::RangeStatus| r.leader_node_id == *node;
        out += &format!(
            "{:<5} {:<8} {:<9} {}\n",
            node,
            view.ranges.len(),
            view.ranges.iter().filter(leads).count(),
            human_bytes(
                view.ranges
                    .iter()
                    .filter(leads)
                    .map(|r| r.approximate_bytes)
                    .sum()
            )
        );
    }
    if let Some(last) = views
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .map(|v| v.scheduler.as_str())
        .find(|s| !s.is_empty())
    {
        out += &format!("\nrange scheduler: {last}\n");
    }
    out
}

/// `1.5 MiB`-style sizes.
/// (range, node) → how far that replica has matched its leader's log, as each range's leader reports.
fn leaders_view_of_matched(views: &[(u64, Option<StatusResponse>)]) -> BTreeMap<(u64, u64), u64> {
    let mut out = BTreeMap::new();
    for (node, view) in views {
        let Some(view) = view else { continue };
        for r in view.ranges.iter().filter(|r| r.leader_node_id == *node) {
            for rep in &r.replicas {
                out.insert((r.range_id, rep.node_id), rep.matched_index);
            }
        }
    }
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn render_json(first: &StatusResponse, views: &[(u64, Option<StatusResponse>)]) -> String {
    let nodes: Vec<serde_json::Value> = first
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({"id": n.id, "grpc_addr": n.grpc_addr, "rest_addr": n.rest_addr,
            "up": views.iter().any(|(id, v)| *id == n.id && v.is_some())})
        })
        .collect();
    let matched = leaders_view_of_matched(views);
    let mut replicas = Vec::new();
    for (node, view) in views {
        let Some(view) = view else { continue };
        for r in &view.ranges {
            for rep in r.replicas.iter().filter(|rep| rep.node_id == *node) {
                replicas.push(serde_json::json!({
                    "range": r.range_id, "span": r.span, "leader": r.leader_node_id, "node": rep.node_id,
                    "role": rep.role, "term": rep.term, "commit": rep.commit_index,
                    "applied": rep.applied_index, "last": rep.last_index,
                    "matched": matched.get(&(r.range_id, rep.node_id)),
                    "merging_into": r.merging_into,
                    "bytes": r.approximate_bytes, "writes": r.writes, "reads": r.reads,
                    "version": r.desc.as_ref().map(|d| d.version),
                }));
            }
        }
    }
    let scheduler = views
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .map(|v| v.scheduler.clone())
        .find(|s| !s.is_empty());
    serde_json::json!({"cluster": first.cluster_id, "nodes": nodes, "replicas": replicas, "scheduler": scheduler})
        .to_string()
}
