//! The measured phase: `concurrency` workers, closed or open loop, for a duration or an operation count.
//!
//! - **Closed loop** (no `rate`): each worker sends its next operation as soon as the previous one answered;
//!   latency is from send to answer. Throughput is what the server sustains at that concurrency.
//! - **Open loop** (`rate` R operations/s): worker `w` of `C` sends its `k`-th operation at the scheduled
//!   time `t0 + (k·C + w)/R`, whatever happened before. Latency is measured from the *scheduled* time, so
//!   when the server stalls, the operations that should have been sent meanwhile count their wait: no
//!   coordinated omission (the wrk2 method).
//!
//! Operations scheduled during the warm-up run but are not recorded. The measured window runs from the
//! end of the warm-up to the completion of the last measured operation; the CPU time of the load
//! generator (and of the server, given its PID) is read at both ends of it ([`crate::cpu`]). Workers record into their own
//! [`Recorder`]; the only shared state is two relaxed counters for the progress bar and, in
//! operation-count mode, the ticket counter.
//!
//! [`compare`] runs the same workload against two targets in turns (A, B, A, B, ...), so both see the same
//! machine noise, then takes medians per target and the A/B ratios. Turns rather than one long run each:
//! on a shared machine a neighbour's build can halve throughput for a minute; alternating short rounds
//! spreads such a disturbance over both targets, and the median of each target's rounds discards the
//! round it hit hardest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::bodies::Payload;
use crate::cpu;
use crate::driver::{Target, Timing};
use crate::locks::HandoffClock;
use crate::report::{CompareReport, CpuPerOp, Latency, Recorder, RunReport, throughput};
use crate::workload::{KeyDistribution, OpGenerator, WorkloadConfig, Zipfian};

/// How a run is driven.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub concurrency: usize,
    /// Measured duration (after the warm-up). Either this or `ops` ends the run.
    pub duration: Option<Duration>,
    /// Measured operations in total.
    pub ops: Option<u64>,
    /// Open loop at this many operations per second; `None`: closed loop.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub progress: bool,
    pub seed: u64,
}

/// Shared counters for the progress bar.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    entities: AtomicU64,
    errors: AtomicU64,
}

/// When each worker stops and what it records.
struct Schedule {
    start: Instant,
    measure_from: Instant,
    end: Option<Instant>,
    tickets: Option<(Arc<AtomicU64>, u64)>,
    rate: Option<f64>,
    concurrency: usize,
}

impl Schedule {
    /// When operation `k` of worker `w` is due (open loop), or now (closed loop).
    fn due(&self, w: usize, k: u64) -> Instant {
        match self.rate {
            Some(r) if r > 0.0 => {
                let slot = k as f64 * self.concurrency as f64 + w as f64;
                self.start + Duration::from_secs_f64(slot / r)
            }
            _ => Instant::now(),
        }
    }

    /// Whether an operation due at `due` may run (and, counting by operations, takes its ticket).
    fn admit(&self, due: Instant) -> bool {
        if self.end.is_some_and(|end| due >= end) {
            return false;
        }
        match &self.tickets {
            Some((taken, total)) if due >= self.measure_from => {
                taken.fetch_add(1, Ordering::Relaxed) < *total
            }
            _ => true,
        }
    }
}

/// Runs one measured phase against `target` (already prepared) and reports it.
pub async fn run(
    target: &Target,
    table: &str,
    cfg: Arc<WorkloadConfig>,
    payload: &Payload,
    opts: &RunOptions,
) -> anyhow::Result<RunReport> {
    let concurrency = opts.concurrency.max(1);
    let zipf = (cfg.distribution == KeyDistribution::Zipfian && cfg.kind.needs_records())
        .then(|| Arc::new(Zipfian::new(cfg.records, cfg.zipf_theta)));
    // A short lead so every worker is spawned before the first scheduled operation.
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + opts.warmup;
    let schedule = Arc::new(Schedule {
        start,
        measure_from,
        end: opts.duration.map(|d| measure_from + d),
        tickets: opts.ops.map(|n| (Arc::new(AtomicU64::new(0)), n)),
        rate: opts.rate,
        concurrency,
    });
    let progress = Arc::new(Progress::default());
    let bar = opts
        .progress
        .then(|| progress_bar(&target.label, opts, cfg.kind.name()));
    let ticker = bar.clone().map(|bar| {
        let (progress, schedule) = (progress.clone(), schedule.clone());
        tokio::spawn(tick(bar, progress, schedule, opts.ops.is_some()))
    });

    let server_pid = target.server_pid;
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        (
            cpu::process_cpu(None),
            server_pid.and_then(|p| cpu::process_cpu(Some(p))),
        )
    });

    let handoffs = Arc::new(HandoffClock::new());
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let mut conn = target.worker(&cfg, table, payload.clone(), w, &handoffs)?;
        let mut ops = OpGenerator::new(cfg.clone(), w as u32, opts.seed, zipf.clone());
        let (schedule, progress) = (schedule.clone(), progress.clone());
        workers.push(tokio::spawn(async move {
            let mut rec = Recorder::new();
            let mut last = schedule.measure_from;
            tokio::time::sleep_until(schedule.start.into()).await;
            for k in 0u64.. {
                let due = schedule.due(w, k);
                if !schedule.admit(due) {
                    break;
                }
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                let op = ops.next_op();
                let result = conn.execute(&op).await;
                let done = Instant::now();
                let measured = due >= schedule.measure_from;
                match result {
                    Ok(d) => {
                        if measured {
                            match d.latency {
                                Timing::Call => {
                                    rec.success(done.saturating_duration_since(due), d.entities)
                                }
                                Timing::Span(took) => rec.success(took, d.entities),
                                Timing::Untimed => rec.untimed(d.entities),
                            }
                        }
                        progress.entities.fetch_add(d.entities, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if measured {
                            rec.error(e.kind());
                        }
                        progress.errors.fetch_add(1, Ordering::Relaxed);
                        if e.kind().starts_with("connect") {
                            // A refused connection fails in microseconds: do not spin on it.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                if measured {
                    last = last.max(done);
                }
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
            conn.finish().await;
            (rec, last)
        }));
    }
    let mut total = Recorder::new();
    let mut last = measure_from;
    for w in workers {
        let (rec, done) = w.await?;
        total.merge(&rec);
        last = last.max(done);
    }
    let (client_before, server_before) = cpu_at_start.await?;
    let (client_after, server_after) = (
        cpu::process_cpu(None),
        server_pid.and_then(|p| cpu::process_cpu(Some(p))),
    );
    let cpu = cpu::per_op_us(client_before, client_after, total.ops).map(|client_us| CpuPerOp {
        client_us,
        server_us: cpu::per_op_us(server_before, server_after, total.ops),
    });
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let window = last.saturating_duration_since(measure_from);
    Ok(RunReport {
        label: target.label.clone(),
        target: target.spec.clone(),
        protocol: target.protocol(),
        workload: (*cfg).clone(),
        concurrency,
        rate: opts.rate,
        started_at: chrono::Utc::now().to_rfc3339(),
        seconds: window.as_secs_f64(),
        ops: total.ops,
        entities: total.entities,
        ops_per_sec: throughput(total.ops, window),
        entities_per_sec: throughput(total.entities, window),
        latency: Latency::of(&total.latency),
        errors: total.errors,
        cpu,
    })
}

fn progress_bar(label: &str, opts: &RunOptions, workload: &str) -> ProgressBar {
    let len = match (opts.ops, opts.duration) {
        (Some(n), _) => n,
        (None, Some(d)) => (opts.warmup + d).as_millis() as u64,
        (None, None) => 0,
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>18} [{elapsed_precise}] {bar:30.cyan/blue} {percent:>3}% {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("{label} {workload}"));
    bar
}

/// Refreshes the progress bar: position, current throughput and errors.
async fn tick(bar: ProgressBar, progress: Arc<Progress>, schedule: Arc<Schedule>, by_ops: bool) {
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    let mut prev = (Instant::now(), 0u64, 0u64);
    loop {
        interval.tick().await;
        let now = Instant::now();
        let done = progress.done.load(Ordering::Relaxed);
        let entities = progress.entities.load(Ordering::Relaxed);
        let dt = now.duration_since(prev.0).as_secs_f64().max(1e-3);
        let warm = if now < schedule.measure_from {
            " (warm-up)"
        } else {
            ""
        };
        bar.set_message(format!(
            "{:>8.0} ops/s {:>9.0} entities/s, {} errors{warm}",
            (done - prev.1) as f64 / dt,
            (entities - prev.2) as f64 / dt,
            progress.errors.load(Ordering::Relaxed),
        ));
        if by_ops {
            if let Some((taken, _)) = &schedule.tickets {
                bar.set_position(taken.load(Ordering::Relaxed));
            }
        } else {
            bar.set_position(now.saturating_duration_since(schedule.start).as_millis() as u64);
        }
        prev = (now, done, entities);
    }
}

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

/// Checks the target answers (and can run the workload), creates the table and runs the load phase,
/// with a line on the console.
pub async fn prepare(t: &Target, job: &Job) -> anyhow::Result<()> {
    t.check_workload(job.cfg.kind)?;
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
    let fmt_ratio = |r: Option<f64>| r.map_or("n/a".to_string(), |r| format!("{r:.2}x"));
    format!(
        "{w}: median of {n} rounds\n  {a}\n  {b}\n  {al}/{bl}: throughput {tr}, p99 latency {lr}",
        w = c.workload,
        n = c.a.len(),
        a = c.a_median.line(c.a_label()),
        b = c.b_median.line(c.b_label()),
        al = c.a_label(),
        bl = c.b_label(),
        tr = fmt_ratio(c.throughput_ratio),
        lr = fmt_ratio(c.p99_ratio),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(rate: Option<f64>, ops: Option<u64>) -> Schedule {
        let start = Instant::now();
        Schedule {
            start,
            measure_from: start + Duration::from_secs(1),
            end: ops.is_none().then(|| start + Duration::from_secs(3)),
            tickets: ops.map(|n| (Arc::new(AtomicU64::new(0)), n)),
            rate,
            concurrency: 4,
        }
    }

    #[test]
    fn open_loop_slots_interleave_workers_at_the_rate() {
        let s = schedule(Some(1000.0), None);
        // 1000/s over 4 workers: worker 1's third operation (k = 2) is slot 9, due at 9 ms.
        assert_eq!(s.due(1, 2) - s.start, Duration::from_millis(9));
        assert_eq!(s.due(0, 0), s.start);
        assert!(s.admit(s.start + Duration::from_millis(2999)));
        assert!(!s.admit(s.start + Duration::from_secs(3)));
    }

    #[test]
    fn operation_counts_ignore_the_warm_up() {
        let s = schedule(None, Some(2));
        let warm = s.start;
        let measured = s.measure_from;
        assert!(s.admit(warm) && s.admit(warm), "warm-up takes no tickets");
        assert!(s.admit(measured) && s.admit(measured));
        assert!(!s.admit(measured), "two measured operations, then stop");
    }
}
