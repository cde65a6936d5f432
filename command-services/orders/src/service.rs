//! Wiring of the orders service: its database (event store, outbox, consumer tables,
//! catalogue replica), the relay, its reactions and the REST routes.

use std::sync::Arc;

use shop_eventing::command::CommandBus;
use shop_eventing::db::DbError;
use shop_eventing::platform::{Platform, Started};
use shop_eventing::store::PgEventStore;
use shop_schemas::Service;

use crate::api::{self, AppState};
use crate::reactions::{CatalogueReplica, CATALOGUE};

pub const COMPONENT: &str = "orders";
const SCHEMA: &str = include_str!("../sql/orders.sql");

/// Opens the database, starts the relay and the reactions, builds the routes.
///
/// # Errors
/// The database is unreachable.
pub async fn start(platform: &Platform) -> Result<Started, DbError> {
    let pool = platform
        .open_command_database(Service::Orders, SCHEMA)
        .await?;
    let catalogue = platform.consumer(
        pool.clone(),
        CATALOGUE,
        &[Service::Inventory],
        Arc::new(CatalogueReplica),
    );
    let tasks = platform.spawn_service_tasks(&pool, Service::Orders, vec![catalogue]);
    let state = AppState {
        bus: Arc::new(CommandBus::new(PgEventStore::new(pool.clone()), ())),
        pool: pool.clone(),
        jwt: platform.jwt.clone(),
    };
    let router = platform.component_router(api::router(state), pool, COMPONENT);
    Ok(Started { router, tasks })
}
