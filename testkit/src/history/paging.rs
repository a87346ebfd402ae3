//! Paged queries: a query continued page by page (continuation tokens) must return every entity that
//! existed for the whole query exactly once, in key order.
//!
//! Entities inserted or deleted while the query ran may or may not appear — Azure Table promises no
//! snapshot across pages — so the caller passes only the keys known to exist throughout (inserted
//! before the first page was requested and not deleted until the last one was answered; for a filtered
//! query, only those matching the filter). The checker reports:
//!
//! - a key returned twice (a continuation that restarted too early);
//! - a key not greater than the one returned before it, within a page or across a page boundary
//!   (results must come in partition key, row key order);
//! - a key that existed throughout and was never returned (a continuation that skipped ahead).
//!
//! Keys are generic so that callers can pass `(partition key, row key)` pairs and get the service's
//! order, which is not the order of the two strings joined.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One thing wrong with a paged query's results. Pages are numbered from 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PagingViolation<K> {
    /// `key` came back on `page` after already coming back on `first_page`.
    Duplicate {
        key: K,
        first_page: usize,
        page: usize,
    },
    /// `key` on `page` does not sort after `previous`, the key returned just before it.
    OutOfOrder { key: K, previous: K, page: usize },
    /// `key` existed throughout the query and was never returned.
    Skipped { key: K },
}

impl<K: fmt::Debug> fmt::Display for PagingViolation<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagingViolation::Duplicate {
                key,
                first_page,
                page,
            } => write!(
                f,
                "{key:?} returned on page {page} and already on page {first_page}"
            ),
            PagingViolation::OutOfOrder {
                key,
                previous,
                page,
            } => write!(f, "{key:?} on page {page} does not sort after {previous:?}"),
            PagingViolation::Skipped { key } => {
                write!(
                    f,
                    "{key:?} existed throughout the query but was not returned"
                )
            }
        }
    }
}

/// Checks the `pages` of one query (the keys of each page, in the order returned) against the keys
/// that `existed` throughout it. Violations come in the order found, skipped keys last.
pub fn check<K: Ord + Clone>(pages: &[Vec<K>], existed: &BTreeSet<K>) -> Vec<PagingViolation<K>> {
    let mut violations = Vec::new();
    let mut returned: BTreeMap<&K, usize> = BTreeMap::new();
    let mut previous: Option<&K> = None;
    for (page, keys) in pages.iter().enumerate() {
        for key in keys {
            if let Some(&first_page) = returned.get(key) {
                violations.push(PagingViolation::Duplicate {
                    key: key.clone(),
                    first_page,
                    page,
                });
            } else {
                if let Some(previous) = previous.filter(|p| *p >= key) {
                    violations.push(PagingViolation::OutOfOrder {
                        key: key.clone(),
                        previous: previous.clone(),
                        page,
                    });
                }
                returned.insert(key, page);
            }
            previous = Some(key);
        }
    }
    violations.extend(
        existed
            .iter()
            .filter(|k| !returned.contains_key(k))
            .map(|k| PagingViolation::Skipped { key: k.clone() }),
    );
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(pages: &[&[&str]]) -> Vec<Vec<String>> {
        pages
            .iter()
            .map(|p| p.iter().map(|k| k.to_string()).collect())
            .collect()
    }

    fn keys(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn every_key_once_in_order_passes_even_with_keys_inserted_during_the_query() {
        let returned = pages(&[&["a", "b"], &["c", "c2"], &[], &["d"]]);
        // "c2" was inserted while the query ran; "b2" was deleted while it ran and is not expected.
        assert_eq!(check(&returned, &keys(&["a", "b", "c", "d"])), vec![]);
    }

    #[test]
    fn a_page_skipping_a_key_is_reported() {
        let returned = pages(&[&["a", "b"], &["d"]]);
        let violations = check(&returned, &keys(&["a", "b", "c", "d"]));
        assert_eq!(
            violations,
            vec![PagingViolation::Skipped {
                key: "c".to_string()
            }]
        );
        assert!(violations[0].to_string().contains("not returned"));
    }

    #[test]
    fn a_page_repeating_a_key_is_reported_once() {
        let returned = pages(&[&["a", "b"], &["b", "c"]]);
        assert_eq!(
            check(&returned, &keys(&["a", "b", "c"])),
            vec![PagingViolation::Duplicate {
                key: "b".to_string(),
                first_page: 0,
                page: 1
            }]
        );
    }

    #[test]
    fn keys_out_of_order_are_reported() {
        let returned = pages(&[&["a", "c"], &["b", "d"]]);
        assert_eq!(
            check(&returned, &keys(&["a", "b", "c", "d"])),
            vec![PagingViolation::OutOfOrder {
                key: "b".to_string(),
                previous: "c".to_string(),
                page: 1
            }]
        );
    }

    #[test]
    fn partition_and_row_keys_sort_as_a_pair() {
        // Joined with '/', "p!/a" sorts before "p/z"; as pairs ("p", "z") comes first, as the service
        // returns them.
        let returned = vec![
            vec![("p".to_string(), "z".to_string())],
            vec![("p!".to_string(), "a".to_string())],
        ];
        let existed: BTreeSet<_> = returned.iter().flatten().cloned().collect();
        assert_eq!(check(&returned, &existed), vec![]);
        let reversed: Vec<_> = returned.iter().rev().cloned().collect();
        assert_eq!(check(&reversed, &existed).len(), 1);
    }
}
