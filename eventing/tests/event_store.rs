//! The event store against a real PostgreSQL server (a fresh database per test).

use shop_sql::{self as sql, Dialect};
use std::sync::Arc;

use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use serde_json::json;
use shop_eventing::store::{EventStore, SCHEMA};

mod common;

shop_sql::on_both_backends!(
    appends_are_read_back_with_outbox_rows,
    racing_appends_of_one_sequence_conflict_and_store_nothing_of_the_loser
);

use common::{fresh_database_on, Counter, TestDatabase};

async fn fresh_store(backend: Dialect) -> (EventStore, TestDatabase) {
    let database = fresh_database_on(backend, "store", &[SCHEMA]).await;
    (EventStore::new(database.pool.clone()), database)
}

/// Rows waiting in the store's outbox.
async fn outbox_rows(store: &EventStore) -> i64 {
    sql::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(store.pool())
        .await
        .unwrap()
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

async fn appends_are_read_back_with_outbox_rows(backend: Dialect) {
    let (store, database) = fresh_store(backend).await;
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
    let outbox = outbox_rows(&store).await;
    assert_eq!(outbox, 2);
    database.drop().await;
}

async fn racing_appends_of_one_sequence_conflict_and_store_nothing_of_the_loser(backend: Dialect) {
    let (store, database) = fresh_store(backend).await;
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
    let outbox = outbox_rows(&store).await;
    assert_eq!(
        outbox as usize,
        events.len(),
        "the loser left no outbox row"
    );
    database.drop().await;
}

/// An append alone keeps its connection for the next one (no pool check-out). When the
/// server closes it — at once after an append, or after a second idle — the next append
/// is still stored, once: closed under a fresh append, it is written through the pool
/// after checking that nothing of it was stored; idle a while, it is tested first. A
/// lost race on it is reported as such and changes nothing for the next append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_the_server_closing_the_kept_connection() {
    let (store, database) = fresh_store(Dialect::Postgres).await;
    let append = |sequence: usize| {
        let store = &store;
        async move {
            store
                .persist::<Counter>(&[event("a", sequence, 1)], None)
                .await
        }
    };
    append(1).await.unwrap();
    database.terminate_other_connections().await;
    append(2).await.expect("stored through the pool");
    append(3).await.unwrap();
    database.terminate_other_connections().await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    append(4).await.expect("a tested, replaced connection");
    append(5).await.unwrap();
    // A lost race on the kept connection is the database's answer; the next append
    // goes on as before.
    assert!(matches!(
        append(5).await,
        Err(PersistenceError::OptimisticLockError)
    ));
    append(6).await.unwrap();
    let sequences: Vec<i64> = sql::query_scalar("SELECT sequence FROM events ORDER BY sequence")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(sequences, vec![1, 2, 3, 4, 5, 6], "each append stored once");
    let outbox = outbox_rows(&store).await;
    assert_eq!(outbox, 6);
    database.drop().await;
}
