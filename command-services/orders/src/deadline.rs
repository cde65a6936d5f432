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

use futures::future::BoxFuture;
use futures::FutureExt;
use shop_eventing::command::CommandBus;
use shop_eventing::store::{AppendHook, HookError, StoredEvent};
use shop_eventing::CancellationToken;
use shop_schemas::orders::OrderEvent;
use shop_schemas::EventMetadata;
use sqlx::{PgConnection, PgPool};
use tracing::{info, warn};
use uuid::Uuid;

use crate::order::{CancelReason, Order, OrderCommand};

/// Keeps `order_deadlines` in step with the order's events, in the append transaction,
/// and counts the saga's outcomes (`saga_outcomes_total{event, reason}`).
pub struct DeadlineTable {
    pub timeout: Duration,
}

impl AppendHook for DeadlineTable {
    fn on_append<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), HookError>> {
        async move {
            for stored in events {
                match stored.decode::<OrderEvent>()? {
                    OrderEvent::OrderPlaced(e) => {
                        sqlx::query(
                            "INSERT INTO order_deadlines (order_id, due_at) VALUES ($1, now() + $2 * interval '1 millisecond')
                             ON CONFLICT (order_id) DO NOTHING",
                        )
                        .bind(e.order_id)
                        .bind(self.timeout.as_millis() as f64)
                        .execute(&mut *tx)
                        .await?;
                    }
                    event @ (OrderEvent::OrderConfirmed(_) | OrderEvent::OrderCancelled(_)) => {
                        let reason = match event {
                            OrderEvent::OrderCancelled(e) => e.reason,
                            _ => String::new(),
                        };
                        // Counted at append (an append that then rolls back may count).
                        metrics::counter!("saga_outcomes_total", "event" => stored.event_type.clone(), "reason" => reason)
                            .increment(1);
                        sqlx::query("DELETE FROM order_deadlines WHERE order_id = $1")
                            .bind(Uuid::parse_str(&stored.aggregate_id).ok())
                            .execute(&mut *tx)
                            .await?;
                    }
                    OrderEvent::OrderShipped(_) | OrderEvent::OrderDelivered(_) => {}
                }
            }
            Ok(())
        }
        .boxed()
    }
}

/// How many overdue orders one pass cancels.
const BATCH: i64 = 100;

/// Cancels overdue orders every `poll` until `shutdown`.
pub async fn run(
    pool: PgPool,
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

async fn cancel_overdue(pool: &PgPool, bus: &CommandBus<Order>) -> Result<(), sqlx::Error> {
    let due: Vec<Uuid> = sqlx::query_scalar(
        "SELECT order_id FROM order_deadlines WHERE due_at <= now() ORDER BY due_at LIMIT $1",
    )
    .bind(BATCH)
    .fetch_all(pool)
    .await?;
    for order_id in due {
        let metadata = EventMetadata {
            correlation_id: order_id.to_string(),
            causation_id: format!("deadline:{order_id}"),
            traceparent: shop_eventing::telemetry::new_traceparent(),
        };
        let command = OrderCommand::CancelBySaga {
            reason: CancelReason::Timeout,
        };
        match bus.execute(&order_id.to_string(), command, &metadata).await {
            Ok(()) => {
                info!(%order_id, "order timed out");
                // The order may have moved on already (nothing appended, row left over).
                sqlx::query("DELETE FROM order_deadlines WHERE order_id = $1 AND due_at <= now()")
                    .bind(order_id)
                    .execute(pool)
                    .await?;
            }
            Err(e) => warn!(%order_id, error = %e, "cannot cancel an overdue order yet"),
        }
    }
    Ok(())
}
