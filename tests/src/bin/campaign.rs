//! The fault campaign runner: a cluster of the real binary, workloads, a seeded nemesis, and the
//! checkers' verdicts (see `trestle_testkit::campaign`).
//!
//! ```sh
//! cargo run --release -p trestle-tests --bin campaign -- --seed 42 --duration 60s \
//!     --faults kill,pause,partition,clock,power
//! cargo run --release -p trestle-tests --bin campaign -- --seeds 100 --duration 30s   # a long campaign
//! ```
//!
//! Exits 0 when every campaign passed, 1 when a checker failed (the report shows the failing history),
//! 2 when a campaign could not run.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use trestle_testkit::campaign::{self, FaultKind, Options, WorkloadKind};

#[derive(Parser)]
#[command(about = "Runs seeded fault campaigns against a cluster of the trestle binary")]
struct Args {
    /// The first seed (random if not given).
    #[arg(long)]
    seed: Option<u64>,
    /// How many campaigns to run, with seeds seed, seed+1, ...
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Length of each campaign's fault schedule, e.g. 60s or 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Faults to inject: kill, pause, partition, clock, power.
    #[arg(long, default_value = "kill,pause,partition,clock,power")]
    faults: String,
    /// Workloads: registers, inserts, batches, counter.
    #[arg(long, default_value = "registers,inserts,batches,counter")]
    workloads: String,
    /// The trestle binary (default: the one next to this runner, or $TRESTLE_BIN).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// A planted bug to switch on (needs a binary built with `--features planted-bugs`).
    #[arg(long)]
    planted: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("not a duration: {s}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("not a duration: {s} (use 30s, 2m)")),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let code = match run(args).await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("campaign: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let faults = FaultKind::parse_list(&args.faults).map_err(anyhow::Error::msg)?;
    let workloads = WorkloadKind::parse_list(&args.workloads).map_err(anyhow::Error::msg)?;
    let first = args.seed.unwrap_or_else(rand::random);
    let mut all_passed = true;
    for seed in (0..args.seeds).map(|i| first.wrapping_add(i)) {
        let mut options = Options::new(seed, args.duration, faults.clone());
        options.workloads = workloads.clone();
        options.bin = args.bin.clone();
        if let Some(bug) = &args.planted {
            options
                .env
                .push(("TRESTLE_PLANTED_BUG".into(), bug.clone()));
        }
        println!("campaign seed {seed}: faults {}, schedule:", args.faults);
        for (i, step) in campaign::schedule::schedule(seed, &faults, args.duration)
            .iter()
            .enumerate()
        {
            println!(
                "  step {i}: {} for {:.1} s, then {:.1} s quiet",
                step.fault,
                step.hold.as_secs_f64(),
                step.quiet.as_secs_f64()
            );
        }
        let report = campaign::run(&options).await?;
        println!("{report}");
        println!("{} operations checked", report.operations());
        all_passed &= report.passed();
    }
    Ok(all_passed)
}
