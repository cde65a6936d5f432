//! Wiring of the shipping service: its database (event store, outbox, consumer tables,
//! customers' countries, shipment requests), the relay, its reaction and the REST routes.

use std::sync::Arc;

use shop_eventing::command::CommandBus;
use shop_eventing::platform::{Platform, Started};
use shop_eventing::store::EventStore;
use shop_schemas::Service;
use shop_sql::db::DbError;

use crate::api::{self, AppState};
use crate::reactions::{ScheduleShipments, SHIPMENTS, SHIPMENTS_SOURCES};
use crate::shipment::SupportedCountries;

pub const COMPONENT: &str = "shipping";
const SCHEMA: &str = include_str!("../sql/shipping.sql");

/// The shipping service's settings.
#[derive(Debug, Clone, Default)]
pub struct ShippingConfig {
    /// `SHOP_SHIPPING_COUNTRIES`.
    pub countries: SupportedCountries,
}

/// Opens the database, starts the relay and the reaction, builds the routes.
///
/// # Errors
/// The database is unreachable.
pub async fn start(platform: &Platform, config: ShippingConfig) -> Result<Started, DbError> {
    let pool = platform
        .open_command_database(Service::Shipping, SCHEMA)
        .await?;
    let bus = Arc::new(CommandBus::new(
        EventStore::new(pool.clone()),
        config.countries,
    ));
    let shipments = platform
        .consumer(
            pool.clone(),
            SHIPMENTS,
            SHIPMENTS_SOURCES,
            Arc::new(ScheduleShipments { bus: bus.clone() }),
        )
        .replaying_imports();
    let tasks = platform.spawn_service_tasks(&pool, Service::Shipping, vec![shipments]);
    let state = AppState {
        bus,
        jwt: platform.jwt.clone(),
    };
    let router = platform.component_router(
        api::router(state).merge(shop_eventing::events_api::router(
            shop_schemas::Service::Shipping,
            pool.clone(),
            platform.jwt.clone(),
        )),
        pool,
        COMPONENT,
    );
    Ok(Started { router, tasks })
}

/// The service's store for `shop import`.
///
/// # Errors
/// The database is unreachable.
pub async fn import_store(platform: &Platform) -> Result<EventStore, DbError> {
    let pool = platform
        .open_command_database(Service::Shipping, SCHEMA)
        .await?;
    Ok(EventStore::new(pool))
}
