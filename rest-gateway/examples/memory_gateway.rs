//! DEVELOPMENT HARNESS — not the product.
//!
//! Serves the REST gateway over an in-memory `TableService` (the one in `tests/support/memory.rs`): no
//! replication, no persistence, everything is lost on exit. It exists so the Azure SDK compatibility
//! suite (`tests/compat/python`) can be run against the gateway alone while the storage node is built:
//!
//! ```text
//! cargo run -p trestle-rest-gateway --example memory_gateway            # 127.0.0.1:10002
//! cargo run -p trestle-rest-gateway --example memory_gateway -- 127.0.0.1:20002
//! ```
//!
//! The real server is `trestle dev`, which serves the same router over the replicated cluster.

#[path = "../tests/support/memory.rs"]
mod memory;

use std::net::SocketAddr;
use std::sync::Arc;

use trestle_rest_gateway::{GatewayConfig, router};

#[tokio::main]
async fn main() -> anyhow_free::Result {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:10002".into())
        .parse()?;
    let config = GatewayConfig::default();
    config.validate()?;
    let app = router(Arc::new(memory::MemoryTableService::new()), config);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "in-memory development gateway listening (no replication, not the product)");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

mod anyhow_free {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
