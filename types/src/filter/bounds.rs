//! Scan narrowing: the PartitionKey/RowKey range a filter can possibly match.
//!
//! Entities are stored in (PartitionKey, RowKey) order, so a query that pins its keys should read a
//! slice of the table, not all of it. [`Filter::key_bounds`] looks at the top-level conjuncts only (the
//! operands of `and`s that are not under an `or` or a `not`) and at those that compare `PartitionKey` or
//! `RowKey` with a String literal, on either side; `ne`, `or`, `not`, comparisons with other types and
//! everything else contribute nothing. That is deliberately simple and always conservative: every
//! entity that matches satisfies every top-level conjunct, so it lies inside the bounds.
//!
//! Keys compare as UTF-8 bytes, both here and in [`super::eval`], which is the storage engine's key order.

use std::ops::Bound;

use super::{CompareOp, Filter, Operand};
use crate::value::Value;

/// Key ranges that contain every entity a filter can match.
///
/// `partition` bounds the PartitionKey. `row` bounds the RowKey and is only ever set when `partition`
/// pins a single PartitionKey (see [`KeyBounds::partition_key`]); otherwise it is unbounded, because
/// RowKey bounds do not describe one contiguous run of the (PartitionKey, RowKey) key space. So a scan
/// may always read from `(partition.start, row.start)` to `(partition.end, row.end)`.
///
/// The ranges may be empty (lower above upper, as in `PartitionKey eq 'a' and PartitionKey eq 'b'`):
/// check [`KeyBounds::is_empty`] first, and scan nothing if it is, because `BTreeMap::range` and the
/// like panic on such ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBounds {
    pub partition: (Bound<String>, Bound<String>),
    pub row: (Bound<String>, Bound<String>),
}

impl Default for KeyBounds {
    fn default() -> Self {
        KeyBounds::unbounded()
    }
}

impl KeyBounds {
    /// No narrowing: the whole table.
    pub fn unbounded() -> Self {
        KeyBounds {
            partition: (Bound::Unbounded, Bound::Unbounded),
            row: (Bound::Unbounded, Bound::Unbounded),
        }
    }

    /// The one PartitionKey the filter allows, if the bounds pin it (`PartitionKey eq 'p'`, or
    /// `ge 'p' and le 'p'`).
    pub fn partition_key(&self) -> Option<&str> {
        match &self.partition {
            (Bound::Included(low), Bound::Included(high)) if low == high => Some(low),
            _ => None,
        }
    }

    /// True when no key can lie inside the bounds, so the scan can be skipped. Conservative: it may say
    /// false for a range that happens to hold no string (`gt 'a' and lt 'a\0'`), but when it says false
    /// the ranges are safe to hand to `BTreeMap::range`.
    pub fn is_empty(&self) -> bool {
        range_is_empty(&self.partition) || range_is_empty(&self.row)
    }

    /// Whether the key lies inside the bounds.
    pub fn contains(&self, partition_key: &str, row_key: &str) -> bool {
        range_contains(&self.partition, partition_key) && range_contains(&self.row, row_key)
    }
}

fn range_is_empty((low, high): &(Bound<String>, Bound<String>)) -> bool {
    match (low, high) {
        (Bound::Included(l), Bound::Included(h)) => l > h,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) => {
            l >= h
        }
        _ => false,
    }
}

fn range_contains((low, high): &(Bound<String>, Bound<String>), key: &str) -> bool {
    let above = match low {
        Bound::Included(l) => key >= l.as_str(),
        Bound::Excluded(l) => key > l.as_str(),
        Bound::Unbounded => true,
    };
    let below = match high {
        Bound::Included(h) => key <= h.as_str(),
        Bound::Excluded(h) => key < h.as_str(),
        Bound::Unbounded => true,
    };
    above && below
}

#[derive(Clone, Copy)]
enum Key {
    Partition,
    Row,
}

pub(super) fn key_bounds(filter: &Filter) -> KeyBounds {
    let mut bounds = KeyBounds::unbounded();
    // An explicit stack rather than recursion: `and` chains are left-deep.
    let mut conjuncts = vec![filter];
    while let Some(conjunct) = conjuncts.pop() {
        match conjunct {
            Filter::And(l, r) => conjuncts.extend([&**l, &**r]),
            Filter::Compare { left, op, right } => {
                if let Some((key, op, literal)) = key_comparison(left, *op, right) {
                    let range = match key {
                        Key::Partition => &mut bounds.partition,
                        Key::Row => &mut bounds.row,
                    };
                    narrow(range, op, literal);
                }
            }
            Filter::Or(..) | Filter::Not(_) | Filter::Operand(_) => {}
        }
    }
    if bounds.partition_key().is_none() {
        bounds.row = (Bound::Unbounded, Bound::Unbounded);
    }
    bounds
}

/// `key op literal` for a comparison of a key property with a String literal, turned around if the
/// literal came first.
fn key_comparison<'a>(
    left: &'a Operand,
    op: CompareOp,
    right: &'a Operand,
) -> Option<(Key, CompareOp, &'a str)> {
    let key = |name: &str| match name {
        "PartitionKey" => Some(Key::Partition),
        "RowKey" => Some(Key::Row),
        _ => None,
    };
    match (left, right) {
        (Operand::Property(name), Operand::Literal(Value::String(s))) => Some((key(name)?, op, s)),
        (Operand::Literal(Value::String(s)), Operand::Property(name)) => {
            Some((key(name)?, op.swapped(), s))
        }
        _ => None,
    }
}

fn narrow(range: &mut (Bound<String>, Bound<String>), op: CompareOp, literal: &str) {
    match op {
        CompareOp::Eq => {
            raise_low(&mut range.0, Bound::Included(literal));
            lower_high(&mut range.1, Bound::Included(literal));
        }
        CompareOp::Gt => raise_low(&mut range.0, Bound::Excluded(literal)),
        CompareOp::Ge => raise_low(&mut range.0, Bound::Included(literal)),
        CompareOp::Lt => lower_high(&mut range.1, Bound::Excluded(literal)),
        CompareOp::Le => lower_high(&mut range.1, Bound::Included(literal)),
        CompareOp::Ne => {}
    }
}

/// Replaces the lower bound if `new` is tighter (at the same key, excluding is tighter).
fn raise_low(low: &mut Bound<String>, new: Bound<&str>) {
    let tighter = match (&*low, new) {
        (Bound::Unbounded, _) => true,
        (Bound::Included(old), Bound::Excluded(new)) => new >= old.as_str(),
        (
            Bound::Included(old) | Bound::Excluded(old),
            Bound::Included(new) | Bound::Excluded(new),
        ) => new > old.as_str(),
        (_, Bound::Unbounded) => false,
    };
    if tighter {
        *low = new.map(str::to_string);
    }
}

/// Replaces the upper bound if `new` is tighter (at the same key, excluding is tighter).
fn lower_high(high: &mut Bound<String>, new: Bound<&str>) {
    let tighter = match (&*high, new) {
        (Bound::Unbounded, _) => true,
        (Bound::Included(old), Bound::Excluded(new)) => new <= old.as_str(),
        (
            Bound::Included(old) | Bound::Excluded(old),
            Bound::Included(new) | Bound::Excluded(new),
        ) => new < old.as_str(),
        (_, Bound::Unbounded) => false,
    };
    if tighter {
        *high = new.map(str::to_string);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::super::strategy::{arb_key_entity, arb_key_filter};
    use super::*;

    fn bounds(text: &str) -> KeyBounds {
        Filter::parse(text).unwrap().key_bounds()
    }

    fn inc(s: &str) -> Bound<String> {
        Bound::Included(s.to_string())
    }

    fn exc(s: &str) -> Bound<String> {
        Bound::Excluded(s.to_string())
    }

    const UNBOUNDED: (Bound<String>, Bound<String>) = (Bound::Unbounded, Bound::Unbounded);

    #[test]
    fn a_point_query_pins_both_keys() {
        let b = bounds("PartitionKey eq 'pk' and RowKey eq 'rk'");
        assert_eq!(b.partition, (inc("pk"), inc("pk")));
        assert_eq!(b.row, (inc("rk"), inc("rk")));
        assert_eq!(b.partition_key(), Some("pk"));
        assert!(b.contains("pk", "rk") && !b.contains("pk", "rk2") && !b.contains("pk2", "rk"));
    }

    #[test]
    fn a_row_range_within_a_partition_in_either_operand_order() {
        let b = bounds("'p' eq PartitionKey and 'a' le RowKey and 'b' gt RowKey and Age gt 3");
        assert_eq!(b.partition, (inc("p"), inc("p")));
        assert_eq!(b.row, (inc("a"), exc("b")));
    }

    #[test]
    fn the_tightest_bound_wins() {
        let b = bounds(
            "PartitionKey ge 'a' and PartitionKey gt 'a' and PartitionKey gt 'A' \
             and PartitionKey le 'm' and PartitionKey lt 'z'",
        );
        assert_eq!(b.partition, (exc("a"), inc("m")));
        let b = bounds("PartitionKey le 'm' and PartitionKey lt 'm' and PartitionKey le 'm'");
        assert_eq!(b.partition, (Bound::Unbounded, exc("m")));
    }

    #[test]
    fn row_bounds_need_a_pinned_partition() {
        let b = bounds("PartitionKey ge 'a' and PartitionKey lt 'b' and RowKey eq 'x'");
        assert_eq!(b.partition, (inc("a"), exc("b")));
        assert_eq!(b.row, UNBOUNDED);
        let b = bounds("PartitionKey ge 'p' and PartitionKey le 'p' and RowKey ge 'x'");
        assert_eq!(b.partition_key(), Some("p"));
        assert_eq!(b.row, (inc("x"), Bound::Unbounded));
    }

    #[test]
    fn or_not_ne_and_other_types_contribute_nothing() {
        for text in [
            "PartitionKey eq 'a' or PartitionKey eq 'b'",
            "not (PartitionKey lt 'a')",
            "PartitionKey ne 'a'",
            "PartitionKey eq 5",
            "PartitionKey eq RowKey",
            "Name eq 'a'",
            "partitionkey eq 'a'",
            "IsActive",
        ] {
            assert_eq!(bounds(text), KeyBounds::unbounded(), "{text}");
        }
        let b = bounds("(PartitionKey eq 'a' or Age gt 3) and PartitionKey lt 'q'");
        assert_eq!(b.partition, (Bound::Unbounded, exc("q")));
    }

    #[test]
    fn contradictory_bounds_are_empty_and_say_so() {
        for text in [
            "PartitionKey eq 'a' and PartitionKey eq 'b'",
            "PartitionKey gt 'a' and PartitionKey lt 'a'",
            "PartitionKey ge 'a' and PartitionKey lt 'a'",
            "PartitionKey eq 'p' and RowKey gt 'x' and RowKey le 'x'",
        ] {
            assert!(bounds(text).is_empty(), "{text}");
        }
        for text in [
            "PartitionKey eq 'a'",
            "PartitionKey gt 'a' and PartitionKey lt 'b'",
            "A",
        ] {
            let b = bounds(text);
            assert!(!b.is_empty(), "{text}");
            // Not empty means a BTreeMap accepts the ranges without panicking.
            let map: BTreeMap<String, ()> = BTreeMap::new();
            assert_eq!(map.range(b.partition.clone()).count(), 0);
            assert_eq!(map.range(b.row.clone()).count(), 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn every_matching_entity_lies_inside_the_bounds(
            filter in arb_key_filter(),
            entities in prop::collection::vec(arb_key_entity(), 1..20),
        ) {
            let bounds = filter.key_bounds();
            for entity in &entities {
                if filter.matches(entity) {
                    prop_assert!(
                        bounds.contains(&entity.partition_key, &entity.row_key),
                        "{} matches ({}, {}) outside {:?}",
                        filter, entity.partition_key, entity.row_key, bounds
                    );
                    prop_assert!(!bounds.is_empty());
                }
            }
        }
    }
}
