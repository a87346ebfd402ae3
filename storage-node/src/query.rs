//! The query engine: one page of a table query, read from one engine snapshot, and point reads.
//!
//! A page scans the table's data keys in (PartitionKey, RowKey) order, which is the key order of
//! `Cf::Data`. The scan starts at the later of the continuation key (inclusive) and the lower end of the
//! filter's [`KeyBounds`], and stops at their upper end, so `PartitionKey eq 'p'` reads one partition,
//! not the table. Every value is crc-checked as it is decoded (a corrupt entity fails the page with
//! `DataCorrupted`: bad data is never served), then the filter is evaluated, then `$select` is applied.
//!
//! A page ends, with a continuation, when it holds `top` entities (default and maximum 1000) or after
//! [`SCAN_BUDGET`] entities that did not match — Azure's 5-second page budget in entities rather than
//! seconds, so a selective filter over a large table returns (possibly empty) pages with a continuation
//! instead of holding a snapshot for minutes. The continuation is the key of the next entity in scan
//! order (matching or not); resuming there is exact because the scan is inclusive of it.
//!
//! The bounds only ever narrow the scan: the filter is still evaluated on every entity, so bounds that
//! are wider than necessary cost time, never correctness (`KeyBounds` promises every match lies inside).

use std::ops::Bound;

use trestle_engine::{Cf, Engine, Snapshot, keys};
use trestle_types::filter::KeyBounds;
use trestle_types::{Entity, EntityKey, Error, ErrorCode, QueryPage, QuerySpec, Result, limits};

use crate::codec::decode_entity;
use crate::ranges::table_span;

/// Non-matching entities one page may scan before it returns what it has.
pub const SCAN_BUDGET: usize = 10_000;

/// Point reads from either a live engine or a snapshot.
pub trait ReadView {
    /// The value of `key` in `cf`, if any.
    fn read(&self, cf: Cf, key: &[u8]) -> trestle_engine::Result<Option<Vec<u8>>>;
}

impl ReadView for dyn Engine {
    fn read(&self, cf: Cf, key: &[u8]) -> trestle_engine::Result<Option<Vec<u8>>> {
        self.get(cf, key)
    }
}

impl ReadView for dyn Snapshot + '_ {
    fn read(&self, cf: Cf, key: &[u8]) -> trestle_engine::Result<Option<Vec<u8>>> {
        self.get(cf, key)
    }
}

fn engine_error(e: trestle_engine::Error) -> Error {
    Error::internal(format!("reading entities: {e}"))
}

/// The entity `(partition_key, row_key)` of table `table_id`, crc-checked.
pub fn get_entity<R: ReadView + ?Sized>(
    view: &R,
    table_id: u64,
    partition_key: &str,
    row_key: &str,
) -> Result<Option<Entity>> {
    let key = keys::data_key(table_id, partition_key, row_key);
    match view.read(Cf::Data, &key).map_err(engine_error)? {
        Some(bytes) => decode_entity(partition_key, row_key, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Whether the data range starting at `range_start` marked table `table_id` as dropped (see
/// `table_sm`: the marker sits at the range's anchor for the table).
pub fn is_dropped<R: ReadView + ?Sized>(
    view: &R,
    table_id: u64,
    range_start: &[u8],
) -> Result<bool> {
    Ok(view
        .read(Cf::Data, &keys::table_anchor(table_id, range_start))
        .map_err(engine_error)?
        .is_some())
}

/// The key span one page may read: a range's `[start, end)` (`end = None`: to the end).
#[derive(Debug, Clone, Copy)]
pub struct Within<'a> {
    pub start: &'a [u8],
    pub end: Option<&'a [u8]>,
}

impl Within<'static> {
    /// All of `Cf::Data` (a node that holds the whole keyspace in one range; tests).
    pub const ALL: Within<'static> = Within {
        start: &[],
        end: None,
    };
}

/// The key at which a query continues: the first key of the partition that starts the next range.
fn continuation_at(range_end: &[u8], table_id: u64) -> Option<EntityKey> {
    let prefix = keys::table_prefix(table_id);
    let rest = range_end.strip_prefix(prefix.as_slice())?;
    let (pk, tail) = keys::take_escaped(rest)?;
    if !tail.is_empty() {
        return None;
    }
    Some(EntityKey::new(String::from_utf8(pk).ok()?, String::new()))
}

/// One page of `spec` over table `table_id`, with the default [`SCAN_BUDGET`].
pub fn query_page(snapshot: &dyn Snapshot, table_id: u64, spec: &QuerySpec) -> Result<QueryPage> {
    query_page_with_budget(snapshot, table_id, spec, SCAN_BUDGET, Within::ALL)
}

/// One page of `spec` over the keys of table `table_id` inside `within` (one range), stopping after
/// `budget` (at least 1) non-matching entities. A page that reaches the end of the range before the end
/// of the query ends with a continuation at the next range's first partition (possibly with fewer than
/// `top` entities, as Azure's pages end at partition server boundaries).
pub fn query_page_with_budget(
    snapshot: &dyn Snapshot,
    table_id: u64,
    spec: &QuerySpec,
    budget: usize,
    within: Within<'_>,
) -> Result<QueryPage> {
    let bounds = spec
        .filter
        .as_ref()
        .map_or_else(KeyBounds::unbounded, |f| f.key_bounds());
    if bounds.is_empty() {
        return Ok(QueryPage::default());
    }
    let (mut start, mut end) = scan_range(table_id, &bounds);
    if let Some(c) = &spec.continuation {
        start = start.max(keys::data_key(table_id, &c.partition_key, &c.row_key));
    }
    start = start.max(within.start.to_vec());
    // Where the range cuts the scan short, the page continues in the next range.
    let mut next_range = None;
    if let Some(range_end) = within.end
        && end.as_deref().is_none_or(|e| range_end < e)
    {
        end = Some(range_end.to_vec());
        next_range = continuation_at(range_end, table_id);
    }
    if end.as_ref().is_some_and(|end| start >= *end) {
        return Ok(QueryPage {
            next: next_range,
            ..QueryPage::default()
        });
    }
    // `$top=0` would make a page that can never advance; a page returns at least one entity.
    let top = spec
        .top
        .unwrap_or(limits::MAX_PAGE_ENTITIES)
        .clamp(1, limits::MAX_PAGE_ENTITIES);
    let budget = budget.max(1);
    let mut page = QueryPage::default();
    let mut misses = 0;
    let mut complete = true;
    for kv in snapshot
        .scan(Cf::Data, &start, end.as_deref())
        .map_err(engine_error)?
    {
        let (key, value) = kv.map_err(engine_error)?;
        if keys::is_table_record(&key) {
            continue;
        }
        let Some((_, partition_key, row_key)) =
            keys::decode_data_key(&key).filter(|(t, ..)| *t == table_id)
        else {
            return Err(Error::new(
                ErrorCode::DataCorrupted,
                format!("undecodable data key {key:02x?}"),
            ));
        };
        if page.entities.len() >= top || misses >= budget {
            page.next = Some(EntityKey::new(partition_key, row_key));
            complete = false;
            break;
        }
        let entity = decode_entity(&partition_key, &row_key, &value)?;
        if spec.filter.as_ref().is_none_or(|f| f.matches(&entity)) {
            page.entities.push(project(entity, spec.select.as_deref()));
        } else {
            misses += 1;
        }
    }
    if complete {
        page.next = next_range;
    }
    Ok(page)
}

/// Keeps only the selected properties; the keys and the timestamp are always kept.
fn project(mut entity: Entity, select: Option<&[String]>) -> Entity {
    if let Some(names) = select {
        entity
            .properties
            .retain(|name, _| names.iter().any(|n| n == name));
    }
    entity
}

/// The first key a page of `spec` over table `table_id` may read: where its range is looked up.
pub fn first_key(table_id: u64, spec: &QuerySpec) -> Vec<u8> {
    let bounds = spec
        .filter
        .as_ref()
        .map_or_else(KeyBounds::unbounded, |f| f.key_bounds());
    let (mut start, _) = scan_range(table_id, &bounds);
    if let Some(c) = &spec.continuation {
        start = start.max(keys::data_key(table_id, &c.partition_key, &c.row_key));
    }
    start
}

/// The scan range `[start, end)` of the table's keys inside `bounds` (`end = None`: end of `Cf::Data`).
fn scan_range(table_id: u64, bounds: &KeyBounds) -> (Vec<u8>, Option<Vec<u8>>) {
    let (table_start, table_end) = table_span(table_id);
    let partition_start = |pk: &str| keys::partition_prefix(table_id, pk);
    let after_partition = |pk: &str| keys::prefix_end(&partition_start(pk));
    // With one PartitionKey pinned, the row bounds narrow within it.
    if let Some(pk) = bounds.partition_key() {
        let start = match &bounds.row.0 {
            Bound::Included(rk) => keys::data_key(table_id, pk, rk),
            Bound::Excluded(rk) => after(keys::data_key(table_id, pk, rk)),
            Bound::Unbounded => partition_start(pk),
        };
        let end = match &bounds.row.1 {
            Bound::Included(rk) => keys::prefix_end(&keys::data_key(table_id, pk, rk)),
            Bound::Excluded(rk) => Some(keys::data_key(table_id, pk, rk)),
            Bound::Unbounded => after_partition(pk),
        };
        return (start, end.or(table_end));
    }
    let start = match &bounds.partition.0 {
        Bound::Included(pk) => partition_start(pk),
        Bound::Excluded(pk) => after_partition(pk).unwrap_or_else(|| table_start.clone()),
        Bound::Unbounded => table_start,
    };
    let end = match &bounds.partition.1 {
        Bound::Included(pk) => after_partition(pk),
        Bound::Excluded(pk) => Some(partition_start(pk)),
        Bound::Unbounded => table_end.clone(),
    };
    (start, end.or(table_end))
}

/// The first key after every key that starts with `key`.
fn after(key: Vec<u8>) -> Vec<u8> {
    // A data key ends with 0x01 (its terminator), so it always has a prefix end.
    keys::prefix_end(&key).unwrap_or(key)
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
