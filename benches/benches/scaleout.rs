//! Scale-out: what a range split and a replica move cost a table under a steady write load, and what
//! splitting a single hot table into ranges led by different nodes does for its throughput. Not
//! criterion: one event per measurement, medians of a few runs (the machine is shared).
//!
//! Every cluster is an in-process one (`trestle_testkit::InProcessCluster`): the real node code on
//! RocksDB in temporary directories (`TMPDIR`), Raft with `trestle node`'s timings (100 ms ticks, 1 MiB
//! snapshot chunks) over the testkit's in-memory network, clients on the Rust SDK over gRPC on loopback.
//! The load is closed-loop: each client sends its next request when the last one answered; every
//! request is kept (send time, latency, outcome) and windows are cut afterwards.
//!
//! - **split**: 3 nodes, one data range; `TRESTLE_SCALEOUT_CLIENTS` (16) clients insert 1 KiB
//!   entities over 64 partitions of one table. After a warm-up and a window, the range is split at the
//!   partition nearest the middle of its data (`ClusterTableService::split_range`, what `trestle ctl
//!   range split --range` asks for). Reported: the time from the request to its acknowledgement and to
//!   both halves having a leader, and write latency before, during (every request in flight at some
//!   moment between the request and both halves led) and after.
//! - **merge**: as split, but the range is split at its middle after the warm-up and, after a window
//!   on the two halves, the right half is merged back (`ClusterTableService::merge_range`, what
//!   `trestle ctl range merge` asks for). Reported: the time to the merge's acknowledgement and to the
//!   merged range having a leader, and write latency before, during and after.
//! - **move**: 4 nodes, one data range preloaded with `TRESTLE_SCALEOUT_MOVE_MIB` (64) MiB of 1 KiB
//!   entities and led by node 2; under the same insert load, node 1's replica moves to node 4
//!   (`ClusterTableService::move_replica`: learner, snapshot, joint promote-and-remove). Reported: the
//!   time until node 4's replica is restored from the snapshot and until the move is acknowledged, the
//!   snapshot's bytes, and write latency before, during and after.
//! - **hot**: for each node count in `TRESTLE_SCALEOUT_HOT_NODES` (3,5): one table preloaded with
//!   20,000 records over 64 partitions; `TRESTLE_SCALEOUT_HOT_CLIENTS` (64) clients insert, then read
//!   (Get Entity of a random record), first with the table in one range, then with it cut at even
//!   partition boundaries into as many ranges as there are nodes (`TRESTLE_SCALEOUT_HOT_RANGES`
//!   sets another count), all still led by the node that led the one range, and then with range `i`
//!   led by node `i % nodes + 1` (replicas moved to nodes 4 and 5 where needed). Spread, it is
//!   measured twice: with one SDK client as an application has it, and with each client talking
//!   only to one range's leader about that range's partitions (the best routing can do). After each such run, on a fresh
//!   cluster with the range scheduler on (`split-load-ops` = `TRESTLE_SCALEOUT_SPLIT_LOAD_OPS`,
//!   1,000; rounds of 1 s), leader balancing on (rounds of 1 s) and, on more than three nodes,
//!   replica balancing on (as `trestle dev --nodes N` has it for N > 3), inserts run until the
//!   scheduler has neither split a range nor moved a replica for 5 rounds (at most 120 s); reported
//!   are the time that took, the ranges, leaders and replicas it produced, and the throughput then
//!   (through the SDK, and routed as above), also as a ratio to the one-range figures of the run just
//!   before
//!   (`TRESTLE_SCALEOUT_SCHEDULER_RUNS`, default all runs, sets how many runs get one). Every
//!   setting after the split is also reported as a ratio to the same run's one-range figure.
//!
//! Runs: `TRESTLE_SCALEOUT_RUNS` (3) of each; windows of `TRESTLE_SCALEOUT_WINDOW_SECS` (2) after a
//! 1 s warm-up; `TRESTLE_SCALEOUT_PARTS` (`split,merge,move,hot`) picks the parts. Split and move also
//! report, run by run, the ratio of the p99 during the event to the p99 before it.
//!
//! Run: `cargo bench -p trestle-benches --bench scaleout` (release; prints tables of medians and the
//! runs' ranges; about 7 minutes with the defaults on this 2-core machine). With `-- --test` (what `cargo bench -p
//! trestle-benches -- --test` passes every bench) it is a smoke run of well under a minute: one run
//! of each part, 0.5 s windows, a 4 MiB move, the hot table on three nodes, no scheduler runs.

#[path = "scaleout/cluster.rs"]
mod cluster;
#[path = "scaleout/load.rs"]
mod load;
#[path = "scaleout/threads.rs"]
mod threads;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use trestle_storage_node::splits::SplitAt;

use crate::cluster::{Chores, leader_now, poll};
use crate::load::{Kind, Window, Worker};

const PARTITIONS: u32 = 64;
const HOT_RECORDS: u64 = 20_000;
const WARMUP: Duration = Duration::from_secs(1);

/// The bench's knobs (see the module header).
#[derive(Debug, Clone)]
struct Settings {
    runs: usize,
    window: Duration,
    clients: usize,
    hot_clients: usize,
    move_mib: u64,
    hot_nodes: Vec<usize>,
    /// Ranges the hot table is cut into by hand (0: as many as there are nodes).
    hot_ranges: u32,
    split_load_ops: u64,
    scheduler_runs: usize,
    parts: Vec<String>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Settings {
    /// The knobs from the environment; `smoke` (`cargo bench -- --test`) makes the defaults one short
    /// run of each part on three nodes, without the scheduler runs.
    fn from_env(smoke: bool) -> Settings {
        let list = |name: &str, default: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_else(|_| default.to_string())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let runs = env_or("TRESTLE_SCALEOUT_RUNS", if smoke { 1 } else { 3 }).max(1);
        Settings {
            runs,
            window: Duration::from_secs_f64(env_or(
                "TRESTLE_SCALEOUT_WINDOW_SECS",
                if smoke { 0.5 } else { 2.0f64 },
            )),
            clients: env_or("TRESTLE_SCALEOUT_CLIENTS", 16usize).max(1),
            hot_clients: env_or("TRESTLE_SCALEOUT_HOT_CLIENTS", 64usize).max(1),
            move_mib: env_or("TRESTLE_SCALEOUT_MOVE_MIB", if smoke { 4 } else { 64u64 }),
            hot_nodes: list(
                "TRESTLE_SCALEOUT_HOT_NODES",
                if smoke { "3" } else { "3,5" },
            )
            .iter()
            .filter_map(|n| n.parse().ok())
            .filter(|&n| n >= 3)
            .collect(),
            hot_ranges: env_or("TRESTLE_SCALEOUT_HOT_RANGES", 0u32),
            split_load_ops: env_or("TRESTLE_SCALEOUT_SPLIT_LOAD_OPS", 1000u64),
            scheduler_runs: env_or(
                "TRESTLE_SCALEOUT_SCHEDULER_RUNS",
                if smoke { 0 } else { runs },
            ),
            parts: list("TRESTLE_SCALEOUT_PARTS", "split,merge,move,hot"),
        }
    }
}

/// A figure over the runs: `median (min–max)`.
fn spread(xs: &[f64], decimals: usize) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    if v.len() == 1 {
        return format!("{median:.decimals$}");
    }
    format!(
        "{median:.decimals$} ({:.decimals$}–{:.decimals$})",
        v[0],
        v[v.len() - 1]
    )
}

/// Named figures collected run by run, printed as `name: median (min–max)` in insertion order.
#[derive(Default)]
struct Figures(Vec<(String, Vec<f64>, usize)>);

impl Figures {
    fn add(&mut self, name: &str, value: f64, decimals: usize) {
        match self.0.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, values, _)) => values.push(value),
            None => self.0.push((name.to_string(), vec![value], decimals)),
        }
    }

    fn add_window(&mut self, prefix: &str, w: &Window) {
        self.add(&format!("{prefix} p50 ms"), w.p50_ms, 1);
        self.add(&format!("{prefix} p99 ms"), w.p99_ms, 1);
        self.add(&format!("{prefix} max ms"), w.max_ms, 1);
        self.add(&format!("{prefix} requests"), w.requests as f64, 0);
        self.add(&format!("{prefix} errors"), w.errors as f64, 0);
    }

    fn print(&self) {
        let width = self.0.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
        for (name, values, decimals) in &self.0 {
            println!("  {name:<width$}  {}", spread(values, *decimals));
        }
    }
}

/// The Raft term of `range` as node `id` sees it (0 without a replica).
fn term_of(c: &trestle_testkit::InProcessCluster, id: u64, range: u64) -> u64 {
    c.node(id).raft().group_status(range).map_or(0, |s| s.term)
}

/// `slowest request in flight: sent at +X ms (from the event's start), took Y ms`.
fn describe_slowest(recorded: &load::Recorded, t0: Duration, done: Duration) -> String {
    match recorded.slowest_in_flight(t0, done) {
        Some(s) => format!(
            "slowest in flight: sent {:+.0} ms from the start, took {:.1} ms{}",
            (s.at.as_secs_f64() - t0.as_secs_f64()) * 1e3,
            s.latency.as_secs_f64() * 1e3,
            if s.ok { "" } else { " (failed)" }
        ),
        None => "nothing in flight".into(),
    }
}

fn print_errors(errors: &[String]) {
    for e in errors.iter().take(5) {
        println!("    error: {e}");
    }
}

/// One split under the insert load.
/// What [`boundary_run`] does to the table's range under the insert load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boundary {
    /// Split the one range at the middle of its data.
    Split,
    /// Merge the right half of a range split before the load back into the left half.
    Merge,
}

async fn boundary_run(s: &Settings, figures: &mut Figures, op: Boundary) -> anyhow::Result<()> {
    let c = cluster::start(3, Chores::default()).await?;
    let (_client, table) = cluster::client_with_table(&c).await?;
    let table_id = cluster::table_id(&c, 1).await?;
    let mut range = cluster::ranges_of(&c, 1, table_id)[0].id;
    let workers = load::shared(&table, s.clients, PARTITIONS);
    let label = if op == Boundary::Split {
        "split"
    } else {
        "merge"
    };
    let running = load::start(Kind::Insert, workers, 0, PARTITIONS, label);
    if op == Boundary::Merge {
        // Two ranges to merge: the data's middle after the warm-up, then a window on two ranges.
        tokio::time::sleep(WARMUP).await;
        let (_, right) = c
            .node(1)
            .tables()
            .split_range(range, SplitAt::MiddleOfData)
            .await
            .map_err(|e| anyhow::anyhow!("split before the merge: {e}"))?;
        range = right.id;
        let led = poll(Duration::from_secs(30), || leader_now(&c, range).is_some()).await;
        anyhow::ensure!(led, "the right half {range} has no leader after 30 s");
    }
    tokio::time::sleep(WARMUP + s.window).await;
    let leader = leader_now(&c, range).unwrap_or(1);
    let bytes = c
        .node(leader)
        .tables()
        .local()
        .ranges()
        .stats(range)
        .bytes();
    let term_before = term_of(&c, leader, range);
    let t0 = running.elapsed();
    let asked = Instant::now();
    let (left, right) = match op {
        Boundary::Split => c
            .node(1)
            .tables()
            .split_range(range, SplitAt::MiddleOfData)
            .await
            .map(|(l, r)| (l.id, Some(r.id)))
            .map_err(|e| anyhow::anyhow!("split: {e}"))?,
        Boundary::Merge => c
            .node(1)
            .tables()
            .merge_range(range, Duration::from_secs(30))
            .await
            .map(|m| (m.id, None))
            .map_err(|e| anyhow::anyhow!("merge: {e}"))?,
    };
    let acked = asked.elapsed();
    let led = poll(Duration::from_secs(30), || {
        leader_now(&c, left).is_some() && right.is_none_or(|r| leader_now(&c, r).is_some())
    })
    .await;
    anyhow::ensure!(
        led,
        "the ranges after the {label} have no leaders after 30 s"
    );
    let all_led = asked.elapsed();
    let done = t0 + all_led.max(acked);
    tokio::time::sleep(s.window).await;
    let recorded = running.finish().await;
    figures.add(
        &format!("range bytes at the {label} (MiB)"),
        bytes as f64 / 1048576.0,
        1,
    );
    figures.add(
        &format!("{label} acknowledged (ms)"),
        acked.as_secs_f64() * 1e3,
        1,
    );
    let led_label = if op == Boundary::Split {
        "both halves led (ms)"
    } else {
        "merged range led (ms)"
    };
    figures.add(led_label, all_led.as_secs_f64() * 1e3, 1);
    let before = recorded.answered_in(t0.saturating_sub(s.window), t0);
    let during = recorded.in_flight_during(t0, done);
    let after = recorded.answered_in(done, done + s.window);
    figures.add_window("before", &before);
    figures.add_window("during", &during);
    figures.add_window("after", &after);
    figures.add("inserts/s before", before.per_sec, 0);
    figures.add("inserts/s after", after.per_sec, 0);
    figures.add("p99 during / before (×)", during.p99_ms / before.p99_ms, 2);
    figures.add(
        "max during / p99 before (×)",
        during.max_ms / before.p99_ms,
        2,
    );
    figures.add(
        "inserts/s after / before (×)",
        after.per_sec / before.per_sec,
        2,
    );
    let left_leader = leader_now(&c, left);
    println!(
        "  run: range {range} led by node {leader}, {label} into {left}{} at {:.1} MiB; acked {:.1} ms, led {:.1} ms, leaders {:?}/{:?}; term {term_before} -> {}; {}; load average {}",
        right.map_or(String::new(), |r| format!(" and {r} (new)")),
        bytes as f64 / 1048576.0,
        acked.as_secs_f64() * 1e3,
        all_led.as_secs_f64() * 1e3,
        left_leader,
        right.and_then(|r| leader_now(&c, r)),
        left_leader.map_or(0, |l| term_of(&c, l, left)),
        describe_slowest(&recorded, t0, done),
        loadavg(),
    );
    print_errors(&recorded.errors);
    c.shutdown().await;
    Ok(())
}

/// One replica move (node 1 to node 4) under the insert load.
async fn move_run(s: &Settings, figures: &mut Figures) -> anyhow::Result<()> {
    let c = cluster::start(4, Chores::default()).await?;
    let (_client, table) = cluster::client_with_table(&c).await?;
    let records = s.move_mib * 1024;
    let loaded = Instant::now();
    cluster::preload(&table, records, PARTITIONS, 4).await?;
    let load_secs = loaded.elapsed().as_secs_f64();
    let table_id = cluster::table_id(&c, 1).await?;
    let range = cluster::ranges_of(&c, 1, table_id)[0].id;
    // Node 1 holds a follower: the move copies a replica, it does not also hand over leadership.
    cluster::make_leader(&c, range, 2).await?;
    anyhow::ensure!(
        c.wait_replicated(Duration::from_secs(60)).await,
        "replicas caught up"
    );
    let workers = load::shared(&table, s.clients, PARTITIONS);
    let running = load::start(Kind::Insert, workers, 0, PARTITIONS, "move");
    tokio::time::sleep(WARMUP + s.window).await;
    let bytes = c.node(2).tables().local().ranges().stats(range).bytes();
    let snapshots_before = c.net.snapshot_counters();
    let term_before = term_of(&c, 2, range);
    let t0 = running.elapsed();
    let asked = Instant::now();
    let finished = AtomicBool::new(false);
    let mover = async {
        let r = c
            .node(4)
            .tables()
            .move_replica(range, 1, 4, Duration::from_secs(600))
            .await;
        finished.store(true, Ordering::SeqCst);
        r
    };
    // When node 4's replica has its first state (the snapshot restored).
    let restored = async {
        let ok = poll(Duration::from_secs(600), || {
            finished.load(Ordering::SeqCst)
                || c.node(4)
                    .raft()
                    .group_status(range)
                    .is_some_and(|st| st.desc.is_some())
        })
        .await;
        ok.then(|| asked.elapsed())
    };
    let (moved, restored) = tokio::join!(mover, restored);
    let desc = moved.map_err(|e| anyhow::anyhow!("move: {e}"))?;
    let took = asked.elapsed();
    let done = t0 + took;
    tokio::time::sleep(s.window).await;
    let recorded = running.finish().await;
    let snapshots = c.net.snapshot_counters();
    let snap_mib = (snapshots.bytes - snapshots_before.bytes) as f64 / 1048576.0;
    let restored_s = restored.unwrap_or(took).as_secs_f64();
    figures.add("preload (s)", load_secs, 1);
    figures.add("range bytes at the move (MiB)", bytes as f64 / 1048576.0, 1);
    figures.add("snapshot streamed (MiB)", snap_mib, 1);
    figures.add("node 4 restored (s)", restored_s, 2);
    figures.add("move acknowledged (s)", took.as_secs_f64(), 2);
    figures.add("snapshot rate (MiB/s)", snap_mib / restored_s.max(1e-3), 0);
    let before = recorded.answered_in(t0.saturating_sub(s.window), t0);
    let during = recorded.in_flight_during(t0, done);
    let after = recorded.answered_in(done, done + s.window);
    figures.add_window("before", &before);
    figures.add_window("during", &during);
    figures.add_window("after", &after);
    let during_rate = recorded.answered_in(t0, done).per_sec;
    figures.add("inserts/s before", before.per_sec, 0);
    figures.add("inserts/s during", during_rate, 0);
    figures.add("inserts/s after", after.per_sec, 0);
    figures.add("p99 during / before (×)", during.p99_ms / before.p99_ms, 2);
    figures.add(
        "inserts/s during / before (×)",
        during_rate / before.per_sec,
        2,
    );
    let leader_after = leader_now(&c, range);
    println!(
        "  run: range {range} ({:.1} MiB) voters now {:?}, leader {:?}, term {term_before} -> {}; snapshot {snap_mib:.1} MiB in {} chunk(s), restored {restored_s:.2} s, done {:.2} s; {}; load average {}",
        bytes as f64 / 1048576.0,
        desc.voters,
        leader_after,
        leader_after.map_or(0, |l| term_of(&c, l, range)),
        snapshots.chunks - snapshots_before.chunks,
        took.as_secs_f64(),
        describe_slowest(&recorded, t0, done),
        loadavg(),
    );
    print_errors(&recorded.errors);
    c.shutdown().await;
    Ok(())
}

/// Insert and read throughput of one setting (requests per second).
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    inserts: f64,
    reads: f64,
}

/// Insert then read throughput through `workers` (fresh keys tagged `tag`), with the CPU the process
/// used per request and the Raft batches per request; one line per workload says where the CPU went.
/// With `baseline` (the one-range figures of the same run), the ratios to it too.
async fn insert_and_read(
    s: &Settings,
    c: &trestle_testkit::InProcessCluster,
    figures: &mut Figures,
    label: &str,
    workers: Vec<Worker>,
    tag: &str,
    baseline: Option<Rates>,
) -> Rates {
    let mut rates = Rates::default();
    for (kind, what) in [(Kind::Insert, "inserts"), (Kind::Read, "reads")] {
        let m = load::measure(
            kind,
            workers.clone(),
            HOT_RECORDS,
            PARTITIONS,
            tag,
            (WARMUP, s.window),
            || c.net.counters().0,
        )
        .await;
        figures.add(&format!("{label}: {what}/s"), m.window.per_sec, 0);
        let base = match kind {
            Kind::Insert => {
                rates.inserts = m.window.per_sec;
                baseline.map(|b| b.inserts)
            }
            Kind::Read => {
                rates.reads = m.window.per_sec;
                baseline.map(|b| b.reads)
            }
        };
        if let Some(base) = base {
            figures.add(
                &format!("{label}: {what}/s ÷ 1 range (×)"),
                m.window.per_sec / base,
                2,
            );
        }
        figures.add(&format!("{label}: {what} p99 ms"), m.window.p99_ms, 1);
        figures.add(&format!("{label}: {what} CPU µs/op"), m.cpu_us_per_op, 0);
        figures.add(
            &format!("{label}: {what} Raft batches/op"),
            m.batches_per_op,
            2,
        );
        let busiest: Vec<String> = m
            .threads
            .iter()
            .map(|(name, pct)| format!("{name} {pct:.0}%"))
            .collect();
        println!(
            "    {label}, {what}: {:.0}/s, p50 {:.1} ms; CPU by thread (% of a core): {} [{:.1}–{:.1}]",
            m.window.per_sec,
            m.window.p50_ms,
            busiest.join(", "),
            m.wall.0,
            m.wall.1
        );
        print_errors(&m.errors);
    }
    rates
}

/// Workers that each talk only to one range's leader about that range's partitions.
async fn routed_workers(
    c: &trestle_testkit::InProcessCluster,
    ranges: &[trestle_storage_node::ranges::RangeDesc],
    table_id: u64,
    clients: usize,
) -> anyhow::Result<Vec<Worker>> {
    let mut per_range = Vec::new();
    for r in ranges {
        let leader = leader_now(c, r.id).ok_or_else(|| anyhow::anyhow!("range {} led", r.id))?;
        let table = c.client_of(leader).await?.table(cluster::TABLE);
        let partitions: Vec<u32> = (0..PARTITIONS)
            .filter(|&p| {
                r.contains(&trestle_engine::keys::partition_prefix(
                    table_id,
                    &load::partition_key(p),
                ))
            })
            .collect();
        per_range.push(Worker { table, partitions });
    }
    Ok((0..clients)
        .map(|w| per_range[w % per_range.len()].clone())
        .collect())
}

/// The hot table on `n` nodes: one range, then split evenly and spread, measured as an application
/// routes and as a perfect router would. Returns the one-range figures.
async fn hot_run(s: &Settings, n: usize, figures: &mut Figures) -> anyhow::Result<Rates> {
    let c = cluster::start(n, Chores::default()).await?;
    let (_client, table) = cluster::client_with_table(&c).await?;
    cluster::preload(&table, HOT_RECORDS, PARTITIONS, 8).await?;
    let table_id = cluster::table_id(&c, 1).await?;
    let one = cluster::ranges_of(&c, 1, table_id);
    let one_leader = leader_now(&c, one[0].id);
    let fresh = || async { Ok::<_, anyhow::Error>(c.client().await?.table(cluster::TABLE)) };
    let workers = load::shared(&fresh().await?, s.hot_clients, PARTITIONS);
    let one_range = insert_and_read(s, &c, figures, "1 range", workers, "one", None).await;

    let k = if s.hot_ranges > 0 {
        s.hot_ranges
    } else {
        n as u32
    };
    let started = Instant::now();
    let ranges = cluster::split_evenly(&c, table_id, PARTITIONS, k).await?;
    figures.add(
        &format!("split into {k} (s)"),
        started.elapsed().as_secs_f64(),
        2,
    );
    // The halves of a split are led where the parent was: one node leads them all.
    let leaders = cluster::leaders_per_node(&c, &ranges);
    println!(
        "  run: one range led by node {one_leader:?}; split into {} ranges, leaders per node {leaders:?}",
        ranges.len()
    );
    let workers = load::shared(&fresh().await?, s.hot_clients, PARTITIONS);
    let label = format!("{k} ranges, one leader");
    insert_and_read(s, &c, figures, &label, workers, "unspread", Some(one_range)).await;
    let started = Instant::now();
    cluster::spread(&c, &ranges).await?;
    figures.add("spread (s)", started.elapsed().as_secs_f64(), 2);
    let leaders = cluster::leaders_per_node(&c, &ranges);
    println!("  run: spread, leaders per node {leaders:?}");
    // A new client, as an application that starts now would have (no route cached from before).
    let workers = load::shared(&fresh().await?, s.hot_clients, PARTITIONS);
    let label = format!("{k} ranges, SDK");
    insert_and_read(s, &c, figures, &label, workers, "sdk", Some(one_range)).await;
    let workers = routed_workers(&c, &ranges, table_id, s.hot_clients).await?;
    insert_and_read(
        s,
        &c,
        figures,
        &format!("{k} ranges, routed"),
        workers,
        "routed",
        Some(one_range),
    )
    .await;
    c.shutdown().await;
    Ok(one_range)
}

/// The hot table on `n` nodes split by the range scheduler, with leader balancing on and, on more
/// than three nodes, replica balancing (as `trestle dev --nodes N` runs it for N > 3). `baseline` is the
/// one-range figures of the hot run just before, on the same machine state.
async fn scheduler_run(
    s: &Settings,
    n: usize,
    figures: &mut Figures,
    baseline: Option<Rates>,
) -> anyhow::Result<()> {
    let chores = Chores {
        split_load_ops: s.split_load_ops,
        balance_ms: Some(1000),
        balance_replicas: n > 3,
    };
    let c = cluster::start(n, chores).await?;
    let (_client, table) = cluster::client_with_table(&c).await?;
    cluster::preload(&table, HOT_RECORDS, PARTITIONS, 8).await?;
    let table_id = cluster::table_id(&c, 1).await?;
    let workers = load::shared(&table, s.hot_clients, PARTITIONS);
    let running = load::start(Kind::Insert, workers, HOT_RECORDS, PARTITIONS, "sched");
    let started = Instant::now();
    let mut placement = cluster::placement(&c, table_id);
    let (mut changed, mut first_split) = (Instant::now(), None);
    let mut history: BTreeMap<u64, String> = BTreeMap::new();
    // Settled: no new range and no replica moved for five scheduler rounds (or 120 s in all). A range
    // whose leader is being elected shows no replicas for a moment; that counts as a change too.
    while started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = cluster::placement(&c, table_id);
        if now != placement {
            if now.len() != placement.len() {
                first_split.get_or_insert(started.elapsed());
            }
            let per_node = cluster::replicas_per_node(&c, &now);
            history.insert(
                started.elapsed().as_millis() as u64,
                format!("{} ranges, replicas per node {per_node:?}", now.len()),
            );
            placement = now;
            changed = Instant::now();
        }
        if first_split.is_some() && changed.elapsed() >= Duration::from_secs(5) {
            break;
        }
    }
    let settled = changed.duration_since(started);
    let recorded = running.finish().await;
    let placed = cluster::placement(&c, table_id);
    let leaders = cluster::leaders_of_placement(&c, &placed);
    let replicas = cluster::replicas_per_node(&c, &placed);
    figures.add(
        "first split after (s)",
        first_split.map_or(f64::NAN, |d| d.as_secs_f64()),
        1,
    );
    figures.add("settled after (s)", settled.as_secs_f64(), 1);
    figures.add("ranges of the table", placed.len() as f64, 0);
    figures.add(
        "nodes leading one of them",
        leaders.iter().filter(|&&l| l > 0).count() as f64,
        0,
    );
    figures.add(
        "nodes holding one of them",
        replicas.iter().filter(|&&r| r > 0).count() as f64,
        0,
    );
    println!(
        "  run: changes over time (ms → state) {history:?}; at the end leaders per node {leaders:?}, replicas per node {replicas:?}; inserts/s while splitting {:.0}",
        recorded.answered_in(Duration::ZERO, settled).per_sec
    );
    print_errors(&recorded.errors);
    let workers = load::shared(&table, s.hot_clients, PARTITIONS);
    let label = "after the scheduler, SDK";
    insert_and_read(s, &c, figures, label, workers, "after", baseline).await;
    // The same placement with perfect routing: each client on one range's leader.
    let descs: Vec<_> = placed
        .iter()
        .filter_map(|(id, _)| {
            let leader = leader_now(&c, *id)?;
            c.node(leader).tables().local().ranges().get(*id)
        })
        .collect();
    if descs.len() == placed.len() {
        let workers = routed_workers(&c, &descs, table_id, s.hot_clients).await?;
        let label = "after the scheduler, routed";
        insert_and_read(s, &c, figures, label, workers, "after-routed", baseline).await;
    } else {
        println!("    (a range had no leader: no routed measurement)");
    }
    c.shutdown().await;
    Ok(())
}

async fn bench(s: Settings) {
    let wants = |part: &str| s.parts.iter().any(|p| p == part);
    if wants("split") {
        println!(
            "\n== split: 3 nodes, {} clients inserting 1 KiB entities over {PARTITIONS} partitions, {} runs (load average {})",
            s.clients,
            s.runs,
            loadavg()
        );
        let mut f = Figures::default();
        for _ in 0..s.runs {
            if let Err(e) = boundary_run(&s, &mut f, Boundary::Split).await {
                println!("  run failed: {e:#}");
            }
        }
        f.print();
    }
    if wants("merge") {
        println!(
            "\n== merge: 3 nodes, the range split at its middle after the warm-up, then merged back, {} clients inserting, {} runs (load average {})",
            s.clients,
            s.runs,
            loadavg()
        );
        let mut f = Figures::default();
        for _ in 0..s.runs {
            if let Err(e) = boundary_run(&s, &mut f, Boundary::Merge).await {
                println!("  run failed: {e:#}");
            }
        }
        f.print();
    }
    if wants("move") {
        println!(
            "\n== move: 4 nodes, range of {} MiB preloaded, node 1 -> node 4, {} clients inserting, {} runs (load average {})",
            s.move_mib,
            s.clients,
            s.runs,
            loadavg()
        );
        let mut f = Figures::default();
        for _ in 0..s.runs {
            if let Err(e) = move_run(&s, &mut f).await {
                println!("  run failed: {e:#}");
            }
        }
        f.print();
    }
    if wants("hot") {
        for &n in &s.hot_nodes {
            println!(
                "\n== hot table: {n} nodes, {} clients, {HOT_RECORDS} records over {PARTITIONS} partitions, {} runs, each followed by a scheduler run for the first {} (load average {})",
                s.hot_clients,
                s.runs,
                s.scheduler_runs,
                loadavg()
            );
            // A scheduler run right after each hot run, so the two see the same state of the machine
            // and the scheduler's figures are compared with the one-range figures of the same run.
            let (mut f, mut sched) = (Figures::default(), Figures::default());
            for run in 0..s.runs {
                let baseline = match hot_run(&s, n, &mut f).await {
                    Ok(b) => Some(b),
                    Err(e) => {
                        println!("  run failed: {e:#}");
                        None
                    }
                };
                if run < s.scheduler_runs {
                    println!(
                        "  scheduler run (split-load-ops {}, replica balancing {}):",
                        s.split_load_ops,
                        if n > 3 { "on" } else { "off" }
                    );
                    if let Err(e) = scheduler_run(&s, n, &mut sched, baseline).await {
                        println!("  run failed: {e:#}");
                    }
                }
            }
            f.print();
            if s.scheduler_runs > 0 {
                println!(
                    "\n== hot table split by the scheduler: {n} nodes, split-load-ops {}, {} run(s) (load average {})",
                    s.split_load_ops,
                    s.scheduler_runs.min(s.runs),
                    loadavg()
                );
                sched.print();
            }
        }
    }
}

/// The machine's load average (the machine is shared; a busy neighbour shows here).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used. `--test` (as criterion's benches
    // take it) is a smoke run.
    let smoke = std::env::args().any(|a| a == "--test");
    let settings = Settings::from_env(smoke);
    println!(
        "scale-out: {settings:?}; temporary directories under {}",
        std::env::temp_dir().display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    rt.block_on(bench(settings));
    println!(
        "\ntotal {:.0} s (load average {})",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}
