//! Leases, locks and fenced writes against a running cluster (`trestle dev`):
//!
//! ```sh
//! cargo run --release -p trestle-client --example lock
//! ```
//!
//! Two "workers" take turns under one lock; each writes with its fencing token, and a write with the
//! first worker's (stale) token after the second took over is refused by the table.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trestle_client::{ClientConfig, Credentials, Entity, ErrorCode, TableClient, Value};

const DEFAULT_ENDPOINTS: &str =
    "http://127.0.0.1:10101,http://127.0.0.1:10102,http://127.0.0.1:10103";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("TRESTLE_GRPC").unwrap_or_else(|_| DEFAULT_ENDPOINTS.to_string());
    let credentials = match std::env::var("TRESTLE_CONNECTION_STRING") {
        Ok(text) => Credentials::from_connection_string(&text)?,
        Err(_) => Credentials::development(),
    };
    let config = ClientConfig::default().with_credentials(credentials);
    let client =
        TableClient::connect_with(endpoints.split(',').map(str::to_string), config).await?;
    let name = format!(
        "locked{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
    );
    client.create_table(&name).await?;
    let locks = client.locks();

    let first = locks.lease(Duration::from_secs(10)).await?;
    let guard = first
        .acquire("examples/writer", Duration::from_secs(5))
        .await?;
    println!("worker 1 holds the lock with token {}", guard.token());
    let stale = guard.fencing();
    client
        .table(&name)
        .with_fencing(guard.fencing())
        .insert(Entity::new("job", "1").with("by", Value::String("worker 1".into())))
        .await?;
    guard.release().await?;

    let second = locks.lease(Duration::from_secs(10)).await?;
    let guard = second
        .acquire("examples/writer", Duration::from_secs(5))
        .await?;
    println!("worker 2 holds the lock with token {}", guard.token());
    client
        .table(&name)
        .with_fencing(guard.fencing())
        .insert(Entity::new("job", "2").with("by", Value::String("worker 2".into())))
        .await?;

    // Worker 1 wakes up late and writes with its old token: the table refuses it.
    match client
        .table(&name)
        .with_fencing(stale)
        .insert(Entity::new("job", "late"))
        .await
    {
        Err(e) if e.code() == Some(ErrorCode::FencingTokenStale) => {
            println!("worker 1's stale write was refused: {e}")
        }
        other => println!("unexpected: {other:?}"),
    }
    for info in locks.list("examples/").await? {
        println!(
            "{}: lease {:?}, token {}, {:?} left",
            info.name, info.holder, info.token, info.remaining
        );
    }
    guard.release().await?;
    second.revoke().await?;
    first.revoke().await?;
    client.delete_table(&name).await?;
    Ok(())
}
