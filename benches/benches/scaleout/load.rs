//! The closed-loop load of the scale-out bench: `clients` tasks, each sending its next request as soon as
//! the last one answered, through the Rust SDK. Every request is kept as a [`Sample`] (when it was sent,
//! how long it took, whether it succeeded), so windows are cut afterwards around events whose times are
//! only known once they happened (a split acknowledged, a move done).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use trestle_client::Table;
use trestle_types::{Entity, Value};

/// The payload of every entity: a 1,000-byte string, about the harness's 1 KiB entity.
pub const PAYLOAD_BYTES: usize = 1000;

/// The partition key of partition `i`.
pub fn partition_key(i: u32) -> String {
    format!("p{i:05}")
}

/// The row key of preloaded record `i`.
pub fn record_row_key(i: u64) -> String {
    format!("r{i:012}")
}

/// A 1 KiB entity.
pub fn entity(pk: &str, rk: &str) -> Entity {
    Entity::new(pk, rk).with("Data", Value::String("x".repeat(PAYLOAD_BYTES)))
}

/// What the load does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Insert Entity with keys new to the table, round-robin over the worker's partitions.
    Insert,
    /// Get Entity of a preloaded record in one of the worker's partitions, chosen uniformly.
    Read,
}

/// One worker: the table handle it sends through and the partitions it touches.
#[derive(Clone)]
pub struct Worker {
    pub table: Table,
    pub partitions: Vec<u32>,
}

/// Every worker on one handle and all `partitions` partitions (the SDK routes each call).
pub fn shared(table: &Table, clients: usize, partitions: u32) -> Vec<Worker> {
    (0..clients)
        .map(|_| Worker {
            table: table.clone(),
            partitions: (0..partitions).collect(),
        })
        .collect()
}

/// One request: sent `at` after the load started, answered `latency` later.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub latency: Duration,
    pub ok: bool,
}

impl Sample {
    fn end(&self) -> Duration {
        self.at + self.latency
    }
}

/// A running load.
pub struct Load {
    pub started: Instant,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(Vec<Sample>, Vec<String>)>>,
}

/// Starts `workers` on `kind`. `records` preloaded records over `partitions` partitions are what reads
/// choose from (record `i` is in partition `i % partitions`); `tag` keeps inserted keys unique across
/// loads on the same table.
pub fn start(kind: Kind, workers: Vec<Worker>, records: u64, partitions: u32, tag: &str) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles = workers
        .into_iter()
        .enumerate()
        .map(|(w, worker)| {
            let stop = stop.clone();
            let tag = format!("{tag}-w{w:03}");
            tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(w as u64 + 1);
                let mut samples = Vec::with_capacity(1 << 16);
                let mut errors = Vec::new();
                let mine = &worker.partitions;
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let ok = match kind {
                        Kind::Insert => {
                            let pk = partition_key(mine[seq as usize % mine.len()]);
                            let rk = format!("{tag}-{seq:010}");
                            worker.table.insert(entity(&pk, &rk)).await.map(|_| ())
                        }
                        Kind::Read => {
                            // A record of one of this worker's partitions: i ≡ p (mod partitions).
                            let p = mine[rng.gen_range(0..mine.len())];
                            let per = records / u64::from(partitions);
                            let i =
                                rng.gen_range(0..per.max(1)) * u64::from(partitions) + u64::from(p);
                            let (pk, rk) = (partition_key(p), record_row_key(i));
                            worker.table.get(&pk, &rk).await.map(|_| ())
                        }
                    };
                    let latency = sent.elapsed();
                    if let Err(e) = &ok
                        && errors.len() < 5
                    {
                        errors.push(format!("{:.1?} after start: {e}", sent - started));
                    }
                    samples.push(Sample {
                        at: sent - started,
                        latency,
                        ok: ok.is_ok(),
                    });
                    seq += 1;
                }
                (samples, errors)
            })
        })
        .collect();
    Load {
        started,
        stop,
        workers: handles,
    }
}

impl Load {
    /// How long the load has run.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the workers and returns every sample (in no particular order) and the first few errors.
    pub async fn finish(self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        let mut errors = Vec::new();
        for w in self.workers {
            if let Ok((s, e)) = w.await {
                samples.extend(s);
                errors.extend(e);
            }
        }
        Recorded { samples, errors }
    }
}

/// What a load recorded.
pub struct Recorded {
    pub samples: Vec<Sample>,
    pub errors: Vec<String>,
}

/// Latencies and rate of the requests of one window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Successful requests answered in the window, per second of it.
    pub per_sec: f64,
}

impl Recorded {
    /// Requests answered within `[from, to)` (times since the load started).
    pub fn answered_in(&self, from: Duration, to: Duration) -> Window {
        self.window(from, to, |s| s.end() >= from && s.end() < to)
    }

    /// Requests that were in flight at some moment of `[from, to]`: sent before `to`, answered after
    /// `from`. A request stalled by an event counts even if it was sent before the event began.
    pub fn in_flight_during(&self, from: Duration, to: Duration) -> Window {
        self.window(from, to, |s| s.at <= to && s.end() >= from)
    }

    /// The slowest request in flight at some moment of `[from, to]`.
    pub fn slowest_in_flight(&self, from: Duration, to: Duration) -> Option<Sample> {
        self.samples
            .iter()
            .filter(|s| s.at <= to && s.end() >= from)
            .max_by_key(|s| s.latency)
            .copied()
    }

    fn window(&self, from: Duration, to: Duration, pick: impl Fn(&Sample) -> bool) -> Window {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
        let (mut requests, mut errors, mut answered_ok) = (0, 0, 0);
        for s in self.samples.iter().filter(|s| pick(s)) {
            requests += 1;
            if !s.ok {
                errors += 1;
            }
            if s.ok && s.end() >= from && s.end() < to {
                answered_ok += 1;
            }
            hist.saturating_record((s.latency.as_micros() as u64).max(1));
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let secs = to.saturating_sub(from).as_secs_f64();
        Window {
            requests,
            errors,
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            max_ms: ms(hist.max()),
            per_sec: if secs > 0.0 {
                answered_ok as f64 / secs
            } else {
                0.0
            },
        }
    }
}

/// What one measured window of [`measure`] saw.
pub struct Measured {
    pub window: Window,
    pub errors: Vec<String>,
    /// The whole process's CPU (cluster, clients, everything) per successful request, µs.
    pub cpu_us_per_op: f64,
    /// Raft message batches the in-process network delivered per successful request.
    pub batches_per_op: f64,
    /// CPU of the busiest thread groups in the window, in % of one core, busiest first.
    pub threads: Vec<(String, f64)>,
    /// The window's start and end, seconds since the Unix epoch (to line up with outside tools such
    /// as `perf record -k realtime`).
    pub wall: (f64, f64),
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs `kind` for `warmup + measure` and returns the measured window (requests answered after the
/// warm-up) with the CPU the process used and the Raft batches `delivered` counted meanwhile.
pub async fn measure(
    kind: Kind,
    workers: Vec<Worker>,
    records: u64,
    partitions: u32,
    tag: &str,
    (warmup, measure): (Duration, Duration),
    delivered: impl Fn() -> u64,
) -> Measured {
    let load = start(kind, workers, records, partitions, tag);
    tokio::time::sleep(warmup).await;
    let (cpu0, threads0, batches0) = (
        trestle_benches::cpu::process_cpu(None),
        crate::threads::cpu_by_thread(),
        delivered(),
    );
    let (from, wall_from) = (load.elapsed(), unix_now());
    tokio::time::sleep(measure).await;
    let (to, wall_to) = (load.elapsed(), unix_now());
    let (cpu1, threads1, batches1) = (
        trestle_benches::cpu::process_cpu(None),
        crate::threads::cpu_by_thread(),
        delivered(),
    );
    let recorded = load.finish().await;
    let window = recorded.answered_in(from, to);
    let ops = (window.per_sec * (to - from).as_secs_f64()).round() as u64;
    Measured {
        window,
        errors: recorded.errors,
        cpu_us_per_op: trestle_benches::cpu::per_op_us(cpu0, cpu1, ops).unwrap_or(f64::NAN),
        batches_per_op: batches1.saturating_sub(batches0) as f64 / ops.max(1) as f64,
        threads: crate::threads::busiest(&threads0, &threads1, to - from),
        wall: (wall_from, wall_to),
    }
}
