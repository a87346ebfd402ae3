//! Entity group transactions: processes upsert three of four entities of one partition in one `$batch`,
//! each batch writing its own id as the value, while a reader takes single-page snapshots of the
//! partition; every batch must be visible all or nothing (and a refused one not at all).

use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng, seq::SliceRandom};
use trestle_client::QueryBuilder;
use trestle_types::{Entity, IfMatch, Value, WriteKind, WriteOp};

use super::{Check, Shared};
use crate::history::Recorder;
use crate::history::batches::{self, Batch, BatchOutcome, Observation};

pub const TABLE: &str = "batches";
const KEYS: [&str; 4] = ["x0", "x1", "x2", "x3"];
const PROCESSES: u64 = 2;

pub struct Batches {
    batches: Arc<Mutex<Vec<Batch>>>,
    observations: Arc<Mutex<Vec<Observation>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Batches {
    pub async fn start(shared: &Arc<Shared>, seed: u64) -> anyhow::Result<Batches> {
        shared.client.create_table(TABLE).await?;
        let clock = Recorder::new();
        let batches: Arc<Mutex<Vec<Batch>>> = Arc::default();
        let observations: Arc<Mutex<Vec<Observation>>> = Arc::default();
        let mut tasks = Vec::new();
        for p in 0..PROCESSES {
            let (shared, clock, batches) = (shared.clone(), clock.clone(), batches.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (p << 40));
                let table = shared.client.table(TABLE);
                let mut n = 0;
                while !shared.stopped() {
                    n += 1;
                    let id = format!("b{p}-{n}");
                    let mut keys = KEYS.to_vec();
                    keys.shuffle(&mut rng);
                    keys.truncate(rng.gen_range(2..=3));
                    let ops = keys
                        .iter()
                        .map(|k| WriteOp {
                            kind: WriteKind::InsertOrReplace,
                            entity: Entity::new("b", *k).with("v", Value::String(id.clone())),
                            if_match: IfMatch::None,
                        })
                        .collect();
                    let invoked = clock.tick();
                    let outcome = match table.batch(ops).await {
                        Ok(_) => BatchOutcome::Ok,
                        Err(e) if e.may_have_applied() => BatchOutcome::Unknown,
                        Err(_) => BatchOutcome::Fail,
                    };
                    let mut batch = Batch::new(id.clone(), outcome);
                    batch = match outcome {
                        BatchOutcome::Unknown => {
                            batch.invoked = invoked;
                            batch
                        }
                        _ => batch.between(invoked, clock.tick()),
                    };
                    for k in keys {
                        batch = batch.write(k, id.clone());
                    }
                    lock(&batches).push(batch);
                    shared.progress();
                }
            }));
        }
        {
            let (shared, observations) = (shared.clone(), observations.clone());
            tasks.push(tokio::spawn(async move {
                let table = shared.client.table(TABLE);
                let mut n = 0;
                while !shared.stopped() {
                    let q = QueryBuilder::new()
                        .filter("PartitionKey eq 'b'")
                        .page_size(10);
                    let Ok(page) = table.query_page(q).await else {
                        continue;
                    };
                    n += 1;
                    let mut obs = Observation::new(format!("snapshot {n}"));
                    for k in KEYS {
                        match page.entities.iter().find(|e| e.row_key == k) {
                            Some(e) => match e.properties.get("v") {
                                Some(Value::String(v)) => obs = obs.saw(k, v.clone()),
                                _ => obs = obs.saw(k, ""),
                            },
                            None => obs = obs.saw_absent(k),
                        }
                    }
                    lock(&observations).push(obs);
                }
            }));
        }
        Ok(Batches {
            batches,
            observations,
            tasks,
        })
    }

    pub async fn finish(self) -> Vec<Check> {
        for t in self.tasks {
            let _ = t.await;
        }
        let batches = lock(&self.batches).clone();
        let observations = lock(&self.observations).clone();
        let violations = batches::check(&batches, &observations);
        let acked = batches
            .iter()
            .filter(|b| b.outcome == BatchOutcome::Ok)
            .count();
        let what = format!(
            "{} batches ({acked} acknowledged), {} partition snapshots",
            batches.len(),
            observations.len()
        );
        let check = if observations.is_empty() || acked == 0 {
            Check::fail(
                "batches: all or nothing",
                format!("{what}: too little to judge"),
                String::new(),
            )
        } else if violations.is_empty() {
            Check::pass("batches: all or nothing", what)
        } else {
            Check::fail(
                "batches: all or nothing",
                format!("{what}; {} violations", violations.len()),
                violations
                    .iter()
                    .take(5)
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        };
        vec![check.with_operations(batches.len() + observations.len())]
    }
}
