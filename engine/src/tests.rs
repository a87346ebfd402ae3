//! Tests that hold every [`Engine`] to the same contract.
//!
//! Two kinds live here: short stories run against both engines (CF isolation, range deletes, scan
//! bounds, snapshot isolation, atomic batches under a concurrent reader), and a model-based property
//! test that drives [`MemoryEngine`], [`RocksEngine`] and a naive `BTreeMap` model with the same random
//! operations and demands identical answers. The model is written differently from the memory engine
//! on purpose (`retain` for range deletes, no copy-on-write) so one bug cannot hide in both.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::{
    Cf, Engine, KvIter, KvPair, MemoryEngine, RocksConfig, RocksEngine, Snapshot, WriteBatch,
    WriteOp,
};

fn collect(iter: KvIter<'_>) -> Vec<KvPair> {
    iter.collect::<crate::Result<_>>().unwrap()
}

fn scan(engine: &dyn Engine, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Vec<KvPair> {
    collect(engine.scan(cf, start, end).unwrap())
}

fn kv(k: &[u8], v: &[u8]) -> KvPair {
    (k.to_vec(), v.to_vec())
}

/// Runs `story` against a fresh memory engine and a fresh RocksDB engine.
fn on_both_engines(story: impl Fn(&dyn Engine)) {
    story(&MemoryEngine::new());
    let dir = tempfile::tempdir().unwrap();
    story(&RocksEngine::open(dir.path(), &RocksConfig::for_test()).unwrap());
}

#[test]
fn column_families_are_separate_keyspaces() {
    on_both_engines(|engine| {
        let mut batch = WriteBatch::new();
        batch.put(Cf::Raft, "k", "raft");
        batch.put(Cf::Data, "k", "data");
        engine.write(&batch, true).unwrap();
        assert_eq!(engine.get(Cf::Raft, b"k").unwrap(), Some(b"raft".to_vec()));
        assert_eq!(engine.get(Cf::Data, b"k").unwrap(), Some(b"data".to_vec()));
        assert_eq!(engine.get(Cf::Meta, b"k").unwrap(), None);

        let mut batch = WriteBatch::new();
        batch.delete(Cf::Raft, "k");
        engine.write(&batch, false).unwrap();
        assert_eq!(
            engine.get(Cf::Raft, b"k").unwrap(),
            None,
            "{}",
            engine.kind()
        );
        assert_eq!(engine.get(Cf::Data, b"k").unwrap(), Some(b"data".to_vec()));
    });
}

#[test]
fn delete_range_removes_exactly_start_inclusive_to_end_exclusive() {
    on_both_engines(|engine| {
        let mut batch = WriteBatch::new();
        for k in ["a", "b", "c", "d"] {
            batch.put(Cf::Data, k, "v");
            batch.put(Cf::Meta, k, "v");
        }
        engine.write(&batch, false).unwrap();

        let mut batch = WriteBatch::new();
        batch.delete_range(Cf::Data, "b", "d");
        batch.delete_range(Cf::Meta, "d", "b"); // inverted: deletes nothing
        engine.write(&batch, false).unwrap();

        let keys = |cf| -> Vec<Vec<u8>> {
            let all = scan(engine, cf, b"", None);
            all.into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(keys(Cf::Data), [b"a".to_vec(), b"d".to_vec()]);
        assert_eq!(keys(Cf::Meta).len(), 4, "{}", engine.kind());
    });
}

#[test]
fn scans_honour_their_bounds() {
    on_both_engines(|engine| {
        let mut batch = WriteBatch::new();
        for k in [&b""[..], b"\x00", b"a", b"ab", b"b", b"\xff\xff"] {
            batch.put(Cf::Data, k, k);
        }
        engine.write(&batch, false).unwrap();

        let keys = |start: &[u8], end: Option<&[u8]>| -> Vec<Vec<u8>> {
            let found = scan(engine, Cf::Data, start, end);
            found.into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(keys(b"", None).len(), 6);
        assert_eq!(keys(b"a", Some(b"b")), [b"a".to_vec(), b"ab".to_vec()]);
        assert_eq!(
            keys(b"a\x00", Some(b"b\x00")),
            [b"ab".to_vec(), b"b".to_vec()]
        );
        assert_eq!(keys(b"", Some(b"\x00")), [Vec::<u8>::new()]);
        assert_eq!(keys(b"\xff", None), [b"\xff\xff".to_vec()]);
        assert!(keys(b"b", Some(b"b")).is_empty());
        assert!(keys(b"b", Some(b"a")).is_empty());
        assert!(scan(engine, Cf::Raft, b"", None).is_empty());
    });
}

#[test]
fn a_snapshot_sees_only_writes_that_completed_before_it() {
    on_both_engines(|engine| {
        let mut batch = WriteBatch::new();
        batch.put(Cf::Data, "x", "1");
        batch.put(Cf::Data, "y", "1");
        engine.write(&batch, true).unwrap();

        let snapshot = engine.snapshot();
        let mut batch = WriteBatch::new();
        batch.put(Cf::Data, "x", "2");
        batch.delete(Cf::Data, "y");
        batch.put(Cf::Data, "z", "2");
        batch.delete_range(Cf::Data, "", "y");
        engine.write(&batch, true).unwrap();

        assert_eq!(snapshot.get(Cf::Data, b"x").unwrap(), Some(b"1".to_vec()));
        let seen = collect(snapshot.scan(Cf::Data, b"", None).unwrap());
        assert_eq!(seen, [kv(b"x", b"1"), kv(b"y", b"1")], "{}", engine.kind());
        assert_eq!(scan(engine, Cf::Data, b"", None), [kv(b"z", b"2")]);
    });
}

#[test]
fn operations_in_a_batch_apply_in_order() {
    on_both_engines(|engine| {
        let mut batch = WriteBatch::new();
        batch.put(Cf::Raft, "a", "1");
        batch.delete_range(Cf::Raft, "a", "b");
        batch.put(Cf::Raft, "a", "2");
        batch.put(Cf::Raft, "c", "1");
        batch.delete(Cf::Raft, "c");
        engine.write(&batch, false).unwrap();
        assert_eq!(
            scan(engine, Cf::Raft, b"", None),
            [kv(b"a", b"2")],
            "{}",
            engine.kind()
        );
    });
}

#[test]
fn a_concurrent_reader_never_sees_half_a_batch() {
    on_both_engines(|engine| {
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0u32..300 {
                    let mut batch = WriteBatch::new();
                    let value = i.to_be_bytes();
                    batch.put(Cf::Raft, "applied", value);
                    batch.put(Cf::Data, "entity", value);
                    batch.put(Cf::Meta, "catalog", value);
                    engine.write(&batch, false).unwrap();
                }
            });
            for _ in 0..300 {
                let snapshot = engine.snapshot();
                let raft = snapshot.get(Cf::Raft, b"applied").unwrap();
                assert_eq!(snapshot.get(Cf::Data, b"entity").unwrap(), raft);
                assert_eq!(snapshot.get(Cf::Meta, b"catalog").unwrap(), raft);
            }
        });
    });
}

/// Every key is drawn from a tiny alphabet so operations collide often, including the empty key and
/// the bytes an encoder would find awkward (`0x00`, `0xFF`).
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![0x00u8, 0x01, 0x80, 0xFF]), 0..3)
}

fn cf() -> impl Strategy<Value = Cf> {
    prop::sample::select(Cf::ALL.to_vec())
}

fn write_op() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        4 => (cf(), key(), prop::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(cf, key, value)| WriteOp::Put { cf, key, value }),
        2 => (cf(), key()).prop_map(|(cf, key)| WriteOp::Delete { cf, key }),
        1 => (cf(), key(), key()).prop_map(|(cf, start, end)| WriteOp::DeleteRange { cf, start, end }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        ops: Vec<WriteOp>,
        sync: bool,
    },
    Get {
        cf: Cf,
        key: Vec<u8>,
    },
    Scan {
        cf: Cf,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
    /// Takes a snapshot of every engine and remembers the model as it is now.
    Snapshot,
    /// Scans snapshot `which` (modulo the number taken so far in this segment).
    SnapshotScan {
        which: usize,
        cf: Cf,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
    SnapshotGet {
        which: usize,
        cf: Cf,
        key: Vec<u8>,
    },
    /// RocksDB memtables to SSTs, so reads must merge SSTs, memtables and range tombstones.
    Flush,
    /// Closes and reopens RocksDB. A clean close loses nothing, synced or not.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(write_op(), 0..5), any::<bool>())
            .prop_map(|(ops, sync)| Op::Write { ops, sync }),
        2 => (cf(), key()).prop_map(|(cf, key)| Op::Get { cf, key }),
        2 => (cf(), key(), prop::option::of(key()))
            .prop_map(|(cf, start, end)| Op::Scan { cf, start, end }),
        1 => Just(Op::Snapshot),
        2 => (any::<usize>(), cf(), key(), prop::option::of(key()))
            .prop_map(|(which, cf, start, end)| Op::SnapshotScan { which, cf, start, end }),
        1 => (any::<usize>(), cf(), key())
            .prop_map(|(which, cf, key)| Op::SnapshotGet { which, cf, key }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

/// The reference: a plain map per column family, applied the obvious way.
#[derive(Debug, Clone, Default)]
struct Model(BTreeMap<Cf, BTreeMap<Vec<u8>, Vec<u8>>>);

impl Model {
    fn apply(&mut self, ops: &[WriteOp]) {
        for op in ops {
            match op {
                WriteOp::Put { cf, key, value } => {
                    self.0
                        .entry(*cf)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                WriteOp::Delete { cf, key } => {
                    self.0.entry(*cf).or_default().remove(key);
                }
                WriteOp::DeleteRange { cf, start, end } => {
                    let map = self.0.entry(*cf).or_default();
                    map.retain(|k, _| k < start || k >= end);
                }
            }
        }
    }

    fn get(&self, cf: Cf, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(&cf)?.get(key).cloned()
    }

    fn scan(&self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Vec<KvPair> {
        let Some(map) = self.0.get(&cf) else {
            return Vec::new();
        };
        map.iter()
            .filter(|(k, _)| k.as_slice() >= start && end.is_none_or(|end| k.as_slice() < end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn batch_of(ops: &[WriteOp]) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for op in ops.iter().cloned() {
        match op {
            WriteOp::Put { cf, key, value } => batch.put(cf, key, value),
            WriteOp::Delete { cf, key } => batch.delete(cf, key),
            WriteOp::DeleteRange { cf, start, end } => batch.delete_range(cf, start, end),
        }
    }
    batch
}

/// Checks that every column family of `view` holds exactly what `model` holds.
fn assert_same_contents(
    name: &str,
    view: impl Fn(Cf) -> Vec<KvPair>,
    model: &Model,
) -> Result<(), TestCaseError> {
    for cf in Cf::ALL {
        prop_assert_eq!(view(cf), model.scan(cf, b"", None), "{} {:?}", name, cf);
    }
    Ok(())
}

/// Runs `ops` against both engines and the model. `Reopen` splits the run into segments, because
/// RocksDB snapshots borrow the engine and so cannot outlive one opening of it.
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let memory = MemoryEngine::new();
    let mut model = Model::default();
    for segment in ops.split(|op| matches!(op, Op::Reopen)) {
        let rocks = RocksEngine::open(dir.path(), &RocksConfig::for_test()).unwrap();
        let engines: [&dyn Engine; 2] = [&memory, &rocks];
        for engine in engines {
            assert_same_contents(engine.kind(), |cf| scan(engine, cf, b"", None), &model)?;
        }
        let mut snapshots: Vec<(Model, Vec<Box<dyn Snapshot + '_>>)> = Vec::new();
        for op in segment {
            match op {
                Op::Write { ops, sync } => {
                    let batch = batch_of(ops);
                    for engine in engines {
                        engine.write(&batch, *sync).unwrap();
                    }
                    model.apply(ops);
                }
                Op::Get { cf, key } => {
                    for engine in engines {
                        let got = engine.get(*cf, key).unwrap();
                        prop_assert_eq!(got, model.get(*cf, key), "{}", engine.kind());
                    }
                }
                Op::Scan { cf, start, end } => {
                    for engine in engines {
                        let got = scan(engine, *cf, start, end.as_deref());
                        let want = model.scan(*cf, start, end.as_deref());
                        prop_assert_eq!(got, want, "{}", engine.kind());
                    }
                }
                Op::Snapshot => {
                    snapshots.push((model.clone(), engines.map(|e| e.snapshot()).into()));
                }
                Op::SnapshotScan {
                    which,
                    cf,
                    start,
                    end,
                } if !snapshots.is_empty() => {
                    let (then, views) = &snapshots[which % snapshots.len()];
                    for (view, engine) in views.iter().zip(engines) {
                        let got = collect(view.scan(*cf, start, end.as_deref()).unwrap());
                        let want = then.scan(*cf, start, end.as_deref());
                        prop_assert_eq!(got, want, "{} snapshot", engine.kind());
                    }
                }
                Op::SnapshotGet { which, cf, key } if !snapshots.is_empty() => {
                    let (then, views) = &snapshots[which % snapshots.len()];
                    for (view, engine) in views.iter().zip(engines) {
                        let got = view.get(*cf, key).unwrap();
                        prop_assert_eq!(got, then.get(*cf, key), "{} snapshot", engine.kind());
                    }
                }
                Op::SnapshotScan { .. } | Op::SnapshotGet { .. } => {}
                Op::Flush => rocks.flush().unwrap(),
                Op::Reopen => unreachable!("segments are split at Reopen"),
            }
        }
        for (then, views) in &snapshots {
            for (view, engine) in views.iter().zip(engines) {
                let name = format!("{} snapshot", engine.kind());
                let contents = |cf| collect(view.scan(cf, b"", None).unwrap());
                assert_same_contents(&name, contents, then)?;
            }
        }
    }
    Ok(())
}

/// Writes and crashes against the memory engine, with the model tracking what was synced.
fn run_crashes(steps: &[(Vec<WriteOp>, bool, Option<usize>)]) -> Result<(), TestCaseError> {
    let mut engine = MemoryEngine::new();
    let mut durable = Model::default();
    let mut unsynced: Vec<Vec<WriteOp>> = Vec::new();
    let mut live = Model::default();
    for (ops, sync, crash) in steps {
        engine.write(&batch_of(ops), *sync).unwrap();
        live.apply(ops);
        if !ops.is_empty() {
            unsynced.push(ops.clone());
        }
        if *sync {
            for batch in unsynced.drain(..) {
                durable.apply(&batch);
            }
        }
        prop_assert_eq!(engine.unsynced_batches(), unsynced.len());
        if let Some(keep) = crash {
            let keep = keep % (unsynced.len() + 1);
            engine = engine.crash_copy_keeping(keep);
            for batch in unsynced.drain(..keep) {
                durable.apply(&batch);
            }
            unsynced.clear();
            live = durable.clone();
        }
        assert_same_contents("memory", |cf| scan(&engine, cf, b"", None), &live)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn both_engines_agree_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops)?;
    }

    #[test]
    fn a_crash_keeps_exactly_the_synced_writes_and_an_unsynced_prefix(
        steps in prop::collection::vec(
            (prop::collection::vec(write_op(), 0..4), any::<bool>(), prop::option::weighted(0.2, any::<usize>())),
            1..40,
        ),
    ) {
        run_crashes(&steps)?;
    }
}
