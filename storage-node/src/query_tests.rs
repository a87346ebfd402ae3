//! Tests of query paging, filtering, projection and scan narrowing, on entities written through the table
//! state machine.

use trestle_engine::{Cf, Engine, WriteBatch, keys};
use trestle_types::{
    Entity, EntityKey, ErrorCode, Filter, IfMatch, QueryPage, QuerySpec, Value, WriteKind,
};

use super::*;
use crate::table_sm::tests::{Replica, op};

const TABLE: u64 = 0x9E37_79B9_7F4A_7C15;

/// 2,500 entities: partitions `p00`..`p24` of 100 rows each, row keys `0000`..`2499`, `n` = the index
/// as Int64 and `tag` = "even"/"odd".
fn populated() -> Replica {
    let mut r = Replica::new();
    for p in 0..25 {
        let ops: Vec<_> = (0..100)
            .map(|j| {
                let i = p * 100 + j;
                let tag = Value::String(if i % 2 == 0 { "even" } else { "odd" }.into());
                op(
                    WriteKind::Insert,
                    &format!("p{p:02}"),
                    &format!("{i:04}"),
                    &[("n", Value::Int64(i)), ("tag", tag)],
                    IfMatch::None,
                )
            })
            .collect();
        r.run(1, &ops).unwrap();
    }
    r
}

fn spec(filter: Option<&str>) -> QuerySpec {
    QuerySpec {
        filter: filter.map(|f| Filter::parse(f).unwrap()),
        ..QuerySpec::default()
    }
}

fn page(r: &Replica, spec: &QuerySpec, budget: usize) -> QueryPage {
    query_page_with_budget(&*r.engine.snapshot(), TABLE, spec, budget, Within::ALL).unwrap()
}

/// Follows continuations to the end; returns every entity and the number of pages.
fn drain(r: &Replica, mut spec: QuerySpec, budget: usize) -> (Vec<Entity>, usize) {
    let (mut all, mut pages) = (Vec::new(), 0);
    loop {
        let p = page(r, &spec, budget);
        pages += 1;
        all.extend(p.entities);
        match p.next {
            Some(next) => spec.continuation = Some(next),
            None => return (all, pages),
        }
        assert!(pages < 10_000, "the query does not advance");
    }
}

fn row_keys(entities: &[Entity]) -> Vec<String> {
    entities.iter().map(|e| e.row_key.clone()).collect()
}

#[test]
fn pages_resume_exactly_at_the_continuation() {
    let r = populated();
    let first = page(&r, &spec(None), SCAN_BUDGET);
    assert_eq!(first.entities.len(), 1000);
    assert_eq!(first.next, Some(EntityKey::new("p10", "1000")));
    let (all, pages) = drain(&r, spec(None), SCAN_BUDGET);
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..2500).map(|i| format!("{i:04}")).collect();
    assert_eq!(row_keys(&all), expected);
    assert!(
        all.iter()
            .all(|e| e.timestamp.is_some() && e.properties.len() == 2)
    );
}

#[test]
fn top_limits_a_page_and_zero_means_one() {
    let r = populated();
    let mut s = spec(Some("tag eq 'odd'"));
    s.top = Some(7);
    let p = page(&r, &s, SCAN_BUDGET);
    assert_eq!(
        row_keys(&p.entities),
        ["0001", "0003", "0005", "0007", "0009", "0011", "0013"]
    );
    assert_eq!(p.next, Some(EntityKey::new("p00", "0014")));
    s.top = Some(0);
    assert_eq!(page(&r, &s, SCAN_BUDGET).entities.len(), 1);
    s.top = Some(5000);
    assert_eq!(page(&r, &s, SCAN_BUDGET).entities.len(), 1000);
}

#[test]
fn int64_filters_compare_numbers_not_text() {
    let r = populated();
    let (all, _) = drain(&r, spec(Some("n gt 2497L")), SCAN_BUDGET);
    assert_eq!(row_keys(&all), ["2498", "2499"]);
    // As text "10" < "9"; as Int64 it is not.
    let (all, _) = drain(&r, spec(Some("n ge 9L and n le 10L")), SCAN_BUDGET);
    assert_eq!(row_keys(&all), ["0009", "0010"]);
    // A property of another type never matches an Int64 comparison.
    let (all, _) = drain(&r, spec(Some("tag gt 0L")), SCAN_BUDGET);
    assert!(all.is_empty());
}

#[test]
fn a_selective_filter_returns_budgeted_pages_that_still_find_everything() {
    let r = populated();
    let first = page(&r, &spec(Some("n eq 2400L")), 100);
    assert!(first.entities.is_empty());
    assert_eq!(first.next, Some(EntityKey::new("p01", "0100")));
    let (all, pages) = drain(&r, spec(Some("n eq 2400L or n eq 5L")), 100);
    assert_eq!(row_keys(&all), ["0005", "2400"]);
    assert!(pages >= 25, "{pages} pages");
}

#[test]
fn select_keeps_only_the_chosen_properties_and_the_system_ones() {
    let r = populated();
    let mut s = spec(Some("PartitionKey eq 'p00'"));
    s.select = Some(vec!["n".into(), "missing".into()]);
    s.top = Some(1);
    let e = &page(&r, &s, SCAN_BUDGET).entities[0];
    assert_eq!(
        (e.partition_key.as_str(), e.row_key.as_str()),
        ("p00", "0000")
    );
    assert!(e.timestamp.is_some());
    assert_eq!(e.properties.keys().collect::<Vec<_>>(), ["n"]);
}

#[test]
fn key_bounds_narrow_the_scan() {
    let r = populated();
    // With a budget of one miss, only a scan that starts and stops at the partition finds all of it.
    let p = page(&r, &spec(Some("PartitionKey eq 'p05'")), 1);
    assert_eq!(p.entities.len(), 100);
    assert_eq!(p.next, None);
    assert!(p.entities.iter().all(|e| e.partition_key == "p05"));
    let p = page(
        &r,
        &spec(Some(
            "PartitionKey eq 'p05' and RowKey ge '0510' and RowKey lt '0520'",
        )),
        1,
    );
    assert_eq!(
        row_keys(&p.entities),
        (510..520).map(|i| format!("{i:04}")).collect::<Vec<_>>()
    );
    assert_eq!(p.next, None);
    let p = page(
        &r,
        &spec(Some("PartitionKey eq 'p05' and RowKey gt '0597'")),
        1,
    );
    assert_eq!(row_keys(&p.entities), ["0598", "0599"]);
    let p = page(&r, &spec(Some("PartitionKey gt 'p23'")), 1);
    assert_eq!((p.entities.len(), p.next), (100, None));
    let p = page(&r, &spec(Some("PartitionKey lt 'p01'")), 1);
    assert_eq!((p.entities.len(), p.next), (100, None));
    let p = page(
        &r,
        &spec(Some("PartitionKey ge 'p03' and PartitionKey le 'p04'")),
        1,
    );
    assert_eq!((p.entities.len(), p.next), (200, None));
    let empty = page(
        &r,
        &spec(Some("PartitionKey eq 'p01' and PartitionKey eq 'p02'")),
        1,
    );
    assert_eq!(empty, QueryPage::default());
    let nothing = page(&r, &spec(Some("PartitionKey eq 'zz'")), 1);
    assert_eq!(nothing, QueryPage::default());
}

#[test]
fn a_continuation_past_the_end_or_past_the_bounds_is_an_empty_last_page() {
    let r = populated();
    let mut s = spec(None);
    s.continuation = Some(EntityKey::new("zz", ""));
    assert_eq!(page(&r, &s, SCAN_BUDGET), QueryPage::default());
    let mut s = spec(Some("PartitionKey eq 'p02'"));
    s.continuation = Some(EntityKey::new("p03", "0300"));
    assert_eq!(page(&r, &s, SCAN_BUDGET), QueryPage::default());
    // A continuation inside the bounds resumes there.
    s.continuation = Some(EntityKey::new("p02", "0298"));
    assert_eq!(
        row_keys(&page(&r, &s, SCAN_BUDGET).entities),
        ["0298", "0299"]
    );
}

#[test]
fn other_tables_and_the_drop_marker_are_never_returned() {
    let mut r = Replica::new();
    r.run(1, &[op(WriteKind::Insert, "p", "r", &[], IfMatch::None)])
        .unwrap();
    let mut batch = WriteBatch::new();
    batch.put(
        Cf::Data,
        keys::data_key(TABLE + 1, "p", "r"),
        crate::codec::encode_entity(&Entity::new("p", "r")),
    );
    batch.put(Cf::Data, keys::dropped_table_marker(TABLE - 1), Vec::new());
    batch.put(Cf::Data, keys::dropped_table_marker(TABLE), Vec::new());
    r.engine.write(&batch, false).unwrap();
    let (all, _) = drain(&r, spec(None), SCAN_BUDGET);
    assert_eq!(row_keys(&all), ["r"]);
    assert!(is_dropped(&r.engine as &dyn Engine, TABLE, &[]).unwrap());
    assert!(!is_dropped(&r.engine as &dyn Engine, TABLE + 1, &[]).unwrap());
}

#[test]
fn a_corrupt_entity_fails_the_page_and_the_point_read() {
    let mut r = Replica::new();
    r.run(
        1,
        &[op(
            WriteKind::Insert,
            "p",
            "r",
            &[("a", Value::Int32(1))],
            IfMatch::None,
        )],
    )
    .unwrap();
    let key = keys::data_key(TABLE, "p", "r");
    let mut bytes = r.engine.get(Cf::Data, &key).unwrap().unwrap();
    bytes[5] ^= 0x10;
    let mut batch = WriteBatch::new();
    batch.put(Cf::Data, key, bytes);
    r.engine.write(&batch, false).unwrap();
    let err = query_page(&*r.engine.snapshot(), TABLE, &spec(None)).unwrap_err();
    assert_eq!(err.code, ErrorCode::DataCorrupted);
    let err = get_entity(&*r.engine.snapshot(), TABLE, "p", "r").unwrap_err();
    assert_eq!(err.code, ErrorCode::DataCorrupted);
    assert_eq!(
        get_entity(&r.engine as &dyn Engine, TABLE, "p", "absent").unwrap(),
        None
    );
}

/// Pages that follow continuations across range boundaries, each page read inside the range holding
/// its start key, as the node serves them once a table has split.
#[test]
fn pages_cross_range_boundaries_in_key_order_with_nothing_missed_or_repeated() {
    let r = populated();
    let cuts = [
        keys::partition_prefix(TABLE, "p07"),
        keys::partition_prefix(TABLE, "p08"),
        keys::partition_prefix(TABLE, "p19"),
    ];
    let range_of = |key: &[u8]| -> (Vec<u8>, Option<Vec<u8>>) {
        let i = cuts.partition_point(|c| c.as_slice() <= key);
        let start = if i == 0 {
            Vec::new()
        } else {
            cuts[i - 1].clone()
        };
        (start, cuts.get(i).cloned())
    };
    for (filter, top) in [
        (None, None),
        (Some("n ge 650 and n lt 2100"), Some(333)),
        (Some("tag eq 'odd'"), Some(1000)),
        (
            Some("PartitionKey ge 'p07' and PartitionKey le 'p08'"),
            None,
        ),
    ] {
        let mut spec = QuerySpec {
            top,
            ..spec(filter)
        };
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let from = spec.continuation.as_ref().map_or_else(
                || keys::table_prefix(TABLE),
                |c| keys::data_key(TABLE, &c.partition_key, &c.row_key),
            );
            let (start, end) = range_of(&from);
            let within = Within {
                start: &start,
                end: end.as_deref(),
            };
            let p = query_page_with_budget(&*r.engine.snapshot(), TABLE, &spec, 10_000, within)
                .unwrap();
            pages += 1;
            seen.extend(p.entities.iter().map(|e| e.row_key.clone()));
            match p.next {
                Some(next) => spec.continuation = Some(next),
                None => break,
            }
            assert!(pages < 100, "the query does not advance");
        }
        let want: Vec<String> = (0..2500i64)
            .filter(|i| match filter {
                None => true,
                Some(f) if f.starts_with("n ") => (650..2100).contains(i),
                Some(f) if f.starts_with("tag") => i % 2 == 1,
                Some(_) => (700..900).contains(i),
            })
            .map(|i| format!("{i:04}"))
            .collect();
        assert_eq!(seen, want, "{filter:?}");
        assert!(pages > 1, "{filter:?}: the ranges cut the query into pages");
    }
}
