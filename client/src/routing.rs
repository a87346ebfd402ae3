//! Where to send a call: the seed endpoints, the leader cache, and one lazily connected channel per node.
//!
//! Any node serves any request (a follower forwards to the leader), so routing is an optimisation and a
//! wrong guess costs one hop, never correctness. The cache remembers the leader's address per
//! (account, table, PartitionKey) as the cluster revealed it (a `NotLeader` redirect, or `Admin.Locate`);
//! per range of a table, as `Admin.Locate` describes it (the partitions from its first up to its end), so
//! every partition of a table split into ranges goes to its own range's leader and a partition not seen
//! yet is looked up only when no known range holds it; and per (account, table) as the last resort. A
//! range never splits a PartitionKey, so a range entry is right for every partition it covers until the
//! range splits, merges or changes leader — then the entry expires or a failed call drops it.
//!
//! Invariants:
//! - Every entry expires (`route_ttl`), so a client that is silently forwarded after a leader change
//!   finds the new leader on its next lookup. Negative entries ("no hint; use a seed") expire after
//!   `negative_route_ttl`; they stop a lookup storm when a table's leader is unknown or unreachable.
//! - An address that refused a connection is dropped from every entry at once (the node is down).
//! - The partition map is bounded ([`MAX_PARTITION_ENTRIES`]); when full it is cleared, falling back to
//!   the table-level hints.
//! - Calls without a route (table management) go to the current seed, which only moves on after a
//!   failure, so a healthy client keeps one warm connection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// Partition entries kept before the map is cleared.
pub(crate) const MAX_PARTITION_ENTRIES: usize = 10_000;

/// Range entries kept per table before that table's are cleared.
pub(crate) const MAX_RANGE_ENTRIES: usize = 1_024;

/// What a call touches, for the leader cache. Table names are case-folded (Azure compares them without
/// case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RouteKey {
    pub(crate) account: String,
    pub(crate) table: String,
    pub(crate) partition_key: String,
}

impl RouteKey {
    pub(crate) fn new(account: &str, table: &str, partition_key: &str) -> RouteKey {
        RouteKey {
            account: account.to_string(),
            table: table.to_ascii_lowercase(),
            partition_key: partition_key.to_string(),
        }
    }

    fn table_key(&self) -> (String, String) {
        (self.account.clone(), self.table.clone())
    }
}

/// A leader address (or the knowledge that there is none to use) and when it stops being trusted.
#[derive(Debug, Clone)]
struct Hint {
    addr: Option<String>,
    expires: Instant,
}

impl Hint {
    fn fresh(&self, now: Instant) -> bool {
        now < self.expires
    }
}

/// The partitions of a table one range holds: from `first` (`None`: the table's start) up to, not
/// including, `end` (`None`: the table's end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionSpan {
    pub(crate) first: Option<String>,
    pub(crate) end: Option<String>,
}

impl PartitionSpan {
    fn contains(&self, pk: &str) -> bool {
        self.first.as_deref().is_none_or(|f| pk >= f) && self.end.as_deref().is_none_or(|e| pk < e)
    }

    fn overlaps(&self, other: &PartitionSpan) -> bool {
        let before = |end: &Option<String>, first: &Option<String>| match (end, first) {
            (Some(e), Some(f)) => e <= f,
            _ => false,
        };
        !before(&self.end, &other.first) && !before(&other.end, &self.first)
    }
}

/// The leader cache. Pure: the caller passes the time, so tests drive it deterministically.
#[derive(Debug)]
pub(crate) struct RouteCache {
    tables: HashMap<(String, String), Hint>,
    partitions: HashMap<RouteKey, Hint>,
    ranges: HashMap<(String, String), Vec<(PartitionSpan, Hint)>>,
    ttl: Duration,
    negative_ttl: Duration,
}

impl RouteCache {
    pub(crate) fn new(ttl: Duration, negative_ttl: Duration) -> RouteCache {
        RouteCache {
            tables: HashMap::new(),
            partitions: HashMap::new(),
            ranges: HashMap::new(),
            ttl,
            negative_ttl,
        }
    }

    /// The fresh range entry holding `key`'s partition, if any.
    fn range_of(&self, key: &RouteKey, now: Instant) -> Option<&Hint> {
        self.ranges
            .get(&key.table_key())?
            .iter()
            .find(|(span, h)| h.fresh(now) && span.contains(&key.partition_key))
            .map(|(_, h)| h)
    }

    /// The leader to try for `key`: its partition's entry, else its range's, else its table's, if
    /// fresh and positive.
    pub(crate) fn leader(&self, key: &RouteKey, now: Instant) -> Option<String> {
        let hint = self
            .partitions
            .get(key)
            .filter(|h| h.fresh(now))
            .or_else(|| self.range_of(key, now))
            .or_else(|| self.tables.get(&key.table_key()).filter(|h| h.fresh(now)));
        hint.and_then(|h| h.addr.clone())
    }

    /// True when nothing fresh routes `key`'s partition — no partition or range entry, and no lookup
    /// of the table under way (a negative table entry) — so a lookup is worth its round trip. A table
    /// entry alone answers only while no range of the table is known (a server that does not
    /// describe ranges).
    pub(crate) fn needs_locate(&self, key: &RouteKey, now: Instant) -> bool {
        if self.partitions.get(key).is_some_and(|h| h.fresh(now))
            || self.range_of(key, now).is_some()
        {
            return false;
        }
        match self.tables.get(&key.table_key()).filter(|h| h.fresh(now)) {
            Some(h) if h.addr.is_none() => false,
            Some(_) => self
                .ranges
                .get(&key.table_key())
                .is_some_and(|r| r.iter().any(|(_, h)| h.fresh(now))),
            None => true,
        }
    }

    /// Records that `addr` leads the range holding `span` of `key`'s table (and `key`'s partition):
    /// older entries of ranges it overlaps go (the ranges split or merged since).
    pub(crate) fn learn_range(
        &mut self,
        key: &RouteKey,
        span: PartitionSpan,
        addr: &str,
        now: Instant,
    ) {
        self.learn(key, addr, now);
        let hint = Hint {
            addr: Some(addr.to_string()),
            expires: now + self.ttl,
        };
        let ranges = self.ranges.entry(key.table_key()).or_default();
        ranges.retain(|(s, h)| h.fresh(now) && !s.overlaps(&span));
        if ranges.len() >= MAX_RANGE_ENTRIES {
            ranges.clear();
        }
        ranges.push((span, hint));
    }

    /// Records that `addr` leads `key`'s partition (and, as the best guess, its table).
    pub(crate) fn learn(&mut self, key: &RouteKey, addr: &str, now: Instant) {
        let hint = Hint {
            addr: Some(addr.to_string()),
            expires: now + self.ttl,
        };
        if self.partitions.len() >= MAX_PARTITION_ENTRIES && !self.partitions.contains_key(key) {
            self.partitions.clear();
        }
        self.partitions.insert(key.clone(), hint.clone());
        self.tables.insert(key.table_key(), hint);
    }

    /// Records that the table's leader is not known (a lookup is under way or failed).
    pub(crate) fn mark_unknown(&mut self, key: &RouteKey, now: Instant) {
        let hint = Hint {
            addr: None,
            expires: now + self.negative_ttl,
        };
        self.partitions.remove(key);
        self.tables.insert(key.table_key(), hint);
    }

    /// `addr` turned out not to lead `key`'s partition: drop the entries that say it does.
    pub(crate) fn forget(&mut self, key: &RouteKey, addr: &str) {
        if self
            .partitions
            .get(key)
            .is_some_and(|h| h.addr.as_deref() == Some(addr))
        {
            self.partitions.remove(key);
        }
        let table = key.table_key();
        if self
            .tables
            .get(&table)
            .is_some_and(|h| h.addr.as_deref() == Some(addr))
        {
            self.tables.remove(&table);
        }
        if let Some(ranges) = self.ranges.get_mut(&table) {
            ranges.retain(|(s, h)| {
                !(s.contains(&key.partition_key) && h.addr.as_deref() == Some(addr))
            });
        }
    }

    /// `addr` could not be reached: no entry may send calls there until it is learned again. Table
    /// entries become negative, so the next call does not immediately look the leader up again.
    pub(crate) fn forget_address(&mut self, addr: &str, now: Instant) {
        self.partitions
            .retain(|_, h| h.addr.as_deref() != Some(addr));
        for ranges in self.ranges.values_mut() {
            ranges.retain(|(_, h)| h.addr.as_deref() != Some(addr));
        }
        for h in self.tables.values_mut() {
            if h.addr.as_deref() == Some(addr) {
                *h = Hint {
                    addr: None,
                    expires: now + self.negative_ttl,
                };
            }
        }
    }

    #[cfg(test)]
    fn partition_entries(&self) -> usize {
        self.partitions.len()
    }
}

/// Normalises an endpoint: `host:port` gets `scheme://` in front; a trailing `/` goes.
pub(crate) fn normalize(addr: &str, scheme: &str) -> String {
    let addr = addr.trim().trim_end_matches('/');
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("{scheme}://{addr}")
    }
}

/// Seeds, the leader cache and the channels of one client (shared by its clones).
pub(crate) struct Router {
    seeds: Vec<String>,
    /// The scheme of the first seed, given to leader addresses the cluster names as `host:port`.
    scheme: String,
    /// Index (mod seeds.len()) of the seed calls without a better route go to.
    cursor: AtomicUsize,
    channels: Mutex<HashMap<String, Channel>>,
    cache: Mutex<RouteCache>,
    connect_timeout: Duration,
    /// TLS for `https://` endpoints: the configured CA (or the public web roots) and identity.
    tls: tonic::transport::ClientTlsConfig,
}

impl Router {
    /// Checks and normalises the seed endpoints; connects nothing yet.
    pub(crate) fn new(endpoints: Vec<String>, cfg: &ClientConfig) -> Result<Router> {
        let mut seeds: Vec<String> = Vec::new();
        for e in endpoints {
            let uri = normalize(&e, "http");
            Endpoint::from_shared(uri.clone())
                .map_err(|err| Error::InvalidArgument(format!("bad endpoint {e:?}: {err}")))?;
            if !seeds.contains(&uri) {
                seeds.push(uri);
            }
        }
        let scheme = match seeds.first() {
            Some(first) => first.split("://").next().unwrap_or("http").to_string(),
            None => {
                return Err(Error::InvalidArgument(
                    "at least one endpoint is needed".into(),
                ));
            }
        };
        Ok(Router {
            seeds,
            scheme,
            cursor: AtomicUsize::new(0),
            channels: Mutex::new(HashMap::new()),
            cache: Mutex::new(RouteCache::new(cfg.route_ttl, cfg.negative_route_ttl)),
            connect_timeout: cfg.connect_timeout,
            tls: cfg.tls.client_config(),
        })
    }

    /// The seed calls without a route go to.
    pub(crate) fn seed(&self) -> String {
        let i = self.cursor.load(Ordering::Relaxed) % self.seeds.len();
        self.seeds[i].clone()
    }

    /// Moves the seed cursor past `addr` if it points there (the seed failed); other callers that
    /// already moved it are not undone.
    pub(crate) fn skip_seed(&self, addr: &str) {
        let i = self.cursor.load(Ordering::Relaxed);
        if self.seeds[i % self.seeds.len()] == addr {
            let _ = self.cursor.compare_exchange(
                i,
                i.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// A leader address as the cluster names it, in the seeds' URI form.
    pub(crate) fn normalize(&self, addr: &str) -> String {
        normalize(addr, &self.scheme)
    }

    /// Where a call on `key` goes: the cached leader, else the current seed.
    pub(crate) fn address_for(&self, key: Option<&RouteKey>) -> String {
        key.and_then(|k| self.cache().leader(k, Instant::now()))
            .unwrap_or_else(|| self.seed())
    }

    /// The leader cache. A panic while it was held left at worst a stale hint, so poisoning is ignored.
    pub(crate) fn cache(&self) -> std::sync::MutexGuard<'_, RouteCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The channel to `addr`, created on first use; it connects (and reconnects) by itself.
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let bad = |e: tonic::transport::Error| {
            Error::InvalidArgument(format!("bad node address {addr:?}: {e}"))
        };
        let mut endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(bad)?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if addr.starts_with("https://") {
            endpoint = endpoint.tls_config(self.tls.clone()).map_err(bad)?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);
    const NEG: Duration = Duration::from_secs(2);

    fn key(pk: &str) -> RouteKey {
        RouteKey::new("acct", "Orders", pk)
    }

    #[test]
    fn a_learned_leader_serves_its_partition_and_its_table() {
        let now = Instant::now();
        let mut c = RouteCache::new(TTL, NEG);
        assert_eq!(c.leader(&key("p1"), now), None);
        assert!(c.needs_locate(&key("p1"), now));
        c.learn(&key("p1"), "http://b:1", now);
        assert_eq!(c.leader(&key("p1"), now).as_deref(), Some("http://b:1"));
        // An unseen partition of the same table (any case of its name) uses the table's hint.
        assert_eq!(
            c.leader(&RouteKey::new("acct", "ORDERS", "p2"), now)
                .as_deref(),
            Some("http://b:1")
        );
        assert!(!c.needs_locate(&key("p2"), now));
        // Another account's table of the same name is another table.
        assert_eq!(c.leader(&RouteKey::new("other", "orders", "p1"), now), None);
        // A partition with its own leader keeps it.
        c.learn(&key("p2"), "http://c:1", now);
        assert_eq!(c.leader(&key("p1"), now).as_deref(), Some("http://b:1"));
        assert_eq!(c.leader(&key("p2"), now).as_deref(), Some("http://c:1"));
    }

    #[test]
    fn each_range_of_a_split_table_routes_the_partitions_it_holds() {
        let now = Instant::now();
        let mut c = RouteCache::new(TTL, NEG);
        let span = |first: Option<&str>, end: Option<&str>| PartitionSpan {
            first: first.map(str::to_string),
            end: end.map(str::to_string),
        };
        // The table is cut at "m": a lookup of "c" describes the left range, led by b.
        c.learn_range(&key("c"), span(None, Some("m")), "http://b:1", now);
        assert_eq!(c.leader(&key("a"), now).as_deref(), Some("http://b:1"));
        assert!(!c.needs_locate(&key("l"), now), "the left range holds l");
        // A partition of the right range is looked up (not sent to the left range's leader's guess
        // for ever), and then every partition there goes to its own leader.
        assert!(c.needs_locate(&key("m"), now));
        c.learn_range(&key("x"), span(Some("m"), None), "http://c:1", now);
        assert!(!c.needs_locate(&key("m"), now));
        assert_eq!(c.leader(&key("m"), now).as_deref(), Some("http://c:1"));
        assert_eq!(c.leader(&key("zz"), now).as_deref(), Some("http://c:1"));
        assert_eq!(c.leader(&key("c"), now).as_deref(), Some("http://b:1"));
        // The two merge: the merged range's entry replaces both.
        c.learn_range(&key("a"), span(None, None), "http://d:1", now);
        assert_eq!(c.leader(&key("q"), now).as_deref(), Some("http://d:1"));
        assert_eq!(c.ranges[&key("a").table_key()].len(), 1);
        // A failed call drops the range's entry, and an unreachable node every entry naming it.
        c.forget(&key("q"), "http://d:1");
        assert!(c.needs_locate(&key("b"), now));
        c.learn_range(&key("c"), span(None, Some("m")), "http://b:1", now);
        c.forget_address("http://b:1", now);
        assert_eq!(c.leader(&key("c"), now), None);
        // Range entries expire like the others.
        c.learn_range(&key("c"), span(None, Some("m")), "http://b:1", now);
        assert!(c.needs_locate(&key("c"), now + TTL));
    }

    #[test]
    fn entries_expire() {
        let now = Instant::now();
        let mut c = RouteCache::new(TTL, NEG);
        c.learn(&key("p"), "http://b:1", now);
        assert!(
            c.leader(&key("p"), now + TTL - Duration::from_millis(1))
                .is_some()
        );
        assert_eq!(c.leader(&key("p"), now + TTL), None);
        assert!(c.needs_locate(&key("p"), now + TTL));

        c.mark_unknown(&key("p"), now);
        assert_eq!(c.leader(&key("p"), now), None);
        assert!(!c.needs_locate(&key("p"), now + NEG - Duration::from_millis(1)));
        assert!(c.needs_locate(&key("p"), now + NEG));
    }

    #[test]
    fn a_redirect_replaces_only_the_wrong_entry() {
        let now = Instant::now();
        let mut c = RouteCache::new(TTL, NEG);
        c.learn(&key("p1"), "http://a:1", now);
        c.forget(&key("p1"), "http://z:9");
        assert_eq!(
            c.leader(&key("p1"), now).as_deref(),
            Some("http://a:1"),
            "another address is kept"
        );
        c.forget(&key("p1"), "http://a:1");
        assert_eq!(c.leader(&key("p1"), now), None);
        c.learn(&key("p1"), "http://b:1", now);
        assert_eq!(c.leader(&key("p1"), now).as_deref(), Some("http://b:1"));
    }

    #[test]
    fn an_unreachable_node_is_dropped_everywhere() {
        let now = Instant::now();
        let mut c = RouteCache::new(TTL, NEG);
        c.learn(&key("p1"), "http://a:1", now);
        c.learn(&RouteKey::new("acct", "people", "x"), "http://a:1", now);
        c.learn(&RouteKey::new("acct", "other", "y"), "http://b:1", now);
        c.forget_address("http://a:1", now);
        assert_eq!(c.leader(&key("p1"), now), None);
        assert_eq!(c.leader(&RouteKey::new("acct", "people", "x"), now), None);
        assert!(
            !c.needs_locate(&key("p1"), now),
            "no immediate lookup of the dead node's tables"
        );
        assert_eq!(
            c.leader(&RouteKey::new("acct", "other", "y"), now)
                .as_deref(),
            Some("http://b:1")
        );
    }

    #[test]
    fn the_partition_map_is_bounded() {
        let now = Instant::now();
        let mut c = RouteCache::new(TTL, NEG);
        for i in 0..MAX_PARTITION_ENTRIES + 5 {
            c.learn(&key(&format!("p{i}")), "http://a:1", now);
        }
        assert!(c.partition_entries() <= MAX_PARTITION_ENTRIES);
        assert_eq!(
            c.leader(&key("p0"), now).as_deref(),
            Some("http://a:1"),
            "the table hint remains"
        );
    }

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(normalize("127.0.0.1:7100", "http"), "http://127.0.0.1:7100");
        assert_eq!(normalize(" http://h:1/ ", "http"), "http://h:1");
        assert_eq!(normalize("h:1", "https"), "https://h:1");
    }

    #[tokio::test]
    async fn seeds_rotate_only_past_a_failed_seed() {
        let cfg = ClientConfig::default();
        let eps = vec![
            "127.0.0.1:1".to_string(),
            "http://127.0.0.1:2".into(),
            "127.0.0.1:1".into(),
        ];
        let r = Router::new(eps, &cfg).unwrap();
        assert_eq!(r.seed(), "http://127.0.0.1:1");
        r.skip_seed("http://127.0.0.1:2"); // not the current seed: no effect
        assert_eq!(r.seed(), "http://127.0.0.1:1");
        r.skip_seed("http://127.0.0.1:1");
        assert_eq!(r.seed(), "http://127.0.0.1:2");
        r.skip_seed("http://127.0.0.1:2");
        assert_eq!(
            r.seed(),
            "http://127.0.0.1:1",
            "duplicates were removed; the cursor wraps"
        );
        assert_eq!(r.normalize("10.0.0.2:7100"), "http://10.0.0.2:7100");
        assert!(r.channel("http://127.0.0.1:1").is_ok());
        assert!(Router::new(Vec::new(), &cfg).is_err());
        assert!(Router::new(vec!["http://bad host:1".into()], &cfg).is_err());
    }
}
