//! In-process Raft clusters on the memory engine and the memory network: replication, elections,
//! partitions, restarts and snapshots, with a tiny key-value state machine.
//!
//! Tests wait on conditions with deadlines (`eventually`), never on fixed sleeps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trestle_engine::{Cf, Engine, MemoryEngine, WriteBatch};

use crate::memory::MemoryNetwork;
use crate::{
    ApplyError, Config, Epoch, GroupDesc, GroupHost, ProposeError, RaftNode, Span, StateMachine,
};

mod merges;
mod snapshots;

const GROUP: u64 = 7;

/// `key=value` puts `value` at `key` in `Cf::Data`; the response is the applied index, or `outside`
/// (nothing written) when the key is not in the group's span.
struct KvMachine {
    span: Span,
}

const OUTSIDE: &[u8] = b"outside";

impl StateMachine for KvMachine {
    fn apply(
        &mut self,
        _engine: &dyn Engine,
        batch: &mut WriteBatch,
        index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, ApplyError> {
        let text = std::str::from_utf8(command).map_err(|e| ApplyError(e.to_string()))?;
        if let Some((k, v)) = text.split_once('=') {
            if !self.span.contains(Cf::Data, k.as_bytes()) {
                return Ok(OUTSIDE.to_vec());
            }
            batch.put(Cf::Data, k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        Ok(index.to_le_bytes().to_vec())
    }

    fn on_desc_changed(&mut self, desc: &GroupDesc) {
        self.span = desc.span.clone();
    }
}

/// Every group of these tests runs the [`KvMachine`].
struct KvHost;

impl GroupHost for KvHost {
    fn state_machine(&self, desc: &GroupDesc) -> Box<dyn StateMachine> {
        Box::new(KvMachine {
            span: desc.span.clone(),
        })
    }
}

fn desc() -> GroupDesc {
    GroupDesc {
        id: GROUP,
        voters: vec![1, 2, 3],
        learners: vec![],
        voters_outgoing: Vec::new(),
        span: Span {
            cf: Cf::Data,
            start: vec![],
            end: None,
        },
        epoch: Epoch::INITIAL,
    }
}

struct Cluster {
    net: Arc<MemoryNetwork>,
    engines: Vec<Arc<MemoryEngine>>,
    nodes: Vec<Option<Arc<RaftNode>>>,
    config: Config,
}

impl Cluster {
    async fn new(config: Config) -> Cluster {
        Cluster::with_nodes(3, config).await
    }

    /// `n` nodes; the group is bootstrapped on nodes 1–3, the others start with no replica.
    async fn with_nodes(n: usize, config: Config) -> Cluster {
        let mut c = Cluster {
            net: Arc::new(MemoryNetwork::new()),
            engines: (0..n).map(|_| Arc::new(MemoryEngine::new())).collect(),
            nodes: vec![None; n],
            config,
        };
        for id in 1..=n as u64 {
            c.start(id).await;
        }
        c
    }

    async fn start(&mut self, id: u64) {
        self.start_with(id, id <= 3).await;
    }

    /// Starts node `id`; `bootstrap`: host the group from its descriptor (a new store bootstraps it).
    async fn start_with(&mut self, id: u64, bootstrap: bool) {
        let engine: Arc<dyn Engine> = self.engines[(id - 1) as usize].clone();
        let node = Arc::new(
            RaftNode::start(
                id,
                engine,
                self.net.transport(id),
                self.config.clone(),
                Arc::new(KvHost),
            )
            .unwrap(),
        );
        self.net.register(id, node.mailbox());
        node.restore_groups().await.unwrap();
        if bootstrap {
            node.create_group(desc()).await.unwrap();
        }
        self.nodes[(id - 1) as usize] = Some(node);
    }

    fn stop(&mut self, id: u64) {
        self.net.unregister(id);
        if let Some(n) = self.nodes[(id - 1) as usize].take() {
            n.shutdown();
        }
    }

    fn node(&self, id: u64) -> &Arc<RaftNode> {
        self.nodes[(id - 1) as usize]
            .as_ref()
            .expect("node is running")
    }

    async fn leader(&self, among: &[u64]) -> u64 {
        self.leader_of(GROUP, among).await
    }

    async fn leader_of(&self, group: u64, among: &[u64]) -> u64 {
        eventually(Duration::from_secs(10), || {
            among.iter().copied().find(|&id| {
                self.nodes[(id - 1) as usize]
                    .as_ref()
                    .and_then(|n| n.group_status(group))
                    .is_some_and(|s| s.role == crate::Role::Leader)
            })
        })
        .await
        .expect("a leader is elected")
    }

    /// Proposes through whichever of `among` leads, retrying across elections.
    async fn must_put(&self, among: &[u64], key: &str, value: &str) {
        let response = self.put_in(GROUP, among, key, value).await;
        assert_ne!(response, OUTSIDE, "{key} is outside group {GROUP}");
    }

    /// Proposes `key=value` to `group` through whichever of `among` leads; the state machine's response.
    async fn put_in(&self, group: u64, among: &[u64], key: &str, value: &str) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = self.leader_of(group, among).await;
            match self
                .node(leader)
                .propose(group, format!("{key}={value}").into_bytes())
                .await
            {
                Ok(response) => return response,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "retrying proposal");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("put {key} failed: {e}"),
            }
        }
    }

    fn get(&self, id: u64, key: &str) -> Option<String> {
        self.engines[(id - 1) as usize]
            .get(Cf::Data, key.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    async fn must_get_equal(&self, id: u64, key: &str, value: &str) {
        let found = eventually(Duration::from_secs(10), || {
            (self.get(id, key).as_deref() == Some(value)).then_some(())
        })
        .await;
        assert!(
            found.is_some(),
            "node {id}: {key} = {:?}, want {value}",
            self.get(id, key)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.stop(id);
        }
    }
}

/// Polls `f` until it returns `Some` or the deadline passes.
async fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t01_a_write_reaches_all_three_replicas() {
    let c = Cluster::new(Config::for_test()).await;
    c.must_put(&[1, 2, 3], "k1", "v1").await;
    for id in 1..=3 {
        c.must_get_equal(id, "k1", "v1").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t02_followers_refuse_proposals_and_name_the_leader() {
    let c = Cluster::new(Config::for_test()).await;
    let leader = c.leader(&[1, 2, 3]).await;
    c.must_put(&[1, 2, 3], "k", "v").await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let err = c
        .node(follower)
        .propose(GROUP, b"x=y".to_vec())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProposeError::NotLeader {
            leader: Some(leader)
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t03_leader_failure_elects_a_new_leader_and_writes_continue() {
    let mut c = Cluster::new(Config::for_test()).await;
    c.must_put(&[1, 2, 3], "before", "1").await;
    let old = c.leader(&[1, 2, 3]).await;
    c.stop(old);
    let rest: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    c.must_put(&rest, "after", "2").await;
    for &id in &rest {
        c.must_get_equal(id, "before", "1").await;
        c.must_get_equal(id, "after", "2").await;
    }
    // The old leader restarts from its engine and catches up.
    c.start(old).await;
    c.must_get_equal(old, "after", "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t04_minority_partition_cannot_commit_majority_keeps_going() {
    let c = Cluster::new(Config::for_test()).await;
    c.must_put(&[1, 2, 3], "a", "1").await;
    let leader = c.leader(&[1, 2, 3]).await;
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    c.net.partition(&[&[leader], &others]);

    // The isolated old leader cannot commit: its proposal never applies.
    let isolated = c.node(leader).clone();
    let stuck = tokio::time::timeout(
        Duration::from_millis(600),
        isolated.propose(GROUP, b"lost=1".to_vec()),
    )
    .await;
    assert!(
        !matches!(stuck, Ok(Ok(_))),
        "a minority leader acknowledged a write"
    );

    c.must_put(&others, "b", "2").await;
    c.net.heal();
    for id in 1..=3 {
        c.must_get_equal(id, "b", "2").await;
    }
    // The minority's unacknowledged entry was overwritten, never applied anywhere.
    for id in 1..=3 {
        assert_eq!(c.get(id, "lost"), None, "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t05_read_index_is_refused_by_a_deposed_leader() {
    let c = Cluster::new(Config::for_test()).await;
    c.must_put(&[1, 2, 3], "a", "1").await;
    let leader = c.leader(&[1, 2, 3]).await;
    c.node(leader).read_index(GROUP).await.unwrap();
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    c.net.partition(&[&[leader], &others]);
    c.must_put(&others, "a", "2").await;
    // The old leader must not serve a stale read: ReadIndex needs a quorum it no longer has.
    let stale =
        tokio::time::timeout(Duration::from_millis(800), c.node(leader).read_index(GROUP)).await;
    assert!(
        !matches!(stale, Ok(Ok(()))),
        "a deposed leader served a linearizable read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t06_wiped_replica_is_restored_by_snapshot() {
    let config = Config {
        log_compact_threshold: 20,
        ..Config::for_test()
    };
    let mut c = Cluster::new(config).await;
    for i in 0..100 {
        c.must_put(&[1, 2, 3], &format!("k{i:03}"), &i.to_string())
            .await;
    }
    let leader = c.leader(&[1, 2, 3]).await;
    let first = c.node(leader).group_status(GROUP).unwrap().first_index;
    assert!(
        first > 50,
        "the leader's log was compacted (first index {first})"
    );

    let victim = (1..=3).find(|&id| id != leader).unwrap();
    c.stop(victim);
    c.engines[(victim - 1) as usize] = Arc::new(MemoryEngine::new());
    // A lost disk bootstraps nothing: the replica comes back empty on the leader's contact.
    c.start_with(victim, false).await;
    c.must_put(&[1, 2, 3], "after-wipe", "yes").await;
    c.must_get_equal(victim, "k000", "0").await;
    c.must_get_equal(victim, "k099", "99").await;
    c.must_get_equal(victim, "after-wipe", "yes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t07_leader_transfer_moves_leadership() {
    let c = Cluster::new(Config::for_test()).await;
    c.must_put(&[1, 2, 3], "a", "1").await;
    let leader = c.leader(&[1, 2, 3]).await;
    let target = (1..=3).find(|&id| id != leader).unwrap();
    c.node(leader).transfer_leader(GROUP, target).await.unwrap();
    let moved = eventually(Duration::from_secs(5), || {
        (c.node(target).group_status(GROUP).map(|s| s.role) == Some(crate::Role::Leader))
            .then_some(())
    })
    .await;
    assert!(moved.is_some(), "leadership moved to node {target}");
    c.must_put(&[target], "b", "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t08_restart_of_every_node_keeps_every_acknowledged_write() {
    let mut c = Cluster::new(Config::for_test()).await;
    for i in 0..30 {
        c.must_put(&[1, 2, 3], &format!("k{i}"), "v").await;
    }
    for id in 1..=3 {
        c.stop(id);
    }
    // Power loss: only what was synced survives.
    for e in c.engines.iter_mut() {
        *e = Arc::new(e.crash_copy());
    }
    for id in 1..=3 {
        c.start(id).await;
    }
    for id in 1..=3 {
        for i in 0..30 {
            c.must_get_equal(id, &format!("k{i}"), "v").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t09_message_loss_and_delay_do_not_lose_writes() {
    let c = Cluster::new(Config::for_test()).await;
    c.net.set_drop_rate(0.2);
    c.net.set_delay(Duration::from_millis(3));
    for i in 0..20 {
        c.must_put(&[1, 2, 3], &format!("k{i}"), &i.to_string())
            .await;
    }
    let (_, dropped) = c.net.counters();
    assert!(dropped > 0, "the filter dropped messages");
    c.net.heal();
    for id in 1..=3 {
        c.must_get_equal(id, "k19", "19").await;
    }
}

/// Splits `GROUP` at `key` into a new group `right` through its leader among `among`.
async fn split(c: &Cluster, among: &[u64], key: &str, right: u64) -> (GroupDesc, GroupDesc) {
    let leader = c.leader(among).await;
    let version = c
        .node(leader)
        .group_status(GROUP)
        .unwrap()
        .desc
        .unwrap()
        .epoch
        .version;
    let req = crate::SplitRequest {
        key: key.as_bytes().to_vec(),
        new_group: right,
        version,
    };
    c.node(leader).split(GROUP, req).await.expect("split")
}

/// Waits until node `id` hosts an initialized replica of `group` with `span`'s start.
async fn must_host(c: &Cluster, id: u64, group: u64, start: &str) -> GroupDesc {
    eventually(Duration::from_secs(10), || {
        c.node(id)
            .group_status(group)?
            .desc
            .filter(|d| d.span.start == start.as_bytes())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "node {id} hosts group {group} from {start:?}: {:?}",
            c.node(id).group_status(group)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_split_creates_the_right_half_on_every_replica_without_copying() {
    let c = Cluster::new(Config::for_test()).await;
    c.must_put(&[1, 2, 3], "a", "1").await;
    c.must_put(&[1, 2, 3], "x", "1").await;
    let (left, right) = split(&c, &[1, 2, 3], "m", 8).await;
    assert_eq!(left.span.end.as_deref(), Some(&b"m"[..]));
    assert_eq!(right.span.start, b"m");
    assert_eq!(right.span.end, None);
    assert_eq!(left.epoch.version, 2);
    assert_eq!(right.epoch, left.epoch);
    assert_eq!(right.voters, vec![1, 2, 3]);
    for id in 1..=3 {
        must_host(&c, id, 8, "m").await;
        // The parent's status is published at the end of the driver's turn, the new group's at once.
        let l = eventually(Duration::from_secs(5), || {
            c.node(id)
                .group_status(GROUP)?
                .desc
                .filter(|d| d.span.end.as_deref() == Some(&b"m"[..]))
        })
        .await;
        assert!(
            l.is_some(),
            "node {id}: {:?}",
            c.node(id).group_status(GROUP)
        );
    }
    // The left group no longer owns "x"; the right one does, and its data is the parent's.
    assert_eq!(c.put_in(GROUP, &[1, 2, 3], "y", "2").await, OUTSIDE);
    assert_ne!(c.put_in(8, &[1, 2, 3], "y", "2").await, OUTSIDE);
    assert_eq!(c.put_in(8, &[1, 2, 3], "b", "2").await, OUTSIDE);
    for id in 1..=3 {
        c.must_get_equal(id, "x", "1").await;
        c.must_get_equal(id, "y", "2").await;
    }
    // A split planned on the old version, or at the span's edge, changes nothing.
    let leader = c.leader(&[1, 2, 3]).await;
    let stale = crate::SplitRequest {
        key: b"c".to_vec(),
        new_group: 9,
        version: 1,
    };
    assert!(matches!(
        c.node(leader).split(GROUP, stale).await,
        Err(ProposeError::SplitRefused(
            crate::SplitRefused::EpochStale {
                current: 2,
                planned: 1
            }
        ))
    ));
    let edge = crate::SplitRequest {
        key: b"m".to_vec(),
        new_group: 9,
        version: 2,
    };
    assert!(matches!(
        c.node(leader).split(GROUP, edge).await,
        Err(ProposeError::SplitRefused(crate::SplitRefused::KeyOutside))
    ));
    assert!(c.node(leader).group_status(9).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_a_restarted_node_keeps_split_groups_and_a_lagging_one_applies_the_split_from_the_log()
{
    let mut c = Cluster::new(Config::for_test()).await;
    c.must_put(&[1, 2, 3], "x", "1").await;
    c.stop(3);
    split(&c, &[1, 2], "m", 8).await;
    c.put_in(8, &[1, 2], "y", "2").await;
    c.start(3).await;
    must_host(&c, 3, 8, "m").await;
    c.must_get_equal(3, "y", "2").await;
    // After a restart every node hosts both groups again, from its own state.
    for id in 1..=3 {
        c.stop(id);
        c.start(id).await;
    }
    for id in 1..=3 {
        must_host(&c, id, 8, "m").await;
    }
    c.put_in(8, &[1, 2, 3], "z", "3").await;
    c.must_put(&[1, 2, 3], "b", "3").await;
    for id in 1..=3 {
        c.must_get_equal(id, "z", "3").await;
        c.must_get_equal(id, "b", "3").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_a_node_that_missed_a_split_behind_a_compacted_log_catches_up_by_snapshots() {
    let config = Config {
        log_compact_threshold: 10,
        ..Config::for_test()
    };
    let mut c = Cluster::new(config).await;
    c.must_put(&[1, 2, 3], "x", "old").await;
    c.stop(3);
    split(&c, &[1, 2], "m", 8).await;
    for i in 0..40 {
        c.must_put(&[1, 2], &format!("a{i:02}"), "1").await;
        c.put_in(8, &[1, 2], &format!("y{i:02}"), "1").await;
    }
    c.put_in(8, &[1, 2], "x", "new").await;
    let leader = c.leader(&[1, 2]).await;
    let first = c.node(leader).group_status(GROUP).unwrap().first_index;
    assert!(
        first > 10,
        "the parent's log was compacted past the split ({first})"
    );
    c.start(3).await;
    // Node 3's parent replica is restored with the narrower span; the right half starts empty on the
    // first message from its leader and is restored by its own snapshot, replacing the stale keys.
    let left = must_host(&c, 3, GROUP, "").await;
    must_host(&c, 3, 8, "m").await;
    c.must_get_equal(3, "x", "new").await;
    c.must_get_equal(3, "y39", "1").await;
    c.must_get_equal(3, "a39", "1").await;
    let left_now = c.node(3).group_status(GROUP).unwrap().desc.unwrap();
    assert_eq!(left_now.span.end.as_deref(), Some(&b"m"[..]), "{left:?}");
    assert_eq!(c.put_in(8, &[1, 2, 3], "q", "4").await.len(), 8);
    c.must_get_equal(3, "q", "4").await;
}

/// Waits until `group`'s leader among `among` has applied a descriptor that satisfies `ok`.
async fn must_see_desc(
    c: &Cluster,
    among: &[u64],
    group: u64,
    ok: impl Fn(&GroupDesc) -> bool,
) -> GroupDesc {
    let found = eventually(Duration::from_secs(10), || {
        among.iter().find_map(|&id| {
            let s = c.nodes[(id - 1) as usize].as_ref()?.group_status(group)?;
            (s.role == crate::Role::Leader)
                .then_some(s.desc?)
                .filter(|d| ok(d))
        })
    })
    .await;
    found.unwrap_or_else(|| panic!("group {group} never reached the expected configuration"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_a_replica_moves_to_a_new_node_through_a_learner_and_a_joint_change() {
    use crate::MembershipChange::*;
    let config = Config {
        log_compact_threshold: 10,
        ..Config::for_test()
    };
    let c = Cluster::with_nodes(4, config).await;
    for i in 0..40 {
        c.must_put(&[1, 2, 3], &format!("k{i:02}"), "v").await;
    }
    // Node 1's replica moves to node 4; node 1 must not lead while its replica is removed.
    let leader = c.leader(&[1, 2, 3]).await;
    if leader == 1 {
        c.node(1).transfer_leader(GROUP, 2).await.unwrap();
    }
    let leader = eventually(Duration::from_secs(10), || {
        [2, 3].into_iter().find(|&id| {
            c.node(id)
                .group_status(GROUP)
                .is_some_and(|s| s.role == crate::Role::Leader)
        })
    })
    .await
    .expect("node 2 or 3 leads");
    let refused = c
        .node(leader)
        .change_membership(GROUP, vec![Remove(leader)])
        .await;
    assert!(matches!(refused, Err(ProposeError::MembershipRefused(_))));
    let d = c
        .node(leader)
        .change_membership(GROUP, vec![AddLearner(4)])
        .await
        .unwrap();
    assert_eq!(d.learners, vec![4]);
    assert_eq!(d.epoch.conf_ver, 2);
    // The learner catches up by snapshot (the log was compacted) and takes writes without a vote.
    c.must_get_equal(4, "k39", "v").await;
    c.must_put(&[2, 3], "during", "1").await;
    c.must_get_equal(4, "during", "1").await;
    c.node(leader)
        .change_membership(GROUP, vec![Promote(4), Remove(1)])
        .await
        .unwrap();
    let d = must_see_desc(&c, &[2, 3, 4], GROUP, |d| {
        d.voters_outgoing.is_empty() && d.voters.contains(&4)
    })
    .await;
    let mut voters = d.voters.clone();
    voters.sort_unstable();
    assert_eq!(voters, vec![2, 3, 4]);
    assert!(d.learners.is_empty());
    // The new majority commits without node 1, which destroyed its replica and its keys.
    c.must_put(&[2, 3, 4], "after", "2").await;
    for id in [2, 3, 4] {
        c.must_get_equal(id, "after", "2").await;
    }
    let gone = eventually(Duration::from_secs(10), || {
        c.node(1).group_status(GROUP).is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "node 1 destroyed its replica");
    assert_eq!(c.get(1, "k00"), None, "node 1's keys of the group are gone");
    // Node 2 and 3 fail in turn: with 3 voters, the group needs two of {2, 3, 4}.
    c.net.partition(&[&[1, 2], &[3, 4]]);
    let cut = tokio::time::timeout(
        Duration::from_millis(600),
        c.node(2).propose(GROUP, b"x=1".to_vec()),
    )
    .await;
    assert!(
        !matches!(cut, Ok(Ok(_))),
        "nodes 1 and 2 are no majority of the new group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t14_a_replica_removed_while_cut_off_is_destroyed_on_request_and_stays_dead() {
    use crate::MembershipChange::*;
    let mut c = Cluster::with_nodes(4, Config::for_test()).await;
    c.must_put(&[1, 2, 3], "a", "1").await;
    let leader = c.leader(&[1, 2, 3]).await;
    let victim = (1..=3).find(|&id| id != leader).unwrap();
    c.net.partition(&[
        &[victim],
        &[1, 2, 3, 4]
            .into_iter()
            .filter(|&id| id != victim)
            .collect::<Vec<_>>(),
    ]);
    let d = c
        .node(leader)
        .change_membership(GROUP, vec![Remove(victim)])
        .await
        .unwrap();
    assert!(!d.voters.contains(&victim));
    c.net.heal();
    // Cut off, the victim never applied its removal: it is destroyed when told the conf version.
    let old = c.node(victim).group_status(GROUP).unwrap().desc.unwrap();
    assert!(old.voters.contains(&victim));
    assert!(
        !c.node(victim)
            .destroy_replica(GROUP, old.epoch.conf_ver)
            .await
            .unwrap()
    );
    assert!(
        c.node(victim)
            .destroy_replica(GROUP, d.epoch.conf_ver)
            .await
            .unwrap()
    );
    assert!(c.node(victim).group_status(GROUP).is_none());
    assert_eq!(c.get(victim, "a"), None);
    // After a restart it stays gone; the group carries on with two voters.
    c.stop(victim);
    c.start(victim).await;
    c.must_put(&[1, 2, 3], "b", "2").await;
    assert!(
        c.node(victim).group_status(GROUP).is_none(),
        "a destroyed replica is not bootstrapped again"
    );
    assert_eq!(c.get(victim, "b"), None);
    // Added back as a learner, it comes back by snapshot.
    let leader = c.leader(&[1, 2, 3]).await;
    c.node(leader)
        .change_membership(GROUP, vec![AddLearner(victim)])
        .await
        .unwrap();
    c.must_get_equal(victim, "b", "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t15_a_read_on_a_new_leader_waits_for_its_first_commit_instead_of_being_dropped() {
    // Elections 1 s, so the read timeout (4 s) is far from what the read should take.
    let c = Cluster::new(Config {
        election_ticks: 50,
        ..Config::for_test()
    })
    .await;
    c.must_put(&[1, 2, 3], "a", "1").await;
    let leader = c.leader(&[1, 2, 3]).await;
    let target = (1..=3).find(|&id| id != leader).unwrap();
    // Every message takes 50 ms, so the new leader holds office about 100 ms before the first entry
    // of its term commits: raft-rs drops a ReadIndex it hears in that window.
    c.net.set_delay(Duration::from_millis(50));
    c.node(leader).transfer_leader(GROUP, target).await.unwrap();
    let elected = eventually(Duration::from_secs(5), || {
        (c.node(target).group_status(GROUP).map(|s| s.role) == Some(crate::Role::Leader))
            .then_some(())
    })
    .await;
    assert!(elected.is_some(), "node {target} was elected");
    let asked = Instant::now();
    c.node(target)
        .read_index(GROUP)
        .await
        .expect("the read is served once the new leader's first entry commits");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "the read took {:?}",
        asked.elapsed()
    );
}
