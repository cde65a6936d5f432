//! Projectors: read models as a pure function of the event log.
//!
//! Each projection is one consumer (its own group, checkpoints and dedup records) over
//! the topics it needs, writing its tables in the read-model database. The read API reads
//! those tables and never writes them.
#![forbid(unsafe_code)]

pub mod customers;
pub mod orders;
pub mod products;

use axum::Router;
use shop_eventing::consumer::EventHandler;
use shop_eventing::db::{self, DbError};
use shop_eventing::platform::{Platform, Started};
use shop_eventing::sql::Pool;
use std::sync::Arc;

/// The read-model database's component name (`<instance>_read`).
pub const READ_DATABASE: &str = "read";
pub const COMPONENT: &str = "projector";
/// The read-model tables.
pub const SCHEMA: &str = include_str!("../sql/read_models.sql");

/// A projection's public face: its name and the consumer it runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionInfo {
    /// As in `GET /api/projections` and `shop replay`.
    pub name: &'static str,
    /// The consumer name under which its checkpoints are kept.
    pub consumer: &'static str,
    /// The services whose topics it reads.
    pub sources: &'static [shop_schemas::Service],
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
    db::open(
        &platform.database,
        READ_DATABASE,
        &[shop_eventing::consumer::SCHEMA, SCHEMA],
    )
    .await
}

/// Starts every projection.
///
/// # Errors
/// The database is unreachable.
pub async fn start(platform: &Platform) -> Result<Started, DbError> {
    let pool = open_read_database(platform).await?;
    let mut tasks = Vec::new();
    for info in PROJECTIONS {
        let runner = platform
            .consumer(pool.clone(), info.consumer, info.sources, handler(info))
            .tracking_versions();
        tasks.push(tokio::spawn(runner.run(platform.shutdown.clone())));
    }
    let router = platform.component_router(Router::new(), pool, COMPONENT);
    Ok(Started { router, tasks })
}
