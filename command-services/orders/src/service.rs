//! Wiring of the orders service: its database (event store, outbox, consumer tables,
//! catalogue replica), the relay, its reactions and the REST routes.

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
use crate::reactions::{CatalogueReplica, CATALOGUE};

pub const COMPONENT: &str = "orders";
const SCHEMA: &str = include_str!("../sql/orders.sql");

/// A started orders service.
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
    let catalogue = platform.consumer(
        pool.clone(),
        CATALOGUE,
        &[Service::Inventory],
        Arc::new(CatalogueReplica),
    );
    let tasks = vec![
        tokio::spawn(
            platform
                .relay(pool.clone(), Service::Orders)
                .run(platform.shutdown.clone()),
        ),
        tokio::spawn(catalogue.run(platform.shutdown.clone())),
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
