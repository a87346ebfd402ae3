//! The lock manager end to end on in-process clusters: leases, FIFO hand-off with growing fencing
//! tokens, expiry of an abandoned lease by the meta leader, a holder that keeps its lock across a
//! meta-leader failover, typed errors for bad input, the fenced counter under node failures, a jump of
//! the meta leader's clock, and a holder cut off by a network partition.

use std::time::{Duration, Instant};

use trestle_testkit::fenced_counter::{self, FencedCounter};
use trestle_testkit::{InProcessCluster, eventually};
use trestle_types::{Entity, ErrorCode, Value};

const META: u64 = 1;
const ACCOUNT: &str = "devstoreaccount1";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l01_locks_are_exclusive_and_handed_to_waiters_with_higher_tokens() {
    let c = InProcessCluster::start(1).await.unwrap();
    let client = c.client_of(2).await.unwrap();
    let locks = client.locks();
    let a = locks.lease(Duration::from_secs(10)).await.unwrap();
    let b = locks.lease(Duration::from_secs(10)).await.unwrap();
    let first = a.try_acquire("jobs/report").await.unwrap();
    // Taking it again under the same lease is the same grant.
    assert_eq!(
        a.try_acquire("jobs/report").await.unwrap().token(),
        first.token()
    );
    let refused = b.try_acquire("jobs/report").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::LockHeld), "{refused}");

    let info = locks.describe("jobs/report").await.unwrap();
    assert_eq!(info.holder, Some(a.id()));
    assert_eq!(info.token, first.token());
    assert!(info.remaining > Duration::ZERO && info.remaining <= Duration::from_secs(10));

    // b waits; a's release hands the lock over with a higher token.
    let waiter = tokio::spawn(async move {
        let guard = b.acquire("jobs/report", Duration::from_secs(20)).await;
        (b, guard)
    });
    let queued = eventually(Duration::from_secs(10), || async {
        let info = locks.describe("jobs/report").await.ok()?;
        (!info.waiters.is_empty()).then_some(info)
    })
    .await
    .expect("b joins the queue");
    assert_eq!(queued.holder, Some(a.id()));
    let first_token = first.token();
    first.release().await.unwrap();
    let (b, second) = waiter.await.unwrap();
    let second = second.unwrap();
    assert!(second.token() > first_token, "tokens grow across holders");
    assert_eq!(locks.list("jobs/").await.unwrap().len(), 1);
    assert_eq!(b.revoke().await.unwrap(), vec!["jobs/report".to_string()]);
    assert_eq!(locks.describe("jobs/report").await.unwrap().holder, None);
    drop(a);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l02_an_abandoned_lease_expires_and_the_next_holder_gets_a_higher_token() {
    let c = InProcessCluster::start(1).await.unwrap();
    let client = c.client().await.unwrap();
    let locks = client.locks();
    let gone = locks.lease(Duration::from_secs(2)).await.unwrap();
    let old = gone.try_acquire("leader").await.unwrap();
    let old_token = old.token();
    // The holder vanishes: no keep-alives, no release.
    drop(old);
    drop(gone);
    let next = locks.lease(Duration::from_secs(10)).await.unwrap();
    let guard = next
        .acquire("leader", Duration::from_secs(15))
        .await
        .expect("the abandoned lease expires within its TTL plus the leader's tick");
    assert!(guard.token() > old_token);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l03_a_holder_keeps_its_lock_across_a_meta_leader_failover() {
    let mut c = InProcessCluster::start(1).await.unwrap();
    let client = c.client().await.unwrap();
    let locks = client.locks();
    let lease = locks.lease(Duration::from_secs(3)).await.unwrap();
    let guard = lease.try_acquire("primary").await.unwrap();
    let leader = c.leader_of(META).await.unwrap();
    c.stop(leader).await;
    let new_leader = eventually(Duration::from_secs(20), || async {
        c.leader_of(META).await.filter(|l| *l != leader)
    })
    .await
    .expect("a new meta leader");
    assert_ne!(new_leader, leader);
    // Two full TTLs after the failover the lease is still alive (kept by the background renewals),
    // and the lock still has its holder and token.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        let info = eventually(Duration::from_secs(5), || async {
            locks.describe("primary").await.ok()
        })
        .await
        .expect("describe answers");
        assert_eq!(
            info.holder,
            Some(lease.id()),
            "the lock was lost across the failover"
        );
        assert_eq!(info.token, guard.token());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!lease.is_lost());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l04_bad_lock_input_gets_typed_errors() {
    let c = InProcessCluster::start(1).await.unwrap();
    let client = c.client().await.unwrap();
    let locks = client.locks();
    let code = |e: trestle_client::Error| e.code();
    assert_eq!(
        code(locks.lease(Duration::from_millis(10)).await.unwrap_err()),
        Some(ErrorCode::InvalidInput)
    );
    assert_eq!(
        code(locks.lease(Duration::from_secs(3_600)).await.unwrap_err()),
        Some(ErrorCode::InvalidInput)
    );
    let lease = locks.lease(Duration::from_secs(5)).await.unwrap();
    for bad in ["", "/x", "a b", "x//y"] {
        assert_eq!(
            code(lease.try_acquire(bad).await.unwrap_err()),
            Some(ErrorCode::InvalidInput),
            "{bad:?}"
        );
    }
    // A guard whose lease is gone: its release is refused as LeaseNotFound.
    let guard = lease.try_acquire("z").await.unwrap();
    assert_eq!(lease.revoke().await.unwrap(), vec!["z".to_string()]);
    assert_eq!(
        code(guard.release().await.unwrap_err()),
        Some(ErrorCode::LeaseNotFound)
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l05_a_holder_that_lost_its_lease_is_fenced_off_at_the_range() {
    let c = InProcessCluster::start(2).await.unwrap();
    let client = c.client().await.unwrap();
    client.create_table("guarded").await.unwrap();
    let locks = client.locks();
    let old_lease = locks.lease(Duration::from_secs(2)).await.unwrap();
    let old = old_lease.try_acquire("guarded/writer").await.unwrap();
    let old_table = client.table("guarded").with_fencing(old.fencing());
    old_table
        .upsert_replace(trestle_types::Entity::new("p", "by-old"))
        .await
        .unwrap();
    // The old holder is cut off: its keep-alives stop, its lease expires.
    let old_fencing = old.fencing();
    drop(old);
    drop(old_lease);
    let new_lease = locks.lease(Duration::from_secs(10)).await.unwrap();
    let new = new_lease
        .acquire("guarded/writer", Duration::from_secs(15))
        .await
        .unwrap();
    assert!(new.token() > old_fencing.token);
    client
        .table("guarded")
        .with_fencing(new.fencing())
        .upsert_replace(trestle_types::Entity::new("p", "by-new"))
        .await
        .unwrap();
    // The old holder, unaware, writes again with its old token: refused, and nothing lands.
    let stale = client
        .table("guarded")
        .with_fencing(old_fencing.clone())
        .upsert_replace(trestle_types::Entity::new("p", "late"))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Some(ErrorCode::FencingTokenStale), "{stale}");
    assert_eq!(
        client
            .table("guarded")
            .get("p", "late")
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::ResourceNotFound)
    );
    // Batches are fenced too.
    let batch = client
        .table("guarded")
        .with_fencing(old_fencing)
        .batch(vec![trestle_client::op::upsert_replace(
            trestle_types::Entity::new("p", "late-batch"),
        )])
        .await
        .unwrap_err();
    assert_eq!(batch.code(), Some(ErrorCode::FencingTokenStale), "{batch}");
    c.shutdown().await;
}

/// The nodes that act as partition manager now, with their tokens.
fn partition_managers(c: &InProcessCluster) -> Vec<(u64, u64)> {
    (1..=3)
        .filter(|id| c.is_running(*id))
        .filter_map(|id| c.node(id).partition_manager_token().map(|t| (id, t)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l06_the_partition_manager_runs_on_one_node_and_moves_when_it_dies() {
    let mut c = InProcessCluster::start(1).await.unwrap();
    let first = eventually(Duration::from_secs(20), || async {
        match partition_managers(&c).as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    })
    .await
    .expect("exactly one partition manager");
    c.stop(first.0).await;
    let next = eventually(Duration::from_secs(30), || async {
        match partition_managers(&c).as_slice() {
            [one] if one.0 != first.0 => Some(*one),
            _ => None,
        }
    })
    .await
    .expect("the role moves to another node");
    assert!(next.1 > first.1, "the new holder's token is higher");
    // Never two at once while the role settled.
    assert!(partition_managers(&c).len() <= 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l07_a_fenced_counter_counts_every_acknowledged_increment_once_while_nodes_fail() {
    let mut c = InProcessCluster::start(2).await.unwrap();
    let client = c.client().await.unwrap();
    let counter = FencedCounter::start(&client, "counter", 3).await.unwrap();
    assert!(
        counter.wait_for_more(20, Duration::from_secs(60)).await,
        "increments happen"
    );
    // Fail the meta leader, then the counter's data leader, restarting each.
    let data = c.range_of(ACCOUNT, "counter").await.unwrap();
    for range in [META, data] {
        let victim = c.leader_of(range).await.unwrap();
        c.stop(victim).await;
        assert!(
            counter.wait_for_more(10, Duration::from_secs(60)).await,
            "increments go on without node {victim}"
        );
        c.restart(victim).await.unwrap();
    }
    let increments = counter.stop().await.unwrap();
    let final_value = fenced_counter::read(&client, "counter").await.unwrap();
    let verdict = fenced_counter::check(&increments, final_value).unwrap_or_else(|e| panic!("{e}"));
    assert!(verdict.acknowledged >= 30, "{verdict:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l08_a_jump_of_the_meta_leaders_clock_expires_no_lease_renewed_in_time() {
    let c = InProcessCluster::start(1).await.unwrap();
    let client = c.client().await.unwrap();
    let locks = client.locks();
    let kept = locks.lease(Duration::from_secs(3)).await.unwrap();
    let guard = kept.try_acquire("primary").await.unwrap();
    let leader = c.leader_of(META).await.unwrap();
    // Ten minutes at once on the meta leader's clock (a paused VM, a stepped clock source).
    c.clock(leader).jump(Duration::from_secs(600));
    // Two TTLs of real time later the lease, renewed in the background, still holds the lock.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let info = describe(&locks, "primary").await;
        assert_eq!(
            info.holder,
            Some(kept.id()),
            "the jump expired a live lease"
        );
        assert_eq!(info.token, guard.token());
        // Pacing of the check, not a wait for a state.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!kept.is_lost());
    assert_eq!(
        c.leader_of(META).await,
        Some(leader),
        "the meta leader changed: the test did not exercise the jumped clock"
    );
    // A lease that stops being renewed still expires after the jump, and its lock moves on.
    let abandoned = locks.lease(Duration::from_secs(2)).await.unwrap();
    let stale = abandoned.try_acquire("secondary").await.unwrap().token();
    drop(abandoned);
    let next = locks.lease(Duration::from_secs(10)).await.unwrap();
    let taken = next
        .acquire("secondary", Duration::from_secs(15))
        .await
        .expect("the abandoned lease expires one TTL after its last renewal");
    assert!(taken.token() > stale);
    assert_eq!(describe(&locks, "primary").await.token, guard.token());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l09_a_holder_cut_off_by_a_partition_keeps_the_lock_for_its_ttl_then_is_fenced_off() {
    let c = InProcessCluster::start(2).await.unwrap();
    let setup = c.client().await.unwrap();
    setup.create_table("guarded").await.unwrap();
    let meta = c.leader_of(META).await.unwrap();
    let cut = (1..=3).find(|&id| id != meta).unwrap();
    let others: Vec<u64> = (1..=3).filter(|&id| id != cut).collect();
    // The holder reaches the cluster only through the node that will be cut off.
    let holder_client = c.client_of(cut).await.unwrap();
    let holder = holder_client
        .locks()
        .lease(Duration::from_secs(4))
        .await
        .unwrap();
    let old = holder.try_acquire("guarded/writer").await.unwrap();
    let old_table = holder_client.table("guarded").with_fencing(old.fencing());
    old_table.upsert_replace(written_by("old")).await.unwrap();
    let rival_client = c.client_of(others[0]).await.unwrap();
    let rival = rival_client
        .locks()
        .lease(Duration::from_secs(10))
        .await
        .unwrap();

    c.partition(&[&[cut], &others]);
    // While the holder may still count on its lease, nobody else gets the lock.
    let mut refusals = 0;
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = rival.try_acquire("guarded/writer").await;
        if Instant::now() >= holder.valid_until() {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "the holder's lease is still being renewed: the partition did not cut it off"
        );
        match attempt {
            Ok(g) => panic!(
                "granted (token {}) while the holder's lease was valid",
                g.token()
            ),
            Err(e) if e.code() == Some(ErrorCode::LockHeld) => refusals += 1,
            // Anything else (a busy moment) is neither a grant nor a refusal: ask again.
            Err(_) => {}
        }
        // Pacing of the rival's attempts, not a wait for a state.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refusals > 0,
        "the rival was never answered while the holder was valid"
    );
    let mut lost = old.lost();
    let signalled = tokio::time::timeout(Duration::from_secs(10), lost.wait_for(|l| *l)).await;
    assert!(
        matches!(signalled, Ok(Ok(_))),
        "the cut-off holder's guard signals the loss"
    );
    let new = rival
        .acquire("guarded/writer", Duration::from_secs(15))
        .await
        .expect("the cut-off holder's lease expires");
    assert!(new.token() > old.token());
    rival_client
        .table("guarded")
        .with_fencing(new.fencing())
        .upsert_replace(written_by("new"))
        .await
        .unwrap();

    c.heal();
    // The old holder, unaware, writes through its node again with its old token: refused at the range.
    let refused = eventually(Duration::from_secs(30), || async {
        match old_table.upsert_replace(written_by("late")).await {
            Ok(_) => panic!("a write with a stale token was accepted"),
            Err(e) if e.code() == Some(ErrorCode::FencingTokenStale) => Some(()),
            Err(_) => None,
        }
    })
    .await;
    assert!(
        refused.is_some(),
        "the stale write is refused as FencingTokenStale"
    );
    assert!(c.wait_replicated(Duration::from_secs(30)).await);
    for id in 1..=3 {
        let e = c
            .read_replica(id, ACCOUNT, "guarded", "p", "r")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            e.properties.get("by"),
            Some(&Value::String("new".into())),
            "replica {id}"
        );
    }
    c.shutdown().await;
}

/// The entity the guarded writers overwrite, marked with who wrote it.
fn written_by(who: &str) -> Entity {
    Entity::new("p", "r").with("by", Value::String(who.into()))
}

/// `name` as the meta leader sees it (retrying a busy moment).
async fn describe(locks: &trestle_client::LockClient, name: &str) -> trestle_client::LockInfo {
    eventually(Duration::from_secs(5), || async {
        locks.describe(name).await.ok()
    })
    .await
    .expect("describe answers")
}
