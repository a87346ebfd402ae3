//! Seams a test cluster reaches into a node through: set on [`NodeConfig::hooks`](crate::NodeConfig),
//! never read from a file. Production nodes leave them empty, which means the process's monotonic clock
//! for the lock manager.
//!
//! - **The lock manager's clock** ([`Hooks::lock_clock`]): a test cluster gives each node an
//!   [`OffsetClock`](crate::clock::OffsetClock) and steps it forward to show that a clock jump does not
//!   expire leases that were renewed in time.

use std::fmt;
use std::sync::Arc;

use crate::clock::Clock;

/// The test seams of one node (see the module header).
#[derive(Clone, Default)]
pub struct Hooks {
    /// The lock manager's clock; the process's monotonic clock when unset.
    pub lock_clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("lock_clock", &self.lock_clock.is_some())
            .finish()
    }
}
