//! The fault campaign: a cluster of the real `trestle` binary, client workloads whose every operation is
//! recorded, a nemesis that injects a seeded schedule of real faults and heals each, and the history
//! checkers' verdicts at the end — in the manner of Jepsen.
//!
//! - [`schedule`]: the schedule, a pure function of the seed;
//! - [`nemesis`]: applies and heals faults on a [`ProcessCluster`] (signals, network namespaces and
//!   nftables, libfaketime, a FUSE disk that drops unsynced writes);
//! - workloads: [`registers`] (linearizable CAS registers, gRPC and REST to random nodes), [`inserts`]
//!   (lost inserts, paged queries), [`batches`] (atomicity), [`counter`] (fenced writes under the lock
//!   manager);
//! - [`run`]: one campaign, returning a [`Report`] whose [`Report::passed`] is the verdict.
//!
//! After every healed fault the workloads must make progress again within [`PROGRESS_DEADLINE`]; a
//! cluster that does not is a failed campaign too (a liveness bug), reported with the step.

pub mod batches;
pub mod counter;
pub mod inserts;
pub mod nemesis;
pub mod registers;
pub mod schedule;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use trestle_client::TableClient;

use crate::process::{ProcessCluster, ProcessOptions};
use crate::rest::RestClient;
pub use schedule::{Fault, FaultKind, Step, Target};

/// How long the workloads get to make progress after a fault healed.
pub const PROGRESS_DEADLINE: Duration = Duration::from_secs(60);

/// A workload of the campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    Registers,
    Inserts,
    Batches,
    Counter,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 4] = [
        WorkloadKind::Registers,
        WorkloadKind::Inserts,
        WorkloadKind::Batches,
        WorkloadKind::Counter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Registers => "registers",
            WorkloadKind::Inserts => "inserts",
            WorkloadKind::Batches => "batches",
            WorkloadKind::Counter => "counter",
        }
    }

    /// Parses a comma-separated list such as `registers,counter`.
    pub fn parse_list(list: &str) -> Result<Vec<WorkloadKind>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| {
                WorkloadKind::ALL
                    .into_iter()
                    .find(|k| k.name() == name)
                    .ok_or_else(|| {
                        format!("unknown workload {name:?} (registers, inserts, batches, counter)")
                    })
            })
            .collect()
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Total time of the fault schedule (faults held plus quiet periods).
    pub duration: Duration,
    pub faults: Vec<FaultKind>,
    pub workloads: Vec<WorkloadKind>,
    /// The binary (default: [`crate::process::trestle_bin`]).
    pub bin: Option<PathBuf>,
    /// Extra environment for every node (e.g. a planted bug).
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn new(seed: u64, duration: Duration, faults: Vec<FaultKind>) -> Options {
        Options {
            seed,
            duration,
            faults,
            workloads: WorkloadKind::ALL.to_vec(),
            bin: None,
            env: Vec::new(),
        }
    }
}

/// One checker's verdict.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub summary: String,
    /// The smallest failing history or the violations found, when it failed.
    pub detail: String,
    pub operations: usize,
}

impl Check {
    pub fn pass(name: &str, summary: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            passed: true,
            summary: summary.into(),
            detail: String::new(),
            operations: 0,
        }
    }

    pub fn fail(name: &str, summary: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            passed: false,
            summary: summary.into(),
            detail: detail.into(),
            operations: 0,
        }
    }

    pub fn with_operations(mut self, n: usize) -> Check {
        self.operations = n;
        self
    }
}

/// What a campaign did and what the checkers concluded.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub schedule: Vec<Step>,
    /// What each step resolved to and how the cluster took it.
    pub log: Vec<String>,
    pub checks: Vec<Check>,
    pub elapsed: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The names of the checkers that failed.
    pub fn failed_checks(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect()
    }

    pub fn operations(&self) -> usize {
        self.checks.iter().map(|c| c.operations).sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "campaign seed {} ({:.1} s)",
            self.seed,
            self.elapsed.as_secs_f64()
        )?;
        for line in &self.log {
            writeln!(f, "  {line}")?;
        }
        for c in &self.checks {
            let verdict = if c.passed { "PASS" } else { "FAIL" };
            writeln!(f, "  {verdict} {}: {}", c.name, c.summary)?;
            if !c.passed && !c.detail.is_empty() {
                for line in c.detail.lines().take(80) {
                    writeln!(f, "      {line}")?;
                }
            }
        }
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        write!(
            f,
            "campaign {verdict}: seed {} replays this schedule",
            self.seed
        )
    }
}

/// What every workload task shares: the clients, the stop flag and the progress counter.
pub struct Shared {
    pub client: TableClient,
    pub rest: RestClient,
    pub rest_endpoints: Vec<String>,
    stop: AtomicBool,
    done: AtomicUsize,
}

impl Shared {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Counts one completed operation.
    pub fn progress(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn completed(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// A node's REST endpoint, at random.
    pub fn random_rest(&self, rng: &mut impl Rng) -> String {
        self.rest_endpoints[rng.gen_range(0..self.rest_endpoints.len())].clone()
    }

    /// Whether `n` more operations complete within [`PROGRESS_DEADLINE`].
    pub async fn wait_progress(&self, n: usize) -> bool {
        let target = self.completed() + n;
        crate::eventually(PROGRESS_DEADLINE, || async {
            (self.completed() >= target).then_some(())
        })
        .await
        .is_some()
    }
}

enum Workload {
    Registers(registers::Registers),
    Inserts(inserts::Inserts),
    Batches(batches::Batches),
    Counter(counter::Counter),
}

impl Workload {
    async fn finish(self) -> Vec<Check> {
        match self {
            Workload::Registers(w) => w.finish().await,
            Workload::Inserts(w) => w.finish().await,
            Workload::Batches(w) => w.finish().await,
            Workload::Counter(w) => w.finish().await,
        }
    }
}

/// Runs one campaign.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let steps = schedule::schedule(options.seed, &options.faults, options.duration);
    let mut cluster = ProcessCluster::start_with(ProcessOptions {
        nodes: 3,
        ranges: 1,
        namespaces: options.faults.contains(&FaultKind::Partition),
        faketime: options.faults.contains(&FaultKind::Clock),
        lossy_disks: options.faults.contains(&FaultKind::Power),
        bin: options.bin.clone(),
        env: options.env.clone(),
        ..ProcessOptions::default()
    })
    .await?;
    let config = trestle_client::ClientConfig::default()
        .with_credentials(trestle_client::Credentials::development())
        .with_deadline(Duration::from_secs(10));
    let client = TableClient::connect_with(cluster.grpc_endpoints(), config).await?;
    let shared = Arc::new(Shared {
        client,
        rest: RestClient::new(Duration::from_secs(8))?,
        rest_endpoints: cluster.ids().map(|id| cluster.rest_endpoint(id)).collect(),
        stop: AtomicBool::new(false),
        done: AtomicUsize::new(0),
    });
    let mut workloads = Vec::new();
    for kind in &options.workloads {
        let seed = options.seed ^ (*kind as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        workloads.push(match kind {
            WorkloadKind::Registers => {
                Workload::Registers(registers::Registers::start(&shared, seed).await?)
            }
            WorkloadKind::Inserts => Workload::Inserts(inserts::Inserts::start(&shared).await?),
            WorkloadKind::Batches => {
                Workload::Batches(batches::Batches::start(&shared, seed).await?)
            }
            WorkloadKind::Counter => Workload::Counter(counter::Counter::start(&shared).await?),
        });
    }
    let mut log = Vec::new();
    let mut checks = Vec::new();
    if !shared.wait_progress(50).await {
        checks.push(Check::fail(
            "liveness",
            "the workloads made no progress before any fault",
            String::new(),
        ));
    }
    for (i, step) in steps.iter().enumerate() {
        if !checks.is_empty() {
            break;
        }
        let before = shared.completed();
        let applied = nemesis::apply(&mut cluster, step.fault).await;
        let line = match &applied {
            Ok(what) => format!("step {i}: {what} for {:.1} s", step.hold.as_secs_f64()),
            Err(e) => format!("step {i}: {} could not be applied: {e:#}", step.fault),
        };
        eprintln!("{line}");
        log.push(line);
        // The fault is held for its time: pacing, not synchronisation.
        tokio::time::sleep(step.hold).await;
        let during = shared.completed() - before;
        if let Ok(applied) = applied
            && let Err(e) = nemesis::heal(&mut cluster, applied).await
        {
            checks.push(Check::fail(
                "liveness",
                format!("step {i}: healing failed: {e:#}"),
                String::new(),
            ));
            break;
        }
        tokio::time::sleep(step.quiet).await;
        let progressed = shared.wait_progress(20).await;
        let line = format!("step {i}: healed; {during} operations completed during the fault");
        eprintln!("{line}");
        log.push(line);
        if !progressed {
            checks.push(Check::fail(
                "liveness",
                format!(
                    "step {i}: no progress within {PROGRESS_DEADLINE:?} after the fault healed"
                ),
                String::new(),
            ));
        }
    }
    if steps.is_empty() && checks.is_empty() {
        // No faults: the workloads run on a healthy cluster for the whole duration (pacing).
        tokio::time::sleep(options.duration).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    for w in workloads {
        checks.extend(w.finish().await);
    }
    if checks.iter().all(|c| c.name != "liveness") {
        checks.insert(
            0,
            Check::pass(
                "liveness",
                format!("progress after each of {} healed faults", steps.len()),
            ),
        );
    }
    let _ = cluster.stop_all();
    Ok(Report {
        seed: options.seed,
        schedule: steps,
        log,
        checks,
        elapsed: started.elapsed(),
    })
}
