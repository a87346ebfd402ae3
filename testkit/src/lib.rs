//! Test clusters for Trestle: in-process clusters (memory or RocksDB engines, the memory network with its
//! fault filters, real gRPC between nodes for forwarding) and process clusters of the real `trestle`
//! binary (for kill -9 and restart), plus helpers that wait on conditions with deadlines.
//!
//! Every server listens on 127.0.0.1 with a port chosen by the OS, and every cluster cleans up its
//! processes and directories when dropped.

#![allow(clippy::unwrap_used)]

pub mod in_process;
pub mod process;
pub mod replica;
pub mod wait;

pub use in_process::InProcessCluster;
pub use process::ProcessCluster;
pub use wait::eventually;

/// Installs a test log subscriber once (RUST_LOG controls it; quiet by default).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
