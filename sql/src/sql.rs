//! One SQL access layer over the two storage backends: PostgreSQL (production) and SQLite
//! (`shop dev`, one file per component database).
//!
//! Domain code — append hooks, reactions, projectors, queries — is written once against
//! this module and never knows which backend runs. The API mirrors sqlx's
//! (`query(..).bind(..).execute(&mut *tx)`, `query_as`, `query_scalar`), with:
//!
//! - [`Pool`] and [`Conn`] (a pooled connection, possibly inside a transaction) wrapping
//!   either backend;
//! - values bound through [`Arg`] and read through [`Column`], for the few types Shop
//!   stores: integers, booleans, text, bytes, UUIDs, UTC timestamps, JSON, and lists;
//! - SQL written in PostgreSQL's placeholder style (`$1`, `$2`, …), rewritten to SQLite's
//!   numbered form (`?1`, …) when SQLite runs it. The few constructs the two dialects
//!   spell differently come from [`Dialect`].
//!
//! On SQLite, UUIDs are stored as hyphenated text and timestamps as fixed-width RFC 3339
//! text (`2026-01-02T03:04:05.000006Z`), so text order is time order.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

pub use crate::arg::{sqlite_time, Arg};
use crate::lite::{self, LiteDb, LiteRow, LiteTx};
use crate::signal::{local_listener, CommitSignal};

/// Which backend runs a statement; the spelling of what differs between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// `column <op> the list bound at $n`: membership in a list bound with
    /// [`Arg::list`] (an array in PostgreSQL, a JSON array in SQLite).
    pub fn in_list(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("= ANY(${n})"),
            Dialect::Sqlite => format!("IN (SELECT value FROM json_each(${n}))"),
        }
    }

    /// Row locks for the rest of the transaction (SQLite's writer lock already covers it).
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Postgres => "FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }

    /// A table `alias` of the rows of a [`RowSet`] bound from `$n` on
    /// ([`RowSet::into_args`]), with the given `(column, PostgreSQL type)`s: one
    /// statement writes a whole batch.
    ///
    /// PostgreSQL gets one typed array per column (`unnest`), sent in the binary protocol:
    /// UUIDs and integers travel as themselves, other types as text cast in the
    /// statement. (A JSON array of objects, read with `jsonb_to_recordset`, made the
    /// server parse JSON and the text of every UUID and number.) SQLite reads the rows
    /// from one JSON array (`json_each`): no round trip to save there.
    pub fn rows(self, n: usize, alias: &str, columns: &[(&str, &str)]) -> String {
        match self {
            Dialect::Postgres => {
                let mut arrays = Vec::with_capacity(columns.len());
                let mut names = Vec::with_capacity(columns.len());
                let mut select = Vec::with_capacity(columns.len());
                for (i, (column, ty)) in columns.iter().enumerate() {
                    let travel = Travel::of(ty);
                    arrays.push(format!("${}::{}[]", n + i, travel.array_type()));
                    names.push(*column);
                    select.push(if travel.is_exact(ty) {
                        column.to_string()
                    } else {
                        format!("u.{column}::{ty} AS {column}")
                    });
                }
                format!(
                    "(SELECT {} FROM unnest({}) AS u({})) AS {alias}",
                    select.join(", "),
                    arrays.join(", "),
                    names.join(", ")
                )
            }
            Dialect::Sqlite => {
                let columns: Vec<String> = columns
                    .iter()
                    .map(|(c, _)| format!("json_extract(value, '$.{c}') AS {c}"))
                    .collect();
                format!(
                    "(SELECT {} FROM json_each(${n})) AS {alias}",
                    columns.join(", ")
                )
            }
        }
    }
}

/// How a column of a [`RowSet`] travels to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Travel {
    Uuid,
    Integer,
    Time,
    Text,
}

impl Travel {
    fn of(ty: &str) -> Travel {
        if ty.eq_ignore_ascii_case("UUID") {
            Travel::Uuid
        } else if ["BIGINT", "INTEGER", "SMALLINT"]
            .iter()
            .any(|t| ty.eq_ignore_ascii_case(t))
        {
            Travel::Integer
        } else if ty.eq_ignore_ascii_case("TIMESTAMPTZ") {
            Travel::Time
        } else {
            Travel::Text
        }
    }

    fn array_type(self) -> &'static str {
        match self {
            Travel::Uuid => "uuid",
            Travel::Integer => "bigint",
            Travel::Time => "timestamptz",
            Travel::Text => "text",
        }
    }

    /// Whether the array's element type is the column's own (no cast).
    fn is_exact(self, ty: &str) -> bool {
        ty.eq_ignore_ascii_case(self.array_type())
    }
}

/// One value of a [`RowSet`] row: it must fit its column's type (a UUID column takes a
/// [`Cell::Uuid`], an integer column a [`Cell::Int`], a `TIMESTAMPTZ` column a
/// [`Cell::Time`], any other column text); [`Cell::Null`] fits any.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Uuid(Uuid),
    Int(i64),
    Time(DateTime<Utc>),
    Text(String),
}

impl From<Uuid> for Cell {
    fn from(v: Uuid) -> Cell {
        Cell::Uuid(v)
    }
}

impl From<i64> for Cell {
    fn from(v: i64) -> Cell {
        Cell::Int(v)
    }
}

impl From<i32> for Cell {
    fn from(v: i32) -> Cell {
        Cell::Int(v.into())
    }
}

impl From<DateTime<Utc>> for Cell {
    fn from(v: DateTime<Utc>) -> Cell {
        Cell::Time(v)
    }
}

impl From<&str> for Cell {
    fn from(v: &str) -> Cell {
        Cell::Text(v.to_string())
    }
}

impl From<String> for Cell {
    fn from(v: String) -> Cell {
        Cell::Text(v)
    }
}

/// A JSON value (for a `JSONB` column) as its text.
impl From<&Value> for Cell {
    fn from(v: &Value) -> Cell {
        Cell::Text(v.to_string())
    }
}

impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Cell {
        v.map_or(Cell::Null, Into::into)
    }
}

/// A row set's column, typed as it travels.
#[derive(Debug)]
enum Values {
    Uuid(Vec<Option<Uuid>>),
    Integer(Vec<Option<i64>>),
    Time(Vec<Option<DateTime<Utc>>>),
    Text(Vec<Option<String>>),
}

impl Values {
    fn new(travel: Travel) -> Values {
        match travel {
            Travel::Uuid => Values::Uuid(Vec::new()),
            Travel::Integer => Values::Integer(Vec::new()),
            Travel::Time => Values::Time(Vec::new()),
            Travel::Text => Values::Text(Vec::new()),
        }
    }

    /// Adds `cell`; gives it back when it does not fit.
    fn push(&mut self, cell: Cell) -> Result<(), Cell> {
        match (self, cell) {
            (Values::Uuid(v), Cell::Uuid(x)) => v.push(Some(x)),
            (Values::Integer(v), Cell::Int(x)) => v.push(Some(x)),
            (Values::Time(v), Cell::Time(x)) => v.push(Some(x)),
            (Values::Text(v), Cell::Text(x)) => v.push(Some(x)),
            (Values::Uuid(v), Cell::Null) => v.push(None),
            (Values::Integer(v), Cell::Null) => v.push(None),
            (Values::Time(v), Cell::Null) => v.push(None),
            (Values::Text(v), Cell::Null) => v.push(None),
            (_, other) => return Err(other),
        }
        Ok(())
    }

    /// Row `i`'s value as SQLite reads it from JSON (times in their fixed-width text).
    fn json(&self, i: usize) -> Value {
        match self {
            Values::Uuid(v) => v[i].map_or(Value::Null, |x| Value::String(x.to_string())),
            Values::Integer(v) => v[i].map_or(Value::Null, Value::from),
            Values::Time(v) => v[i]
                .as_ref()
                .map_or(Value::Null, |x| Value::String(sqlite_time(x))),
            Values::Text(v) => v[i].clone().map_or(Value::Null, Value::String),
        }
    }

    fn into_arg(self) -> Arg {
        match self {
            Values::Uuid(v) => Arg::OptUuidList(v),
            Values::Integer(v) => Arg::OptI64List(v),
            Values::Time(v) => Arg::OptTimeList(v),
            Values::Text(v) => Arg::OptTextList(v),
        }
    }
}

/// Rows for [`Dialect::rows`], kept as one typed column per `(name, PostgreSQL type)`:
/// on PostgreSQL each column travels as a binary array, nothing is formatted as text.
#[derive(Debug)]
pub struct RowSet<'c> {
    columns: &'c [(&'c str, &'c str)],
    values: Vec<Values>,
    rows: usize,
    /// The first value that did not fit its column (reported by [`RowSet::into_args`]).
    misfit: Option<String>,
}

impl<'c> RowSet<'c> {
    /// No rows yet, with these `(name, PostgreSQL type)` columns.
    pub fn new(columns: &'c [(&'c str, &'c str)]) -> Self {
        RowSet {
            columns,
            values: columns
                .iter()
                .map(|(_, ty)| Values::new(Travel::of(ty)))
                .collect(),
            rows: 0,
            misfit: None,
        }
    }

    /// Adds a row: one value per column, in the columns' order.
    pub fn push<const N: usize>(&mut self, row: [Cell; N]) {
        debug_assert_eq!(N, self.columns.len(), "one value per column");
        for ((column, (name, _)), cell) in self.values.iter_mut().zip(self.columns).zip(row) {
            if let Err(cell) = column.push(cell) {
                self.misfit
                    .get_or_insert_with(|| format!("row set: {cell:?} does not fit column {name}"));
                column.push(Cell::Null).expect("NULL fits any column");
            }
        }
        self.rows += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    /// The values to bind for [`Dialect::rows`]: one array per column on PostgreSQL,
    /// one JSON array of the rows on SQLite.
    ///
    /// # Errors
    /// A value did not fit its column's type.
    pub fn into_args(self, dialect: Dialect) -> Result<Vec<Arg>, sqlx::Error> {
        if let Some(misfit) = self.misfit {
            return Err(sqlx::Error::Protocol(misfit));
        }
        if dialect == Dialect::Sqlite {
            let rows = (0..self.rows)
                .map(|i| {
                    Value::Object(
                        self.columns
                            .iter()
                            .zip(&self.values)
                            .map(|((name, _), column)| (name.to_string(), column.json(i)))
                            .collect(),
                    )
                })
                .collect();
            return Ok(vec![Arg::Json(Some(Value::Array(rows)))]);
        }
        Ok(self.values.into_iter().map(Values::into_arg).collect())
    }

    /// Runs the statement `statement(r)` builds, where `r` is these rows as table `r`
    /// ([`Dialect::rows`]); `leading` values are bound first (`$1`…), the rows after
    /// them. Nothing runs when there are no rows. Returns the rows changed.
    ///
    /// # Errors
    /// The database fails, or a value did not fit its column.
    pub async fn execute(
        self,
        tx: &mut Conn,
        leading: Vec<Arg>,
        statement: impl FnOnce(&str) -> String,
    ) -> Result<u64, sqlx::Error> {
        if self.is_empty() {
            return Ok(0);
        }
        let dialect = tx.dialect();
        let sql = statement(&dialect.rows(leading.len() + 1, "r", self.columns));
        let mut query = query(&sql);
        for arg in leading.into_iter().chain(self.into_args(dialect)?) {
            query = query.bind(arg);
        }
        Ok(query.execute(&mut *tx).await?.rows_affected())
    }
}

/// A pool of connections to one component database.
#[derive(Debug, Clone)]
pub enum Pool {
    Postgres(PgPool),
    Sqlite(LitePool),
}

/// An SQLite pool with what PostgreSQL gives for free: the in-process notification of
/// its commits (instead of `LISTEN/NOTIFY`) and a lock whose holder leads (instead of an
/// advisory lock).
#[derive(Debug, Clone)]
pub struct LitePool {
    pub db: Arc<LiteDb>,
    pub signal: Arc<CommitSignal>,
    pub advisory_lock: Arc<tokio::sync::Mutex<()>>,
}

impl From<PgPool> for Pool {
    fn from(pool: PgPool) -> Self {
        Pool::Postgres(pool)
    }
}

impl From<Arc<LiteDb>> for Pool {
    fn from(db: Arc<LiteDb>) -> Self {
        Pool::Sqlite(LitePool {
            db,
            signal: Arc::new(CommitSignal::default()),
            advisory_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }
}

impl Pool {
    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Starts a transaction. On SQLite it takes the writer lock at once (`BEGIN
    /// IMMEDIATE`), so two transactions never deadlock upgrading from reader to writer.
    ///
    /// # Errors
    /// No connection could be had.
    pub async fn begin(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Pool::Postgres(pool) => Conn {
                inner: Inner::PgTx(pool.begin().await?),
                signal: local_signal(pool),
                after_commit: Vec::new(),
                locals: HashMap::new(),
            },
            Pool::Sqlite(lite) => Conn {
                inner: Inner::LiteTx(lite.db.begin().await?),
                signal: Some(PendingSignal {
                    signal: lite.signal.clone(),
                    pending: false,
                }),
                after_commit: Vec::new(),
                locals: HashMap::new(),
            },
        })
    }

    /// A connection outside any transaction.
    ///
    /// # Errors
    /// No connection could be had.
    pub async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Pool::Postgres(pool) => Conn {
                inner: Inner::Pg(pool.acquire().await?),
                signal: local_signal(pool),
                after_commit: Vec::new(),
                locals: HashMap::new(),
            },
            Pool::Sqlite(lite) => Conn {
                inner: Inner::Lite(lite.db.clone()),
                signal: Some(PendingSignal {
                    signal: lite.signal.clone(),
                    pending: false,
                }),
                after_commit: Vec::new(),
                locals: HashMap::new(),
            },
        })
    }

    pub async fn close(&self) {
        match self {
            Pool::Postgres(pool) => pool.close().await,
            // Connections close when the last handle goes.
            Pool::Sqlite(_) => {}
        }
    }

    /// The PostgreSQL pool, for what only PostgreSQL has (`LISTEN`, advisory locks).
    pub fn as_postgres(&self) -> Option<&PgPool> {
        match self {
            Pool::Postgres(pool) => Some(pool),
            Pool::Sqlite(_) => None,
        }
    }
}

/// The in-process signal of a connection's database, and whether this transaction asked
/// for it ([`Conn::notify_on_commit`]).
#[derive(Debug)]
struct PendingSignal {
    signal: Arc<CommitSignal>,
    pending: bool,
}

/// The signal of the listener in this process for `pool`'s database, if any.
fn local_signal(pool: &PgPool) -> Option<PendingSignal> {
    local_listener(pool).map(|signal| PendingSignal {
        signal,
        pending: false,
    })
}

/// A pooled connection, possibly inside a transaction. Handlers and hooks receive
/// `&mut Conn` and run statements on it with `.execute(&mut *tx)`.
#[derive(Debug)]
pub struct Conn {
    inner: Inner,
    signal: Option<PendingSignal>,
    /// Work to do once the transaction has committed (e.g. caching the state an append
    /// produced); dropped with a rollback.
    after_commit: Vec<AfterCommit>,
    /// Values the layers above keep for as long as this connection or transaction lives
    /// ([`Conn::transaction_local`]), one per type.
    locals: HashMap<std::any::TypeId, Box<dyn std::any::Any + Send>>,
}

/// See [`Conn::after_commit`].
struct AfterCommit(Box<dyn FnOnce() + Send>);

/// What follows a commit: the in-process notification if the transaction asked for it
/// ([`Conn::notify_on_commit`]), then the work waiting for the commit.
fn after_commit_work(signal: Option<PendingSignal>, after_commit: Vec<AfterCommit>) {
    if let Some(signal) = signal {
        if signal.pending {
            signal.signal.committed();
        }
    }
    for work in after_commit {
        (work.0)();
    }
}

impl std::fmt::Debug for AfterCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterCommit")
    }
}

#[derive(Debug)]
enum Inner {
    PgTx(Transaction<'static, Postgres>),
    Pg(PoolConnection<Postgres>),
    PgOwned(Box<PgConnection>),
    LiteTx(LiteTx),
    Lite(Arc<LiteDb>),
}

impl Conn {
    pub fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::PgTx(_) | Inner::Pg(_) | Inner::PgOwned(_) => Dialect::Postgres,
            Inner::LiteTx(_) | Inner::Lite(_) => Dialect::Sqlite,
        }
    }

    /// Commits the transaction (a no-op outside one), then notifies the in-process
    /// listener if the transaction asked for it ([`Conn::notify_on_commit`]).
    ///
    /// # Errors
    /// The commit failed; nothing was stored.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::PgTx(tx) => tx.commit().await?,
            Inner::LiteTx(tx) => tx.commit()?,
            Inner::Pg(_) | Inner::PgOwned(_) | Inner::Lite(_) => {}
        }
        after_commit_work(self.signal, self.after_commit);
        Ok(())
    }

    /// Runs `work` once this transaction has committed (at once outside a transaction);
    /// never if it rolls back.
    pub fn after_commit(&mut self, work: impl FnOnce() + Send + 'static) {
        match self.inner {
            Inner::PgTx(_) | Inner::LiteTx(_) => {
                self.after_commit.push(AfterCommit(Box::new(work)))
            }
            Inner::Pg(_) | Inner::PgOwned(_) | Inner::Lite(_) => work(),
        }
    }

    /// Whether this connection is inside a transaction.
    pub fn in_transaction(&self) -> bool {
        matches!(self.inner, Inner::PgTx(_) | Inner::LiteTx(_))
    }

    /// This connection's value of type `T` (created empty at first use), dropped with
    /// the connection: what a layer above keeps for the length of a transaction.
    pub fn transaction_local<T: Default + Send + 'static>(&mut self) -> &mut T {
        self.locals
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut::<T>()
            .expect("keyed by its type")
    }

    /// This connection's value of type `T`, if one was created.
    pub fn transaction_local_ref<T: 'static>(&self) -> Option<&T> {
        self.locals
            .get(&std::any::TypeId::of::<T>())?
            .downcast_ref::<T>()
    }

    /// Rolls the transaction back (dropping it does too).
    ///
    /// # Errors
    /// The rollback failed (the transaction is gone either way).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::PgTx(tx) => tx.rollback().await,
            Inner::LiteTx(tx) => tx.rollback(),
            Inner::Pg(_) | Inner::PgOwned(_) | Inner::Lite(_) => Ok(()),
        }
    }

    /// Whether [`Conn::notify_on_commit`] notifies a listener in this process (SQLite, or
    /// a PostgreSQL database with a [`LocalListener`](crate::signal::LocalListener) here)
    /// rather than with `NOTIFY`.
    pub fn notifies_in_process(&self) -> bool {
        self.signal.is_some()
    }

    /// Notifies `channel`'s listener once this transaction commits: in-process when it
    /// runs in this process ([`Conn::notifies_in_process`]), else `NOTIFY channel`
    /// (delivered at commit).
    ///
    /// # Errors
    /// The notification could not be queued.
    pub async fn notify_on_commit(&mut self, channel: &str) -> Result<(), sqlx::Error> {
        // SQLite connections always carry their pool's signal.
        match &mut self.signal {
            Some(signal) => signal.pending = true,
            None => {
                query("SELECT pg_notify($1, '')")
                    .bind(channel)
                    .execute(&mut *self)
                    .await?;
            }
        }
        Ok(())
    }

    /// A PostgreSQL connection its owner keeps between uses, detached from `pool` (see
    /// [`Conn::commit_keeping`]), outside any transaction; its notifications reach the
    /// listener as `pool`'s do.
    pub fn kept(conn: PgConnection, pool: &PgPool) -> Conn {
        Conn {
            inner: Inner::PgOwned(Box::new(conn)),
            signal: local_signal(pool),
            after_commit: Vec::new(),
            locals: HashMap::new(),
        }
    }

    /// [`Conn::commit`], handing back a [`Conn::kept`] connection for its owner to keep
    /// again; `None` for any other connection.
    ///
    /// # Errors
    /// The commit failed; nothing was stored.
    pub async fn commit_keeping(self) -> Result<Option<PgConnection>, sqlx::Error> {
        let Conn {
            inner,
            signal,
            after_commit,
            locals,
        } = self;
        let conn = match inner {
            Inner::PgOwned(conn) => *conn,
            inner => {
                let conn = Conn {
                    inner,
                    signal,
                    after_commit,
                    locals,
                };
                conn.commit().await?;
                return Ok(None);
            }
        };
        // Outside a transaction: nothing to commit; what follows a commit, as there.
        after_commit_work(signal, after_commit);
        Ok(Some(conn))
    }

    /// The connection of a [`Conn::kept`] whose statement failed with the database's
    /// answer (a lost race, a refused hook), for its owner to keep: outside a
    /// transaction nothing waits for a commit. `None` for any other connection.
    pub fn into_kept(self) -> Option<PgConnection> {
        match self.inner {
            Inner::PgOwned(conn) => Some(*conn),
            _ => None,
        }
    }

    /// A PostgreSQL connection of its own, outside the pool (e.g. one that holds a
    /// session-level advisory lock for as long as it lives).
    pub fn detached(conn: PgConnection) -> Conn {
        Conn {
            inner: Inner::PgOwned(Box::new(conn)),
            signal: None,
            after_commit: Vec::new(),
            locals: HashMap::new(),
        }
    }

    /// Closes a detached connection (others go back to their pool when dropped).
    pub async fn close(self) {
        if let Inner::PgOwned(conn) = self.inner {
            sqlx::Connection::close(*conn).await.ok();
        }
    }

    fn target(&mut self) -> Target<'_> {
        match &mut self.inner {
            Inner::PgTx(tx) => Target::Pg(tx),
            Inner::Pg(conn) => Target::Pg(conn),
            Inner::PgOwned(conn) => Target::Pg(conn),
            Inner::LiteTx(tx) => Target::Lite(tx.conn()),
            Inner::Lite(db) => Target::LitePool(db),
        }
    }
}

/// Where a statement runs.
pub enum Target<'a> {
    Pg(&'a mut PgConnection),
    PgPool(&'a PgPool),
    Lite(&'a rusqlite::Connection),
    LitePool(&'a LiteDb),
}

/// What statements run on: `&Pool` or `&mut Conn`.
pub trait Executor<'a>: Send {
    fn target(self) -> Target<'a>;
}

impl<'a> Executor<'a> for &'a Pool {
    fn target(self) -> Target<'a> {
        match self {
            Pool::Postgres(pool) => Target::PgPool(pool),
            Pool::Sqlite(lite) => Target::LitePool(&lite.db),
        }
    }
}

impl<'a> Executor<'a> for &'a mut Conn {
    fn target(self) -> Target<'a> {
        Conn::target(self)
    }
}

fn parse_sqlite_time(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    // `CURRENT_TIMESTAMP` defaults: `YYYY-MM-DD HH:MM:SS` in UTC.
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc())
        .map_err(|e| sqlx::Error::Decode(format!("timestamp {text:?}: {e}").into()))
}

fn bind_pg(
    q: sqlx::query::Query<'_, Postgres, PgArguments>,
    arg: Arg,
) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    match arg {
        Arg::I64(v) => q.bind(v),
        Arg::I32(v) => q.bind(v),
        Arg::F64(v) => q.bind(v),
        Arg::Bool(v) => q.bind(v),
        Arg::Text(v) => q.bind(v),
        Arg::Bytes(v) => q.bind(v),
        Arg::Uuid(v) => q.bind(v),
        Arg::Time(v) => q.bind(v),
        Arg::Json(v) => q.bind(v),
        Arg::UuidList(v) => q.bind(v),
        Arg::I64List(v) => q.bind(v),
        Arg::TextList(v) => q.bind(v),
        Arg::OptUuidList(v) => q.bind(v),
        Arg::OptI64List(v) => q.bind(v),
        Arg::OptTextList(v) => q.bind(v),
        Arg::OptTimeList(v) => q.bind(v),
    }
}

/// PostgreSQL's `$n` placeholders in SQLite's numbered form `?n` (outside quotes).
pub fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) => out.push('?'),
            None => out.push(c),
        }
    }
    out
}

/// [`sqlite_placeholders`] of a statement, remembered per thread: the same statements
/// run again and again, and rewriting each time showed in `shop dev`'s profile. Texts
/// built per call (lists of varying length) fill the memory up to a bound, then are
/// rewritten each time.
fn lite_sql(sql: &str) -> Arc<str> {
    const REMEMBERED: usize = 2048;
    thread_local! {
        static REWRITTEN: std::cell::RefCell<HashMap<String, Arc<str>>> =
            std::cell::RefCell::new(HashMap::new());
    }
    REWRITTEN.with(|rewritten| {
        if let Some(done) = rewritten.borrow().get(sql) {
            return done.clone();
        }
        let done: Arc<str> = sqlite_placeholders(sql).into();
        let mut rewritten = rewritten.borrow_mut();
        if rewritten.len() < REMEMBERED {
            rewritten.insert(sql.to_string(), done.clone());
        }
        done
    })
}

/// Runs a [`Query`] on the executor's backend — sqlx's `$method` on PostgreSQL, the
/// SQLite engine ([`crate::lite`], placeholders rewritten, at most `$limit` rows read)
/// on SQLite — and turns each backend's result into ours with `$pg` / `$lite`.
macro_rules! on_backend {
    ($query:ident, $executor:ident, $method:ident, $limit:expr, $pg:expr, $lite:expr) => {
        match $executor.target() {
            Target::Pg(conn) => {
                let sql = renamed($query.sql);
                ($pg)(pg(&sql, $query.args).$method(conn).await?)
            }
            Target::PgPool(pool) => {
                let sql = renamed($query.sql);
                ($pg)(pg(&sql, $query.args).$method(pool).await?)
            }
            Target::Lite(conn) => {
                let sql = lite_sql(&renamed($query.sql));
                ($lite)(crate::lite::run_on(conn, &sql, $query.args, $limit)?)
            }
            Target::LitePool(db) => {
                let sql = lite_sql(&renamed($query.sql));
                ($lite)(db.run(&sql, $query.args, $limit).await?)
            }
        }
    };
}

/// A statement with its bound values.
#[must_use = "a query does nothing until executed"]
pub struct Query<'q> {
    sql: &'q str,
    args: Vec<Arg>,
}

/// What a statement changed.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    rows_affected: u64,
}

impl Done {
    pub fn rows_affected(&self) -> u64 {
        self.rows_affected
    }
}

/// A statement (PostgreSQL placeholders, `$1`…).
pub fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        args: Vec::new(),
    }
}

/// A statement whose rows are read as `T` (a tuple of [`Column`]s, or a [`FromRow`]).
pub fn query_as<T: FromRow>(sql: &str) -> QueryAs<'_, T> {
    QueryAs {
        query: query(sql),
        _row: std::marker::PhantomData,
    }
}

/// A statement whose rows' first column is read as `T`.
pub fn query_scalar<T: Column>(sql: &str) -> QueryScalar<'_, T> {
    QueryScalar {
        rows: query_as(sql),
    }
}

impl<'q> Query<'q> {
    pub fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Runs the statement; how many rows it changed.
    ///
    /// # Errors
    /// The database refused the statement.
    pub async fn execute<'e>(self, executor: impl Executor<'e>) -> Result<Done, sqlx::Error> {
        let rows_affected = on_backend!(
            self,
            executor,
            execute,
            None,
            |done: sqlx::postgres::PgQueryResult| done.rows_affected(),
            |done: crate::lite::Output| done.rows_affected
        );
        Ok(Done { rows_affected })
    }

    /// Every row.
    ///
    /// # Errors
    /// The database refused the statement.
    pub async fn fetch_all<'e>(self, executor: impl Executor<'e>) -> Result<Vec<Row>, sqlx::Error> {
        Ok(on_backend!(
            self,
            executor,
            fetch_all,
            None,
            |rows: Vec<PgRow>| rows.into_iter().map(Row::Pg).collect(),
            |done: crate::lite::Output| done.rows.into_iter().map(Row::Lite).collect()
        ))
    }

    /// The first row, if any.
    ///
    /// # Errors
    /// The database refused the statement.
    pub async fn fetch_optional<'e>(
        self,
        executor: impl Executor<'e>,
    ) -> Result<Option<Row>, sqlx::Error> {
        Ok(on_backend!(
            self,
            executor,
            fetch_optional,
            Some(1),
            |row: Option<PgRow>| row.map(Row::Pg),
            |done: crate::lite::Output| done.rows.into_iter().next().map(Row::Lite)
        ))
    }

    /// Exactly one row.
    ///
    /// # Errors
    /// The database refused the statement, or returned no row.
    pub async fn fetch_one<'e>(self, executor: impl Executor<'e>) -> Result<Row, sqlx::Error> {
        self.fetch_optional(executor)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

fn pg(sql: &str, args: Vec<Arg>) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    args.into_iter().fold(sqlx::query::<Postgres>(sql), bind_pg)
}

/// Table names swapped for others in every statement run inside [`with_renames`]: how
/// one projector's code writes a new version of its tables beside the live ones, and
/// how a read picks the live version. Names are matched as whole SQL identifiers outside
/// quotes, so `orders` is renamed but `orders_count` and `'orders'` are not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renames(std::collections::HashMap<String, String>);

impl Renames {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Renames(pairs.into_iter().filter(|(from, to)| from != to).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `sql` with every renamed identifier replaced.
    pub fn apply<'s>(&self, sql: &'s str) -> std::borrow::Cow<'s, str> {
        if self.0.is_empty() {
            return std::borrow::Cow::Borrowed(sql);
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let flush = |word: &mut String, out: &mut String| {
            if !word.is_empty() {
                out.push_str(
                    self.0
                        .get(word.as_str())
                        .map_or(word.as_str(), String::as_str),
                );
                word.clear();
            }
        };
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                // A `--` comment runs to the end of its line (an apostrophe in it is
                // not a quote).
                Some('\n') => {
                    out.push(c);
                    if c == '\n' {
                        quote = None;
                    }
                }
                Some(q) => {
                    out.push(c);
                    if c == q {
                        quote = None;
                    }
                }
                None if c == '-' && chars.peek() == Some(&'-') => {
                    flush(&mut word, &mut out);
                    quote = Some('\n');
                    out.push(c);
                }
                None if c.is_ascii_alphanumeric() || c == '_' => word.push(c),
                None => {
                    flush(&mut word, &mut out);
                    if c == '\'' || c == '"' {
                        quote = Some(c);
                    }
                    out.push(c);
                }
            }
        }
        flush(&mut word, &mut out);
        std::borrow::Cow::Owned(out)
    }
}

tokio::task_local! {
    static RENAMES: Arc<Renames>;
}

/// Runs `work` with every statement's table names renamed by `renames`.
pub async fn with_renames<F: std::future::Future>(renames: Arc<Renames>, work: F) -> F::Output {
    RENAMES.scope(renames, work).await
}

/// The statement as the current task's renames have it.
fn renamed(sql: &str) -> std::borrow::Cow<'_, str> {
    RENAMES
        .try_with(|r| match r.apply(sql) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(s) => Some(s),
        })
        .ok()
        .flatten()
        .map_or(std::borrow::Cow::Borrowed(sql), std::borrow::Cow::Owned)
}

/// A statement read as rows of `T`.
#[must_use = "a query does nothing until executed"]
pub struct QueryAs<'q, T> {
    query: Query<'q>,
    _row: std::marker::PhantomData<T>,
}

impl<T: FromRow> QueryAs<'_, T> {
    pub fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.query = self.query.bind(value);
        self
    }

    /// # Errors
    /// The database refused the statement, or a row does not decode.
    pub async fn fetch_all<'e>(self, executor: impl Executor<'e>) -> Result<Vec<T>, sqlx::Error> {
        self.query
            .fetch_all(executor)
            .await?
            .iter()
            .map(T::from_row)
            .collect()
    }

    /// # Errors
    /// The database refused the statement, or the row does not decode.
    pub async fn fetch_optional<'e>(
        self,
        executor: impl Executor<'e>,
    ) -> Result<Option<T>, sqlx::Error> {
        self.query
            .fetch_optional(executor)
            .await?
            .as_ref()
            .map(T::from_row)
            .transpose()
    }

    /// # Errors
    /// The database refused the statement, returned no row, or it does not decode.
    pub async fn fetch_one<'e>(self, executor: impl Executor<'e>) -> Result<T, sqlx::Error> {
        T::from_row(&self.query.fetch_one(executor).await?)
    }
}

/// A statement read as its rows' first column: [`QueryAs`] of a one-column tuple.
#[must_use = "a query does nothing until executed"]
pub struct QueryScalar<'q, T> {
    rows: QueryAs<'q, (T,)>,
}

impl<T: Column> QueryScalar<'_, T> {
    pub fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.rows = self.rows.bind(value);
        self
    }

    /// # Errors
    /// The database refused the statement, or a value does not decode.
    pub async fn fetch_all<'e>(self, executor: impl Executor<'e>) -> Result<Vec<T>, sqlx::Error> {
        Ok(self
            .rows
            .fetch_all(executor)
            .await?
            .into_iter()
            .map(|(value,)| value)
            .collect())
    }

    /// # Errors
    /// The database refused the statement, or the value does not decode.
    pub async fn fetch_optional<'e>(
        self,
        executor: impl Executor<'e>,
    ) -> Result<Option<T>, sqlx::Error> {
        Ok(self
            .rows
            .fetch_optional(executor)
            .await?
            .map(|(value,)| value))
    }

    /// # Errors
    /// The database refused the statement, returned no row, or it does not decode.
    pub async fn fetch_one<'e>(self, executor: impl Executor<'e>) -> Result<T, sqlx::Error> {
        Ok(self.rows.fetch_one(executor).await?.0)
    }
}

/// A result row of either backend.
pub enum Row {
    Pg(PgRow),
    Lite(LiteRow),
}

/// A column position or name.
pub trait ColumnIndex: sqlx::ColumnIndex<PgRow> + Copy {
    /// The column's position in an SQLite row.
    ///
    /// # Errors
    /// No such column.
    fn lite_position(self, row: &LiteRow) -> Result<usize, sqlx::Error>;
}

impl ColumnIndex for usize {
    fn lite_position(self, _row: &LiteRow) -> Result<usize, sqlx::Error> {
        Ok(self)
    }
}

impl ColumnIndex for &str {
    fn lite_position(self, row: &LiteRow) -> Result<usize, sqlx::Error> {
        row.position(self)
    }
}

impl Row {
    /// The value of a column.
    ///
    /// # Errors
    /// No such column, or its value does not decode as `T`.
    pub fn get<T: Column>(&self, index: impl ColumnIndex) -> Result<T, sqlx::Error> {
        match self {
            Row::Pg(row) => T::pg(row, index),
            Row::Lite(row) => T::lite(row, index),
        }
    }
}

/// A type a column decodes to, on both backends.
pub trait Column: Sized + Send {
    /// # Errors
    /// No such column, or its value does not decode.
    fn pg(row: &PgRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error>;
    /// # Errors
    /// No such column, or its value does not decode.
    fn lite(row: &LiteRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error>;
}

/// Types sqlx decodes natively from PostgreSQL, and `$decode` from an SQLite value.
macro_rules! native_column {
    ($($ty:ty => $decode:expr),*) => {
        $(
            impl Column for $ty {
                fn pg(row: &PgRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error> {
                    sqlx::Row::try_get(row, index)
                }
                fn lite(row: &LiteRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error> {
                    let position = index.lite_position(row)?;
                    ($decode)(row.value(position)?)?.ok_or_else(|| unexpected_null(position))
                }
            }
            impl Column for Option<$ty> {
                fn pg(row: &PgRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error> {
                    sqlx::Row::try_get(row, index)
                }
                fn lite(row: &LiteRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error> {
                    ($decode)(row.value(index.lite_position(row)?)?)
                }
            }
        )*
    };
}

fn unexpected_null(position: usize) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: position.to_string(),
        source: "unexpected NULL".into(),
    }
}

native_column!(
    i64 => lite::as_i64,
    i32 => |v| lite::as_i64(v)?
        .map(|i| i32::try_from(i).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose(),
    f64 => lite::as_f64,
    bool => |v| Ok::<_, sqlx::Error>(lite::as_i64(v)?.map(|i| i != 0)),
    String => lite::as_text,
    Vec<u8> => lite::as_bytes
);

/// Types SQLite keeps as text: decoded from it with `parse`.
macro_rules! text_column {
    ($($ty:ty => $parse:expr),*) => {
        $(
            impl Column for $ty {
                fn pg(row: &PgRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error> {
                    sqlx::Row::try_get(row, index)
                }
                fn lite(row: &LiteRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error> {
                    let position = index.lite_position(row)?;
                    lite::with_text(row.value(position)?, $parse)?
                        .ok_or_else(|| unexpected_null(position))
                }
            }
            impl Column for Option<$ty> {
                fn pg(row: &PgRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error> {
                    sqlx::Row::try_get(row, index)
                }
                fn lite(row: &LiteRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error> {
                    lite::with_text(row.value(index.lite_position(row)?)?, $parse)
                }
            }
        )*
    };
}

fn parse_uuid(text: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn parse_json(text: &str) -> Result<Value, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

text_column!(
    Uuid => parse_uuid,
    DateTime<Utc> => parse_sqlite_time,
    Value => parse_json
);

/// A row read as a Rust value.
pub trait FromRow: Sized {
    /// # Errors
    /// A column is missing or does not decode.
    fn from_row(row: &Row) -> Result<Self, sqlx::Error>;
}

macro_rules! tuple_from_row {
    ($($name:ident : $index:tt),+) => {
        impl<$($name: Column),+> FromRow for ($($name,)+) {
            fn from_row(row: &Row) -> Result<Self, sqlx::Error> {
                Ok(($(row.get::<$name>($index)?,)+))
            }
        }
    };
}

tuple_from_row!(A: 0);
tuple_from_row!(A: 0, B: 1);
tuple_from_row!(A: 0, B: 1, C: 2);
tuple_from_row!(A: 0, B: 1, C: 2, D: 3);
tuple_from_row!(A: 0, B: 1, C: 2, D: 3, E: 4);
tuple_from_row!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5);
tuple_from_row!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6);
tuple_from_row!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7);

/// For tests: turns each named `async fn scenario(Dialect)` into a module with two
/// tests, `postgres` and `sqlite`, so one scenario is checked on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$scenario($crate::Dialect::Postgres).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$scenario($crate::Dialect::Sqlite).await;
                }
            }
        )*
    };
}

/// Whether an error is a unique-key violation on `table` (PostgreSQL names the
/// constraint, SQLite the table and columns).
/// Whether a statement failed on a `CHECK` constraint.
pub fn is_check_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::CheckViolation)
}

pub fn is_unique_violation(error: &sqlx::Error, constraint: &str, table: &str) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.constraint() == Some(constraint)
                || (db.is_unique_violation()
                    && db
                        .message()
                        .contains(&format!("UNIQUE constraint failed: {table}.")))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: [(&str, &str); 5] = [
        ("id", "UUID"),
        ("n", "INTEGER"),
        ("name", "TEXT"),
        ("address", "JSONB"),
        ("at", "TIMESTAMPTZ"),
    ];

    #[test]
    fn a_row_set_reaches_postgresql_as_one_typed_array_per_column() {
        assert_eq!(
            Dialect::Postgres.rows(2, "r", &COLUMNS),
            "(SELECT id, u.n::INTEGER AS n, name, u.address::JSONB AS address, at \
             FROM unnest($2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::timestamptz[]) AS u(id, n, name, address, at)) AS r"
        );
        let id = Uuid::now_v7();
        let at = Utc::now();
        let mut rows = RowSet::new(&COLUMNS);
        rows.push([
            id.into(),
            7i64.into(),
            "Ada".into(),
            (&serde_json::json!({"city": "Tokyo"})).into(),
            at.into(),
        ]);
        rows.push([
            Cell::Null,
            None::<i64>.into(),
            Cell::Null,
            Cell::Null,
            Cell::Null,
        ]);
        assert_eq!(rows.len(), 2);
        let args = rows.into_args(Dialect::Postgres).unwrap();
        assert!(matches!(&args[0], Arg::OptUuidList(v) if *v == vec![Some(id), None]));
        assert!(matches!(&args[1], Arg::OptI64List(v) if *v == vec![Some(7), None]));
        assert!(
            matches!(&args[2], Arg::OptTextList(v) if *v == vec![Some("Ada".to_string()), None])
        );
        assert!(
            matches!(&args[3], Arg::OptTextList(v) if *v == vec![Some(r#"{"city":"Tokyo"}"#.to_string()), None])
        );
        assert!(matches!(&args[4], Arg::OptTimeList(v) if *v == vec![Some(at), None]));
    }

    #[test]
    fn a_value_that_does_not_fit_its_column_is_an_error_not_a_null() {
        for row in [
            [
                Cell::from("not a uuid"),
                Cell::Null,
                Cell::Null,
                Cell::Null,
                Cell::Null,
            ],
            [
                Cell::Null,
                Cell::from("7"),
                Cell::Null,
                Cell::Null,
                Cell::Null,
            ],
            [
                Cell::Null,
                Cell::Null,
                Cell::Null,
                Cell::Null,
                Cell::from(1i64),
            ],
        ] {
            let mut rows = RowSet::new(&COLUMNS);
            rows.push(row.clone());
            assert!(
                rows.into_args(Dialect::Postgres).is_err(),
                "{row:?} was accepted"
            );
        }
    }

    #[test]
    fn sqlite_reads_a_row_set_from_one_json_array() {
        let at = Utc::now();
        let id = Uuid::now_v7();
        let mut rows = RowSet::new(&COLUMNS);
        rows.push([id.into(), 1i64.into(), Cell::Null, "{}".into(), at.into()]);
        let args = rows.into_args(Dialect::Sqlite).unwrap();
        let [Arg::Json(Some(Value::Array(a)))] = &args[..] else {
            panic!("{args:?}");
        };
        assert_eq!(
            a,
            &vec![serde_json::json!({
                "id": id.to_string(), "n": 1, "name": null, "address": "{}", "at": sqlite_time(&at),
            })]
        );
    }

    #[test]
    fn placeholders_become_numbered_outside_quotes() {
        assert_eq!(
            sqlite_placeholders("SELECT '$1', \"$2\" FROM t WHERE a = $1 AND b = $12"),
            "SELECT '$1', \"$2\" FROM t WHERE a = ?1 AND b = ?12"
        );
    }

    #[test]
    fn renames_touch_whole_identifiers_outside_quotes_only() {
        let renames = Renames::new([
            ("orders".to_string(), "orders_v2".to_string()),
            (
                "orders_by_customer".to_string(),
                "orders_by_customer_v2".to_string(),
            ),
        ]);
        assert_eq!(
            renames.apply("CREATE INDEX orders_by_customer ON orders (customer_id); SELECT orders_count, 'orders', o.total FROM orders o"),
            "CREATE INDEX orders_by_customer_v2 ON orders_v2 (customer_id); SELECT orders_count, 'orders', o.total FROM orders_v2 o"
        );
        assert_eq!(
            renames.apply("-- the customer's orders\nCREATE TABLE orders (a INT) -- orders'\n"),
            "-- the customer's orders\nCREATE TABLE orders_v2 (a INT) -- orders'\n"
        );
        assert!(matches!(
            Renames::default().apply("SELECT 1"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn sqlite_time_is_fixed_width_and_round_trips() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.000006Z")
            .unwrap()
            .with_timezone(&Utc);
        let text = sqlite_time(&t);
        assert_eq!(text, "2026-01-02T03:04:05.000006Z");
        assert_eq!(parse_sqlite_time(&text).unwrap(), t);
        assert_eq!(
            parse_sqlite_time("2026-01-02 03:04:05").unwrap(),
            DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap()
        );
    }
}
