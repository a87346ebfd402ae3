//! The fenced counter: the lock manager's end-to-end check. Several clients take turns incrementing one
//! counter entity, each turn under the lock `counter` with every write fenced by the lock's token, while
//! the test fails nodes underneath (stop, kill -9, SIGSTOP — in-process or process clusters alike).
//!
//! An increment reads the counter and writes back one more. If the lock and the fence do their job, no
//! two writes that were acknowledged started from the same value, and the final value is the number of
//! acknowledged increments plus at most the ones whose outcome is unknown (the client saw an error that
//! may have applied). [`check`] judges exactly that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::task::JoinHandle;
use trestle_client::TableClient;
use trestle_types::{Entity, Value};

use crate::wait::eventually;

const LOCK: &str = "counter";
const PARTITION_KEY: &str = "c";
const ROW_KEY: &str = "n";
const PROPERTY: &str = "v";
/// Increments per turn under one grant of the lock.
const PER_TURN: usize = 5;

/// One increment a worker got an answer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Increment {
    /// The value it read (and wrote one more than).
    pub read: i64,
    /// Whether its write was acknowledged (otherwise the outcome is unknown).
    pub acknowledged: bool,
}

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub acknowledged: usize,
    pub ambiguous: usize,
    pub final_value: i64,
}

/// A running fenced-counter workload.
pub struct FencedCounter {
    increments: Arc<Mutex<Vec<Increment>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl FencedCounter {
    /// Creates `table` holding the counter at 0 and starts `workers` clients (clones of `client`)
    /// taking turns at it.
    pub async fn start(
        client: &TableClient,
        table: &str,
        workers: usize,
    ) -> anyhow::Result<FencedCounter> {
        client.create_table(table).await?;
        client
            .table(table)
            .insert(Entity::new(PARTITION_KEY, ROW_KEY).with(PROPERTY, Value::Int64(0)))
            .await?;
        let increments: Arc<Mutex<Vec<Increment>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                tokio::spawn(work(
                    client.clone(),
                    table.to_string(),
                    increments.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Ok(FencedCounter {
            increments,
            stop,
            workers,
        })
    }

    /// How many increments got an answer so far.
    pub fn count(&self) -> usize {
        self.increments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits (up to `limit`) until `more` increments beyond those answered now got an answer.
    pub async fn wait_for_more(&self, more: usize, limit: Duration) -> bool {
        let target = self.count() + more;
        eventually(limit, || async { (self.count() >= target).then_some(()) })
            .await
            .is_some()
    }

    /// Stops the workers after their current turn; every increment that got an answer.
    pub async fn stop(self) -> anyhow::Result<Vec<Increment>> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.context("a counter worker panicked")??;
        }
        let increments = self
            .increments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(increments)
    }
}

/// The counter's value now.
pub async fn read(client: &TableClient, table: &str) -> anyhow::Result<i64> {
    let e = client.table(table).get(PARTITION_KEY, ROW_KEY).await?;
    match e.properties.get(PROPERTY) {
        Some(Value::Int64(v)) => Ok(*v),
        other => bail!("the counter holds {other:?}"),
    }
}

/// Judges a run (see the module header): `Err` names the violation.
pub fn check(increments: &[Increment], final_value: i64) -> Result<Verdict, String> {
    let mut seen = std::collections::BTreeSet::new();
    for i in increments.iter().filter(|i| i.acknowledged) {
        if !seen.insert(i.read) {
            return Err(format!(
                "two acknowledged increments read {}: the lock or the fence let them overlap",
                i.read
            ));
        }
    }
    let acknowledged = seen.len();
    let ambiguous = increments.len() - acknowledged;
    let (low, high) = (acknowledged as i64, (acknowledged + ambiguous) as i64);
    if !(low..=high).contains(&final_value) {
        return Err(format!(
            "final value {final_value}, but {acknowledged} acknowledged and {ambiguous} unknown increments"
        ));
    }
    Ok(Verdict {
        acknowledged,
        ambiguous,
        final_value,
    })
}

/// One worker: lease, lock, a turn of increments, release; again until stopped. Any failure ends the
/// turn (the next one starts from a fresh lease); only a counter without a value is an error.
async fn work(
    client: TableClient,
    table: String,
    increments: Arc<Mutex<Vec<Increment>>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let locks = client.locks();
    let record = |read, acknowledged| {
        increments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Increment { read, acknowledged });
    };
    while !stop.load(Ordering::Relaxed) {
        let Ok(lease) = locks.lease(Duration::from_secs(3)).await else {
            continue;
        };
        let Ok(guard) = lease.acquire(LOCK, Duration::from_secs(5)).await else {
            continue;
        };
        let fenced = client.table(&table).with_fencing(guard.fencing());
        for _ in 0..PER_TURN {
            let Ok(e) = fenced.get(PARTITION_KEY, ROW_KEY).await else {
                break;
            };
            let Some(Value::Int64(old)) = e.properties.get(PROPERTY).cloned() else {
                bail!("the counter has no value: {e:?}");
            };
            let next = Entity::new(PARTITION_KEY, ROW_KEY).with(PROPERTY, Value::Int64(old + 1));
            match fenced.upsert_replace(next).await {
                Ok(_) => record(old, true),
                Err(e) if e.may_have_applied() => {
                    record(old, false);
                    break;
                }
                Err(_) => break,
            }
        }
        let _ = guard.release().await;
        let _ = lease.revoke().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(read: i64, acknowledged: bool) -> Increment {
        Increment { read, acknowledged }
    }

    #[test]
    fn the_check_counts_unknown_outcomes_as_maybe_and_catches_overlaps() {
        let run = [inc(0, true), inc(1, true), inc(2, false), inc(2, true)];
        assert_eq!(
            check(&run, 3),
            Ok(Verdict {
                acknowledged: 3,
                ambiguous: 1,
                final_value: 3
            })
        );
        assert!(check(&run, 4).is_ok(), "the unknown one applied");
        assert!(check(&run, 2).is_err(), "an acknowledged increment lost");
        assert!(check(&run, 5).is_err(), "more than every increment");
        assert!(check(&[inc(0, true), inc(0, true)], 1).is_err(), "overlap");
    }
}
