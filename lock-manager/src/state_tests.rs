use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn run(state: &mut LockState, index: u64, command: Command) -> Outcome {
    state.apply(index, &command)
}

fn acquire(lease: LeaseId, name: &str, wait: bool) -> Command {
    Command::Acquire {
        lease,
        name: name.into(),
        wait,
    }
}

fn lease(state: &mut LockState, index: u64) -> LeaseId {
    match run(
        state,
        index,
        Command::GrantLease {
            ttl_ms: 10_000,
            owner: format!("client-{index}"),
        },
    )
    .result
    {
        Ok(Reply::LeaseGranted { lease, .. }) => lease,
        other => panic!("{other:?}"),
    }
}

#[test]
fn tokens_are_grant_indexes_and_waiters_are_served_in_order() {
    let mut s = LockState::new();
    let (a, b, c) = (lease(&mut s, 1), lease(&mut s, 2), lease(&mut s, 3));
    assert_eq!(
        run(&mut s, 4, acquire(a, "job", true)).result,
        Ok(Reply::Acquired { token: 4 })
    );
    // Taking it again under the same lease is the same grant.
    assert_eq!(
        run(&mut s, 5, acquire(a, "job", true)).result,
        Ok(Reply::Acquired { token: 4 })
    );
    assert_eq!(
        run(&mut s, 6, acquire(b, "job", false)).result,
        Err(LockError::Held {
            name: "job".into(),
            holder: a
        })
    );
    assert_eq!(
        run(&mut s, 7, acquire(b, "job", true)).result,
        Ok(Reply::Queued { ahead: 0 })
    );
    assert_eq!(
        run(&mut s, 8, acquire(c, "job", true)).result,
        Ok(Reply::Queued { ahead: 1 })
    );
    let out = run(
        &mut s,
        9,
        Command::Release {
            lease: a,
            name: "job".into(),
        },
    );
    assert_eq!(out.result, Ok(Reply::Released));
    assert_eq!(
        out.grants,
        vec![Grant {
            name: "job".into(),
            lease: b,
            token: 9
        }]
    );
    // The holder's lease expiring hands the lock to the next waiter with a higher token.
    let out = run(&mut s, 10, Command::Expire { lease: b });
    assert_eq!(
        out.result,
        Ok(Reply::Expired {
            released: vec!["job".into()]
        })
    );
    assert_eq!(out.grants[0].lease, c);
    assert_eq!(out.grants[0].token, 10);
    assert!(s.lease(b).is_none());
    assert_eq!(
        s.lock("job").unwrap().holder,
        Holder {
            lease: c,
            token: 10
        }
    );
    let out = run(&mut s, 11, Command::Revoke { lease: c });
    assert!(out.grants.is_empty());
    assert!(s.lock("job").is_none(), "a free lock has no record");
}

#[test]
fn bad_input_gets_typed_errors_and_changes_nothing() {
    let mut s = LockState::new();
    let a = lease(&mut s, 1);
    let before = s.clone();
    let cases = [
        (
            Command::GrantLease {
                ttl_ms: 10,
                owner: String::new(),
            },
            LockError::InvalidTtl(10),
        ),
        (
            Command::GrantLease {
                ttl_ms: 5_000,
                owner: "tab\t".into(),
            },
            LockError::InvalidOwner,
        ),
        (
            acquire(a, "bad name", true),
            LockError::InvalidName(
                "\"bad name\": only ASCII letters, digits and . _ - / : are allowed".into(),
            ),
        ),
        (acquire(99, "x", true), LockError::LeaseNotFound(99)),
        (
            Command::KeepAlive { lease: 99 },
            LockError::LeaseNotFound(99),
        ),
        (Command::Expire { lease: 99 }, LockError::LeaseNotFound(99)),
        (
            Command::Release {
                lease: a,
                name: "x".into(),
            },
            LockError::NotHolder {
                name: "x".into(),
                lease: a,
            },
        ),
        (
            Command::CancelWait {
                lease: a,
                name: "x".into(),
            },
            LockError::NotWaiting {
                name: "x".into(),
                lease: a,
            },
        ),
    ];
    for (i, (command, error)) in cases.into_iter().enumerate() {
        let index = 10 + i as u64;
        let out = run(&mut s, index, command.clone());
        assert_eq!(out.result, Err(error), "{command:?}");
        assert_eq!(out.changes, Changes::default(), "{command:?}");
    }
    assert_eq!(
        s.leases().collect::<Vec<_>>(),
        before.leases().collect::<Vec<_>>()
    );
    // Applying out of order is refused.
    assert!(matches!(
        run(&mut s, 3, Command::KeepAlive { lease: a }).result,
        Err(LockError::OutOfOrder { .. })
    ));
}

#[test]
fn a_lease_holds_a_bounded_number_of_locks() {
    let mut s = LockState::new();
    let a = lease(&mut s, 1);
    let mut index = 2;
    for i in 0..MAX_LOCKS_PER_LEASE {
        assert!(
            run(&mut s, index, acquire(a, &format!("l{i}"), true))
                .result
                .is_ok()
        );
        index += 1;
    }
    assert_eq!(
        run(&mut s, index, acquire(a, "one-more", true)).result,
        Err(LockError::TooManyLocks)
    );
}

#[test]
fn restore_rebuilds_the_same_state() {
    let mut s = LockState::new();
    let (a, b) = (lease(&mut s, 1), lease(&mut s, 2));
    run(&mut s, 3, acquire(a, "x", true));
    run(&mut s, 4, acquire(b, "x", true));
    let restored = LockState::restore(s.leases().cloned(), s.locks().cloned(), s.applied());
    assert_eq!(restored, s);
}

/// A deliberately naive model of the same rules.
#[derive(Default, Debug)]
struct Model {
    leases: HashMap<LeaseId, u64>,
    holders: HashMap<String, (LeaseId, Token)>,
    queues: HashMap<String, Vec<LeaseId>>,
}

impl Model {
    fn handoff(&mut self, index: u64, name: &str, grants: &mut Vec<Grant>) {
        let queue = self.queues.entry(name.to_string()).or_default();
        if queue.is_empty() {
            self.holders.remove(name);
        } else {
            let next = queue.remove(0);
            self.holders.insert(name.to_string(), (next, index));
            grants.push(Grant {
                name: name.to_string(),
                lease: next,
                token: index,
            });
        }
    }

    fn count(&self, lease: LeaseId) -> usize {
        self.holders.values().filter(|(l, _)| *l == lease).count()
            + self.queues.values().filter(|q| q.contains(&lease)).count()
    }

    fn apply(&mut self, index: u64, c: &Command) -> (Result<Reply, LockError>, Vec<Grant>) {
        let mut grants = Vec::new();
        let result = match c {
            Command::GrantLease { ttl_ms, .. } => {
                if !(crate::MIN_TTL_MS..=crate::MAX_TTL_MS).contains(ttl_ms) {
                    Err(LockError::InvalidTtl(*ttl_ms))
                } else {
                    self.leases.insert(index, *ttl_ms);
                    Ok(Reply::LeaseGranted {
                        lease: index,
                        ttl_ms: *ttl_ms,
                    })
                }
            }
            Command::KeepAlive { lease } => match self.leases.get(lease) {
                Some(ttl) => Ok(Reply::KeptAlive {
                    lease: *lease,
                    ttl_ms: *ttl,
                }),
                None => Err(LockError::LeaseNotFound(*lease)),
            },
            Command::Revoke { lease } | Command::Expire { lease } => {
                if self.leases.remove(lease).is_none() {
                    Err(LockError::LeaseNotFound(*lease))
                } else {
                    for q in self.queues.values_mut() {
                        q.retain(|l| l != lease);
                    }
                    let mut released: Vec<String> = self
                        .holders
                        .iter()
                        .filter(|(_, (l, _))| l == lease)
                        .map(|(n, _)| n.clone())
                        .collect();
                    released.sort();
                    for name in &released {
                        self.handoff(index, name, &mut grants);
                    }
                    if matches!(c, Command::Revoke { .. }) {
                        Ok(Reply::Revoked { released })
                    } else {
                        Ok(Reply::Expired { released })
                    }
                }
            }
            Command::Acquire { lease, name, wait } => {
                if !self.leases.contains_key(lease) {
                    Err(LockError::LeaseNotFound(*lease))
                } else {
                    match self.holders.get(name).copied() {
                        Some((holder, token)) if holder == *lease => Ok(Reply::Acquired { token }),
                        Some((holder, _)) => {
                            let queue = self.queues.entry(name.clone()).or_default();
                            if let Some(ahead) = queue.iter().position(|l| l == lease) {
                                Ok(Reply::Queued { ahead })
                            } else if !wait {
                                Err(LockError::Held {
                                    name: name.clone(),
                                    holder,
                                })
                            } else if self.count(*lease) >= MAX_LOCKS_PER_LEASE {
                                Err(LockError::TooManyLocks)
                            } else {
                                let queue = self.queues.entry(name.clone()).or_default();
                                queue.push(*lease);
                                Ok(Reply::Queued {
                                    ahead: queue.len() - 1,
                                })
                            }
                        }
                        None => {
                            self.holders.insert(name.clone(), (*lease, index));
                            Ok(Reply::Acquired { token: index })
                        }
                    }
                }
            }
            Command::Release { lease, name } => {
                if !self.leases.contains_key(lease) {
                    Err(LockError::LeaseNotFound(*lease))
                } else if self.holders.get(name).map(|(l, _)| l) != Some(lease) {
                    Err(LockError::NotHolder {
                        name: name.clone(),
                        lease: *lease,
                    })
                } else {
                    self.handoff(index, name, &mut grants);
                    Ok(Reply::Released)
                }
            }
            Command::CancelWait { lease, name } => {
                if !self.leases.contains_key(lease) {
                    Err(LockError::LeaseNotFound(*lease))
                } else {
                    let queue = self.queues.entry(name.clone()).or_default();
                    match queue.iter().position(|l| l == lease) {
                        Some(i) => {
                            queue.remove(i);
                            Ok(Reply::WaitCancelled)
                        }
                        None => Err(LockError::NotWaiting {
                            name: name.clone(),
                            lease: *lease,
                        }),
                    }
                }
            }
        };
        (result, grants)
    }
}

/// Commands over a few lease slots (indexes into the leases granted so far) and lock names.
#[derive(Debug, Clone)]
enum Step {
    Grant(u64),
    KeepAlive(usize),
    Revoke(usize),
    Expire(usize),
    Acquire(usize, usize, bool),
    Release(usize, usize),
    Cancel(usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    // Weighted towards contention: few leases, few names, mostly waiting acquires.
    prop_oneof![
        2 => prop_oneof![Just(500u64), Just(1_000), Just(30_000)].prop_map(Step::Grant),
        1 => (0..4usize).prop_map(Step::KeepAlive),
        1 => (0..4usize).prop_map(Step::Revoke),
        1 => (0..4usize).prop_map(Step::Expire),
        5 => (0..4usize, 0..2usize, Just(true)).prop_map(|(l, n, w)| Step::Acquire(l, n, w)),
        1 => (0..4usize, 0..3usize, any::<bool>()).prop_map(|(l, n, w)| Step::Acquire(l, n, w)),
        3 => (0..4usize, 0..2usize).prop_map(|(l, n)| Step::Release(l, n)),
        1 => (0..4usize, 0..3usize).prop_map(|(l, n)| Step::Cancel(l, n)),
    ]
}

const NAMES: [&str; 3] = ["a", "jobs/b", "trestle/c"];

fn check_invariants(s: &LockState, last_token: &mut HashMap<String, Token>) {
    for lock in s.locks() {
        let holder = s
            .lease(lock.holder.lease)
            .expect("the holder's lease exists");
        assert!(holder.held.contains(&lock.name));
        let last = last_token.entry(lock.name.clone()).or_insert(0);
        assert!(
            lock.holder.token >= *last,
            "tokens of {} went back",
            lock.name
        );
        *last = lock.holder.token;
        let mut seen = std::collections::HashSet::new();
        for w in &lock.waiters {
            assert!(seen.insert(*w), "a lease waits twice");
            assert_ne!(*w, lock.holder.lease, "the holder waits for its own lock");
            assert!(
                s.lease(*w)
                    .expect("waiter lease exists")
                    .waiting
                    .contains(&lock.name)
            );
        }
    }
    for lease in s.leases() {
        for name in &lease.held {
            assert_eq!(s.lock(name).map(|l| l.holder.lease), Some(lease.id));
        }
        for name in &lease.waiting {
            assert!(s.lock(name).is_some_and(|l| l.waiters.contains(&lease.id)));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn the_state_machine_behaves_like_the_model(steps in proptest::collection::vec(step(), 1..80)) {
        let mut s = LockState::new();
        let mut model = Model::default();
        let mut granted: Vec<LeaseId> = Vec::new();
        let mut last_token = HashMap::new();
        let slot = |granted: &Vec<LeaseId>, i: usize| granted.get(i).copied().unwrap_or(1_000_000 + i as u64);
        for (i, st) in steps.iter().enumerate() {
            let index = i as u64 + 1;
            let command = match st.clone() {
                Step::Grant(ttl_ms) => Command::GrantLease { ttl_ms, owner: "p".into() },
                Step::KeepAlive(l) => Command::KeepAlive { lease: slot(&granted, l) },
                Step::Revoke(l) => Command::Revoke { lease: slot(&granted, l) },
                Step::Expire(l) => Command::Expire { lease: slot(&granted, l) },
                Step::Acquire(l, n, wait) => acquire(slot(&granted, l), NAMES[n], wait),
                Step::Release(l, n) => Command::Release { lease: slot(&granted, l), name: NAMES[n].into() },
                Step::Cancel(l, n) => Command::CancelWait { lease: slot(&granted, l), name: NAMES[n].into() },
            };
            let out = s.apply(index, &command);
            let (want, want_grants) = model.apply(index, &command);
            prop_assert_eq!(&out.result, &want, "step {} {:?}", i, command);
            prop_assert_eq!(&out.grants, &want_grants, "step {} {:?}", i, command);
            if let Ok(Reply::LeaseGranted { lease, .. }) = out.result {
                granted.push(lease);
            }
            check_invariants(&s, &mut last_token);
            // What the host would persist is enough to rebuild the state.
            let restored = LockState::restore(s.leases().cloned(), s.locks().cloned(), s.applied());
            prop_assert_eq!(&restored, &s);
        }
    }
}
