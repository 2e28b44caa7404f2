//! The deadline of every test.

use std::future::Future;
use std::time::Duration;

/// The most any one test may take.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Runs a test body, failing it if it does not finish within [`LIMIT`].
///
/// The deadline is polled first: `tokio::time::timeout` polls the body first, so a body stuck
/// on a lost wakeup would be rescued by the deadline's own wakeup and pass.
pub async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::select! {
        biased;
        () = tokio::time::sleep(LIMIT) => panic!("test did not finish within {LIMIT:?}"),
        out = body => out,
    }
}
