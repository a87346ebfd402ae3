use trestle_engine::MemoryEngine;

use super::*;
use crate::clock::ManualClock;

fn cmd(kind: lock_command::Kind, lease: u64, name: &str) -> LockCommand {
    LockCommand {
        kind: kind as i32,
        lease,
        name: name.into(),
        ttl_ms: 2_000,
        owner: "t".into(),
        wait: true,
    }
}

fn apply(host: &LockHost, engine: &MemoryEngine, index: u64, c: LockCommand) -> Result<LockReply> {
    let mut batch = WriteBatch::new();
    let r = host.apply(&mut batch, index, c);
    engine.write(&batch, false).unwrap();
    match r? {
        Kind::Lock(reply) => Ok(reply),
        other => panic!("{other:?}"),
    }
}

fn grant(host: &LockHost, engine: &MemoryEngine, index: u64) -> u64 {
    apply(
        host,
        engine,
        index,
        cmd(lock_command::Kind::GrantLease, 0, ""),
    )
    .unwrap()
    .lease
}

#[test]
fn the_state_survives_a_reload_from_its_records() {
    let engine = MemoryEngine::new();
    let clock = Arc::new(ManualClock::default());
    let host = LockHost::new(clock.clone());
    let a = grant(&host, &engine, 1);
    let b = grant(&host, &engine, 2);
    assert_eq!(
        apply(
            &host,
            &engine,
            3,
            cmd(lock_command::Kind::Acquire, a, "acct/x")
        )
        .unwrap()
        .token,
        3
    );
    assert_eq!(
        apply(
            &host,
            &engine,
            4,
            cmd(lock_command::Kind::Acquire, b, "acct/x")
        )
        .unwrap()
        .ahead,
        Some(0)
    );
    let reloaded = LockHost::load(&engine, clock).unwrap();
    assert_eq!(reloaded.read(|s| s.clone()), host.read(|s| s.clone()));
    // The reloaded host goes on where the old one stopped.
    let mut grants = reloaded.subscribe();
    apply(
        &reloaded,
        &engine,
        5,
        cmd(lock_command::Kind::Release, a, "acct/x"),
    )
    .unwrap();
    let g = grants.try_recv().unwrap();
    assert_eq!((g.lease, g.token), (b, 5));
    let err = apply(
        &reloaded,
        &engine,
        6,
        cmd(lock_command::Kind::Release, a, "acct/x"),
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::LockNotHeld);
}

/// Time passing as the expiry loop sees it: the clock moves `by` in 100 ms steps, read after each.
fn steady(host: &LockHost, clock: &ManualClock, by: Duration) {
    let step = Duration::from_millis(100);
    let mut left = by;
    while !left.is_zero() {
        let d = left.min(step);
        clock.advance(d);
        host.now();
        left -= d;
    }
}

#[test]
fn leases_expire_one_ttl_after_the_later_of_renewal_and_election() {
    let engine = MemoryEngine::new();
    let clock = Arc::new(ManualClock::default());
    let host = LockHost::new(clock.clone());
    let a = grant(&host, &engine, 1);
    steady(&host, &clock, Duration::from_millis(1_500));
    assert!(host.expired(Duration::ZERO).is_empty());
    apply(&host, &engine, 2, cmd(lock_command::Kind::KeepAlive, a, "")).unwrap();
    steady(&host, &clock, Duration::from_millis(1_900));
    assert!(
        host.expired(Duration::ZERO).is_empty(),
        "renewed 1.9 s ago, TTL 2 s"
    );
    steady(&host, &clock, Duration::from_millis(200));
    assert_eq!(host.expired(Duration::ZERO), vec![a]);
    // A leader elected just now waits a full TTL from its election.
    let elected = host.now();
    assert!(host.expired(elected).is_empty());
    steady(&host, &clock, Duration::from_millis(2_001));
    assert_eq!(host.expired(elected), vec![a]);
    assert_eq!(host.remaining(a, elected), Some(Duration::ZERO));
}

#[test]
fn a_clock_jump_right_after_a_keep_alive_expires_nothing_until_one_more_steady_ttl() {
    let engine = MemoryEngine::new();
    let clock = Arc::new(ManualClock::default());
    let host = LockHost::new(clock.clone());
    let a = grant(&host, &engine, 1);
    steady(&host, &clock, Duration::from_millis(1_000));
    apply(&host, &engine, 2, cmd(lock_command::Kind::KeepAlive, a, "")).unwrap();
    // Ten TTLs at once (the node was stopped, or its clock source stepped).
    clock.advance(Duration::from_secs(20));
    assert!(host.expired(Duration::ZERO).is_empty(), "expired by a jump");
    assert_eq!(
        host.remaining(a, Duration::ZERO),
        Some(Duration::from_secs(2)),
        "the jump restarts the TTL"
    );
    steady(&host, &clock, Duration::from_millis(1_900));
    assert!(host.expired(Duration::ZERO).is_empty());
    // Without another keep-alive the lease still expires: one TTL of steady time after the jump.
    steady(&host, &clock, Duration::from_millis(200));
    assert_eq!(host.expired(Duration::ZERO), vec![a]);
}

#[test]
fn a_step_within_the_bound_counts_as_time_passing() {
    let engine = MemoryEngine::new();
    let clock = Arc::new(ManualClock::default());
    let host = LockHost::new(clock.clone());
    let a = grant(&host, &engine, 1);
    for _ in 0..4 {
        clock.advance(MAX_CLOCK_STEP);
        assert!(host.expired(Duration::ZERO).is_empty());
    }
    clock.advance(Duration::from_millis(100));
    assert_eq!(
        host.expired(Duration::ZERO),
        vec![a],
        "2.1 s of steps of 500 ms"
    );
}
