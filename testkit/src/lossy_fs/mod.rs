//! A FUSE file system in memory that loses every write not yet fsynced when the test cuts the power, in
//! the spirit of Jepsen's lazyfs. A node keeps its RocksDB directory on it; the fault tests kill the node
//! with SIGKILL, call [`LossyMount::power_off`], and restart it. A missing fsync anywhere on the write
//! path then shows up as a lost acknowledged write, which a plain SIGKILL (the kernel page cache keeps
//! every completed write) can never show.
//!
//! Semantics:
//! - File contents (writes, and size changes by write, truncate or fallocate) become durable only when
//!   that file is fsynced or fdatasynced. `flush` (called at every `close`) makes nothing durable, and
//!   neither does `sync_file_range` (it never reaches a FUSE file system).
//! - Namespace operations (create, mknod, mkdir, unlink, rmdir, rename, link) and attribute changes
//!   other than size (mode, owner, times) are durable at once. That is a simplification: a real file
//!   system may lose a new name until its directory is fsynced; `fsyncdir` is accepted and does nothing.
//! - [`LossyMount::power_off`] puts every file back to its bytes at its last fsync (a file created and
//!   never fsynced becomes empty) and reports how much it threw away. Names, directories and open
//!   handles are untouched. The writer must be dead first: a SIGKILLed process that `wait` has reaped
//!   has had every request it sent answered (the kernel waits for answers to requests the file system
//!   has read, even for a killed process), so no write of it lands after the power-off.
//! - fsync costs no copy: a file keeps its bytes, its durable length, and an undo log of durable bytes
//!   overwritten since (see `content.rs`), so RocksDB's append-and-sync WAL stays linear.
//! - Attributes are never cached by the kernel (TTL 0) and files are opened without `FOPEN_KEEP_CACHE`,
//!   so a process opening a file after a power-off sees its durable bytes and size, not stale pages.
//! - POSIX locks (RocksDB's `LOCK` file) are left to the kernel: the file system does not claim
//!   `FUSE_POSIX_LOCKS`, so the kernel keeps `fcntl` locks locally, and a killed process's lock goes with
//!   it. Hole punching, xattrs, symlinks and special files are not supported (RocksDB uses none of them;
//!   its `fallocate` with `FALLOC_FL_KEEP_SIZE` succeeds and reserves nothing).
//!
//! The FUSE server runs on a thread of the process that mounts (the test harness); the nodes are other
//! processes, including ones started later under `ip netns exec` (a new mount namespace copies the
//! mounts that exist when it is made). Mounting needs `/dev/fuse` and root (or the `fusermount3`
//! binary of the `fuse3` package, which fuser falls back to).

mod content;
mod tree;

#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use fuser::{
    BackgroundSession, Errno, FileAttr, FileHandle, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use tree::{Attr, Owner, SetAttr, Tree};
pub use tree::{Dropped, Stats};

/// The kernel caches nothing: a power-off changes sizes behind its back.
const TTL: Duration = Duration::ZERO;

/// Block size reported by `stat` and `statfs`.
const BLOCK: u32 = 4096;

/// The file system served to the kernel: a handle on the shared [`Tree`].
struct LossyFs {
    tree: Arc<Mutex<Tree>>,
}

/// A mounted lossy file system. Dropping it unmounts (lazily: a process still using it keeps it alive
/// until it lets go) and removes the temporary mount point it made.
pub struct LossyMount {
    session: Option<BackgroundSession>,
    tree: Arc<Mutex<Tree>>,
    path: PathBuf,
    /// The mount point made by [`LossyMount::temp`]; removed after the unmount.
    dir: Option<tempfile::TempDir>,
}

impl LossyMount {
    /// Mounts an empty lossy file system on a new temporary directory.
    pub fn temp() -> anyhow::Result<LossyMount> {
        let dir = tempfile::Builder::new().prefix("lossyfs").tempdir()?;
        let mut mount = LossyMount::mount(dir.path())?;
        mount.dir = Some(dir);
        Ok(mount)
    }

    /// Mounts an empty lossy file system on `mountpoint` (an existing directory), served by a thread of
    /// this process until the returned value is dropped.
    pub fn mount(mountpoint: &Path) -> anyhow::Result<LossyMount> {
        if !Path::new("/dev/fuse").exists() {
            bail!(
                "FUSE is unavailable: /dev/fuse is missing (load the fuse module; install the fuse3 package)"
            );
        }
        let owner = Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            perm: 0o755,
        };
        let tree = Arc::new(Mutex::new(Tree::new(owner)));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("lossyfs".into()),
            fuser::MountOption::Subtype("lossyfs".into()),
        ];
        let fs = LossyFs { tree: tree.clone() };
        let session = fuser::spawn_mount(fs, mountpoint, &config).with_context(|| {
            format!(
                "mounting the lossy FUSE file system on {} (needs root, or the fusermount3 binary of the fuse3 package)",
                mountpoint.display()
            )
        })?;
        Ok(LossyMount {
            session: Some(session),
            tree,
            path: mountpoint.to_path_buf(),
            dir: None,
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Cuts the power: every file goes back to its bytes at its last fsync. Kill (and reap) every
    /// process writing here first.
    pub fn power_off(&self) -> Dropped {
        let dropped = self.tree().power_off();
        tracing::info!(path = %self.path.display(), ?dropped, "lossy fs power-off");
        dropped
    }

    /// Counters since the mount.
    pub fn stats(&self) -> Stats {
        self.tree().stats()
    }

    fn tree(&self) -> MutexGuard<'_, Tree> {
        lock(&self.tree)
    }
}

impl Drop for LossyMount {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // Unmounts, unless a process (a node not yet killed) still has a file open here: then the
        // mount is detached instead, and the server thread serves that process until it lets go.
        drop(session);
        match nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => {
                tracing::warn!(path = %self.path.display(), "the lossy fs was still in use; detached it")
            }
            // Not a mount point any more: the plain unmount worked.
            Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "unmounting the lossy fs")
            }
        }
        // `dir` (the mount point) is removed after this, now that it is an empty directory again.
    }
}

/// A poisoned lock means a file-system call panicked; the tree is still consistent enough for tests.
fn lock(tree: &Mutex<Tree>) -> MutexGuard<'_, Tree> {
    tree.lock().unwrap_or_else(|e| e.into_inner())
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.crtime,
        kind: a.kind,
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLOCK,
        flags: 0,
    }
}

fn owner(req: &Request, mode: u32, umask: u32) -> Owner {
    Owner {
        uid: req.uid(),
        gid: req.gid(),
        perm: (mode & !umask & 0o7777) as u16,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn reply_entry(reply: ReplyEntry, result: tree::Result<Attr>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, result: tree::Result<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// Files and directories open without `FOPEN_KEEP_CACHE`: the kernel must never serve bytes a power
/// cut took back.
fn reply_opened(reply: ReplyOpen, result: tree::Result<u64>) {
    match result {
        Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
        Err(e) => reply.error(e),
    }
}

impl LossyFs {
    fn tree(&self) -> MutexGuard<'_, Tree> {
        lock(&self.tree)
    }
}

impl fuser::Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.tree().lookup(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree().getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            perm: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        match self.tree().setattr(ino.0, set) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let owner = owner(req, mode, umask);
        reply_entry(reply, self.tree().create_file(parent.0, name, owner));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let owner = owner(req, mode, umask);
        reply_entry(reply, self.tree().mkdir(parent.0, name, owner));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.tree().unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.tree().rmdir(parent.0, name));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self
            .tree()
            .rename(parent.0, name, new_parent.0, new_name, flags.bits());
        reply_empty(reply, result);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        new_parent: INodeNo,
        new_name: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.tree().link(ino.0, new_parent.0, new_name));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply_opened(reply, self.tree().open(ino.0));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut tree = self.tree();
        let attr = match tree.lookup(parent.0, name) {
            // The kernel asks to create only names it believes absent; honour O_EXCL if it raced.
            Ok(_) if flags & libc::O_EXCL != 0 => Err(Errno::EEXIST),
            Ok(existing) => Ok(existing),
            Err(_) => tree.create_file(parent.0, name, owner(req, mode, umask)),
        };
        match attr.and_then(|attr| Ok((attr, tree.open(attr.ino)?))) {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &file_attr(&attr),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.tree().read(ino.0, offset, size) {
            Ok(bytes) => reply.data(bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.tree().write(ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    /// `close`: not a durability point.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.tree().release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.tree().fsync(ino.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply_opened(reply, self.tree().opendir(ino.0));
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = self.tree();
        let entries = match tree.readdir(fh.0, offset) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate() {
            // The offset handed back is where the next call resumes: just past this entry.
            let next = offset + i as u64 + 1;
            if reply.add(INodeNo(*ino), next, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.tree().releasedir(fh.0);
        reply.ok();
    }

    /// Names are durable at once, so a directory has nothing to sync.
    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let exists = self.tree().exists(ino.0);
        reply_empty(reply, exists.then_some(()).ok_or(Errno::ENOENT));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Memory is the limit; report a 1 TiB device so free-space checks never refuse a write.
        let tree = self.tree();
        let total = (1u64 << 40) / u64::from(BLOCK);
        let used = tree.used_bytes().div_ceil(u64::from(BLOCK));
        let free = total.saturating_sub(used);
        let files = 1u64 << 32;
        let free_files = files.saturating_sub(tree.inode_count());
        reply.statfs(total, free, free, files, free_files, BLOCK, 255, BLOCK);
    }

    /// No permission checks: the nodes run as the user who mounted.
    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let exists = self.tree().exists(ino.0);
        reply_empty(reply, exists.then_some(()).ok_or(Errno::ENOENT));
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.tree().fallocate(ino.0, offset, length, mode));
    }
}
