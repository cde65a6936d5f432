//! The event store against a real PostgreSQL server (a fresh database per test).

use std::sync::Arc;

use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use serde_json::json;
use shop_eventing::db::{self, DatabaseConfig};
use shop_eventing::store::{PgEventStore, SCHEMA};

/// The aggregate type the raw repository calls are made for.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Counter;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum CounterEvent {
    Incremented { by: i64 },
}

impl cqrs_es::DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Incremented".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl cqrs_es::Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = ();
    type Event = CounterEvent;
    type Error = Never;
    type Services = ();
    async fn handle(
        &mut self,
        _: (),
        _: &(),
        _: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Never> {
        Ok(())
    }
    fn apply(&mut self, _: CounterEvent) {}
}

fn server_url() -> String {
    std::env::var("SHOP_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

async fn fresh_store() -> (PgEventStore, DatabaseConfig) {
    let config = DatabaseConfig {
        server_url: server_url(),
        instance: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        max_connections: 4,
    };
    let pool = db::open(&config, "store", &[SCHEMA])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n(start PostgreSQL with `scripts/infra.sh up`, or set SHOP_TEST_DATABASE_URL)"
            )
        });
    (PgEventStore::new(pool), config)
}

fn event(id: &str, sequence: usize, by: i64) -> SerializedEvent {
    SerializedEvent {
        aggregate_id: id.into(),
        sequence,
        aggregate_type: "counter".into(),
        event_type: "Incremented".into(),
        event_version: "1".into(),
        payload: json!({"Incremented": {"by": by}}),
        metadata: json!({"correlation_id": "c-1", "causation_id": "r-1", "traceparent": ""}),
    }
}

#[tokio::test]
async fn appends_are_read_back_with_outbox_rows() {
    let (store, config) = fresh_store().await;
    store
        .persist::<Counter>(&[event("a", 1, 5), event("a", 2, 7)], None)
        .await
        .unwrap();
    let events = store.get_events::<Counter>("a").await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].payload, json!({"Incremented": {"by": 7}}));
    assert_eq!(events[0].metadata["correlation_id"], "c-1");
    let stored = store.aggregate_events("a").await.unwrap();
    assert_eq!(
        stored[0].data,
        json!({"by": 5}),
        "the store keeps the data without the enum tag"
    );
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(outbox, 2);
    store.pool().close().await;
    db::drop_database(&config.server_url, &config.database_name("store"))
        .await
        .unwrap();
}

#[tokio::test]
async fn racing_appends_of_one_sequence_conflict_and_store_nothing_of_the_loser() {
    let (store, config) = fresh_store().await;
    store
        .persist::<Counter>(&[event("a", 1, 1)], None)
        .await
        .unwrap();
    let store = Arc::new(store);
    // Both decided on version 1 and both append sequence 2.
    let (left, right) = tokio::join!(
        {
            let store = store.clone();
            async move { store.persist::<Counter>(&[event("a", 2, 10)], None).await }
        },
        {
            let store = store.clone();
            async move {
                store
                    .persist::<Counter>(&[event("a", 2, 20), event("a", 3, 30)], None)
                    .await
            }
        }
    );
    let results = [left, right];
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(PersistenceError::OptimisticLockError)))
        .count();
    assert_eq!((wins, conflicts), (1, 1), "{results:?}");
    let events = store.get_events::<Counter>("a").await.unwrap();
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        outbox as usize,
        events.len(),
        "the loser left no outbox row"
    );
    store.pool().close().await;
    db::drop_database(&config.server_url, &config.database_name("store"))
        .await
        .unwrap();
}
