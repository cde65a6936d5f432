//! What every component is built from: its database settings, the event log, the topic
//! prefix, the JWT keys and the shutdown signal. Built once by the CLI.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use shop_sql::{self as sql, Pool};
use tokio_util::sync::CancellationToken;

use crate::consumer::{ConsumerConfig, ConsumerRunner};
use crate::handler::EventHandler;
use crate::relay::{Relay, RelayConfig};
use axum::Router;
use shop_log::{EventLog, StartFrom};
use shop_sql::db::DatabaseConfig;
use shop_sql::db::DbError;
use shop_web::auth::JwtKeys;
use shop_web::http::{ops_router, with_edge_layers, ReadyCheck};
use tokio::task::JoinHandle;

/// Consumer tuning shared by projectors and reactions.
#[derive(Debug, Clone)]
pub struct ConsumerTuning {
    pub batch_size: usize,
    /// [`crate::consumer::ConsumerConfig::linger`].
    pub linger: Duration,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    /// Members of each live projection version's consumer group in one projector
    /// process (on PostgreSQL): each applies its share of the partitions in transactions
    /// of its own, so a projection catching up keeps more than one connection busy.
    pub projection_members: usize,
    /// Members of a rebuilding version's group (on PostgreSQL): no one reads a rebuild
    /// until it is switched live (then it runs `projection_members`), so the order in
    /// which members apply different topics is never seen.
    pub rebuild_members: usize,
}

/// [`ConsumerTuning::projection_members`] unless set otherwise. One: with two, an
/// order's history could show its payment before its reservation for a moment (the
/// members apply the inventory and payments topics independently; `tests/orders.rs`
/// caught it). A rebuild, not read until live, runs [`REBUILD_MEMBERS`].
pub const PROJECTION_MEMBERS: usize = 1;

/// [`ConsumerTuning::rebuild_members`] unless set otherwise: two keep both cores of a
/// small machine busy (`shop bench`: 87–94k against 71–76k events/s with one; three and
/// four were slower than two). Measured on a first fill of 20,000 orders.
pub const REBUILD_MEMBERS: usize = 2;

/// [`ConsumerTuning::linger`] on PostgreSQL unless set otherwise (`shop dev` lingers
/// not at all: its SQLite transactions cost no round trip, and lingering there only added
/// its wait to every saga step). With Kafka + PostgreSQL (`shop bench`, three runs each
/// against none): 62–75 % of the CPUs busy at 50 orders/s against 73–99 %, p99 202–220
/// against 250–564 ms at 200/s, for about 11 ms more p50 at 50/s.
pub const CONSUMER_LINGER: Duration = Duration::from_millis(5);

impl Default for ConsumerTuning {
    fn default() -> Self {
        ConsumerTuning {
            batch_size: 500,
            linger: CONSUMER_LINGER,
            max_attempts: 3,
            retry_backoff: Duration::from_millis(200),
            projection_members: PROJECTION_MEMBERS,
            rebuild_members: REBUILD_MEMBERS,
        }
    }
}

/// Relay tuning.
#[derive(Debug, Clone)]
pub struct RelayTuning {
    pub batch_size: i64,
    pub poll_interval: Duration,
}

impl Default for RelayTuning {
    fn default() -> Self {
        RelayTuning {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// A started component: its routes (API and health) and its background tasks.
pub struct Started {
    pub router: Router,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Shared building blocks of the components of one process.
#[derive(Clone)]
pub struct Platform {
    pub database: DatabaseConfig,
    /// The event log: Kafka, or the embedded log of `shop dev`.
    pub log: Arc<dyn EventLog>,
    pub topic_prefix: String,
    pub jwt: JwtKeys,
    pub consumer: ConsumerTuning,
    pub relay: RelayTuning,
    pub shutdown: CancellationToken,
}

impl Platform {
    /// The event log as the trait components consume.
    pub fn log(&self) -> Arc<dyn EventLog> {
        self.log.clone()
    }

    /// The consumer group of a named consumer in this instance.
    pub fn group(&self, consumer: &str) -> String {
        format!("{}.{}", self.database.instance, consumer)
    }

    /// A consumer's settings with this platform's tuning.
    pub fn consumer_config(&self, name: &str, topics: Vec<String>) -> ConsumerConfig {
        ConsumerConfig {
            name: name.to_string(),
            group: self.group(name),
            topics,
            dead_letter_topic: shop_schemas::topics::dead_letter_topic(&self.topic_prefix),
            batch_size: self.consumer.batch_size,
            linger: self.consumer.linger,
            max_attempts: self.consumer.max_attempts,
            retry_backoff: self.consumer.retry_backoff,
            start: StartFrom::Beginning,
        }
    }

    /// A consumer named `name` of the topics of `sources`, keeping its checkpoints and
    /// dedup records in `pool` and applying events with `handler`.
    pub fn consumer(
        &self,
        pool: Pool,
        name: &str,
        sources: &[shop_schemas::Service],
        handler: Arc<dyn EventHandler>,
    ) -> ConsumerRunner {
        let topics = sources
            .iter()
            .map(|s| s.topic(&self.topic_prefix))
            .collect();
        ConsumerRunner::new(
            pool,
            self.log(),
            self.consumer_config(name, topics),
            handler,
        )
    }

    /// Opens (creating when missing) a command service's own database with its event
    /// store, consumer tables and the service's private tables.
    ///
    /// # Errors
    /// The database is unreachable or a schema statement fails.
    pub async fn open_command_database(
        &self,
        service: shop_schemas::Service,
        private_schema: &str,
    ) -> Result<Pool, DbError> {
        let schema = [
            crate::store::SCHEMA,
            crate::consumer::SCHEMA,
            private_schema,
        ];
        shop_sql::db::open(&self.database, service.name(), &schema).await
    }

    /// Starts a command service's background work: its outbox relay and its reactions.
    pub fn spawn_service_tasks(
        &self,
        pool: &Pool,
        service: shop_schemas::Service,
        reactions: Vec<ConsumerRunner>,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(
            self.relay(pool.clone(), service).run(self.shutdown.clone()),
        )];
        tasks.extend(
            reactions
                .into_iter()
                .map(|r| tokio::spawn(r.run(self.shutdown.clone()))),
        );
        tasks
    }

    /// A component's API with `/health`, `/ready` (over `pool` and Kafka), `/metrics` and
    /// the edge layers.
    pub fn component_router(&self, api: Router, pool: Pool, component: &'static str) -> Router {
        with_edge_layers(api.merge(ops_router(self.ready_check(pool))), component)
    }

    /// The outbox relay of a service whose event store is in `pool`.
    pub fn relay(&self, pool: Pool, service: shop_schemas::Service) -> Relay {
        Relay::new(
            pool,
            self.log(),
            RelayConfig {
                service,
                topic_prefix: self.topic_prefix.clone(),
                batch_size: self.relay.batch_size,
                poll_interval: self.relay.poll_interval,
            },
        )
    }

    /// `/ready`: the component's database answers and the event log answers.
    pub fn ready_check(&self, pool: Pool) -> ReadyCheck {
        let log = self.log.clone();
        Arc::new(move || {
            let pool = pool.clone();
            let log = log.clone();
            async move {
                sql::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map_err(|e| format!("database: {e}"))?;
                log.ping().await.map_err(|e| format!("event log: {e}"))?;
                Ok(())
            }
            .boxed()
        })
    }
}
