//! Result rows of either backend ([`Row`]) and how their columns are read ([`Column`],
//! [`FromRow`]).

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::lite::{self, LiteRow};

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

pub(crate) fn parse_sqlite_time(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    // `CURRENT_TIMESTAMP` defaults: `YYYY-MM-DD HH:MM:SS` in UTC.
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc())
        .map_err(|e| sqlx::Error::Decode(format!("timestamp {text:?}: {e}").into()))
}
