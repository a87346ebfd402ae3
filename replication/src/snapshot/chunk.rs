//! The records inside a chunk: `klen (u32 LE) ‖ key ‖ vlen (u32 LE) ‖ value`, repeated. A chunk is
//! closed as soon as it holds `limit` bytes or more, so it never exceeds `limit` plus one record, and
//! a record is never split across chunks.

use bytes::Bytes;
use trestle_engine::KvPair;

use super::{SnapshotChunk, SnapshotError};
use crate::Span;

/// Accumulates records into the next chunk.
pub(crate) struct ChunkBuilder {
    limit: usize,
    buf: Vec<u8>,
    next_seq: u64,
}

impl ChunkBuilder {
    pub(crate) fn new(limit: usize) -> ChunkBuilder {
        ChunkBuilder {
            limit: limit.max(1),
            buf: Vec::new(),
            next_seq: 0,
        }
    }

    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) {
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
    }

    /// Whether the chunk should go out now.
    pub(crate) fn is_full(&self) -> bool {
        self.buf.len() >= self.limit
    }

    /// The records pushed since the last call as the next chunk.
    pub(crate) fn take(&mut self, last: bool) -> SnapshotChunk {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.limit));
        let chunk = SnapshotChunk::new(self.next_seq, Bytes::from(data), last);
        self.next_seq += 1;
        chunk
    }
}

/// Checks a chunk whole — checksum, sequence number, framing, every key inside `span` — and returns its
/// records. Nothing of a chunk that fails is ever written.
pub(crate) fn decode(
    chunk: &SnapshotChunk,
    expected_seq: u64,
    span: &Span,
) -> Result<Vec<KvPair>, SnapshotError> {
    if chunk.seq != expected_seq {
        return Err(SnapshotError::Corrupt(format!(
            "chunk {} where {expected_seq} was due",
            chunk.seq
        )));
    }
    if chunk.data.len() > super::MAX_CHUNK_BYTES {
        return Err(SnapshotError::Corrupt(format!(
            "chunk of {} bytes",
            chunk.data.len()
        )));
    }
    if !chunk.is_intact() {
        return Err(SnapshotError::Corrupt(format!(
            "chunk {} fails its crc32",
            chunk.seq
        )));
    }
    let truncated = || SnapshotError::Corrupt(format!("chunk {} is truncated", chunk.seq));
    let mut rest: &[u8] = &chunk.data;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let key = take_field(&mut rest).ok_or_else(truncated)?;
        let value = take_field(&mut rest).ok_or_else(truncated)?;
        if !span.contains(span.cf, &key) {
            return Err(SnapshotError::Corrupt(format!(
                "chunk {} holds a key outside the snapshot's span",
                chunk.seq
            )));
        }
        records.push((key, value));
    }
    Ok(records)
}

/// One length-prefixed field from the front of `rest`.
fn take_field(rest: &mut &[u8]) -> Option<Vec<u8>> {
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let bytes = rest.get(4..4usize.checked_add(len)?)?.to_vec();
    *rest = &rest[4 + len..];
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trestle_engine::Cf;

    /// Bytes one record takes in a chunk.
    fn framed_len(key: &[u8], value: &[u8]) -> usize {
        8 + key.len() + value.len()
    }

    fn span() -> Span {
        Span {
            cf: Cf::Data,
            start: b"a".to_vec(),
            end: Some(b"n".to_vec()),
        }
    }

    fn records(n: usize) -> Vec<KvPair> {
        (0..n)
            .map(|i| (format!("k{i:04}").into_bytes(), vec![b'v'; i % 50]))
            .collect()
    }

    /// Chunks `pairs` as the sender does.
    fn chunked(pairs: &[KvPair], limit: usize) -> Vec<SnapshotChunk> {
        let mut builder = ChunkBuilder::new(limit);
        let mut out = Vec::new();
        for (k, v) in pairs {
            builder.push(k, v);
            if builder.is_full() {
                out.push(builder.take(false));
            }
        }
        out.push(builder.take(true));
        out
    }

    #[test]
    fn records_survive_chunking_and_no_chunk_exceeds_the_limit_plus_one_record() {
        let pairs = records(500);
        let largest = pairs.iter().map(|(k, v)| framed_len(k, v)).max().unwrap();
        let chunks = chunked(&pairs, 256);
        assert!(chunks.len() > 50, "{} chunks", chunks.len());
        let mut back = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            assert!(chunk.data.len() < 256 + largest, "{chunk:?}");
            assert_eq!(chunk.last, i + 1 == chunks.len());
            back.extend(decode(chunk, i as u64, &span()).unwrap());
        }
        assert_eq!(back, pairs);
    }

    #[test]
    fn an_empty_span_is_one_empty_last_chunk() {
        let chunks = chunked(&[], 1024);
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].last && chunks[0].data.is_empty());
        assert_eq!(decode(&chunks[0], 0, &span()).unwrap(), Vec::new());
    }

    #[test]
    fn a_corrupt_chunk_is_rejected_whole() {
        let chunk = chunked(&records(20), 1 << 20).remove(0);
        // One flipped bit anywhere: the crc32 no longer matches.
        for at in [0, chunk.data.len() / 2, chunk.data.len() - 1] {
            let mut data = chunk.data.to_vec();
            data[at] ^= 0x01;
            let bad = SnapshotChunk {
                data: data.into(),
                ..chunk.clone()
            };
            assert!(matches!(
                decode(&bad, 0, &span()),
                Err(SnapshotError::Corrupt(_))
            ));
        }
        // A chunk out of order, or a replay of an earlier one.
        assert!(matches!(
            decode(&chunk, 1, &span()),
            Err(SnapshotError::Corrupt(_))
        ));
    }

    #[test]
    fn bad_framing_and_foreign_keys_are_rejected_even_with_a_valid_crc() {
        // A length that runs past the end (the crc was computed over the bad bytes).
        let mut data = Vec::new();
        data.extend_from_slice(&100u32.to_le_bytes());
        data.extend_from_slice(b"short");
        let truncated = SnapshotChunk::new(0, data.into(), true);
        assert!(matches!(
            decode(&truncated, 0, &span()),
            Err(SnapshotError::Corrupt(_))
        ));
        // A key outside the span: never written, whatever its checksum.
        let mut builder = ChunkBuilder::new(1024);
        builder.push(b"b", b"inside");
        builder.push(b"z", b"outside");
        let foreign = builder.take(true);
        assert!(matches!(
            decode(&foreign, 0, &span()),
            Err(SnapshotError::Corrupt(_))
        ));
    }
}
