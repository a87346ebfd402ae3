//! Linearizability of each entity as a register with ETag compare-and-swap.
//!
//! Entities are independent registers, so the history is checked key by key (linearizability is
//! compositional): each key's operations must have one total order that agrees with real time (an
//! operation that completed before another was invoked comes first) and in which every operation
//! gives the answer the register would give.
//!
//! **Model.** The state is `absent` or `(value, etag)`. A write that succeeded leaves the ETag its
//! outcome reports. An operation whose ETag the client never saw (an unknown write, or an
//! acknowledgement without an ETag) leaves an *unseen* ETag: a placeholder that stands for "some fresh
//! ETag". Server ETags are assumed unique per entity, so an unseen ETag can equal any ETag except those
//! that acknowledged writes of the key reported; a CAS or a read that names such an unclaimed ETag
//! against an unseen one matches it, and from then on the placeholder is that ETag. Reads must return
//! the current value, and the current ETag when they report one. A CAS or a conditional delete needs
//! the entity present with a matching ETag, an insert needs it absent, a delete needs it present.
//!
//! **Outcomes.** `Fail` operations are dropped: they did not happen (so a refused CAS is not used as
//! evidence about the ETag). Unknown reads carry no information and are dropped too. Unknown writes may
//! be placed anywhere after their invocation, or never: they have no completion, so they never force
//! the search to place them, and the search succeeds once every acknowledged operation is placed.
//!
//! **Search.** Wing & Gong's backtracking search with Lowe's memoisation, as in Porcupine: the calls
//! and returns of the key's operations sit in one time-ordered doubly linked list; the search walks it
//! from the front, tries each call it meets (each operation invoked before the earliest pending
//! completion), and on success removes the operation from the list ("lifts" it) and starts again from
//! the front. Reaching a return means that operation had to be placed by now and could not: backtrack.
//! A set of (placed operations as a bitset, model state) pairs prunes configurations already explored —
//! the future of a configuration does not depend on the order that reached it. The search stops after
//! `max_states` new configurations with [`Verdict::Unknown`], so a pathological history (many
//! concurrent unknown writes) costs a bounded time instead of exponential time.
//!
//! **Counterexample.** On failure the verdict carries the deepest partial linearization the search
//! reached, the register state after it, and the operation whose completion the search could not get
//! past from there: the point where the history stops making sense.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::{History, Op, Operation, Outcome};

/// The default bound on configurations explored per key.
pub const DEFAULT_MAX_STATES: u64 = 1_000_000;

/// The judgement on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// `key`'s operations have no linearization.
    NotLinearizable {
        key: String,
        counterexample: Box<Counterexample>,
    },
    /// The search on `key` hit its bound after `explored` configurations without a decision.
    Unknown {
        key: String,
        explored: u64,
    },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    pub fn is_not_linearizable(&self) -> bool {
        matches!(self, Verdict::NotLinearizable { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable {
                key,
                counterexample,
            } => write!(f, "key {key:?} is not linearizable: {counterexample}"),
            Verdict::Unknown { key, explored } => write!(
                f,
                "key {key:?}: undecided after exploring {explored} configurations"
            ),
        }
    }
}

/// Why a key's history has no linearization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    /// How many operations of the key were checked (after dropping failed ops and unknown reads).
    pub operations: usize,
    /// The deepest partial linearization found, in linearization order.
    pub prefix: Vec<Operation>,
    /// The register after `prefix`, in words.
    pub state: String,
    /// The operation that completed before any continuation of `prefix` could place it.
    pub blocked: Option<Operation>,
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "no linearization of its {} operations; longest linearizable prefix ({} operations):",
            self.operations,
            self.prefix.len()
        )?;
        for operation in &self.prefix {
            writeln!(f, "  {operation}")?;
        }
        writeln!(f, "register after the prefix: {}", self.state)?;
        match &self.blocked {
            Some(operation) => write!(f, "cannot follow it: {operation}"),
            None => f.write_str("no operation can follow it"),
        }
    }
}

/// Checks every key of `history` with the default bound.
pub fn check(history: &History) -> Verdict {
    check_with(history, DEFAULT_MAX_STATES)
}

/// Checks every key of `history`, exploring at most `max_states` configurations per key. The first
/// key (in key order) that is not linearizable decides; otherwise an undecided key does.
pub fn check_with(history: &History, max_states: u64) -> Verdict {
    let mut undecided = None;
    for (key, operations) in history.by_key() {
        match check_key(&key, &operations, max_states) {
            Verdict::Linearizable => {}
            verdict @ Verdict::NotLinearizable { .. } => return verdict,
            verdict @ Verdict::Unknown { .. } => {
                undecided.get_or_insert(verdict);
            }
        }
    }
    undecided.unwrap_or(Verdict::Linearizable)
}

/// Checks the operations of one entity (their keys are not looked at).
pub fn check_key(key: &str, operations: &[Operation], max_states: u64) -> Verdict {
    let relevant: Vec<&Operation> = operations
        .iter()
        .filter(|o| match o.outcome {
            Outcome::Fail { .. } => false,
            Outcome::Unknown => o.op.is_mutation(),
            Outcome::Ok { .. } => true,
        })
        .collect();
    let mut search = Search::new(&relevant);
    match search.run(max_states) {
        Found::Linearizable => Verdict::Linearizable,
        Found::Exhausted(explored) => Verdict::Unknown {
            key: key.to_string(),
            explored,
        },
        Found::NotLinearizable(dead_end) => {
            let (prefix, state, blocked) = match dead_end {
                Some(d) => (d.prefix, d.state, d.blocked),
                None => (Vec::new(), None, None),
            };
            Verdict::NotLinearizable {
                key: key.to_string(),
                counterexample: Box::new(Counterexample {
                    operations: relevant.len(),
                    prefix: prefix.iter().map(|&i| relevant[i].clone()).collect(),
                    state: search.model.describe(state, &relevant),
                    blocked: blocked.map(|i| relevant[i].clone()),
                }),
            }
        }
    }
}

/// An ETag as the model knows it: interned, or unseen (written by the operation at this index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Tag {
    Known(u32),
    Unseen(u32),
}

/// `None`: the entity is absent; otherwise its interned value and its ETag.
type State = Option<(u32, Tag)>;

/// An operation translated for the model, with strings interned.
enum Step {
    Read {
        value: Option<u32>,
        etag: Option<u32>,
    },
    Write {
        value: u32,
        produces: Tag,
    },
    Cas {
        expected: u32,
        value: u32,
        produces: Tag,
    },
    Insert {
        value: u32,
        produces: Tag,
    },
    Delete {
        expected: Option<u32>,
    },
}

#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        id
    }
}

#[derive(Default)]
struct Model {
    values: Interner,
    etags: Interner,
    /// ETags reported by acknowledged writes: an unseen ETag cannot be one of them.
    claimed: HashSet<u32>,
}

impl Model {
    fn prepare(&mut self, index: usize, operation: &Operation) -> Step {
        let reported = operation.outcome.etag().map(|e| self.etags.intern(e));
        let produces = match reported {
            Some(e) if operation.op.is_mutation() => {
                self.claimed.insert(e);
                Tag::Known(e)
            }
            _ => Tag::Unseen(index as u32),
        };
        match &operation.op {
            Op::Read { .. } => {
                let value = match &operation.outcome {
                    Outcome::Ok { value, .. } => value.as_deref().map(|v| self.values.intern(v)),
                    _ => None,
                };
                Step::Read {
                    value,
                    etag: reported,
                }
            }
            Op::Write { value, .. } => Step::Write {
                value: self.values.intern(value),
                produces,
            },
            Op::Cas {
                expected_etag,
                value,
                ..
            } => Step::Cas {
                expected: self.etags.intern(expected_etag),
                value: self.values.intern(value),
                produces,
            },
            Op::Insert { value, .. } => Step::Insert {
                value: self.values.intern(value),
                produces,
            },
            Op::Delete { etag, .. } => Step::Delete {
                expected: etag.as_deref().map(|e| self.etags.intern(e)),
            },
        }
    }

    /// The tag `expected` makes of `current` if they can be the same ETag.
    fn matches(&self, current: Tag, expected: u32) -> Option<Tag> {
        match current {
            Tag::Known(e) => (e == expected).then_some(current),
            Tag::Unseen(_) => (!self.claimed.contains(&expected)).then_some(Tag::Known(expected)),
        }
    }

    /// The state after `step`, or `None` if `step` cannot happen in `state`.
    fn apply(&self, state: State, step: &Step) -> Option<State> {
        match (step, state) {
            (Step::Read { value: None, .. }, None) => Some(None),
            (Step::Read { value: None, .. }, Some(_)) => None,
            (Step::Read { value: Some(_), .. }, None) => None,
            (
                Step::Read {
                    value: Some(v),
                    etag,
                },
                Some((current, tag)),
            ) => {
                if *v != current {
                    return None;
                }
                match etag {
                    None => Some(state),
                    Some(e) => self.matches(tag, *e).map(|tag| Some((current, tag))),
                }
            }
            (Step::Write { value, produces }, _) => Some(Some((*value, *produces))),
            (Step::Cas { .. }, None) => None,
            (
                Step::Cas {
                    expected,
                    value,
                    produces,
                },
                Some((_, tag)),
            ) => self
                .matches(tag, *expected)
                .map(|_| Some((*value, *produces))),
            (Step::Insert { value, produces }, None) => Some(Some((*value, *produces))),
            (Step::Insert { .. }, Some(_)) => None,
            (Step::Delete { .. }, None) => None,
            (Step::Delete { expected: None }, Some(_)) => Some(None),
            (Step::Delete { expected: Some(e) }, Some((_, tag))) => {
                self.matches(tag, *e).map(|_| None)
            }
        }
    }

    fn describe(&self, state: State, operations: &[&Operation]) -> String {
        match state {
            None => "absent".to_string(),
            Some((value, tag)) => {
                let value = &self.values.names[value as usize];
                match tag {
                    Tag::Known(e) => {
                        format!("value {value:?}, etag {:?}", self.etags.names[e as usize])
                    }
                    Tag::Unseen(i) => format!(
                        "value {value:?}, etag unseen (written by #{})",
                        operations[i as usize].id
                    ),
                }
            }
        }
    }
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

/// A call or a return in the time-ordered list.
struct Node {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// The deepest point the search reached before backtracking.
struct DeadEnd {
    prefix: Vec<usize>,
    state: State,
    blocked: Option<usize>,
}

enum Found {
    Linearizable,
    NotLinearizable(Option<DeadEnd>),
    Exhausted(u64),
}

struct Search {
    model: Model,
    steps: Vec<Step>,
    /// Acknowledged operations must be placed; unknown ones may be left out.
    required: Vec<bool>,
    nodes: Vec<Node>,
    call_node: Vec<usize>,
    return_node: Vec<Option<usize>>,
}

impl Search {
    fn new(operations: &[&Operation]) -> Search {
        let mut model = Model::default();
        let steps = operations
            .iter()
            .enumerate()
            .map(|(i, o)| model.prepare(i, o))
            .collect();
        let required: Vec<bool> = operations.iter().map(|o| o.outcome.is_ok()).collect();

        // (time, returns after calls at the same time, op, is_call). An acknowledged operation without
        // a completion time must still be placed: its return goes last.
        let mut entries = Vec::new();
        for (i, o) in operations.iter().enumerate() {
            entries.push((o.invoked, 0, i, true));
            if required[i] {
                entries.push((o.completed.unwrap_or(u64::MAX), 1, i, false));
            }
        }
        entries.sort();

        let mut nodes = vec![Node {
            op: usize::MAX,
            is_call: false,
            prev: NIL,
            next: NIL,
        }];
        let mut call_node = vec![0; operations.len()];
        let mut return_node = vec![None; operations.len()];
        for (_, _, op, is_call) in entries {
            let index = nodes.len();
            nodes[index - 1].next = index;
            nodes.push(Node {
                op,
                is_call,
                prev: index - 1,
                next: NIL,
            });
            if is_call {
                call_node[op] = index;
            } else {
                return_node[op] = Some(index);
            }
        }
        Search {
            model,
            steps,
            required,
            nodes,
            call_node,
            return_node,
        }
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.nodes[node].prev, self.nodes[node].next);
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    /// Undoes `unlink(node)`; nodes must be relinked in the reverse order of unlinking.
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.nodes[node].prev, self.nodes[node].next);
        self.nodes[prev].next = node;
        if next != NIL {
            self.nodes[next].prev = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if let Some(r) = self.return_node[op] {
            self.unlink(r);
        }
    }

    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.return_node[op] {
            self.relink(r);
        }
        self.relink(self.call_node[op]);
    }

    fn run(&mut self, max_states: u64) -> Found {
        let mut remaining = self.required.iter().filter(|&&r| r).count();
        if remaining == 0 {
            return Found::Linearizable;
        }
        let mut placed = vec![0u64; self.steps.len().div_ceil(64)];
        let mut state: State = None;
        // The placed operations in order, each with the state before it.
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
        let mut explored = 0u64;
        let mut deepest: Option<DeadEnd> = None;
        let mut entry = self.nodes[HEAD].next;

        loop {
            if entry != NIL && self.nodes[entry].is_call {
                let op = self.nodes[entry].op;
                if let Some(next) = self.model.apply(state, &self.steps[op]) {
                    placed[op / 64] |= 1 << (op % 64);
                    if seen.insert((placed.clone(), next)) {
                        explored += 1;
                        if explored > max_states {
                            return Found::Exhausted(explored - 1);
                        }
                        stack.push((op, state));
                        state = next;
                        if self.required[op] {
                            remaining -= 1;
                            if remaining == 0 {
                                return Found::Linearizable;
                            }
                        }
                        self.lift(op);
                        entry = self.nodes[HEAD].next;
                        continue;
                    }
                    placed[op / 64] &= !(1 << (op % 64));
                }
                entry = self.nodes[entry].next;
                continue;
            }

            // A return (or, defensively, the end of the list): its operation could not be placed in
            // time after this prefix. Remember the deepest such point, then backtrack.
            if deepest
                .as_ref()
                .is_none_or(|d| stack.len() > d.prefix.len())
            {
                deepest = Some(DeadEnd {
                    prefix: stack.iter().map(|&(op, _)| op).collect(),
                    state,
                    blocked: (entry != NIL).then(|| self.nodes[entry].op),
                });
            }
            let Some((op, before)) = stack.pop() else {
                return Found::NotLinearizable(deepest);
            };
            placed[op / 64] &= !(1 << (op % 64));
            state = before;
            if self.required[op] {
                remaining += 1;
            }
            self.unlift(op);
            entry = self.nodes[self.call_node[op]].next;
        }
    }
}

#[cfg(test)]
mod tests;
