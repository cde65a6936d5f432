//! Wiring of the payments service: its database (event store, outbox, consumer tables,
//! known customers), the relay, its reactions and the REST routes.

use std::sync::Arc;

use axum::Router;
use shop_eventing::command::CommandBus;
use shop_eventing::db::{self, DbError};
use shop_eventing::http::{ops_router, with_edge_layers};
use shop_eventing::platform::Platform;
use shop_eventing::store::PgEventStore;
use shop_schemas::Service;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::reactions::{KnownCustomers, KNOWN_CUSTOMERS};

pub const COMPONENT: &str = "payments";
const SCHEMA: &str = include_str!("../sql/payments.sql");

/// A started payments service.
pub struct Started {
    pub router: Router,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Opens the database, starts the relay and the reactions, builds the routes.
///
/// # Errors
/// The database is unreachable.
pub async fn start(platform: &Platform) -> Result<Started, DbError> {
    let pool = db::open(
        &platform.database,
        COMPONENT,
        &[
            shop_eventing::store::SCHEMA,
            shop_eventing::consumer::SCHEMA,
            SCHEMA,
        ],
    )
    .await?;
    let known_customers = platform.consumer(
        pool.clone(),
        KNOWN_CUSTOMERS,
        &[Service::Customers],
        Arc::new(KnownCustomers),
    );
    let tasks = vec![
        tokio::spawn(
            platform
                .relay(pool.clone(), Service::Payments)
                .run(platform.shutdown.clone()),
        ),
        tokio::spawn(known_customers.run(platform.shutdown.clone())),
    ];
    let state = AppState {
        bus: Arc::new(CommandBus::with_snapshots(
            PgEventStore::new(pool.clone()),
            (),
            100,
        )),
        pool: pool.clone(),
        jwt: platform.jwt.clone(),
    };
    let router = with_edge_layers(
        api::router(state).merge(ops_router(platform.ready_check(pool))),
        COMPONENT,
    );
    Ok(Started { router, tasks })
}
