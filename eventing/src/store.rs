//! The event store: cqrs-es's persistence over PostgreSQL or SQLite ([`shop_sql`]),
//! with the outbox.
//!
//! One transaction per command appends the events (unique `(aggregate_type,
//! aggregate_id, sequence)`: the optimistic concurrency check), records them in the
//! outbox for the relay, lets the service's [`AppendHook`] maintain its private lookup
//! tables (e.g. unique SKUs) and notifies the relay — all or nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use futures::future::BoxFuture;
use serde_json::Value;
use shop_schemas::{CloudEvent, EventMetadata, Service};
use sqlx::PgConnection;
use uuid::Uuid;

use shop_sql::{self as sql, Conn, Pool};

/// The event-store tables; apply with [`shop_sql::db::open`].
pub const SCHEMA: &str = include_str!("../sql/event_store.sql");

/// The channel the relay listens on; every append notifies it.
pub const OUTBOX_CHANNEL: &str = "outbox";

/// A service's private, transactional reaction to its own appends (unique keys, lookup
/// tables). It runs inside the append transaction: its failure aborts the append.
pub trait AppendHook: Send + Sync {
    fn on_append<'a>(
        &'a self,
        tx: &'a mut Conn,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), HookError>>;

    /// Whether events of this type need the hook. An append none of whose events does
    /// (and that writes no snapshot) is a single statement, outside any transaction.
    fn touches(&self, _event_type: &str) -> bool {
        true
    }

    /// The hook's work as part of the append statement itself (PostgreSQL): the first
    /// of these whose [`InlineHook::event_types`] hold every hooked event of an append
    /// runs in its statement, so the append is one statement, outside any transaction
    /// when it writes no snapshot. The narrower forms go first (they plan and run
    /// cheaper).
    fn inline_postgres(&self) -> &[InlineHook] {
        &[]
    }
}

/// An [`AppendHook`]'s work written as a data-modifying CTE of the append statement.
pub struct InlineHook {
    /// `name AS (…)`, over `appended` (the new events' `event_type` and `data`). A
    /// constraint it violates aborts the append; a `CHECK` violation is the hook's
    /// refusal ([`HookError::Refused`]).
    pub cte: &'static str,
    /// The event types it covers; an append with another hooked type runs
    /// [`AppendHook::on_append`] instead.
    pub event_types: &'static [&'static str],
}

/// How an append runs its hook: not at all, inside the append statement, or as
/// statements of its own after it.
#[derive(Clone, Copy)]
enum HookWork<'a> {
    None,
    Inline(&'a InlineHook),
    Statements(&'a dyn AppendHook),
}

impl<'a> HookWork<'a> {
    fn of(
        hook: Option<&'a dyn AppendHook>,
        dialect: sql::Dialect,
        events: &[SerializedEvent],
    ) -> Self {
        let Some(hook) = hook else {
            return HookWork::None;
        };
        let touched = || {
            events
                .iter()
                .map(|e| e.event_type.as_str())
                .filter(|t| hook.touches(t))
        };
        if touched().next().is_none() {
            return HookWork::None;
        }
        if dialect != sql::Dialect::Postgres {
            return HookWork::Statements(hook);
        }
        hook.inline_postgres()
            .iter()
            .find(|inline| touched().all(|t| inline.event_types.contains(&t)))
            .map_or(HookWork::Statements(hook), HookWork::Inline)
    }
}

impl StoredEvent {
    /// The event as the service's event enum (`{"<event_type>": data}`), for hooks.
    ///
    /// # Errors
    /// The stored data does not fit the enum: the append is refused.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, HookError> {
        shop_schemas::decode_event(&self.event_type, &self.data)
            .map_err(|e| HookError::Refused(format!("{}: {e}", self.event_type)))
    }
}

/// A refusal from an [`AppendHook`]: a unique key is taken, or the database failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{what} is already taken")]
    Taken { what: String },
    /// The append lacks something the hook needs (a bug in the caller).
    #[error("append refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// An event as appended: what the hook sees and what the relay publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    pub data: Value,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// The event as a CloudEvent of the given service.
    pub fn to_cloud_event(&self, service: Service) -> CloudEvent {
        let version: u32 = self.event_version.parse().unwrap_or(1);
        CloudEvent {
            specversion: shop_schemas::envelope::SPEC_VERSION.to_string(),
            id: self.event_id,
            source: service.source(),
            ty: format!("shop.{}.{}", service.name(), self.event_type),
            subject: self.aggregate_id.clone(),
            time: self.recorded_at,
            dataschema: shop_schemas::dataschema(service, &self.event_type, version),
            datacontenttype: shop_schemas::envelope::CONTENT_TYPE.to_string(),
            sequence: self.sequence as u64,
            correlationid: self.metadata.correlation_id.clone(),
            causationid: self.metadata.causation_id.clone(),
            traceparent: self.metadata.traceparent.clone(),
            data: self.data.clone(),
        }
    }

    pub(crate) fn from_row(row: &sql::Row) -> Result<Self, sqlx::Error> {
        let metadata: Value = row.get("metadata")?;
        let metadata: HashMap<String, String> =
            serde_json::from_value(metadata).unwrap_or_default();
        Ok(StoredEvent {
            position: row.get("position")?,
            aggregate_type: row.get("aggregate_type")?,
            aggregate_id: row.get("aggregate_id")?,
            sequence: row.get("sequence")?,
            event_id: row.get("event_id")?,
            event_type: row.get("event_type")?,
            event_version: row.get("event_version")?,
            data: row.get("data")?,
            metadata: EventMetadata::from_map(&metadata),
            recorded_at: row.get("recorded_at")?,
        })
    }

    /// The cqrs-es form: the data wrapped again in its enum tag.
    fn to_serialized(&self) -> SerializedEvent {
        let mut tagged = serde_json::Map::with_capacity(1);
        tagged.insert(self.event_type.clone(), self.data.clone());
        let metadata: HashMap<String, String> = self.metadata.to_map();
        SerializedEvent {
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence as usize,
            aggregate_type: self.aggregate_type.clone(),
            event_type: self.event_type.clone(),
            event_version: self.event_version.clone(),
            payload: Value::Object(tagged),
            metadata: serde_json::to_value(metadata).unwrap_or(Value::Null),
        }
    }
}

pub(crate) const EVENT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, data, metadata, recorded_at";

/// The event repository for cqrs-es on either backend ([`shop_sql`]), with outbox and
/// append hook.
#[derive(Clone)]
pub struct EventStore {
    pool: Pool,
    hook: Option<Arc<dyn AppendHook>>,
    /// Appends through the pool: their group commit, started on first use.
    group: Arc<std::sync::OnceLock<GroupCommit>>,
    /// The store's own PostgreSQL connection for an append alone that is one statement.
    kept: Arc<std::sync::Mutex<Kept>>,
}

/// A connection an [`EventStore`] keeps between single-statement appends, so they skip
/// the pool's check-out (a round trip to test the connection) and its check-in (another,
/// in the background) — half of the round trips of a restock. One append uses it at a
/// time; another meanwhile goes through the pool. It is detached from the pool (one
/// connection beyond the pool's size per store), so closing the pool never waits for it;
/// it closes with the store.
#[derive(Default)]
struct Kept {
    /// The connection and when its last append ended.
    idle: Option<(PgConnection, Instant)>,
    busy: bool,
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let (Some((conn, _)), Ok(runtime)) =
            (self.idle.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(sqlx::Connection::close(conn));
        }
    }
}

/// A kept connection idle longer than this is tested before it is used, as the pool
/// tests every connection it hands out (a server restart closes it).
const KEPT_TEST_AFTER: Duration = Duration::from_secs(1);

/// The [`Kept`] connection taken for one append; the append hands it back with
/// [`Borrowed::keep`] (after success or the database's refusal), or drops it (a lost
/// connection, a cancelled append), after which the next append opens a new one.
struct Borrowed<'a> {
    kept: &'a std::sync::Mutex<Kept>,
}

impl Borrowed<'_> {
    /// Hands the connection back; dropping `self` then frees the slot.
    fn keep(self, conn: PgConnection) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.idle = Some((conn, Instant::now()));
        }
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.busy = false;
        }
    }
}

impl EventStore {
    pub fn new(pool: impl Into<Pool>) -> Self {
        EventStore {
            pool: pool.into(),
            hook: None,
            group: Arc::new(std::sync::OnceLock::new()),
            kept: Arc::new(std::sync::Mutex::new(Kept::default())),
        }
    }

    /// Adds the service's transactional hook.
    pub fn with_hook(mut self, hook: Arc<dyn AppendHook>) -> Self {
        self.hook = Some(hook);
        // A group writer of its own: one started for a store without the hook would not
        // run it.
        self.group = Arc::new(std::sync::OnceLock::new());
        self
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The service's append hook, if any.
    pub fn hook(&self) -> Option<Arc<dyn AppendHook>> {
        self.hook.clone()
    }

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

    /// Writes events exported from another instance (`shop import`) as they were — ids,
    /// sequences, times, metadata — in one transaction, through the outbox (the relay
    /// publishes them) and the append hook (the service's own tables follow).
    ///
    /// # Errors
    /// The database fails, an event is already there, or the hook refuses.
    pub async fn import(
        &self,
        events: &[StoredEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut tx = self.pool.begin().await?;
        let mut stored = Vec::with_capacity(events.len());
        for event in events {
            let position: i64 = sql::query_scalar(
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
            .bind(serde_json::to_value(event.metadata.to_map())?)
            .bind(event.recorded_at)
            .fetch_one(&mut tx)
            .await?;
            sql::query("INSERT INTO outbox (position) VALUES ($1)")
                .bind(position)
                .execute(&mut tx)
                .await?;
            stored.push(StoredEvent {
                position,
                ..event.clone()
            });
        }
        if let Some(hook) = &self.hook {
            hook.on_append(&mut tx, &stored).await?;
        }
        tx.commit().await?;
        metrics::counter!("events_appended_total").increment(stored.len() as u64);
        Ok(())
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

fn connection_error(e: sqlx::Error) -> PersistenceError {
    PersistenceError::ConnectionError(Box::new(e))
}

/// Whether an append failed because its connection was gone (closed by the server, or
/// the socket failed), not because of anything the database said.
fn is_lost_connection(e: &PersistenceError) -> bool {
    match e {
        PersistenceError::ConnectionError(e) => match e.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Io(_)) => true,
            // The server's goodbye: shut down or terminated (57P0x), connection
            // exceptions (08xxx).
            Some(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
            _ => false,
        },
        _ => false,
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

/// A snapshot written with an append: aggregate id, state, the last sequence it includes.
type Snapshot = (String, Value, usize);

/// Where an append failed: before its commit (nothing stored), or at it (unknown).
enum AppendFailure {
    Before(PersistenceError),
    AtCommit(PersistenceError),
}

impl AppendFailure {
    fn into_error(self) -> PersistenceError {
        match self {
            AppendFailure::Before(e) | AppendFailure::AtCommit(e) => e,
        }
    }
}

/// Appends in a transaction of its own; on PostgreSQL, an append without hook work or
/// snapshot is one statement on its own (events, outbox rows and the relay's wake-up).
#[tracing::instrument(level = "debug", skip_all, fields(events = events.len()))]
async fn append_new(
    pool: &Pool,
    hook: Option<&dyn AppendHook>,
    events: &[SerializedEvent],
    snapshots: &[Snapshot],
) -> Result<(), AppendFailure> {
    let work = HookWork::of(hook, pool.dialect(), events);
    let single = pool.dialect() == sql::Dialect::Postgres
        && !matches!(work, HookWork::Statements(_))
        && snapshots.is_empty();
    let mut tx = if single {
        pool.acquire().await
    } else {
        pool.begin().await
    }
    .map_err(|e| AppendFailure::Before(connection_error(e)))?;
    let appended = append(&mut tx, work, events, snapshots)
        .await
        .map_err(AppendFailure::Before)?;
    tx.commit()
        .await
        .map_err(|e| AppendFailure::AtCommit(connection_error(e)))?;
    metrics::counter!("events_appended_total").increment(appended);
    Ok(())
}

/// Most appends written by one transaction of a [`GroupCommit`].
const GROUP_MAX: usize = 64;

/// One append waiting for its group.
struct Pending {
    events: Vec<SerializedEvent>,
    snapshot: Option<Snapshot>,
    done: tokio::sync::oneshot::Sender<Result<(), PersistenceError>>,
}

/// Group commit: appends that arrive while a transaction is being written wait for the
/// next, which writes all of them — one statement for every event and outbox row, the
/// hook over all of them, one commit — instead of a transaction each. On SQLite, whose
/// one writer serialises every transaction of a file, a group takes the writer once. Appends
/// to one aggregate never share a group. When a group fails before its commit (a lost
/// race, a hook's refusal), each of its appends is written alone, so each gets its own
/// outcome; a failure at the commit is reported to all of them.
struct GroupCommit {
    queue: tokio::sync::mpsc::UnboundedSender<Pending>,
    /// Appends of this store being written now.
    in_flight: std::sync::atomic::AtomicUsize,
}

impl GroupCommit {
    fn start(pool: Pool, hook: Option<Arc<dyn AppendHook>>) -> Self {
        let (queue, waiting) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(write_groups(pool, hook, waiting));
        GroupCommit {
            queue,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// One append counted in [`GroupCommit::in_flight`] while it lives.
struct InFlight<'a> {
    count: &'a std::sync::atomic::AtomicUsize,
    /// Appends in flight when this one started.
    others: usize,
}

impl<'a> InFlight<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        let others = count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight { count, others }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

async fn write_groups(
    pool: Pool,
    hook: Option<Arc<dyn AppendHook>>,
    mut waiting: tokio::sync::mpsc::UnboundedReceiver<Pending>,
) {
    let mut deferred: std::collections::VecDeque<Pending> = std::collections::VecDeque::new();
    loop {
        let first = match deferred.pop_front() {
            Some(pending) => pending,
            None => match waiting.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let mut aggregates: std::collections::HashSet<String> = first
            .events
            .iter()
            .map(|e| e.aggregate_id.clone())
            .collect();
        let mut group = vec![first];
        let mut later = std::collections::VecDeque::new();
        let candidates = std::iter::from_fn(|| deferred.pop_front())
            .chain(std::iter::from_fn(|| waiting.try_recv().ok()));
        for pending in candidates {
            if pending
                .events
                .iter()
                .any(|e| aggregates.contains(&e.aggregate_id))
            {
                later.push_back(pending);
                continue;
            }
            aggregates.extend(pending.events.iter().map(|e| e.aggregate_id.clone()));
            group.push(pending);
            if group.len() == GROUP_MAX {
                break;
            }
        }
        later.extend(deferred.drain(..));
        deferred = later;
        write_group(&pool, hook.as_deref(), group).await;
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(appends = group.len()))]
async fn write_group(pool: &Pool, hook: Option<&dyn AppendHook>, group: Vec<Pending>) {
    if group.len() > 1 {
        let events: Vec<SerializedEvent> = group
            .iter()
            .flat_map(|p| p.events.iter().cloned())
            .collect();
        let snapshots: Vec<Snapshot> = group.iter().filter_map(|p| p.snapshot.clone()).collect();
        metrics::histogram!("append_group_size").record(group.len() as f64);
        match append_new(pool, hook, &events, &snapshots).await {
            Ok(()) => {
                for pending in group {
                    let _ = pending.done.send(Ok(()));
                }
                return;
            }
            Err(AppendFailure::AtCommit(e)) => {
                let message = e.to_string();
                for pending in group {
                    let _ = pending.done.send(Err(PersistenceError::ConnectionError(
                        message.clone().into(),
                    )));
                }
                return;
            }
            // Nothing stored: each append is written alone below.
            Err(AppendFailure::Before(_)) => {}
        }
    }
    for pending in group {
        let snapshots: Vec<Snapshot> = pending.snapshot.into_iter().collect();
        let result = append_new(pool, hook, &pending.events, &snapshots)
            .await
            .map_err(AppendFailure::into_error);
        let _ = pending.done.send(result);
    }
}

/// Appends inside the caller's transaction (a reaction's) under a savepoint: a lost race
/// rolls back only this append and leaves the caller's transaction usable.
#[tracing::instrument(level = "debug", skip_all, fields(events = events.len()))]
async fn append_nested(
    conn: &mut Conn,
    hook: Option<&dyn AppendHook>,
    events: &[SerializedEvent],
    snapshot: Option<Snapshot>,
) -> Result<(), PersistenceError> {
    let snapshots: Vec<Snapshot> = snapshot.into_iter().collect();
    let savepoint = |statement: &'static str| sql::query(statement);
    savepoint("SAVEPOINT append")
        .execute(&mut *conn)
        .await
        .map_err(connection_error)?;
    let work = HookWork::of(hook, conn.dialect(), events);
    match append(conn, work, events, &snapshots).await {
        Ok(appended) => {
            savepoint("RELEASE SAVEPOINT append")
                .execute(&mut *conn)
                .await
                .map_err(connection_error)?;
            metrics::counter!("events_appended_total").increment(appended);
            Ok(())
        }
        Err(e) => {
            savepoint("ROLLBACK TO SAVEPOINT append")
                .execute(&mut *conn)
                .await
                .map_err(connection_error)?;
            savepoint("RELEASE SAVEPOINT append")
                .execute(&mut *conn)
                .await
                .map_err(connection_error)?;
            Err(e)
        }
    }
}

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
    std::sync::LazyLock::new(|| sql::Dialect::Postgres.rows(1, "e", &APPENDED_COLUMNS));

/// The events of an append on PostgreSQL, one typed array per column (`$1`…), with their
/// outbox rows and an inline hook's CTE; the positions in sequence order. With `notify`,
/// the final select also wakes the relay with `NOTIFY outbox` (delivered at commit), for
/// a relay in another process.
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

/// The statements of an append: events, outbox rows and the relay's wake-up, the hook,
/// the snapshot. Returns how many events it appended.
#[tracing::instrument(name = "append", skip_all, fields(aggregate_id = %events[0].aggregate_id, events = events.len()))]
async fn append(
    tx: &mut Conn,
    work: HookWork<'_>,
    events: &[SerializedEvent],
    snapshots: &[Snapshot],
) -> Result<u64, PersistenceError> {
    let now = Utc::now().trunc_subsecs(6);
    let mut stored = Vec::with_capacity(events.len());
    for event in events {
        let (event_type, data) =
            shop_schemas::split_event(event.payload.clone()).ok_or_else(|| {
                PersistenceError::UnknownError(
                    format!(
                        "event {} is not an externally tagged enum value",
                        event.event_type
                    )
                    .into(),
                )
            })?;
        let metadata: HashMap<String, String> =
            serde_json::from_value(event.metadata.clone()).unwrap_or_default();
        stored.push(StoredEvent {
            position: 0,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence as i64,
            event_id: Uuid::now_v7(),
            event_type,
            event_version: event.event_version.clone(),
            data,
            metadata: EventMetadata::from_map(&metadata),
            recorded_at: now,
        });
    }
    let lost_race = |e: sqlx::Error| {
        if sql::is_unique_violation(&e, "events_aggregate_sequence", "events") {
            PersistenceError::OptimisticLockError
        } else if matches!(work, HookWork::Inline(_)) && sql::is_check_violation(&e) {
            PersistenceError::UnknownError(Box::new(HookError::Refused(e.to_string())))
        } else {
            connection_error(e)
        }
    };
    match tx.dialect() {
        // One round trip: the rows as typed arrays, the outbox rows and the wake-up
        // (delivered at commit) in the same statement.
        sql::Dialect::Postgres => {
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
            // The relay active in this process is woken directly once the append commits;
            // one elsewhere (or none yet) by NOTIFY.
            let local = tx.notifies_in_process();
            let inline = match work {
                HookWork::Inline(inline) => Some(inline),
                _ => None,
            };
            let statement = append_statement(!local, inline);
            let mut query = sql::query_scalar(&statement);
            for arg in rows
                .into_args(sql::Dialect::Postgres)
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
        }
        sql::Dialect::Sqlite => {
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
                .bind(now)
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
        }
    }
    if let HookWork::Statements(hook) = work {
        hook.on_append(tx, &stored).await.map_err(|e| match e {
            HookError::Sql(e) => connection_error(e),
            taken => PersistenceError::UnknownError(Box::new(taken)),
        })?;
    }
    for (aggregate_id, payload, last_sequence) in snapshots {
        let Some(of) = events.iter().find(|e| e.aggregate_id == *aggregate_id) else {
            continue;
        };
        sql::query(
            "INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, last_sequence, payload) VALUES ($1, $2, $3, $4)
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence, payload = EXCLUDED.payload, taken_at = CURRENT_TIMESTAMP",
        )
        .bind(&of.aggregate_type)
        .bind(aggregate_id)
        .bind(*last_sequence as i64)
        .bind(payload.clone())
        .execute(&mut *tx)
        .await
        .map_err(connection_error)?;
    }
    Ok(stored.len() as u64)
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

impl EventStore {
    async fn append(
        &self,
        events: &[SerializedEvent],
        snapshot: Option<Snapshot>,
    ) -> Result<(), PersistenceError> {
        let group = self
            .group
            .get_or_init(|| GroupCommit::start(self.pool.clone(), self.hook.clone()));
        // Alone, an append is written at once (no hand-over to the writer task); while
        // others are in flight it joins the next group.
        let in_flight = InFlight::enter(&group.in_flight);
        if in_flight.others == 0 {
            return self.append_alone(events, snapshot).await;
        }
        let (done, outcome) = tokio::sync::oneshot::channel();
        let pending = Pending {
            events: events.to_vec(),
            snapshot,
            done,
        };
        let stopped =
            || PersistenceError::ConnectionError("the group commit writer stopped".into());
        group.queue.send(pending).map_err(|_| stopped())?;
        outcome.await.unwrap_or_else(|_| Err(stopped()))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(events = events.len()))]
    async fn append_alone(
        &self,
        events: &[SerializedEvent],
        snapshot: Option<Snapshot>,
    ) -> Result<(), PersistenceError> {
        let snapshots: Vec<Snapshot> = snapshot.into_iter().collect();
        if let Pool::Postgres(pool) = &self.pool {
            let work = HookWork::of(self.hook.as_deref(), sql::Dialect::Postgres, events);
            if !matches!(work, HookWork::Statements(_)) && snapshots.is_empty() {
                if let Some((borrowed, idle)) = self.borrow_kept() {
                    return self
                        .append_on_kept(pool, borrowed, idle, work, events)
                        .await;
                }
            }
        }
        append_new(&self.pool, self.hook.as_deref(), events, &snapshots)
            .await
            .map_err(AppendFailure::into_error)
    }

    /// The kept connection (`None` inside when there is none yet), unless another append
    /// is using it.
    #[allow(clippy::type_complexity)]
    fn borrow_kept(&self) -> Option<(Borrowed<'_>, Option<(PgConnection, Instant)>)> {
        let mut kept = self.kept.lock().ok()?;
        if kept.busy {
            return None;
        }
        kept.busy = true;
        let idle = kept.idle.take();
        Some((Borrowed { kept: &self.kept }, idle))
    }

    /// A single-statement append on the kept connection (opened from the pool when there
    /// is none, tested when idle a while), kept again once it succeeded.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn append_on_kept(
        &self,
        pool: &sqlx::PgPool,
        borrowed: Borrowed<'_>,
        idle: Option<(PgConnection, Instant)>,
        work: HookWork<'_>,
        events: &[SerializedEvent],
    ) -> Result<(), PersistenceError> {
        let tested = match idle {
            Some((mut conn, since)) if since.elapsed() >= KEPT_TEST_AFTER => {
                sqlx::Connection::ping(&mut conn).await.ok().map(|()| conn)
            }
            Some((conn, _)) => Some(conn),
            None => None,
        };
        let (conn, was_kept) = match tested {
            Some(conn) => (conn, true),
            None => (
                pool.acquire().await.map_err(connection_error)?.detach(),
                false,
            ),
        };
        let mut conn = Conn::kept(conn, pool);
        let appended = match append(&mut conn, work, events, &[]).await {
            Ok(appended) => appended,
            // A kept connection the server closed since its last append (a restart within
            // [`KEPT_TEST_AFTER`]): the pool would have tested and replaced it. When none
            // of the append is stored, it is written as the pool would have written it;
            // when it is (it cannot be told whose), the failure stands, as for any
            // connection lost mid-statement.
            Err(e) if was_kept && is_lost_connection(&e) => {
                drop(conn);
                drop(borrowed);
                let first = &events[0];
                let stored: bool = sql::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3)",
                )
                .bind(&first.aggregate_type)
                .bind(&first.aggregate_id)
                .bind(first.sequence as i64)
                .fetch_one(&self.pool)
                .await
                .map_err(connection_error)?;
                if stored {
                    return Err(e);
                }
                return append_new(&self.pool, self.hook.as_deref(), events, &[])
                    .await
                    .map_err(AppendFailure::into_error);
            }
            // The database's answer (a lost race, a refusal): the connection is sound.
            Err(e) => {
                if !is_lost_connection(&e) {
                    if let Some(conn) = conn.into_kept() {
                        borrowed.keep(conn);
                    }
                }
                return Err(e);
            }
        };
        if let Some(conn) = conn.commit_keeping().await.map_err(connection_error)? {
            borrowed.keep(conn);
        }
        metrics::counter!("events_appended_total").increment(appended);
        Ok(())
    }
}

/// Aggregate states appended in a transaction and not committed yet, by aggregate type
/// and id: a later command of the same transaction starts from them. Kept with the
/// transaction's connection ([`Conn::transaction_local`]), so they go with it.
#[derive(Default)]
struct UncommittedStates(std::collections::HashMap<String, (Box<dyn std::any::Any + Send>, usize)>);

impl TxEventStore<'_> {
    /// Runs `work` once the owner's transaction commits ([`Conn::after_commit`]).
    pub(crate) async fn after_commit(&self, work: impl FnOnce() + Send + 'static) {
        self.conn.lock().await.after_commit(work);
    }

    /// The state and sequence an append of this transaction left for `key` (aggregate
    /// type and id), if any.
    pub(crate) async fn uncommitted_state<T: Clone + 'static>(
        &self,
        key: &str,
    ) -> Option<(T, usize)> {
        let conn = self.conn.lock().await;
        let (state, sequence) = conn
            .transaction_local_ref::<UncommittedStates>()?
            .0
            .get(key)?;
        Some((state.downcast_ref::<T>()?.clone(), *sequence))
    }

    /// Records the state an append of this transaction produced (`Some`), or forgets it
    /// (`None`: a conflict showed it stale). Outside a transaction there is nothing to
    /// remember: the append is committed.
    pub(crate) async fn set_uncommitted_state<T: Send + 'static>(
        &self,
        key: String,
        state: Option<(T, usize)>,
    ) {
        let mut conn = self.conn.lock().await;
        let in_transaction = conn.in_transaction();
        let states = &mut conn.transaction_local::<UncommittedStates>().0;
        match state {
            Some((state, sequence)) if in_transaction => {
                states.insert(key, (Box::new(state), sequence));
            }
            _ => {
                states.remove(&key);
            }
        }
    }

    async fn append(
        &self,
        events: &[SerializedEvent],
        snapshot: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let mut conn = self.conn.lock().await;
        append_nested(&mut conn, self.hook.as_deref(), events, snapshot).await
    }
}
repository_over_connection!(TxEventStore<'_>, self => self.conn.lock().await);

/// The event store inside a transaction someone else owns — a reaction's, whose dedup
/// record and checkpoint commit in the same transaction. Loads see the transaction's own
/// writes; each append is a savepoint, so a lost concurrency race rolls back only itself.
pub struct TxEventStore<'c> {
    conn: tokio::sync::Mutex<&'c mut Conn>,
    hook: Option<Arc<dyn AppendHook>>,
}

impl<'c> TxEventStore<'c> {
    pub fn new(conn: &'c mut Conn, hook: Option<Arc<dyn AppendHook>>) -> Self {
        TxEventStore {
            conn: tokio::sync::Mutex::new(conn),
            hook,
        }
    }
}

async fn feed(events: Vec<SerializedEvent>) -> Result<ReplayStream, PersistenceError> {
    let (mut feed, stream) = ReplayStream::new(events.len().max(1));
    for event in events {
        feed.push(Ok(event)).await?;
    }
    Ok(stream)
}
