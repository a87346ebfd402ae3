//! Batch atomicity: an entity group transaction is visible all or nothing, and a failed one not at all.
//!
//! The workload gives each batch's writes values that no other batch writes to the same key (the batch
//! id in the value does it), so a value seen names the batch that wrote it. Each [`Observation`] must
//! be one consistent snapshot — a single-partition query answered at one read index, say — of some
//! keys. For every batch and observation the checker asks:
//!
//! - **Partially visible**: the observation shows the batch's value at some key but, at another key of
//!   the batch, a value the batch must have overwritten. That is: the key is absent, or holds a value
//!   no batch wrote (its initial value), or holds a value written only by acknowledged batches that
//!   completed before this batch was invoked. A value written by a batch that could have come later
//!   (concurrent, unknown, or simply without times) is not evidence, since it may have overwritten this
//!   batch's value legitimately. Batches are upserts: nothing deletes, so absence is never explained.
//! - **Failed but visible**: the observation shows a failed batch's value at a key no other batch wrote
//!   that value to.
//!
//! Unknown batches are held to atomicity too: they may take effect or not, but not in part. Keys a
//! batch did not write, and keys an observation did not read, are not judged. Times come from any one
//! clock ([`super::Recorder::tick`] serves); a batch without times is concurrent with every other, which
//! only weakens the check.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What the client learnt about a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    Ok,
    Fail,
    Unknown,
}

/// A batch of upserts, one value per key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub id: String,
    pub writes: BTreeMap<String, String>,
    pub outcome: BatchOutcome,
    /// When the batch was sent.
    pub invoked: u64,
    /// When its outcome arrived; `None` if it never did.
    pub completed: Option<u64>,
}

impl Batch {
    /// A batch without times: concurrent with every other batch.
    pub fn new(id: impl Into<String>, outcome: BatchOutcome) -> Batch {
        Batch {
            id: id.into(),
            writes: BTreeMap::new(),
            outcome,
            invoked: 0,
            completed: None,
        }
    }

    pub fn write(mut self, key: impl Into<String>, value: impl Into<String>) -> Batch {
        self.writes.insert(key.into(), value.into());
        self
    }

    pub fn between(mut self, invoked: u64, completed: u64) -> Batch {
        self.invoked = invoked;
        self.completed = Some(completed);
        self
    }

    /// `self` took effect before `other` could: it was acknowledged before `other` was sent.
    fn precedes(&self, other: &Batch) -> bool {
        self.outcome == BatchOutcome::Ok && self.completed.is_some_and(|c| c < other.invoked)
    }
}

/// One consistent snapshot of some keys: key → value seen (`None`: absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub id: String,
    pub values: BTreeMap<String, Option<String>>,
}

impl Observation {
    pub fn new(id: impl Into<String>) -> Observation {
        Observation {
            id: id.into(),
            values: BTreeMap::new(),
        }
    }

    pub fn saw(mut self, key: impl Into<String>, value: impl Into<String>) -> Observation {
        self.values.insert(key.into(), Some(value.into()));
        self
    }

    pub fn saw_absent(mut self, key: impl Into<String>) -> Observation {
        self.values.insert(key.into(), None);
        self
    }
}

/// One atomicity violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchViolation {
    /// `observation` shows `batch` at the `visible` keys and older states at the `missing` ones.
    PartiallyVisible {
        batch: String,
        observation: String,
        visible: Vec<String>,
        missing: Vec<(String, Option<String>)>,
    },
    /// `observation` shows the failed `batch`'s values at `keys`.
    FailedVisible {
        batch: String,
        observation: String,
        keys: Vec<String>,
    },
}

impl fmt::Display for BatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchViolation::PartiallyVisible {
                batch,
                observation,
                visible,
                missing,
            } => {
                write!(
                    f,
                    "batch {batch:?} half visible in observation {observation:?}: its writes to \
                     {visible:?} are seen, but"
                )?;
                for (key, value) in missing {
                    match value {
                        Some(value) => write!(f, " {key:?} holds older {value:?}")?,
                        None => write!(f, " {key:?} is absent")?,
                    }
                }
                Ok(())
            }
            BatchViolation::FailedVisible {
                batch,
                observation,
                keys,
            } => write!(
                f,
                "failed batch {batch:?} visible in observation {observation:?} at {keys:?}"
            ),
        }
    }
}

/// Checks every batch against every observation.
pub fn check(batches: &[Batch], observations: &[Observation]) -> Vec<BatchViolation> {
    // (key, value) → the batches that wrote it.
    let mut writers: BTreeMap<(&str, &str), Vec<&Batch>> = BTreeMap::new();
    for batch in batches {
        for (key, value) in &batch.writes {
            writers.entry((key, value)).or_default().push(batch);
        }
    }
    let only_writer = |key: &str, value: &str, batch: &Batch| {
        writers
            .get(&(key, value))
            .is_some_and(|w| w.len() == 1 && std::ptr::eq(w[0], batch))
    };

    let mut violations = Vec::new();
    for observation in observations {
        for batch in batches {
            let mut visible = Vec::new();
            let mut missing = Vec::new();
            for (key, value) in &batch.writes {
                let Some(seen) = observation.values.get(key) else {
                    continue;
                };
                match seen.as_deref() {
                    Some(v) if v == value => {
                        if only_writer(key, value, batch) {
                            visible.push(key.clone());
                        }
                    }
                    Some(v) => {
                        let older = writers
                            .get(&(key.as_str(), v))
                            .is_none_or(|w| w.iter().all(|other| other.precedes(batch)));
                        if older {
                            missing.push((key.clone(), seen.clone()));
                        }
                    }
                    None => missing.push((key.clone(), None)),
                }
            }
            if visible.is_empty() {
                continue;
            }
            if batch.outcome == BatchOutcome::Fail {
                violations.push(BatchViolation::FailedVisible {
                    batch: batch.id.clone(),
                    observation: observation.id.clone(),
                    keys: visible,
                });
            } else if !missing.is_empty() {
                violations.push(BatchViolation::PartiallyVisible {
                    batch: batch.id.clone(),
                    observation: observation.id.clone(),
                    visible,
                    missing,
                });
            }
        }
    }
    violations
}

/// The keys any batch wrote: what a final observation should read.
pub fn keys(batches: &[Batch]) -> BTreeSet<String> {
    batches
        .iter()
        .flat_map(|b| b.writes.keys().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b1(outcome: BatchOutcome) -> Batch {
        Batch::new("b1", outcome)
            .write("x", "b1")
            .write("y", "b1")
            .write("z", "b1")
            .between(3, 4)
    }

    fn b0() -> Batch {
        Batch::new("b0", BatchOutcome::Ok)
            .write("x", "b0")
            .write("y", "b0")
            .write("z", "b0")
            .between(1, 2)
    }

    #[test]
    fn a_fully_visible_or_invisible_batch_passes() {
        let batches = [b0(), b1(BatchOutcome::Ok)];
        let observations = [
            Observation::new("before").saw("x", "b0").saw("y", "b0"),
            Observation::new("after")
                .saw("x", "b1")
                .saw("y", "b1")
                .saw("z", "b1"),
            Observation::new("one key").saw("z", "b1"),
        ];
        assert_eq!(check(&batches, &observations), vec![]);
        assert_eq!(keys(&batches).len(), 3);
    }

    #[test]
    fn a_half_visible_batch_is_reported() {
        let batches = [b0(), b1(BatchOutcome::Ok)];
        let observations = [Observation::new("scan")
            .saw("x", "b1")
            .saw("y", "b0")
            .saw("z", "b1")];
        let violations = check(&batches, &observations);
        assert_eq!(
            violations,
            vec![BatchViolation::PartiallyVisible {
                batch: "b1".to_string(),
                observation: "scan".to_string(),
                visible: vec!["x".to_string(), "z".to_string()],
                missing: vec![("y".to_string(), Some("b0".to_string()))],
            }]
        );
        assert!(violations[0].to_string().contains("half visible"));
    }

    #[test]
    fn an_unknown_batch_may_be_visible_but_not_in_part() {
        let batches = [b0(), b1(BatchOutcome::Unknown)];
        let whole = [Observation::new("o").saw("x", "b1").saw("y", "b1")];
        let none = [Observation::new("o").saw("x", "b0").saw("y", "b0")];
        let half = [Observation::new("o").saw("x", "b1").saw("y", "b0")];
        assert_eq!(check(&batches, &whole), vec![]);
        assert_eq!(check(&batches, &none), vec![]);
        assert_eq!(check(&batches, &half).len(), 1);
    }

    #[test]
    fn a_later_batch_overwriting_some_keys_is_not_partial_visibility() {
        let b2 = Batch::new("b2", BatchOutcome::Ok)
            .write("y", "b2")
            .between(5, 6);
        // Concurrent with b1 (no times): may also have overwritten b1's "z".
        let b3 = Batch::new("b3", BatchOutcome::Unknown).write("z", "b3");
        let batches = [b0(), b1(BatchOutcome::Ok), b2, b3];
        let observations = [Observation::new("o")
            .saw("x", "b1")
            .saw("y", "b2")
            .saw("z", "b3")];
        assert_eq!(check(&batches, &observations), vec![]);
    }

    #[test]
    fn an_initial_value_or_absence_beside_a_visible_batch_is_reported() {
        let batches = [b1(BatchOutcome::Ok)];
        let observations = [
            Observation::new("o").saw("x", "b1").saw("y", "seed"),
            Observation::new("p").saw("x", "b1").saw_absent("z"),
        ];
        assert_eq!(check(&batches, &observations).len(), 2);
    }

    #[test]
    fn a_failed_batch_with_any_effect_visible_is_reported() {
        let batches = [b0(), b1(BatchOutcome::Fail)];
        let observations = [
            Observation::new("clean").saw("x", "b0").saw("y", "b0"),
            Observation::new("leak").saw("x", "b0").saw("y", "b1"),
        ];
        assert_eq!(
            check(&batches, &observations),
            vec![BatchViolation::FailedVisible {
                batch: "b1".to_string(),
                observation: "leak".to_string(),
                keys: vec!["y".to_string()],
            }]
        );
    }
}
