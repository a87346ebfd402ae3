//! Fenced writes: a resource guarded by a lock accepts a write only with a fencing token at least as
//! high as any it accepted before, so a holder whose lease lapsed (and whose token was superseded)
//! cannot write over its successor.
//!
//! The input is the writes each resource accepted, with the token each carried and its position in the
//! resource's own order of application (a commit index, a version counter: anything the resource
//! assigns in the order it applied them). The checker sorts each resource's writes by that position and
//! reports every write whose token is lower than one accepted earlier on the same resource. Equal tokens
//! are fine: one holder writes many times under one token.
//!
//! Optionally it also checks revocations: a token known revoked at some time (its lease expired and a
//! higher token was granted, say) must not be accepted in a write sent after that time. A write's
//! `invoked` time is a lower bound on when the resource applied it, so this only reports writes that
//! certainly came after the revocation. Times come from any one clock ([`super::Recorder::tick`]).

use std::collections::BTreeMap;
use std::fmt;

/// A write the resource accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FencedWrite {
    pub resource: String,
    pub token: u64,
    /// Position in the resource's order of application.
    pub position: u64,
    /// When the write was sent, if known (for revocation checks).
    pub invoked: Option<u64>,
}

impl FencedWrite {
    pub fn new(resource: impl Into<String>, token: u64, position: u64) -> FencedWrite {
        FencedWrite {
            resource: resource.into(),
            token,
            position,
            invoked: None,
        }
    }

    pub fn invoked_at(mut self, time: u64) -> FencedWrite {
        self.invoked = Some(time);
        self
    }
}

/// `token` was known revoked from `time` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub token: u64,
    pub time: u64,
}

/// One fencing violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FencingViolation {
    /// `write` was accepted after `earlier`, which carried a higher token.
    OutOfTokenOrder {
        write: FencedWrite,
        earlier: FencedWrite,
    },
    /// `write` was sent after its token was revoked, and accepted.
    Revoked {
        write: FencedWrite,
        revocation: Revocation,
    },
}

impl fmt::Display for FencingViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FencingViolation::OutOfTokenOrder { write, earlier } => write!(
                f,
                "resource {:?} accepted token {} at position {} after token {} at position {}",
                write.resource, write.token, write.position, earlier.token, earlier.position
            ),
            FencingViolation::Revoked { write, revocation } => write!(
                f,
                "resource {:?} accepted token {} at position {}, sent at {:?}, revoked at {}",
                write.resource, write.token, write.position, write.invoked, revocation.time
            ),
        }
    }
}

/// Reports accepted writes whose token is lower than one the same resource accepted before.
pub fn check(writes: &[FencedWrite]) -> Vec<FencingViolation> {
    let mut resources: BTreeMap<&str, Vec<&FencedWrite>> = BTreeMap::new();
    for write in writes {
        resources.entry(&write.resource).or_default().push(write);
    }
    let mut violations = Vec::new();
    for mut applied in resources.into_values() {
        applied.sort_by_key(|w| w.position);
        let mut highest: Option<&FencedWrite> = None;
        for write in applied {
            match highest {
                Some(earlier) if write.token < earlier.token => {
                    violations.push(FencingViolation::OutOfTokenOrder {
                        write: write.clone(),
                        earlier: earlier.clone(),
                    });
                }
                Some(earlier) if write.token == earlier.token => {}
                _ => highest = Some(write),
            }
        }
    }
    violations
}

/// [`check`], plus writes sent after their token's revocation.
pub fn check_with_revocations(
    writes: &[FencedWrite],
    revocations: &[Revocation],
) -> Vec<FencingViolation> {
    let mut violations = check(writes);
    for write in writes {
        let Some(sent) = write.invoked else { continue };
        let revoked = revocations
            .iter()
            .filter(|r| r.token == write.token && r.time < sent)
            .min_by_key(|r| r.time);
        if let Some(revocation) = revoked {
            violations.push(FencingViolation::Revoked {
                write: write.clone(),
                revocation: *revocation,
            });
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_order_pass_and_equal_tokens_are_fine() {
        let writes = [
            FencedWrite::new("r", 1, 10),
            FencedWrite::new("r", 3, 11),
            FencedWrite::new("r", 3, 12),
            FencedWrite::new("r", 7, 13),
        ];
        assert_eq!(check(&writes), vec![]);
    }

    #[test]
    fn token_5_then_3_is_reported() {
        let writes = [
            FencedWrite::new("r", 5, 1),
            FencedWrite::new("r", 3, 2),
            FencedWrite::new("r", 6, 3),
        ];
        let violations = check(&writes);
        assert_eq!(
            violations,
            vec![FencingViolation::OutOfTokenOrder {
                write: writes[1].clone(),
                earlier: writes[0].clone(),
            }]
        );
        assert!(violations[0].to_string().contains("accepted token 3"));
    }

    #[test]
    fn application_order_not_input_order_decides() {
        // Listed by token, applied 3 before 5: fine. Applied 5 before 3 on "s": not.
        let writes = [
            FencedWrite::new("r", 3, 1),
            FencedWrite::new("r", 5, 2),
            FencedWrite::new("s", 3, 9),
            FencedWrite::new("s", 5, 8),
        ];
        let violations = check(&writes);
        assert_eq!(violations.len(), 1);
        assert!(matches!(&violations[0],
            FencingViolation::OutOfTokenOrder { write, .. } if write.resource == "s"));
    }

    #[test]
    fn resources_are_fenced_independently() {
        let writes = [FencedWrite::new("r", 9, 1), FencedWrite::new("s", 2, 2)];
        assert_eq!(check(&writes), vec![]);
    }

    #[test]
    fn a_write_sent_after_its_token_was_revoked_is_reported() {
        let writes = [
            FencedWrite::new("r", 4, 1).invoked_at(10),
            FencedWrite::new("r", 4, 2).invoked_at(30),
        ];
        let revocations = [Revocation { token: 4, time: 20 }];
        let violations = check_with_revocations(&writes, &revocations);
        assert_eq!(
            violations,
            vec![FencingViolation::Revoked {
                write: writes[1].clone(),
                revocation: revocations[0],
            }]
        );
    }
}
