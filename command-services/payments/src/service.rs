//! Wiring of the payments service: its database (event store, outbox, consumer tables,
//! known customers), the relay, its reactions and the REST routes.

use std::sync::Arc;

use shop_eventing::command::CommandBus;
use shop_eventing::platform::{Platform, Started};
use shop_eventing::store::EventStore;
use shop_schemas::Service;
use shop_sql::db::DbError;

use crate::api::{self, AppState};
use crate::reactions::{KnownCustomers, OrderPayments, CHARGES, CHARGES_SOURCES, KNOWN_CUSTOMERS};
use crate::wallet::WalletCommand;

pub const COMPONENT: &str = "payments";
const SCHEMA: &str = include_str!("../sql/payments.sql");

/// Opens the database, starts the relay and the reactions, builds the routes.
///
/// # Errors
/// The database is unreachable.
pub async fn start(platform: &Platform) -> Result<Started, DbError> {
    let pool = platform
        .open_command_database(Service::Payments, SCHEMA)
        .await?;
    let known_customers = platform.consumer(
        pool.clone(),
        KNOWN_CUSTOMERS,
        &[Service::Customers],
        Arc::new(KnownCustomers),
    );
    // Deposits add up whatever their order: a lost race is re-run, not answered 409.
    let bus = Arc::new(
        CommandBus::with_snapshots(EventStore::new(pool.clone()), (), 100)
            .commuting(|command| matches!(command, WalletCommand::Deposit { .. })),
    );
    let charges = platform
        .consumer(
            pool.clone(),
            CHARGES,
            CHARGES_SOURCES,
            Arc::new(OrderPayments { bus: bus.clone() }),
        )
        .replaying_imports();
    let tasks =
        platform.spawn_service_tasks(&pool, Service::Payments, vec![known_customers, charges]);
    let state = AppState {
        bus,
        pool: pool.clone(),
        jwt: platform.jwt.clone(),
    };
    let router = platform.component_router(
        api::router(state).merge(shop_eventing::events_api::router(
            shop_schemas::Service::Payments,
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
        .open_command_database(Service::Payments, SCHEMA)
        .await?;
    Ok(EventStore::new(pool))
}
