//! The table state machine against a model: random sequences of writes and batches, applied both to a
//! `BTreeMap` of (PartitionKey, RowKey) → (timestamp, properties) with the semantics written out
//! independently, and to the state machine on a memory engine; every result and the final contents
//! must agree.

use std::collections::BTreeMap;

use proptest::prelude::*;
use trestle_engine::keys;
use trestle_types::{DateTime, ETag, ErrorCode, IfMatch, Value, WriteKind, WriteOp};

use super::tests::{Replica, etag, op};

/// The model: (pk, rk) → (timestamp, properties), with the semantics written out independently.
type Model = BTreeMap<(String, String), (i64, BTreeMap<String, Value>)>;

fn model_op(model: &mut Model, op: &WriteOp, ts: i64) -> Result<Option<i64>, ErrorCode> {
    let key = (op.entity.partition_key.clone(), op.entity.row_key.clone());
    let stored = model.get(&key).cloned();
    let needs_existing = matches!(
        op.kind,
        WriteKind::Replace | WriteKind::Merge | WriteKind::Delete
    );
    match (&stored, op.kind) {
        (Some(_), WriteKind::Insert) => return Err(ErrorCode::EntityAlreadyExists),
        (None, _) if needs_existing => return Err(ErrorCode::ResourceNotFound),
        (Some((t, _)), _) if needs_existing => {
            if matches!(op.if_match, IfMatch::ETag(ETag(DateTime(want))) if want != *t) {
                return Err(ErrorCode::UpdateConditionNotSatisfied);
            }
        }
        _ => {}
    }
    if op.kind == WriteKind::Delete {
        model.remove(&key);
        return Ok(None);
    }
    let new_ts = stored.as_ref().map_or(ts, |(t, _)| ts.max(t + 1));
    let mut props = match (&stored, op.kind) {
        (Some((_, p)), WriteKind::Merge | WriteKind::InsertOrMerge) => p.clone(),
        _ => BTreeMap::new(),
    };
    props.extend(op.entity.properties.clone());
    model.insert(key, (new_ts, props));
    Ok(Some(new_ts))
}

/// A generated operation; the condition is resolved against the model when the op runs.
#[derive(Debug, Clone)]
struct GenOp {
    kind: WriteKind,
    rk: u8,
    props: BTreeMap<String, i32>,
    /// 0: none, 1: `*`, 2: the current ETag, 3: a stale ETag.
    cond: u8,
}

fn gen_op() -> impl Strategy<Value = GenOp> {
    let kind = prop_oneof![
        Just(WriteKind::Insert),
        Just(WriteKind::Replace),
        Just(WriteKind::Merge),
        Just(WriteKind::InsertOrReplace),
        Just(WriteKind::InsertOrMerge),
        Just(WriteKind::Delete),
    ];
    let props = proptest::collection::btree_map("[abc]", 0..3i32, 0..3);
    (kind, 0u8..4, props, 0u8..4).prop_map(|(kind, rk, props, cond)| GenOp {
        kind,
        rk,
        props,
        cond,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_state_machine_matches_a_map_model(
        steps in proptest::collection::vec((0u8..2, proptest::collection::vec(gen_op(), 1..4), -3i64..10), 1..40),
    ) {
        let mut replica = Replica::new();
        let mut model = Model::new();
        let mut clock = 100;
        for (pk, gen_ops, dt) in steps {
            clock += dt;
            let pk = ["a", "b"][pk as usize];
            let mut seen = std::collections::HashSet::new();
            let ops: Vec<WriteOp> = gen_ops.iter().filter(|g| seen.insert(g.rk)).map(|g| {
                let rk = g.rk.to_string();
                let current = model.get(&(pk.to_string(), rk.clone())).map_or(1, |(t, _)| *t);
                let if_match = match g.cond { 0 => IfMatch::None, 1 => IfMatch::Any, 2 => etag(current), _ => etag(current - 1) };
                let props: Vec<(&str, Value)> = g.props.iter().map(|(n, v)| (n.as_str(), Value::Int32(*v))).collect();
                op(g.kind, pk, &rk, &props, if_match)
            }).collect();
            let mut next = model.clone();
            let expected: Result<Vec<Option<i64>>, (usize, ErrorCode)> = ops
                .iter()
                .enumerate()
                .map(|(i, o)| model_op(&mut next, o, clock).map_err(|c| (i, c)))
                .collect();
            let actual = replica.run(clock, &ops);
            match (expected, actual) {
                (Ok(etags), Ok(outcomes)) => {
                    let got: Vec<Option<i64>> = outcomes.iter().map(|o| o.etag.map(|e| e.0.0)).collect();
                    prop_assert_eq!(got, etags);
                    model = next;
                }
                (Err((i, code)), Err(e)) => prop_assert_eq!((Some(i), code), (e.index, e.error.code)),
                (e, a) => prop_assert!(false, "model {:?} vs state machine {:?}", e, a),
            }
        }
        let stored: Model = replica
            .data()
            .into_iter()
            .map(|(k, v)| {
                let (_, pk, rk) = keys::decode_data_key(&k).unwrap();
                let e = crate::codec::decode_entity(&pk, &rk, &v).unwrap();
                ((pk, rk), (e.timestamp.unwrap().0, e.properties))
            })
            .collect();
        prop_assert_eq!(stored, model);
    }
}
