//! Planted bugs: deliberate violations of Trestle's guarantees that the fault campaign must catch, to
//! prove that it can fail (issue 9). They exist only in a binary built with the `planted-bugs` feature
//! (`scripts/test.sh` builds one as `trestle-planted`); a normal build compiles every check below to
//! `false`. In a planted build, the environment variable [`ENV`] names the one bug to switch on.
//!
//! Each bug breaks one guarantee in one place:
//! - [`Bug::AckBeforeFsync`]: the ready loop writes the Raft log without fsync, so a write is
//!   acknowledged before it is durable (caught by a power failure on a file system that drops unsynced
//!   writes: acknowledged writes are lost);
//! - [`Bug::StaleReads`]: any replica serves point reads and queries from its local state, without
//!   leadership or ReadIndex (caught by a partition that isolates a replica: stale reads, not
//!   linearizable);
//! - [`Bug::SkipFencing`]: the table state machine ignores fencing tokens (caught by the fenced counter:
//!   a holder whose lease expired overwrites a newer holder's increment).

/// The environment variable that selects the planted bug in a `planted-bugs` build.
pub const ENV: &str = "TRESTLE_PLANTED_BUG";

/// A planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    AckBeforeFsync,
    StaleReads,
    SkipFencing,
}

impl Bug {
    /// Every planted bug.
    pub const ALL: [Bug; 3] = [Bug::AckBeforeFsync, Bug::StaleReads, Bug::SkipFencing];

    /// The bug's name in [`ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "ack-before-fsync",
            Bug::StaleReads => "stale-reads",
            Bug::SkipFencing => "skip-fencing",
        }
    }

    /// The bug named `name`.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// Whether `bug` is switched on in this process.
#[cfg(feature = "planted-bugs")]
pub fn active(bug: Bug) -> bool {
    static ACTIVE: std::sync::OnceLock<Option<Bug>> = std::sync::OnceLock::new();
    let active = *ACTIVE.get_or_init(|| {
        let bug = std::env::var(ENV).ok().and_then(|n| Bug::from_name(&n));
        if let Some(b) = bug {
            tracing::warn!(
                bug = b.name(),
                "PLANTED BUG ACTIVE: this node breaks its guarantees"
            );
        }
        bug
    });
    active == Some(bug)
}

/// Whether `bug` is switched on in this process: never, in a build without `planted-bugs`.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub fn active(_bug: Bug) -> bool {
    false
}

/// Whether this build can plant bugs at all.
pub const AVAILABLE: bool = cfg!(feature = "planted-bugs");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in Bug::ALL {
            assert_eq!(Bug::from_name(b.name()), Some(b));
        }
        assert_eq!(Bug::from_name("nope"), None);
    }
}
