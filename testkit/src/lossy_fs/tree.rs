//! The file system's state with no FUSE plumbing: inodes, directories, open handles, and power-off.
//!
//! Every operation is a method that returns the attributes or bytes to reply with, or the errno to fail
//! with. Inode numbers are never reused, so a stale inode the kernel still remembers gets `ENOENT`
//! rather than another file, and every reply carries generation 0.
//!
//! Invariants:
//! - every inode other than the root is reachable by name while its link count is above zero; a file
//!   whose last name is removed lives on until its last open handle is released (POSIX unlink), then
//!   its bytes are freed.
//! - directory nlink is 2 plus its subdirectories, computed when asked.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use fuser::{Errno, FileType};

use super::content::Content;

/// The root directory's inode number (FUSE's).
pub(super) const ROOT: u64 = 1;

/// How many bytes and files a power-off threw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Files whose bytes changed since their last fsync.
    pub files: u64,
    /// Unsynced bytes lost: bytes past each file's durable length, plus durable bytes that had been
    /// overwritten or truncated away and were put back.
    pub bytes: u64,
}

/// Counters since the mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// fsync and fdatasync calls on files.
    pub fsyncs: u64,
    /// Bytes accepted by write calls.
    pub bytes_written: u64,
    /// Power-offs, and what they dropped in total.
    pub power_offs: u64,
    pub dropped: Dropped,
}

/// What `stat` reports of an inode.
#[derive(Clone, Copy, Debug)]
pub(super) struct Attr {
    pub ino: u64,
    pub kind: FileType,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub crtime: SystemTime,
}

/// The owner and mode bits of a new inode.
#[derive(Clone, Copy, Debug)]
pub(super) struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub perm: u16,
}

/// The changes of a `setattr` (each `None` leaves the field alone).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SetAttr {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

#[derive(Debug)]
enum Body {
    File(Content),
    Dir {
        parent: u64,
        entries: BTreeMap<OsString, u64>,
    },
}

#[derive(Debug)]
struct Inode {
    meta: Attr,
    body: Body,
    /// Open file handles; an unlinked file is freed when the last one is released.
    open: u32,
}

/// One directory entry as `readdir` returns it.
pub(super) type DirEntry = (u64, FileType, OsString);

#[derive(Debug)]
enum Handle {
    File(u64),
    /// The listing taken at `opendir`: later `readdir` calls page through it, so a directory changed
    /// while it is listed neither skips nor repeats a name.
    Dir(Vec<DirEntry>),
}

/// The whole file system.
#[derive(Debug)]
pub(super) struct Tree {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    stats: Stats,
}

pub(super) type Result<T> = std::result::Result<T, Errno>;

/// Offsets and sizes from the kernel as indexes into memory.
fn index(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| Errno::EFBIG)
}

impl Tree {
    /// An empty file system whose root belongs to `owner`.
    pub(super) fn new(owner: Owner) -> Tree {
        let mut tree = Tree {
            inodes: HashMap::new(),
            next_ino: ROOT,
            handles: HashMap::new(),
            next_fh: 1,
            stats: Stats::default(),
        };
        let root = tree.new_inode(
            FileType::Directory,
            owner,
            Body::Dir {
                parent: ROOT,
                entries: BTreeMap::new(),
            },
        );
        debug_assert_eq!(root, ROOT);
        tree
    }

    pub(super) fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes held by all files, for `statfs`.
    pub(super) fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|i| match &i.body {
                Body::File(c) => c.len() as u64,
                Body::Dir { .. } => 0,
            })
            .sum()
    }

    pub(super) fn inode_count(&self) -> u64 {
        self.inodes.len() as u64
    }

    pub(super) fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let ino = self.child(parent, name)?.ok_or(Errno::ENOENT)?;
        self.getattr(ino)
    }

    pub(super) fn getattr(&self, ino: u64) -> Result<Attr> {
        let inode = self.inodes.get(&ino).ok_or(Errno::ENOENT)?;
        let mut attr = inode.meta;
        match &inode.body {
            Body::File(c) => attr.size = c.len() as u64,
            Body::Dir { entries, .. } => {
                let subdirs = entries
                    .values()
                    .filter(|e| self.kind(**e) == Some(FileType::Directory))
                    .count();
                attr.nlink = 2 + u32::try_from(subdirs).unwrap_or(u32::MAX - 2);
                attr.size = entries.len() as u64;
            }
        }
        Ok(attr)
    }

    pub(super) fn setattr(&mut self, ino: u64, set: SetAttr) -> Result<Attr> {
        let inode = self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let now = SystemTime::now();
        if let Some(size) = set.size {
            let Body::File(content) = &mut inode.body else {
                return Err(Errno::EISDIR);
            };
            content.set_len(index(size)?);
            inode.meta.mtime = now;
        }
        let meta = &mut inode.meta;
        if let Some(perm) = set.perm {
            meta.perm = perm;
        }
        if let Some(uid) = set.uid {
            meta.uid = uid;
        }
        if let Some(gid) = set.gid {
            meta.gid = gid;
        }
        if let Some(t) = set.atime {
            meta.atime = t;
        }
        if let Some(t) = set.mtime {
            meta.mtime = t;
        }
        meta.ctime = now;
        self.getattr(ino)
    }

    /// Creates an empty regular file (`mknod` and `create`).
    pub(super) fn create_file(&mut self, parent: u64, name: &OsStr, owner: Owner) -> Result<Attr> {
        self.check_new_name(parent, name)?;
        let ino = self.new_inode(FileType::RegularFile, owner, Body::File(Content::default()));
        self.link_name(parent, name, ino)?;
        self.getattr(ino)
    }

    pub(super) fn mkdir(&mut self, parent: u64, name: &OsStr, owner: Owner) -> Result<Attr> {
        self.check_new_name(parent, name)?;
        let body = Body::Dir {
            parent,
            entries: BTreeMap::new(),
        };
        let ino = self.new_inode(FileType::Directory, owner, body);
        self.link_name(parent, name, ino)?;
        self.getattr(ino)
    }

    /// A new name for an existing file (hard link).
    pub(super) fn link(&mut self, ino: u64, parent: u64, name: &OsStr) -> Result<Attr> {
        match self.inodes.get(&ino).map(|i| &i.body) {
            None => return Err(Errno::ENOENT),
            Some(Body::Dir { .. }) => return Err(Errno::EPERM),
            Some(Body::File(_)) => {}
        }
        self.check_new_name(parent, name)?;
        self.link_name(parent, name, ino)?;
        let inode = self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        inode.meta.nlink += 1;
        inode.meta.ctime = SystemTime::now();
        self.getattr(ino)
    }

    pub(super) fn unlink(&mut self, parent: u64, name: &OsStr) -> Result<()> {
        let ino = self.child(parent, name)?.ok_or(Errno::ENOENT)?;
        if self.kind(ino) == Some(FileType::Directory) {
            return Err(Errno::EISDIR);
        }
        self.unlink_name(parent, name)?;
        self.drop_link(ino);
        Ok(())
    }

    pub(super) fn rmdir(&mut self, parent: u64, name: &OsStr) -> Result<()> {
        let ino = self.child(parent, name)?.ok_or(Errno::ENOENT)?;
        self.check_empty_dir(ino)?;
        self.unlink_name(parent, name)?;
        self.inodes.remove(&ino);
        Ok(())
    }

    /// `rename(2)` and `renameat2` with `RENAME_NOREPLACE`; `RENAME_EXCHANGE` and whiteouts are refused.
    pub(super) fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return Err(Errno::EINVAL);
        }
        let ino = self.child(parent, name)?.ok_or(Errno::ENOENT)?;
        self.check_name(new_name)?;
        let replaced = self.child(new_parent, new_name)?;
        if replaced == Some(ino) {
            return Ok(());
        }
        let is_dir = self.kind(ino) == Some(FileType::Directory);
        if let Some(old) = replaced {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(Errno::EEXIST);
            }
            match (is_dir, self.kind(old) == Some(FileType::Directory)) {
                (true, true) => self.check_empty_dir(old)?,
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (false, false) => {}
            }
        }
        if is_dir && self.is_within(new_parent, ino) {
            // A directory cannot move into itself or below.
            return Err(Errno::EINVAL);
        }
        self.unlink_name(parent, name)?;
        if let Some(old) = replaced {
            self.unlink_name(new_parent, new_name)?;
            if is_dir {
                self.inodes.remove(&old);
            } else {
                self.drop_link(old);
            }
        }
        self.link_name(new_parent, new_name, ino)?;
        if let Some(Inode {
            body: Body::Dir { parent, .. },
            ..
        }) = self.inodes.get_mut(&ino)
        {
            *parent = new_parent;
        }
        Ok(())
    }

    /// A handle for reading and writing `ino`.
    pub(super) fn open(&mut self, ino: u64) -> Result<u64> {
        let inode = self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if !matches!(inode.body, Body::File(_)) {
            return Err(Errno::EISDIR);
        }
        inode.open += 1;
        Ok(self.new_handle(Handle::File(ino)))
    }

    pub(super) fn release(&mut self, fh: u64) {
        if let Some(Handle::File(ino)) = self.handles.remove(&fh)
            && let Some(inode) = self.inodes.get_mut(&ino)
        {
            inode.open = inode.open.saturating_sub(1);
            self.free_if_unreachable(ino);
        }
    }

    pub(super) fn read(&self, ino: u64, offset: u64, size: u32) -> Result<&[u8]> {
        let content = self.content(ino)?;
        Ok(content.read(index(offset)?, size as usize))
    }

    pub(super) fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<u32> {
        let offset = index(offset)?;
        offset.checked_add(bytes.len()).ok_or(Errno::EFBIG)?;
        let written = u32::try_from(bytes.len()).map_err(|_| Errno::EINVAL)?;
        self.content_mut(ino)?.write(offset, bytes);
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.meta.mtime = SystemTime::now();
        }
        self.stats.bytes_written += bytes.len() as u64;
        Ok(written)
    }

    /// `fsync` and `fdatasync`: the file's current bytes become durable.
    pub(super) fn fsync(&mut self, ino: u64) -> Result<()> {
        self.content_mut(ino)?.sync();
        self.stats.fsyncs += 1;
        Ok(())
    }

    /// `fallocate`: mode 0 extends the file with zeros; `FALLOC_FL_KEEP_SIZE` only reserves space, which
    /// memory needs no reserving of. Hole punching and the rest are not supported.
    pub(super) fn fallocate(
        &mut self,
        ino: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<()> {
        let end = index(offset.checked_add(length).ok_or(Errno::EFBIG)?)?;
        let content = self.content_mut(ino)?;
        match mode {
            0 if end > content.len() => content.set_len(end),
            0 | libc::FALLOC_FL_KEEP_SIZE => {}
            _ => return Err(Errno::EOPNOTSUPP),
        }
        Ok(())
    }

    /// A handle listing the directory `ino` as it is now, `.` and `..` first.
    pub(super) fn opendir(&mut self, ino: u64) -> Result<u64> {
        let Some(Inode {
            body: Body::Dir { parent, entries },
            ..
        }) = self.inodes.get(&ino)
        else {
            return Err(Errno::ENOTDIR);
        };
        let mut listing = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (*parent, FileType::Directory, OsString::from("..")),
        ];
        listing.extend(
            entries
                .iter()
                .filter_map(|(name, child)| Some((*child, self.kind(*child)?, name.clone()))),
        );
        Ok(self.new_handle(Handle::Dir(listing)))
    }

    /// The entries of an open directory from position `offset` on.
    pub(super) fn readdir(&self, fh: u64, offset: u64) -> Result<&[DirEntry]> {
        let Some(Handle::Dir(listing)) = self.handles.get(&fh) else {
            return Err(Errno::EBADF);
        };
        Ok(listing.get(index(offset)?..).unwrap_or_default())
    }

    pub(super) fn releasedir(&mut self, fh: u64) {
        self.handles.remove(&fh);
    }

    pub(super) fn exists(&self, ino: u64) -> bool {
        self.inodes.contains_key(&ino)
    }

    /// The power cut: every file goes back to the bytes of its last fsync. Names, directories and
    /// handles stay (namespace changes are durable at once).
    pub(super) fn power_off(&mut self) -> Dropped {
        let mut dropped = Dropped::default();
        for inode in self.inodes.values_mut() {
            if let Body::File(content) = &mut inode.body
                && content.is_dirty()
            {
                dropped.files += 1;
                dropped.bytes += content.power_off();
            }
        }
        self.stats.power_offs += 1;
        self.stats.dropped.files += dropped.files;
        self.stats.dropped.bytes += dropped.bytes;
        dropped
    }

    fn new_inode(&mut self, kind: FileType, owner: Owner, body: Body) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        let now = SystemTime::now();
        let meta = Attr {
            ino,
            kind,
            size: 0,
            perm: owner.perm,
            nlink: 1,
            uid: owner.uid,
            gid: owner.gid,
            rdev: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
        };
        self.inodes.insert(
            ino,
            Inode {
                meta,
                body,
                open: 0,
            },
        );
        ino
    }

    fn new_handle(&mut self, handle: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, handle);
        fh
    }

    fn kind(&self, ino: u64) -> Option<FileType> {
        self.inodes.get(&ino).map(|i| i.meta.kind)
    }

    fn content(&self, ino: u64) -> Result<&Content> {
        match self.inodes.get(&ino).map(|i| &i.body) {
            Some(Body::File(c)) => Ok(c),
            Some(Body::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn content_mut(&mut self, ino: u64) -> Result<&mut Content> {
        match self.inodes.get_mut(&ino).map(|i| &mut i.body) {
            Some(Body::File(c)) => Ok(c),
            Some(Body::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>> {
        match self.inodes.get(&dir).map(|i| &i.body) {
            Some(Body::Dir { entries, .. }) => Ok(entries),
            Some(Body::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>> {
        let inode = self.inodes.get_mut(&dir).ok_or(Errno::ENOENT)?;
        inode.meta.mtime = SystemTime::now();
        inode.meta.ctime = inode.meta.mtime;
        match &mut inode.body {
            Body::Dir { entries, .. } => Ok(entries),
            Body::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<Option<u64>> {
        Ok(self.entries(parent)?.get(name).copied())
    }

    fn check_name(&self, name: &OsStr) -> Result<()> {
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(())
    }

    fn check_new_name(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.check_name(name)?;
        match self.child(parent, name)? {
            Some(_) => Err(Errno::EEXIST),
            None => Ok(()),
        }
    }

    fn check_empty_dir(&self, ino: u64) -> Result<()> {
        if !self.entries(ino)?.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        Ok(())
    }

    fn link_name(&mut self, parent: u64, name: &OsStr, ino: u64) -> Result<()> {
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        Ok(())
    }

    fn unlink_name(&mut self, parent: u64, name: &OsStr) -> Result<()> {
        self.entries_mut(parent)?.remove(name);
        Ok(())
    }

    /// One name of file `ino` is gone.
    fn drop_link(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.meta.nlink = inode.meta.nlink.saturating_sub(1);
            inode.meta.ctime = SystemTime::now();
            self.free_if_unreachable(ino);
        }
    }

    fn free_if_unreachable(&mut self, ino: u64) {
        if self
            .inodes
            .get(&ino)
            .is_some_and(|i| i.meta.nlink == 0 && i.open == 0)
        {
            self.inodes.remove(&ino);
        }
    }

    /// Whether directory `dir` is `ancestor` or below it.
    fn is_within(&self, mut dir: u64, ancestor: u64) -> bool {
        loop {
            if dir == ancestor {
                return true;
            }
            match self.inodes.get(&dir).map(|i| &i.body) {
                Some(Body::Dir { parent, .. }) if *parent != dir => dir = *parent,
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: Owner = Owner {
        uid: 0,
        gid: 0,
        perm: 0o755,
    };

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn an_unlinked_open_file_lives_until_released() {
        let mut t = Tree::new(OWNER);
        let f = t.create_file(ROOT, name("f"), OWNER).unwrap().ino;
        let fh = t.open(f).unwrap();
        t.write(f, 0, b"hello").unwrap();
        t.unlink(ROOT, name("f")).unwrap();
        assert_eq!(t.lookup(ROOT, name("f")).unwrap_err(), Errno::ENOENT);
        assert_eq!(t.read(f, 0, 10).unwrap(), b"hello");
        t.release(fh);
        assert!(!t.exists(f));
    }

    #[test]
    fn rename_replaces_refuses_and_moves_directories() {
        let mut t = Tree::new(OWNER);
        let a = t.create_file(ROOT, name("a"), OWNER).unwrap().ino;
        let b = t.create_file(ROOT, name("b"), OWNER).unwrap().ino;
        let noreplace = libc::RENAME_NOREPLACE;
        assert_eq!(
            t.rename(ROOT, name("a"), ROOT, name("b"), noreplace),
            Err(Errno::EEXIST)
        );
        t.rename(ROOT, name("a"), ROOT, name("b"), 0).unwrap();
        assert_eq!(t.lookup(ROOT, name("b")).unwrap().ino, a);
        assert!(!t.exists(b), "the replaced file is freed");

        let d = t.mkdir(ROOT, name("d"), OWNER).unwrap().ino;
        let e = t.mkdir(d, name("e"), OWNER).unwrap().ino;
        assert_eq!(t.getattr(d).unwrap().nlink, 3);
        assert_eq!(
            t.rename(ROOT, name("d"), e, name("x"), 0),
            Err(Errno::EINVAL)
        );
        assert_eq!(t.rmdir(ROOT, name("d")), Err(Errno::ENOTEMPTY));
        t.rename(d, name("e"), ROOT, name("e2"), 0).unwrap();
        let listing: Vec<_> = {
            let fh = t.opendir(e).unwrap();
            t.readdir(fh, 0).unwrap().iter().map(|e| e.0).collect()
        };
        assert_eq!(listing, vec![e, ROOT]);
        t.rmdir(ROOT, name("d")).unwrap();
    }

    #[test]
    fn a_listing_is_taken_at_opendir() {
        let mut t = Tree::new(OWNER);
        t.create_file(ROOT, name("a"), OWNER).unwrap();
        let fh = t.opendir(ROOT).unwrap();
        t.create_file(ROOT, name("0"), OWNER).unwrap();
        let names: Vec<_> = t
            .readdir(fh, 2)
            .unwrap()
            .iter()
            .map(|e| e.2.clone())
            .collect();
        assert_eq!(names, vec![OsString::from("a")]);
    }

    #[test]
    fn power_off_keeps_names_and_drops_unsynced_bytes() {
        let mut t = Tree::new(OWNER);
        let synced = t.create_file(ROOT, name("synced"), OWNER).unwrap().ino;
        let fresh = t.create_file(ROOT, name("fresh"), OWNER).unwrap().ino;
        t.write(synced, 0, b"kept").unwrap();
        t.fsync(synced).unwrap();
        t.write(synced, 4, b"+lost").unwrap();
        t.write(fresh, 0, b"lost").unwrap();
        assert_eq!(t.power_off(), Dropped { files: 2, bytes: 9 });
        assert_eq!(t.read(synced, 0, 100).unwrap(), b"kept");
        assert_eq!(t.lookup(ROOT, name("fresh")).unwrap().size, 0);
        assert_eq!(t.stats().fsyncs, 1);
        assert_eq!(t.power_off(), Dropped::default());
    }
}
