//! Fuzzes the `$filter` parser, the one Trestle component that reads raw client text on every query.
//!
//! Arbitrary bytes that are UTF-8 (the gateway percent-decodes into a `&str`) go to `Filter::parse`,
//! which must never panic. Whatever parses must also keep the module's promises: its canonical text
//! parses back to the same filter (compared as text, since a NaN literal is unequal to itself), it stays
//! within the comparison limit, and evaluating it against an entity never panics and never matches an
//! entity outside the filter's key bounds.

use trestle_types::{DateTime, Entity, Filter, Value, limits};

fn entities() -> [Entity; 3] {
    let mut full = Entity::new("pk", "rk")
        .with("Age", Value::Int32(39))
        .with("Big", Value::Int64(5))
        .with("Amount", Value::Double(1.5))
        .with("Name", Value::String("it's".to_string()))
        .with("IsActive", Value::Boolean(true))
        .with("Born", Value::DateTime(DateTime(0)))
        .with("Blob", Value::Binary(vec![0x0A, 0x0B]));
    full.timestamp = Some(DateTime(16_000_000_000_000_000));
    [
        full,
        Entity::new("", ""),
        Entity::new("a", "b").with("Ratio", Value::Double(f64::NAN)),
    ]
}

/// Runs one input; panics if a promise is broken.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(filter) = Filter::parse(text) else {
        return;
    };
    assert!(filter.comparison_count() <= limits::MAX_FILTER_COMPARISONS);

    let canonical = filter.to_string();
    let reparsed = match Filter::parse(&canonical) {
        Ok(reparsed) => reparsed,
        Err(e) => panic!("canonical text {canonical:?} of {text:?} does not parse: {e}"),
    };
    assert_eq!(
        reparsed.to_string(),
        canonical,
        "display is not canonical for {text:?}"
    );
    assert_eq!(reparsed.comparison_count(), filter.comparison_count());

    let bounds = filter.key_bounds();
    for entity in entities() {
        let matched = filter.matches(&entity);
        assert_eq!(
            matched,
            reparsed.matches(&entity),
            "{text:?} changed meaning through display"
        );
        if matched {
            assert!(
                bounds.contains(&entity.partition_key, &entity.row_key) && !bounds.is_empty(),
                "{text:?} matches {entity:?} outside {bounds:?}"
            );
        }
    }
}
