//! A consumer's checkpoints in its own database: read (under a lock where members of a
//! group may overlap) and saved with each batch's effects, and its progress as the
//! operations API shows it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use shop_log::{LogRecord, Position};
use shop_sql::{self as sql, Conn, Pool};

use crate::backend;

/// The consumer's checkpoints; with `lock`, those of the partitions of `records` are
/// held until the transaction ends.
///
/// Several members of a consumer's group may hold records of one partition at once: a
/// rebalance hands a partition to another member while the previous one still applies
/// what it had read. A consumer that records applied versions dedups with a plain read,
/// which alone would let both apply such a record, so it reads its checkpoints under a
/// lock: on PostgreSQL, an upsert that changes nothing locks each partition's row,
/// creating a missing one (offset 0, the same as none), in a fixed order so that two
/// members never deadlock; the second member waits for the first to commit and then
/// sees its records as behind. (A consumer that inserts processed event ids needs no
/// lock: the second insert of an id waits for the first and then finds it. On SQLite,
/// `BEGIN IMMEDIATE` serialises transactions anyway.)
pub(crate) async fn load_checkpoints(
    tx: &mut Conn,
    consumer: &str,
    records: &[LogRecord],
    lock: bool,
) -> Result<BTreeMap<(String, i32), i64>, sqlx::Error> {
    let rows = backend::load_checkpoints(tx, consumer, records, lock).await?;
    rows.iter()
        .map(|r| {
            Ok((
                (r.get::<String>("topic")?, r.get::<i32>("partition")?),
                r.get::<i64>("next_offset")?,
            ))
        })
        .collect()
}

/// Saves each partition's next offset (never moved back) and adds the batch to the
/// consumer's status — in one statement where the backend has round trips to save.
pub(crate) async fn save_progress(
    tx: &mut Conn,
    consumer: &str,
    positions: &[Position],
    applied: i64,
    last_event_at: Option<DateTime<Utc>>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let status = backend::Status {
        applied,
        last_event_at,
        error,
    };
    backend::save_progress(tx, consumer, positions, status).await
}

/// A consumer's progress, as its database records it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsumerProgress {
    pub events_applied: i64,
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub positions: Vec<Position>,
    /// How often the consumer found its checkpoint behind the records it read, and the
    /// last time ([`CheckpointGap`]).
    pub checkpoint_gaps: i64,
    pub last_checkpoint_gap: Option<CheckpointGap>,
}

/// A time a consumer found a partition's checkpoint behind the records it read, and
/// read again from the checkpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointGap {
    pub topic: String,
    pub partition: i32,
    pub checkpoint: i64,
    pub read_offset: i64,
    pub at: DateTime<Utc>,
}

impl ConsumerProgress {
    /// Whether the consumer is still applying again what its last checkpoint gap made it
    /// read again (its checkpoint has not reached the offset it had read up to then).
    pub fn recovering(&self) -> bool {
        self.last_checkpoint_gap.as_ref().is_some_and(|gap| {
            self.positions
                .iter()
                .find(|p| p.topic == gap.topic && p.partition == gap.partition)
                .is_none_or(|p| p.next_offset < gap.read_offset)
        })
    }
}

/// Reads a consumer's progress from its database.
///
/// # Errors
/// The database fails.
pub async fn progress(pool: &Pool, consumer: &str) -> Result<ConsumerProgress, sqlx::Error> {
    let status = sql::query(
        "SELECT events_applied, last_event_at, last_error FROM consumer_status WHERE consumer = $1",
    )
    .bind(consumer)
    .fetch_optional(pool)
    .await?;
    let rows = sql::query("SELECT topic, partition, next_offset FROM consumer_checkpoints WHERE consumer = $1 ORDER BY topic, partition")
        .bind(consumer)
        .fetch_all(pool)
        .await?;
    let gaps = sql::query(
        "SELECT topic, partition, checkpoint, read_offset, at FROM consumer_rewinds WHERE consumer = $1 ORDER BY at DESC",
    )
    .bind(consumer)
    .fetch_all(pool)
    .await?;
    let last_checkpoint_gap = match gaps.first() {
        Some(r) => Some(CheckpointGap {
            topic: r.get("topic")?,
            partition: r.get("partition")?,
            checkpoint: r.get("checkpoint")?,
            read_offset: r.get("read_offset")?,
            at: r.get("at")?,
        }),
        None => None,
    };
    let (events_applied, last_event_at, last_error) = match &status {
        Some(r) => (
            r.get("events_applied")?,
            r.get("last_event_at")?,
            r.get("last_error")?,
        ),
        None => (0, None, None),
    };
    Ok(ConsumerProgress {
        events_applied,
        last_event_at,
        last_error,
        checkpoint_gaps: gaps.len() as i64,
        last_checkpoint_gap,
        positions: rows
            .iter()
            .map(|r| {
                Ok(Position {
                    topic: r.get("topic")?,
                    partition: r.get("partition")?,
                    next_offset: r.get("next_offset")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?,
    })
}
