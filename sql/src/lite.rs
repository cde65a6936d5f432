//! The embedded backend's SQLite engine (`shop dev`): statements run in the calling
//! task's thread, on connections this process owns, with no worker thread per
//! connection.
//!
//! SQLite answers from its page cache in microseconds; handing every statement to a
//! connection thread and waking the task again costs more than the statement itself
//! (two context switches each; on two cores they were half of `shop dev`'s CPU time).
//! So a database here is:
//!
//! - one **writer** connection behind an async mutex: a transaction holds it from
//!   `BEGIN IMMEDIATE` to `COMMIT` (across awaits), and another writer waits for it
//!   without blocking a thread. In this process SQLite's own writer lock is therefore
//!   never contended (another process, e.g. `shop events` on the same files, is waited
//!   for with SQLite's busy timeout);
//! - **readers** for statements outside a transaction that SQLite reports read-only
//!   (`sqlite3_stmt_readonly`): in WAL mode they never wait for the writer.
//!
//! Statements are prepared once per connection and cached.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::arg::Arg;

/// Idle reader connections kept per database.
const IDLE_READERS: usize = 8;
/// Prepared statements cached per connection.
const STATEMENT_CACHE: usize = 256;

/// One SQLite database file, as this process uses it.
pub struct LiteDb {
    path: PathBuf,
    read_only: bool,
    writer: Arc<Mutex<Connection>>,
    readers: std::sync::Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for LiteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiteDb").field("path", &self.path).finish()
    }
}

/// Rows a statement returned, with how many rows it changed.
pub struct Output {
    pub rows_affected: u64,
    pub rows: Vec<LiteRow>,
}

/// A result row: its values, and the statement's column names (shared by its rows).
#[derive(Debug, Clone)]
pub struct LiteRow {
    columns: Arc<[String]>,
    values: Vec<SqlValue>,
}

impl LiteRow {
    /// The value at a column position.
    ///
    /// # Errors
    /// No such column.
    pub fn value(&self, index: usize) -> Result<&SqlValue, sqlx::Error> {
        self.values
            .get(index)
            .ok_or_else(|| sqlx::Error::ColumnIndexOutOfBounds {
                index,
                len: self.values.len(),
            })
    }

    /// The position of a named column.
    ///
    /// # Errors
    /// No such column.
    pub fn position(&self, name: &str) -> Result<usize, sqlx::Error> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| sqlx::Error::ColumnNotFound(name.to_string()))
    }
}

impl LiteDb {
    /// Opens (creating when missing, unless `read_only`) the database at `path` in WAL
    /// mode with `synchronous = NORMAL`: durable across a killed process; a power loss
    /// may lose the last commits.
    ///
    /// # Errors
    /// The file cannot be opened.
    ///
    /// A file is open once per process: opening it again (the projector and the read
    /// API both open the read models) gives the same handle, so its one writer is the
    /// only writer here.
    pub fn open(path: &Path, read_only: bool) -> Result<Arc<LiteDb>, sqlx::Error> {
        static OPEN: std::sync::Mutex<Vec<(PathBuf, bool, std::sync::Weak<LiteDb>)>> =
            std::sync::Mutex::new(Vec::new());
        let mut open = OPEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.retain(|(_, _, db)| db.strong_count() > 0);
        // The directory's canonical name (the file may not exist yet) and the file's.
        let key = match (path.parent(), path.file_name()) {
            (Some(dir), Some(file)) => std::fs::canonicalize(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
            .map(|dir| dir.join(file))
            .unwrap_or_else(|_| path.to_path_buf()),
            _ => path.to_path_buf(),
        };
        if let Some(db) = open
            .iter()
            .find(|(p, r, _)| *p == key && *r == read_only)
            .and_then(|(_, _, db)| db.upgrade())
        {
            return Ok(db);
        }
        let writer = connect(path, read_only, true)?;
        let db = Arc::new(LiteDb {
            path: path.to_path_buf(),
            read_only,
            writer: Arc::new(Mutex::new(writer)),
            readers: std::sync::Mutex::new(Vec::new()),
        });
        open.push((key, read_only, Arc::downgrade(&db)));
        Ok(db)
    }

    /// Runs scripts (several statements each, no parameters) in one transaction.
    ///
    /// # Errors
    /// A statement failed; nothing of the scripts is kept.
    pub async fn execute_scripts(&self, scripts: &[String]) -> Result<(), sqlx::Error> {
        let tx = self.begin().await?;
        for script in scripts {
            tx.conn()
                .execute_batch(script)
                .map_err(|e| error(e, script))?;
        }
        tx.commit()
    }

    /// Starts a transaction holding the writer (`BEGIN IMMEDIATE`).
    ///
    /// # Errors
    /// SQLite refused to begin (e.g. another process held the file past the busy
    /// timeout).
    pub async fn begin(&self) -> Result<LiteTx, sqlx::Error> {
        let conn = self.writer.clone().lock_owned().await;
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| error(e, "BEGIN IMMEDIATE"))?;
        Ok(LiteTx { conn })
    }

    /// Runs one statement outside any transaction: on a reader when SQLite reports it
    /// read-only, else on the writer (waiting for a transaction that holds it).
    ///
    /// # Errors
    /// The statement failed.
    pub async fn run(
        &self,
        sql: &str,
        args: Vec<Arg>,
        limit: Option<usize>,
    ) -> Result<Output, sqlx::Error> {
        {
            let reader = self.reader()?;
            let statement = reader
                .conn()
                .prepare_cached(sql)
                .map_err(|e| error(e, sql))?;
            if statement.readonly() {
                return execute(statement, reader.conn(), sql, args, limit);
            }
        }
        let writer = self.writer.lock().await;
        let statement = writer.prepare_cached(sql).map_err(|e| error(e, sql))?;
        execute(statement, &writer, sql, args, limit)
    }

    fn reader(&self) -> Result<Reader<'_>, sqlx::Error> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => connect(&self.path, self.read_only, false)?,
        };
        Ok(Reader {
            db: self,
            conn: Some(conn),
        })
    }
}

/// A reader connection, back to the idle list when dropped.
struct Reader<'a> {
    db: &'a LiteDb,
    conn: Option<Connection>,
}

impl Reader<'_> {
    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("reader taken")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self
                .db
                .readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
        }
    }
}

/// A transaction on the writer; rolled back when dropped still open (also after a
/// failed `COMMIT`).
pub struct LiteTx {
    conn: OwnedMutexGuard<Connection>,
}

impl std::fmt::Debug for LiteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiteTx")
    }
}

impl LiteTx {
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// # Errors
    /// The commit failed; the transaction is rolled back.
    pub fn commit(self) -> Result<(), sqlx::Error> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| error(e, "COMMIT"))
    }

    /// # Errors
    /// The rollback failed (the transaction is gone either way).
    pub fn rollback(self) -> Result<(), sqlx::Error> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn
            .execute_batch("ROLLBACK")
            .map_err(|e| error(e, "ROLLBACK"))
    }
}

impl Drop for LiteTx {
    fn drop(&mut self) {
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK").ok();
        }
    }
}

fn connect(path: &Path, read_only: bool, writer: bool) -> Result<Connection, sqlx::Error> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let open = |path: &Path| -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        if writer && !read_only {
            // Persistent in the file: set once, by the writer.
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        }
        // No memory map: pages mapped from every database file counted in the process's
        // resident set (`shop bench`, `shop dev` at 2,000 orders/s: peak RSS 217–232 MiB
        // with a 256 MiB map, half of it file pages; 142–143 MiB without, deciding as many
        // orders with a lower p99). The write-ahead log is copied back into the file every
        // 4,000 pages (16 MiB) rather than 1,000, so a page written again and again is
        // copied back once.
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA mmap_size = 0; PRAGMA wal_autocheckpoint = 4000",
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    };
    open(path).map_err(|e| match e {
        rusqlite::Error::SqliteFailure(..) => error(e, &format!("open {}", path.display())),
        other => sqlx::Error::Configuration(Box::new(other)),
    })
}

/// Runs one statement on `conn` (a transaction's writer).
///
/// # Errors
/// The statement failed.
pub fn run_on(
    conn: &Connection,
    sql: &str,
    args: Vec<Arg>,
    limit: Option<usize>,
) -> Result<Output, sqlx::Error> {
    let statement = conn.prepare_cached(sql).map_err(|e| error(e, sql))?;
    execute(statement, conn, sql, args, limit)
}

/// Binds `args` to the prepared statement and runs it; at most `limit` rows are read.
fn execute(
    mut statement: rusqlite::CachedStatement<'_>,
    conn: &Connection,
    sql: &str,
    args: Vec<Arg>,
    limit: Option<usize>,
) -> Result<Output, sqlx::Error> {
    for (i, arg) in args.into_iter().enumerate() {
        bind(&mut statement, i + 1, arg).map_err(|e| error(e, sql))?;
    }
    if statement.column_count() == 0 {
        let changed = statement.raw_execute().map_err(|e| error(e, sql))?;
        return Ok(Output {
            rows_affected: changed as u64,
            rows: Vec::new(),
        });
    }
    let columns: Arc<[String]> = statement
        .column_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    let width = columns.len();
    let mut rows = Vec::new();
    {
        let mut cursor = statement.raw_query();
        while limit.is_none_or(|limit| rows.len() < limit) {
            let Some(row) = cursor.next().map_err(|e| error(e, sql))? else {
                break;
            };
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(SqlValue::from(row.get_ref(i).map_err(|e| error(e, sql))?));
            }
            rows.push(LiteRow {
                columns: columns.clone(),
                values,
            });
        }
    }
    // `changes()` is the last data change on the connection: a read changed nothing.
    let rows_affected = if statement.readonly() {
        0
    } else {
        conn.changes()
    };
    Ok(Output {
        rows_affected,
        rows,
    })
}

fn bind(statement: &mut rusqlite::Statement<'_>, index: usize, arg: Arg) -> rusqlite::Result<()> {
    use crate::arg::sqlite_time;
    match arg {
        Arg::I64(v) => statement.raw_bind_parameter(index, v),
        Arg::I32(v) => statement.raw_bind_parameter(index, v),
        Arg::F64(v) => statement.raw_bind_parameter(index, v),
        Arg::Bool(v) => statement.raw_bind_parameter(index, v),
        Arg::Text(v) => statement.raw_bind_parameter(index, v),
        Arg::Bytes(v) => statement.raw_bind_parameter(index, v),
        Arg::Uuid(v) => statement.raw_bind_parameter(index, v.map(|u| u.hyphenated().to_string())),
        Arg::Time(v) => statement.raw_bind_parameter(index, v.as_ref().map(sqlite_time)),
        Arg::Json(v) => statement.raw_bind_parameter(index, v.map(|v| v.to_string())),
        // Lists (and row-set columns, typed arrays on PostgreSQL) as JSON arrays, read
        // with `json_each`; UUIDs as hyphenated text, as they are stored.
        Arg::UuidList(v) => statement.raw_bind_parameter(index, json_text(&v)),
        Arg::I64List(v) => statement.raw_bind_parameter(index, json_text(&v)),
        Arg::TextList(v) => statement.raw_bind_parameter(index, json_text(&v)),
        Arg::OptUuidList(v) => statement.raw_bind_parameter(index, json_text(&v)),
        Arg::OptI64List(v) => statement.raw_bind_parameter(index, json_text(&v)),
        Arg::OptTextList(v) => statement.raw_bind_parameter(index, json_text(&v)),
        Arg::OptTimeList(v) => statement.raw_bind_parameter(
            index,
            json_text(
                &v.iter()
                    .map(|t| t.as_ref().map(sqlite_time))
                    .collect::<Vec<_>>(),
            ),
        ),
    }
}

/// A list as JSON text (ids, numbers and text always serialise).
fn json_text(list: &impl serde::Serialize) -> String {
    serde_json::to_string(list).expect("a list of ids, numbers or text serialises")
}

/// An SQLite failure as the `sqlx::Error` the rest of the code inspects
/// ([`crate::sql::is_unique_violation`], [`crate::sql::is_check_violation`]).
fn error(e: rusqlite::Error, sql: &str) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(failure, message) => {
            sqlx::Error::Database(Box::new(LiteError {
                code: failure.extended_code,
                message: message.unwrap_or_else(|| failure.to_string()),
            }))
        }
        other => sqlx::Error::Protocol(format!("{other} (in {sql})")),
    }
}

/// An error SQLite reported, with its extended result code.
#[derive(Debug)]
pub struct LiteError {
    code: i32,
    message: String,
}

impl std::fmt::Display for LiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LiteError {}

impl sqlx::error::DatabaseError for LiteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                sqlx::error::ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => sqlx::error::ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => sqlx::error::ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => sqlx::error::ErrorKind::CheckViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

/// Decoding of a value read from SQLite into the types [`crate::sql::Column`] knows.
pub fn as_i64(value: &SqlValue) -> Result<Option<i64>, sqlx::Error> {
    match value {
        SqlValue::Null => Ok(None),
        SqlValue::Integer(i) => Ok(Some(*i)),
        SqlValue::Real(f) if f.fract() == 0.0 => Ok(Some(*f as i64)),
        other => Err(mismatch("an integer", other)),
    }
}

pub fn as_f64(value: &SqlValue) -> Result<Option<f64>, sqlx::Error> {
    match value {
        SqlValue::Null => Ok(None),
        SqlValue::Integer(i) => Ok(Some(*i as f64)),
        SqlValue::Real(f) => Ok(Some(*f)),
        other => Err(mismatch("a number", other)),
    }
}

pub fn as_text(value: &SqlValue) -> Result<Option<String>, sqlx::Error> {
    match value {
        SqlValue::Null => Ok(None),
        SqlValue::Text(s) => Ok(Some(s.clone())),
        SqlValue::Integer(i) => Ok(Some(i.to_string())),
        SqlValue::Real(f) => Ok(Some(f.to_string())),
        SqlValue::Blob(b) => String::from_utf8(b.clone())
            .map(Some)
            .map_err(|e| sqlx::Error::Decode(Box::new(e))),
    }
}

pub fn as_bytes(value: &SqlValue) -> Result<Option<Vec<u8>>, sqlx::Error> {
    match value {
        SqlValue::Null => Ok(None),
        SqlValue::Blob(b) => Ok(Some(b.clone())),
        SqlValue::Text(s) => Ok(Some(s.clone().into_bytes())),
        other => Err(mismatch("bytes", other)),
    }
}

/// `parse` applied to a text value (`None` for NULL).
///
/// # Errors
/// The value is not text, or `parse` refused it.
pub fn with_text<T>(
    value: &SqlValue,
    parse: impl FnOnce(&str) -> Result<T, sqlx::Error>,
) -> Result<Option<T>, sqlx::Error> {
    match value {
        SqlValue::Null => Ok(None),
        SqlValue::Text(s) => parse(s).map(Some),
        other => Err(mismatch("text", other)),
    }
}

fn mismatch(wanted: &str, got: &SqlValue) -> sqlx::Error {
    let got = match ValueRef::from(got).data_type() {
        rusqlite::types::Type::Null => "NULL",
        rusqlite::types::Type::Integer => "INTEGER",
        rusqlite::types::Type::Real => "REAL",
        rusqlite::types::Type::Text => "TEXT",
        rusqlite::types::Type::Blob => "BLOB",
    };
    sqlx::Error::Decode(format!("expected {wanted}, found {got}").into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sql, Pool};

    fn temp_db() -> (PathBuf, Pool) {
        let dir = std::env::temp_dir().join(format!("shop-lite-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = LiteDb::open(&dir.join("t.db"), false).unwrap();
        (dir, db.into())
    }

    #[tokio::test]
    async fn reads_do_not_wait_for_a_transaction_and_a_dropped_one_rolls_back() {
        let (dir, pool) = temp_db();
        sql::query("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
            .execute(&pool)
            .await
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        sql::query("INSERT INTO t (id, name) VALUES ($2, $1)")
            .bind("a")
            .bind(1i64)
            .execute(&mut tx)
            .await
            .unwrap();
        // The writer is held; a read outside the transaction answers at once, without it.
        let outside: i64 = tokio::time::timeout(
            Duration::from_secs(5),
            sql::query_scalar("SELECT count(*) FROM t").fetch_one(&pool),
        )
        .await
        .expect("a read waited for the writer")
        .unwrap();
        assert_eq!(outside, 0);
        let inside: String = sql::query_scalar("SELECT name FROM t WHERE id = $1")
            .bind(1i64)
            .fetch_one(&mut tx)
            .await
            .unwrap();
        assert_eq!(inside, "a");
        drop(tx);
        let after: Option<String> = sql::query_scalar("SELECT name FROM t")
            .fetch_optional(&pool)
            .await
            .unwrap();
        assert_eq!(after, None, "a dropped transaction must roll back");
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn constraint_failures_and_nulls_read_as_on_postgres() {
        let (dir, pool) = temp_db();
        sql::query(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER CHECK (n >= 0))",
        )
        .execute(&pool)
        .await
        .unwrap();
        sql::query("INSERT INTO t (id, name, n) VALUES (1, 'a', NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let duplicate = sql::query("INSERT INTO t (id, name) VALUES (2, 'a')")
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(
            sql::is_unique_violation(&duplicate, "t_name_key", "t"),
            "{duplicate}"
        );
        let negative = sql::query("INSERT INTO t (id, n) VALUES (3, -1)")
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(sql::is_check_violation(&negative), "{negative}");
        let n: Option<i64> = sql::query_scalar("SELECT n FROM t WHERE id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, None);
        let not_null = sql::query_scalar::<i64>("SELECT n FROM t WHERE id = 1")
            .fetch_one(&pool)
            .await;
        assert!(not_null.is_err(), "NULL read as a plain integer must fail");
        let changed = sql::query("UPDATE t SET n = 5 WHERE id IN (1, 2)")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(changed.rows_affected(), 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_file_opened_twice_shares_its_writer() {
        let dir = std::env::temp_dir().join(format!("shop-lite-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = LiteDb::open(&dir.join("t.db"), false).unwrap();
        let b = LiteDb::open(&dir.join("./t.db"), false).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        std::fs::remove_dir_all(dir).ok();
    }
}
