//! Merges: a frozen source, a commit that takes its span without copying, aborts and rollbacks.

use super::*;
use crate::{MergeRefused, MergeStep};

const RIGHT: u64 = 8;

/// Freezes `RIGHT` for a merge into `GROUP`; returns its descriptor after the prepare and the index
/// it froze at.
async fn prepare(c: &Cluster, among: &[u64]) -> (GroupDesc, u64) {
    let leader = c.leader_of(RIGHT, among).await;
    let version = c
        .node(leader)
        .group_status(RIGHT)
        .unwrap()
        .desc
        .unwrap()
        .epoch
        .version;
    c.node(leader)
        .merge_step(
            RIGHT,
            MergeStep::Prepare {
                target: GROUP,
                version,
            },
        )
        .await
        .expect("prepare")
}

/// Waits until every node in `among` applied `RIGHT` to `index`, as a merge's coordinator does.
async fn applied_everywhere(c: &Cluster, among: &[u64], index: u64) {
    for &id in among {
        let ok = eventually(Duration::from_secs(10), || {
            (c.node(id).group_status(RIGHT)?.applied_index >= index).then_some(())
        })
        .await;
        assert!(ok.is_some(), "node {id} applied {RIGHT} to {index}");
    }
}

async fn commit(
    c: &Cluster,
    among: &[u64],
    source: GroupDesc,
    prepare_index: u64,
) -> Result<GroupDesc, ProposeError> {
    let leader = c.leader(among).await;
    let version = c
        .node(leader)
        .group_status(GROUP)
        .unwrap()
        .desc
        .unwrap()
        .epoch
        .version;
    let step = MergeStep::Commit {
        source,
        prepare_index,
        version,
    };
    c.node(leader).merge_step(GROUP, step).await.map(|(d, _)| d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_a_merge_freezes_the_source_and_the_target_takes_its_keys_on_every_replica() {
    let mut c = Cluster::new(Config::for_test()).await;
    c.must_put(&[1, 2, 3], "a", "1").await;
    split(&c, &[1, 2, 3], "m", RIGHT).await;
    c.put_in(RIGHT, &[1, 2, 3], "x", "1").await;
    let (source, index) = prepare(&c, &[1, 2, 3]).await;
    assert_eq!(source.epoch.version, 3);
    // Frozen: no command, no read, no second prepare.
    let leader = c.leader_of(RIGHT, &[1, 2, 3]).await;
    let frozen = ProposeError::Merging { target: GROUP };
    assert_eq!(
        c.node(leader).propose(RIGHT, b"y=2".to_vec()).await,
        Err(frozen.clone())
    );
    assert_eq!(c.node(leader).read_index(RIGHT).await, Err(frozen));
    let again = MergeStep::Prepare {
        target: GROUP,
        version: source.epoch.version,
    };
    assert_eq!(
        c.node(leader).merge_step(RIGHT, again).await,
        Err(ProposeError::MergeRefused(MergeRefused::MergingState(true)))
    );
    applied_everywhere(&c, &[1, 2, 3], index).await;
    // A commit planned at an old version of the target changes nothing.
    let left = c.leader(&[1, 2, 3]).await;
    let stale = MergeStep::Commit {
        source: source.clone(),
        prepare_index: index,
        version: 1,
    };
    assert!(matches!(
        c.node(left).merge_step(GROUP, stale).await,
        Err(ProposeError::MergeRefused(MergeRefused::EpochStale {
            planned: 1,
            ..
        }))
    ));
    let merged = commit(&c, &[1, 2, 3], source, index).await.expect("commit");
    assert_eq!(merged.span.start, b"");
    assert_eq!(merged.span.end, None);
    assert_eq!(merged.epoch.version, 4);
    for id in 1..=3 {
        let gone = eventually(Duration::from_secs(10), || {
            c.node(id).group_status(RIGHT).is_none().then_some(())
        })
        .await;
        assert!(gone.is_some(), "node {id} still hosts {RIGHT}");
        c.must_get_equal(id, "x", "1").await;
    }
    // The target owns the source's keys now, and keeps them across restarts.
    c.must_put(&[1, 2, 3], "y", "2").await;
    for id in 1..=3 {
        c.stop(id);
        c.start(id).await;
    }
    c.must_put(&[1, 2, 3], "z", "3").await;
    for id in 1..=3 {
        c.must_get_equal(id, "y", "2").await;
        c.must_get_equal(id, "z", "3").await;
        assert!(
            c.node(id).group_status(RIGHT).is_none(),
            "node {id} brought {RIGHT} back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_an_aborted_merge_refuses_its_commit_and_the_rolled_back_source_serves_again() {
    let c = Cluster::new(Config::for_test()).await;
    split(&c, &[1, 2, 3], "m", RIGHT).await;
    let (source, index) = prepare(&c, &[1, 2, 3]).await;
    applied_everywhere(&c, &[1, 2, 3], index).await;
    let left = c.leader(&[1, 2, 3]).await;
    let abort = MergeStep::Abort {
        source: RIGHT,
        source_version: source.epoch.version,
    };
    let (target, _) = c.node(left).merge_step(GROUP, abort).await.expect("abort");
    assert_eq!(target.span.end.as_deref(), Some(&b"m"[..]));
    // The commit that was on its way is refused for good.
    assert_eq!(
        commit(&c, &[1, 2, 3], source.clone(), index).await,
        Err(ProposeError::MergeRefused(MergeRefused::Aborted))
    );
    let leader = c.leader_of(RIGHT, &[1, 2, 3]).await;
    let rollback = MergeStep::Rollback {
        version: source.epoch.version,
    };
    let (back, _) = c
        .node(leader)
        .merge_step(RIGHT, rollback)
        .await
        .expect("rollback");
    assert_eq!(back.epoch.version, source.epoch.version + 1);
    assert_ne!(c.put_in(RIGHT, &[1, 2, 3], "x", "1").await, OUTSIDE);
    for id in 1..=3 {
        c.must_get_equal(id, "x", "1").await;
        assert!(c.node(id).group_status(RIGHT).unwrap().merging.is_none());
    }
    // A rollback of a group that is not frozen changes nothing.
    let again = MergeStep::Rollback {
        version: back.epoch.version,
    };
    assert_eq!(
        c.node(leader).merge_step(RIGHT, again).await,
        Err(ProposeError::MergeRefused(MergeRefused::MergingState(
            false
        )))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t22_a_node_that_missed_the_commit_takes_the_targets_snapshot_and_drops_its_frozen_source()
{
    let config = Config {
        log_compact_threshold: 10,
        ..Config::for_test()
    };
    let mut c = Cluster::new(config).await;
    split(&c, &[1, 2, 3], "m", RIGHT).await;
    c.put_in(RIGHT, &[1, 2, 3], "x", "1").await;
    let (source, index) = prepare(&c, &[1, 2, 3]).await;
    applied_everywhere(&c, &[1, 2, 3], index).await;
    c.stop(3);
    commit(&c, &[1, 2], source, index).await.expect("commit");
    for i in 0..40 {
        c.must_put(&[1, 2], &format!("y{i:02}"), "1").await;
    }
    let leader = c.leader(&[1, 2]).await;
    assert!(c.node(leader).group_status(GROUP).unwrap().first_index > index);
    c.start(3).await;
    let merged = eventually(Duration::from_secs(10), || {
        c.node(3)
            .group_status(GROUP)?
            .desc
            .filter(|d| d.span.end.is_none())
    })
    .await;
    assert!(
        merged.is_some(),
        "node 3: {:?}",
        c.node(3).group_status(GROUP)
    );
    c.must_get_equal(3, "x", "1").await;
    c.must_get_equal(3, "y39", "1").await;
    let gone = eventually(Duration::from_secs(10), || {
        c.node(3).group_status(RIGHT).is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "node 3 still hosts {RIGHT}");
}
