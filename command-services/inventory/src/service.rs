//! Wiring of the inventory service: its database (event store, outbox, SKU table), the
//! outbox relay and the REST routes.

use std::sync::Arc;

use axum::Router;
use futures::future::BoxFuture;
use futures::FutureExt;
use shop_eventing::command::CommandBus;
use shop_eventing::db::{self, DbError};
use shop_eventing::http::{ops_router, with_edge_layers};
use shop_eventing::platform::Platform;
use shop_eventing::store::{AppendHook, HookError, PgEventStore, StoredEvent};
use shop_schemas::Service;
use sqlx::PgConnection;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};

pub const COMPONENT: &str = "inventory";
const SCHEMA: &str = include_str!("../sql/inventory.sql");

/// Keeps `product_skus` in step with `ProductAdded`, inside the append transaction.
struct SkuIndex;

impl AppendHook for SkuIndex {
    fn on_append<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), HookError>> {
        async move {
            for event in events.iter().filter(|e| e.event_type == "ProductAdded") {
                let sku = event.data["sku"].as_str().unwrap_or_default();
                let product_id = event.data["product_id"].as_str().and_then(|s| s.parse::<uuid::Uuid>().ok());
                let inserted = sqlx::query("INSERT INTO product_skus (sku, product_id) VALUES ($1, $2) ON CONFLICT (sku) DO NOTHING")
                    .bind(sku)
                    .bind(product_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if inserted == 0 {
                    return Err(HookError::Taken { what: format!("sku {sku:?}") });
                }
            }
            Ok(())
        }
        .boxed()
    }
}

/// Opens (and creates) the service's database with its event store and SKU table.
///
/// # Errors
/// The database is unreachable.
pub async fn open_database(platform: &Platform) -> Result<sqlx::PgPool, DbError> {
    db::open(
        &platform.database,
        COMPONENT,
        &[shop_eventing::store::SCHEMA, SCHEMA],
    )
    .await
}

/// The service's event store: the shared store with the SKU index hook.
pub fn event_store(pool: sqlx::PgPool) -> PgEventStore {
    PgEventStore::new(pool).with_hook(Arc::new(SkuIndex))
}

/// Aggregates are loaded from a snapshot taken every this many events.
pub const SNAPSHOT_EVERY: usize = 100;

/// A started inventory service: its routes and its background tasks.
pub struct Started {
    pub router: Router,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Opens the database, starts the relay and builds the routes.
///
/// # Errors
/// The database is unreachable.
pub async fn start(platform: &Platform) -> Result<Started, DbError> {
    let pool = db::open(
        &platform.database,
        COMPONENT,
        &[shop_eventing::store::SCHEMA, SCHEMA],
    )
    .await?;
    let store = PgEventStore::new(pool.clone()).with_hook(Arc::new(SkuIndex));
    let relay = platform.relay(pool.clone(), Service::Inventory);
    let tasks = vec![tokio::spawn(relay.run(platform.shutdown.clone()))];
    let state = AppState {
        bus: Arc::new(CommandBus::with_snapshots(store, (), SNAPSHOT_EVERY)),
        jwt: platform.jwt.clone(),
    };
    let router = with_edge_layers(
        api::router(state).merge(ops_router(platform.ready_check(pool))),
        COMPONENT,
    );
    Ok(Started { router, tasks })
}
