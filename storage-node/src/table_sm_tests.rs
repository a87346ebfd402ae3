//! Tests of the table state machine, driven directly on a memory engine: each command is applied at the
//! next index and its batch written, as the driver would.

use std::collections::BTreeMap;

use prost::Message;
use trestle_engine::{Cf, Engine, MemoryEngine, WriteBatch, keys};
use trestle_proto::internal::{TableCommand, command_result::Kind};
use trestle_proto::table as pb;
use trestle_replication::StateMachine;
use trestle_types::{
    BatchError, DateTime, ETag, Entity, ErrorCode, IfMatch, Value, WriteKind, WriteOp, WriteOutcome,
};

use super::*;
use crate::commands::{decode_result, outcomes, write_op_to_proto};
use crate::query;
use crate::ranges::RangeMap;

/// The id of the first table the catalog creates.
const TABLE: u64 = 0x9E37_79B9_7F4A_7C15;

/// One replica of a data range: an engine and the range's state machine.
pub(crate) struct Replica {
    pub engine: MemoryEngine,
    sm: TableStateMachine,
    index: u64,
}

impl Replica {
    pub fn new() -> Self {
        Replica::of(&RangeMap::initial(1, vec![1]).data_ranges()[0])
    }

    fn of(range: &RangeDesc) -> Self {
        Replica {
            engine: MemoryEngine::new(),
            sm: TableStateMachine::new(range),
            index: 0,
        }
    }

    /// Splits this replica at `key` as the split entry would: the state machine copies its records,
    /// this replica keeps the left half, and the right half's state machine runs on the same engine.
    fn split(&mut self, key: Vec<u8>) -> TableStateMachine {
        let mut right = self.sm.range.clone();
        right.id += 100;
        right.start = key.clone();
        right.epoch.version += 1;
        let mut left = self.sm.range.clone();
        left.end = Some(key);
        left.epoch.version += 1;
        let mut batch = WriteBatch::new();
        self.sm
            .on_split(&self.engine, &mut batch, &right.span())
            .unwrap();
        self.engine.write(&batch, false).unwrap();
        self.sm.on_desc_changed(&left.group_desc());
        TableStateMachine::new(&right)
    }

    fn try_apply(&mut self, command: &[u8]) -> Result<Vec<u8>, ApplyError> {
        self.index += 1;
        let mut batch = WriteBatch::new();
        let out = self
            .sm
            .apply(&self.engine, &mut batch, self.index, command)?;
        self.engine.write(&batch, false).unwrap();
        Ok(out)
    }

    fn command(&mut self, cmd: &TableCommand) -> Result<Kind, BatchError> {
        decode_result(&self.try_apply(&cmd.encode_to_vec()).unwrap())
    }

    pub fn run(&mut self, ts: i64, ops: &[WriteOp]) -> Result<Vec<WriteOutcome>, BatchError> {
        let cmd = TableCommand {
            table_id: TABLE,
            timestamp_ticks: ts,
            ops: ops.iter().map(write_op_to_proto).collect(),
            ..TableCommand::default()
        };
        match self.command(&cmd)? {
            Kind::Writes(w) => Ok(outcomes(w).unwrap()),
            other => panic!("unexpected result {other:?}"),
        }
    }

    pub fn must(&mut self, ts: i64, op: WriteOp) -> WriteOutcome {
        self.run(ts, &[op]).unwrap().pop().unwrap()
    }

    fn fails(&mut self, ts: i64, op: WriteOp) -> ErrorCode {
        self.run(ts, &[op]).unwrap_err().error.code
    }

    pub fn get(&self, pk: &str, rk: &str) -> Option<Entity> {
        query::get_entity(&self.engine as &dyn Engine, TABLE, pk, rk).unwrap()
    }

    pub fn data(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.engine
            .scan(Cf::Data, &[], None)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

pub(crate) fn op(
    kind: WriteKind,
    pk: &str,
    rk: &str,
    props: &[(&str, Value)],
    if_match: IfMatch,
) -> WriteOp {
    let mut entity = Entity::new(pk, rk);
    for (name, value) in props {
        entity.properties.insert(name.to_string(), value.clone());
    }
    WriteOp {
        kind,
        entity,
        if_match,
    }
}

fn insert(pk: &str, rk: &str, props: &[(&str, Value)]) -> WriteOp {
    op(WriteKind::Insert, pk, rk, props, IfMatch::None)
}

pub(crate) fn etag(ticks: i64) -> IfMatch {
    IfMatch::ETag(ETag(DateTime(ticks)))
}

#[test]
fn insert_stores_the_entity_with_the_command_timestamp() {
    let mut r = Replica::new();
    let out = r.must(100, insert("p", "r", &[("a", Value::Int32(1))]));
    assert_eq!(out.etag, Some(ETag(DateTime(100))));
    let stored = r.get("p", "r").unwrap();
    assert_eq!(stored.timestamp, Some(DateTime(100)));
    assert_eq!(stored.properties["a"], Value::Int32(1));
    assert_eq!(out.entity, Some(stored));
    assert_eq!(
        r.fails(200, insert("p", "r", &[])),
        ErrorCode::EntityAlreadyExists
    );
    assert_eq!(r.get("p", "r").unwrap().timestamp, Some(DateTime(100)));
}

#[test]
fn updates_of_an_absent_entity_are_resource_not_found() {
    let mut r = Replica::new();
    for kind in [WriteKind::Replace, WriteKind::Merge, WriteKind::Delete] {
        for cond in [IfMatch::None, IfMatch::Any, etag(5)] {
            assert_eq!(
                r.fails(10, op(kind, "p", "r", &[], cond)),
                ErrorCode::ResourceNotFound,
                "{kind:?} {cond:?}"
            );
        }
    }
    assert!(r.data().is_empty());
}

#[test]
fn if_match_is_checked_against_the_stored_etag() {
    let mut r = Replica::new();
    r.must(100, insert("p", "r", &[("a", Value::Int32(1))]));
    for kind in [WriteKind::Replace, WriteKind::Merge, WriteKind::Delete] {
        assert_eq!(
            r.fails(200, op(kind, "p", "r", &[], etag(99))),
            ErrorCode::UpdateConditionNotSatisfied
        );
    }
    let out = r.must(
        200,
        op(
            WriteKind::Replace,
            "p",
            "r",
            &[("b", Value::Int32(2))],
            etag(100),
        ),
    );
    assert_eq!(out.etag, Some(ETag(DateTime(200))));
    let out = r.must(
        300,
        op(
            WriteKind::Merge,
            "p",
            "r",
            &[("c", Value::Int32(3))],
            IfMatch::Any,
        ),
    );
    assert_eq!(out.etag, Some(ETag(DateTime(300))));
    let out = r.must(400, op(WriteKind::Delete, "p", "r", &[], etag(300)));
    assert_eq!(
        out,
        WriteOutcome {
            etag: None,
            entity: None
        }
    );
    assert_eq!(r.get("p", "r"), None);
}

#[test]
fn merge_overlays_and_replace_discards_stored_properties() {
    let mut r = Replica::new();
    let (one, two) = (Value::Int32(1), Value::Int32(2));
    r.must(
        10,
        insert("p", "r", &[("a", one.clone()), ("b", two.clone())]),
    );
    r.must(
        20,
        op(
            WriteKind::Merge,
            "p",
            "r",
            &[("b", Value::Int64(3)), ("c", Value::Int32(4))],
            IfMatch::None,
        ),
    );
    let merged = r.get("p", "r").unwrap().properties;
    assert_eq!(
        merged,
        BTreeMap::from([
            ("a".into(), one),
            ("b".into(), Value::Int64(3)),
            ("c".into(), Value::Int32(4))
        ])
    );
    r.must(
        30,
        op(
            WriteKind::Replace,
            "p",
            "r",
            &[("z", two.clone())],
            IfMatch::None,
        ),
    );
    assert_eq!(
        r.get("p", "r").unwrap().properties,
        BTreeMap::from([("z".into(), two)])
    );
}

#[test]
fn upserts_create_or_overwrite_without_conditions() {
    let mut r = Replica::new();
    r.must(
        10,
        op(
            WriteKind::InsertOrMerge,
            "p",
            "m",
            &[("a", Value::Int32(1))],
            IfMatch::None,
        ),
    );
    r.must(
        20,
        op(
            WriteKind::InsertOrMerge,
            "p",
            "m",
            &[("b", Value::Int32(2))],
            IfMatch::None,
        ),
    );
    assert_eq!(r.get("p", "m").unwrap().properties.len(), 2);
    r.must(
        10,
        op(
            WriteKind::InsertOrReplace,
            "p",
            "x",
            &[("a", Value::Int32(1))],
            IfMatch::None,
        ),
    );
    r.must(
        20,
        op(
            WriteKind::InsertOrReplace,
            "p",
            "x",
            &[("b", Value::Int32(2))],
            IfMatch::None,
        ),
    );
    let x = r.get("p", "x").unwrap();
    assert_eq!(x.properties.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(x.timestamp, Some(DateTime(20)));
}

#[test]
fn the_etag_changes_even_when_the_leader_clock_goes_back() {
    let mut r = Replica::new();
    r.must(1_000, insert("p", "r", &[]));
    let slow = r.must(
        500,
        op(WriteKind::InsertOrReplace, "p", "r", &[], IfMatch::None),
    );
    assert_eq!(slow.etag, Some(ETag(DateTime(1_001))));
    let again = r.must(1_001, op(WriteKind::Merge, "p", "r", &[], IfMatch::Any));
    assert_eq!(again.etag, Some(ETag(DateTime(1_002))));
    // A fresh entity takes the command's timestamp as is.
    assert_eq!(
        r.must(7, insert("p", "other", &[])).etag,
        Some(ETag(DateTime(7)))
    );
}

#[test]
fn a_failing_fifth_operation_leaves_nothing_written() {
    let mut r = Replica::new();
    r.must(10, insert("p", "4", &[("old", Value::Boolean(true))]));
    let before = r.data();
    let ops: Vec<WriteOp> = (0..5)
        .map(|i| insert("p", &i.to_string(), &[("n", Value::Int32(i))]))
        .collect();
    let err = r.run(20, &ops).unwrap_err();
    assert_eq!(
        (err.index, err.error.code),
        (Some(4), ErrorCode::EntityAlreadyExists)
    );
    assert_eq!(r.data(), before);
    // The same batch without the conflict applies whole, every entity with the batch's timestamp.
    let out = r.run(30, &ops[..4]).unwrap();
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|o| o.etag == Some(ETag(DateTime(30)))));
}

#[test]
fn batch_rules_are_enforced_at_apply() {
    let mut r = Replica::new();
    let mixed = [insert("p", "1", &[]), insert("q", "2", &[])];
    let err = r.run(1, &mixed).unwrap_err();
    assert_eq!(
        (err.index, err.error.code),
        (Some(1), ErrorCode::CommandsInBatchActOnDifferentPartitions)
    );
    let dup = [
        insert("p", "1", &[]),
        op(WriteKind::Delete, "p", "2", &[], IfMatch::None),
        insert("p", "1", &[]),
    ];
    let err = r.run(1, &dup).unwrap_err();
    assert_eq!(
        (err.index, err.error.code),
        (Some(2), ErrorCode::InvalidDuplicateRow)
    );
    let many: Vec<WriteOp> = (0..101).map(|i| insert("p", &i.to_string(), &[])).collect();
    let err = r.run(1, &many).unwrap_err();
    assert_eq!((err.index, err.error.code), (None, ErrorCode::InvalidInput));
    assert!(
        err.error
            .message
            .starts_with("99:The batch request operation exceeds"),
        "{}",
        err.error.message
    );
    assert!(r.run(1, &many[..100]).is_ok());
}

#[test]
fn a_merge_that_outgrows_the_limits_fails() {
    let mut r = Replica::new();
    let first: Vec<(String, Value)> = (0..200)
        .map(|i| (format!("a{i}"), Value::Int32(i)))
        .collect();
    let more: Vec<(String, Value)> = (0..60)
        .map(|i| (format!("b{i}"), Value::Int32(i)))
        .collect();
    let as_refs = |v: &[(String, Value)]| {
        v.iter()
            .map(|(n, x)| (n.clone(), x.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut base = insert("p", "r", &[]);
    base.entity.properties = as_refs(&first);
    r.must(1, base);
    let mut merge = op(WriteKind::Merge, "p", "r", &[], IfMatch::Any);
    merge.entity.properties = as_refs(&more);
    assert_eq!(r.fails(2, merge), ErrorCode::TooManyProperties);
    assert_eq!(r.get("p", "r").unwrap().properties.len(), 200);
}

#[test]
fn drop_table_removes_only_that_table_and_fences_late_writes() {
    let mut r = Replica::new();
    r.must(1, insert("p", "r", &[]));
    r.must(1, insert("pp", "r", &[]));
    let other = TableCommand {
        table_id: TABLE + 1,
        timestamp_ticks: 1,
        ops: vec![write_op_to_proto(&insert("p", "r", &[]))],
        ..TableCommand::default()
    };
    assert!(matches!(r.command(&other), Ok(Kind::Writes(_))));
    let drop = TableCommand {
        table_id: TABLE,
        drop_table: true,
        ..TableCommand::default()
    };
    assert_eq!(r.command(&drop), Ok(Kind::Done(true)));
    let keys: Vec<Vec<u8>> = r.data().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            keys::dropped_table_marker(TABLE),
            keys::data_key(TABLE + 1, "p", "r")
        ]
    );
    assert_eq!(r.fails(2, insert("p", "r", &[])), ErrorCode::TableNotFound);
    // Dropping twice is harmless.
    assert_eq!(r.command(&drop), Ok(Kind::Done(true)));
}

#[test]
fn the_last_table_id_can_be_dropped() {
    let mut r = Replica::new();
    let insert_cmd = TableCommand {
        table_id: u64::MAX,
        timestamp_ticks: 1,
        ops: vec![write_op_to_proto(&insert("\u{10FFFF}", "\u{10FFFF}", &[]))],
        ..TableCommand::default()
    };
    assert!(matches!(r.command(&insert_cmd), Ok(Kind::Writes(_))));
    let drop = TableCommand {
        table_id: u64::MAX,
        drop_table: true,
        ..TableCommand::default()
    };
    assert_eq!(r.command(&drop), Ok(Kind::Done(true)));
    assert_eq!(r.data().len(), 1, "only the marker is left");
}

#[test]
fn misrouted_fenced_and_garbage_commands_are_results() {
    let map = RangeMap::initial(4, vec![1]);
    let mut first = Replica::of(&map.data_ranges()[0]);
    let misrouted = TableCommand {
        table_id: u64::MAX,
        ops: vec![write_op_to_proto(&insert("p", "r", &[]))],
        ..TableCommand::default()
    };
    assert_eq!(
        first.command(&misrouted).unwrap_err().error.code,
        ErrorCode::RangeStale
    );
    let garbage = first.try_apply(b"\xff\xff\xff").unwrap();
    assert_eq!(
        decode_result(&garbage).unwrap_err().error.code,
        ErrorCode::InternalError
    );
    let bad_kind = TableCommand {
        table_id: 1,
        ops: vec![pb::WriteOp {
            kind: 42,
            entity: Some(pb::Entity::default()),
            if_match: None,
        }],
        ..TableCommand::default()
    };
    let err = first.command(&bad_kind).unwrap_err();
    assert_eq!(
        (err.index, err.error.code),
        (Some(0), ErrorCode::InvalidInput)
    );
    assert!(first.data().is_empty());
}

#[test]
fn a_corrupt_stored_entity_stops_the_replica() {
    let mut r = Replica::new();
    r.must(1, insert("p", "r", &[("a", Value::Int32(1))]));
    let key = keys::data_key(TABLE, "p", "r");
    let mut bytes = r.engine.get(Cf::Data, &key).unwrap().unwrap();
    *bytes.last_mut().unwrap() ^= 0x40;
    let mut corrupt = WriteBatch::new();
    corrupt.put(Cf::Data, key, bytes);
    r.engine.write(&corrupt, false).unwrap();
    let before = r.data();
    let cmd = TableCommand {
        table_id: TABLE,
        timestamp_ticks: 2,
        ops: vec![write_op_to_proto(&op(
            WriteKind::Merge,
            "p",
            "r",
            &[],
            IfMatch::Any,
        ))],
        ..TableCommand::default()
    };
    let err = r.try_apply(&cmd.encode_to_vec()).unwrap_err();
    assert!(err.0.contains("DataCorrupted"), "{err}");
    assert_eq!(r.data(), before);
    // An insert elsewhere in the range does not touch the corrupt entity and still applies.
    r.must(3, insert("p", "other", &[]));
}

#[test]
fn two_replicas_applying_the_same_commands_hold_identical_bytes() {
    let (mut a, mut b) = (Replica::new(), Replica::new());
    let script = [
        (
            5,
            vec![
                insert("p", "1", &[("x", Value::Double(1.5))]),
                insert("p", "2", &[]),
            ],
        ),
        (
            3,
            vec![op(
                WriteKind::Merge,
                "p",
                "1",
                &[("y", Value::String("s".into()))],
                IfMatch::Any,
            )],
        ),
        (9, vec![insert("p", "1", &[])]),
        (9, vec![op(WriteKind::Delete, "p", "2", &[], IfMatch::None)]),
        (
            11,
            vec![op(
                WriteKind::InsertOrReplace,
                "q",
                "1",
                &[("g", Value::Guid(uuid::Uuid::nil()))],
                IfMatch::None,
            )],
        ),
    ];
    for (ts, ops) in &script {
        assert_eq!(a.run(*ts, ops), b.run(*ts, ops));
    }
    assert_eq!(a.data(), b.data());
    assert_eq!(a.data().len(), 2);
}

#[test]
fn fenced_writes_below_the_highest_token_seen_are_refused_and_change_nothing() {
    let mut r = Replica::new();
    let fenced = |rk: &str, token: u64| TableCommand {
        table_id: TABLE,
        ops: vec![write_op_to_proto(&insert("p", rk, &[]))],
        fencing: Some(pb::Fencing {
            lock: "acct/l".into(),
            token,
        }),
        ..TableCommand::default()
    };
    r.command(&fenced("a", 5)).unwrap();
    // The same holder writes again with its token; a newer holder with a higher one.
    r.command(&fenced("b", 5)).unwrap();
    r.command(&fenced("c", 9)).unwrap();
    let stale = r.command(&fenced("d", 5)).unwrap_err();
    assert_eq!(stale.error.code, ErrorCode::FencingTokenStale);
    assert_eq!(stale.index, None);
    // Nothing of the refused write landed, and the fence is not an entity.
    let keys: Vec<String> = r
        .data()
        .into_iter()
        .filter_map(|(k, _)| keys::decode_data_key(&k).map(|(_, _, rk)| rk))
        .collect();
    assert_eq!(keys, ["a", "b", "c"]);
    // Other locks and unfenced writes are not affected.
    let other = TableCommand {
        fencing: Some(pb::Fencing {
            lock: "acct/other".into(),
            token: 1,
        }),
        ..fenced("e", 0)
    };
    r.command(&other).unwrap();
    let unfenced = TableCommand {
        fencing: None,
        ..fenced("f", 0)
    };
    r.command(&unfenced).unwrap();
}

#[test]
fn a_split_hands_the_right_half_the_tables_fences_and_drop_marker() {
    let mut r = Replica::new();
    let fenced = |pk: &str, token: u64| TableCommand {
        table_id: TABLE,
        ops: vec![write_op_to_proto(&insert(pk, "r", &[]))],
        fencing: Some(pb::Fencing {
            lock: "acct/l".into(),
            token,
        }),
        ..TableCommand::default()
    };
    r.command(&fenced("a", 7)).unwrap();
    r.command(&fenced("z", 7)).unwrap();
    let mut right = r.split(keys::partition_prefix(TABLE, "m"));
    let mut on_right = |cmd: &TableCommand| {
        let mut batch = WriteBatch::new();
        let out = right
            .apply(&r.engine, &mut batch, 99, &cmd.encode_to_vec())
            .unwrap();
        r.engine.write(&batch, false).unwrap();
        decode_result(&out)
    };
    // The right half refuses a token below the one its parent saw, and takes a higher one.
    let stale = on_right(&fenced("z", 6)).unwrap_err();
    assert_eq!(stale.error.code, ErrorCode::FencingTokenStale);
    on_right(&fenced("y", 8)).unwrap();
    // Keys on the other side of the cut are refused as stale routing, by either half.
    assert_eq!(
        on_right(&fenced("b", 9)).unwrap_err().error.code,
        ErrorCode::RangeStale
    );
    assert_eq!(
        r.command(&fenced("y", 9)).unwrap_err().error.code,
        ErrorCode::RangeStale
    );
    // The records are never entities: a query over the whole table sees exactly the three rows.
    let page = query::query_page(&*r.engine.snapshot(), TABLE, &Default::default()).unwrap();
    let keys: Vec<&str> = page
        .entities
        .iter()
        .map(|e| e.partition_key.as_str())
        .collect();
    assert_eq!(keys, ["a", "y", "z"]);

    // A drop before a split is remembered by both halves: late writes to either are refused.
    let mut r = Replica::new();
    r.must(1, insert("a", "r", &[]));
    let drop = TableCommand {
        table_id: TABLE,
        drop_table: true,
        ..TableCommand::default()
    };
    assert_eq!(r.command(&drop), Ok(Kind::Done(true)));
    let mut right = r.split(keys::partition_prefix(TABLE, "m"));
    let mut batch = WriteBatch::new();
    let late = TableCommand {
        table_id: TABLE,
        ops: vec![write_op_to_proto(&insert("x", "r", &[]))],
        ..TableCommand::default()
    };
    let out = right
        .apply(&r.engine, &mut batch, 99, &late.encode_to_vec())
        .unwrap();
    assert_eq!(
        decode_result(&out).unwrap_err().error.code,
        ErrorCode::TableNotFound
    );
    assert_eq!(r.fails(2, insert("b", "r", &[])), ErrorCode::TableNotFound);
}

#[test]
fn a_merge_folds_the_sources_fences_and_drop_marker_into_the_target() {
    let mut r = Replica::new();
    let fenced = |pk: &str, lock: &str, token: u64| TableCommand {
        table_id: TABLE,
        ops: vec![write_op_to_proto(&insert(pk, "r", &[]))],
        fencing: Some(pb::Fencing {
            lock: lock.into(),
            token,
        }),
        ..TableCommand::default()
    };
    let whole = r.sm.range.clone();
    let cut = keys::partition_prefix(TABLE, "m");
    let mut right = r.split(cut.clone());
    let on_right = |right: &mut TableStateMachine, r: &Replica, cmd: &TableCommand| {
        let mut batch = WriteBatch::new();
        let out = right
            .apply(&r.engine, &mut batch, 99, &cmd.encode_to_vec())
            .unwrap();
        r.engine.write(&batch, false).unwrap();
        decode_result(&out)
    };
    // Lock l1 went higher on the right, l2 on the left; l3 only ever reached the right.
    r.command(&fenced("a", "acct/l1", 3)).unwrap();
    on_right(&mut right, &r, &fenced("x", "acct/l1", 9)).unwrap();
    r.command(&fenced("b", "acct/l2", 8)).unwrap();
    on_right(&mut right, &r, &fenced("y", "acct/l2", 4)).unwrap();
    on_right(&mut right, &r, &fenced("z", "acct/l3", 5)).unwrap();

    let mut batch = WriteBatch::new();
    let source = right.range.clone();
    r.sm.on_merge(&r.engine, &mut batch, &source.span())
        .unwrap();
    r.engine.write(&batch, false).unwrap();
    let mut merged = whole.clone();
    merged.epoch.version += 2;
    r.sm.on_desc_changed(&merged.group_desc());
    // No record is left at the old cut, and the merged range holds the higher fence of each lock.
    assert!(
        r.data()
            .iter()
            .all(|(k, _)| !k.starts_with(&keys::anchored_fence_prefix(&cut))),
        "the source's fences are folded, not left behind"
    );
    for (pk, lock, refused, taken) in [
        ("q1", "acct/l1", 8, 9),
        ("q2", "acct/l2", 7, 8),
        ("q3", "acct/l3", 4, 5),
    ] {
        let code = r
            .command(&fenced(pk, lock, refused))
            .unwrap_err()
            .error
            .code;
        assert_eq!(code, ErrorCode::FencingTokenStale, "{lock}");
        r.command(&fenced(pk, lock, taken)).unwrap();
    }
    let page = query::query_page(&*r.engine.snapshot(), TABLE, &Default::default()).unwrap();
    let pks: Vec<&str> = page
        .entities
        .iter()
        .map(|e| e.partition_key.as_str())
        .collect();
    assert_eq!(pks, ["a", "b", "q1", "q2", "q3", "x", "y", "z"]);

    // A drop one side applied before the merge holds for the whole merged range.
    let mut r = Replica::new();
    r.must(1, insert("a", "r", &[]));
    let mut right = r.split(cut.clone());
    let drop = TableCommand {
        table_id: TABLE,
        drop_table: true,
        ..TableCommand::default()
    };
    assert_eq!(on_right(&mut right, &r, &drop), Ok(Kind::Done(true)));
    let mut batch = WriteBatch::new();
    let source = right.range.clone();
    r.sm.on_merge(&r.engine, &mut batch, &source.span())
        .unwrap();
    r.engine.write(&batch, false).unwrap();
    r.sm.on_desc_changed(&whole.group_desc());
    assert_eq!(r.fails(2, insert("b", "r", &[])), ErrorCode::TableNotFound);
    assert_eq!(r.fails(2, insert("x", "r", &[])), ErrorCode::TableNotFound);
}
