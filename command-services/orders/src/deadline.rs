//! The saga deadline (SPEC §5.7): an order not confirmed within the timeout is cancelled
//! with reason `timeout`, and the other services compensate.
//!
//! Each pending order has a row in `order_deadlines`, written by the append that places
//! it and deleted by the append that confirms or cancels it ([`DeadlineTable`]). The
//! [`run`] worker polls the overdue rows and cancels their orders. Several instances may
//! run it: the aggregate's optimistic concurrency lets one cancellation through, and a
//! cancellation of an order that already moved on changes nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use futures::future::BoxFuture;
use futures::FutureExt;
use shop_eventing::command::CommandBus;
use shop_eventing::store::{AppendHook, HookError, InlineHook, StoredEvent};
use shop_eventing::CancellationToken;
use shop_schemas::orders::OrderEvent;
use shop_schemas::EventMetadata;
use shop_sql::{self as sql, Conn, Pool};
use tracing::{info, warn};
use uuid::Uuid;

use crate::order::{CancelReason, Order, OrderCommand};

/// Keeps `order_deadlines` in step with the order's events, in the append transaction,
/// and counts the saga's outcomes (`saga_outcomes_total{event, reason}`).
pub struct DeadlineTable {
    timeout: Duration,
    /// Placements' deadlines, and their removal by a confirmation or a cancellation, as
    /// part of the append statement (PostgreSQL).
    inline: [InlineHook; 2],
}

impl DeadlineTable {
    /// Deadlines `timeout` after each placement.
    pub fn new(timeout: Duration) -> Self {
        let after = deadline_after(timeout).num_milliseconds();
        DeadlineTable {
            timeout,
            // A placement (the HTTP path's append, alone or in a group) is then one
            // statement outside any transaction, instead of a transaction of three
            // (`BEGIN`, the append, the deadline's insert) and its `COMMIT`. The due time
            // counts from the statement's start rather than the events' `recorded_at`,
            // taken a moment before. A confirmation or a cancellation (most in the
            // saga's reactions, whose transaction is open anyway) deletes the row in its
            // append statement too: one round trip less an order.
            inline: [
                InlineHook {
                    cte: format!(
                        "deadline_set AS (
                        INSERT INTO order_deadlines (order_id, due_at)
                        SELECT (data->>'order_id')::uuid, now() + interval '{after} milliseconds'
                        FROM appended WHERE event_type = 'OrderPlaced'
                        ON CONFLICT (order_id) DO NOTHING)"
                    )
                    .into(),
                    event_types: &["OrderPlaced"],
                },
                InlineHook {
                    cte: "deadline_done AS (
                        DELETE FROM order_deadlines WHERE order_id IN (
                            SELECT (data->>'order_id')::uuid FROM appended
                            WHERE event_type IN ('OrderConfirmed', 'OrderCancelled')))"
                        .into(),
                    event_types: &["OrderConfirmed", "OrderCancelled"],
                },
            ],
        }
    }
}

impl AppendHook for DeadlineTable {
    fn inline_postgres(&self) -> &[InlineHook] {
        &self.inline
    }

    /// Counted at append (an append that then rolls back may count).
    fn appended(&self, events: &[StoredEvent]) {
        for stored in events {
            if !matches!(
                stored.event_type.as_str(),
                "OrderConfirmed" | "OrderCancelled"
            ) {
                continue;
            }
            let reason = match stored.decode::<OrderEvent>() {
                Ok(OrderEvent::OrderCancelled(e)) => e.reason,
                _ => String::new(),
            };
            metrics::counter!("saga_outcomes_total", "event" => stored.event_type.clone(), "reason" => reason)
                .increment(1);
        }
    }

    fn touches(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "OrderPlaced" | "OrderConfirmed" | "OrderCancelled"
        )
    }

    fn on_append<'a>(
        &'a self,
        tx: &'a mut Conn,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), HookError>> {
        async move {
            for stored in events {
                match stored.decode::<OrderEvent>()? {
                    OrderEvent::OrderPlaced(e) => {
                        sql::query(
                            "INSERT INTO order_deadlines (order_id, due_at) VALUES ($1, $2)
                             ON CONFLICT (order_id) DO NOTHING",
                        )
                        .bind(e.order_id)
                        .bind(stored.recorded_at + deadline_after(self.timeout))
                        .execute(&mut *tx)
                        .await?;
                    }
                    OrderEvent::OrderConfirmed(_) | OrderEvent::OrderCancelled(_) => {
                        sql::query("DELETE FROM order_deadlines WHERE order_id = $1")
                            .bind(Uuid::parse_str(&stored.aggregate_id).ok())
                            .execute(&mut *tx)
                            .await?;
                    }
                    OrderEvent::OrderShipped(_)
                    | OrderEvent::OrderDelivered(_)
                    | OrderEvent::OrderCancellationRequested(_)
                    | OrderEvent::OrderCancellationRefused(_) => {}
                }
            }
            Ok(())
        }
        .boxed()
    }
}

/// A timeout as a time span (ten years when it is too large to add).
fn deadline_after(timeout: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(timeout).unwrap_or_else(|_| chrono::TimeDelta::days(3650))
}

/// How many overdue orders one pass cancels.
const BATCH: i64 = 100;

/// Cancels overdue orders every `poll` until `shutdown`.
pub async fn run(
    pool: Pool,
    bus: Arc<CommandBus<Order>>,
    poll: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        if let Err(e) = cancel_overdue(&pool, &bus).await {
            warn!(error = %e, "deadline pass failed; retrying");
        }
    }
}

async fn cancel_overdue(pool: &Pool, bus: &CommandBus<Order>) -> Result<(), sqlx::Error> {
    let due: Vec<Uuid> = sql::query_scalar(
        "SELECT order_id FROM order_deadlines WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
    )
    .bind(Utc::now())
    .bind(BATCH)
    .fetch_all(pool)
    .await?;
    for order_id in due {
        let metadata = EventMetadata {
            correlation_id: order_id.to_string(),
            causation_id: format!("deadline:{order_id}"),
            traceparent: shop_web::telemetry::new_traceparent(),
        };
        let command = OrderCommand::CancelBySaga {
            reason: CancelReason::Timeout,
        };
        match bus.execute(&order_id.to_string(), command, &metadata).await {
            Ok(()) => {
                info!(%order_id, "order timed out");
                // The order may have moved on already (nothing appended, row left over).
                sql::query("DELETE FROM order_deadlines WHERE order_id = $1 AND due_at <= $2")
                    .bind(order_id)
                    .bind(Utc::now())
                    .execute(pool)
                    .await?;
            }
            Err(e) => warn!(%order_id, error = %e, "cannot cancel an overdue order yet"),
        }
    }
    Ok(())
}
