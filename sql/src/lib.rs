//! Shop's portable SQL layer: what domain SQL needs — queries, binds, rows, transactions —
//! over a PostgreSQL pool (production) or an embedded SQLite database (`shop dev`). It
//! knows nothing of events, relays or aggregates; the event-sourcing core
//! (`shop-eventing`) and the domain crates are written against it.
//!
//! - the crate root ([`Pool`], [`Conn`], [`query`], [`Arg`], [`RowSet`], …): one API over
//!   both backends, mirroring sqlx's;
//! - [`lite`]: the embedded SQLite engine behind [`Pool::Sqlite`];
//! - [`db`]: a component's database: create, connect, apply its schema;
//! - [`signal`]: the in-process notification of commits (what `LISTEN/NOTIFY` is between
//!   processes).
#![forbid(unsafe_code)]

mod arg;
pub mod db;
pub mod lite;
pub mod signal;
mod sql;

pub use sql::*;
