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

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::Postgres;

use crate::arg::Arg;
use crate::conn::{Executor, Target};
use crate::row::{Column, FromRow, Row};

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
                ($pg)(
                    pg(&sql, $query.args, $query.replanned)
                        .$method(conn)
                        .await?,
                )
            }
            Target::PgPool(pool) => {
                let sql = renamed($query.sql);
                ($pg)(
                    pg(&sql, $query.args, $query.replanned)
                        .$method(pool)
                        .await?,
                )
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
    /// Planned at each execution ([`Query::replanned`]).
    replanned: bool,
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
        replanned: false,
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

    /// Plans the statement at each execution, for its values and the tables as they are
    /// then (PostgreSQL: the unnamed statement), instead of preparing it once per
    /// connection. For a batch's lookups into tables that grow: a prepared statement
    /// settles on a generic plan after five runs and keeps it until the table is next
    /// analyzed, so one planned while the table was nearly empty kept scanning all of it
    /// (`shop bench` at 500 orders/s: the projectors' `applied_versions` lookup read
    /// 27.5 million rows in 4,313 sequential scans). Planning costs a little at every
    /// run, so statements run once per batch, not per event, are the ones to mark.
    pub fn replanned(mut self) -> Self {
        self.replanned = true;
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

fn pg(sql: &str, args: Vec<Arg>, replanned: bool) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    args.into_iter()
        .fold(sqlx::query::<Postgres>(sql), bind_pg)
        .persistent(!replanned)
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

    /// See [`Query::replanned`].
    pub fn replanned(mut self) -> Self {
        self.query = self.query.replanned();
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

    /// See [`Query::replanned`].
    pub fn replanned(mut self) -> Self {
        self.rows = self.rows.replanned();
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
    use chrono::{DateTime, Utc};
    use serde_json::Value;
    use uuid::Uuid;

    use super::*;
    use crate::row::parse_sqlite_time;
    use crate::*;

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
