//! The lossy file system mounted for real: plain file calls, RocksDB in a process killed with SIGKILL,
//! and a `trestle dev` cluster whose every node loses power at once.
//!
//! These tests need FUSE (`/dev/fuse`, root or `fusermount3`); without it they fail with the reason.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use trestle_engine::{Cf, Engine as _, RocksConfig, RocksEngine, WriteBatch};

use super::{Dropped, LossyMount};

fn mount() -> LossyMount {
    crate::init_logging();
    match LossyMount::temp() {
        Ok(m) => m,
        Err(e) => panic!("the lossy FUSE file system cannot be mounted here: {e:#}"),
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn power_off_keeps_what_was_fsynced_and_drops_the_rest() {
    let fs = mount();
    let dir = fs.path();

    // Appended to and overwritten inside its synced prefix after the fsync.
    let mut log = File::create(dir.join("log")).unwrap();
    log.write_all(b"durable").unwrap();
    log.sync_data().unwrap();
    log.write_all(b" but not this").unwrap();
    log.seek(SeekFrom::Start(0)).unwrap();
    log.write_all(b"DUR").unwrap();
    drop(log); // close() is not a durability point

    // Truncated into its synced bytes, then written past the cut.
    std::fs::write(dir.join("cut"), b"0123456789").unwrap();
    File::open(dir.join("cut")).unwrap().sync_all().unwrap();
    let cut = OpenOptions::new()
        .write(true)
        .open(dir.join("cut"))
        .unwrap();
    cut.set_len(3).unwrap();
    cut.set_len(12).unwrap();
    drop(cut);

    // Created and written, never synced.
    std::fs::write(dir.join("fresh"), b"gone").unwrap();

    // Synced, then renamed and linked: names are durable at once.
    std::fs::create_dir(dir.join("sub")).unwrap();
    let mut kept = File::create(dir.join("sub/kept.tmp")).unwrap();
    kept.write_all(b"kept").unwrap();
    kept.sync_all().unwrap();
    std::fs::rename(dir.join("sub/kept.tmp"), dir.join("sub/kept")).unwrap();
    std::fs::hard_link(dir.join("sub/kept"), dir.join("kept-link")).unwrap();

    // Overwritten in place: same size, so only reopening (no FOPEN_KEEP_CACHE) drops the cached pages.
    std::fs::write(dir.join("same"), b"aaaa").unwrap();
    File::open(dir.join("same")).unwrap().sync_all().unwrap();
    std::fs::write(dir.join("same"), b"bbbb").unwrap();

    assert_eq!(read(&dir.join("log")), b"DURable but not this");
    assert_eq!(read(&dir.join("same")), b"bbbb");
    let dropped = fs.power_off();

    assert_eq!(read(&dir.join("log")), b"durable");
    assert_eq!(read(&dir.join("cut")), b"0123456789");
    assert_eq!(
        read(&dir.join("fresh")),
        b"",
        "a never-synced file ends up empty"
    );
    assert_eq!(read(&dir.join("same")), b"aaaa");
    assert_eq!(read(&dir.join("sub/kept")), b"kept");
    assert_eq!(read(&dir.join("kept-link")), b"kept");
    assert!(!dir.join("sub/kept.tmp").exists());
    assert_eq!(dropped.files, 4, "{dropped:?}");
    // 13 appended + 3 overwritten in log, 7 cut + 2 zeros added in cut, 4 in fresh, 4 in same
    // (truncated by the rewrite's O_TRUNC, then written again).
    assert_eq!(dropped.bytes, 13 + 3 + 7 + 2 + 4 + 4, "{dropped:?}");
    let stats = fs.stats();
    assert_eq!(stats.fsyncs, 4);
    assert_eq!(stats.power_offs, 1);
    assert_eq!(fs.power_off(), Dropped::default(), "nothing left to drop");
}

#[test]
fn directories_list_every_name_once_across_pages() {
    let fs = mount();
    let dir = fs.path().join("many");
    std::fs::create_dir(&dir).unwrap();
    // Long names: more than one readdir reply's worth.
    let names: Vec<String> = (0..500)
        .map(|i| format!("{i:05}-{}", "n".repeat(60)))
        .collect();
    for name in &names {
        File::create(dir.join(name)).unwrap();
    }
    let mut listed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, names);
    for name in &names {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    std::fs::remove_dir(&dir).unwrap();
    assert!(std::fs::read_dir(fs.path()).unwrap().next().is_none());
}

/// Set for the child process of [`rocksdb_keeps_every_synced_write_across_a_power_off`]: the database
/// path and the round, `PATH:ROUND`.
const ROCKS_CHILD_ENV: &str = "TRESTLE_LOSSYFS_ROCKS_CHILD";
const ROCKS_CHILD_READY: &str = "LOSSYFS_CHILD_WROTE_EVERYTHING";
const SYNCED: usize = 200;
const UNSYNCED: usize = 200;

fn rocks_key(round: u32, synced: bool, i: usize) -> Vec<u8> {
    let kind = if synced { "synced" } else { "unsynced" };
    format!("r{round}-{kind}-{i:05}").into_bytes()
}

/// The child of [`rocksdb_keeps_every_synced_write_across_a_power_off`] (it does nothing when run
/// directly): writes synced then unsynced batches, says so, and waits to be killed.
#[test]
#[ignore = "run as a child process by rocksdb_keeps_every_synced_write_across_a_power_off"]
fn rocksdb_writer_child() {
    let Ok(arg) = std::env::var(ROCKS_CHILD_ENV) else {
        return;
    };
    let (path, round) = arg.rsplit_once(':').unwrap();
    let round: u32 = round.parse().unwrap();
    let engine = RocksEngine::open(Path::new(path), &RocksConfig::for_test()).unwrap();
    let value = vec![b'v'; 512];
    for (synced, count) in [(true, SYNCED), (false, UNSYNCED)] {
        for i in 0..count {
            let mut batch = WriteBatch::new();
            batch.put(Cf::Data, rocks_key(round, synced, i), value.clone());
            engine.write(&batch, synced).unwrap();
        }
    }
    println!("{ROCKS_CHILD_READY}");
    std::io::stdout().flush().unwrap();
    // Killed while blocked here; the parent holds stdin open until then.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// Runs [`rocksdb_writer_child`] on `db` and SIGKILLs it once it has written everything.
fn write_in_a_child_and_kill_it(db: &Path, round: u32) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "lossy_fs::tests::rocksdb_writer_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(ROCKS_CHILD_ENV, format!("{}:{round}", db.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(ROCKS_CHILD_READY) {
                let _ = tx.send(());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(120));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        ready.is_ok(),
        "the RocksDB writer did not finish writing within 120 s (exit: {status})"
    );
}

#[test]
fn rocksdb_keeps_every_synced_write_across_a_power_off() {
    let fs = mount();
    let db = fs.path().join("db");
    for round in 0..2 {
        write_in_a_child_and_kill_it(&db, round);
        let dropped = fs.power_off();
        assert!(
            dropped.bytes > 0,
            "round {round}: the unsynced batches reached the file system, so a power-off drops bytes"
        );

        let engine = RocksEngine::open(&db, &RocksConfig::for_test())
            .unwrap_or_else(|e| panic!("round {round}: reopening after the power-off: {e}"));
        for r in 0..=round {
            for i in 0..SYNCED {
                let key = rocks_key(r, true, i);
                assert!(
                    engine.get(Cf::Data, &key).unwrap().is_some(),
                    "round {round}: synced write {} was lost ({dropped:?})",
                    String::from_utf8_lossy(&key)
                );
            }
        }
        let survivors = (0..UNSYNCED)
            .filter(|&i| {
                let key = rocks_key(round, false, i);
                engine.get(Cf::Data, &key).unwrap().is_some()
            })
            .count();
        assert!(
            survivors < UNSYNCED,
            "round {round}: every unsynced write survived the power-off ({dropped:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dev_cluster_keeps_every_acknowledged_write_across_a_power_off() {
    use trestle_types::{Entity, Value};

    use crate::process::DevProcess;

    let fs = mount();
    let data = fs.path().join("dev");
    let dev = DevProcess::start(&data).unwrap();
    let client = crate::dev_client(dev.grpc.clone()).await.unwrap();
    client.create_table("durable").await.unwrap();
    let table = client.table("durable");
    for i in 0..50 {
        let entity = Entity::new("p", format!("{i:04}")).with("n", Value::Int64(i));
        table.insert(entity).await.unwrap();
    }
    // Every node of the dev cluster loses power at once: only fsynced bytes are left anywhere.
    drop(dev); // SIGKILL, then reaped
    let dropped = fs.power_off();
    assert!(
        dropped.bytes > 0,
        "nothing unsynced was dropped: {dropped:?}"
    );

    let dev = DevProcess::start(&data).unwrap();
    let client = crate::dev_client(dev.grpc.clone()).await.unwrap();
    let table = client.table("durable");
    for i in 0..50 {
        let row = format!("{i:04}");
        let entity = table
            .get("p", &row)
            .await
            .unwrap_or_else(|e| panic!("acknowledged insert {row} was lost ({dropped:?}): {e}"));
        assert_eq!(entity.row_key, row);
    }
}
