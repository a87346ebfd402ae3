//! CPU time of a process (user + system, all threads), read from `/proc/PID/stat` on Linux: each round
//! reports the load generator's own CPU per operation and, with `--server-pid`, the server's.
//!
//! On a machine where client and server share the cores, throughput alone hides where a cost lands:
//! TLS, for one, costs both sides. CPU per operation separates them. The kernel counts in clock ticks of
//! `USER_HZ`, which the Linux ABI fixes at 100 per second, so a 10 s round at one core is read to ~0.1 %.
//! Elsewhere (no `/proc`) the figures are simply absent.

use std::time::Duration;

/// `USER_HZ`: the unit of `utime` and `stime` in `/proc/PID/stat` (fixed by the Linux ABI).
const TICKS_PER_SEC: u64 = 100;

/// The CPU time used so far by process `pid`, or by this process for `None`; `None` when it cannot be
/// read (no `/proc`, the process is gone).
pub fn process_cpu(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let ticks = parse_stat_ticks(&text)?;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SEC))
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself, so fields are counted after the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time between two readings, per operation, in microseconds.
pub fn per_op_us(before: Option<Duration>, after: Option<Duration>, ops: u64) -> Option<f64> {
    let used = after?.checked_sub(before?)?;
    (ops > 0).then(|| used.as_secs_f64() * 1e6 / ops as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_counted_after_the_command_name() {
        let line = "4242 (trestle (dev) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 \
                    100 2000000 3000 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_can_be_read_and_a_missing_one_cannot() {
        if cfg!(target_os = "linux") {
            assert!(process_cpu(None).is_some());
        }
        assert_eq!(process_cpu(Some(u32::MAX)), None);
    }

    #[test]
    fn cpu_per_operation() {
        let s = |ms| Some(Duration::from_millis(ms));
        assert_eq!(per_op_us(s(1000), s(3000), 1000), Some(2000.0));
        assert_eq!(per_op_us(s(1000), s(3000), 0), None);
        assert_eq!(per_op_us(None, s(3000), 10), None);
        assert_eq!(per_op_us(s(3000), s(1000), 10), None);
    }
}
