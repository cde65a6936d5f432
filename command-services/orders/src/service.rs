//! Wiring of the orders service: its database (event store, outbox, consumer tables,
//! catalogue replica), the relay, its reactions and the REST routes.

use std::sync::Arc;
use std::time::Duration;

use shop_eventing::command::CommandBus;
use shop_eventing::platform::{Platform, Started};
use shop_eventing::store::EventStore;
use shop_schemas::Service;
use shop_sql::db::DbError;

use crate::api::{self, AppState};
use crate::backlog::{self, Backlog};
use crate::deadline::{self, DeadlineTable};
use crate::reactions::{CatalogueReplica, OrderSaga, CATALOGUE, SAGA, SAGA_SOURCES};

pub const COMPONENT: &str = "orders";
const SCHEMA: &str = include_str!("../sql/orders.sql");

/// The orders service's settings.
#[derive(Debug, Clone, Copy)]
pub struct OrdersConfig {
    /// An order not confirmed within this is cancelled (`SHOP_SAGA_TIMEOUT_MS`).
    pub saga_timeout: Duration,
    /// New orders are refused while this many wait for the saga (`SHOP_ORDERS_MAX_PENDING`,
    /// 0: never).
    pub max_pending: u64,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        OrdersConfig {
            saga_timeout: Duration::from_secs(30),
            max_pending: 1000,
        }
    }
}

/// Opens the database, starts the relay, the reactions and the deadline worker, builds
/// the routes.
///
/// # Errors
/// The database is unreachable.
pub async fn start(platform: &Platform, config: OrdersConfig) -> Result<Started, DbError> {
    let pool = platform
        .open_command_database(Service::Orders, SCHEMA)
        .await?;
    let store =
        EventStore::new(pool.clone()).with_hook(Arc::new(DeadlineTable::new(config.saga_timeout)));
    let bus = Arc::new(CommandBus::new(store, ()));
    let catalogue = platform.consumer(
        pool.clone(),
        CATALOGUE,
        &[Service::Inventory],
        Arc::new(CatalogueReplica),
    );
    let saga = platform
        .consumer(
            pool.clone(),
            SAGA,
            SAGA_SOURCES,
            Arc::new(OrderSaga { bus: bus.clone() }),
        )
        .replaying_imports();
    let mut tasks = platform.spawn_service_tasks(&pool, Service::Orders, vec![catalogue, saga]);
    // Checks a few times per timeout, at most every second.
    let poll = (config.saga_timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    tasks.push(tokio::spawn(deadline::run(
        pool.clone(),
        bus.clone(),
        poll,
        platform.shutdown.clone(),
    )));
    let backlog = Backlog::new(config.max_pending);
    tasks.push(tokio::spawn(backlog::run(
        pool.clone(),
        backlog.clone(),
        platform.shutdown.clone(),
    )));
    let state = AppState {
        bus,
        pool: pool.clone(),
        jwt: platform.jwt.clone(),
        backlog,
    };
    let router = platform.component_router(
        api::router(state).merge(shop_eventing::events_api::router(
            shop_schemas::Service::Orders,
            pool.clone(),
            platform.jwt.clone(),
        )),
        pool,
        COMPONENT,
    );
    Ok(Started { router, tasks })
}

/// The service's store for `shop import` (deadlines kept by the same hook).
///
/// # Errors
/// The database is unreachable.
pub async fn import_store(
    platform: &Platform,
    config: OrdersConfig,
) -> Result<EventStore, DbError> {
    let pool = platform
        .open_command_database(Service::Orders, SCHEMA)
        .await?;
    Ok(EventStore::new(pool).with_hook(Arc::new(DeadlineTable::new(config.saga_timeout))))
}
