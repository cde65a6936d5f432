//! Wiring of the notifications service: its database (event store, outbox, consumer
//! tables, the read model of `sql/notifications.sql`), the relay, the reaction that
//! schedules deliveries, the dispatcher that sends them, and the REST routes.

use std::sync::Arc;
use std::time::Duration;

use shop_eventing::command::CommandBus;
use shop_eventing::platform::{Platform, Started};
use shop_eventing::store::EventStore;
use shop_schemas::Service;
use shop_sql::db::DbError;
use tokio::sync::Notify;

use crate::address::AllowList;
use crate::api::{self, AppState};
use crate::delivery::RetryPolicy;
use crate::dispatcher::{DeliverySettings, Dispatcher};
use crate::reactions::{ScheduleWebhooks, WEBHOOKS, WEBHOOKS_SOURCES};
use crate::tables::NotificationTables;

pub const COMPONENT: &str = "notifications";
const SCHEMA: &str = include_str!("../sql/notifications.sql");

/// How long the reaction waits to gather more records before a transaction.
const LINGER: Duration = Duration::from_millis(50);

/// The notifications service's settings (`SHOP_WEBHOOKS_*`).
#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    /// Derives every endpoint's secret: the same key recovers them after an import.
    pub key: String,
    /// Non-public targets that may receive webhooks.
    pub allow: AllowList,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub concurrency: usize,
    /// Attempts in flight to one endpoint at once (per process).
    pub per_endpoint: usize,
    pub poll: Duration,
    /// Certificate authorities trusted beyond the system's (`SHOP_WEBHOOKS_CA_FILE`).
    pub roots: Vec<reqwest::Certificate>,
}

impl NotificationsConfig {
    /// The defaults, with this key.
    pub fn with_key(key: impl Into<String>) -> Self {
        NotificationsConfig {
            key: key.into(),
            allow: AllowList::default(),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            concurrency: 16,
            per_endpoint: 4,
            poll: Duration::from_millis(500),
            roots: Vec::new(),
        }
    }
}

fn store(pool: shop_sql::Pool, wake: &Arc<Notify>) -> EventStore {
    EventStore::new(pool).with_hook(Arc::new(NotificationTables { wake: wake.clone() }))
}

/// Opens the database, starts the relay, the reaction and the dispatcher, builds the routes.
///
/// # Errors
/// The database is unreachable.
pub async fn start(platform: &Platform, config: NotificationsConfig) -> Result<Started, DbError> {
    let pool = platform
        .open_command_database(Service::Notifications, SCHEMA)
        .await?;
    let wake = Arc::new(Notify::new());
    let endpoints = Arc::new(CommandBus::new(store(pool.clone(), &wake), ()));
    let deliveries = Arc::new(CommandBus::new(
        store(pool.clone(), &wake),
        config.retry.clone(),
    ));
    let schedule = platform
        .consumer(
            pool.clone(),
            WEBHOOKS,
            WEBHOOKS_SOURCES,
            Arc::new(ScheduleWebhooks {
                bus: deliveries.clone(),
            }),
        )
        .replaying_imports()
        // Off the saga's path, and a webhook may wait that long: it reads the saga's
        // topics in fewer, larger transactions (`shop bench`: the consumer's share of the
        // system's work at 200 orders/s, see docs/src/benchmarks.md).
        .lingering(LINGER);
    let mut tasks = platform.spawn_service_tasks(&pool, Service::Notifications, vec![schedule]);
    let dispatcher = Arc::new(Dispatcher {
        pool: pool.clone(),
        deliveries: deliveries.clone(),
        endpoints: endpoints.clone(),
        wake,
        in_flight: Default::default(),
        settings: DeliverySettings {
            key: config.key.clone(),
            allow: config.allow.clone(),
            timeout: config.timeout,
            concurrency: config.concurrency,
            poll: config.poll,
            per_endpoint: config.per_endpoint,
            roots: config.roots.clone(),
        },
    });
    tasks.push(tokio::spawn(dispatcher.run(platform.shutdown.clone())));
    let state = AppState {
        endpoints,
        deliveries,
        jwt: platform.jwt.clone(),
        key: config.key.into(),
        allow: config.allow,
    };
    let router = platform.component_router(
        api::router(state).merge(shop_eventing::events_api::router(
            Service::Notifications,
            pool.clone(),
            platform.jwt.clone(),
        )),
        pool,
        COMPONENT,
    );
    Ok(Started { router, tasks })
}

/// The service's store for `shop import` (its hook rebuilds the read model).
///
/// # Errors
/// The database is unreachable.
pub async fn import_store(platform: &Platform) -> Result<EventStore, DbError> {
    let pool = platform
        .open_command_database(Service::Notifications, SCHEMA)
        .await?;
    Ok(store(pool, &Arc::new(Notify::new())))
}
