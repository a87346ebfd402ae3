//! Test clusters for Trestle: in-process clusters (memory or RocksDB engines, the memory network with its
//! fault filters, real gRPC between nodes for forwarding) and process clusters of the real `trestle`
//! binary (kill -9, pause, restart; network namespaces cut with nftables; clock steps; a FUSE file
//! system that loses unsynced writes at a simulated power cut), the history recorder and checkers, the
//! fault campaign, workloads shared by both kinds of cluster (the fenced counter), plus helpers that
//! wait on conditions with deadlines.
//!
//! Every server listens on 127.0.0.1 (or in network namespaces the cluster creates) with ports chosen by
//! the OS, and every cluster cleans up its processes, namespaces, mounts and directories when dropped.

#![allow(clippy::unwrap_used)]

pub mod campaign;
pub mod fenced_counter;
pub mod history;
pub mod in_process;
pub mod lossy_fs;
pub mod netns;
pub mod process;
pub mod replica;
pub mod rest;
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

/// A client of the development account, every call signed with its well-known key.
pub async fn dev_client(
    endpoints: impl IntoIterator<Item = String>,
) -> anyhow::Result<trestle_client::TableClient> {
    let config = trestle_client::ClientConfig::default()
        .with_credentials(trestle_client::Credentials::development());
    Ok(trestle_client::TableClient::connect_with(endpoints, config).await?)
}

/// Signs a raw gRPC request of `method` acting in `account` with the development account's key (the
/// node refuses it unless `account` is the development account).
pub fn sign_as_dev_account<T: prost::Message>(
    request: &mut tonic::Request<T>,
    method: &str,
    account: &str,
) {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(trestle_client::DEV_ACCOUNT_KEY)
        .unwrap_or_default();
    let date = trestle_proto::auth::http_date(chrono::Utc::now());
    trestle_proto::auth::sign_request(request, method, account, &key, &date);
}
