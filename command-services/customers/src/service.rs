//! Wiring of the customers service: its database (event store, outbox, credentials),
//! the outbox relay and the REST routes.

use std::sync::Arc;

use shop_eventing::command::CommandBus;
use shop_eventing::platform::{Platform, Started};
use shop_eventing::store::EventStore;
use shop_schemas::Service;
use shop_web::auth;
use uuid::Uuid;

use crate::api::{self, AppState};
use crate::credentials::{Credentials, ImportedCredentials};

pub const COMPONENT: &str = "customers";
const SCHEMA: &str = include_str!("../sql/customers.sql");

/// Opens the database, starts the relay and builds the routes. The admin password is
/// hashed here and the clear text is not kept.
///
/// # Errors
/// The database is unreachable, or hashing fails.
pub async fn start(
    platform: &Platform,
    admin_password: &str,
) -> Result<Started, Box<dyn std::error::Error + Send + Sync>> {
    let pool = platform
        .open_command_database(Service::Customers, SCHEMA)
        .await?;
    let credentials = Arc::new(Credentials::default());
    let store = EventStore::new(pool.clone()).with_hook(credentials.clone());
    let tasks = platform.spawn_service_tasks(&pool, Service::Customers, vec![]);
    let state = AppState {
        bus: Arc::new(CommandBus::new(store, ())),
        credentials,
        pool: pool.clone(),
        jwt: platform.jwt.clone(),
        admin_hash: auth::hash_password(admin_password)
            .map_err(|e| e.to_string())?
            .into(),
    };
    let router = platform.component_router(
        api::router(state).merge(shop_eventing::events_api::router(
            shop_schemas::Service::Customers,
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
pub async fn import_store(platform: &Platform) -> Result<EventStore, shop_sql::db::DbError> {
    let pool = platform
        .open_command_database(Service::Customers, SCHEMA)
        .await?;
    let secret = format!("{}{}", Uuid::new_v4(), Uuid::new_v4());
    let hash = auth::hash_password(&secret)
        .map_err(|e| shop_sql::db::DbError::Sql(sqlx::Error::Protocol(format!("hashing: {e}"))))?;
    Ok(EventStore::new(pool).with_hook(Arc::new(ImportedCredentials { hash })))
}
