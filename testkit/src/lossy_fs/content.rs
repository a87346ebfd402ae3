//! The bytes of one file: what a reader sees now, and how to get back to what the last fsync made
//! durable.
//!
//! Copying a file at every fsync would make RocksDB's write-ahead log (appended to and synced at every
//! acknowledged write) quadratic. Instead a file keeps its current bytes, the length they had at the last
//! fsync (`durable_len`), and an undo log of the durable bytes that later writes and truncations
//! replaced. Invariant: applying the undo log newest-first to the current bytes, then cutting them to
//! `durable_len`, gives exactly the bytes of the last fsync. An append costs nothing extra; only an
//! overwrite or truncation inside the durable prefix copies the bytes it replaces.

/// Durable bytes replaced since the last fsync: `bytes` were at `offset` before the change.
#[derive(Debug)]
struct Undo {
    offset: usize,
    bytes: Vec<u8>,
}

/// A file's bytes, with what the last fsync made durable.
#[derive(Debug, Default)]
pub(super) struct Content {
    data: Vec<u8>,
    durable_len: usize,
    /// Oldest first; applied newest first at power-off.
    undo: Vec<Undo>,
}

impl Content {
    pub(super) fn len(&self) -> usize {
        self.data.len()
    }

    /// Up to `size` bytes from `offset` (fewer at the end of the file, none past it).
    pub(super) fn read(&self, offset: usize, size: usize) -> &[u8] {
        let start = offset.min(self.data.len());
        let end = offset.saturating_add(size).min(self.data.len());
        &self.data[start..end]
    }

    /// Writes `bytes` at `offset`, filling any gap after the current end with zeros.
    pub(super) fn write(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset + bytes.len();
        self.save_durable(offset, end);
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(bytes);
    }

    /// Truncates or extends (with zeros) to `len` bytes.
    pub(super) fn set_len(&mut self, len: usize) {
        self.save_durable(len, self.data.len());
        self.data.resize(len, 0);
    }

    /// fsync: the current bytes become the durable ones.
    pub(super) fn sync(&mut self) {
        self.durable_len = self.data.len();
        self.undo.clear();
    }

    /// Whether a power-off would change this file.
    pub(super) fn is_dirty(&self) -> bool {
        !self.undo.is_empty() || self.data.len() != self.durable_len
    }

    /// Goes back to the bytes of the last fsync; returns how many unsynced bytes were lost (bytes past
    /// the durable length, plus durable bytes that had been overwritten or cut).
    pub(super) fn power_off(&mut self) -> u64 {
        let mut lost = self.data.len().saturating_sub(self.durable_len) as u64;
        for undo in self.undo.drain(..).rev() {
            let end = undo.offset + undo.bytes.len();
            if self.data.len() < end {
                self.data.resize(end, 0);
            }
            self.data[undo.offset..end].copy_from_slice(&undo.bytes);
            lost += undo.bytes.len() as u64;
        }
        // The undo log gave back every durable byte a truncation cut, so this only drops unsynced tails.
        self.data.truncate(self.durable_len);
        lost
    }

    /// Before `[start, end)` changes: saves the part of it that holds durable bytes.
    fn save_durable(&mut self, start: usize, end: usize) {
        // Bytes at or past the current end hold nothing: a truncation below the durable length saved
        // them when it cut them.
        let end = end.min(self.durable_len).min(self.data.len());
        if start < end {
            self.undo.push(Undo {
                offset: start,
                bytes: self.data[start..end].to_vec(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(bytes: &[u8], synced: bool) -> Content {
        let mut c = Content::default();
        c.write(0, bytes);
        if synced {
            c.sync();
        }
        c
    }

    #[test]
    fn appends_after_the_last_fsync_are_lost() {
        let mut c = content(b"durable", true);
        c.write(7, b" and not");
        assert_eq!(c.power_off(), 8);
        assert_eq!(c.read(0, 100), b"durable");
        assert!(!c.is_dirty());
    }

    #[test]
    fn an_overwrite_inside_the_durable_prefix_is_undone() {
        let mut c = content(b"abcdef", true);
        c.write(2, b"XY");
        c.write(3, b"ZZZZZ");
        assert_eq!(c.read(0, 100), b"abXZZZZZ");
        c.power_off();
        assert_eq!(c.read(0, 100), b"abcdef");
    }

    #[test]
    fn a_truncation_and_rewrite_are_undone() {
        let mut c = content(b"abcdef", true);
        c.set_len(2);
        c.write(4, b"QQ");
        c.set_len(1);
        c.set_len(10);
        assert!(c.is_dirty());
        c.power_off();
        assert_eq!(c.read(0, 100), b"abcdef");
    }

    #[test]
    fn a_never_synced_file_ends_up_empty() {
        let mut c = content(b"nothing synced", false);
        assert_eq!(c.power_off(), 14);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn fsync_makes_the_current_bytes_durable() {
        let mut c = content(b"one", true);
        c.write(0, b"two!");
        c.sync();
        c.write(4, b" three");
        c.power_off();
        assert_eq!(c.read(0, 100), b"two!");
        assert!(!content(b"x", true).is_dirty());
    }

    #[test]
    fn reads_stop_at_the_end_of_the_file() {
        let c = content(b"abc", false);
        assert_eq!(c.read(1, 10), b"bc");
        assert_eq!(c.read(5, 10), b"");
        let mut gap = Content::default();
        gap.write(3, b"x");
        assert_eq!(gap.read(0, 10), b"\0\0\0x");
    }
}
