//! `--compare`: the same workload against two targets in turns (A, B, A, B, ...), so both see the same
//! machine noise, then medians per target and the A/B ratios.
//!
//! Turns rather than one long run each: on a shared machine a neighbour's build can halve throughput for a
//! minute; alternating short rounds spreads such a disturbance over both targets, and the median of each
//! target's rounds discards the round it hit hardest.

use std::sync::Arc;

use crate::bodies::Payload;
use crate::driver::Target;
use crate::report::{CompareReport, RunReport, fmt_us};
use crate::runner::{RunOptions, run};
use crate::workload::WorkloadConfig;

/// Everything about a workload run except the target.
#[derive(Debug, Clone)]
pub struct Job {
    pub table: String,
    pub cfg: WorkloadConfig,
    pub payload: Payload,
    pub opts: RunOptions,
    /// The table is already loaded (a previous invocation did it).
    pub skip_load: bool,
}

/// Loads both targets (unless `job.skip_load`), then runs `rounds` rounds of A then B.
pub async fn compare(
    a: &Target,
    b: &Target,
    job: &Job,
    rounds: usize,
) -> anyhow::Result<CompareReport> {
    for t in [a, b] {
        prepare(t, job).await?;
    }
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        ra.push(measure(a, job, &format!("r{round}a"), round).await?);
        rb.push(measure(b, job, &format!("r{round}b"), round).await?);
    }
    let report = CompareReport::new(job.cfg.kind.name(), ra, rb);
    eprintln!("{}", ratio_lines(&report));
    Ok(report)
}

/// Round `round` against one target, with a line on the console. `tag` makes the keys this run inserts
/// unique: the two targets of a comparison may be the same server (gRPC vs REST of one cluster).
pub async fn measure(t: &Target, job: &Job, tag: &str, round: usize) -> anyhow::Result<RunReport> {
    let mut cfg = job.cfg.clone();
    cfg.run_id = format!("{}{tag}", cfg.run_id);
    let report = run(t, &job.table, Arc::new(cfg), &job.payload, &job.opts).await?;
    eprintln!("round {} {}", round + 1, report.line());
    Ok(report)
}

/// Checks the target answers, creates the table and runs the load phase, with a line on the console.
pub async fn prepare(t: &Target, job: &Job) -> anyhow::Result<()> {
    t.probe().await?;
    if job.skip_load {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let n = t
        .prepare(&job.table, &job.cfg, &job.payload, job.opts.concurrency)
        .await?;
    if n > 0 {
        let s = started.elapsed().as_secs_f64();
        eprintln!(
            "{}: loaded {n} entities into {} in {s:.1}s ({:.0}/s)",
            t.label,
            job.table,
            n as f64 / s.max(1e-3)
        );
    }
    Ok(())
}

/// The medians of both targets and their ratios, for the console.
pub fn ratio_lines(c: &CompareReport) -> String {
    let (a, b) = (&c.a_median, &c.b_median);
    let fmt_ratio = |r: Option<f64>| r.map_or("n/a".to_string(), |r| format!("{r:.2}x"));
    format!(
        "{w}: median of {n} rounds\n  {al:<10} {aops:>9.0} ops/s {aent:>10.0} entities/s  p50 {ap50} p99 {ap99} p99.9 {ap999}  errors {aerr}\n  \
         {bl:<10} {bops:>9.0} ops/s {bent:>10.0} entities/s  p50 {bp50} p99 {bp99} p99.9 {bp999}  errors {berr}\n  \
         {al}/{bl}: throughput {tr}, p99 latency {lr}",
        w = c.workload,
        n = c.a.len(),
        al = c.a_label(),
        bl = c.b_label(),
        aops = a.ops_per_sec,
        aent = a.entities_per_sec,
        ap50 = fmt_us(a.p50_us as u64),
        ap99 = fmt_us(a.p99_us as u64),
        ap999 = fmt_us(a.p999_us as u64),
        aerr = a.errors,
        bops = b.ops_per_sec,
        bent = b.entities_per_sec,
        bp50 = fmt_us(b.p50_us as u64),
        bp99 = fmt_us(b.p99_us as u64),
        bp999 = fmt_us(b.p999_us as u64),
        berr = b.errors,
        tr = fmt_ratio(c.throughput_ratio),
        lr = fmt_ratio(c.p99_ratio),
    )
}
