//! Entity group transactions: a batch applies all of its operations or none of them, and a failed batch
//! names the operation that failed.
//!
//! Start a cluster with `trestle dev`, then run
//!
//! ```text
//! cargo run -p trestle-client --example batch
//! ```
//!
//! `TRESTLE_GRPC` lists the nodes to start from, comma-separated; it defaults to the three gRPC ports of
//! `trestle dev`: `http://127.0.0.1:10101,http://127.0.0.1:10102,http://127.0.0.1:10103`.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use trestle_client::{
    ClientConfig, Credentials, Entity, Error, IfMatch, QueryBuilder, TableClient, Value, op,
};

const DEFAULT_ENDPOINTS: &str =
    "http://127.0.0.1:10101,http://127.0.0.1:10102,http://127.0.0.1:10103";

fn order(id: &str, item: &str, qty: i32) -> Entity {
    Entity::new("order-1001", id)
        .with("Item", Value::String(item.into()))
        .with("Qty", Value::Int32(qty))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("TRESTLE_GRPC").unwrap_or_else(|_| DEFAULT_ENDPOINTS.to_string());
    // An Azure connection string (AccountName=…;AccountKey=… or …;SharedAccessSignature=…); by
    // default the development account of `trestle dev`.
    let credentials = match std::env::var("TRESTLE_CONNECTION_STRING") {
        Ok(text) => Credentials::from_connection_string(&text)?,
        Err(_) => Credentials::development(),
    };
    let config = ClientConfig::default().with_credentials(credentials);
    let client =
        TableClient::connect_with(endpoints.split(',').map(str::to_string), config).await?;
    let name = format!(
        "batch{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
    );
    client.create_table(&name).await?;
    let orders = client.table(&name);

    // One order's lines share a PartitionKey, so they can change together.
    let lines: Vec<_> = (1..=5)
        .map(|i| op::insert(order(&format!("line{i}"), "widget", i)))
        .collect();
    let results = orders.batch(lines).await?;
    let etags: Vec<String> = results
        .iter()
        .filter_map(|r| r.etag)
        .map(|t| t.to_string())
        .collect();
    println!(
        "inserted {} lines in one transaction; ETags: {etags:?}",
        results.len()
    );

    // The third operation collides with an existing line: nothing of this batch is applied.
    let failing = vec![
        op::merge(order("line1", "gadget", 10), IfMatch::Any),
        op::insert(order("line6", "sprocket", 1)),
        op::insert(order("line2", "duplicate", 1)),
    ];
    match orders.batch(failing).await {
        Err(e @ Error::Batch(_)) => {
            println!(
                "batch rejected: operation {:?} failed with {:?}",
                e.failed_index(),
                e.code()
            );
        }
        other => return Err(format!("expected a rejected batch, got {other:?}").into()),
    }
    let line1 = orders.get("order-1001", "line1").await?;
    println!("line1 unchanged: Item={:?}", line1.properties.get("Item"));
    let line6 = orders.get("order-1001", "line6").await;
    println!(
        "line6 was not inserted: {:?}",
        line6.err().and_then(|e| e.code())
    );

    // Mixed operations in one transaction.
    orders
        .batch(vec![
            op::replace(order("line1", "gadget", 10), IfMatch::Any),
            op::upsert_merge(
                Entity::new("order-1001", "line2").with("Note", Value::String("rush".into())),
            ),
            op::delete("order-1001", "line5", IfMatch::Any),
            op::upsert_replace(order("line6", "sprocket", 1)),
        ])
        .await?;
    let all: Vec<Entity> = orders
        .query(QueryBuilder::new().filter("PartitionKey eq 'order-1001'"))
        .try_collect()
        .await?;
    for e in &all {
        println!("{}: {:?}", e.row_key, e.properties);
    }

    client.delete_table(&name).await?;
    Ok(())
}
