//! The `$filter` query language: Azure's OData subset, as an AST that the partition server evaluates.
//!
//! Both front ends speak it: the REST gateway parses the `$filter` query parameter, and the gRPC API
//! carries the same OData text. Evaluation is type-correct (Int64 and DateTime compare as numbers and
//! instants, never as strings), and a comparison that involves a property the entity does not have is
//! false, as in Azure.
//!
//! The module is split by direction of travel:
//! - `parse.rs` turns text into a [`Filter`] (lexer plus recursive-descent parser);
//! - `mod.rs` (this file) turns a [`Filter`] back into canonical text ([`fmt::Display`]), which is
//!   how one node forwards a query to another;
//! - `eval.rs` decides whether an [`Entity`] matches;
//! - `bounds.rs` derives the PartitionKey/RowKey range a scan must cover.
//!
//! Invariants the rest of Trestle relies on:
//! - [`Filter::parse`] never panics, whatever the input, and every tree it returns is small: at most
//!   [`MAX_FILTER_COMPARISONS`] leaves (comparisons and bare boolean operands) and at most
//!   [`MAX_FILTER_DEPTH`] levels of parentheses and `not`. Recursion over a parsed tree (evaluation,
//!   display, drop) therefore cannot exhaust the stack.
//! - `Filter::parse(&f.to_string()) == Ok(f)` for every tree `parse` can return, and for every tree
//!   built in code that stays within those limits, names properties by identifiers that are not
//!   keywords (see [`Operand::Property`]) and holds only values Azure can express (DateTimes within
//!   [`DateTime::MIN`]..=[`DateTime::MAX`]). A NaN literal prints and parses back as NaN, though
//!   NaN != NaN under `PartialEq`.
//! - Every entity that [`Filter::matches`] lies inside [`Filter::key_bounds`].
//!
//! [`MAX_FILTER_COMPARISONS`]: crate::entity::limits::MAX_FILTER_COMPARISONS
//! [`DateTime::MIN`]: crate::value::DateTime::MIN
//! [`DateTime::MAX`]: crate::value::DateTime::MAX

mod bounds;
mod eval;
mod parse;
#[cfg(test)]
mod strategy;

use std::fmt;

use crate::entity::Entity;
use crate::error::Result;
use crate::value::Value;

pub use bounds::KeyBounds;

/// The deepest nesting of parentheses and `not` that [`Filter::parse`] accepts. Azure documents no such
/// limit; this one exists so a hostile filter cannot overflow the parser's (or the evaluator's) stack,
/// and is far above anything 15 comparisons need.
pub const MAX_FILTER_DEPTH: usize = 100;

/// A boolean expression over an entity.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Compare {
        left: Operand,
        op: CompareOp,
        right: Operand,
    },
    /// A bare operand used as a boolean (`IsActive`, `true`).
    Operand(Operand),
}

/// One side of a comparison: a property (including `PartitionKey`, `RowKey`, `Timestamp`) or a literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A property by its case-sensitive name. OData has no quoting for names, so only identifiers that
    /// are not keywords (`and`, `eq`, `true`, `NaN`, ... in any case) print as text that parses back.
    Property(String),
    Literal(Value),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    /// The operator as OData spells it (lowercase).
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    /// The operator that gives the same result with the operands swapped: `a lt b` is `b gt a`.
    pub fn swapped(self) -> CompareOp {
        match self {
            CompareOp::Eq => CompareOp::Eq,
            CompareOp::Ne => CompareOp::Ne,
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::Ge => CompareOp::Le,
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::Le => CompareOp::Ge,
        }
    }
}

impl Filter {
    /// Parses `$filter` text (already percent-decoded). Errors are [`ErrorCode::InvalidInput`] with the
    /// character position of the problem; more than [`MAX_FILTER_COMPARISONS`] comparisons or
    /// nesting deeper than [`MAX_FILTER_DEPTH`] are errors too.
    ///
    /// Literal forms: `'it''s'` (String), `123` (Int32, or Int64 when it does not fit 32 bits), `123L`
    /// (Int64), `1.5` / `1e3` / `2d` (Double; also `NaN`, `INF`, `-INF`), `true` / `false`,
    /// `datetime'2008-07-10T00:00:00Z'`, `guid'...'`, `X'0A0B'` / `binary'0A0B'` (hex). Keywords,
    /// operators, booleans and literal prefixes are case-insensitive; property names are not.
    ///
    /// [`ErrorCode::InvalidInput`]: crate::error::ErrorCode::InvalidInput
    /// [`MAX_FILTER_COMPARISONS`]: crate::entity::limits::MAX_FILTER_COMPARISONS
    pub fn parse(text: &str) -> Result<Filter> {
        parse::parse(text)
    }

    /// The number of leaves: comparisons plus bare boolean operands (`IsActive` stands for
    /// `IsActive eq true`). This is what Azure's limit of 15 "discrete comparisons" is checked against.
    pub fn comparison_count(&self) -> usize {
        match self {
            Filter::And(l, r) | Filter::Or(l, r) => l.comparison_count() + r.comparison_count(),
            Filter::Not(inner) => inner.comparison_count(),
            Filter::Compare { .. } | Filter::Operand(_) => 1,
        }
    }

    /// Whether `entity` satisfies the filter, with Azure's typing: operands of different EDM types, or a
    /// property the entity lacks, make a comparison false whatever the operator (`ne` included).
    pub fn matches(&self, entity: &Entity) -> bool {
        eval::matches(self, entity)
    }

    /// The PartitionKey/RowKey range outside which no entity can match; see [`KeyBounds`].
    pub fn key_bounds(&self) -> KeyBounds {
        bounds::key_bounds(self)
    }
}

/// Canonical OData text: lowercase keywords, single spaces, parentheses only where precedence needs them
/// (`and` binds tighter than `or`, both group to the left, `not` applies to a single operand, a `not` or
/// a parenthesized expression), and each literal in one fixed form (see [`Operand`]'s `Display`).
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Or(l, r) => {
                write!(f, "{l} or ")?;
                write_grouped(f, r, matches!(**r, Filter::Or(..)))
            }
            Filter::And(l, r) => {
                write_grouped(f, l, matches!(**l, Filter::Or(..)))?;
                f.write_str(" and ")?;
                write_grouped(f, r, matches!(**r, Filter::Or(..) | Filter::And(..)))
            }
            Filter::Not(inner) => {
                f.write_str("not ")?;
                // `not a eq b` would negate `a` alone, which Trestle rejects; spell out the grouping.
                write_grouped(
                    f,
                    inner,
                    !matches!(**inner, Filter::Operand(_) | Filter::Not(_)),
                )
            }
            Filter::Compare { left, op, right } => write!(f, "{left} {op} {right}"),
            Filter::Operand(operand) => write!(f, "{operand}"),
        }
    }
}

fn write_grouped(f: &mut fmt::Formatter<'_>, filter: &Filter, parenthesize: bool) -> fmt::Result {
    if parenthesize {
        write!(f, "({filter})")
    } else {
        write!(f, "{filter}")
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A property prints as its name; a literal in the one form that parses back to the same EDM type and
/// value: `'it''s'`, `-5`, `5L`, `1.5` / `2.0` / `1e300` / `NaN` / `INF` / `-INF`, `true`,
/// `datetime'2008-07-10T00:00:00.0000000Z'`, `guid'c9da6455-213d-42c9-9a79-3e9149a57833'`, `X'0AFF'`.
impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Property(name) => f.write_str(name),
            Operand::Literal(value) => write_literal(f, value),
        }
    }
}

fn write_literal(f: &mut fmt::Formatter<'_>, value: &Value) -> fmt::Result {
    match value {
        Value::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
        Value::Int32(i) => write!(f, "{i}"),
        Value::Int64(i) => write!(f, "{i}L"),
        Value::Double(d) => write_double(f, *d),
        Value::Boolean(b) => write!(f, "{b}"),
        Value::DateTime(dt) => write!(f, "datetime'{}'", dt.to_iso()),
        Value::Guid(g) => write!(f, "guid'{}'", g.hyphenated()),
        Value::Binary(bytes) => {
            f.write_str("X'")?;
            for byte in bytes {
                write!(f, "{byte:02X}")?;
            }
            f.write_str("'")
        }
    }
}

fn write_double(f: &mut fmt::Formatter<'_>, d: f64) -> fmt::Result {
    if d.is_nan() {
        return f.write_str("NaN");
    }
    if d.is_infinite() {
        return f.write_str(if d > 0.0 { "INF" } else { "-INF" });
    }
    // Debug is the shortest text that parses back to the same bits, with an exponent for very large and
    // small magnitudes; it always carries a `.` or an `e`, which is what keeps `2.0` from reading back
    // as the Int32 `2`. The guard is for the day that stops being true.
    let text = format!("{d:?}");
    if text.contains(['.', 'e', 'E']) {
        f.write_str(&text)
    } else {
        write!(f, "{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::strategy::arb_filter;
    use super::*;

    fn round_trip(text: &str) -> String {
        Filter::parse(text).unwrap().to_string()
    }

    #[test]
    fn display_is_canonical_and_minimal() {
        assert_eq!(round_trip("(A eq 1) AND (B Ne 2L)"), "A eq 1 and B ne 2L");
        assert_eq!(round_trip("a or (b or c)"), "a or (b or c)");
        assert_eq!(round_trip("(a or b) or c"), "a or b or c");
        assert_eq!(round_trip("a and (b and c)"), "a and (b and c)");
        assert_eq!(round_trip("(a or b) and c"), "(a or b) and c");
        assert_eq!(round_trip("a or b and c"), "a or b and c");
        assert_eq!(
            round_trip("not (a eq 1) and not not b"),
            "not (a eq 1) and not not b"
        );
        assert_eq!(round_trip("not (a or b)"), "not (a or b)");
        assert_eq!(round_trip("X eq 2d"), "X eq 2.0");
        assert_eq!(round_trip("X eq 1E+16"), "X eq 1e16");
        assert_eq!(round_trip("B eq binary'0aff'"), "B eq X'0AFF'");
        assert_eq!(
            round_trip("T lt datetime'2021-01-01T00:00:00Z'"),
            "T lt datetime'2021-01-01T00:00:00.0000000Z'"
        );
    }

    #[test]
    fn display_of_built_trees_adds_the_parentheses_parsing_needs() {
        let leaf = |name: &str| Filter::Operand(Operand::Property(name.to_string()));
        let and = |l, r| Filter::And(Box::new(l), Box::new(r));
        let or = |l, r| Filter::Or(Box::new(l), Box::new(r));
        let tree = and(leaf("a"), or(leaf("b"), and(leaf("c"), leaf("d"))));
        assert_eq!(tree.to_string(), "a and (b or c and d)");
        assert_eq!(Filter::parse(&tree.to_string()).unwrap(), tree);
    }

    #[test]
    fn special_doubles_print_and_parse_back() {
        for (value, text) in [(f64::INFINITY, "INF"), (f64::NEG_INFINITY, "-INF")] {
            let lit = Operand::Literal(Value::Double(value));
            assert_eq!(lit.to_string(), text);
        }
        let nan = Filter::parse("X ne NaN").unwrap();
        assert_eq!(nan.to_string(), "X ne NaN");
        let Filter::Compare {
            right: Operand::Literal(Value::Double(d)),
            ..
        } = nan
        else {
            panic!("not a double comparison: {nan:?}");
        };
        assert!(d.is_nan());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn display_round_trips_through_parse(filter in arb_filter()) {
            let text = filter.to_string();
            let parsed = Filter::parse(&text);
            prop_assert_eq!(parsed.as_ref(), Ok(&filter), "text: {}", text);
            prop_assert_eq!(parsed.map(|p| p.comparison_count()), Ok(filter.comparison_count()));
        }
    }
}
