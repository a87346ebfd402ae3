//! `trestle-bench fsync-rate`: how many durable appends per second the disk under a directory takes.
//!
//! The loop does what a Raft log append does per ready-loop turn: append a block to a file and
//! `fdatasync` it (RocksDB's WAL sync). One writer, so the result is the latency-bound rate of a single
//! synchronous log: the ceiling on sequential, unbatched durable writes. Group commit amortises one such
//! sync over every proposal ready at the time, which is why replicated writes can go faster than this
//! figure, and why they cannot go faster than it *per loop turn*.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::report::{Latency, Recorder};

/// The measured rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FsyncReport {
    pub dir: String,
    pub block_bytes: usize,
    pub seconds: f64,
    pub syncs: u64,
    pub syncs_per_sec: f64,
    pub latency: Latency,
}

/// Appends `block_bytes` and syncs, for `duration`, in a scratch file under `dir` (removed afterwards).
pub fn measure(dir: &Path, block_bytes: usize, duration: Duration) -> std::io::Result<FsyncReport> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("fsync-rate-{}.tmp", std::process::id()));
    let result = run(&path, block_bytes, duration);
    let _ = std::fs::remove_file(&path);
    let (rec, elapsed) = result?;
    Ok(FsyncReport {
        dir: dir.display().to_string(),
        block_bytes,
        seconds: elapsed.as_secs_f64(),
        syncs: rec.ops,
        syncs_per_sec: crate::report::throughput(rec.ops, elapsed),
        latency: Latency::of(&rec.latency),
    })
}

fn run(
    path: &Path,
    block_bytes: usize,
    duration: Duration,
) -> std::io::Result<(Recorder, Duration)> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    let block = vec![0x5au8; block_bytes.max(1)];
    let mut rec = Recorder::new();
    // Start the file from a clean, synced state so the first sync does not pay for the create.
    file.sync_all()?;
    let start_loop = Instant::now();
    let mut written = 0u64;
    while start_loop.elapsed() < duration {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        rec.success(t.elapsed(), 1);
        written += block.len() as u64;
        // Keep the scratch file small: wrap around every 64 MiB, like a recycled WAL.
        if written >= 64 << 20 {
            file.set_len(0)?;
            file.sync_all()?;
            written = 0;
        }
    }
    Ok((rec, start_loop.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_reports_a_positive_rate_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("trestle-bench-fsync-{}", std::process::id()));
        let r = measure(&dir, 4096, Duration::from_millis(50)).unwrap();
        assert!(r.syncs > 0 && r.syncs_per_sec > 0.0);
        assert!(r.latency.p50_us > 0);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "scratch file removed"
        );
        let _ = std::fs::remove_dir(&dir);
    }
}
