//! Range splits as the node drives them: where to cut a range, and the cluster-wide split — a new range
//! id from the meta group's leader, then the split entry in the range's own log on the range's leader
//! (see `trestle_replication` for what applying it does). Nothing is copied: both halves keep their keys
//! where they are, in every replica's engine.
//!
//! A cut is always the first key of a table or of a partition (`keys::is_split_key`), so an entity group
//! transaction never spans ranges.

use trestle_engine::{Cf, Snapshot, keys};
use trestle_proto::admin as apb;
use trestle_types::{Error, ErrorCode, Result};

use crate::cluster::{ClusterTableService, FORWARDED, Retry};
use crate::forward;
use crate::ranges::RangeDesc;

/// Where a split cuts its range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitAt {
    /// At this key (the first key of a table or of a partition), in whichever range holds it.
    Key(Vec<u8>),
    /// At the partition boundary nearest the middle of the range's bytes.
    MiddleOfData,
    /// At the median of the partitions the range's recent requests used.
    MiddleOfLoad,
}

/// The partition boundary nearest the middle of `range`'s data (by bytes of keys and values), or
/// `None` when the range holds fewer than two partitions (nothing to cut between).
pub fn middle_key(view: &dyn Snapshot, range: &RangeDesc) -> Result<Option<Vec<u8>>> {
    let scan = || {
        view.scan(Cf::Data, &range.start, range.end.as_deref())
            .map_err(|e| Error::internal(format!("scanning range {}: {e}", range.id)))
    };
    let mut total = 0u64;
    for kv in scan()? {
        let (k, v) = kv.map_err(|e| Error::internal(format!("scanning: {e}")))?;
        total += (k.len() + v.len()) as u64;
    }
    let mut seen = 0u64;
    for kv in scan()? {
        let (k, v) = kv.map_err(|e| Error::internal(format!("scanning: {e}")))?;
        seen += (k.len() + v.len()) as u64;
        if seen * 2 < total || keys::is_table_record(&k) {
            continue;
        }
        let Some((table, pk, _)) = keys::decode_data_key(&k) else {
            continue;
        };
        let cut = keys::partition_prefix(table, &pk);
        if cut.as_slice() > range.start.as_slice() {
            return Ok(Some(cut));
        }
    }
    // Past the middle every key belonged to the range's first partition: cut after it instead.
    let mut first = None;
    for kv in scan()? {
        let (k, _) = kv.map_err(|e| Error::internal(format!("scanning: {e}")))?;
        let Some((table, pk, _)) = keys::decode_data_key(&k) else {
            continue;
        };
        let cut = keys::partition_prefix(table, &pk);
        match &first {
            None => first = Some(cut),
            Some(f) if *f != cut && cut.as_slice() > range.start.as_slice() => {
                return Ok(Some(cut));
            }
            Some(_) => {}
        }
    }
    Ok(None)
}

/// The wire form of a range descriptor.
pub fn descriptor_to_proto(r: &RangeDesc) -> apb::RangeDescriptor {
    apb::RangeDescriptor {
        id: r.id,
        start: r.start.clone(),
        end: r.end.clone(),
        voters: r.voters.clone(),
        learners: r.learners.clone(),
        voters_outgoing: r.voters_outgoing.clone(),
        version: r.epoch.version,
        conf_ver: r.epoch.conf_ver,
    }
}

/// A range descriptor from the wire.
pub fn descriptor_from_proto(r: &apb::RangeDescriptor) -> RangeDesc {
    RangeDesc {
        id: r.id,
        start: r.start.clone(),
        end: r.end.clone(),
        voters: r.voters.clone(),
        learners: r.learners.clone(),
        voters_outgoing: r.voters_outgoing.clone(),
        epoch: trestle_replication::Epoch {
            version: r.version,
            conf_ver: r.conf_ver,
        },
    }
}

impl ClusterTableService {
    /// Splits range `range` (or, for [`SplitAt::Key`], whichever range holds the key) wherever its
    /// leader is; returns the two halves.
    pub async fn split_range(&self, range: u64, at: SplitAt) -> Result<(RangeDesc, RangeDesc)> {
        if let SplitAt::Key(k) = &at
            && !keys::is_split_key(k)
        {
            return Err(Error::invalid_input(
                "A range splits only at the first key of a table or of a partition.",
            ));
        }
        let local = self.local();
        let new_id = FORWARDED
            .scope(
                false,
                self.route(
                    Retry::RefusalsOnly,
                    || local.allocate_range_id(),
                    forward::allocate_range_id,
                ),
            )
            .await?;
        let split = self.route(
            Retry::RefusalsOnly,
            || local.split_range(range, &at, new_id, None),
            |c| forward::split_range(c, range, &at, new_id),
        );
        let (left, right) = FORWARDED.scope(false, split).await?;
        tracing::info!(
            range,
            right = right.id,
            at = %crate::ranges::describe_key(&right.start),
            version = right.epoch.version,
            "range split"
        );
        Ok((left, right))
    }
}

/// `InvalidInput` for a range that cannot be cut (one partition, or empty).
pub fn nothing_to_cut(range: u64) -> Error {
    Error::new(
        ErrorCode::InvalidInput,
        format!("Range {range} holds fewer than two partitions; there is nowhere to split it."),
    )
}
