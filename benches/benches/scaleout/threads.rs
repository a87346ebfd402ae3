//! CPU time per thread of this process (`/proc/self/task/*/stat`), grouped by thread name, so a window
//! can say which threads the cluster's time went to: each node's Raft driver (`raft-driver-N`), the
//! in-process network's delivery thread, the tokio workers (gRPC, the table service, the clients),
//! RocksDB's flush and compaction threads.

use std::collections::BTreeMap;
use std::time::Duration;

/// `USER_HZ` (fixed by the Linux ABI).
const TICKS_PER_SEC: f64 = 100.0;

/// Clock ticks used so far by the threads of each name (thread ids of the same name summed).
pub fn cpu_by_thread() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let mut fields = stat[close + 1..].split_ascii_whitespace().skip(11);
        let ticks = (|| {
            let u: u64 = fields.next()?.parse().ok()?;
            let s: u64 = fields.next()?.parse().ok()?;
            Some(u + s)
        })()
        .unwrap_or(0);
        *out.entry(group(&name)).or_insert(0) += ticks;
    }
    out
}

/// Threads that are many of a kind count as one group.
fn group(name: &str) -> String {
    if name.starts_with("tokio") {
        "tokio workers".into()
    } else if name.starts_with("rocksdb") {
        "rocksdb".into()
    } else if name.starts_with("snap-send") {
        "snapshot senders".into()
    } else if name.starts_with("range-") {
        "range size counters".into()
    } else {
        name.to_string()
    }
}

/// The groups' CPU between two readings over `wall`, in % of one core, busiest first (the first five).
/// Threads that ended between the readings are not counted.
pub fn busiest(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    wall: Duration,
) -> Vec<(String, f64)> {
    let secs = wall.as_secs_f64().max(1e-3);
    let mut used: Vec<(String, f64)> = after
        .iter()
        .map(|(name, &t)| {
            let was = before.get(name).copied().unwrap_or(0);
            let pct = t.saturating_sub(was) as f64 / TICKS_PER_SEC / secs * 100.0;
            (name.clone(), pct)
        })
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    used.truncate(5);
    used
}
