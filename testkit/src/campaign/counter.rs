//! The fenced counter: workers take turns incrementing one entity under the lock `counter`, every write
//! carrying the lock's fencing token; and a *zombie* keeps doing what a paused process does — it takes
//! the lock, reads the counter, loses its lease (it revokes it, the state the meta group reaches when a
//! stalled holder's lease expires), waits until a successor has incremented, then writes its stale
//! increment with its old token. The range must refuse every such write (FencingTokenStale).
//!
//! Checks: no two acknowledged increments read the same old value (the lock and the fence serialised
//! them); the final value is the number of acknowledged increments plus at most the unknown ones; no
//! write was accepted with a token revoked before it was sent, nor out of token order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use trestle_client::{Fencing, Lease, LockClient, LockGuard, TableClient};
use trestle_types::{Entity, Value};

use super::{Check, Shared};
use crate::history::Recorder;
use crate::history::fencing::{self, FencedWrite, Revocation};

pub const TABLE: &str = "counter";
const LOCK: &str = "counter";
const WORKERS: usize = 2;

#[derive(Default)]
struct Log {
    /// (old value read, token, sent at, outcome) of every increment that got an answer.
    increments: Vec<(i64, u64, u64, Answer)>,
    revocations: Vec<Revocation>,
    zombie_attempts: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Unknown,
}

pub struct Counter {
    log: Arc<Mutex<Log>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client: TableClient,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn read(client: &TableClient) -> Option<i64> {
    let e = client.table(TABLE).get("c", "n").await.ok()?;
    match e.properties.get("v") {
        Some(Value::Int64(v)) => Some(*v),
        _ => None,
    }
}

/// Writes `old + 1` with `fencing`; records the answer.
async fn increment(
    client: &TableClient,
    fencing: &Fencing,
    old: i64,
    clock: &Recorder,
    log: &Mutex<Log>,
) -> bool {
    let table = client.table(TABLE).with_fencing(fencing.clone());
    let sent = clock.tick();
    let next = Entity::new("c", "n").with("v", Value::Int64(old + 1));
    match table.upsert_replace(next).await {
        Ok(_) => {
            lock(log)
                .increments
                .push((old, fencing.token, sent, Answer::Ok));
            true
        }
        Err(e) if e.may_have_applied() => {
            lock(log)
                .increments
                .push((old, fencing.token, sent, Answer::Unknown));
            false
        }
        Err(_) => false,
    }
}

/// A new lease (TTL 3 s) holding the lock, waiting up to 5 s for it; `None` (lease revoked) otherwise.
async fn take_lock(locks: &LockClient) -> Option<(Lease, LockGuard)> {
    let lease = locks.lease(Duration::from_secs(3)).await.ok()?;
    match lease.acquire(LOCK, Duration::from_secs(5)).await {
        Ok(guard) => Some((lease, guard)),
        Err(_) => {
            let _ = lease.revoke().await;
            None
        }
    }
}

impl Counter {
    pub async fn start(shared: &Arc<Shared>) -> anyhow::Result<Counter> {
        shared.client.create_table(TABLE).await?;
        shared
            .client
            .table(TABLE)
            .insert(Entity::new("c", "n").with("v", Value::Int64(0)))
            .await?;
        let clock = Recorder::new();
        let log: Arc<Mutex<Log>> = Arc::default();
        let mut tasks = Vec::new();
        for _ in 0..WORKERS {
            let (shared, clock, log) = (shared.clone(), clock.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                let locks = shared.client.locks();
                while !shared.stopped() {
                    let Some((lease, guard)) = take_lock(&locks).await else {
                        continue;
                    };
                    let fencing = guard.fencing();
                    for _ in 0..3 {
                        if lease.is_lost() {
                            break;
                        }
                        let Some(old) = read(&shared.client).await else {
                            break;
                        };
                        if !increment(&shared.client, &fencing, old, &clock, &log).await {
                            break;
                        }
                        shared.progress();
                    }
                    let _ = guard.release().await;
                    let _ = lease.revoke().await;
                }
            }));
        }
        {
            let (shared, clock, log) = (shared.clone(), clock.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                let locks = shared.client.locks();
                while !shared.stopped() {
                    let Some((lease, guard)) = take_lock(&locks).await else {
                        continue;
                    };
                    let fencing = guard.fencing();
                    let Some(old) = read(&shared.client).await else {
                        let _ = lease.revoke().await;
                        continue;
                    };
                    // The stall: the lease is gone; a successor takes the lock and increments.
                    if lease.revoke().await.is_err() {
                        continue;
                    }
                    let revoked = clock.tick();
                    lock(&log).revocations.push(Revocation {
                        token: fencing.token,
                        time: revoked,
                    });
                    let moved = crate::eventually(Duration::from_secs(10), || async {
                        read(&shared.client).await.filter(|v| *v > old)
                    })
                    .await;
                    if moved.is_none() {
                        continue;
                    }
                    lock(&log).zombie_attempts += 1;
                    increment(&shared.client, &fencing, old, &clock, &log).await;
                }
            }));
        }
        Ok(Counter {
            log,
            tasks,
            client: shared.client.clone(),
        })
    }

    pub async fn finish(self) -> Vec<Check> {
        for t in self.tasks {
            let _ = t.await;
        }
        let log = std::mem::take(&mut *lock(&self.log));
        let acked: Vec<&(i64, u64, u64, Answer)> = log
            .increments
            .iter()
            .filter(|i| i.3 == Answer::Ok)
            .collect();
        let unknown = log.increments.len() - acked.len();
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeMap::new();
        for (old, token, _, _) in &acked {
            if let Some(other) = seen.insert(*old, *token) {
                problems.push(format!(
                    "two acknowledged increments read {old} (tokens {other} and {token})"
                ));
            }
        }
        let writes: Vec<FencedWrite> = acked
            .iter()
            .map(|(old, token, sent, _)| {
                FencedWrite::new(LOCK, *token, (*old + 1) as u64).invoked_at(*sent)
            })
            .collect();
        for v in fencing::check_with_revocations(&writes, &log.revocations) {
            problems.push(v.to_string());
        }
        let final_value = {
            let client = self.client.clone();
            crate::eventually(Duration::from_secs(30), || read(&client)).await
        };
        match final_value {
            None => problems.push("the final read of the counter failed".into()),
            Some(v) => {
                let (low, high) = (acked.len() as i64, (acked.len() + unknown) as i64);
                if v < low || v > high {
                    problems.push(format!(
                        "final value {v}, but {low} increments were acknowledged and {unknown} unknown"
                    ));
                }
            }
        }
        let what = format!(
            "{} acknowledged increments ({unknown} unknown), {} stale-token writes by the zombie",
            acked.len(),
            log.zombie_attempts
        );
        let check = if acked.is_empty() || log.zombie_attempts == 0 {
            Check::fail(
                "counter: fenced writes in token order",
                format!("{what}: too little to judge"),
                problems.join("\n"),
            )
        } else if problems.is_empty() {
            Check::pass("counter: fenced writes in token order", what)
        } else {
            Check::fail(
                "counter: fenced writes in token order",
                format!("{what}; {} problems", problems.len()),
                problems.join("\n"),
            )
        };
        vec![check.with_operations(log.increments.len())]
    }
}
