//! The backend seam on SQLite: a statement costs no round trip (the database is in
//! the process), so statements go one row at a time and lists travel as JSON.

use std::collections::HashSet;

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use shop_log::Position;
use shop_schemas::CloudEvent;
use uuid::Uuid;

use shop_sql::{self as sql, Conn};

use super::OUTBOX_CHANNEL;
use super::{save_status, Status, CHECKPOINT_UPSERT};
use crate::store::event::{StoredEvent, EVENT_COLUMNS};

/// One insert per event and its outbox row, then the in-process wake-up at commit.
pub(super) async fn insert_events(
    tx: &mut Conn,
    stored: &mut [StoredEvent],
    events: &[SerializedEvent],
    lost_race: &(dyn Fn(sqlx::Error) -> PersistenceError + Sync),
) -> Result<(), PersistenceError> {
    let connection_error = |e: sqlx::Error| PersistenceError::ConnectionError(Box::new(e));
    for (event, serialized) in stored.iter_mut().zip(events) {
        event.position = sql::query_scalar(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, data, metadata, recorded_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING position",
        )
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .bind(event.event_id)
        .bind(&event.event_type)
        .bind(&event.event_version)
        .bind(event.data.clone())
        .bind(serialized.metadata.clone())
        .bind(event.recorded_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(lost_race)?;
        sql::query("INSERT INTO outbox (position) VALUES ($1)")
            .bind(event.position)
            .execute(&mut *tx)
            .await
            .map_err(connection_error)?;
    }
    tx.notify_on_commit(OUTBOX_CHANNEL)
        .await
        .map_err(connection_error)?;
    Ok(())
}

/// The removal, the batch, then the count: an event that commits after the count is
/// not in the batch, nor any later event of its aggregate.
pub(super) async fn outbox_batch(
    conn: &mut Conn,
    after: i64,
    limit: i64,
    remove: &[i64],
) -> Result<super::OutboxBatch, sqlx::Error> {
    if !remove.is_empty() {
        super::remove_from_outbox(conn, remove).await?;
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE position IN (SELECT position FROM outbox WHERE position > $2 ORDER BY position LIMIT $1) ORDER BY position"
    );
    let rows = sql::query(&sql)
        .bind(limit)
        .bind(after)
        .fetch_all(&mut *conn)
        .await?;
    let behind = sql::query_scalar("SELECT count(*) FROM outbox WHERE position <= $1")
        .bind(after)
        .fetch_one(&mut *conn)
        .await?;
    Ok(super::OutboxBatch { rows, behind })
}

pub(super) const INSERT_PROCESSED_IDS: &str = "INSERT INTO processed_events (consumer, event_id) SELECT $1, value FROM json_each($2) WHERE true ON CONFLICT DO NOTHING RETURNING event_id";

/// One statement per event (a row comes back only when the sequence is above the
/// recorded one).
pub(super) async fn record_applied_versions(
    tx: &mut Conn,
    consumer: &str,
    events: &[&CloudEvent],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    // No round trip to save: one statement per event (a row comes back only when
    // the sequence is above the recorded one).
    let mut fresh = HashSet::with_capacity(events.len());
    for event in events {
        let Some(service) = event.service() else {
            fresh.insert(event.id);
            continue;
        };
        let recorded = sql::query_scalar::<i64>(
            "INSERT INTO applied_versions (consumer, source, subject, sequence) VALUES ($1, $2, $3, $4)
             ON CONFLICT (consumer, source, subject) DO UPDATE SET sequence = EXCLUDED.sequence
             WHERE EXCLUDED.sequence > applied_versions.sequence
             RETURNING sequence",
        )
        .bind(consumer)
        .bind(service.name())
        .bind(event.subject.as_str())
        .bind(event.sequence as i64)
        .fetch_optional(&mut *tx)
        .await?;
        if recorded.is_some() {
            fresh.insert(event.id);
        }
    }
    Ok(fresh)
}

/// The checkpoints one by one (no round trip, no JSON to read), then the status.
pub(super) async fn save_progress(
    tx: &mut Conn,
    consumer: &str,
    positions: &[Position],
    status: Status<'_>,
) -> Result<(), sqlx::Error> {
    for p in positions {
        sql::query(&format!(
            "INSERT INTO consumer_checkpoints (consumer, topic, partition, next_offset) VALUES ($1, $2, $3, $4) {CHECKPOINT_UPSERT}"
        ))
        .bind(consumer)
        .bind(&p.topic)
        .bind(p.partition)
        .bind(p.next_offset)
        .execute(&mut *tx)
        .await?;
    }
    save_status(tx, consumer, status).await
}
