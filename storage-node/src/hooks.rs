//! Seams a test cluster reaches into a node through: set on [`NodeConfig::hooks`](crate::NodeConfig),
//! never read from a file. Production nodes leave them empty, which means the process's monotonic clock
//! for the lock manager and every link to the peers open.
//!
//! - **The lock manager's clock** ([`Hooks::lock_clock`]): a test cluster gives each node an
//!   [`OffsetClock`](crate::clock::OffsetClock) and steps it forward to show that a clock jump does not
//!   expire leases that were renewed in time.
//! - **Links to the peers** ([`Hooks::peer_filter`]): consulted before every node-to-node call this
//!   node makes besides Raft (forwarding a request to a leader, a leader transfer, a status probe of the
//!   partition manager). A test cluster cuts a node off from its peers' gRPC as its memory network cuts
//!   it off from their Raft traffic, so a partition is a real one: a holder connected only to the cut
//!   node cannot renew its lease through it. A cut link behaves like an unreachable node: the call is
//!   never sent.

use std::fmt;
use std::sync::Arc;

use crate::clock::Clock;

/// Which node-to-node calls may be sent now.
pub trait PeerFilter: Send + Sync + 'static {
    /// Whether node `from` may call node `to`.
    fn allows(&self, from: u64, to: u64) -> bool;
}

/// The test seams of one node (see the module header).
#[derive(Clone, Default)]
pub struct Hooks {
    /// The lock manager's clock; the process's monotonic clock when unset.
    pub lock_clock: Option<Arc<dyn Clock>>,
    /// A filter on this node's calls to its peers; every link open when unset.
    pub peer_filter: Option<Arc<dyn PeerFilter>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("lock_clock", &self.lock_clock.is_some())
            .field("peer_filter", &self.peer_filter.is_some())
            .finish()
    }
}
