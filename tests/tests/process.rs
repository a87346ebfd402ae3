//! Process clusters of the real `trestle` binary: kill -9 of a range leader under a concurrent write load,
//! restart, and every acknowledged write present on every replica; a full `trestle dev` restart keeps every
//! acknowledged write.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trestle_testkit::process::DevProcess;
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
    let client = trestle_client::TableClient::connect(dev.grpc.clone())
        .await
        .unwrap();
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
    let client = trestle_client::TableClient::connect(dev.grpc.clone())
        .await
        .unwrap();
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
    let out = std::process::Command::new(&bin)
        .args(["ctl", "--addr", &endpoint, "status", "--json"])
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
    }
    // The text form names the same things.
    let text = std::process::Command::new(&bin)
        .args(["ctl", "--addr", &endpoint, "status"])
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
        let s = trestle_testkit::process::admin_status(&dev.grpc[0]).await?;
        let l = leaders(&s);
        (l.len() == 5 && l.iter().all(|&(_, leader)| leader == 1)).then_some(l)
    })
    .await;
    let last = trestle_testkit::process::admin_status(&dev.grpc[0])
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
    let before = trestle_testkit::process::admin_status(&dev.grpc[0])
        .await
        .map(|s| term_of_range_2(&s))
        .unwrap();
    let mut admin = trestle_proto::admin::admin_client::AdminClient::connect(dev.grpc[1].clone())
        .await
        .unwrap();
    admin
        .transfer_leader(trestle_proto::admin::TransferLeaderRequest {
            range_id: 2,
            to_node_id: 2,
        })
        .await
        .unwrap();
    let back = trestle_testkit::eventually(Duration::from_secs(30), || async {
        let s = trestle_testkit::process::admin_status(&dev.grpc[0]).await?;
        let led_by_1 = leaders(&s).contains(&(2, 1));
        (led_by_1 && term_of_range_2(&s) >= before + 2).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "range 2 went to node 2 and came back to node 1 (term was {before})"
    );
}
