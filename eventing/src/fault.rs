//! Fault injection for crash tests: a named point where the process dies on purpose.
//!
//! A process started with `--fault-inject relay.after_produce` (or `SHOP_FAULT_INJECT`)
//! aborts the first time it reaches that point, like a SIGKILL at the worst moment. In
//! normal operation the set is empty and each check is one atomic load.

use std::collections::HashSet;
use std::sync::OnceLock;

/// After the relay's records are acknowledged by Kafka, before the outbox rows are
/// deleted: a restart republishes them (duplicates on the topic).
pub const RELAY_AFTER_PRODUCE: &str = "relay.after_produce";
/// In a consumer batch, after some events were applied inside the transaction and
/// before it commits: a restart must redo the batch exactly once.
pub const CONSUMER_MID_BATCH: &str = "consumer.mid_batch";

/// A command under an `Idempotency-Key`, after its events and its key's answer are
/// written in its transaction, before the commit: a restart must have stored neither,
/// and the retry under the key must take effect once.
pub const IDEMPOTENCY_BEFORE_COMMIT: &str = "idempotency.before_commit";

/// The relay never publishes: committed events stay in the outbox until a process
/// without this point takes over. Simulates a publisher that is slow or cut off, so that
/// other services see this service's events late (e.g. a payment after a timeout).
/// `relay.stall:<service>` stalls only that service's relay (one process running all).
pub const RELAY_STALL: &str = "relay.stall";

/// `consumer.deaf:<consumer>`: the consumer's first subscription takes its partitions
/// and fetches nothing, as librdkafka's did at times after the broker was killed twice in
/// a row; its stall watchdog must subscribe again.
pub const CONSUMER_DEAF: &str = "consumer.deaf";

static POINTS: OnceLock<HashSet<String>> = OnceLock::new();

/// Arms the named points (comma-separated). Only the first call takes effect.
pub fn arm(points: &str) {
    let set = points
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    let _ = POINTS.set(set);
}

/// Whether the named point is armed.
pub fn armed(name: &str) -> bool {
    POINTS.get().is_some_and(|set| set.contains(name))
}

/// Dies here when the point is armed.
pub fn point(name: &str) {
    if armed(name) {
        eprintln!("fault injection: aborting at {name}");
        std::process::abort();
    }
}
