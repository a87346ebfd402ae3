//! Quickstart: connect, create a table, write, read, query, batch, delete.
//!
//! Start a cluster with `trestle dev`, then run
//!
//! ```text
//! cargo run -p trestle-client --example quickstart
//! ```
//!
//! `TRESTLE_GRPC` lists the nodes to start from, comma-separated; it defaults to the three gRPC ports of
//! `trestle dev`: `http://127.0.0.1:10101,http://127.0.0.1:10102,http://127.0.0.1:10103`.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use trestle_client::{
    ClientConfig, Credentials, Entity, IfMatch, QueryBuilder, TableClient, Value, op,
};

const DEFAULT_ENDPOINTS: &str =
    "http://127.0.0.1:10101,http://127.0.0.1:10102,http://127.0.0.1:10103";

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
    println!("connected to {endpoints}");

    // A fresh table per run, so the example can be run again and again.
    let name = format!(
        "quickstart{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
    );
    let info = client.create_table(&name).await?;
    println!("created table {} (id {})", info.name, info.id);
    let people = client.table(&name);

    for (rk, age, city) in [
        ("ann", 41, "Oslo"),
        ("bob", 29, "Lima"),
        ("cem", 35, "Oslo"),
    ] {
        let e = Entity::new("team-a", rk)
            .with("Age", Value::Int32(age))
            .with("City", Value::String(city.into()));
        let out = people.insert(e).await?;
        println!(
            "inserted team-a/{rk}: etag {}",
            out.etag.map(|t| t.to_string()).unwrap_or_default()
        );
    }

    let ann = people.get("team-a", "ann").await?;
    println!("get team-a/ann: {:?}", ann.properties);

    // Merge only if nobody changed ann since we read her.
    let etag = ann.etag().ok_or("a stored entity has an ETag")?;
    people
        .merge(
            Entity::new("team-a", "ann").with("Age", Value::Int32(42)),
            IfMatch::ETag(etag),
        )
        .await?;
    let stale = people
        .merge(Entity::new("team-a", "ann"), IfMatch::ETag(etag))
        .await;
    println!(
        "a second merge with the old ETag fails: {:?}",
        stale.err().and_then(|e| e.code())
    );

    let in_oslo: Vec<Entity> = people
        .query(
            QueryBuilder::new()
                .filter("City eq 'Oslo' and Age gt 30")
                .select(["Age"]),
        )
        .try_collect()
        .await?;
    for e in &in_oslo {
        println!(
            "query: {}/{} Age={:?}",
            e.partition_key,
            e.row_key,
            e.properties.get("Age")
        );
    }

    // An entity group transaction: all or nothing, on one PartitionKey.
    let results = people
        .batch(vec![
            op::insert(Entity::new("team-a", "dia").with("Age", Value::Int32(23))),
            op::upsert_merge(
                Entity::new("team-a", "bob").with("City", Value::String("Quito".into())),
            ),
            op::delete("team-a", "cem", IfMatch::Any),
        ])
        .await?;
    println!("batch applied {} operations", results.len());

    people.delete("team-a", "dia", IfMatch::Any).await?;
    let left: Vec<Entity> = people.query(QueryBuilder::new()).try_collect().await?;
    let keys: Vec<&str> = left.iter().map(|e| e.row_key.as_str()).collect();
    println!("left in the table: {keys:?}");

    client.delete_table(&name).await?;
    println!("deleted table {name}");
    Ok(())
}
