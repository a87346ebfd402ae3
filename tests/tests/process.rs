//! Process clusters of the real `trestle` binary: kill -9 of a range leader under a concurrent write load,
//! restart, and every acknowledged write present on every replica; a full `trestle dev` restart keeps every
//! acknowledged write; locks across kill -9 of the meta leader; the fenced counter while nodes are
//! SIGSTOPped and killed; five nodes losing any one; a node joining a running cluster.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trestle_testkit::process::{DevProcess, ProcessOptions};
use trestle_testkit::{ProcessCluster, replica};
use trestle_types::{Entity, Value};

const ACCOUNT: &str = "devstoreaccount1";

fn entity(pk: &str, rk: &str) -> Entity {
    Entity::new(pk, rk).with("payload", Value::String("x".repeat(200)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t01_kill9_of_the_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = ProcessCluster::start(2).await.unwrap();
    let client = cluster.client().await.unwrap();
    client.create_table("load").await.unwrap();
    let range = replica::range_of_table(&cluster.grpc_endpoint(1), ACCOUNT, "load")
        .await
        .unwrap();
    let leader = cluster.leader_of(range).await.unwrap();

    let acked: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
    let stop_at = Arc::new(Mutex::new(None::<Instant>));
    let mut writers = Vec::new();
    for w in 0..8 {
        let client = client.clone();
        let acked = acked.clone();
        let stop_at = stop_at.clone();
        writers.push(tokio::spawn(async move {
            let table = client.table("load");
            let mut i = 0u64;
            loop {
                if stop_at.lock().unwrap().is_some_and(|t| Instant::now() >= t) {
                    break;
                }
                let (pk, rk) = (format!("w{w}"), format!("{i:08}"));
                // Only writes the cluster acknowledged count; failures (the leader died mid-write) are
                // allowed, silence is not.
                if table.insert(entity(&pk, &rk)).await.is_ok() {
                    acked.lock().unwrap().insert((pk, rk));
                }
                i += 1;
            }
        }));
    }
    // Let the load run, then kill the leader without warning.
    let warmup = trestle_testkit::eventually(Duration::from_secs(30), || async {
        (acked.lock().unwrap().len() >= 200).then_some(())
    })
    .await;
    assert!(warmup.is_some(), "writes were acknowledged before the kill");
    cluster.kill9(leader).unwrap();
    let before_restart = acked.lock().unwrap().len();
    let progressed = trestle_testkit::eventually(Duration::from_secs(30), || async {
        (acked.lock().unwrap().len() >= before_restart + 200).then_some(())
    })
    .await;
    assert!(
        progressed.is_some(),
        "writes continue after the leader is killed"
    );
    cluster.restart(leader).await.unwrap();
    *stop_at.lock().unwrap() = Some(Instant::now() + Duration::from_secs(2));
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());

    // Every replica must hold every acknowledged write once it has caught up.
    let caught_up = replica::wait_converged(&cluster, Duration::from_secs(60)).await;
    assert!(caught_up, "replicas converge after the restart");
    let dir = cluster.dir.path().to_path_buf();
    drop(client);
    cluster.stop_all().unwrap();
    for id in 1..=3 {
        let on_disk =
            replica::entities_on_disk(&dir.join(format!("node{id}/db")), ACCOUNT, "load").unwrap();
        let missing: Vec<_> = acked.difference(&on_disk).take(5).collect();
        assert!(
            missing.is_empty(),
            "replica {id} lost acknowledged writes, e.g. {missing:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t02_a_full_dev_restart_keeps_every_acknowledged_write() {
    let data = tempfile::tempdir().unwrap();
    let mut dev = DevProcess::start(data.path()).unwrap();
    let client = trestle_testkit::dev_client(dev.grpc.clone()).await.unwrap();
    client.create_table("durable").await.unwrap();
    let t = client.table("durable");
    for i in 0..100 {
        t.insert(entity("p", &format!("{i:04}"))).await.unwrap();
    }
    assert!(
        dev.interrupt().unwrap(),
        "trestle dev exits cleanly on Ctrl-C"
    );

    let dev = DevProcess::start(data.path()).unwrap();
    let client = trestle_testkit::dev_client(dev.grpc.clone()).await.unwrap();
    let t = client.table("durable");
    for i in 0..100 {
        let e = t.get("p", &format!("{i:04}")).await.unwrap();
        assert_eq!(e.row_key, format!("{i:04}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t03_ctl_status_shows_every_node_range_leader_and_index() {
    let cluster = ProcessCluster::start(3).await.unwrap();
    let client = cluster.client().await.unwrap();
    client.create_table("visible").await.unwrap();
    client
        .table("visible")
        .insert(entity("p", "r"))
        .await
        .unwrap();
    let bin = trestle_testkit::process::trestle_bin().unwrap();
    let endpoint = cluster.grpc_endpoint(2);
    // Without the admin token, ctl is refused.
    let refused = std::process::Command::new(&bin)
        .args(["ctl", "--addr", &endpoint, "status", "--json"])
        .env_remove("TRESTLE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!refused.status.success(), "ctl without a token succeeded");
    let wrong = std::process::Command::new(&bin)
        .args(["ctl", "--addr", &endpoint, "status", "--json"])
        .env("TRESTLE_ADMIN_TOKEN", "wrong-admin-token-0123456789")
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "ctl with a wrong token succeeded");
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("admin token is not valid"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let out = std::process::Command::new(&bin)
        .args(["ctl", "--addr", &endpoint, "status", "--json"])
        .env(
            "TRESTLE_ADMIN_TOKEN",
            trestle_testkit::process::PROCESS_CLUSTER_TOKEN,
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["up"] == true), "{nodes:?}");
    let replicas = v["replicas"].as_array().unwrap();
    // The meta group and three data ranges, each with a replica on every node.
    assert_eq!(replicas.len(), 4 * 3, "{replicas:?}");
    for range in 1..=4u64 {
        let of_range: Vec<_> = replicas.iter().filter(|r| r["range"] == range).collect();
        let leaders = of_range.iter().filter(|r| r["role"] == "leader").count();
        assert_eq!(leaders, 1, "range {range} has one leader: {of_range:?}");
        assert!(of_range.iter().all(|r| r["commit"].as_u64().unwrap() >= 1));
        // The leader reports how far each replica matched its log (every one has its first entry).
        assert!(
            of_range
                .iter()
                .all(|r| r["matched"].as_u64().is_some_and(|m| m >= 1)),
            "range {range}: {of_range:?}"
        );
    }
    // The text form names the same things.
    // … and the token can come from a file.
    let token_file = cluster.dir.path().join("admin-token");
    std::fs::write(
        &token_file,
        format!("{}\n", trestle_testkit::process::PROCESS_CLUSTER_TOKEN),
    )
    .unwrap();
    let text = std::process::Command::new(&bin)
        .args(["ctl", "--addr", &endpoint, "status", "--admin-token-file"])
        .arg(&token_file)
        .env_remove("TRESTLE_ADMIN_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("RANGE") && text.contains("leader") && text.contains("meta"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t04_dev_keeps_every_range_led_by_the_rest_node() {
    let data = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(data.path()).unwrap();
    let leaders = |s: &trestle_proto::admin::StatusResponse| -> Vec<(u64, u64)> {
        s.ranges
            .iter()
            .map(|r| (r.range_id, r.leader_node_id))
            .collect()
    };
    // Elections put leaders anywhere; the dev cluster moves them all to node 1.
    let settled = trestle_testkit::eventually(Duration::from_secs(30), || async {
        let s = trestle_testkit::process::admin_status(&dev.grpc[0], &dev.token).await?;
        let l = leaders(&s);
        (l.len() == 5 && l.iter().all(|&(_, leader)| leader == 1)).then_some(l)
    })
    .await;
    let last = trestle_testkit::process::admin_status(&dev.grpc[0], &dev.token)
        .await
        .map(|s| leaders(&s));
    assert!(
        settled.is_some(),
        "every range (meta + 4) is led by node 1; last seen: {last:?}"
    );

    // Moved away on purpose, leadership comes back: two more elections (there and back).
    let term_of_range_2 = |s: &trestle_proto::admin::StatusResponse| {
        s.ranges
            .iter()
            .find(|r| r.range_id == 2)
            .and_then(|r| r.replicas.first())
            .map(|r| r.term)
            .unwrap_or(0)
    };
    let before = trestle_testkit::process::admin_status(&dev.grpc[0], &dev.token)
        .await
        .map(|s| term_of_range_2(&s))
        .unwrap();
    let mut admin = trestle_proto::admin::admin_client::AdminClient::connect(dev.grpc[1].clone())
        .await
        .unwrap();
    admin
        .transfer_leader(trestle_testkit::process::with_admin_token(
            trestle_proto::admin::TransferLeaderRequest {
                range_id: 2,
                to_node_id: 2,
            },
            &dev.token,
        ))
        .await
        .unwrap();
    let back = trestle_testkit::eventually(Duration::from_secs(30), || async {
        let s = trestle_testkit::process::admin_status(&dev.grpc[0], &dev.token).await?;
        let led_by_1 = leaders(&s).contains(&(2, 1));
        (led_by_1 && term_of_range_2(&s) >= before + 2).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "range 2 went to node 2 and came back to node 1 (term was {before})"
    );
}

/// One REST request with Shared Key over a fresh connection: `(status, x-ms-error-code)`, or `None`
/// when the node could not be reached or the connection died before an answer (no answer is not an
/// error answer).
async fn rest_call(
    rest: &str,
    verb: &str,
    path: &str,
    body: &str,
) -> Option<(u16, Option<String>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use trestle_rest_gateway::auth::shared_key::{Scheme, authorization_header};
    let host = rest.trim_start_matches("http://");
    let key = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        trestle_rest_gateway::config::DEV_ACCOUNT_KEY,
    )
    .ok()?;
    let date = trestle_proto::auth::http_date(chrono::Utc::now());
    let content_type = if body.is_empty() {
        ""
    } else {
        "application/json"
    };
    let resource_path = path.split('?').next().unwrap_or(path);
    let auth = authorization_header(
        Scheme::SharedKey,
        ACCOUNT,
        &key,
        verb,
        content_type,
        &date,
        &format!("/{ACCOUNT}/{ACCOUNT}/{resource_path}"),
    );
    let mut request = format!(
        "{verb} /{ACCOUNT}/{path} HTTP/1.1\r\nHost: {host}\r\nx-ms-version: 2019-02-02\r\n\
         x-ms-date: {date}\r\nAuthorization: {auth}\r\nAccept: application/json;odata=nometadata\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        request += &format!("Content-Type: {content_type}\r\n");
    }
    request += "\r\n";
    request += body;
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(host).await.ok()?;
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.ok()?;
        Some(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .ok()??;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
    let code = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-ms-error-code")
            .then(|| value.trim().to_string())
    });
    Some((status, code))
}

/// One REST answer: (operation, status, x-ms-error-code).
type Answer = (String, u16, Option<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t05_killing_leaders_under_rest_load_never_answers_internal_error() {
    let mut cluster = ProcessCluster::start(1).await.unwrap();
    let client = cluster.client().await.unwrap();
    client.create_table("killed").await.unwrap();
    let range = replica::range_of_table(&cluster.grpc_endpoint(1), ACCOUNT, "killed")
        .await
        .unwrap();
    let rests: Vec<String> = (1..=3).map(|id| cluster.rest_endpoint(id)).collect();
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..6usize {
        let (rests, answers, stop) = (rests.clone(), answers.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Every node in turn, so most requests are forwarded to the leader.
                let rest = &rests[(w + i as usize) % rests.len()];
                let (op, answer) = if i % 3 == 2 {
                    let path = format!("killed(PartitionKey='w{w}',RowKey='{:06}')", i - 1);
                    ("read", rest_call(rest, "GET", &path, "").await)
                } else {
                    let path = format!("killed(PartitionKey='w{w}',RowKey='{i:06}')");
                    ("upsert", rest_call(rest, "PUT", &path, r#"{"n":1}"#).await)
                };
                if let Some((status, code)) = answer {
                    answers.lock().unwrap().push((op.to_string(), status, code));
                }
                i += 1;
            }
        }));
    }
    let answered = |n: usize| {
        let answers = answers.clone();
        async move {
            trestle_testkit::eventually(Duration::from_secs(60), || async {
                (answers.lock().unwrap().len() >= n).then_some(())
            })
            .await
            .is_some()
        }
    };
    for round in 0..3 {
        let leader = cluster.leader_of(range).await.unwrap();
        let before = answers.lock().unwrap().len();
        assert!(answered(before + 100).await, "round {round}: load runs");
        cluster.kill9(leader).unwrap();
        let after_kill = answers.lock().unwrap().len();
        assert!(
            answered(after_kill + 100).await,
            "round {round}: requests are answered after the leader is killed"
        );
        cluster.restart(leader).await.unwrap();
        cluster.wait_ready().await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for (op, status, code) in &answers {
        *tally
            .entry(format!("{op} {status} {}", code.as_deref().unwrap_or("-")))
            .or_default() += 1;
    }
    // Success, a retryable 503, a read's 404 (its write was refused), or — for a write whose outcome is
    // unknown — Azure's 500 OperationTimedOut. Never InternalError ("transport error").
    for (op, status, code) in &answers {
        let allowed = matches!(status, 200 | 204)
            || (*status == 404 && op == "read")
            || (*status == 503 && code.as_deref() == Some("ServerBusy"))
            || (*status == 500 && code.as_deref() == Some("OperationTimedOut") && op == "upsert");
        assert!(
            allowed,
            "{op} answered {status} {code:?}; all answers: {tally:?}"
        );
    }
    let ok = answers.iter().filter(|(_, s, _)| *s == 204).count();
    assert!(ok > 300, "writes succeeded across the kills: {tally:?}");
    drop(client);
    cluster.stop_all().unwrap();
}

/// `trestle ctl locks --json` against `cluster`'s node `id`.
fn ctl_locks(cluster: &ProcessCluster, id: u64) -> Option<serde_json::Value> {
    let out = std::process::Command::new(trestle_testkit::process::trestle_bin().ok()?)
        .args([
            "ctl",
            "--addr",
            &cluster.grpc_endpoint(id),
            "locks",
            "--json",
        ])
        .env(
            "TRESTLE_ADMIN_TOKEN",
            trestle_testkit::process::PROCESS_CLUSTER_TOKEN,
        )
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t06_locks_survive_kill9_of_the_meta_leader_and_ctl_lists_them() {
    let mut cluster = ProcessCluster::start(1).await.unwrap();
    let client = cluster.client().await.unwrap();
    let locks = client.locks();
    let holder = locks.lease(Duration::from_secs(5)).await.unwrap();
    let held = holder.try_acquire("jobs/compaction").await.unwrap();
    let waiter = locks.lease(Duration::from_secs(10)).await.unwrap();

    // ctl shows the lock (and the partition manager's own) from the meta leader.
    let listed = trestle_testkit::eventually(Duration::from_secs(20), || async {
        let v = ctl_locks(&cluster, 2)?;
        let locks = v["locks"].as_array()?.clone();
        let pm = locks
            .iter()
            .any(|l| l["scope"] == "_system" && l["name"] == "trestle/partition-manager");
        (pm && v["meta_leader"] == true).then_some(locks)
    })
    .await
    .expect("ctl locks lists the partition manager's lock from the meta leader");
    let ours = listed
        .iter()
        .find(|l| l["name"] == "jobs/compaction")
        .expect("our lock is listed");
    assert_eq!(ours["scope"], ACCOUNT);
    assert_eq!(ours["token"].as_u64(), Some(held.token()));
    assert_eq!(ours["lease"].as_u64(), Some(holder.id()));

    // kill -9 the meta leader while the lock is held and contended.
    let meta_leader = cluster.leader_of(1).await.unwrap();
    let contender = tokio::spawn(async move {
        let g = waiter
            .acquire("jobs/compaction", Duration::from_secs(40))
            .await;
        (waiter, g)
    });
    cluster.kill9(meta_leader).unwrap();
    let new_leader = trestle_testkit::eventually(Duration::from_secs(30), || async {
        cluster.leader_of(1).await.filter(|l| *l != meta_leader)
    })
    .await
    .expect("a new meta leader");
    assert_ne!(new_leader, meta_leader);
    // The holder's background keep-alives carry it across the failover: still held, same token.
    let info = trestle_testkit::eventually(Duration::from_secs(20), || async {
        locks.describe("jobs/compaction").await.ok()
    })
    .await
    .unwrap();
    assert_eq!(info.holder, Some(holder.id()), "lost across the failover");
    assert_eq!(info.token, held.token());
    assert!(!holder.is_lost());
    // Released, it goes to the contender with a higher token.
    let first_token = held.token();
    held.release().await.unwrap();
    let (_waiter, granted) = contender.await.unwrap();
    let granted = granted.unwrap();
    assert!(granted.token() > first_token);
    cluster.restart(meta_leader).await.unwrap();
    drop(client);
    cluster.stop_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t07_a_fenced_counter_counts_every_acknowledged_increment_once_under_sigstop_and_kill9() {
    use trestle_testkit::fenced_counter::{self, FencedCounter};
    let mut cluster = ProcessCluster::start(2).await.unwrap();
    let client = cluster.client().await.unwrap();
    let counter = FencedCounter::start(&client, "counter", 3).await.unwrap();
    let data = replica::range_of_table(&cluster.grpc_endpoint(1), ACCOUNT, "counter")
        .await
        .unwrap();
    let limit = Duration::from_secs(60);
    assert!(counter.wait_for_more(20, limit).await, "increments happen");
    // Freeze the meta leader, then the counter's data leader, each with its sockets open; then
    // kill -9 the meta leader.
    for range in [1, data] {
        let victim = cluster.leader_of(range).await.unwrap();
        cluster.pause(victim).unwrap();
        let progressed = counter.wait_for_more(10, limit).await;
        cluster.resume(victim).unwrap();
        assert!(
            progressed,
            "increments go on while node {victim} is stopped"
        );
    }
    let victim = cluster.leader_of(1).await.unwrap();
    cluster.kill9(victim).unwrap();
    assert!(
        counter.wait_for_more(10, limit).await,
        "increments go on after node {victim} is killed"
    );
    cluster.restart(victim).await.unwrap();
    cluster.wait_ready().await.unwrap();
    assert!(
        counter.wait_for_more(10, limit).await,
        "increments go on after node {victim} is back"
    );
    let increments = counter.stop().await.unwrap();
    let final_value = fenced_counter::read(&client, "counter").await.unwrap();
    let verdict = fenced_counter::check(&increments, final_value).unwrap_or_else(|e| panic!("{e}"));
    assert!(verdict.acknowledged >= 40, "{verdict:?}");
    drop(client);
    cluster.stop_all().unwrap();
}

/// `trestle ctl` against node `id` of `cluster` with the admin token; its stdout.
fn ctl(cluster: &ProcessCluster, id: u64, args: &[&str]) -> String {
    let out = std::process::Command::new(trestle_testkit::process::trestle_bin().unwrap())
        .args(["ctl", "--addr", &cluster.grpc_endpoint(id)])
        .args(args)
        .env(
            "TRESTLE_ADMIN_TOKEN",
            trestle_testkit::process::PROCESS_CLUSTER_TOKEN,
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t08_a_five_node_cluster_of_the_real_binary_survives_the_loss_of_any_one_node() {
    let mut cluster = ProcessCluster::start_with(ProcessOptions {
        nodes: 5,
        ranges: 2,
        ..ProcessOptions::default()
    })
    .await
    .unwrap();
    // Spread the replicas so every node holds some: ranges 2 and 3 and the meta group move partly
    // to nodes 4 and 5 (through ctl, as an operator would).
    let moved = ctl(
        &cluster,
        5,
        &["range", "move", "--range", "2", "--from", "1", "--to", "4"],
    );
    assert!(moved.contains("moved"), "{moved}");
    ctl(
        &cluster,
        4,
        &["range", "move", "--range", "3", "--from", "2", "--to", "5"],
    );
    ctl(
        &cluster,
        1,
        &["range", "move", "--range", "1", "--from", "3", "--to", "5"],
    );
    let client = cluster.client().await.unwrap();
    client.create_table("five").await.unwrap();
    let t = client.table("five");
    let mut acked = Vec::new();
    for i in 0..60 {
        let key = format!("r{i:03}");
        t.insert(Entity::new(format!("p{}", i % 7), &key).with("n", Value::Int64(i)))
            .await
            .unwrap();
        acked.push((format!("p{}", i % 7), key));
    }
    for victim in 1..=5u64 {
        cluster.kill9(victim).unwrap();
        // With any one node gone every range keeps a majority: writes and reads go on.
        // (A write in flight to the killed node has an unknown outcome: upserts are repeated.)
        for i in 0..10 {
            let (pk, rk) = (format!("k{victim}"), format!("w{i}"));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let e = Entity::new(&pk, &rk).with("n", Value::Int64(i));
                match t.upsert_replace(e).await {
                    Ok(_) => break,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => panic!("upsert with node {victim} down: {e}"),
                }
            }
            acked.push((pk, rk));
        }
        for (pk, rk) in &acked {
            t.get(pk, rk)
                .await
                .unwrap_or_else(|e| panic!("{pk}/{rk} with node {victim} down: {e}"));
        }
        cluster.restart(victim).await.unwrap();
    }
    drop(client);
    cluster.stop_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t09_a_node_joins_a_running_cluster_takes_replicas_and_restarts_knowing_its_peers() {
    let token = trestle_testkit::process::PROCESS_CLUSTER_TOKEN;
    let mut cluster = ProcessCluster::start_with(ProcessOptions {
        nodes: 3,
        ranges: 2,
        config: "[partition-manager]\nschedule-interval-ms = 300\n".into(),
        ..ProcessOptions::default()
    })
    .await
    .unwrap();
    let client = cluster.client().await.unwrap();
    client.create_table("joined").await.unwrap();
    let t = client.table("joined");
    let mut acked = Vec::new();
    for i in 0..40 {
        let key = (format!("p{}", i % 5), format!("r{i:03}"));
        t.insert(Entity::new(&key.0, &key.1).with("n", Value::Int64(i)))
            .await
            .unwrap();
        acked.push(key);
    }

    // Node 4 lists only itself and joins through node 2; every member learns it, and the range
    // scheduler moves replicas onto it.
    let four = cluster.join_node(2, token).unwrap();
    assert_eq!(four, 4);
    let knows = |status: &trestle_proto::admin::StatusResponse, ids: &[u64]| {
        ids.iter()
            .all(|id| status.nodes.iter().any(|n| n.id == *id))
    };
    for id in [1, 3, 4] {
        let endpoint = cluster.grpc_endpoint(id);
        let learned = trestle_testkit::eventually(Duration::from_secs(30), || async {
            let s = trestle_testkit::process::admin_status(&endpoint, token).await?;
            knows(&s, &[1, 2, 3, 4]).then_some(())
        })
        .await;
        assert!(
            learned.is_some(),
            "node {id} knows every member; node 4 log:\n{}",
            cluster.log(4)
        );
    }
    let endpoint = cluster.grpc_endpoint(4);
    let filled = trestle_testkit::eventually(Duration::from_secs(60), || async {
        let s = trestle_testkit::process::admin_status(&endpoint, token).await?;
        (s.ranges.iter().filter(|r| r.desc.is_some()).count() >= 2).then_some(())
    })
    .await;
    assert!(
        filled.is_some(),
        "node 4 took replicas; node 1 log:\n{}",
        cluster.log(1)
    );
    // A client that knows only node 4 reads and writes everything.
    let only_four = trestle_testkit::dev_client(vec![cluster.grpc_endpoint(4)])
        .await
        .unwrap();
    let t4 = only_four.table("joined");
    for i in 0..10 {
        let key = (format!("q{}", i % 3), format!("s{i:03}"));
        t4.insert(Entity::new(&key.0, &key.1).with("n", Value::Int64(i)))
            .await
            .unwrap();
        acked.push(key);
    }
    for (pk, rk) in &acked {
        t4.get(pk, rk)
            .await
            .unwrap_or_else(|e| panic!("{pk}/{rk} through node 4: {e}"));
    }

    // With the node it joined through down, node 4 restarts on the members it saved.
    cluster.kill9(2).unwrap();
    cluster.kill9(4).unwrap();
    cluster.restart(4).await.unwrap();
    let back = trestle_testkit::eventually(Duration::from_secs(30), || async {
        let s = trestle_testkit::process::admin_status(&endpoint, token).await?;
        knows(&s, &[1, 2, 3, 4]).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "node 4 restarted knowing its peers:\n{}",
        cluster.log(4)
    );
    cluster.restart(2).await.unwrap();
    for (pk, rk) in &acked {
        t4.get(pk, rk)
            .await
            .unwrap_or_else(|e| panic!("{pk}/{rk} after node 4's restart: {e}"));
    }

    // A node claiming node 4's id from another address, and a node without the cluster token, are
    // refused and exit.
    let impostor = cluster.join_node_as(4, 1, token).unwrap();
    let exit = cluster.exited(impostor, Duration::from_secs(30));
    assert!(
        exit.is_some_and(|s| !s.success()),
        "a second node 4 was refused: {exit:?}\n{}",
        cluster.log(impostor)
    );
    assert!(
        cluster.log(impostor).contains("already a member"),
        "{}",
        cluster.log(impostor)
    );
    let stranger = cluster
        .join_node(1, "not-the-cluster-token-at-all")
        .unwrap();
    let exit = cluster.exited(stranger, Duration::from_secs(30));
    assert!(
        exit.is_some_and(|s| !s.success()),
        "a node without the token was refused: {exit:?}\n{}",
        cluster.log(stranger)
    );
    assert!(
        cluster.log(stranger).contains("refused"),
        "{}",
        cluster.log(stranger)
    );
    let s = trestle_testkit::process::admin_status(&cluster.grpc_endpoint(1), token)
        .await
        .unwrap();
    assert_eq!(
        s.nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "refused nodes are not members"
    );
    // Logs written to a file are plain text: no terminal colour codes.
    assert!(
        !cluster.log(4).contains('\u{1b}'),
        "ANSI escapes in node 4's log"
    );
    drop((client, only_four));
    cluster.stop_all().unwrap();
}

/// Every node of a three-node cluster restarted in turn, each drained of its leaderships first
/// (`trestle ctl node drain`), under a steady gRPC and REST write-and-read load: no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_a_rolling_restart_with_each_node_drained_first_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let token = trestle_testkit::process::PROCESS_CLUSTER_TOKEN;
    let mut cluster = ProcessCluster::start_with(ProcessOptions {
        nodes: 3,
        ranges: 2,
        config: "[partition-manager]\nbalance-interval-ms = 500\n".into(),
        ..ProcessOptions::default()
    })
    .await
    .unwrap();
    let client = cluster.client().await.unwrap();
    client.create_table("rolling").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    // REST goes to one node that is up, as a load balancer that knows the plan would send it.
    let rest_to = Arc::new(AtomicU64::new(1));
    let rest_endpoints: Vec<String> = cluster.ids().map(|id| cluster.rest_endpoint(id)).collect();
    let mut load = Vec::new();
    for task in 0..2u64 {
        let (t, stop, failures, latencies) = (
            client.table("rolling"),
            stop.clone(),
            failures.clone(),
            latencies.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let (pk, rk) = (format!("g{}", i % 8), format!("t{task}-{i:06}"));
                let asked = Instant::now();
                let outcome = async {
                    t.insert(Entity::new(&pk, &rk).with("n", Value::Int64(i as i64)))
                        .await?;
                    t.get(&pk, &rk).await
                }
                .await;
                latencies.lock().unwrap().push(asked.elapsed());
                if let Err(e) = outcome {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("gRPC {pk}/{rk}: {e}"));
                }
            }
        }));
    }
    for task in 0..2u64 {
        let (stop, failures, latencies, rest_to, endpoints) = (
            stop.clone(),
            failures.clone(),
            latencies.clone(),
            rest_to.clone(),
            rest_endpoints.clone(),
        );
        load.push(tokio::spawn(async move {
            let rest = trestle_testkit::rest::RestClient::new(Duration::from_secs(20)).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let endpoint = &endpoints[(rest_to.load(Ordering::SeqCst) - 1) as usize];
                let (pk, rk) = (format!("h{}", i % 8), format!("r{task}-{i:06}"));
                let asked = Instant::now();
                let outcome = async {
                    rest.put(endpoint, "rolling", &pk, &rk, "v", None).await?;
                    rest.get(endpoint, "rolling", &pk, &rk).await
                }
                .await;
                latencies.lock().unwrap().push(asked.elapsed());
                match outcome {
                    Ok(Some(_)) => {}
                    Ok(None) => failures
                        .lock()
                        .unwrap()
                        .push(format!("REST {pk}/{rk}: written, then not found")),
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("REST {pk}/{rk} via {endpoint}: {e:?}")),
                }
            }
        }));
    }
    let ops = || latencies.lock().unwrap().len();
    let warm = trestle_testkit::eventually(Duration::from_secs(30), || async {
        (ops() >= 50).then_some(())
    })
    .await;
    assert!(
        warm.is_some(),
        "the load runs: {:?}",
        failures.lock().unwrap()
    );

    for victim in cluster.ids() {
        let other = victim % 3 + 1;
        rest_to.store(other, Ordering::SeqCst);
        let drained = ctl(&cluster, other, &["node", "drain", &victim.to_string()]);
        assert!(drained.contains("leads no range"), "{drained}");
        let status = trestle_testkit::process::admin_status(&cluster.grpc_endpoint(victim), token)
            .await
            .unwrap();
        assert!(status.leaders_drained);
        assert!(
            status.ranges.iter().all(|r| r.leader_node_id != victim),
            "node {victim} leads nothing once drained"
        );
        let before = ops();
        cluster.stop(victim).unwrap();
        cluster.restart(victim).await.unwrap();
        // The mark outlived the restart; the node catches up before the next one goes down (with
        // two of three replicas behind, a range could not commit).
        let caught_up = trestle_testkit::eventually(Duration::from_secs(30), || async {
            let mine =
                trestle_testkit::process::admin_status(&cluster.grpc_endpoint(victim), token)
                    .await?;
            let theirs =
                trestle_testkit::process::admin_status(&cluster.grpc_endpoint(other), token)
                    .await?;
            let all = theirs.ranges.iter().all(|r| {
                mine.ranges.iter().any(|m| {
                    m.range_id == r.range_id
                        && m.replicas[0].applied_index + 64 >= r.replicas[0].commit_index
                })
            });
            (mine.leaders_drained && all).then_some(())
        })
        .await;
        assert!(
            caught_up.is_some(),
            "node {victim} caught up:\n{}",
            cluster.log(victim)
        );
        ctl(
            &cluster,
            other,
            &["node", "drain", &victim.to_string(), "--cancel"],
        );
        let served = trestle_testkit::eventually(Duration::from_secs(30), || async {
            (ops() >= before + 20).then_some(())
        })
        .await;
        assert!(
            served.is_some(),
            "the load went on around node {victim}'s restart"
        );
    }
    // No node is left marked, and the balancer gives the restarted nodes leaders again.
    let spread = trestle_testkit::eventually(Duration::from_secs(30), || async {
        let mut leaders = BTreeSet::new();
        for id in cluster.ids() {
            let s =
                trestle_testkit::process::admin_status(&cluster.grpc_endpoint(id), token).await?;
            if s.leaders_drained {
                return None;
            }
            leaders.extend(
                s.ranges
                    .iter()
                    .map(|r| r.leader_node_id)
                    .filter(|&l| l != 0),
            );
        }
        (leaders.len() >= 2).then_some(())
    })
    .await;
    assert!(spread.is_some(), "leaders spread again after the cancels");
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!("t10: {} operations, p99 {p99:?}", latencies.len());
    assert!(
        p99 < Duration::from_secs(5),
        "p99 {p99:?} over {} operations",
        latencies.len()
    );
    drop(client);
    cluster.stop_all().unwrap();
}
