//! The lossy file system mounted for real, driven by plain file calls.
//!
//! These tests need FUSE (`/dev/fuse`, root or `fusermount3`); without it they fail with the reason.

use std::fs::{File, OpenOptions};
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;

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
