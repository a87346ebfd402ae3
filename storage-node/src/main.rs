//! The `trestle` binary: `trestle dev` (a three-replica cluster in one process), `trestle node` (one
//! node of a multi-machine cluster) and `trestle ctl` (status and admin actions).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trestle_storage_node::{cli, dev};

/// mimalloc instead of glibc's malloc: on the REST read path glibc's allocator (with its arena
/// consolidation) took about a quarter of the server's CPU (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "trestle",
    version,
    about = "Trestle: replicated, Azure-Table-compatible storage"
)]
struct Cli {
    /// Log format: `text` or `json`. Levels come from RUST_LOG (default `info`).
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a complete local cluster: three nodes in this process, data persisted under --data.
    Dev(dev::DevArgs),
    /// Run one node of a cluster described by a TOML file (see config/node.example.toml).
    Node {
        #[arg(long)]
        config: PathBuf,
        /// Overrides `data-dir` from the file.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Join a running cluster through the member at this gRPC address (overrides `join` from the
        /// file): the file's `[[peers]]` then needs to list only this node.
        #[arg(long, value_name = "ADDR")]
        join: Option<String>,
    },
    /// Inspect and administer a running cluster.
    Ctl(cli::CtlArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    trestle_storage_node::logging::init(&cli.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Node { config, data, join } => {
                let text = std::fs::read_to_string(&config)
                    .with_context(|| format!("reading {}", config.display()))?;
                let mut cfg = trestle_storage_node::NodeConfig::parse_toml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
                if let Some(d) = data {
                    cfg.data_dir = d;
                }
                if join.is_some() {
                    cfg.join = join;
                }
                cfg.validate()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
                let node = trestle_storage_node::Node::start_durable(cfg).await?;
                dev::wait_for_shutdown_signal().await;
                tracing::info!("shutting down");
                node.shutdown().await;
                Ok(())
            }
            Command::Ctl(args) => cli::run(args).await,
        }
    })
}
