//! Entity registers: processes read, upsert and compare-and-swap (If-Match on the ETag they last read)
//! a few entities, each request either through the Rust SDK (gRPC, routed to the leader) or over the
//! REST API to a random node; every key's history must be linearizable.

use std::collections::HashMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use trestle_client::IfMatch;
use trestle_types::{ETag, Entity, ErrorCode, Value};

use super::{Check, Shared};
use crate::history::{Op, Recorder, linearizable};
use crate::rest::{RestClient, RestError};

pub const TABLE: &str = "registers";
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
const PROCESSES: u64 = 4;

fn etag_text(e: &ETag) -> String {
    e.0.ticks().to_string()
}

fn value_of(e: &Entity) -> Option<String> {
    match e.properties.get("v") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

pub struct Registers {
    rec: Recorder,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Registers {
    pub async fn start(shared: &Arc<Shared>, seed: u64) -> anyhow::Result<Registers> {
        shared.client.create_table(TABLE).await?;
        let rec = Recorder::new();
        let tasks = (0..PROCESSES)
            .map(|p| tokio::spawn(process(p, shared.clone(), rec.clone(), seed ^ (p << 32))))
            .collect();
        Ok(Registers { rec, tasks })
    }

    pub async fn finish(self) -> Vec<Check> {
        for t in self.tasks {
            let _ = t.await;
        }
        let history = self.rec.history();
        let ops = history.len();
        let unknown = history
            .operations()
            .iter()
            .filter(|o| o.outcome.is_unknown())
            .count();
        let what = format!(
            "{ops} reads, upserts and CAS on {} keys ({unknown} unknown)",
            KEYS.len()
        );
        let check = match linearizable::check(&history) {
            linearizable::Verdict::Linearizable => Check::pass("registers: linearizable", what),
            linearizable::Verdict::NotLinearizable {
                key,
                counterexample,
            } => Check::fail(
                "registers: linearizable",
                format!("{what}; key {key} is NOT linearizable"),
                format!("{counterexample:#?}"),
            ),
            linearizable::Verdict::Unknown { key, explored } => Check::fail(
                "registers: linearizable",
                format!("{what}; the search on {key} gave up after {explored} states"),
                String::new(),
            ),
        };
        vec![check.with_operations(ops)]
    }
}

async fn process(p: u64, shared: Arc<Shared>, rec: Recorder, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let table = shared.client.table(TABLE);
    let mut last_etag: HashMap<&str, ETag> = HashMap::new();
    let mut n = 0u64;
    while !shared.stopped() {
        let key = KEYS[rng.gen_range(0..KEYS.len())];
        n += 1;
        let value = format!("p{p}-{n}");
        let rest = rng.gen_bool(0.5).then(|| shared.random_rest(&mut rng));
        match rng.gen_range(0..3) {
            0 => {
                read(
                    &rec,
                    p,
                    key,
                    &table,
                    &shared.rest,
                    rest.as_deref(),
                    &mut last_etag,
                )
                .await
            }
            1 => {
                let h = rec.invoke(p, Op::write(key, value.clone()));
                match write(&table, &shared.rest, rest.as_deref(), key, &value, None).await {
                    Ok(etag) => h.ok(None, Some(&etag_text(&etag))),
                    Err(Outcome::Unknown) => h.unknown(),
                    Err(Outcome::Refused(why)) => h.fail(why),
                }
            }
            _ => {
                let Some(expected) = last_etag.get(key).copied() else {
                    continue;
                };
                let h = rec.invoke(p, Op::cas(key, etag_text(&expected), value.clone()));
                match write(
                    &table,
                    &shared.rest,
                    rest.as_deref(),
                    key,
                    &value,
                    Some(expected),
                )
                .await
                {
                    Ok(etag) => h.ok(None, Some(&etag_text(&etag))),
                    Err(Outcome::Unknown) => h.unknown(),
                    Err(Outcome::Refused(why)) => h.fail(why),
                }
            }
        }
        shared.progress();
    }
}

enum Outcome {
    Refused(String),
    Unknown,
}

async fn read(
    rec: &Recorder,
    p: u64,
    key: &'static str,
    table: &trestle_client::Table,
    rest: &RestClient,
    endpoint: Option<&str>,
    last_etag: &mut HashMap<&'static str, ETag>,
) {
    let h = rec.invoke(p, Op::read(key));
    let result = match endpoint {
        Some(endpoint) => match rest.get(endpoint, TABLE, "r", key).await {
            Ok(Some(r)) => Ok(Some((r.value, r.etag))),
            Ok(None) => Ok(None),
            Err(_) => Err(()),
        },
        None => match table.get("r", key).await {
            Ok(e) => match e.etag() {
                Some(etag) => Ok(Some((value_of(&e), etag))),
                None => Err(()),
            },
            Err(e) if e.code() == Some(ErrorCode::ResourceNotFound) => Ok(None),
            Err(_) => Err(()),
        },
    };
    match result {
        Ok(Some((value, etag))) => {
            last_etag.insert(key, etag);
            h.ok(value.as_deref(), Some(&etag_text(&etag)));
        }
        Ok(None) => h.ok(None, None),
        // A failed read tells nothing; unknown is always safe for a read.
        Err(()) => h.unknown(),
    }
}

async fn write(
    table: &trestle_client::Table,
    rest: &RestClient,
    endpoint: Option<&str>,
    key: &str,
    value: &str,
    if_match: Option<ETag>,
) -> Result<ETag, Outcome> {
    match endpoint {
        Some(endpoint) => match rest.put(endpoint, TABLE, "r", key, value, if_match).await {
            Ok(etag) => Ok(etag),
            Err(RestError::Refused { status, code }) => {
                Err(Outcome::Refused(format!("{status} {code}")))
            }
            Err(RestError::Unknown(_)) => Err(Outcome::Unknown),
        },
        None => {
            let entity = Entity::new("r", key).with("v", Value::String(value.to_string()));
            let result = match if_match {
                Some(etag) => table.replace(entity, IfMatch::ETag(etag)).await,
                None => table.upsert_replace(entity).await,
            };
            match result {
                Ok(o) => o.etag.ok_or(Outcome::Unknown),
                Err(e) if e.may_have_applied() => Err(Outcome::Unknown),
                Err(e) => Err(Outcome::Refused(e.to_string())),
            }
        }
    }
}
