//! Inserts and paged queries: writers insert new keys while a reader pages through the table again and
//! again. Every complete scan must return each entity that existed throughout exactly once, in key
//! order; a final read of the table must hold every acknowledged insert.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt as _;
use trestle_client::QueryBuilder;
use trestle_types::{Entity, Value};

use super::{Check, Shared};
use crate::history::{Op, Recorder, lost_writes, paging};

pub const TABLE: &str = "inserts";
const PRELOADED: usize = 200;
const WRITERS: u64 = 2;

pub struct Inserts {
    rec: Recorder,
    existed: BTreeSet<String>,
    scans: Arc<Mutex<Vec<Vec<Vec<String>>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
}

fn entity(rk: &str) -> Entity {
    Entity::new("p", rk).with("v", Value::String(rk.to_string()))
}

impl Inserts {
    pub async fn start(shared: &Arc<Shared>) -> anyhow::Result<Inserts> {
        shared.client.create_table(TABLE).await?;
        let table = shared.client.table(TABLE);
        let mut existed = BTreeSet::new();
        for chunk in (0..PRELOADED).collect::<Vec<_>>().chunks(100) {
            let ops = chunk
                .iter()
                .map(|i| trestle_types::WriteOp {
                    kind: trestle_types::WriteKind::Insert,
                    entity: entity(&format!("a{i:04}")),
                    if_match: trestle_types::IfMatch::None,
                })
                .collect();
            table.batch(ops).await?;
            existed.extend(chunk.iter().map(|i| format!("a{i:04}")));
        }
        let rec = Recorder::new();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (table, rec, shared) = (shared.client.table(TABLE), rec.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !shared.stopped() {
                    let rk = format!("w{w}-{i:05}");
                    let h = rec.invoke(100 + w, Op::insert(rk.clone(), rk.clone()));
                    match table.insert(entity(&rk)).await {
                        Ok(o) => h.ok(None, o.etag.map(|e| e.0.ticks().to_string()).as_deref()),
                        Err(e) if e.may_have_applied() => h.unknown(),
                        Err(e) => h.fail(e.to_string()),
                    }
                    i += 1;
                    shared.progress();
                }
            }));
        }
        let scans: Arc<Mutex<Vec<Vec<Vec<String>>>>> = Arc::default();
        {
            let (table, shared, scans) =
                (shared.client.table(TABLE), shared.clone(), scans.clone());
            tasks.push(tokio::spawn(async move {
                while !shared.stopped() {
                    if let Some(pages) = scan(&table).await {
                        scans.lock().unwrap_or_else(|e| e.into_inner()).push(pages);
                    }
                }
            }));
        }
        Ok(Inserts {
            rec,
            existed,
            scans,
            tasks,
            shared: shared.clone(),
        })
    }

    pub async fn finish(self) -> Vec<Check> {
        for t in self.tasks {
            let _ = t.await;
        }
        let scans = self.scans.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut checks = Vec::new();
        let bad: Vec<String> = scans
            .iter()
            .enumerate()
            .filter_map(|(i, pages)| {
                let v = paging::check(pages, &self.existed);
                (!v.is_empty()).then(|| format!("scan {i}: {v:?}"))
            })
            .collect();
        let what = format!("{} complete paged scans (50 per page)", scans.len());
        checks.push(
            if scans.is_empty() {
                Check::fail(
                    "paging: nothing skipped or repeated",
                    format!("{what}: none completed"),
                    String::new(),
                )
            } else if bad.is_empty() {
                Check::pass("paging: nothing skipped or repeated", what)
            } else {
                Check::fail("paging: nothing skipped or repeated", what, bad.join("\n"))
            }
            .with_operations(scans.len()),
        );
        let history = self.rec.history();
        let table = self.shared.client.table(TABLE);
        let all: Result<Vec<Entity>, _> = table.query(QueryBuilder::new()).try_collect().await;
        let check = match all {
            Err(e) => Check::fail(
                "inserts: no acknowledged insert lost",
                format!("the final read failed: {e}"),
                String::new(),
            ),
            Ok(all) => {
                let final_read: BTreeMap<String, lost_writes::Entity> = all
                    .iter()
                    .filter(|e| e.row_key.starts_with('w'))
                    .map(|e| {
                        let etag = e.etag().map(|t| t.0.ticks().to_string());
                        let v = match e.properties.get("v") {
                            Some(Value::String(s)) => s.clone(),
                            _ => String::new(),
                        };
                        (
                            e.row_key.clone(),
                            lost_writes::Entity::new(v, etag.as_deref()),
                        )
                    })
                    .collect();
                let preloaded = all.iter().filter(|e| e.row_key.starts_with('a')).count();
                let lost = lost_writes::check(&history, &final_read);
                let what = format!(
                    "{} inserts, {} found at the end, {preloaded}/{PRELOADED} preloaded found",
                    history.len(),
                    final_read.len()
                );
                if lost.is_empty() && preloaded == PRELOADED {
                    Check::pass("inserts: no acknowledged insert lost", what)
                } else {
                    Check::fail(
                        "inserts: no acknowledged insert lost",
                        format!("{what}; {} acknowledged inserts lost", lost.len()),
                        lost.iter()
                            .take(10)
                            .map(|l| l.to_string())
                            .collect::<Vec<_>>()
                            .join("\n"),
                    )
                }
            }
        };
        checks.push(check.with_operations(history.len()));
        checks
    }
}

/// One full scan, page by page; `None` if a page failed.
async fn scan(table: &trestle_client::Table) -> Option<Vec<Vec<String>>> {
    let mut pages = Vec::new();
    let mut next = None;
    loop {
        let mut q = QueryBuilder::new().page_size(50).limit(50);
        if let Some(n) = next.take() {
            q = q.continuation(n);
        }
        let page = table.query_page(q).await.ok()?;
        pages.push(page.entities.iter().map(|e| e.row_key.clone()).collect());
        match page.next {
            Some(n) => next = Some(n),
            None => return Some(pages),
        }
    }
}
