//! Streamed snapshots in in-process clusters: many chunks, streams cut and corrupted on the way, a
//! crash in the middle of receiving, and snapshots the receiver must refuse before writing anything.
//!
//! Every scenario makes a follower need a snapshot the same way: it is stopped while the others write
//! enough for the leader to compact its log past the follower's, then started again.

use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType, Snapshot};
use trestle_engine::{Cf, Engine, KvPair, keys};

use super::{Cluster, GROUP, desc, eventually};
use crate::desc::RangeState;
use crate::snapshot::recv::{DRIVER_WAIT, IncomingSnapshot};
use crate::snapshot::{Header, SnapshotError};
use crate::{Config, Envelope, ProposeError};

/// Records per snapshot chunk in these tests: a few records each.
const CHUNK: usize = 1024;
/// Every value written (so every record) is this long; keys are `k0000`…
const VALUE: usize = 200;
const KEYS: usize = 300;

fn config() -> Config {
    Config {
        log_compact_threshold: 20,
        snapshot_chunk_bytes: CHUNK,
        ..Config::for_test()
    }
}

/// Every record of `Cf::Data` on node `id`.
fn data(c: &Cluster, id: u64) -> Vec<KvPair> {
    c.engines[(id - 1) as usize]
        .scan(Cf::Data, &[], None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn value(i: usize) -> String {
    format!("{i:0width$}", width = VALUE)
}

/// Stops node 3, writes `KEYS` records through the others until the leader's log is compacted past
/// what node 3 has, and returns the leader. Node 3 is stopped on return.
async fn lag_node_3(c: &mut Cluster) -> u64 {
    c.must_put(&[1, 2, 3], "before", "1").await;
    c.stop(3);
    for i in 0..KEYS {
        c.must_put(&[1, 2], &format!("k{i:04}"), &value(i)).await;
    }
    let leader = c.leader(&[1, 2]).await;
    let first = c.node(leader).group_status(GROUP).unwrap().first_index;
    assert!(
        first > 20,
        "the leader's log was compacted (first index {first})"
    );
    leader
}

/// Waits until node `id` holds exactly the leader's records and the leader holds no snapshot view.
async fn must_converge(c: &Cluster, id: u64, leader: u64) {
    let same = eventually(Duration::from_secs(20), || {
        (data(c, id) == data(c, leader)).then_some(())
    })
    .await;
    assert!(
        same.is_some(),
        "node {id} holds {} records, the leader {}",
        data(c, id).len(),
        data(c, leader).len()
    );
    let released = eventually(Duration::from_secs(10), || {
        (c.node(leader).snapshots_in_flight() == 0).then_some(())
    })
    .await;
    assert!(released.is_some(), "the leader released its snapshot views");
    assert_eq!(
        c.engines[(id - 1) as usize]
            .get(Cf::Raft, &keys::snapshot_marker_key(GROUP))
            .unwrap(),
        None,
        "node {id}'s snapshot marker is cleared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_a_span_far_larger_than_a_chunk_arrives_in_many_chunks_and_equals_the_leaders() {
    let mut c = Cluster::new(config()).await;
    let leader = lag_node_3(&mut c).await;
    c.start(3).await;
    c.must_put(&[1, 2, 3], "after", "1").await;
    c.must_get_equal(3, "after", "1").await;
    must_converge(&c, 3, leader).await;

    let counters = c.net.snapshot_counters();
    let span_bytes: usize = data(&c, leader)
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum();
    let record = 8 + "k0000".len() + VALUE;
    assert!(counters.completed >= 1, "{counters:?}");
    assert!(
        counters.chunks >= 50 && counters.chunks as usize >= span_bytes / (CHUNK + record),
        "{span_bytes} bytes of records came in {} chunks",
        counters.chunks
    );
    // The sender's buffer: never more than the chunk size plus one record.
    assert!(
        counters.largest_chunk as usize <= CHUNK + record,
        "a chunk of {} bytes",
        counters.largest_chunk
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s02_a_stream_cut_in_the_middle_is_retried_and_succeeds() {
    let mut c = Cluster::new(config()).await;
    let leader = lag_node_3(&mut c).await;
    // The first two streams break after five chunks each (node 3 is fenced with part of the data).
    c.net.cut_snapshots_after(5, 2);
    c.start(3).await;
    must_converge(&c, 3, leader).await;
    let counters = c.net.snapshot_counters();
    assert_eq!(counters.cut, 2, "{counters:?}");
    assert!(
        counters.opened >= 3 && counters.completed >= 1,
        "{counters:?}"
    );
    c.must_put(&[1, 2, 3], "after", "1").await;
    c.must_get_equal(3, "after", "1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s03_a_corrupt_chunk_is_rejected_never_written_and_the_snapshot_is_sent_again() {
    let mut c = Cluster::new(config()).await;
    let leader = lag_node_3(&mut c).await;
    c.net.corrupt_next_snapshot_chunk();
    c.start(3).await;
    must_converge(&c, 3, leader).await;
    let counters = c.net.snapshot_counters();
    assert_eq!(counters.corrupted, 1, "{counters:?}");
    assert!(
        counters.opened >= 2,
        "the corrupt stream was replaced: {counters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s04_a_node_that_crashes_while_receiving_comes_back_uninitialized_and_converges() {
    let mut c = Cluster::new(config()).await;
    let leader = lag_node_3(&mut c).await;
    // Every stream breaks after five chunks until the network heals.
    c.net.cut_snapshots_after(5, u64::MAX);
    c.start(3).await;
    let cut = eventually(Duration::from_secs(10), || {
        (c.net.snapshot_counters().cut >= 1).then_some(())
    })
    .await;
    assert!(cut.is_some(), "a stream was cut");
    let engine = c.engines[2].clone();
    assert!(
        engine
            .get(Cf::Raft, &keys::snapshot_marker_key(GROUP))
            .unwrap()
            .is_some(),
        "node 3 is fenced"
    );
    assert_eq!(c.node(3).group_status(GROUP).unwrap().desc, None);

    // Power loss on node 3: the marker was synced; some of the unsynced chunks survive too.
    c.stop(3);
    c.engines[2] = Arc::new(engine.crash_copy_keeping(usize::MAX));
    let partial = data(&c, 3).len();
    assert!(
        partial > 0 && partial < data(&c, leader).len(),
        "node 3 holds part of the span ({partial} records)"
    );
    c.start(3).await;
    let status = c.node(3).group_status(GROUP).unwrap();
    assert_eq!(status.desc, None, "node 3 restarted uninitialized");
    assert_eq!(status.applied_index, 0);
    // It serves nothing from the half-written span: no linearizable read, no proposal.
    assert!(c.node(3).read_index(GROUP).await.is_err());
    assert!(matches!(
        c.node(3).propose(GROUP, b"x=1".to_vec()).await,
        Err(ProposeError::NotLeader { .. })
    ));

    c.net.heal();
    must_converge(&c, 3, leader).await;
    assert!(c.node(3).group_status(GROUP).unwrap().desc.is_some());
    c.must_put(&[1, 2, 3], "after", "1").await;
    c.must_get_equal(3, "after", "1").await;
}

/// A `MsgSnapshot` from `leader` to node 3 at (`index`, `term`) with a streamed header, as if the
/// leader had sent it.
fn forged(c: &Cluster, leader: u64, index: u64, term: u64) -> Envelope {
    let status = c.node(leader).group_status(GROUP).unwrap();
    let mut snap = Snapshot::default();
    let range = RangeState::new(desc().span, status.desc.unwrap().epoch);
    snap.set_data(Header { range, id: 999 }.encode().into());
    snap.mut_metadata().index = index;
    snap.mut_metadata().term = term;
    snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgSnapshot);
    msg.from = leader;
    msg.to = 3;
    msg.term = status.term;
    msg.set_snapshot(snap);
    Envelope {
        group: GROUP,
        from: leader,
        to: 3,
        message: msg.write_to_bytes().unwrap().into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05_a_snapshot_raft_would_not_restore_is_refused_before_anything_is_written() {
    let c = Cluster::new(config()).await;
    for i in 0..10 {
        c.must_put(&[1, 2, 3], &format!("k{i}"), "v").await;
    }
    let leader = c.leader(&[1, 2, 3]).await;
    if leader == 3 {
        c.node(3).transfer_leader(GROUP, 1).await.unwrap();
    }
    let leader = c.leader(&[1, 2]).await;
    c.must_get_equal(3, "k9", "v").await;
    let status = c.node(3).group_status(GROUP).unwrap();
    let mailbox = c.node(3).mailbox();

    // Older than node 3's commit index.
    let stale = forged(&c, leader, 1, 1);
    let refused = IncomingSnapshot::begin(&mailbox, stale, DRIVER_WAIT).err();
    assert!(
        matches!(refused, Some(SnapshotError::Refused(_))),
        "{refused:?}"
    );
    // At an index and term node 3's log already holds: raft-rs would only move its commit index.
    let held = forged(&c, leader, status.applied_index, status.term);
    let refused = IncomingSnapshot::begin(&mailbox, held, DRIVER_WAIT).err();
    assert!(
        matches!(refused, Some(SnapshotError::Refused(_))),
        "{refused:?}"
    );

    // Nothing was written: node 3 is initialized, unfenced, and holds every record.
    assert!(c.node(3).group_status(GROUP).unwrap().desc.is_some());
    assert_eq!(
        c.engines[2]
            .get(Cf::Raft, &keys::snapshot_marker_key(GROUP))
            .unwrap(),
        None
    );
    assert_eq!(data(&c, 3), data(&c, leader));
    c.must_put(&[1, 2, 3], "after", "1").await;
    c.must_get_equal(3, "after", "1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s06_a_streamed_header_outside_its_stream_is_never_stepped() {
    let c = Cluster::new(config()).await;
    c.must_put(&[1, 2, 3], "k", "v").await;
    let leader = c.leader(&[1, 2, 3]).await;
    let follower = if leader == 3 { 2 } else { 3 };
    let status = c.node(follower).group_status(GROUP).unwrap();
    // A header for an index far ahead, delivered as a plain message: were it stepped, raft-rs would
    // restore a snapshot whose records never came.
    let mut env = forged(&c, leader, status.commit_index + 1000, status.term);
    env.to = follower;
    let mut msg = Message::parse_from_bytes(&env.message).unwrap();
    msg.to = follower;
    env.message = msg.write_to_bytes().unwrap().into();
    c.node(follower).mailbox().deliver(vec![env]);
    c.must_put(&[1, 2, 3], "after", "1").await;
    c.must_get_equal(follower, "after", "1").await;
    let now = c.node(follower).group_status(GROUP).unwrap();
    assert!(now.applied_index < status.commit_index + 1000, "{now:?}");
    assert!(now.desc.is_some());
}
