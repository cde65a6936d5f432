//! Wiring of the customers service: its database (event store, outbox, credentials),
//! the outbox relay and the REST routes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use shop_eventing::auth;
use shop_eventing::command::CommandBus;
use shop_eventing::platform::{Platform, Started};
use shop_eventing::sql::{self, Conn};
use shop_eventing::store::{AppendHook, EventStore, HookError, StoredEvent};
use shop_schemas::Service;
use uuid::Uuid;

use crate::api::{self, AppState};

pub const COMPONENT: &str = "customers";
const SCHEMA: &str = include_str!("../sql/customers.sql");

/// Writes `customer_credentials` inside the append transaction of `CustomerRegistered`.
///
/// The Argon2id hash is staged here by the request that registers the customer (keyed
/// by the fresh customer id) just before the command runs, so it is stored atomically
/// with the event without ever being part of it.
#[derive(Default)]
pub struct Credentials {
    staged: Mutex<HashMap<Uuid, String>>,
}

impl Credentials {
    pub fn stage(&self, customer_id: Uuid, password_hash: String) {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(customer_id, password_hash);
    }

    pub fn discard(&self, customer_id: Uuid) {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&customer_id);
    }

    fn staged(&self, customer_id: Uuid) -> Option<String> {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&customer_id)
            .cloned()
    }
}

impl AppendHook for Credentials {
    fn on_append<'a>(
        &'a self,
        tx: &'a mut Conn,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), HookError>> {
        async move {
            for event in events
                .iter()
                .filter(|e| e.event_type == "CustomerRegistered")
            {
                let customer_id = registered_customer(event)?;
                let hash = self.staged(customer_id).ok_or_else(|| {
                    HookError::Refused(format!("no staged credentials for {customer_id}"))
                })?;
                if !record_credentials(tx, event, customer_id, &hash).await? {
                    return Err(HookError::Taken {
                        what: "the email".into(),
                    });
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn touches(&self, event_type: &str) -> bool {
        event_type == "CustomerRegistered"
    }
}

fn registered_customer(event: &StoredEvent) -> Result<Uuid, HookError> {
    event.data["customer_id"]
        .as_str()
        .and_then(|s| s.parse::<Uuid>().ok())
        .ok_or_else(|| HookError::Refused("CustomerRegistered without customer_id".into()))
}

/// Keeps a registered customer's credentials beside its event; false when the email is
/// already taken.
async fn record_credentials(
    tx: &mut Conn,
    event: &StoredEvent,
    customer_id: Uuid,
    hash: &str,
) -> Result<bool, HookError> {
    let inserted = sql::query(
        "INSERT INTO customer_credentials (email, customer_id, password_hash) VALUES ($1, $2, $3) ON CONFLICT (email) DO NOTHING",
    )
    .bind(event.data["email"].as_str().unwrap_or_default())
    .bind(customer_id)
    .bind(hash)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

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

/// Credentials of customers imported from another instance (`shop import`): passwords do
/// not travel with events, so imported customers get the Argon2id hash of a random secret
/// nobody keeps — no password signs them in until it is reset.
struct ImportedCredentials {
    hash: String,
}

impl AppendHook for ImportedCredentials {
    fn on_append<'a>(
        &'a self,
        tx: &'a mut Conn,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), HookError>> {
        async move {
            for event in events
                .iter()
                .filter(|e| e.event_type == "CustomerRegistered")
            {
                record_credentials(tx, event, registered_customer(event)?, &self.hash).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn touches(&self, event_type: &str) -> bool {
        event_type == "CustomerRegistered"
    }
}

/// The service's store for `shop import`.
///
/// # Errors
/// The database is unreachable.
pub async fn import_store(platform: &Platform) -> Result<EventStore, shop_eventing::db::DbError> {
    let pool = platform
        .open_command_database(Service::Customers, SCHEMA)
        .await?;
    let secret = format!("{}{}", Uuid::new_v4(), Uuid::new_v4());
    let hash = auth::hash_password(&secret).map_err(|e| {
        shop_eventing::db::DbError::Sql(sqlx::Error::Protocol(format!("hashing: {e}")))
    })?;
    Ok(EventStore::new(pool).with_hook(Arc::new(ImportedCredentials { hash })))
}
