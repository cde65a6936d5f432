//! Many rows bound as one value ([`RowSet`]): a whole batch written by one statement,
//! each column travelling typed (PostgreSQL arrays) or as one JSON array (SQLite).

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::arg::sqlite_time;
use crate::arg::Arg;
use crate::conn::Conn;
use crate::dialect::Dialect;
use crate::sql::query;

impl Dialect {
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

/// A boolean (for a `BOOLEAN` column) as `1` or `0`: text PostgreSQL casts to a boolean,
/// and that SQLite's numeric affinity stores as the integer it uses for one.
impl From<bool> for Cell {
    fn from(v: bool) -> Cell {
        Cell::Text(if v { "1" } else { "0" }.to_string())
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
    /// [`RowSet::execute`] plans its statement at each run ([`crate::Query::replanned`]).
    replanned: bool,
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
            replanned: false,
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

    /// [`RowSet::execute`] plans its statement at each run, for the batch and the
    /// tables as they are ([`crate::Query::replanned`]): for a statement that looks the
    /// rows up in a table that grows (an `UPDATE … FROM` the rows).
    pub fn replanned(mut self) -> Self {
        self.replanned = true;
        self
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
        if self.replanned {
            query = query.replanned();
        }
        for arg in leading.into_iter().chain(self.into_args(dialect)?) {
            query = query.bind(arg);
        }
        Ok(query.execute(&mut *tx).await?.rows_affected())
    }
}
