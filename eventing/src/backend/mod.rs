//! The backend seam: the few operations of the event-sourcing core whose SQL differs
//! between PostgreSQL ([`postgres`]) and SQLite ([`sqlite`]). The core (store, relay,
//! consumer, checkpoints, consistency) calls these and never asks which backend runs;
//! each picks its implementation from the connection it is given, whose backend the
//! pool fixed when it opened. What both backends spell alike stays in the core, and the
//! spelling helpers of the portable SQL layer ([`shop_sql::Dialect`]) stay there.
//!
//! Enum dispatch, not trait objects: the set of backends is closed (the two
//! [`shop_sql::Conn`] carries), every operation is async on the hot path (each append,
//! each consumer batch), which a `dyn` trait would box, and the connection already
//! knows its backend, so nothing has to be threaded through the public constructors.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use cqrs_es::persist::{PersistenceError, SerializedEvent};
use shop_log::{LogRecord, Position};
use shop_schemas::CloudEvent;
use uuid::Uuid;

use shop_sql::{self as sql, Conn, Dialect, Pool};

use crate::store::event::StoredEvent;
use crate::store::hook::{AppendHook, InlineHook};

mod postgres;
mod sqlite;

/// The channel the relay listens on; every append notifies it (`NOTIFY` on PostgreSQL,
/// the in-process commit signal where the relay runs in the same process).
pub const OUTBOX_CHANNEL: &str = "outbox";

/// The backend of a pool or connection, for the capabilities the core plans by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backend(Dialect);

impl Backend {
    pub(crate) fn of(conn: &Conn) -> Self {
        Backend(conn.dialect())
    }

    pub(crate) fn of_pool(pool: &Pool) -> Self {
        Backend(pool.dialect())
    }

    /// The forms of `hook` this backend runs inside the append statement
    /// ([`AppendHook::inline_postgres`] on PostgreSQL; none on SQLite).
    pub(crate) fn inline_hooks(self, hook: &dyn AppendHook) -> &[InlineHook] {
        match self.0 {
            Dialect::Postgres => hook.inline_postgres(),
            Dialect::Sqlite => &[],
        }
    }

    /// Whether an append without hook statements or snapshot is one statement, so it
    /// needs no transaction (PostgreSQL: events, outbox rows and wake-up in one).
    pub(crate) fn appends_in_one_statement(self) -> bool {
        matches!(self.0, Dialect::Postgres)
    }

    /// Whether each statement costs a round trip to a server, so that applying a batch
    /// of events with a few set-based statements pays (PostgreSQL). On SQLite a
    /// statement costs no round trip, and reading JSON rows costs more than the
    /// statements it saves.
    pub(crate) fn statements_cost_round_trips(self) -> bool {
        matches!(self.0, Dialect::Postgres)
    }
}

/// Inserts an append's events (`stored`, from `events`) with their outbox rows and
/// the relay's wake-up (at commit), running `inline`'s CTE where the backend has it, and
/// sets each event's position. `lost_race` maps a failed insert of the events (a lost
/// concurrency race, an inline hook's refusal, or else a connection error).
pub(crate) async fn insert_events(
    tx: &mut Conn,
    stored: &mut [StoredEvent],
    events: &[SerializedEvent],
    inline: Option<&InlineHook>,
    lost_race: &(dyn Fn(sqlx::Error) -> PersistenceError + Sync),
) -> Result<(), PersistenceError> {
    match tx.dialect() {
        Dialect::Postgres => postgres::insert_events(tx, stored, events, inline, lost_race).await,
        Dialect::Sqlite => sqlite::insert_events(tx, stored, events, lost_race).await,
    }
}

/// The relay's next batch: the rows of up to `limit` events waiting in the outbox after
/// position `after`, in position order ([`crate::store::EVENT_COLUMNS`], their `data` as
/// the JSON text stored), and how many events waited at or below `after` when they were
/// read. `remove` (published events, all at or below `after`) leaves the outbox first,
/// in the same statement on PostgreSQL.
pub(crate) struct OutboxBatch {
    pub rows: Vec<sql::Row>,
    /// Events in the outbox at or below `after` as the batch was read, up to `limit` + 1:
    /// the relay's own batch not yet removed, and any event that committed after the
    /// relay read past its position (positions are taken at insert, not at commit).
    pub behind: i64,
}

pub(crate) async fn outbox_batch(
    conn: &mut Conn,
    after: i64,
    limit: i64,
    remove: &[i64],
) -> Result<OutboxBatch, sqlx::Error> {
    // The batch is read as the outbox was before the removal: it must not hold them.
    debug_assert!(remove.is_sorted() && remove.iter().all(|p| *p <= after));
    match conn.dialect() {
        Dialect::Postgres => postgres::outbox_batch(conn, after, limit, remove).await,
        Dialect::Sqlite => sqlite::outbox_batch(conn, after, limit, remove).await,
    }
}

/// Removes published events (`positions`, ascending) from the outbox.
pub(crate) async fn remove_from_outbox(
    conn: &mut Conn,
    positions: &[i64],
) -> Result<(), sqlx::Error> {
    debug_assert!(positions.is_sorted());
    let delete = match conn.dialect() {
        Dialect::Postgres => format!("DELETE FROM outbox WHERE {}", postgres::removed(1)),
        Dialect::Sqlite => format!(
            "DELETE FROM outbox WHERE position {}",
            Dialect::Sqlite.in_list(1)
        ),
    };
    sql::query(&delete)
        .bind(sql::Arg::I64List(positions.to_vec()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records the event ids a consumer applies (`processed_events`) and returns those it
/// had not recorded before, in one statement.
pub(crate) async fn insert_processed_ids(
    tx: &mut Conn,
    consumer: &str,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let insert_ids = match tx.dialect() {
        Dialect::Postgres => postgres::INSERT_PROCESSED_IDS,
        Dialect::Sqlite => sqlite::INSERT_PROCESSED_IDS,
    };
    Ok(sql::query_scalar(insert_ids)
        .bind(consumer)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect())
}

/// What a reaction's batch learns before it applies anything, asked in one round trip
/// by [`open_batch`].
pub(crate) struct OpenedBatch {
    /// Each partition's next offset.
    pub checkpoints: std::collections::BTreeMap<(String, i32), i64>,
    /// The event ids not recorded before (recorded now, in the batch's transaction).
    pub fresh: HashSet<Uuid>,
    /// Whether imported events wait to be replayed by the consumer (when asked).
    pub replay_pending: Option<bool>,
}

/// The start of a batch of a consumer that deduplicates by event id, where statements
/// cost round trips (PostgreSQL): its checkpoints, the ids of `ids` it had not recorded
/// (recorded now) and, when `ask_replay`, whether imported events wait for it — one
/// statement where there were three. Ids of records behind a checkpoint are recorded
/// too (they were applied, so theirs are there already); the caller skips those records
/// by their offsets, as before.
pub(crate) async fn open_batch(
    tx: &mut Conn,
    consumer: &str,
    ids: &[Uuid],
    ask_replay: bool,
) -> Result<OpenedBatch, sqlx::Error> {
    let rows = sql::query(postgres::OPEN_BATCH)
        .bind(consumer)
        .bind(ids)
        .bind(ask_replay)
        .fetch_all(&mut *tx)
        .await?;
    let mut opened = OpenedBatch {
        checkpoints: std::collections::BTreeMap::new(),
        fresh: HashSet::new(),
        replay_pending: None,
    };
    for row in &rows {
        match row.get::<String>("kind")?.as_str() {
            "checkpoint" => {
                opened.checkpoints.insert(
                    (row.get::<String>("topic")?, row.get::<i32>("partition")?),
                    row.get::<i64>("next_offset")?,
                );
            }
            "fresh" => {
                opened.fresh.insert(row.get::<Uuid>("event_id")?);
            }
            _ => opened.replay_pending = Some(row.get::<bool>("replay")?),
        }
    }
    Ok(opened)
}

/// The events of a batch above the sequence a consumer recorded for their aggregates,
/// recorded as applied ([`crate::consistency::unapplied`]).
pub(crate) async fn record_applied_versions(
    tx: &mut Conn,
    consumer: &str,
    events: &[&CloudEvent],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    match tx.dialect() {
        Dialect::Postgres => postgres::record_applied_versions(tx, consumer, events).await,
        Dialect::Sqlite => sqlite::record_applied_versions(tx, consumer, events).await,
    }
}

/// A consumer's checkpoint rows (`topic`, `partition`, `next_offset`); with `lock`,
/// those of the partitions of `records` held until the transaction ends
/// ([`crate::checkpoint`] tells why).
pub(crate) async fn load_checkpoints(
    tx: &mut Conn,
    consumer: &str,
    records: &[LogRecord],
    lock: bool,
) -> Result<Vec<sql::Row>, sqlx::Error> {
    match tx.dialect() {
        Dialect::Postgres if lock => postgres::lock_checkpoints(tx, consumer, records).await,
        // SQLite: `BEGIN IMMEDIATE` serialises transactions anyway.
        Dialect::Postgres | Dialect::Sqlite => select_checkpoints(tx, consumer).await,
    }
}

async fn select_checkpoints(tx: &mut Conn, consumer: &str) -> Result<Vec<sql::Row>, sqlx::Error> {
    sql::query("SELECT topic, partition, next_offset FROM consumer_checkpoints WHERE consumer = $1")
        .bind(consumer)
        .fetch_all(&mut *tx)
        .await
}

/// A consumer's progress after a batch: every partition's next offset (never moved
/// back) and its status (events applied, the last event's time, the last error).
pub(crate) async fn save_progress(
    tx: &mut Conn,
    consumer: &str,
    positions: &[Position],
    status: Status<'_>,
) -> Result<(), sqlx::Error> {
    match tx.dialect() {
        Dialect::Postgres => postgres::save_progress(tx, consumer, positions, status).await,
        Dialect::Sqlite => sqlite::save_progress(tx, consumer, positions, status).await,
    }
}

/// What a batch adds to a consumer's status.
#[derive(Clone, Copy)]
pub(crate) struct Status<'a> {
    pub applied: i64,
    pub last_event_at: Option<DateTime<Utc>>,
    pub error: Option<&'a str>,
}

/// A checkpoint's upsert: the offset never moves back.
const CHECKPOINT_UPSERT: &str = "ON CONFLICT (consumer, topic, partition) DO UPDATE
             SET next_offset = CASE WHEN consumer_checkpoints.next_offset > EXCLUDED.next_offset
                                    THEN consumer_checkpoints.next_offset ELSE EXCLUDED.next_offset END,
                 updated_at = CURRENT_TIMESTAMP";

/// The status upsert, `$1`…`$4`: consumer, applied, last event's time, error.
const STATUS_UPSERT: &str = "INSERT INTO consumer_status (consumer, events_applied, last_event_at, last_error) VALUES ($1, $2, $3, $4)
         ON CONFLICT (consumer) DO UPDATE SET
           events_applied = consumer_status.events_applied + EXCLUDED.events_applied,
           last_event_at = CASE WHEN EXCLUDED.last_event_at IS NULL OR consumer_status.last_event_at > EXCLUDED.last_event_at
                                THEN consumer_status.last_event_at ELSE EXCLUDED.last_event_at END,
           last_error = COALESCE(EXCLUDED.last_error, consumer_status.last_error),
           updated_at = CURRENT_TIMESTAMP";

async fn save_status(tx: &mut Conn, consumer: &str, status: Status<'_>) -> Result<(), sqlx::Error> {
    sql::query(STATUS_UPSERT)
        .bind(consumer)
        .bind(status.applied)
        .bind(status.last_event_at)
        .bind(status.error)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
