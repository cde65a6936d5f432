//! Reading the store: cqrs-es's repository (an aggregate's events and snapshot, replay
//! streams; its `persist` is the append, `super::append`) over the pool or a caller's
//! transaction, and the reads tools and `GET /api/events` use.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::Value;
use uuid::Uuid;

use shop_sql::{self as sql, Conn};

use super::event::{StoredEvent, EVENT_COLUMNS};
use super::tx::TxEventStore;
use super::write::connection_error;
use super::EventStore;

impl EventStore {
    /// One aggregate's events in sequence order (for `GET /api/events` and tools).
    ///
    /// # Errors
    /// The database fails.
    pub async fn aggregate_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = $1 ORDER BY aggregate_type, sequence");
        let rows = sql::query(&sql)
            .bind(aggregate_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(StoredEvent::from_row).collect()
    }

    /// An aggregate's last sequence (0 when it has no events).
    ///
    /// # Errors
    /// The database fails.
    pub async fn last_sequence(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<i64, sqlx::Error> {
        sql::query_scalar(
            "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_one(&self.pool)
        .await
    }

    /// Events by position, for tools that read the whole store.
    ///
    /// # Errors
    /// The database fails.
    pub async fn events_after(
        &self,
        position: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
        );
        let rows = sql::query(&sql)
            .bind(position)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(StoredEvent::from_row).collect()
    }

    /// Up to `limit` events after `position`, by position, of one aggregate id or of all
    /// (`GET /api/events` and `shop events`). Within an aggregate, position order is
    /// sequence order (an append waits for the previous sequence to commit).
    ///
    /// # Errors
    /// The database fails.
    pub async fn events_page(
        &self,
        aggregate_id: Option<&str>,
        position: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let Some(aggregate_id) = aggregate_id else {
            return self.events_after(position, limit).await;
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = $1 AND position > $2 ORDER BY position LIMIT $3"
        );
        let rows = sql::query(&sql)
            .bind(aggregate_id)
            .bind(position)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(StoredEvent::from_row).collect()
    }

    /// The store position of an event (`None`: not in this store).
    ///
    /// # Errors
    /// The database fails.
    pub async fn position_of(&self, event_id: Uuid) -> Result<Option<i64>, sqlx::Error> {
        sql::query_scalar("SELECT position FROM events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(aggregate_id = %aggregate_id, after))]
async fn select(
    conn: &mut Conn,
    aggregate_type: &str,
    aggregate_id: &str,
    after: i64,
) -> Result<Vec<SerializedEvent>, PersistenceError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence"
    );
    let rows = sql::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(after)
        .fetch_all(&mut *conn)
        .await
        .map_err(connection_error)?;
    rows.iter()
        .map(|row| StoredEvent::from_row(row).map(|e| e.to_serialized()))
        .collect::<Result<_, _>>()
        .map_err(|e| PersistenceError::DeserializationError(Box::new(e)))
}

#[tracing::instrument(level = "debug", skip_all, fields(aggregate_id = %aggregate_id))]
async fn snapshot(
    conn: &mut Conn,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<SerializedSnapshot>, PersistenceError> {
    let row = sql::query("SELECT last_sequence, payload FROM aggregate_snapshots WHERE aggregate_type = $1 AND aggregate_id = $2")
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(connection_error)?;
    row.map(|row| {
        let last_sequence: i64 = row.get("last_sequence")?;
        Ok(SerializedSnapshot {
            aggregate_id: aggregate_id.to_string(),
            aggregate: row.get("payload")?,
            current_sequence: last_sequence as usize,
            current_snapshot: last_sequence as usize,
        })
    })
    .transpose()
    .map_err(|e: sqlx::Error| PersistenceError::DeserializationError(Box::new(e)))
}

async fn all_of_type(
    conn: &mut Conn,
    aggregate_type: &str,
) -> Result<Vec<SerializedEvent>, PersistenceError> {
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 ORDER BY position");
    let rows = sql::query(&sql)
        .bind(aggregate_type)
        .fetch_all(&mut *conn)
        .await
        .map_err(connection_error)?;
    rows.iter()
        .map(|row| StoredEvent::from_row(row).map(|e| e.to_serialized()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PersistenceError::DeserializationError(Box::new(e)))
}

async fn feed(events: Vec<SerializedEvent>) -> Result<ReplayStream, PersistenceError> {
    let (mut feed, stream) = ReplayStream::new(events.len().max(1));
    for event in events {
        feed.push(Ok(event)).await?;
    }
    Ok(stream)
}

/// Implements cqrs-es's repository over a way to get a connection, so the pool-backed
/// store and the transaction-bound store share every statement.
macro_rules! repository_over_connection {
    ($store:ty, $self_:ident => $conn:expr) => {
        impl PersistedEventRepository for $store {
            async fn get_events<A: Aggregate>(&$self_, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
                { let mut conn = $conn; select(&mut conn, A::TYPE, aggregate_id, 0).await }
            }

            async fn get_last_events<A: Aggregate>(&$self_, aggregate_id: &str, last_sequence: usize) -> Result<Vec<SerializedEvent>, PersistenceError> {
                { let mut conn = $conn; select(&mut conn, A::TYPE, aggregate_id, last_sequence as i64).await }
            }

            async fn get_snapshot<A: Aggregate>(&$self_, aggregate_id: &str) -> Result<Option<SerializedSnapshot>, PersistenceError> {
                { let mut conn = $conn; snapshot(&mut conn, A::TYPE, aggregate_id).await }
            }

            async fn persist<A: Aggregate>(&$self_, events: &[SerializedEvent], snapshot_update: Option<(String, Value, usize)>) -> Result<(), PersistenceError> {
                if events.is_empty() {
                    return Ok(());
                }
                $self_.append(events, snapshot_update).await
            }

            async fn stream_events<A: Aggregate>(&$self_, aggregate_id: &str) -> Result<ReplayStream, PersistenceError> {
                feed({ let mut conn = $conn; select(&mut conn, A::TYPE, aggregate_id, 0).await? }).await
            }

            async fn stream_all_events<A: Aggregate>(&$self_) -> Result<ReplayStream, PersistenceError> {
                feed({ let mut conn = $conn; all_of_type(&mut conn, A::TYPE).await? }).await
            }
        }
    };
}

repository_over_connection!(EventStore, self => self.pool.acquire().await.map_err(connection_error)?);
repository_over_connection!(TxEventStore<'_>, self => self.conn.lock().await);
