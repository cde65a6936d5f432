//! Projectors: read models as a pure function of the event log.
//!
//! Each projection is one consumer (its own group, checkpoints and dedup records) over
//! the topics it needs, writing its tables in the read-model database. The read API reads
//! those tables and never writes them.
#![forbid(unsafe_code)]

pub mod customers;
pub mod orders;
pub mod products;
pub mod versions;

use axum::Router;
use shop_eventing::handler::EventHandler;
use shop_eventing::platform::{Platform, Started};
use shop_sql::db::{self, DbError};
use shop_sql::Pool;
use std::sync::Arc;

/// The read-model database's component name (`<instance>_read`).
pub const READ_DATABASE: &str = "read";
pub const COMPONENT: &str = "projector";

/// A projection's public face: its name and the consumer it runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionInfo {
    /// As in `GET /api/projections` and `shop replay`.
    pub name: &'static str,
    /// The consumer name under which its checkpoints are kept.
    pub consumer: &'static str,
    /// The services whose topics it reads.
    pub sources: &'static [shop_schemas::Service],
    /// Its tables' DDL (idempotent).
    pub schema: &'static str,
    /// The tables it writes, and the indexes of those (a rebuild copies them under
    /// versioned names, see [`versions`]).
    pub tables: &'static [&'static str],
    pub indexes: &'static [&'static str],
    /// The revision of its tables and code: raised with every change to what it stores
    /// (a column, what an event writes). A projector whose live version has an older
    /// revision rebuilds it ([`versions`]); one that finds a newer revision leaves it to
    /// the newer build.
    pub revision: i64,
    /// Columns added since the first revision, as `(table, column, definition)`: added
    /// to the tables of existing versions (which `schema`'s `CREATE TABLE IF NOT EXISTS`
    /// leaves as they were), so this build's code runs on them until the rebuild to this
    /// revision replaces them.
    pub added_columns: &'static [(&'static str, &'static str, &'static str)],
}

/// Every projection.
pub const PROJECTIONS: &[ProjectionInfo] = &[products::INFO, customers::INFO, orders::INFO];

/// The projector of a projection.
pub fn handler(info: &ProjectionInfo) -> Arc<dyn EventHandler> {
    match info.name {
        "customers" => Arc::new(customers::CustomersProjection),
        "orders" => Arc::new(orders::OrdersProjection),
        _ => Arc::new(products::ProductsProjection),
    }
}

/// Opens (and creates) the read-model database.
///
/// # Errors
/// The database is unreachable.
pub async fn open_read_database(platform: &Platform) -> Result<Pool, DbError> {
    let pool = db::open(
        &platform.database,
        READ_DATABASE,
        &[
            shop_eventing::consumer::SCHEMA,
            products::INFO.schema,
            customers::INFO.schema,
            orders::INFO.schema,
            versions::SCHEMA,
        ],
    )
    .await?;
    versions::register(&pool).await?;
    Ok(pool)
}

/// Starts every projection: one consumer per live or rebuilding version, kept in line
/// with the versions table ([`versions::supervise`]).
///
/// # Errors
/// The database is unreachable.
pub async fn start(platform: &Platform) -> Result<Started, DbError> {
    let pool = open_read_database(platform).await?;
    let tasks = vec![tokio::spawn(versions::supervise(
        platform.clone(),
        pool.clone(),
        platform.shutdown.clone(),
    ))];
    let router = platform.component_router(Router::new(), pool, COMPONENT);
    Ok(Started { router, tasks })
}
