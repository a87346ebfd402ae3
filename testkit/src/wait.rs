//! Waiting on conditions with deadlines: tests never sleep to synchronise.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `f` every few milliseconds until it yields `Some`, or returns `None` at the deadline.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
