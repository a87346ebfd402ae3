//! No acknowledged write lost: after the workload, a final read of every entity must show, for each
//! key, the effect of its last acknowledged write (or delete).
//!
//! "Last" is in real-time order, which is partial: an acknowledged mutation may be the last one to
//! take effect unless another acknowledged mutation of the same key was invoked after it completed (then
//! that one took effect later). So every acknowledged mutation not followed in real time by another is
//! a candidate, and so is every unknown mutation of the key — an unknown operation may take effect at
//! any time after its invocation, including after everything acknowledged. The final read passes for a
//! key if it shows the effect of some candidate: its value (and its ETag, when both the write's
//! acknowledgement and the final read report one) for writes, absence for deletes. Failed operations
//! never took effect and are ignored; keys without acknowledged mutations are not judged.
//!
//! This is a cheaper, coarser check than [`super::linearizable`]: it ignores reads and the ETag
//! preconditions of the candidates, but it needs no search and it judges the end state, which is what
//! a crash-and-restart test most wants to know.

use std::collections::BTreeMap;
use std::fmt;

use super::{History, Operation, Outcome};

/// An entity as the final read saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entity {
    pub value: String,
    pub etag: Option<String>,
}

impl Entity {
    pub fn new(value: impl Into<String>, etag: Option<&str>) -> Entity {
        Entity {
            value: value.into(),
            etag: etag.map(str::to_string),
        }
    }
}

/// A key whose final state shows none of the writes that could have been last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite {
    pub key: String,
    /// What the final read returned (`None`: absent).
    pub found: Option<Entity>,
    /// The acknowledged mutations, one of which (or an unknown one) should be visible.
    pub last_acknowledged: Vec<Operation>,
}

impl fmt::Display for LostWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {:?}: final read found ", self.key)?;
        match &self.found {
            None => f.write_str("no entity")?,
            Some(Entity { value, etag: None }) => write!(f, "{value:?}")?,
            Some(Entity {
                value,
                etag: Some(etag),
            }) => write!(f, "{value:?} (etag {etag:?})")?,
        }
        f.write_str(", but the last acknowledged mutation was one of:")?;
        for operation in &self.last_acknowledged {
            write!(f, "\n  {operation}")?;
        }
        Ok(())
    }
}

/// Reports every key of `history` whose state in `final_read` (key → entity; a key missing from it was
/// absent) loses its last acknowledged mutation.
pub fn check(history: &History, final_read: &BTreeMap<String, Entity>) -> Vec<LostWrite> {
    let mut lost = Vec::new();
    for (key, operations) in history.by_key() {
        let mutations: Vec<&Operation> = operations
            .iter()
            .filter(|o| o.op.is_mutation() && !o.outcome.is_fail())
            .collect();
        let acknowledged: Vec<&Operation> = mutations
            .iter()
            .copied()
            .filter(|o| o.outcome.is_ok())
            .collect();
        if acknowledged.is_empty() {
            continue;
        }
        let last: Vec<&Operation> = acknowledged
            .iter()
            .copied()
            .filter(|w| !acknowledged.iter().any(|later| w.precedes(later)))
            .collect();
        let found = final_read.get(&key);
        let explained = last
            .iter()
            .chain(mutations.iter().filter(|o| o.outcome.is_unknown()))
            .any(|candidate| shows(candidate, found));
        if !explained {
            lost.push(LostWrite {
                key,
                found: found.cloned(),
                last_acknowledged: last.into_iter().cloned().collect(),
            });
        }
    }
    lost
}

/// Whether `found` is what the entity holds right after `mutation` took effect.
fn shows(mutation: &Operation, found: Option<&Entity>) -> bool {
    match (mutation.op.effect(), found) {
        (Some(None), None) => true,
        (Some(Some(value)), Some(entity)) => {
            let etag_agrees = match (&mutation.outcome, &entity.etag) {
                (Outcome::Ok { etag: Some(w), .. }, Some(f)) => w == f,
                _ => true,
            };
            value == entity.value && etag_agrees
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Recorder};

    fn final_read(entities: &[(&str, &str, Option<&str>)]) -> BTreeMap<String, Entity> {
        entities
            .iter()
            .map(|&(k, v, e)| (k.to_string(), Entity::new(v, e)))
            .collect()
    }

    #[test]
    fn final_state_showing_every_last_write_passes() {
        let r = Recorder::new();
        r.invoke(1, Op::write("a", "1")).ok(None, Some("e1"));
        r.invoke(1, Op::write("a", "2")).ok(None, Some("e2"));
        r.invoke(2, Op::insert("b", "x")).ok(None, Some("e3"));
        r.invoke(2, Op::write("c", "y")).ok(None, Some("e4"));
        r.invoke(2, Op::delete("c")).ok(None, None);
        r.invoke(2, Op::write("d", "never")).fail("ServerBusy");
        let found = final_read(&[("a", "2", Some("e2")), ("b", "x", None)]);
        assert_eq!(check(&r.history(), &found), vec![]);
    }

    #[test]
    fn a_lost_acknowledged_write_is_reported() {
        let r = Recorder::new();
        r.invoke(1, Op::write("a", "1")).ok(None, Some("e1"));
        r.invoke(1, Op::write("a", "2")).ok(None, Some("e2"));
        r.invoke(1, Op::write("b", "x")).ok(None, Some("e3"));
        // "a" rolled back to its first write, "b" vanished.
        let lost = check(&r.history(), &final_read(&[("a", "1", Some("e1"))]));
        assert_eq!(lost.len(), 2);
        assert_eq!(lost[0].key, "a");
        assert_eq!(lost[0].last_acknowledged.len(), 1);
        assert_eq!(lost[0].last_acknowledged[0].op, Op::write("a", "2"));
        assert_eq!((lost[1].key.as_str(), &lost[1].found), ("b", &None));
        assert!(
            lost[1].to_string().contains("found no entity"),
            "{}",
            lost[1]
        );
    }

    #[test]
    fn a_resurrected_delete_is_reported() {
        let r = Recorder::new();
        r.invoke(1, Op::write("a", "1")).ok(None, Some("e1"));
        r.invoke(1, Op::delete("a")).ok(None, None);
        assert_eq!(
            check(&r.history(), &final_read(&[("a", "1", Some("e1"))])).len(),
            1
        );
    }

    #[test]
    fn the_same_value_with_another_etag_is_a_lost_write() {
        let r = Recorder::new();
        r.invoke(1, Op::write("a", "1")).ok(None, Some("e1"));
        r.invoke(1, Op::write("a", "1")).ok(None, Some("e2"));
        assert_eq!(
            check(&r.history(), &final_read(&[("a", "1", Some("e1"))])).len(),
            1
        );
    }

    #[test]
    fn either_of_two_concurrent_writes_may_be_last() {
        let r = Recorder::new();
        r.invoke(1, Op::write("a", "0")).ok(None, Some("e0"));
        let one = r.invoke(1, Op::write("a", "1"));
        let two = r.invoke(2, Op::write("a", "2"));
        one.ok(None, Some("e1"));
        two.ok(None, Some("e2"));
        let history = r.history();
        for (v, e) in [("1", "e1"), ("2", "e2")] {
            assert_eq!(check(&history, &final_read(&[("a", v, Some(e))])), vec![]);
        }
        let lost = check(&history, &final_read(&[("a", "0", Some("e0"))]));
        assert_eq!(lost[0].last_acknowledged.len(), 2);
    }

    #[test]
    fn an_unknown_write_may_have_overwritten_the_last_acknowledged_one() {
        let r = Recorder::new();
        r.invoke(1, Op::write("a", "1")).unknown();
        r.invoke(1, Op::write("a", "2")).ok(None, Some("e2"));
        r.invoke(2, Op::delete("b")).unknown();
        r.invoke(2, Op::write("b", "x")).ok(None, Some("e3"));
        // The unknown write to "a" landed after the acknowledged one; the unknown delete of "b" too.
        let found = final_read(&[("a", "1", Some("e9"))]);
        assert_eq!(check(&r.history(), &found), vec![]);
    }
}
