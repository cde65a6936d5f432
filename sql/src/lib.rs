//! Shop's portable SQL layer: what domain SQL needs — queries, binds, rows, transactions —
//! over a PostgreSQL pool (production) or an embedded SQLite database (`shop dev`). It
//! knows nothing of events, relays or aggregates; the event-sourcing core
//! (`shop-eventing`) and the domain crates are written against it.
//!
//! - the crate root: one API over both backends, mirroring sqlx's — statements
//!   (`sql.rs`: [`query`], [`query_as`], [`query_scalar`], table renames), pools and
//!   connections (`conn.rs`: [`Pool`], [`Conn`]), bound values (`arg.rs`: [`Arg`]), whole
//!   batches bound as one (`rowset.rs`: [`RowSet`]), result rows (`row.rs`: [`Row`],
//!   [`Column`], [`FromRow`]) and the two dialects (`dialect.rs`: [`Dialect`]);
//! - [`lite`]: the embedded SQLite engine behind [`Pool::Sqlite`];
//! - [`db`]: a component's database: create, connect, apply its schema;
//! - [`signal`]: the in-process notification of commits (what `LISTEN/NOTIFY` is between
//!   processes).
#![forbid(unsafe_code)]

mod arg;
mod conn;
pub mod db;
mod dialect;
pub mod lite;
mod row;
mod rowset;
pub mod signal;
mod sql;

pub use arg::{sqlite_time, Arg};
pub use conn::*;
pub use dialect::Dialect;
pub use row::*;
pub use rowset::*;
pub use sql::*;
