//! The replication layer's settings (`[raft]` in a node's file): Raft timing and limits for every group
//! on the node, and the bounds of snapshot streams.

use std::time::Duration;

use serde::Deserialize;

use crate::snapshot::MAX_CHUNK_BYTES;
use crate::snapshot::send::SendConfig;

/// Raft settings for every group on a node.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Length of one Raft tick.
    pub tick_ms: u64,
    /// Ticks without a leader before a follower campaigns (randomized up to twice this).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// For deterministic simulations: this node's election timeout is exactly this many ticks (raft-rs
    /// randomizes in `[min, max)`, so `max = min + 1` makes it fixed). Unset: randomized.
    pub fixed_election_ticks: Option<usize>,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    /// Compact a group's log once this many applied entries sit before the truncation point.
    pub log_compact_threshold: u64,
    pub max_proposal_bytes: usize,
    /// How long a proposal may wait to be applied before the caller gets `ProposeError::Timeout` (its
    /// outcome is then unknown: it may still be applied).
    pub propose_timeout_ms: u64,
    /// Records per snapshot chunk, in bytes: a chunk is sent once it holds this much (so it is at most
    /// this plus one record). Bounds the memory of every snapshot stream on both ends.
    pub snapshot_chunk_bytes: usize,
    /// Snapshots this node streams at once; raft-rs retries the others later.
    pub max_sending_snapshots: usize,
    /// Snapshots this node receives at once; further streams are refused (the sender retries).
    pub max_receiving_snapshots: usize,
    /// Longest a snapshot stream may take before the sender abandons it (and raft-rs retries).
    pub snapshot_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            fixed_election_ticks: None,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            log_compact_threshold: 10_000,
            max_proposal_bytes: 8 * 1024 * 1024,
            propose_timeout_ms: 10_000,
            snapshot_chunk_bytes: 1 << 20,
            max_sending_snapshots: 3,
            max_receiving_snapshots: 3,
            snapshot_timeout_ms: 600_000,
        }
    }
}

impl Config {
    /// Fast elections, and snapshots of a few records per chunk, for tests.
    pub fn for_test() -> Self {
        Config {
            tick_ms: 20,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_chunk_bytes: 256,
            snapshot_timeout_ms: 30_000,
            ..Config::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.tick_ms == 0 {
            return Err("raft.tick-ms must be positive".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err("raft.election-ticks must exceed raft.heartbeat-ticks (> 0)".into());
        }
        if self
            .fixed_election_ticks
            .is_some_and(|t| t < self.election_ticks)
        {
            return Err("raft.fixed-election-ticks must be at least raft.election-ticks".into());
        }
        if self.log_compact_threshold == 0
            || self.max_proposal_bytes == 0
            || self.propose_timeout_ms == 0
        {
            return Err(
                "raft.log-compact-threshold and raft.max-proposal-bytes must be positive".into(),
            );
        }
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > MAX_CHUNK_BYTES {
            return Err(format!(
                "raft.snapshot-chunk-bytes must be between 1 and {MAX_CHUNK_BYTES}"
            ));
        }
        if self.max_sending_snapshots == 0
            || self.max_receiving_snapshots == 0
            || self.snapshot_timeout_ms == 0
        {
            return Err(
                "raft.max-sending-snapshots, raft.max-receiving-snapshots and \
                 raft.snapshot-timeout-ms must be positive"
                    .into(),
            );
        }
        Ok(())
    }

    pub(super) fn send_config(&self) -> SendConfig {
        SendConfig {
            chunk_bytes: self.snapshot_chunk_bytes,
            max_sending: self.max_sending_snapshots,
            timeout: Duration::from_millis(self.snapshot_timeout_ms),
        }
    }

    pub(super) fn raft_config(&self, id: u64, applied: u64) -> raft::Config {
        let mut c = raft::Config {
            id,
            election_tick: self.election_ticks,
            heartbeat_tick: self.heartbeat_ticks,
            applied,
            max_size_per_msg: self.max_size_per_msg,
            max_inflight_msgs: self.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        };
        if let Some(t) = self.fixed_election_ticks {
            c.min_election_tick = t;
            c.max_election_tick = t + 1;
        }
        c
    }
}
