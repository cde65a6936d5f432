//! Admission by the saga's backlog: a new order is refused with 503 and `Retry-After`
//! while too many placed orders wait for the saga to decide them.
//!
//! The gateway's load shedding counts requests in flight; an order's HTTP request is over
//! as soon as `OrderPlaced` is appended, while the saga's work for it has just begun. Under
//! a load above what the saga decides, the orders would pile up in the topics and every
//! accepted order would wait longer (up to its deadline, then be cancelled with reason
//! `timeout`). The pending orders are the rows of `order_deadlines` (written with
//! `OrderPlaced`, removed with the decision), shared by every instance of the service; a
//! watcher counts them a few times a second, and each instance adds its orders still
//! being placed when the count returns (which the count cannot have seen) and those it
//! admits until the next count, so a burst between two counts cannot overshoot the limit
//! by more than the other instances' placements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shop_eventing::CancellationToken;
use shop_sql::{self as sql, Pool};
use shop_web::http::Problem;
use tracing::warn;

/// How often the pending orders are counted.
const COUNT_EVERY: Duration = Duration::from_millis(200);

/// The pending orders as last counted (plus this instance's placements since).
pub struct Backlog {
    /// Refuse at this many pending orders (0: never).
    limit: u64,
    pending: AtomicU64,
    /// Orders admitted whose placement has not finished ([`Admission`]s alive).
    in_flight: AtomicU64,
}

/// An admitted order, until its placement has finished (appended, or failed).
pub struct Admission<'a>(Option<&'a Backlog>);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(backlog) = self.0 {
            backlog.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Backlog {
    /// `limit` pending orders at most (`SHOP_ORDERS_MAX_PENDING`; 0 turns admission off).
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Backlog {
            limit,
            pending: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        })
    }

    /// Admits one more order, or the 503 that refuses it. Keep the admission until the
    /// placement has finished.
    ///
    /// # Errors
    /// The backlog is at its limit.
    pub fn admit(&self) -> Result<Admission<'_>, Problem> {
        if self.limit == 0 {
            return Ok(Admission(None));
        }
        let pending = self.pending.fetch_add(1, Ordering::AcqRel);
        if pending >= self.limit {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("saga_backlog_refusals_total").increment(1);
            return Err(Problem::unavailable(format!(
                "overloaded: {pending} orders are waiting for the saga (at most {}); try again shortly",
                self.limit
            ))
            .retry_after(1));
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(Admission(Some(self)))
    }

    /// The pending orders now.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// A count's result: the orders it saw, and this instance's still being placed. An
    /// order placed while the count ran is missed if it committed after the count's
    /// snapshot and its request ended before the count returned; one that committed
    /// before the snapshot and whose request had not yet ended is counted twice. Both
    /// windows are the moments around a commit, and last until the next count.
    fn counted(&self, counted: u64) {
        let pending = counted + self.in_flight.load(Ordering::Acquire);
        self.pending.store(pending, Ordering::Release);
        #[allow(clippy::cast_precision_loss)] // a count far below 2^52
        metrics::gauge!("saga_backlog_orders").set(pending as f64);
    }
}

/// Counts the pending orders every [`COUNT_EVERY`] until `shutdown`.
pub async fn run(pool: Pool, backlog: Arc<Backlog>, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        match sql::query_scalar::<i64>("SELECT count(*) FROM order_deadlines")
            .fetch_one(&pool)
            .await
        {
            Ok(n) => {
                backlog.counted(u64::try_from(n).unwrap_or(0));
                failing = false;
            }
            // The last count stands (and grows with this instance's placements).
            Err(e) if !failing => {
                warn!(error = %e, "cannot count the pending orders; retrying");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(COUNT_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_refused_at_the_limit_and_admitted_again_once_counted_below() {
        let backlog = Backlog::new(2);
        drop(backlog.admit().unwrap());
        drop(backlog.admit().unwrap());
        let refused = backlog.admit().err().unwrap();
        assert_eq!(refused.status, 503);
        assert_eq!(refused.retry_after, Some(1));
        assert_eq!(backlog.pending(), 2);
        backlog.counted(1);
        drop(backlog.admit().unwrap());
        assert!(backlog.admit().is_err());
        let open = Backlog::new(0);
        for _ in 0..10 {
            assert!(open.admit().is_ok());
        }
    }

    /// An order still being placed when a count returns is not lost when the count
    /// (which cannot have seen it) is stored; one that has finished is the count's.
    #[test]
    fn a_count_keeps_the_orders_still_being_placed() {
        let backlog = Backlog::new(3);
        let placing = backlog.admit().unwrap();
        drop(backlog.admit().unwrap());
        // The count saw the finished one.
        backlog.counted(1);
        assert_eq!(backlog.pending(), 2);
        drop(backlog.admit().unwrap());
        assert!(backlog.admit().is_err(), "the fourth is refused");
        drop(placing);
        // The next count sees the three.
        backlog.counted(3);
        assert_eq!(backlog.pending(), 3);
    }
}
