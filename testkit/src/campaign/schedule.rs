//! The nemesis schedule: which fault, on which node, for how long — a pure function of the seed and the
//! options, so any seed replays the same schedule. Targets such as "the leader of the data range" are
//! resolved when the step runs (who leads depends on what happened before), and the interleaving of
//! client operations is the machine's; both are printed with the verdicts.

use std::fmt;
use std::time::Duration;

use rand::{Rng, SeedableRng};

/// A kind of fault the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9, then restart on the same data.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// Network cuts between nodes (needs network namespaces).
    Partition,
    /// A step of one node's wall clock (libfaketime), then back.
    Clock,
    /// Power failure: kill -9 and drop every write the file system had not fsynced (needs FUSE).
    Power,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Clock,
        FaultKind::Power,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Clock => "clock",
            FaultKind::Power => "power",
        }
    }

    /// Parses a comma-separated list such as `kill,pause,partition`.
    pub fn parse_list(list: &str) -> Result<Vec<FaultKind>, String> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let kind = FaultKind::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| {
                    format!("unknown fault {name:?} (kill, pause, partition, clock, power)")
                })?;
            if !out.contains(&kind) {
                out.push(kind);
            }
        }
        Ok(out)
    }
}

/// Which node a step hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Node(u64),
    /// The leader of the data range the workloads use.
    DataLeader,
    /// The leader of the meta group (catalog and locks).
    MetaLeader,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node(n) => write!(f, "node {n}"),
            Target::DataLeader => f.write_str("the data leader"),
            Target::MetaLeader => f.write_str("the meta leader"),
        }
    }
}

/// One fault, as scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Kill(Target),
    Pause(Target),
    /// The target alone on one side of a partition (the majority keeps working).
    Isolate(Target),
    /// The target's packets to the other nodes are dropped; theirs still reach it.
    CutOutbound(Target),
    /// The target receives nothing from the other nodes; its own packets still go out.
    CutInbound(Target),
    /// The target's wall clock steps by `offset_secs`, and steps back when the fault heals.
    ClockStep(Target, i64),
    /// The target loses power (kill -9 and unsynced writes dropped), then boots again.
    PowerOff(Target),
    /// Every node loses power at once, then boots again.
    PowerOffAll,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(t) => write!(f, "kill -9 {t}"),
            Fault::Pause(t) => write!(f, "SIGSTOP {t}"),
            Fault::Isolate(t) => write!(f, "isolate {t}"),
            Fault::CutOutbound(t) => write!(f, "drop what {t} sends"),
            Fault::CutInbound(t) => write!(f, "drop what {t} receives"),
            Fault::ClockStep(t, s) => write!(f, "step the clock of {t} by {s:+} s"),
            Fault::PowerOff(t) => write!(f, "power off {t}"),
            Fault::PowerOffAll => f.write_str("power off every node"),
        }
    }
}

/// A fault, how long it is held, and how long the cluster then runs healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    pub hold: Duration,
    pub quiet: Duration,
}

/// Builds the schedule for `seed`: steps drawn from `kinds` until their holds and quiet periods fill
/// `duration` (at least one step).
pub fn schedule(seed: u64, kinds: &[FaultKind], duration: Duration) -> Vec<Step> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    if kinds.is_empty() {
        return steps;
    }
    let mut total = Duration::ZERO;
    while steps.is_empty() || total < duration {
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let target = match rng.gen_range(0..4) {
            0 => Target::DataLeader,
            1 => Target::MetaLeader,
            _ => Target::Node(rng.gen_range(1..=3)),
        };
        let fault = match kind {
            FaultKind::Kill => Fault::Kill(target),
            FaultKind::Pause => Fault::Pause(target),
            FaultKind::Partition => match rng.gen_range(0..3) {
                0 => Fault::Isolate(target),
                1 => Fault::CutOutbound(target),
                _ => Fault::CutInbound(target),
            },
            FaultKind::Clock => {
                // Within the 15-minute window signatures allow; either direction.
                let secs = rng.gen_range(5..=300) * if rng.gen_bool(0.5) { 1 } else { -1 };
                Fault::ClockStep(target, secs)
            }
            FaultKind::Power => {
                if rng.gen_bool(0.5) {
                    Fault::PowerOffAll
                } else {
                    Fault::PowerOff(target)
                }
            }
        };
        let hold = Duration::from_millis(rng.gen_range(1_000..=5_000));
        let quiet = Duration::from_millis(rng.gen_range(1_000..=3_000));
        total += hold + quiet;
        steps.push(Step { fault, hold, quiet });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_schedule_and_seeds_differ() {
        let kinds = FaultKind::ALL;
        let a = schedule(42, &kinds, Duration::from_secs(60));
        assert_eq!(a, schedule(42, &kinds, Duration::from_secs(60)));
        assert_ne!(a, schedule(43, &kinds, Duration::from_secs(60)));
        let total: Duration = a.iter().map(|s| s.hold + s.quiet).sum();
        assert!(total >= Duration::from_secs(60), "{total:?}");
    }

    #[test]
    fn only_the_requested_faults_are_scheduled() {
        let steps = schedule(7, &[FaultKind::Pause], Duration::from_secs(120));
        assert!(steps.len() > 5);
        assert!(steps.iter().all(|s| matches!(s.fault, Fault::Pause(_))));
        assert!(schedule(7, &[], Duration::from_secs(10)).is_empty());
        // A short duration still gets one step.
        assert_eq!(schedule(7, &[FaultKind::Kill], Duration::ZERO).len(), 1);
    }

    #[test]
    fn fault_lists_parse_and_reject_unknown_names() {
        assert_eq!(
            FaultKind::parse_list("kill, pause,kill").unwrap(),
            vec![FaultKind::Kill, FaultKind::Pause]
        );
        assert!(FaultKind::parse_list("kill,meteor").is_err());
    }
}
