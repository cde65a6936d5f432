//! The service's read model (`sql/notifications.sql`), kept in step with its events by
//! the append that records them ([`NotificationTables`]): endpoints, subscriptions,
//! deliveries and their attempts. Also the queries of the API and the dispatcher.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use shop_eventing::store::{AppendHook, HookError, StoredEvent};
use shop_schemas::notifications::NotificationEvent;
use shop_sql::{self as sql, Conn};
use tokio::sync::Notify;
use uuid::Uuid;

/// Writes the read model from each appended event, in the append's transaction.
pub struct NotificationTables {
    /// Told, once such an append commits, that a delivery may be due now (this process's
    /// dispatcher need not wait for its next poll).
    pub wake: Arc<Notify>,
}

impl AppendHook for NotificationTables {
    fn on_append<'a>(
        &'a self,
        tx: &'a mut Conn,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), HookError>> {
        async move {
            let mut due_now = false;
            for stored in events {
                let event = stored.decode::<NotificationEvent>()?;
                due_now |= matches!(
                    event,
                    NotificationEvent::WebhookScheduled(_)
                        | NotificationEvent::WebhookRedeliveryRequested(_)
                        | NotificationEvent::WebhookEndpointResumed(_)
                );
                apply(tx, event, stored.recorded_at).await?;
            }
            if due_now {
                let wake = self.wake.clone();
                tx.after_commit(move || wake.notify_one());
            }
            Ok(())
        }
        .boxed()
    }
}

async fn set_status(
    tx: &mut Conn,
    endpoint_id: Uuid,
    status: &str,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sql::query(
        "UPDATE webhook_endpoints SET status = $2, disabled_reason = $3, updated_at = $4 WHERE endpoint_id = $1",
    )
    .bind(endpoint_id)
    .bind(status)
    .bind(reason)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn subscribe(tx: &mut Conn, endpoint_id: Uuid, types: &[String]) -> Result<(), sqlx::Error> {
    sql::query("DELETE FROM webhook_subscriptions WHERE endpoint_id = $1")
        .bind(endpoint_id)
        .execute(&mut *tx)
        .await?;
    for event_type in types {
        sql::query(
            "INSERT INTO webhook_subscriptions (event_type, endpoint_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(event_type)
        .bind(endpoint_id)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// One attempt in the log, and the delivery's state after it.
#[allow(clippy::too_many_arguments)]
async fn attempted(
    tx: &mut Conn,
    delivery_id: Uuid,
    attempt: u32,
    outcome: &str,
    status_code: Option<u16>,
    error: Option<&str>,
    latency_ms: u64,
    at: DateTime<Utc>,
    next_attempt_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sql::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, at, outcome, status_code, latency_ms, error, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(delivery_id)
    .bind(i64::from(attempt))
    .bind(at)
    .bind(outcome)
    .bind(status_code.map(i64::from))
    .bind(latency_ms.min(i64::MAX as u64) as i64)
    .bind(error)
    .bind(next_attempt_at)
    .execute(&mut *tx)
    .await?;
    let status = match outcome {
        "retrying" => "pending",
        other => other,
    };
    sql::query(
        "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at = $4, leased_until = NULL,
                last_status_code = $5, last_error = $6, updated_at = $7
         WHERE delivery_id = $1",
    )
    .bind(delivery_id)
    .bind(status)
    .bind(i64::from(attempt))
    .bind(next_attempt_at)
    .bind(status_code.map(i64::from))
    .bind(error)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn apply(
    tx: &mut Conn,
    event: NotificationEvent,
    at: DateTime<Utc>,
) -> Result<(), HookError> {
    use NotificationEvent as E;
    match event {
        E::WebhookEndpointRegistered(e) => {
            sql::query(
                "INSERT INTO webhook_endpoints (endpoint_id, url, event_types, description, secret_nonce, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'active', $6, $6) ON CONFLICT (endpoint_id) DO NOTHING",
            )
            .bind(e.endpoint_id)
            .bind(&e.url)
            .bind(serde_json::to_string(&e.event_types).unwrap_or_default())
            .bind(&e.description)
            .bind(&e.secret_nonce)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            subscribe(tx, e.endpoint_id, &e.event_types).await?;
        }
        E::WebhookEndpointUpdated(e) => {
            sql::query(
                "UPDATE webhook_endpoints SET url = $2, event_types = $3, description = $4, updated_at = $5 WHERE endpoint_id = $1",
            )
            .bind(e.endpoint_id)
            .bind(&e.url)
            .bind(serde_json::to_string(&e.event_types).unwrap_or_default())
            .bind(&e.description)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            subscribe(tx, e.endpoint_id, &e.event_types).await?;
        }
        E::WebhookSecretRotated(e) => {
            let until =
                at + chrono::TimeDelta::seconds(e.previous_valid_secs.min(i64::MAX as u64) as i64);
            sql::query(
                "UPDATE webhook_endpoints SET previous_nonce = secret_nonce, previous_until = $3,
                        secret_nonce = $2, updated_at = $4
                 WHERE endpoint_id = $1",
            )
            .bind(e.endpoint_id)
            .bind(&e.secret_nonce)
            .bind(until)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        E::WebhookEndpointPaused(e) => set_status(tx, e.endpoint_id, "paused", None, at).await?,
        E::WebhookEndpointResumed(e) => set_status(tx, e.endpoint_id, "active", None, at).await?,
        E::WebhookEndpointDisabled(e) => {
            set_status(tx, e.endpoint_id, "disabled", Some(&e.reason), at).await?
        }
        E::WebhookEndpointDeleted(e) => {
            set_status(tx, e.endpoint_id, "deleted", None, at).await?;
            subscribe(tx, e.endpoint_id, &[]).await?;
        }
        E::WebhookScheduled(e) => {
            sql::query(
                "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, webhook_id, event_id, event_type, payload, status, attempts, next_attempt_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, $7) ON CONFLICT (delivery_id) DO NOTHING",
            )
            .bind(e.delivery_id)
            .bind(e.endpoint_id)
            .bind(&e.webhook_id)
            .bind(e.event_id)
            .bind(&e.event_type)
            .bind(serde_json::to_string(&e.payload).unwrap_or_default())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        E::WebhookAttemptFailed(e) => {
            attempted(
                tx,
                e.delivery_id,
                e.attempt,
                "retrying",
                e.status_code,
                Some(&e.error),
                e.latency_ms,
                e.at,
                Some(e.next_attempt_at),
            )
            .await?
        }
        E::WebhookDelivered(e) => {
            attempted(
                tx,
                e.delivery_id,
                e.attempt,
                "delivered",
                Some(e.status_code),
                None,
                e.latency_ms,
                e.at,
                None,
            )
            .await?
        }
        E::WebhookFailed(e) => {
            attempted(
                tx,
                e.delivery_id,
                e.attempt,
                "failed",
                e.status_code,
                Some(&e.error),
                e.latency_ms,
                e.at,
                None,
            )
            .await?
        }
        E::WebhookRedeliveryRequested(e) => {
            sql::query(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $2, leased_until = NULL, updated_at = $2
                 WHERE delivery_id = $1",
            )
            .bind(e.delivery_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}
