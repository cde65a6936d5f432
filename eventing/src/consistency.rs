//! Read-your-writes (SPEC §3.6), the database's side: the projectors keep, per
//! consumer, the last sequence applied of every aggregate (`applied_versions`, in the
//! same transaction as the effect), and a read that carries a command's
//! `X-Consistency-Token` waits here until every projection fed by that service's topic
//! has applied that version. The token itself (its format, headers and parsing) is
//! `shop_web::consistency`.

use std::time::{Duration, Instant};

use shop_sql::{self as sql, Pool};
use shop_web::consistency::ConsistencyToken;

/// The events of a batch not applied yet by a consumer that records applied versions,
/// recorded as applied by the same statement: those whose sequence is above the one
/// recorded for their aggregate (an aggregate's events reach a consumer in sequence order
/// on one partition, so a lower or equal one is a republished duplicate). Recording
/// before the effect is safe: both are in the caller's transaction, and the consumer
/// applies every event found new. Events of no known service carry no usable sequence
/// and count as new.
///
/// # Errors
/// The database fails.
pub async fn unapplied(
    tx: &mut sql::Conn,
    consumer: &str,
    events: &[&shop_schemas::CloudEvent],
) -> Result<std::collections::HashSet<uuid::Uuid>, sqlx::Error> {
    crate::backend::record_applied_versions(tx, consumer, events).await
}

/// Waits until every `(consumer, token)` pair is applied; `false` when `wait` ran out.
///
/// # Errors
/// The database fails.
pub async fn wait_until_applied(
    pool: &Pool,
    needed: &[(&str, &ConsistencyToken)],
    wait: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = Instant::now() + wait;
    let mut nap = Duration::from_millis(5);
    loop {
        let mut all = true;
        for (consumer, token) in needed {
            let applied: Option<i64> = sql::query_scalar(
                "SELECT sequence FROM applied_versions WHERE consumer = $1 AND source = $2 AND subject = $3",
            )
            .bind(*consumer)
            .bind(token.service.name())
            .bind(token.subject.as_str())
            .fetch_optional(pool)
            .await?;
            if applied.unwrap_or(0) < token.sequence {
                all = false;
                break;
            }
        }
        if all {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        tokio::time::sleep(nap.min(left)).await;
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}
