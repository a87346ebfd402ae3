//! What a run measured, and the arithmetic on it: percentiles, throughput, medians, ratios.
//!
//! Latencies are recorded in microseconds in an HdrHistogram (1 µs to 10 min, 3 significant digits: a
//! percentile is exact to 0.1%). Each worker records into its own histogram; [`Recorder::merge`] adds them
//! up at the end, so the hot loop takes no lock. Throughput is measured over the measured window only
//! (after the warm-up, until the last measured operation completed).
//!
//! For the lock workloads an "entity" is one acquire + release (`lock`) or one hand-off (`lock-handoff`,
//! whose latencies are the hand-offs': see [`crate::locks`]).
//!
//! A [`RunReport`] is the JSON result file of one run; a comparison writes a [`CompareReport`] with every
//! round of both targets and the medians and ratios the summary tables quote.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::driver::Protocol;
use crate::workload::WorkloadConfig;

/// Largest latency the histogram holds (anything slower is clamped to it): 10 minutes.
const MAX_LATENCY_US: u64 = 600_000_000;

/// One worker's measurements.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub latency: Histogram<u64>,
    pub ops: u64,
    pub entities: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            // Invariant: constant bounds that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant histogram bounds are valid"),
            ops: 0,
            entities: 0,
            errors: BTreeMap::new(),
        }
    }

    /// A successful operation that took `latency` and touched `entities` entities.
    pub fn success(&mut self, latency: Duration, entities: u64) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.latency.saturating_record(us);
        self.ops += 1;
        self.entities += entities;
    }

    /// A successful operation whose latency is not part of the figures (a lock grant that was not a
    /// hand-off).
    pub fn untimed(&mut self, entities: u64) {
        self.ops += 1;
        self.entities += entities;
    }

    /// A failed operation (its latency is not recorded: errors are counted by kind instead).
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms have the same bounds, so adding cannot fail; saturate rather than panic anyway.
        if self.latency.add(&other.latency).is_err() {
            for v in other.latency.iter_recorded() {
                self.latency
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.ops += other.ops;
        self.entities += other.entities;
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += n;
        }
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// The result file of one run against one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub label: String,
    pub target: String,
    pub protocol: Protocol,
    pub workload: WorkloadConfig,
    pub concurrency: usize,
    /// Requests per second of an open-loop run; `None` for a closed loop.
    pub rate: Option<f64>,
    pub started_at: String,
    /// Length of the measured window, in seconds.
    pub seconds: f64,
    pub ops: u64,
    pub entities: u64,
    pub errors: BTreeMap<String, u64>,
    pub ops_per_sec: f64,
    pub entities_per_sec: f64,
    pub latency: Latency,
    /// CPU time per operation over the measured window, when it could be read ([`crate::cpu`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuPerOp>,
}

/// CPU time per operation, in microseconds: the load generator's own, and the server's when its
/// process was given (`--server-pid`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CpuPerOp {
    pub client_us: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_us: Option<f64>,
}

impl CpuPerOp {
    /// ` cpu/op client 33µs server 101µs` (empty without figures), for the console lines.
    fn suffix(client: Option<f64>, server: Option<f64>) -> String {
        let mut s = String::new();
        if let Some(c) = client {
            s.push_str(&format!("  cpu/op client {c:.0}µs"));
        }
        if let Some(v) = server {
            s.push_str(&format!(" server {v:.0}µs"));
        }
        s
    }
}

impl RunReport {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// One line for the console.
    pub fn line(&self) -> String {
        let l = &self.latency;
        format!(
            "{:<10} {:>9.0} ops/s {:>10.0} entities/s  p50 {} p90 {} p99 {} p99.9 {} max {}  errors {}{}",
            self.label,
            self.ops_per_sec,
            self.entities_per_sec,
            fmt_us(l.p50_us),
            fmt_us(l.p90_us),
            fmt_us(l.p99_us),
            fmt_us(l.p999_us),
            fmt_us(l.max_us),
            self.error_count(),
            CpuPerOp::suffix(
                self.cpu.map(|c| c.client_us),
                self.cpu.and_then(|c| c.server_us)
            ),
        )
    }
}

/// Builds a report from merged measurements.
pub fn throughput(count: u64, window: Duration) -> f64 {
    let s = window.as_secs_f64();
    if s <= 0.0 { 0.0 } else { count as f64 / s }
}

/// `A vs B` over several rounds (A, B, A, B, ...), with medians and ratios.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    pub workload: String,
    pub a: Vec<RunReport>,
    pub b: Vec<RunReport>,
    pub a_median: Summary,
    pub b_median: Summary,
    /// `a / b` of the median throughputs (entities per second).
    pub throughput_ratio: Option<f64>,
    /// `a / b` of the median p99 latencies (below 1: A is faster).
    pub p99_ratio: Option<f64>,
}

/// Medians over rounds of one target.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub ops_per_sec: f64,
    pub entities_per_sec: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub errors: u64,
    /// Median CPU per operation of the load generator and of the server, over the rounds that have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cpu_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_us: Option<f64>,
}

impl Summary {
    /// The median of every figure over `runs` (each figure separately).
    pub fn median_of(runs: &[RunReport]) -> Summary {
        let m = |f: &dyn Fn(&RunReport) -> f64| {
            median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
        };
        Summary {
            ops_per_sec: m(&|r| r.ops_per_sec),
            entities_per_sec: m(&|r| r.entities_per_sec),
            p50_us: m(&|r| r.latency.p50_us as f64),
            p90_us: m(&|r| r.latency.p90_us as f64),
            p99_us: m(&|r| r.latency.p99_us as f64),
            p999_us: m(&|r| r.latency.p999_us as f64),
            max_us: m(&|r| r.latency.max_us as f64),
            errors: runs.iter().map(RunReport::error_count).sum(),
            client_cpu_us: median(
                &runs
                    .iter()
                    .filter_map(|r| Some(r.cpu?.client_us))
                    .collect::<Vec<_>>(),
            ),
            server_cpu_us: median(
                &runs
                    .iter()
                    .filter_map(|r| r.cpu?.server_us)
                    .collect::<Vec<_>>(),
            ),
        }
    }

    /// One console line for target `label`.
    pub fn line(&self, label: &str) -> String {
        format!(
            "{label:<10} {:>9.0} ops/s {:>10.0} entities/s  p50 {} p99 {} p99.9 {}  errors {}{}",
            self.ops_per_sec,
            self.entities_per_sec,
            fmt_us(self.p50_us as u64),
            fmt_us(self.p99_us as u64),
            fmt_us(self.p999_us as u64),
            self.errors,
            CpuPerOp::suffix(self.client_cpu_us, self.server_cpu_us),
        )
    }
}

impl CompareReport {
    pub fn new(workload: &str, a: Vec<RunReport>, b: Vec<RunReport>) -> CompareReport {
        let (am, bm) = (Summary::median_of(&a), Summary::median_of(&b));
        CompareReport {
            workload: workload.to_string(),
            throughput_ratio: ratio(am.entities_per_sec, bm.entities_per_sec),
            p99_ratio: ratio(am.p99_us, bm.p99_us),
            a,
            b,
            a_median: am,
            b_median: bm,
        }
    }

    pub fn a_label(&self) -> &str {
        self.a.first().map(|r| r.label.as_str()).unwrap_or("A")
    }

    pub fn b_label(&self) -> &str {
        self.b.first().map(|r| r.label.as_str()).unwrap_or("B")
    }
}

/// The median (the mean of the middle two for an even count); `None` for no values. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// `a / b`, or `None` when `b` is zero (or either is not finite).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// `850µs`, `12.3ms`, `1.20s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut r = Recorder::new();
        for ms in 1..=1000u64 {
            r.success(Duration::from_millis(ms), 1);
        }
        let l = Latency::of(&r.latency);
        let near =
            |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.001 + 1.0;
        assert!(near(l.p50_us, 500_000), "{l:?}");
        assert!(near(l.p90_us, 900_000), "{l:?}");
        assert!(near(l.p99_us, 990_000), "{l:?}");
        assert!(near(l.p999_us, 999_000), "{l:?}");
        assert!(near(l.max_us, 1_000_000), "{l:?}");
        assert!((l.mean_us - 500_500.0).abs() < 600.0);
        assert_eq!(Latency::of(&Recorder::new().latency), Latency::default());
    }

    #[test]
    fn merging_workers_adds_counts_and_errors() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.success(Duration::from_micros(100), 1);
        b.success(Duration::from_micros(300), 100);
        b.error("timeout");
        b.error("timeout");
        a.error("http-503");
        b.untimed(0);
        a.merge(&b);
        assert_eq!((a.ops, a.entities, a.latency.len()), (3, 101, 2));
        assert_eq!(a.errors.get("timeout"), Some(&2));
        assert_eq!(a.errors.get("http-503"), Some(&1));
        // Sub-microsecond and enormous latencies are clamped, not dropped.
        a.success(Duration::from_nanos(10), 1);
        a.success(Duration::from_secs(100_000), 1);
        assert_eq!(a.latency.len(), 4);
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(ratio(10.0, 4.0), Some(2.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(throughput(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(throughput(5, Duration::ZERO), 0.0);
    }

    #[test]
    fn compare_reports_take_medians_per_target() {
        let run = |label: &str, eps: f64, p99: u64| RunReport {
            label: label.into(),
            target: "t".into(),
            protocol: Protocol::Rest,
            workload: crate::workload::WorkloadConfig {
                kind: crate::workload::WorkloadKind::Read,
                entity_size: 1024,
                partitions: 1,
                records: 1,
                distribution: crate::workload::KeyDistribution::Uniform,
                zipf_theta: 0.99,
                page_size: 1,
                query_partitions: 1,
                batch_size: 1,
                run_id: "x".into(),
                lock_hold_us: 0,
            },
            concurrency: 1,
            rate: None,
            started_at: String::new(),
            seconds: 1.0,
            ops: eps as u64,
            entities: eps as u64,
            errors: BTreeMap::new(),
            ops_per_sec: eps,
            entities_per_sec: eps,
            latency: Latency {
                p99_us: p99,
                ..Latency::default()
            },
            cpu: Some(CpuPerOp {
                client_us: eps / 10.0,
                server_us: (label == "a").then_some(eps),
            }),
        };
        let c = CompareReport::new(
            "read",
            vec![
                run("a", 100.0, 10),
                run("a", 300.0, 30),
                run("a", 200.0, 20),
            ],
            vec![run("b", 50.0, 40), run("b", 40.0, 40), run("b", 60.0, 40)],
        );
        assert_eq!(c.a_median.entities_per_sec, 200.0);
        assert_eq!(c.b_median.entities_per_sec, 50.0);
        assert_eq!(c.throughput_ratio, Some(4.0));
        assert_eq!(c.p99_ratio, Some(0.5));
        assert_eq!((c.a_label(), c.b_label()), ("a", "b"));
        assert_eq!(c.a_median.client_cpu_us, Some(20.0));
        assert_eq!(c.a_median.server_cpu_us, Some(200.0));
        assert_eq!(c.b_median.server_cpu_us, None);
        assert!(
            c.a_median
                .line("a")
                .ends_with("errors 0  cpu/op client 20µs server 200µs")
        );
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<CompareReport>(&json).unwrap(), c);
    }

    #[test]
    fn a_summary_prints_as_one_console_line() {
        let s = Summary {
            ops_per_sec: 1234.4,
            entities_per_sec: 123_440.0,
            p50_us: 850.0,
            p99_us: 12_345.0,
            p999_us: 1_200_000.0,
            errors: 2,
            ..Summary::default()
        };
        assert_eq!(
            s.line("trestle"),
            "trestle         1234 ops/s     123440 entities/s  p50 850µs p99 12.3ms p99.9 1.20s  errors 2"
        );
    }

    #[test]
    fn durations_print_in_the_right_unit() {
        assert_eq!(fmt_us(850), "850µs");
        assert_eq!(fmt_us(12_345), "12.3ms");
        assert_eq!(fmt_us(1_200_000), "1.20s");
    }
}
