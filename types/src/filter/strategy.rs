//! Proptest strategies for filters and entities, shared by the module's property tests.
//!
//! [`arb_filter`] builds any tree [`Filter::parse`] could return (small enough, property names that are
//! identifiers but not keywords, values Azure can express, no NaN since NaN != NaN); [`arb_key_filter`]
//! and [`arb_key_entity`] draw keys from a tiny alphabet so that random filters and random entities
//! actually meet, which is what makes the key-bounds property test bite.

use proptest::prelude::*;
use uuid::Uuid;

use super::{CompareOp, Filter, MAX_FILTER_DEPTH, Operand};
use crate::entity::{Entity, limits};
use crate::value::{DateTime, Value};

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "true", "false",
];

fn arb_property_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["PartitionKey", "RowKey", "Timestamp"]).prop_map(String::from),
        "[A-Za-z_][A-Za-z0-9_]{0,8}",
        "\\p{L}[\\p{L}\\p{Nd}_]{0,5}",
    ]
    .prop_filter("keywords are not property names", |name| {
        !KEYWORDS.iter().any(|k| name.eq_ignore_ascii_case(k)) && name != "NaN" && name != "INF"
    })
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        any::<i32>().prop_map(Value::Int32),
        any::<i64>().prop_map(Value::Int64),
        any::<f64>()
            .prop_filter("NaN != NaN", |d| !d.is_nan())
            .prop_map(Value::Double),
        prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(-0.0)]
            .prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        (DateTime::MIN.0..=DateTime::MAX.0).prop_map(|t| Value::DateTime(DateTime(t))),
        any::<u128>().prop_map(|g| Value::Guid(Uuid::from_u128(g))),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::Binary),
    ]
}

fn arb_operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        arb_property_name().prop_map(Operand::Property),
        arb_value().prop_map(Operand::Literal),
    ]
}

/// What may stand alone as a boolean: a property, or a Boolean literal (never `1` or `'x'`).
fn arb_bare_operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        arb_property_name().prop_map(Operand::Property),
        any::<bool>().prop_map(|b| Operand::Literal(Value::Boolean(b))),
    ]
}

fn arb_op() -> impl Strategy<Value = CompareOp> {
    prop::sample::select(vec![
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ])
}

/// Combines leaves with `and`, `or` and `not`, keeping within the parser's limits.
fn combine(leaf: impl Strategy<Value = Filter> + 'static) -> impl Strategy<Value = Filter> {
    leaf.prop_recursive(6, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Filter::And(Box::new(l), Box::new(r))),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Filter::Or(Box::new(l), Box::new(r))),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
    .prop_filter("within the comparison limit", |f| {
        f.comparison_count() <= limits::MAX_FILTER_COMPARISONS
    })
}

/// Any filter that `Filter::parse` could have produced.
pub(super) fn arb_filter() -> impl Strategy<Value = Filter> {
    // Depth 6 with at most two levels per step (a `not` and its parentheses) stays far below the limit.
    const _: () = assert!(2 * 6 < MAX_FILTER_DEPTH);
    let leaf =
        prop_oneof![
            (arb_operand(), arb_op(), arb_operand())
                .prop_map(|(left, op, right)| Filter::Compare { left, op, right }),
            arb_bare_operand().prop_map(Filter::Operand),
        ];
    combine(leaf)
}

fn arb_key() -> impl Strategy<Value = String> {
    "[ab]{0,3}"
}

/// Filters over the keys (and a boolean `Flag`), in both operand orders and with some type mismatches.
pub(super) fn arb_key_filter() -> impl Strategy<Value = Filter> {
    let key = prop::sample::select(vec!["PartitionKey", "RowKey"])
        .prop_map(|k| Operand::Property(k.to_string()));
    let literal = prop_oneof![
        4 => arb_key().prop_map(|s| Operand::Literal(Value::String(s))),
        1 => Just(Operand::Literal(Value::Int32(1))),
    ];
    let leaf = prop_oneof![
        4 => (key.clone(), arb_op(), literal.clone())
            .prop_map(|(left, op, right)| Filter::Compare { left, op, right }),
        2 => (literal, arb_op(), key.clone())
            .prop_map(|(left, op, right)| Filter::Compare { left, op, right }),
        1 => (key.clone(), arb_op(), key)
            .prop_map(|(left, op, right)| Filter::Compare { left, op, right }),
        1 => Just(Filter::Operand(Operand::Property("Flag".to_string()))),
    ];
    combine(leaf)
}

/// An entity whose keys come from the same alphabet as [`arb_key_filter`]'s literals.
pub(super) fn arb_key_entity() -> impl Strategy<Value = Entity> {
    (arb_key(), arb_key(), any::<Option<bool>>()).prop_map(|(pk, rk, flag)| {
        let entity = Entity::new(pk, rk);
        match flag {
            Some(flag) => entity.with("Flag", Value::Boolean(flag)),
            None => entity,
        }
    })
}
