//! `trestle-bench`: the load generator. Drives any Azure Table REST endpoint (Trestle, Azurite, Azure) and
//! Trestle's gRPC API with the workloads of issue 4, Trestle's lock service and etcd's with the lock
//! workloads of issue 8, and reports throughput and latency percentiles.
//!
//! ```text
//! trestle-bench run --target trestle=rest:http://127.0.0.1:10002/devstoreaccount1 \
//!     --compare azurite=rest:http://127.0.0.1:10012/devstoreaccount1 --workload read --rounds 3
//! trestle-bench run --target grpc:127.0.0.1:10101,127.0.0.1:10102,127.0.0.1:10103 --workload insert
//! trestle-bench run --target tls=rest:https://127.0.0.1:10002/devstoreaccount1 \
//!     --ca-file trestle-data/tls/dev-cert.pem --compare plain=rest:http://127.0.0.1:10012/devstoreaccount1
//! trestle-bench run --target grpc:127.0.0.1:10101 --compare grpc-unsigned:127.0.0.1:10101 --server-pid 4242
//! trestle-bench run --target trestle=grpc:127.0.0.1:10101,127.0.0.1:10102,127.0.0.1:10103 \
//!     --compare etcd=etcd:127.0.0.1:2379 --workload lock-handoff --concurrency 8 --rounds 3
//! trestle-bench fsync-rate --dir /var/tmp
//! trestle-bench summarize results/raw/*.json --markdown results/summary.md --svg results/summary.svg
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use trestle_benches::bodies::Payload;
use trestle_benches::driver::{ConnectOptions, Target};
use trestle_benches::report::CompareReport;
use trestle_benches::runner::{self, Job, RunOptions};
use trestle_benches::signing::DEV_ACCOUNT_KEY;
use trestle_benches::workload::{KeyDistribution, WorkloadConfig, WorkloadKind};
use trestle_benches::{fsync, summary};

/// The server's allocator here too, so the load generator takes as little of the shared CPU as it can.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "trestle-bench",
    about = "Load generator for Azure Table REST endpoints and Trestle's gRPC API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a workload against a target (or two, in turns, with --compare).
    Run(Box<RunArgs>),
    /// Measure the disk's synchronous append rate (write + fdatasync) under a directory.
    FsyncRate(FsyncArgs),
    /// Turn result files into a Markdown table and an SVG plot.
    Summarize(SummarizeArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// `[label=]rest:URL` (account URL, e.g. http://127.0.0.1:10002/devstoreaccount1, or https://...
    /// with --ca-file), `[label=]grpc:ADDR[,ADDR...]` (ADDR: host:port or https://host:port), or
    /// `[label=]grpc-unsigned:ADDR[,ADDR...]` (calls without credentials: the node needs
    /// allow-anonymous = true), or `[label=]etcd:ADDR[,ADDR...]` (etcd client URLs' host:port, lock
    /// workloads only; workers spread over the members).
    #[arg(long)]
    target: String,
    /// A second target: run both in turns (A, B, A, B, ...) and print the ratios.
    #[arg(long)]
    compare: Option<String>,
    /// Rounds per target; the report quotes medians.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    #[arg(long, value_enum, default_value = "read")]
    workload: WorkloadKind,
    /// Size of an entity's JSON body in bytes.
    #[arg(long, default_value_t = 1024)]
    entity_size: usize,
    /// Partitions that records, inserts and batches spread over.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Records preloaded for read/upsert/merge/YCSB workloads.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    #[arg(long, value_enum, default_value = "uniform")]
    distribution: KeyDistribution,
    /// Zipfian skew.
    #[arg(long, default_value_t = 0.99)]
    theta: f64,
    /// Entities per query page (and per preloaded query partition).
    #[arg(long, default_value_t = 1000)]
    page_size: u32,
    #[arg(long, default_value_t = 1)]
    query_partitions: u32,
    /// Operations per entity group transaction.
    #[arg(long, default_value_t = 100)]
    batch_size: u32,
    /// How long each holder keeps the lock in the lock-handoff workload, e.g. 0s, 1ms.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    lock_hold: Duration,
    /// Concurrent requests (one connection each over REST).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured time per round, e.g. 10s, 500ms, 2m.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Measured operations per round instead of a duration.
    #[arg(long)]
    ops: Option<u64>,
    /// Open loop at this many operations per second (latency from the scheduled send time).
    #[arg(long)]
    rate: Option<f64>,
    /// Unmeasured time before each round.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Table name (default: bench + the workload's name).
    #[arg(long)]
    table: Option<String>,
    /// Account name for host-style REST URLs and for gRPC (default: from the URL / the node's default).
    #[arg(long)]
    account: Option<String>,
    /// Account key, base64 (default: the development account's).
    #[arg(long, default_value = DEV_ACCOUNT_KEY)]
    key: String,
    /// PEM certificates that https:// targets (REST and gRPC) are verified against, e.g. the
    /// `<data>/tls/dev-cert.pem` of `trestle dev --tls`.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The server process of --target: each round then reports its CPU time per operation too
    /// (from /proc/PID/stat; the load generator's own is always reported).
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server process of --compare (default: --server-pid).
    #[arg(long)]
    compare_server_pid: Option<u32>,
    /// The table is already created and loaded.
    #[arg(long)]
    skip_load: bool,
    /// Write the result (every round, medians, ratios) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
    /// Independent SDK clients (HTTP/2 connections per node) for gRPC targets; workers share them
    /// round-robin.
    #[arg(long, default_value_t = 1)]
    grpc_channels: usize,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args, Debug)]
struct FsyncArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    duration: Duration,
    /// Bytes appended before each sync.
    #[arg(long, default_value_t = 4096)]
    block: usize,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SummarizeArgs {
    /// Result files written by `run --json`.
    files: Vec<PathBuf>,
    #[arg(long)]
    markdown: Option<PathBuf>,
    #[arg(long)]
    svg: Option<PathBuf>,
    #[arg(long, default_value = "Trestle load test")]
    title: String,
}

/// `10s`, `250ms`, `2m`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s}"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("not a duration: {s}"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads.max(1))
            .enable_all()
            .build()?
            .block_on(run(*args)),
        Command::FsyncRate(a) => {
            let r = fsync::measure(&a.dir, a.block, a.duration)
                .with_context(|| format!("measuring fsync under {}", a.dir.display()))?;
            println!(
                "fsync rate under {}: {:.0} syncs/s ({} B appends), p50 {}µs p99 {}µs max {}µs",
                r.dir,
                r.syncs_per_sec,
                r.block_bytes,
                r.latency.p50_us,
                r.latency.p99_us,
                r.latency.max_us
            );
            if let Some(path) = a.json {
                std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
            }
            Ok(())
        }
        Command::Summarize(a) => summarize(a),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.ops.is_none() && args.duration.is_zero() {
        bail!("give --duration or --ops");
    }
    if args.workload.is_lock() && args.rate.is_some() {
        bail!(
            "the lock workloads run closed-loop only (a worker's next acquire follows its release)"
        );
    }
    let opts = ConnectOptions {
        account: args.account.clone(),
        key: args.key.clone(),
        ca_file: args.ca_file.clone(),
    };
    let mut a = Target::parse(&args.target, &opts)
        .await?
        .with_grpc_channels(args.grpc_channels, &opts)
        .await?;
    a.server_pid = args.server_pid;
    let b = match &args.compare {
        Some(spec) => {
            let mut b = Target::parse(spec, &opts)
                .await?
                .with_grpc_channels(args.grpc_channels, &opts)
                .await?;
            b.server_pid = args.compare_server_pid.or(args.server_pid);
            Some(b)
        }
        None => None,
    };
    let cfg = WorkloadConfig {
        kind: args.workload,
        entity_size: args.entity_size,
        partitions: args.partitions.max(1),
        records: args.records.max(1),
        distribution: args.distribution,
        zipf_theta: args.theta,
        page_size: args.page_size.clamp(1, 1000),
        query_partitions: args.query_partitions.max(1),
        batch_size: args.batch_size.clamp(1, 100),
        run_id: format!("{:x}", chrono::Utc::now().timestamp_millis()),
        lock_hold_us: args.lock_hold.as_micros() as u64,
    };
    let job = Job {
        table: args
            .table
            .clone()
            .unwrap_or_else(|| format!("bench{}", cfg.kind.name().replace('-', ""))),
        payload: Payload::new(cfg.entity_size, args.seed),
        opts: RunOptions {
            concurrency: args.concurrency.max(1),
            duration: args.ops.is_none().then_some(args.duration),
            ops: args.ops,
            rate: args.rate,
            warmup: args.warmup,
            progress: !args.no_progress,
            seed: args.seed,
        },
        skip_load: args.skip_load,
        cfg,
    };
    let report = match &b {
        Some(b) => runner::compare(&a, b, &job, args.rounds).await?,
        None => {
            runner::prepare(&a, &job).await?;
            let mut runs = Vec::new();
            for round in 0..args.rounds.max(1) {
                runs.push(runner::measure(&a, &job, &format!("r{round}"), round).await?);
            }
            let r = CompareReport::new(job.cfg.kind.name(), runs, Vec::new());
            if args.rounds > 1 {
                eprintln!("{}", runner::ratio_lines(&r));
            }
            r
        }
    };
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn summarize(a: SummarizeArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for f in &a.files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let r: CompareReport =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
        reports.push(r);
    }
    let md = summary::markdown(&reports);
    match &a.markdown {
        Some(p) => std::fs::write(p, &md)?,
        None => print!("{md}"),
    }
    if let Some(p) = &a.svg {
        std::fs::write(p, summary::svg(&reports, &a.title))?;
    }
    Ok(())
}
