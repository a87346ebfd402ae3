//! Every key Trestle writes, in one place.
//!
//! Layout:
//! - `Cf::Raft`: per Raft group `g` (big-endian u64):
//!   `0x01 g 0x01` hard state, `0x01 g 0x02` raft-local state (truncated index/term, conf state),
//!   `0x01 g 0x03` apply state, `0x01 g 0x04 index` log entries (index big-endian, so the log is ordered),
//!   `0x01 g 0x05` range state (the group's span and epoch), `0x01 g 0x06` the tombstone of a destroyed
//!   replica, `0x01 g 0x07` snapshot marker (a snapshot is being written into the group's span: the
//!   replica is uninitialized until it completes).
//! - `Cf::Data`: `table_id (u64 BE) ‖ esc(PartitionKey) ‖ esc(RowKey)`, where `esc` escapes `0x00` as
//!   `0x00 0xFF` and terminates with `0x00 0x01`. The encoding is order-preserving (tables in id order,
//!   then keys in byte order of their UTF-8, which is code-point order) and injective, and no encoded
//!   PartitionKey is a prefix of another, so a partition is one contiguous key span.
//! - `Cf::Meta`: `0x00 ‖ name` for node-local records (the store identity), `0x01 ‖ ...` for the meta
//!   group's replicated catalog.

const RAFT_GROUP_PREFIX: u8 = 0x01;
const HARD_STATE_SUFFIX: u8 = 0x01;
const RAFT_LOCAL_SUFFIX: u8 = 0x02;
const APPLY_STATE_SUFFIX: u8 = 0x03;
const LOG_SUFFIX: u8 = 0x04;
const RANGE_STATE_SUFFIX: u8 = 0x05;
const TOMBSTONE_SUFFIX: u8 = 0x06;
const SNAPSHOT_MARKER_SUFFIX: u8 = 0x07;

/// Node-local metadata prefix in `Cf::Meta`.
pub const LOCAL_PREFIX: u8 = 0x00;
/// The meta group's replicated keyspace in `Cf::Meta`: everything at or after this byte.
pub const META_GROUP_PREFIX: u8 = 0x01;

fn group_key(group: u64, suffix: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.push(RAFT_GROUP_PREFIX);
    k.extend_from_slice(&group.to_be_bytes());
    k.push(suffix);
    k
}

pub fn hard_state_key(group: u64) -> Vec<u8> {
    group_key(group, HARD_STATE_SUFFIX)
}

pub fn raft_local_key(group: u64) -> Vec<u8> {
    group_key(group, RAFT_LOCAL_SUFFIX)
}

pub fn apply_state_key(group: u64) -> Vec<u8> {
    group_key(group, APPLY_STATE_SUFFIX)
}

/// The group's descriptor as its own log last set it: span and epoch (see `trestle_replication`).
pub fn range_state_key(group: u64) -> Vec<u8> {
    group_key(group, RANGE_STATE_SUFFIX)
}

/// The mark a destroyed replica of `group` leaves: the conf version of the configuration that removed it
/// (u64 big-endian), so a stale snapshot cannot bring the replica back.
pub fn tombstone_key(group: u64) -> Vec<u8> {
    group_key(group, TOMBSTONE_SUFFIX)
}

/// Set while a streamed snapshot is being written into the group's span (see `trestle_replication`).
pub fn snapshot_marker_key(group: u64) -> Vec<u8> {
    group_key(group, SNAPSHOT_MARKER_SUFFIX)
}

/// The group a raft-local state key (made by [`raft_local_key`]) or hard state key belongs to, with the
/// key's suffix; `None` for log entries and anything else.
pub fn group_of_state_key(key: &[u8]) -> Option<(u64, u8)> {
    if key.len() != 10 || key[0] != RAFT_GROUP_PREFIX {
        return None;
    }
    let group = u64::from_be_bytes(key[1..9].try_into().ok()?);
    Some((group, key[9]))
}

/// Suffixes [`group_of_state_key`] reports.
pub const HARD_STATE_KEY_SUFFIX: u8 = HARD_STATE_SUFFIX;
pub const RAFT_LOCAL_KEY_SUFFIX: u8 = RAFT_LOCAL_SUFFIX;
pub const RANGE_STATE_KEY_SUFFIX: u8 = RANGE_STATE_SUFFIX;
pub const SNAPSHOT_MARKER_KEY_SUFFIX: u8 = SNAPSHOT_MARKER_SUFFIX;

pub fn log_key(group: u64, index: u64) -> Vec<u8> {
    let mut k = group_key(group, LOG_SUFFIX);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The first key of group `group`'s log (for range deletes of the whole log).
pub fn log_prefix(group: u64) -> Vec<u8> {
    group_key(group, LOG_SUFFIX)
}

/// The log index encoded in a key made by [`log_key`].
pub fn log_index_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(10..18)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Every key of group `group` in `Cf::Raft` lies in `[group_start(group), group_start(group + 1))`.
pub fn group_start(group: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(RAFT_GROUP_PREFIX);
    k.extend_from_slice(&group.to_be_bytes());
    k
}

/// Node-local record `name` in `Cf::Meta`.
pub fn local_key(name: &str) -> Vec<u8> {
    let mut k = vec![LOCAL_PREFIX];
    k.extend_from_slice(name.as_bytes());
    k
}

/// A key of the meta group's replicated keyspace in `Cf::Meta`: `0x01 ‖ kind ‖ parts (escaped)`.
pub fn meta_key(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![META_GROUP_PREFIX, kind];
    for p in parts {
        push_escaped(&mut k, p);
    }
    k
}

/// Appends `bytes` escaped and terminated (`0x00` → `0x00 0xFF`, then `0x00 0x01`).
pub fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b == 0 {
            out.extend_from_slice(&[0x00, 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Reads one escaped component from the front of `input`, returning it and the rest.
pub fn take_escaped(input: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i] == 0 {
            match input.get(i + 1)? {
                0xFF => out.push(0),
                0x01 => return Some((out, &input[i + 2..])),
                _ => return None,
            }
            i += 2;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    None
}

/// The prefix of every entity of `table_id`.
pub fn table_prefix(table_id: u64) -> Vec<u8> {
    table_id.to_be_bytes().to_vec()
}

/// The prefix of every entity of one partition.
pub fn partition_prefix(table_id: u64, partition_key: &str) -> Vec<u8> {
    let mut k = table_prefix(table_id);
    push_escaped(&mut k, partition_key.as_bytes());
    k
}

/// The data key of one entity.
pub fn data_key(table_id: u64, partition_key: &str, row_key: &str) -> Vec<u8> {
    let mut k = partition_prefix(table_id, partition_key);
    push_escaped(&mut k, row_key.as_bytes());
    k
}

/// Decodes a data key into `(table_id, PartitionKey, RowKey)`.
pub fn decode_data_key(key: &[u8]) -> Option<(u64, String, String)> {
    let table_id = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let (pk, rest) = take_escaped(&key[8..])?;
    let (rk, rest) = take_escaped(rest)?;
    if !rest.is_empty() {
        return None;
    }
    Some((
        table_id,
        String::from_utf8(pk).ok()?,
        String::from_utf8(rk).ok()?,
    ))
}

/// Where a range boundary `key` falls in table `table_id`, as a PartitionKey: `Some(pk)` when the key is
/// the first key of partition `pk` of the table (`table ‖ esc(pk)`), `None` when it lies outside the
/// table's partitions (at or before the table's start, or after its end).
pub fn boundary_partition(table_id: u64, key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(table_prefix(table_id).as_slice())?;
    let (pk, after) = take_escaped(rest)?;
    if !after.is_empty() {
        return None;
    }
    String::from_utf8(pk).ok()
}

/// The smallest key strictly greater than every key that starts with `prefix` (`None`: no such key, the
/// prefix is all `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

// The meta group's catalog (`Cf::Meta`, kinds after `META_GROUP_PREFIX`; the lock manager's kinds should
// start at 0x10): `0x01 0x01` the table-id sequence, `0x01 0x02 esc(account) esc(folded name)` a table's
// record, `0x01 0x03 esc(id BE)` a deleted table whose entities may still need dropping,
// `0x01 0x04 esc(account)` the account's service properties, `0x01 0x05 esc(node id BE)` a node that
// joined. In `Cf::Data`, the bare 8-byte table prefix
// (which no entity key equals) marks a table whose entities were dropped.

/// Meta kind of the table-id sequence.
pub const META_TABLE_SEQ: u8 = 0x01;
/// Meta kind of a table's catalog record.
pub const META_TABLE: u8 = 0x02;
/// Meta kind of a deleted table awaiting (or past) the drop of its entities.
pub const META_DROPPED_TABLE: u8 = 0x03;
/// Meta kind of an account's table service properties.
pub const META_SERVICE_PROPERTIES: u8 = 0x04;

/// The key of the meta group's table-id sequence (the next sequence number, u64 big-endian).
pub fn table_seq_key() -> Vec<u8> {
    meta_key(META_TABLE_SEQ, &[])
}

/// The catalog record of table `folded_name` (case-folded) of `account`.
pub fn catalog_key(account: &str, folded_name: &str) -> Vec<u8> {
    meta_key(META_TABLE, &[account.as_bytes(), folded_name.as_bytes()])
}

/// The prefix of every catalog record of `account`, in folded-name order.
pub fn catalog_prefix(account: &str) -> Vec<u8> {
    meta_key(META_TABLE, &[account.as_bytes()])
}

/// The record of deleted table `table_id`.
pub fn dropped_table_key(table_id: u64) -> Vec<u8> {
    meta_key(META_DROPPED_TABLE, &[&table_id.to_be_bytes()])
}

/// The prefix of every deleted-table record.
pub fn dropped_tables_prefix() -> Vec<u8> {
    meta_key(META_DROPPED_TABLE, &[])
}

/// The service properties of `account`.
pub fn service_properties_key(account: &str) -> Vec<u8> {
    meta_key(META_SERVICE_PROPERTIES, &[account.as_bytes()])
}

/// Meta kind of a node that joined the cluster (`trestle node --join`) beyond its configured peers.
pub const META_MEMBER: u8 = 0x05;

/// The record of joined node `node_id`.
pub fn member_key(node_id: u64) -> Vec<u8> {
    meta_key(META_MEMBER, &[&node_id.to_be_bytes()])
}

/// The prefix of every joined node's record, in id order.
pub fn members_prefix() -> Vec<u8> {
    meta_key(META_MEMBER, &[])
}

/// Meta kind of a lock-manager lease record (`0x01 0x10 esc(lease id BE)`).
pub const META_LOCK_LEASE: u8 = 0x10;
/// Meta kind of a held lock's record (`0x01 0x11 esc(full name)`).
pub const META_LOCK: u8 = 0x11;
/// Meta kind of the lock manager's last applied index (`0x01 0x12`).
pub const META_LOCK_APPLIED: u8 = 0x12;

/// The record of lock-manager lease `id`.
pub fn lock_lease_key(id: u64) -> Vec<u8> {
    meta_key(META_LOCK_LEASE, &[&id.to_be_bytes()])
}

/// The prefix of every lease record.
pub fn lock_leases_prefix() -> Vec<u8> {
    meta_key(META_LOCK_LEASE, &[])
}

/// The record of held lock `name`.
pub fn lock_key(name: &str) -> Vec<u8> {
    meta_key(META_LOCK, &[name.as_bytes()])
}

/// The prefix of every lock record.
pub fn locks_prefix() -> Vec<u8> {
    meta_key(META_LOCK, &[])
}

/// The lock manager's last applied command index (u64 big-endian).
pub fn lock_applied_key() -> Vec<u8> {
    meta_key(META_LOCK_APPLIED, &[])
}

/// In `Cf::Data`: the prefix of table `table_id`'s fencing records: the table prefix then `0x00 0x00`,
/// which no escaped PartitionKey starts with, so fencing records sort before every entity of the table
/// and [`decode_data_key`] rejects them.
pub fn fence_prefix(table_id: u64) -> Vec<u8> {
    let mut k = table_prefix(table_id);
    k.extend_from_slice(&[0x00, 0x00]);
    k
}

/// In `Cf::Data`: the highest fencing token writes to table `table_id` carried for lock `lock` (u64
/// big-endian, sealed).
pub fn fence_key(table_id: u64, lock: &str) -> Vec<u8> {
    let mut k = fence_prefix(table_id);
    push_escaped(&mut k, lock.as_bytes());
    k
}

/// In `Cf::Data`: where a range keeps its records about table `table_id` (its dropped marker and its
/// fences): the table prefix if the range holds the table's start, else the range's own first key,
/// which is then the first key of a partition of the table (`table ‖ esc(PartitionKey)`; ranges split
/// only there). Either way the anchor sorts before every entity the range holds of the table.
pub fn table_anchor(table_id: u64, range_start: &[u8]) -> Vec<u8> {
    let prefix = table_prefix(table_id);
    if range_start > prefix.as_slice() && range_start.starts_with(&prefix) {
        range_start.to_vec()
    } else {
        prefix
    }
}

/// The fence record of lock `lock` kept at `anchor` (see [`table_anchor`]): `anchor ‖ 0x00 0x00 ‖
/// esc(lock)`. At the table prefix this is [`fence_key`].
pub fn anchored_fence_key(anchor: &[u8], lock: &str) -> Vec<u8> {
    let mut k = anchored_fence_prefix(anchor);
    push_escaped(&mut k, lock.as_bytes());
    k
}

/// The prefix of every fence record kept at `anchor`.
pub fn anchored_fence_prefix(anchor: &[u8]) -> Vec<u8> {
    let mut k = anchor.to_vec();
    k.extend_from_slice(&[0x00, 0x00]);
    k
}

/// Whether `key` may start a range: a table prefix, or a table prefix and one escaped PartitionKey (so
/// a split never cuts a partition, and an entity group transaction stays in one range).
pub fn is_split_key(key: &[u8]) -> bool {
    match key.len() {
        0..=7 => false,
        8 => true,
        _ => take_escaped(&key[8..])
            .is_some_and(|(pk, rest)| rest.is_empty() && std::str::from_utf8(&pk).is_ok()),
    }
}

/// The first key of the partition holding data key `key` (or of its table, for a key that is no
/// entity's): always a key a range may start at.
pub fn partition_start_of(key: &[u8]) -> Vec<u8> {
    match decode_data_key(key) {
        Some((table, pk, _)) => partition_prefix(table, &pk),
        None => key.get(..8).unwrap_or(key).to_vec(),
    }
}

/// Whether a `Cf::Data` key is one of a range's records about a table (a dropped marker or a fence,
/// at the table prefix or at a partition anchor) rather than an entity. Such keys never decode as
/// entities: the anchors end where an escaped RowKey would start, and `0x00 0x00` starts no escape.
pub fn is_table_record(key: &[u8]) -> bool {
    let Some(rest) = key.get(8..) else {
        return false;
    };
    if rest.is_empty() || rest.starts_with(&[0x00, 0x00]) {
        return true;
    }
    match take_escaped(rest) {
        Some((_, after_pk)) => after_pk.is_empty() || after_pk.starts_with(&[0x00, 0x00]),
        None => false,
    }
}

/// In `Cf::Data`: the marker a data range writes when it drops a table's entities, so a write that was
/// proposed before the table's deletion cannot recreate entities under the dead id. It is the bare table
/// prefix: it sorts before every entity of the table, and [`decode_data_key`] rejects it.
pub fn dropped_table_marker(table_id: u64) -> Vec<u8> {
    table_prefix(table_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_boundaries_map_back_to_partition_keys() {
        let t = 7;
        assert_eq!(
            boundary_partition(t, &partition_prefix(t, "m\u{0}x")).as_deref(),
            Some("m\u{0}x")
        );
        assert_eq!(boundary_partition(t, &table_prefix(t)), None);
        assert_eq!(boundary_partition(t, &table_prefix(t + 1)), None);
        assert_eq!(boundary_partition(t, &data_key(t, "a", "b")), None);
        assert_eq!(boundary_partition(t, &[]), None);
    }

    #[test]
    fn table_records_are_told_apart_from_entities_at_both_anchors() {
        let t = 0x0102_0304_0506_0708;
        let mid = partition_prefix(t, "m");
        assert_eq!(table_anchor(t, &[]), table_prefix(t));
        assert_eq!(table_anchor(t, &table_prefix(t)), table_prefix(t));
        assert_eq!(table_anchor(t, &mid), mid);
        // A range starting at another table's prefix keeps this table's records at its prefix.
        assert_eq!(table_anchor(t, &table_prefix(t + 1)), table_prefix(t));
        for anchor in [table_prefix(t), mid.clone()] {
            assert!(is_table_record(&anchor));
            assert!(is_table_record(&anchored_fence_key(&anchor, "lock")));
        }
        assert_eq!(anchored_fence_key(&table_prefix(t), "l"), fence_key(t, "l"));
        for (pk, rk) in [("m", ""), ("m", "\0"), ("", ""), ("a", "b")] {
            let key = data_key(t, pk, rk);
            assert!(!is_table_record(&key), "{pk:?}/{rk:?}");
            assert!(decode_data_key(&key).is_some());
        }
        let fence = anchored_fence_key(&mid, "x");
        assert!(fence > mid && fence < data_key(t, "m", ""));
        assert!(decode_data_key(&fence).is_none());
    }
    use proptest::prelude::*;

    #[test]
    fn log_keys_sort_by_index_and_stay_inside_their_group() {
        assert!(log_key(7, 1) < log_key(7, 2));
        assert!(log_key(7, 255) < log_key(7, 256));
        assert!(log_key(7, u64::MAX) < group_start(8));
        assert!(hard_state_key(7) > group_start(7));
        assert_eq!(log_index_of(&log_key(3, 42)), Some(42));
    }

    #[test]
    fn data_keys_round_trip_with_nul_bytes() {
        let k = data_key(5, "a\0b", "");
        assert_eq!(decode_data_key(&k), Some((5, "a\0b".into(), "".into())));
    }

    proptest! {
        #[test]
        fn data_key_order_matches_tuple_order(
            a in (0u64..4, ".{0,6}", ".{0,6}"),
            b in (0u64..4, ".{0,6}", ".{0,6}"),
        ) {
            let ka = data_key(a.0, &a.1, &a.2);
            let kb = data_key(b.0, &b.1, &b.2);
            let ta = (a.0, a.1.as_bytes(), a.2.as_bytes());
            let tb = (b.0, b.1.as_bytes(), b.2.as_bytes());
            prop_assert_eq!(ka.cmp(&kb), ta.cmp(&tb));
            prop_assert_eq!(decode_data_key(&ka), Some(a.clone()));
        }

        #[test]
        fn partition_prefix_covers_exactly_its_partition(
            pk in ".{0,5}", other in ".{0,5}", rk in ".{0,5}",
        ) {
            let prefix = partition_prefix(1, &pk);
            let key = data_key(1, &other, &rk);
            prop_assert_eq!(key.starts_with(&prefix), pk == other);
        }
    }
}
