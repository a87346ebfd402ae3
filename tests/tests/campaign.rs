//! The fault campaign as the test command runs it (FAULTS.md records every run): a few fixed seeds with
//! every fault, and the planted bugs, each of which the campaign must catch. A longer campaign is one
//! command: `cargo run --release -p trestle-tests --bin campaign -- --seeds 100 --duration 60s`.

use std::time::Duration;

use trestle_testkit::campaign::{self, Fault, FaultKind, Options, WorkloadKind, schedule};
use trestle_testkit::process::planted_bin;

/// The seeds the test command replays every run, all faults, 20 s of schedule each.
const SEEDS: [u64; 2] = [20261207, 7];

async fn run(options: Options) -> campaign::Report {
    let report = campaign::run(&options)
        .await
        .unwrap_or_else(|e| panic!("seed {}: the campaign could not run: {e:#}", options.seed));
    eprintln!("{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c01_fixed_seeds_pass_under_every_fault() {
    for seed in SEEDS {
        let report = run(Options::new(
            seed,
            Duration::from_secs(20),
            FaultKind::ALL.to_vec(),
        ))
        .await;
        assert!(report.passed(), "seed {seed} failed:\n{report}");
        assert!(
            report.operations() > 300,
            "too few operations: {}",
            report.operations()
        );
    }
}

/// The first seed from `from` whose schedule starts with a fault `wanted` accepts.
fn seed_whose_first_step(from: u64, kinds: &[FaultKind], wanted: impl Fn(&Fault) -> bool) -> u64 {
    (from..)
        .find(|&s| {
            schedule::schedule(s, kinds, Duration::from_secs(1))
                .first()
                .is_some_and(|step| wanted(&step.fault))
        })
        .unwrap_or(from)
}

fn planted(
    bug: &str,
    seed: u64,
    duration: Duration,
    faults: Vec<FaultKind>,
    workloads: Vec<WorkloadKind>,
) -> Options {
    let mut options = Options::new(seed, duration, faults);
    options.workloads = workloads;
    options.bin = Some(planted_bin().expect("the planted-bugs binary"));
    options.env = vec![("TRESTLE_PLANTED_BUG".into(), bug.into())];
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c02_the_campaign_catches_acknowledgement_before_fsync() {
    let kinds = [FaultKind::Power];
    let seed = seed_whose_first_step(1, &kinds, |f| matches!(f, Fault::PowerOffAll));
    let report = run(planted(
        "ack-before-fsync",
        seed,
        Duration::from_secs(8),
        kinds.to_vec(),
        vec![WorkloadKind::Registers, WorkloadKind::Inserts],
    ))
    .await;
    assert!(
        !report.passed(),
        "the planted bug went unnoticed:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c03_the_campaign_catches_reads_without_read_index() {
    let kinds = [FaultKind::Partition];
    let seed = seed_whose_first_step(1, &kinds, |f| matches!(f, Fault::Isolate(_)));
    let report = run(planted(
        "stale-reads",
        seed,
        Duration::from_secs(10),
        kinds.to_vec(),
        vec![WorkloadKind::Registers],
    ))
    .await;
    assert!(
        !report.passed(),
        "the planted bug went unnoticed:\n{report}"
    );
    let failed = report.failed_checks();
    assert!(
        failed.iter().any(|n| n.starts_with("registers")),
        "caught, but not as a linearizability violation: {failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c04_the_campaign_catches_a_skipped_fencing_check() {
    let report = run(planted(
        "skip-fencing",
        1,
        Duration::from_secs(15),
        Vec::new(),
        vec![WorkloadKind::Counter],
    ))
    .await;
    let failed = report.failed_checks();
    assert!(
        failed.iter().any(|n| n.starts_with("counter")),
        "the planted bug went unnoticed: {failed:?}\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c05_without_the_bug_the_same_planted_runs_pass() {
    // The same workloads and schedules on the normal binary: what c02–c04 catch is the bug, not the
    // harness.
    let kinds = [FaultKind::Partition];
    let seed = seed_whose_first_step(1, &kinds, |f| matches!(f, Fault::Isolate(_)));
    let mut options = Options::new(seed, Duration::from_secs(10), kinds.to_vec());
    options.workloads = vec![WorkloadKind::Registers, WorkloadKind::Counter];
    let report = run(options).await;
    assert!(report.passed(), "{report}");
}
