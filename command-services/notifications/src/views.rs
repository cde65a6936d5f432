//! What admins read: endpoints and their delivery log, from the read model
//! ([`crate::tables`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use shop_sql::{self as sql, Executor, FromRow, Row};
use utoipa::ToSchema;
use uuid::Uuid;

/// A webhook endpoint (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointView {
    pub endpoint_id: Uuid,
    pub url: String,
    /// CloudEvents types delivered to it.
    pub event_types: Vec<String>,
    pub description: String,
    /// `active`, `paused` or `disabled`.
    pub status: String,
    /// Why the service disabled it.
    pub disabled_reason: Option<String>,
    /// After a secret rotation: until when deliveries are signed with the previous
    /// secret too.
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl FromRow for EndpointView {
    fn from_row(row: &Row) -> Result<Self, sqlx::Error> {
        let types: String = row.get("event_types")?;
        Ok(EndpointView {
            endpoint_id: row.get("endpoint_id")?,
            url: row.get("url")?,
            event_types: serde_json::from_str(&types).unwrap_or_default(),
            description: row.get("description")?,
            status: row.get("status")?,
            disabled_reason: row.get("disabled_reason")?,
            previous_secret_until: row.get("previous_until")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

const ENDPOINT_COLUMNS: &str =
    "endpoint_id, url, event_types, description, status, disabled_reason, previous_until, created_at, updated_at";

/// Every endpoint not deleted, oldest first.
///
/// # Errors
/// The database failed.
pub async fn endpoints<'e>(db: impl Executor<'e>) -> Result<Vec<EndpointView>, sqlx::Error> {
    sql::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE status <> 'deleted' ORDER BY created_at, endpoint_id"
    ))
    .fetch_all(db)
    .await
}

/// One endpoint, unless deleted.
///
/// # Errors
/// The database failed.
pub async fn endpoint<'e>(
    db: impl Executor<'e>,
    endpoint_id: Uuid,
) -> Result<Option<EndpointView>, sqlx::Error> {
    sql::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = $1 AND status <> 'deleted'"
    ))
    .bind(endpoint_id)
    .fetch_optional(db)
    .await
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i64,
    pub at: DateTime<Utc>,
    /// `delivered`, `retrying` or `failed` (given up).
    pub outcome: String,
    /// The receiver's status, when it answered.
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A delivery of one event to one endpoint, with its attempts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    pub delivery_id: Uuid,
    /// The `webhook-id` header: the same on every attempt and redelivery.
    pub webhook_id: String,
    pub event_id: Uuid,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    /// When it is attempted next (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every attempt, first to last.
    pub attempt_log: Vec<AttemptView>,
}

impl FromRow for DeliveryView {
    fn from_row(row: &Row) -> Result<Self, sqlx::Error> {
        let status: String = row.get("status")?;
        let next: Option<DateTime<Utc>> = row.get("next_attempt_at")?;
        Ok(DeliveryView {
            delivery_id: row.get("delivery_id")?,
            webhook_id: row.get("webhook_id")?,
            event_id: row.get("event_id")?,
            event_type: row.get("event_type")?,
            next_attempt_at: next.filter(|_| status == "pending"),
            status,
            attempts: row.get("attempts")?,
            last_status_code: row.get("last_status_code")?,
            last_error: row.get("last_error")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
            attempt_log: Vec::new(),
        })
    }
}

impl FromRow for AttemptView {
    fn from_row(row: &Row) -> Result<Self, sqlx::Error> {
        Ok(AttemptView {
            attempt: row.get("attempt")?,
            at: row.get("at")?,
            outcome: row.get("outcome")?,
            status_code: row.get("status_code")?,
            latency_ms: row.get("latency_ms")?,
            error: row.get("error")?,
            next_attempt_at: row.get("next_attempt_at")?,
        })
    }
}

/// An endpoint's deliveries, newest first (`status` filters), with their attempts.
///
/// # Errors
/// The database failed.
pub async fn deliveries(
    pool: &sql::Pool,
    endpoint_id: Uuid,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryView>, sqlx::Error> {
    let mut deliveries: Vec<DeliveryView> = sql::query_as(
        "SELECT delivery_id, webhook_id, event_id, event_type, status, attempts, next_attempt_at,
                last_status_code, last_error, created_at, updated_at
         FROM webhook_deliveries WHERE endpoint_id = $1 AND (CAST($2 AS TEXT) IS NULL OR status = $2)
         ORDER BY created_at DESC, delivery_id DESC LIMIT $3",
    )
    .bind(endpoint_id)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    for delivery in &mut deliveries {
        delivery.attempt_log = sql::query_as(
            "SELECT attempt, at, outcome, status_code, latency_ms, error, next_attempt_at
             FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(delivery.delivery_id)
        .fetch_all(pool)
        .await?;
    }
    Ok(deliveries)
}

/// The endpoint of a delivery, if there is such a delivery.
///
/// # Errors
/// The database failed.
pub async fn delivery_endpoint(
    pool: &sql::Pool,
    delivery_id: Uuid,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    sql::query_as("SELECT endpoint_id, webhook_id FROM webhook_deliveries WHERE delivery_id = $1")
        .bind(delivery_id)
        .fetch_optional(pool)
        .await
}
