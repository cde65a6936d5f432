//! The backend seam on PostgreSQL: set-based statements with typed arrays, one round
//! trip each.

use std::collections::{HashMap, HashSet};

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use shop_log::{LogRecord, Position};
use shop_schemas::CloudEvent;
use uuid::Uuid;

use shop_sql::{self as sql, Conn, Dialect};

use super::OUTBOX_CHANNEL;
use super::{save_status, Status, CHECKPOINT_UPSERT, STATUS_UPSERT};
use crate::store::event::StoredEvent;
use crate::store::hook::InlineHook;

/// The columns of an append's events, as a [`sql::RowSet`] binds them (JSON as text).
const APPENDED_COLUMNS: [(&str, &str); 9] = [
    ("aggregate_type", "TEXT"),
    ("aggregate_id", "TEXT"),
    ("sequence", "BIGINT"),
    ("event_id", "UUID"),
    ("event_type", "TEXT"),
    ("event_version", "TEXT"),
    ("data", "JSONB"),
    ("metadata", "JSONB"),
    ("recorded_at", "TIMESTAMPTZ"),
];

/// [`APPENDED_COLUMNS`] as the rows of table `e` from `$1`…, built once (not per append).
static APPENDED_ROWS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| Dialect::Postgres.rows(1, "e", &APPENDED_COLUMNS));

/// The events of an append, one typed array per column (`$1`…), with their outbox rows
/// and an inline hook's CTE; the positions in sequence order. With `notify`, the final
/// select also wakes the relay with `NOTIFY outbox` (delivered at commit), for a relay
/// in another process.
fn append_statement(notify: bool, inline: Option<&InlineHook>) -> String {
    let wake = if notify {
        "CROSS JOIN (SELECT pg_notify('outbox', '')) AS wake"
    } else {
        ""
    };
    let hook = inline.map(|i| format!(", {}", i.cte)).unwrap_or_default();
    let rows = &*APPENDED_ROWS;
    format!(
        "WITH appended AS (
            INSERT INTO events (aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, data, metadata, recorded_at)
            SELECT aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, data, metadata, recorded_at
            FROM {rows}
            ORDER BY sequence
            RETURNING position, sequence, event_type, data),
        queued AS (INSERT INTO outbox (position) SELECT position FROM appended){hook}
        SELECT appended.position FROM appended {wake} ORDER BY appended.sequence"
    )
}

/// One round trip: the rows as typed arrays, the outbox rows and the wake-up (delivered
/// at commit) in the same statement.
pub(super) async fn insert_events(
    tx: &mut Conn,
    stored: &mut [StoredEvent],
    events: &[SerializedEvent],
    inline: Option<&InlineHook>,
    lost_race: &(dyn Fn(sqlx::Error) -> PersistenceError + Sync),
) -> Result<(), PersistenceError> {
    let connection_error = |e: sqlx::Error| PersistenceError::ConnectionError(Box::new(e));
    let mut rows = sql::RowSet::new(&APPENDED_COLUMNS);
    for (e, serialized) in stored.iter().zip(events) {
        rows.push([
            e.aggregate_type.as_str().into(),
            e.aggregate_id.as_str().into(),
            e.sequence.into(),
            e.event_id.into(),
            e.event_type.as_str().into(),
            e.event_version.as_str().into(),
            (&e.data).into(),
            (&serialized.metadata).into(),
            e.recorded_at.into(),
        ]);
    }
    // The relay active in this process is woken directly once the append commits; one
    // elsewhere (or none yet) by NOTIFY.
    let local = tx.notifies_in_process();
    let statement = append_statement(!local, inline);
    let mut query = sql::query_scalar(&statement);
    for arg in rows
        .into_args(Dialect::Postgres)
        .map_err(connection_error)?
    {
        query = query.bind(arg);
    }
    let positions: Vec<i64> = query.fetch_all(&mut *tx).await.map_err(lost_race)?;
    if local {
        tx.notify_on_commit(OUTBOX_CHANNEL)
            .await
            .map_err(connection_error)?;
    }
    if positions.len() != stored.len() {
        return Err(PersistenceError::UnknownError(
            format!("appended {} of {} events", positions.len(), stored.len()).into(),
        ));
    }
    for (event, position) in stored.iter_mut().zip(positions) {
        event.position = position;
    }
    Ok(())
}

/// An index lookup per outbox row, whatever the planner believes of the events table:
/// with `IN`, a table not yet analyzed (a fresh database, the first minute of a service)
/// or an outbox estimated at the whole `LIMIT` made it hash-join a sequential scan of
/// every event, each look (`shop bench`, Kafka: 786 scans of 2.6k rows a look in 10 s at
/// 400 orders/s, growing with the table).
///
/// One statement, so one snapshot: an event the batch holds was visible with every event
/// of its aggregate before it, and those at or below `after` are counted. The count
/// walks the outbox's index from its start, over the entries of removed rows (until
/// vacuum takes them): with `LIMIT` the planner takes the index, whose entries of rows
/// every transaction sees removed are skipped after the first walk, where the count
/// alone took a bitmap or sequential scan that visits them all in the table each time.
/// The rows removed first (a data-modifying `WITH`) are still seen, and not counted.
pub(super) async fn outbox_batch(
    conn: &mut Conn,
    after: i64,
    limit: i64,
    remove: &[i64],
) -> Result<super::OutboxBatch, sqlx::Error> {
    let removed = removed(3);
    let sql = format!(
        "WITH gone AS (DELETE FROM outbox WHERE {removed})
         SELECT e.*, b.behind FROM (
                   SELECT count(*) - cardinality($3::bigint[]) AS behind FROM (
                       SELECT 1 FROM outbox WHERE position <= $2 ORDER BY position
                       LIMIT $1 + 1 + cardinality($3::bigint[])) AS below) AS b
                 LEFT JOIN LATERAL (SELECT position FROM outbox WHERE position > $2 ORDER BY position LIMIT $1) AS o ON true
                 LEFT JOIN LATERAL (SELECT {RELAY_COLUMNS} FROM events WHERE events.position = o.position LIMIT 1) AS e ON true
                 ORDER BY o.position"
    );
    let mut rows = sql::query(&sql)
        .bind(limit)
        .bind(after)
        .bind(sql::Arg::I64List(remove.to_vec()))
        .fetch_all(&mut *conn)
        .await?;
    let behind = match rows.first() {
        Some(row) => row.get("behind")?,
        None => 0,
    };
    // An empty batch is the count's row alone.
    if rows.len() == 1 && rows[0].get::<Option<i64>>("position")?.is_none() {
        rows.clear();
    }
    Ok(super::OutboxBatch { rows, behind })
}

/// The outbox rows of the published positions in parameter `$n` (ascending), bounded by
/// the first and the last: with `= ANY` alone, the planner read every row of an outbox
/// that had grown (a seq scan of 10,000 rows for 500, by `EXPLAIN`).
pub(super) fn removed(n: usize) -> String {
    format!("position BETWEEN ${n}[1] AND ${n}[cardinality(${n})] AND position = ANY(${n})")
}

/// [`crate::store::EVENT_COLUMNS`] with the data as the JSON text stored, which the
/// relay publishes as it is.
const RELAY_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, data::text AS data, metadata, recorded_at";

/// [`super::open_batch`]: a row per checkpoint, per fresh event id, and one for the
/// replay question when `$3`.
pub(super) const OPEN_BATCH: &str = "WITH fresh AS (
        INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::uuid[])
        ON CONFLICT DO NOTHING RETURNING event_id
    )
    SELECT 'checkpoint' AS kind, topic, partition, next_offset, NULL::uuid AS event_id, NULL::boolean AS replay
      FROM consumer_checkpoints WHERE consumer = $1
    UNION ALL SELECT 'fresh', NULL, NULL, NULL, event_id, NULL FROM fresh
    UNION ALL SELECT 'replay', NULL, NULL, NULL, NULL, EXISTS (SELECT 1 FROM replay_only WHERE consumer = $1) WHERE $3";

pub(super) const INSERT_PROCESSED_IDS: &str = "INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id";

/// An upsert that changes nothing locks each partition's row, creating a missing one
/// (offset 0, the same as none), in a fixed order so that two members never deadlock.
pub(super) async fn lock_checkpoints(
    tx: &mut Conn,
    consumer: &str,
    records: &[LogRecord],
) -> Result<Vec<sql::Row>, sqlx::Error> {
    let partitions: std::collections::BTreeSet<(&str, i32)> = records
        .iter()
        .map(|r| (r.topic.as_str(), r.partition))
        .collect();
    let (topics, numbers): (Vec<String>, Vec<i64>) = partitions
        .into_iter()
        .map(|(t, p)| (t.to_string(), i64::from(p)))
        .unzip();
    sql::query(
        "INSERT INTO consumer_checkpoints (consumer, topic, partition, next_offset)
                 SELECT $1, p.topic, p.partition, 0 FROM unnest($2::text[], $3::bigint[]) AS p(topic, partition)
                 ORDER BY p.topic, p.partition
                 ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = consumer_checkpoints.next_offset
                 RETURNING topic, partition, next_offset",
    )
    .bind(consumer)
    .bind(sql::Arg::TextList(topics))
    .bind(sql::Arg::I64List(numbers))
    .fetch_all(&mut *tx)
    .await
}

/// Every partition's checkpoint and the status in one statement (one round trip per
/// batch); the status alone when there is no partition to checkpoint.
pub(super) async fn save_progress(
    tx: &mut Conn,
    consumer: &str,
    positions: &[Position],
    status: Status<'_>,
) -> Result<(), sqlx::Error> {
    if positions.is_empty() {
        return save_status(tx, consumer, status).await;
    }
    const COLUMNS: [(&str, &str); 3] = [
        ("topic", "TEXT"),
        ("partition", "INTEGER"),
        ("next_offset", "BIGINT"),
    ];
    let mut rows = sql::RowSet::new(&COLUMNS);
    for p in positions {
        rows.push([
            p.topic.as_str().into(),
            p.partition.into(),
            p.next_offset.into(),
        ]);
    }
    rows.execute(
        tx,
        vec![
            consumer.into(),
            status.applied.into(),
            status.last_event_at.into(),
            status.error.map(str::to_string).into(),
        ],
        |r| {
            format!(
                "WITH checkpoints AS (
                             INSERT INTO consumer_checkpoints (consumer, topic, partition, next_offset)
                             SELECT $1, r.topic, r.partition, r.next_offset FROM {r} WHERE true {CHECKPOINT_UPSERT})
                         {STATUS_UPSERT}"
            )
        },
    )
    .await?;
    Ok(())
}

/// One statement for the whole batch: each aggregate's recorded sequence and the
/// batch's highest for it ([`crate::consistency::unapplied`]).
pub(super) async fn record_applied_versions(
    tx: &mut Conn,
    consumer: &str,
    events: &[&CloudEvent],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    // Each aggregate's highest sequence in the batch: what it will have applied.
    let mut highest: HashMap<(&'static str, &str), i64> = HashMap::new();
    for event in events {
        if let Some(service) = event.service() {
            let sequence = highest
                .entry((service.name(), event.subject.as_str()))
                .or_default();
            *sequence = (*sequence).max(event.sequence as i64);
        }
    }
    // The recorded sequences, before this batch, of the aggregates that have one.
    let mut applied: HashMap<(String, String), i64> = HashMap::new();
    if !highest.is_empty() {
        const COLUMNS: [(&str, &str); 3] = [
            ("source", "TEXT"),
            ("subject", "TEXT"),
            ("sequence", "BIGINT"),
        ];
        let mut rows = sql::RowSet::new(&COLUMNS);
        for ((source, subject), sequence) in &highest {
            rows.push([(*source).into(), (*subject).into(), (*sequence).into()]);
        }
        let from = Dialect::Postgres.rows(2, "r", &COLUMNS);
        // One statement: the recorded sequences (`known`: a primary-key lookup per
        // aggregate, `LIMIT 1` keeping the planner from a hash join over every row the
        // consumer has), a plain insert for aggregates seen for the first time (no
        // conflict to arbitrate: half the cost of an upsert), and the higher sequence
        // for the others. All three read the statement's snapshot, so `known` is what
        // was recorded before it. The caller holds the batch's partitions
        // (checkpoints locked), so no other member records these aggregates meanwhile.
        let sql = format!(
            "WITH r AS (SELECT * FROM {from}),
             known AS (SELECT r.source, r.subject, r.sequence, a.sequence AS applied FROM r
                       CROSS JOIN LATERAL (SELECT sequence FROM applied_versions
                                           WHERE consumer = $1 AND source = r.source AND subject = r.subject
                                           LIMIT 1) a),
             added AS (INSERT INTO applied_versions (consumer, source, subject, sequence)
                       SELECT $1, r.source, r.subject, r.sequence FROM r
                       WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.source = r.source AND k.subject = r.subject)),
             moved AS (INSERT INTO applied_versions (consumer, source, subject, sequence)
                       SELECT $1, source, subject, sequence FROM known WHERE sequence > applied
                       ON CONFLICT (consumer, source, subject) DO UPDATE SET sequence = EXCLUDED.sequence)
             SELECT source, subject, applied FROM known"
        );
        // Replanned: a lookup per aggregate into a table that grows (see
        // `Query::replanned`).
        let mut query = sql::query_as::<(String, String, i64)>(&sql)
            .replanned()
            .bind(consumer);
        for arg in rows.into_args(Dialect::Postgres)? {
            query = query.bind(arg);
        }
        applied = query
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(source, subject, sequence)| ((source, subject), sequence))
            .collect();
    }
    // From here on, the latest sequence seen per aggregate (looked up once per
    // aggregate, not per event).
    let mut latest = highest;
    for ((source, subject), seen) in latest.iter_mut() {
        *seen = applied
            .get(&(source.to_string(), subject.to_string()))
            .copied()
            .unwrap_or(0);
    }
    let mut fresh = HashSet::with_capacity(events.len());
    for event in events {
        let Some(service) = event.service() else {
            fresh.insert(event.id);
            continue;
        };
        let seen = latest
            .get_mut(&(service.name(), event.subject.as_str()))
            .expect("every aggregate of the batch is listed");
        if event.sequence as i64 > *seen {
            *seen = event.sequence as i64;
            fresh.insert(event.id);
        }
    }
    Ok(fresh)
}
