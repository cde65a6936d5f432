//! Values bound to statements' placeholders ([`Arg`]), for either backend, and the text
//! form SQLite stores a timestamp in. Part of the SQL layer ([`crate::sql`] re-exports
//! both); the SQLite engine ([`crate::lite`]) reads them without depending on the rest.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// A value bound to a placeholder.
#[derive(Debug, Clone)]
pub enum Arg {
    I64(Option<i64>),
    I32(Option<i32>),
    F64(Option<f64>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Uuid(Option<Uuid>),
    Time(Option<DateTime<Utc>>),
    Json(Option<Value>),
    /// A list for [`Dialect::in_list`].
    UuidList(Vec<Uuid>),
    I64List(Vec<i64>),
    TextList(Vec<String>),
    /// A column of a [`RowSet`] (PostgreSQL arrays with NULLs).
    OptUuidList(Vec<Option<Uuid>>),
    OptI64List(Vec<Option<i64>>),
    OptTextList(Vec<Option<String>>),
    OptTimeList(Vec<Option<DateTime<Utc>>>),
}

impl Arg {
    /// A list of UUIDs for [`Dialect::in_list`].
    pub fn list(ids: &[Uuid]) -> Arg {
        Arg::UuidList(ids.to_vec())
    }
}

macro_rules! into_arg {
    ($($ty:ty => $variant:ident $(($conv:expr))?),* $(,)?) => {
        $(
            impl From<$ty> for Arg {
                fn from(v: $ty) -> Arg {
                    Arg::$variant(Some(into_arg!(@conv v $(, $conv)?)))
                }
            }
            impl From<Option<$ty>> for Arg {
                fn from(v: Option<$ty>) -> Arg {
                    Arg::$variant(v.map(|v| into_arg!(@conv v $(, $conv)?)))
                }
            }
        )*
    };
    (@conv $v:ident) => { $v };
    (@conv $v:ident, $conv:expr) => { $conv($v) };
}

into_arg! {
    i64 => I64,
    i32 => I32,
    f64 => F64,
    bool => Bool,
    String => Text,
    Vec<u8> => Bytes,
    Uuid => Uuid,
    DateTime<Utc> => Time,
    Value => Json,
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(Some(v.to_string()))
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(Some(v.clone()))
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Arg {
        Arg::Text(v.map(str::to_string))
    }
}

impl From<&[Uuid]> for Arg {
    fn from(v: &[Uuid]) -> Arg {
        Arg::UuidList(v.to_vec())
    }
}

impl From<&Vec<Uuid>> for Arg {
    fn from(v: &Vec<Uuid>) -> Arg {
        Arg::UuidList(v.clone())
    }
}

impl From<Vec<Uuid>> for Arg {
    fn from(v: Vec<Uuid>) -> Arg {
        Arg::UuidList(v)
    }
}

impl From<&Vec<i64>> for Arg {
    fn from(v: &Vec<i64>) -> Arg {
        Arg::I64List(v.clone())
    }
}

impl From<&[&str]> for Arg {
    fn from(v: &[&str]) -> Arg {
        Arg::TextList(v.iter().map(|s| s.to_string()).collect())
    }
}

impl From<Vec<String>> for Arg {
    fn from(v: Vec<String>) -> Arg {
        Arg::TextList(v)
    }
}

/// SQLite's text form of a timestamp: fixed width, so text order is time order.
pub fn sqlite_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}
