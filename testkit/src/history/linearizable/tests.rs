//! Hand-made histories that must pass and must fail, and randomly generated histories of a simulated
//! register that are linearizable by construction until one read is corrupted.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::history::{OpHandle, Recorder};

fn verdict(recorder: &Recorder) -> Verdict {
    check(&recorder.history())
}

fn counterexample(verdict: Verdict) -> Counterexample {
    match verdict {
        Verdict::NotLinearizable { counterexample, .. } => *counterexample,
        other => panic!("expected a violation, got {other}"),
    }
}

#[test]
fn sequential_insert_cas_delete_and_reads_are_linearizable() {
    let r = Recorder::new();
    r.invoke(1, Op::read("k")).ok(None, None);
    r.invoke(1, Op::insert("k", "a")).ok(None, Some("e1"));
    r.invoke(2, Op::read("k")).ok(Some("a"), Some("e1"));
    r.invoke(2, Op::cas("k", "e1", "b")).ok(None, Some("e2"));
    r.invoke(1, Op::read("k")).ok(Some("b"), Some("e2"));
    r.invoke(1, Op::delete_if("k", "e2")).ok(None, None);
    r.invoke(3, Op::read("k")).ok(None, None);
    r.invoke(3, Op::write("k", "c")).ok(None, Some("e3"));
    r.invoke(2, Op::read("k")).ok(Some("c"), None);
    r.invoke(2, Op::delete("k")).ok(None, None);
    assert_eq!(verdict(&r), Verdict::Linearizable);
}

#[test]
fn stale_read_after_an_acknowledged_write_is_not_linearizable() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    r.invoke(1, Op::write("k", "b")).ok(None, Some("e2"));
    r.invoke(2, Op::read("k")).ok(Some("a"), Some("e1"));

    let v = verdict(&r);
    assert!(
        v.to_string().contains("key \"k\" is not linearizable"),
        "{v}"
    );
    let c = counterexample(v);
    assert_eq!(c.operations, 3);
    let prefix: Vec<String> = c.prefix.iter().map(|o| o.op.to_string()).collect();
    assert_eq!(prefix, ["write(\"k\", \"a\")", "write(\"k\", \"b\")"]);
    assert_eq!(c.state, "value \"b\", etag \"e2\"");
    assert_eq!(c.blocked.map(|o| o.op), Some(Op::read("k")));
}

#[test]
fn two_cas_on_the_same_etag_both_succeeding_is_not_linearizable() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    let first = r.invoke(1, Op::cas("k", "e1", "b"));
    let second = r.invoke(2, Op::cas("k", "e1", "c"));
    first.ok(None, Some("e2"));
    second.ok(None, Some("e3"));
    let c = counterexample(verdict(&r));
    assert_eq!(c.prefix.len(), 2);
}

#[test]
fn cas_on_an_overwritten_etag_is_not_linearizable() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    r.invoke(2, Op::write("k", "b")).ok(None, Some("e2"));
    r.invoke(1, Op::cas("k", "e1", "c")).ok(None, Some("e3"));
    assert!(verdict(&r).is_not_linearizable());
}

#[test]
fn read_of_a_value_never_written_is_not_linearizable() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    r.invoke(2, Op::read("k")).ok(Some("zzz"), None);
    assert!(verdict(&r).is_not_linearizable());
}

#[test]
fn read_reporting_another_etag_is_not_linearizable() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    r.invoke(2, Op::read("k")).ok(Some("a"), Some("e7"));
    assert!(verdict(&r).is_not_linearizable());
}

#[test]
fn insert_over_an_existing_entity_is_not_linearizable() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    r.invoke(2, Op::insert("k", "b")).ok(None, Some("e2"));
    assert!(verdict(&r).is_not_linearizable());
}

#[test]
fn read_of_a_deleted_entity_is_not_linearizable() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    r.invoke(1, Op::delete("k")).ok(None, None);
    r.invoke(2, Op::read("k")).ok(Some("a"), Some("e1"));
    assert!(verdict(&r).is_not_linearizable());
}

#[test]
fn failed_operations_did_not_happen() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    r.invoke(2, Op::cas("k", "e0", "x"))
        .fail("UpdateConditionNotSatisfied");
    r.invoke(2, Op::insert("k", "y"))
        .fail("EntityAlreadyExists");
    r.invoke(3, Op::read("k")).fail("ServerBusy");
    r.invoke(3, Op::read("k")).ok(Some("a"), Some("e1"));
    assert_eq!(verdict(&r), Verdict::Linearizable);

    // ... so a read that sees a failed write's value is a violation.
    r.invoke(1, Op::write("k", "b"))
        .fail("OperationTimedOut-but-definite");
    r.invoke(3, Op::read("k")).ok(Some("b"), None);
    assert!(verdict(&r).is_not_linearizable());
}

#[test]
fn an_unknown_write_may_explain_a_later_read_and_its_etag() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    r.invoke(1, Op::write("k", "b")).unknown();
    r.invoke(2, Op::read("k")).ok(Some("a"), Some("e1"));
    // The unknown write lands long after it timed out; its ETag was never seen by its writer.
    r.invoke(2, Op::read("k")).ok(Some("b"), Some("e9"));
    r.invoke(2, Op::cas("k", "e9", "c")).ok(None, Some("e10"));
    r.invoke(3, Op::read("k")).ok(Some("c"), Some("e10"));
    assert_eq!(verdict(&r), Verdict::Linearizable);
}

#[test]
fn an_unknown_write_may_never_happen() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    let never = r.invoke(1, Op::write("k", "b"));
    drop(never);
    r.invoke(2, Op::read("k")).ok(Some("a"), Some("e1"));
    r.invoke(2, Op::cas("k", "e1", "c")).ok(None, Some("e2"));
    assert_eq!(verdict(&r), Verdict::Linearizable);
}

#[test]
fn an_unknown_write_takes_effect_at_most_once() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    r.invoke(1, Op::write("k", "b")).unknown();
    r.invoke(2, Op::read("k")).ok(Some("b"), None);
    r.invoke(2, Op::write("k", "c")).ok(None, Some("e2"));
    r.invoke(2, Op::read("k")).ok(Some("b"), None);
    assert!(verdict(&r).is_not_linearizable());
}

#[test]
fn an_unseen_etag_cannot_be_one_an_acknowledged_write_reported() {
    let r = Recorder::new();
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    r.invoke(1, Op::write("k", "b")).unknown();
    r.invoke(2, Op::read("k")).ok(Some("b"), Some("e1"));
    assert!(verdict(&r).is_not_linearizable());
}

#[test]
fn concurrent_writes_may_take_effect_in_either_order() {
    for (seen, etag) in [("a", "e1"), ("b", "e2")] {
        let r = Recorder::new();
        let wa = r.invoke(1, Op::write("k", "a"));
        let wb = r.invoke(2, Op::write("k", "b"));
        let during = r.invoke(3, Op::read("k"));
        wa.ok(None, Some("e1"));
        during.ok(None, None);
        wb.ok(None, Some("e2"));
        r.invoke(3, Op::read("k")).ok(Some(seen), Some(etag));
        r.invoke(3, Op::read("k")).ok(Some(seen), Some(etag));
        assert_eq!(verdict(&r), Verdict::Linearizable, "final read {seen}");

        // Whichever order was chosen, a later read cannot flip back.
        let other = if seen == "a" { "b" } else { "a" };
        r.invoke(1, Op::read("k")).ok(Some(other), None);
        assert!(verdict(&r).is_not_linearizable(), "flip to {other}");
    }
}

#[test]
fn keys_are_checked_independently() {
    let r = Recorder::new();
    r.invoke(1, Op::write("j", "a")).ok(None, Some("e1"));
    r.invoke(1, Op::write("k", "a")).ok(None, Some("e1"));
    r.invoke(2, Op::read("j")).ok(Some("a"), Some("e1"));
    r.invoke(2, Op::read("k")).ok(None, None);
    match verdict(&r) {
        Verdict::NotLinearizable { key, .. } => assert_eq!(key, "k"),
        other => panic!("{other}"),
    }
}

#[test]
fn the_search_bound_gives_an_unknown_verdict() {
    let r = Recorder::new();
    let writes: Vec<OpHandle> = (0..10)
        .map(|i| r.invoke(i, Op::write("k", format!("v{i}"))))
        .collect();
    for (i, w) in writes.into_iter().enumerate() {
        w.ok(None, Some(&format!("e{i}")));
    }
    r.invoke(99, Op::read("k")).ok(Some("none of them"), None);
    let history = r.history();
    assert_eq!(
        check_with(&history, 50),
        Verdict::Unknown {
            key: "k".to_string(),
            explored: 50
        }
    );
    assert!(check(&history).is_not_linearizable());
}

/// A register that behaves correctly: the server the generated histories run against.
#[derive(Default)]
struct Register {
    entities: HashMap<String, (String, String)>,
    etags: u64,
    values: u64,
}

impl Register {
    fn apply(&mut self, op: &Op) -> Outcome {
        let fail = |code: &str| Outcome::Fail {
            code: code.to_string(),
        };
        let current = self.entities.get(op.key()).cloned();
        let matches = |etag: &str| current.as_ref().is_some_and(|(_, e)| e == etag);
        let accepted = match op {
            Op::Read { .. } => {
                return Outcome::Ok {
                    value: current.as_ref().map(|(v, _)| v.clone()),
                    etag: current.map(|(_, e)| e),
                };
            }
            Op::Write { .. } => true,
            Op::Cas { expected_etag, .. } => matches(expected_etag),
            Op::Insert { .. } => current.is_none(),
            Op::Delete { etag, .. } => current.is_some() && etag.as_deref().is_none_or(matches),
        };
        if !accepted {
            return fail("PreconditionFailed");
        }
        match op.effect() {
            Some(Some(value)) => {
                self.etags += 1;
                let etag = format!("e{}", self.etags);
                self.entities
                    .insert(op.key().to_string(), (value.to_string(), etag.clone()));
                Outcome::Ok {
                    value: None,
                    etag: Some(etag),
                }
            }
            _ => {
                self.entities.remove(op.key());
                Outcome::Ok {
                    value: None,
                    etag: None,
                }
            }
        }
    }

    fn random_op(&mut self, rng: &mut StdRng) -> Op {
        let key = ["a", "b"][rng.gen_range(0..2)];
        self.values += 1;
        let value = format!("v{}", self.values);
        // Mostly the current ETag, sometimes a stale or made-up one.
        let etag = match self.entities.get(key) {
            Some((_, e)) if rng.gen_bool(0.7) => e.clone(),
            _ => format!("e{}", rng.gen_range(0..=self.etags)),
        };
        match rng.gen_range(0..10) {
            0..=3 => Op::read(key),
            4 | 5 => Op::write(key, value),
            6 | 7 => Op::cas(key, etag, value),
            8 => Op::insert(key, value),
            _ if rng.gen_bool(0.5) => Op::delete(key),
            _ => Op::delete_if(key, etag),
        }
    }
}

/// One operation at a time (from any of three processes). An unknown mutation takes effect at once,
/// later, or never.
fn sequential_history(seed: u64, length: usize) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Register::default();
    let mut delayed: Vec<Op> = Vec::new();
    let r = Recorder::new();
    for _ in 0..length {
        if !delayed.is_empty() && rng.gen_bool(0.3) {
            let op = delayed.swap_remove(rng.gen_range(0..delayed.len()));
            server.apply(&op);
        }
        let op = server.random_op(&mut rng);
        let handle = r.invoke(rng.gen_range(0..3), op.clone());
        if op.is_mutation() && rng.gen_bool(0.15) {
            match rng.gen_range(0..3) {
                0 => {
                    server.apply(&op);
                }
                1 => delayed.push(op),
                _ => {}
            }
            handle.unknown();
        } else {
            handle.complete(server.apply(&op));
        }
    }
    r.history()
}

/// Several processes with overlapping operations, each taking effect at a random point between its
/// invocation and completion (unknown ones possibly after, or never).
fn concurrent_history(seed: u64, processes: usize, length: usize) -> History {
    enum Pending {
        Invoked(OpHandle, Op),
        Applied(OpHandle, Op, Outcome),
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Register::default();
    let mut delayed: Vec<Op> = Vec::new();
    let mut slots: Vec<Option<Pending>> = (0..processes).map(|_| None).collect();
    let r = Recorder::new();
    let mut invoked = 0;
    while invoked < length || slots.iter().any(Option::is_some) {
        if !delayed.is_empty() && rng.gen_bool(0.1) {
            let op = delayed.swap_remove(rng.gen_range(0..delayed.len()));
            server.apply(&op);
        }
        let p = rng.gen_range(0..processes);
        slots[p] = match slots[p].take() {
            None if invoked < length => {
                invoked += 1;
                let op = server.random_op(&mut rng);
                Some(Pending::Invoked(r.invoke(p as u64, op.clone()), op))
            }
            None => None,
            Some(Pending::Invoked(handle, op)) if op.is_mutation() && rng.gen_bool(0.1) => {
                handle.unknown();
                if rng.gen_bool(0.5) {
                    delayed.push(op);
                }
                None
            }
            Some(Pending::Invoked(handle, op)) => {
                let outcome = server.apply(&op);
                Some(Pending::Applied(handle, op, outcome))
            }
            Some(Pending::Applied(handle, op, outcome)) => {
                if op.is_mutation() && rng.gen_bool(0.1) {
                    handle.unknown();
                } else {
                    handle.complete(outcome);
                }
                None
            }
        };
    }
    r.history()
}

/// Replaces the value of one acknowledged read that saw an entity with a value nobody wrote.
fn corrupt_a_read(history: &History, rng: &mut StdRng) -> Option<History> {
    let reads: Vec<usize> = (0..history.len())
        .filter(|&i| {
            let o = &history.operations()[i];
            matches!(o.op, Op::Read { .. }) && o.outcome.is_ok()
        })
        .collect();
    let victim = *reads.get(rng.gen_range(0..reads.len().max(1)))?;
    let mut operations = history.operations().to_vec();
    let etag = operations[victim].outcome.etag().map(str::to_string);
    operations[victim].outcome = Outcome::Ok {
        value: Some("corrupted".to_string()),
        etag,
    };
    Some(History::from_operations(operations))
}

#[test]
fn random_sequential_histories_are_linearizable_and_a_corrupted_read_is_detected() {
    let mut rng = StdRng::seed_from_u64(7);
    for seed in 0..100 {
        let history = sequential_history(seed, 60);
        let v = check(&history);
        assert_eq!(v, Verdict::Linearizable, "seed {seed}: {v}\n{history}");
        let corrupted = corrupt_a_read(&history, &mut rng).expect("the history has reads");
        assert!(check(&corrupted).is_not_linearizable(), "seed {seed}");
    }
}

#[test]
fn random_concurrent_histories_are_linearizable_and_a_corrupted_read_is_detected() {
    let mut rng = StdRng::seed_from_u64(11);
    let (mut overlapping, mut unknown) = (0, 0);
    for seed in 0..200 {
        let history = concurrent_history(seed, 5, 60);
        let ops = history.operations();
        overlapping += ops.windows(2).filter(|w| !w[0].precedes(&w[1])).count();
        unknown += ops.iter().filter(|o| o.outcome.is_unknown()).count();
        let v = check(&history);
        assert_eq!(v, Verdict::Linearizable, "seed {seed}: {v}\n{history}");
        let corrupted = corrupt_a_read(&history, &mut rng).expect("the history has reads");
        assert!(check(&corrupted).is_not_linearizable(), "seed {seed}");
    }
    // The generator does exercise the search: operations overlap and some outcomes are unknown.
    assert!(
        overlapping > 1000 && unknown > 100,
        "{overlapping} {unknown}"
    );
}
