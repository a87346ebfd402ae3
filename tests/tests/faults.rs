//! Fault runs of the real binary judged by the history checkers (testkit::history): entity registers
//! read, written and compare-and-swapped by concurrent clients while the nemesis kills (-9) and pauses
//! (SIGSTOP) nodes, then every key's history must be linearizable. The nemesis schedule comes from a seed
//! (printed, so a failure can be replayed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use trestle_client::{IfMatch, TableClient};
use trestle_testkit::ProcessCluster;
use trestle_testkit::history::{Op, Outcome, Recorder, linearizable};
use trestle_types::{Entity, ErrorCode, Value};

const KEYS: [&str; 3] = ["k0", "k1", "k2"];

fn etag_text(e: &trestle_types::ETag) -> String {
    e.0.ticks().to_string()
}

fn value_of(e: &Entity) -> Option<String> {
    match e.properties.get("v") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The nemesis seed: `TRESTLE_FAULT_SEED` to replay a schedule, else a random one (printed).
fn fault_seed() -> u64 {
    let seed = std::env::var("TRESTLE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fault seed {seed} (TRESTLE_FAULT_SEED={seed} replays the schedule)");
    seed
}

/// Whether `n` more operations complete (counted by `done`) within a minute.
async fn progress(done: Arc<AtomicUsize>, n: usize) -> bool {
    let target = done.load(Ordering::Relaxed) + n;
    trestle_testkit::eventually(Duration::from_secs(60), || async {
        (done.load(Ordering::Relaxed) >= target).then_some(())
    })
    .await
    .is_some()
}

/// One client process: random reads, upserts and CAS on the keys until `stop`.
async fn worker(
    process: u64,
    client: TableClient,
    rec: Recorder,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    seed: u64,
) {
    let table = client.table("registers");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut last_etag: std::collections::HashMap<&str, String> = Default::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = KEYS[rng.gen_range(0..KEYS.len())];
        n += 1;
        let value = format!("p{process}-{n}");
        match rng.gen_range(0..3) {
            0 => {
                let h = rec.invoke(process, Op::read(key));
                match table.get("r", key).await {
                    Ok(e) => {
                        let etag = e.etag().as_ref().map(etag_text);
                        if let Some(t) = &etag {
                            last_etag.insert(key, t.clone());
                        }
                        h.ok(value_of(&e).as_deref(), etag.as_deref());
                    }
                    Err(e) if e.code() == Some(ErrorCode::ResourceNotFound) => h.ok(None, None),
                    Err(_) => h.unknown(),
                }
            }
            1 => {
                let h = rec.invoke(process, Op::write(key, value.clone()));
                let entity = Entity::new("r", key).with("v", Value::String(value));
                match table.upsert_replace(entity).await {
                    Ok(o) => h.ok(None, o.etag.as_ref().map(etag_text).as_deref()),
                    Err(e) if e.may_have_applied() => h.unknown(),
                    Err(e) => h.fail(format!("{e}")),
                }
            }
            _ => {
                let Some(expected) = last_etag.get(key).cloned() else {
                    continue;
                };
                let h = rec.invoke(process, Op::cas(key, expected.clone(), value.clone()));
                let ticks: i64 = expected.parse().unwrap_or_default();
                let etag = trestle_types::ETag(trestle_types::DateTime(ticks));
                let entity = Entity::new("r", key).with("v", Value::String(value));
                match table.replace(entity, IfMatch::ETag(etag)).await {
                    Ok(o) => h.ok(None, o.etag.as_ref().map(etag_text).as_deref()),
                    Err(e) if e.may_have_applied() => h.unknown(),
                    Err(e) => h.fail(format!("{e}")),
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f01_registers_stay_linearizable_under_kill9_and_pauses() {
    let seed = fault_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = ProcessCluster::start(1).await.unwrap();
    let client = cluster.client().await.unwrap();
    client.create_table("registers").await.unwrap();
    let rec = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for p in 0..4u64 {
        workers.push(tokio::spawn(worker(
            p,
            client.clone(),
            rec.clone(),
            stop.clone(),
            done.clone(),
            seed ^ p,
        )));
    }
    let progress = |n: usize| progress(done.clone(), n);
    assert!(progress(100).await, "the workload runs");
    for round in 0..4 {
        let victim = rng.gen_range(1..=3u64);
        if rng.gen_bool(0.5) {
            eprintln!("round {round}: kill -9 node {victim}");
            cluster.kill9(victim).unwrap();
            assert!(
                progress(100).await,
                "round {round}: progress without node {victim}"
            );
            cluster.restart(victim).await.unwrap();
        } else {
            eprintln!("round {round}: SIGSTOP node {victim}");
            cluster.pause(victim).unwrap();
            assert!(
                progress(100).await,
                "round {round}: progress while node {victim} is paused"
            );
            cluster.resume(victim).unwrap();
        }
        assert!(
            progress(50).await,
            "round {round}: progress after the fault healed"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let history = rec.history();
    let ops = history.len();
    match linearizable::check(&history) {
        linearizable::Verdict::Linearizable => {}
        linearizable::Verdict::NotLinearizable {
            key,
            counterexample,
        } => {
            panic!("seed {seed}: key {key} is not linearizable: {counterexample:?}")
        }
        linearizable::Verdict::Unknown { key, explored } => {
            panic!("seed {seed}: the search on {key} gave up after {explored} states ({ops} ops)")
        }
    }
    let unknown = history
        .operations()
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Unknown))
        .count();
    eprintln!("{ops} operations ({unknown} with unknown outcome), linearizable");
    assert!(ops > 500, "too few operations to mean anything: {ops}");
    drop(client);
    cluster.stop_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f02_paged_queries_skip_nothing_and_no_acknowledged_insert_is_lost_under_kill9() {
    use std::collections::{BTreeMap, BTreeSet};

    use futures::TryStreamExt;
    use trestle_client::QueryBuilder;
    use trestle_testkit::history::{lost_writes, paging};

    let seed = fault_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = ProcessCluster::start(1).await.unwrap();
    let client = cluster.client().await.unwrap();
    client.create_table("paged").await.unwrap();
    let table = client.table("paged");
    // Entities that exist throughout: every full scan must return each exactly once, in order.
    let mut existed = BTreeSet::new();
    for i in 0..300 {
        let rk = format!("a{i:04}");
        table
            .insert(Entity::new("p", rk.clone()).with("v", Value::String(rk.clone())))
            .await
            .unwrap();
        existed.insert(rk);
    }
    let rec = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..3u64 {
        let (table, rec, stop, done) = (
            client.table("paged"),
            rec.clone(),
            stop.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let rk = format!("w{w}-{i:05}");
                let h = rec.invoke(w, Op::insert(rk.clone(), rk.clone()));
                match table
                    .insert(Entity::new("p", rk.clone()).with("v", Value::String(rk)))
                    .await
                {
                    Ok(o) => h.ok(None, o.etag.as_ref().map(etag_text).as_deref()),
                    Err(e) if e.may_have_applied() => h.unknown(),
                    Err(e) => h.fail(format!("{e}")),
                }
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let scans: Arc<std::sync::Mutex<Vec<Vec<Vec<String>>>>> = Arc::default();
    {
        let (table, stop, scans) = (client.table("paged"), stop.clone(), scans.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut pages = Vec::new();
                let mut next = None;
                let complete = loop {
                    let mut q = QueryBuilder::new().page_size(50).limit(50);
                    if let Some(n) = next.take() {
                        q = q.continuation(n);
                    }
                    match table.query_page(q).await {
                        Ok(page) => {
                            pages.push(page.entities.iter().map(|e| e.row_key.clone()).collect());
                            match page.next {
                                Some(n) => next = Some(n),
                                None => break true,
                            }
                        }
                        Err(_) => break false,
                    }
                };
                if complete {
                    scans.lock().unwrap().push(pages);
                }
            }
        }));
    }
    let progress = |n: usize| progress(done.clone(), n);
    assert!(progress(100).await);
    for round in 0..3 {
        let victim = rng.gen_range(1..=3u64);
        eprintln!("round {round}: kill -9 node {victim}");
        cluster.kill9(victim).unwrap();
        assert!(
            progress(100).await,
            "round {round}: inserts go on without node {victim}"
        );
        cluster.restart(victim).await.unwrap();
        assert!(
            progress(50).await,
            "round {round}: inserts go on after the restart"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let scans = scans.lock().unwrap().clone();
    assert!(!scans.is_empty(), "no paged scan completed");
    for (i, pages) in scans.iter().enumerate() {
        let violations = paging::check(pages, &existed);
        assert!(violations.is_empty(), "scan {i}: {violations:?}");
    }
    // Every acknowledged insert is there after the faults.
    let all: Vec<Entity> = client
        .table("paged")
        .query(QueryBuilder::new())
        .try_collect()
        .await
        .unwrap();
    let final_read: BTreeMap<String, lost_writes::Entity> = all
        .iter()
        .filter(|e| !e.row_key.starts_with('a'))
        .map(|e| {
            let etag = e.etag().as_ref().map(etag_text);
            (
                e.row_key.clone(),
                lost_writes::Entity::new(value_of(e).unwrap_or_default(), etag.as_deref()),
            )
        })
        .collect();
    let history = rec.history();
    let lost = lost_writes::check(&history, &final_read);
    assert!(
        lost.is_empty(),
        "seed {seed}: lost acknowledged writes, e.g. {}",
        lost[0]
    );
    eprintln!(
        "{} inserts, {} full paged scans checked, {} entities at the end",
        history.len(),
        scans.len(),
        all.len()
    );
    drop(client);
    cluster.stop_all().unwrap();
}
