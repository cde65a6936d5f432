//! Commands executed inside a caller's transaction (how saga reactions append): their
//! events commit or roll back with it, and a lost race leaves it usable.

use shop_sql::{self as sql, Dialect};
use std::sync::Arc;

use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use serde_json::json;
use shop_eventing::command::{CommandBus, CommandError};
use shop_eventing::store::{EventStore, TxEventStore, SCHEMA};
use shop_schemas::EventMetadata;

mod common;

shop_sql::on_both_backends!(
    events_commit_and_roll_back_with_the_callers_transaction,
    a_lost_race_inside_a_transaction_rolls_back_only_itself,
    a_replayed_reaction_issues_no_command,
    a_command_presumed_new_is_judged_by_the_store
);

use common::{fresh_database_on, Counter, TestDatabase};

async fn fresh(backend: Dialect) -> (EventStore, TestDatabase) {
    let database = fresh_database_on(backend, "reaction", &[SCHEMA]).await;
    (EventStore::new(database.pool.clone()), database)
}

async fn count(store: &EventStore, table: &str) -> i64 {
    sql::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn events_commit_and_roll_back_with_the_callers_transaction(backend: Dialect) {
    let (store, database) = fresh(backend).await;
    let bus = Arc::new(CommandBus::<Counter>::new(store.clone(), ()));
    let metadata = EventMetadata::default();

    let mut tx = store.pool().begin().await.unwrap();
    bus.execute_in(&mut tx, "c", 5, &metadata).await.unwrap();
    bus.execute_in(&mut tx, "c", 7, &metadata).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        count(&store, "events").await,
        0,
        "rolled back with the caller"
    );
    assert_eq!(count(&store, "outbox").await, 0);

    let mut tx = store.pool().begin().await.unwrap();
    bus.execute_in(&mut tx, "c", 5, &metadata).await.unwrap();
    bus.execute_in(&mut tx, "c", 7, &metadata).await.unwrap();
    sql::query("CREATE TABLE caller_effect (x int)")
        .execute(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&store, "events").await, 2);
    assert_eq!(count(&store, "outbox").await, 2);
    assert_eq!(
        count(&store, "caller_effect").await,
        0,
        "the caller's own work committed with them"
    );

    // Outside any transaction, the next command sees both.
    bus.execute("c", 1, &metadata).await.unwrap();
    let sequences: Vec<i64> =
        sql::query_scalar("SELECT sequence FROM events WHERE aggregate_id = 'c' ORDER BY sequence")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(sequences, [1, 2, 3]);

    database.drop().await;
}

async fn a_lost_race_inside_a_transaction_rolls_back_only_itself(backend: Dialect) {
    let (store, database) = fresh(backend).await;
    let event = |sequence: usize| SerializedEvent {
        aggregate_id: "c".into(),
        sequence,
        aggregate_type: "counter".into(),
        event_type: "Incremented".into(),
        event_version: "1".into(),
        payload: json!({"Incremented": {"by": 1}}),
        metadata: json!({}),
    };
    store.persist::<Counter>(&[event(1)], None).await.unwrap();

    let mut tx = store.pool().begin().await.unwrap();
    sql::query("CREATE TABLE caller_effect (x int)")
        .execute(&mut tx)
        .await
        .unwrap();
    {
        let in_tx = TxEventStore::new(&mut tx, None);
        // Sequence 1 is taken: the append loses the race…
        let lost = in_tx.persist::<Counter>(&[event(1)], None).await;
        assert!(
            matches!(lost, Err(PersistenceError::OptimisticLockError)),
            "{lost:?}"
        );
        // …and the transaction goes on: a retry at the right sequence succeeds.
        in_tx.persist::<Counter>(&[event(2)], None).await.unwrap();
    }
    sql::query("INSERT INTO caller_effect VALUES (1)")
        .execute(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&store, "events").await, 2);
    assert_eq!(count(&store, "caller_effect").await, 1);

    database.drop().await;
}

/// Replay mode (imports): inside `command::replay` a reaction's command appends nothing,
/// while its own statements in the same transaction still apply; outside, it appends.
async fn a_replayed_reaction_issues_no_command(backend: Dialect) {
    let (store, database) = fresh(backend).await;
    let bus = Arc::new(CommandBus::<Counter>::new(store.clone(), ()));
    let metadata = EventMetadata::default();
    assert!(!shop_eventing::command::replaying());

    let mut tx = store.pool().begin().await.unwrap();
    shop_eventing::command::replay(async {
        assert!(shop_eventing::command::replaying());
        sql::query("CREATE TABLE reaction_state (x int)")
            .execute(&mut tx)
            .await
            .unwrap();
        bus.execute_in(&mut tx, "c", 5, &metadata).await.unwrap();
    })
    .await;
    tx.commit().await.unwrap();
    assert_eq!(
        count(&store, "events").await,
        0,
        "no command while replaying"
    );
    assert_eq!(count(&store, "reaction_state").await, 0);

    let mut tx = store.pool().begin().await.unwrap();
    bus.execute_in(&mut tx, "c", 5, &metadata).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&store, "events").await, 1, "live again afterwards");
    database.drop().await;
}

/// `execute_new_in` starts from the default state without reading the store; the store
/// still judges. On an aggregate that has events after all, the append loses the race
/// and the command runs again on a fresh load; a refusal decided on the presumed state
/// is checked against the store and, stale, decided again; on a truly new aggregate it
/// appends (or refuses) as `execute_in` would.
async fn a_command_presumed_new_is_judged_by_the_store(backend: Dialect) {
    let (store, database) = fresh(backend).await;
    let stored = |id: &str, by: i64| SerializedEvent {
        aggregate_id: id.into(),
        sequence: 1,
        aggregate_type: "counter".into(),
        event_type: "Incremented".into(),
        event_version: "1".into(),
        payload: json!({"Incremented": {"by": by}}),
        metadata: json!({}),
    };
    // Written past the bus (its cache knows nothing of them).
    store
        .persist::<Counter>(&[stored("c", 3), stored("d", 5)], None)
        .await
        .unwrap();
    let bus = Arc::new(CommandBus::<Counter>::new(store.clone(), ()));
    let metadata = EventMetadata::default();

    let mut tx = store.pool().begin().await.unwrap();
    // "c" has an event: the presumed append at sequence 1 loses, the retry appends 2.
    bus.execute_new_in(&mut tx, "c", 2, &metadata)
        .await
        .unwrap();
    // "d" holds 5: -4 is refused on the presumed (empty) state, which the store shows
    // stale; decided again on the loaded state, it is accepted.
    bus.execute_new_in(&mut tx, "d", -4, &metadata)
        .await
        .unwrap();
    // "e" is new: appended at sequence 1; "f" is new too, and -1 is refused.
    bus.execute_new_in(&mut tx, "e", 1, &metadata)
        .await
        .unwrap();
    let refused = bus.execute_new_in(&mut tx, "f", -1, &metadata).await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(_))),
        "{refused:?}"
    );
    tx.commit().await.unwrap();

    let events: Vec<(String, i64, serde_json::Value)> = sql::query_as(
        "SELECT aggregate_id, sequence, data FROM events ORDER BY aggregate_id, sequence",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        events,
        vec![
            ("c".into(), 1, json!({"by": 3})),
            ("c".into(), 2, json!({"by": 2})),
            ("d".into(), 1, json!({"by": 5})),
            ("d".into(), 2, json!({"by": -4})),
            ("e".into(), 1, json!({"by": 1})),
        ]
    );
    database.drop().await;
}
