//! Histories of operations against entities, and the checkers that judge them.
//!
//! A test workload records every request it makes with a [`Recorder`]: `invoke` before the request is
//! sent and `ok` / `fail` / `unknown` when its answer (or the lack of one) is known. The recorder hands
//! out times from one logical clock taken under its lock, so the order of events in the log is the
//! real-time order the workload saw, across threads and tasks. The finished [`History`] pairs each
//! invocation with its completion and is what the checkers read:
//!
//! - [`linearizable`]: every entity behaves like a single register with ETag compare-and-swap
//!   (Wing–Gong search with memoisation, bounded);
//! - [`lost_writes`]: a final read of everything shows the last acknowledged write of every entity;
//! - [`paging`]: a paged query returns every entity that existed throughout, once and in key order;
//! - [`batches`]: a batch is visible all or nothing, and a failed batch not at all;
//! - [`fencing`]: a resource never accepts a write with a lower fencing token than one it accepted before.
//!
//! The three outcomes mean what a client can know and no more. `Ok` is an acknowledgement: the operation
//! took effect, exactly once, between its invocation and its completion. `Fail` is a definite refusal
//! (a precondition failed, the entity was missing, the request was rejected before it was proposed): the
//! operation never took effect. `Unknown` is a timeout or a lost connection: the operation may take
//! effect at any time after its invocation — even after the workload has ended — or never. An operation
//! that was invoked and never completed (the task was cancelled, the handle dropped) counts as unknown.
//!
//! Recording conventions the checkers rely on: a read of a missing entity is `Ok` with no value (not a
//! `Fail`); a delete of a missing entity is a `Fail`; a write that succeeded records the ETag the server
//! returned, when it returned one.

pub mod batches;
pub mod fencing;
pub mod linearizable;
pub mod lost_writes;
pub mod paging;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// An operation on one entity, seen as a register holding a value and an ETag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Point read; completes with the value and ETag, or no value if the entity is missing.
    Read { key: String },
    /// Unconditional upsert (insert-or-replace).
    Write { key: String, value: String },
    /// Replace if the entity's current ETag is `expected_etag` (`If-Match`).
    Cas {
        key: String,
        expected_etag: String,
        value: String,
    },
    /// Insert; fails if the entity exists.
    Insert { key: String, value: String },
    /// Delete, conditional on `etag` when given (`If-Match: *` otherwise); fails if the entity is missing.
    Delete { key: String, etag: Option<String> },
}

impl Op {
    pub fn read(key: impl Into<String>) -> Op {
        Op::Read { key: key.into() }
    }

    pub fn write(key: impl Into<String>, value: impl Into<String>) -> Op {
        Op::Write {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn cas(
        key: impl Into<String>,
        expected_etag: impl Into<String>,
        value: impl Into<String>,
    ) -> Op {
        Op::Cas {
            key: key.into(),
            expected_etag: expected_etag.into(),
            value: value.into(),
        }
    }

    pub fn insert(key: impl Into<String>, value: impl Into<String>) -> Op {
        Op::Insert {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Unconditional delete.
    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete {
            key: key.into(),
            etag: None,
        }
    }

    /// Delete if the entity's current ETag is `etag`.
    pub fn delete_if(key: impl Into<String>, etag: impl Into<String>) -> Op {
        Op::Delete {
            key: key.into(),
            etag: Some(etag.into()),
        }
    }

    /// The entity the operation addresses.
    pub fn key(&self) -> &str {
        match self {
            Op::Read { key }
            | Op::Write { key, .. }
            | Op::Cas { key, .. }
            | Op::Insert { key, .. }
            | Op::Delete { key, .. } => key,
        }
    }

    /// Whether the operation changes the entity when it takes effect.
    pub fn is_mutation(&self) -> bool {
        !matches!(self, Op::Read { .. })
    }

    /// The value the entity holds after the operation takes effect: `Some(Some(v))` for writes,
    /// `Some(None)` for a delete, `None` for a read.
    pub fn effect(&self) -> Option<Option<&str>> {
        match self {
            Op::Read { .. } => None,
            Op::Write { value, .. } | Op::Cas { value, .. } | Op::Insert { value, .. } => {
                Some(Some(value))
            }
            Op::Delete { .. } => Some(None),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Read { key } => write!(f, "read({key:?})"),
            Op::Write { key, value } => write!(f, "write({key:?}, {value:?})"),
            Op::Cas {
                key,
                expected_etag,
                value,
            } => write!(f, "cas({key:?}, if-match {expected_etag:?}, {value:?})"),
            Op::Insert { key, value } => write!(f, "insert({key:?}, {value:?})"),
            Op::Delete { key, etag: None } => write!(f, "delete({key:?})"),
            Op::Delete {
                key,
                etag: Some(etag),
            } => write!(f, "delete({key:?}, if-match {etag:?})"),
        }
    }
}

/// What the client learnt about an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged. For a read, the value and ETag returned (no value: the entity was missing); for a
    /// write, the ETag the server returned, if any.
    Ok {
        value: Option<String>,
        etag: Option<String>,
    },
    /// Definitely not applied; `code` is the error code, for the report.
    Fail { code: String },
    /// Timed out or ambiguous: may take effect at any time after the invocation, or never.
    Unknown,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }

    pub fn is_fail(&self) -> bool {
        matches!(self, Outcome::Fail { .. })
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown)
    }

    /// The ETag of an acknowledged operation, if the server returned one.
    pub fn etag(&self) -> Option<&str> {
        match self {
            Outcome::Ok { etag, .. } => etag.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok { value, etag } => {
                f.write_str("ok")?;
                match (value, etag) {
                    (None, None) => Ok(()),
                    (Some(v), None) => write!(f, "({v:?})"),
                    (None, Some(e)) => write!(f, "(etag {e:?})"),
                    (Some(v), Some(e)) => write!(f, "({v:?}, etag {e:?})"),
                }
            }
            Outcome::Fail { code } => write!(f, "fail({code})"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

/// Whether an event starts or ends an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Invoke(Op),
    Complete(Outcome),
}

/// One entry of the recorder's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The client (thread, task, connection) that issued the operation; a process has at most one
    /// operation outstanding at a time.
    pub process: u64,
    pub kind: EventKind,
    /// Pairs the completion with its invocation; unique within a recorder.
    pub op_id: usize,
    /// Logical time: strictly increasing in log order.
    pub time: u64,
}

#[derive(Debug, Default)]
struct Log {
    events: Vec<Event>,
    clock: u64,
    next_op: usize,
}

impl Log {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

/// Records invocations and completions from any number of threads or tasks. Clones share one log.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    log: Arc<Mutex<Log>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panicking workload thread must not take the history down with it.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `process` is about to send `op`; complete the returned handle with the answer.
    pub fn invoke(&self, process: u64, op: Op) -> OpHandle {
        let mut log = self.lock();
        let op_id = log.next_op;
        log.next_op += 1;
        let time = log.tick();
        log.events.push(Event {
            process,
            kind: EventKind::Invoke(op),
            op_id,
            time,
        });
        OpHandle {
            recorder: self.clone(),
            process,
            op_id,
        }
    }

    /// A time from the recorder's clock, for things recorded beside the history (batches, fenced
    /// writes, revocations) that checkers compare with it.
    pub fn tick(&self) -> u64 {
        self.lock().tick()
    }

    fn complete(&self, process: u64, op_id: usize, outcome: Outcome) {
        let mut log = self.lock();
        let time = log.tick();
        log.events.push(Event {
            process,
            kind: EventKind::Complete(outcome),
            op_id,
            time,
        });
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// The history so far; operations still outstanding count as unknown.
    pub fn history(&self) -> History {
        History::from_events(self.events())
    }
}

/// An invoked operation waiting for its outcome. Dropping it uncompleted leaves the operation unknown.
#[must_use = "complete the operation with ok, fail or unknown"]
#[derive(Debug)]
pub struct OpHandle {
    recorder: Recorder,
    process: u64,
    op_id: usize,
}

impl OpHandle {
    pub fn op_id(&self) -> usize {
        self.op_id
    }

    /// Acknowledged, with the value (reads) and ETag the server returned.
    pub fn ok(self, value: Option<&str>, etag: Option<&str>) {
        self.complete(Outcome::Ok {
            value: value.map(str::to_string),
            etag: etag.map(str::to_string),
        });
    }

    /// Definitely not applied.
    pub fn fail(self, code: impl Into<String>) {
        self.complete(Outcome::Fail { code: code.into() });
    }

    /// Timed out or ambiguous.
    pub fn unknown(self) {
        self.complete(Outcome::Unknown);
    }

    pub fn complete(self, outcome: Outcome) {
        self.recorder.complete(self.process, self.op_id, outcome);
    }
}

/// An invocation paired with its completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub id: usize,
    pub process: u64,
    pub op: Op,
    pub outcome: Outcome,
    pub invoked: u64,
    /// `None`: never completed (the outcome is then `Unknown`).
    pub completed: Option<u64>,
}

impl Operation {
    /// Real-time order: `self` completed before `other` was invoked, so an acknowledged `self` took
    /// effect before `other` could.
    pub fn precedes(&self, other: &Operation) -> bool {
        self.completed.is_some_and(|c| c < other.invoked)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} process {} {} -> {} [t {}..",
            self.id, self.process, self.op, self.outcome, self.invoked
        )?;
        match self.completed {
            Some(t) => write!(f, "{t}]"),
            None => f.write_str("]"),
        }
    }
}

/// A finished list of operations, in invocation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    operations: Vec<Operation>,
}

impl History {
    /// Pairs invocations with completions by `op_id`. A completion without an invocation, or a second
    /// completion, is ignored; an invocation without a completion is unknown.
    pub fn from_events(mut events: Vec<Event>) -> History {
        events.sort_by_key(|e| e.time);
        let mut operations: Vec<Operation> = Vec::new();
        let mut index: BTreeMap<usize, usize> = BTreeMap::new();
        for event in events {
            match event.kind {
                EventKind::Invoke(op) => {
                    index.insert(event.op_id, operations.len());
                    operations.push(Operation {
                        id: event.op_id,
                        process: event.process,
                        op,
                        outcome: Outcome::Unknown,
                        invoked: event.time,
                        completed: None,
                    });
                }
                EventKind::Complete(outcome) => {
                    if let Some(&i) = index.get(&event.op_id) {
                        let operation = &mut operations[i];
                        if operation.completed.is_none() {
                            operation.outcome = outcome;
                            operation.completed = Some(event.time);
                        }
                    }
                }
            }
        }
        History { operations }
    }

    /// A history of already paired operations (sorted by invocation time).
    pub fn from_operations(mut operations: Vec<Operation>) -> History {
        operations.sort_by_key(|o| o.invoked);
        History { operations }
    }

    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The operations of each entity, in invocation order.
    pub fn by_key(&self) -> BTreeMap<String, Vec<Operation>> {
        let mut keys: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
        for operation in &self.operations {
            keys.entry(operation.op.key().to_string())
                .or_default()
                .push(operation.clone());
        }
        keys
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for operation in &self.operations {
            writeln!(f, "{operation}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_pairs_invocations_with_completions_in_time_order() {
        let recorder = Recorder::new();
        let a = recorder.invoke(1, Op::write("k", "v1"));
        let b = recorder.invoke(2, Op::read("k"));
        b.ok(Some("v1"), Some("e1"));
        a.ok(None, Some("e1"));
        let c = recorder.invoke(3, Op::delete("j"));
        c.fail("ResourceNotFound");

        let history = recorder.history();
        let ops = history.operations();
        assert_eq!(ops.len(), 3);
        assert_eq!((ops[0].invoked, ops[0].completed), (1, Some(4)));
        assert_eq!((ops[1].invoked, ops[1].completed), (2, Some(3)));
        assert!(ops[1].outcome.is_ok() && ops[2].outcome.is_fail());
        assert!(ops[1].precedes(&ops[2]) && !ops[0].precedes(&ops[1]));
        assert_eq!(history.by_key().keys().collect::<Vec<_>>(), ["j", "k"]);
        assert_eq!(history.by_key()["k"].len(), 2);
    }

    #[test]
    fn an_operation_never_completed_is_unknown() {
        let recorder = Recorder::new();
        let handle = recorder.invoke(1, Op::write("k", "v"));
        drop(handle);
        let history = recorder.history();
        assert!(history.operations()[0].outcome.is_unknown());
        assert_eq!(history.operations()[0].completed, None);
    }

    #[test]
    fn clones_share_one_log_across_threads() {
        let recorder = Recorder::new();
        let threads: Vec<_> = (0..4)
            .map(|p| {
                let recorder = recorder.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        recorder
                            .invoke(p, Op::write(format!("k{p}"), i.to_string()))
                            .ok(None, None);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let events = recorder.events();
        assert_eq!(events.len(), 400);
        assert!(events.windows(2).all(|w| w[0].time < w[1].time));
        assert_eq!(recorder.history().len(), 200);
    }
}
