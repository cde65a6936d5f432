//! How the command bus loads aggregates: from snapshots (the same state as a full
//! replay), and from its cache of its own appends, which never decides on a stale state;
//! inside a transaction, from the states its earlier commands left, which go with it.

use shop_eventing::command::{CommandBus, CommandError};
use shop_eventing::store::{EventStore, SCHEMA};
use shop_schemas::EventMetadata;
use shop_sql::{self as sql, Dialect};

mod common;

shop_sql::on_both_backends!(
    a_snapshot_loads_the_state_a_full_replay_gives,
    a_stale_cached_aggregate_never_decides,
    concurrent_commands_each_get_their_own_outcome,
    commands_in_one_transaction_start_from_each_other
);

use common::{fresh_database_on, Counter};

async fn a_snapshot_loads_the_state_a_full_replay_gives(backend: Dialect) {
    let database = fresh_database_on(backend, "snapshots", &[SCHEMA]).await;
    let store = EventStore::new(database.pool.clone());
    let metadata = EventMetadata::default();
    // Every command loads from the store: snapshots after events 3, 6 and 9.
    let bus = CommandBus::<Counter>::with_snapshots(store.clone(), (), 3).without_cache();
    for _ in 0..10 {
        bus.execute("c", 1, &metadata).await.unwrap();
    }
    let last: i64 =
        sql::query_scalar("SELECT last_sequence FROM aggregate_snapshots WHERE aggregate_id = 'c'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(last, 9, "a snapshot records the last sequence it includes");
    // The total is 10 from the snapshot and event 10, as from all ten events.
    assert!(matches!(
        bus.execute("c", -11, &metadata).await,
        Err(CommandError::Rejected(_))
    ));
    let replaying = CommandBus::<Counter>::new(store.clone(), ()).without_cache();
    assert!(matches!(
        replaying.execute("c", -11, &metadata).await,
        Err(CommandError::Rejected(_))
    ));
    assert_eq!(
        bus.execute_versioned("c", -10, &metadata).await.unwrap(),
        11
    );
    database.drop().await;
}

async fn a_stale_cached_aggregate_never_decides(backend: Dialect) {
    let database = fresh_database_on(backend, "cache", &[SCHEMA]).await;
    let store = EventStore::new(database.pool.clone());
    let metadata = EventMetadata::default();
    // Two processes: each bus caches the states of its own appends.
    let a = CommandBus::<Counter>::new(store.clone(), ());
    let b = CommandBus::<Counter>::new(store.clone(), ());
    assert_eq!(a.execute_versioned("c", 5, &metadata).await.unwrap(), 1);
    assert_eq!(b.execute_versioned("c", -5, &metadata).await.unwrap(), 2);
    // A's cached total (5) would allow this; the store's (0) does not.
    assert!(matches!(
        a.execute("c", -1, &metadata).await,
        Err(CommandError::Rejected(_))
    ));
    // A caches total 3 (sequence 3); B takes it to 10. A's cache would refuse -7 (3 - 7
    // < 0): the refusal is checked against the store, and the command runs on 10.
    assert_eq!(a.execute_versioned("c", 3, &metadata).await.unwrap(), 3);
    assert_eq!(b.execute_versioned("c", 7, &metadata).await.unwrap(), 4);
    assert_eq!(a.execute_versioned("c", -7, &metadata).await.unwrap(), 5);
    let sequences: Vec<i64> =
        sql::query_scalar("SELECT sequence FROM events WHERE aggregate_id = 'c' ORDER BY sequence")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(sequences, [1, 2, 3, 4, 5], "no gap, no duplicate");
    database.drop().await;
}

/// Many clients at once (on PostgreSQL, appends share group commits): every command on
/// 20 aggregates lands exactly once, in sequence, and refusals stay refusals.
async fn concurrent_commands_each_get_their_own_outcome(backend: Dialect) {
    let database = fresh_database_on(backend, "group", &[SCHEMA]).await;
    let store = EventStore::new(database.pool.clone());
    let bus = std::sync::Arc::new(CommandBus::<Counter>::new(store.clone(), ()));
    let mut clients = Vec::new();
    for client in 0..40 {
        let bus = bus.clone();
        clients.push(tokio::spawn(async move {
            let metadata = EventMetadata::default();
            let aggregate = format!("c{}", client % 20);
            let mut refused = 0;
            for _ in 0..5 {
                bus.execute(&aggregate, 2, &metadata).await.unwrap();
                // Two clients share an aggregate: this may or may not find 3 to take.
                match bus.execute(&aggregate, -3, &metadata).await {
                    Ok(()) => {}
                    Err(CommandError::Rejected(_)) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for client in clients {
        refused += client.await.unwrap();
    }
    let per_aggregate: Vec<(String, i64, i64)> = sql::query_as(
        "SELECT aggregate_id, count(*), max(sequence) FROM events GROUP BY aggregate_id ORDER BY aggregate_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(per_aggregate.len(), 20);
    let appended: i64 = per_aggregate.iter().map(|(_, n, _)| n).sum();
    assert_eq!(
        appended,
        400 - refused,
        "every accepted command appended once"
    );
    for (aggregate, count, last) in &per_aggregate {
        assert_eq!(count, last, "{aggregate}: no gap, no duplicate");
    }
    // Every total is what its accepted commands add up to, and never went below zero.
    let check = CommandBus::<Counter>::new(store.clone(), ()).without_cache();
    for (aggregate, _, _) in &per_aggregate {
        let metadata = EventMetadata::default();
        let totals: Vec<i64> = sql::query_scalar(&format!(
            "SELECT {} FROM events WHERE aggregate_id = $1",
            match backend {
                Dialect::Postgres => "(data->>'by')::bigint",
                Dialect::Sqlite => "json_extract(data, '$.by')",
            }
        ))
        .bind(aggregate)
        .fetch_all(store.pool())
        .await
        .unwrap();
        let total: i64 = totals.iter().sum();
        assert!(total >= 0);
        assert!(matches!(
            check.execute(aggregate, -(total + 1), &metadata).await,
            Err(CommandError::Rejected(_))
        ));
        check.execute(aggregate, -total, &metadata).await.unwrap();
    }
    database.drop().await;
}

/// A reaction's commands to one aggregate in one transaction: each starts from the state
/// the one before left, uncommitted; a rollback takes those states with it, and a commit
/// hands them to the cache.
async fn commands_in_one_transaction_start_from_each_other(backend: Dialect) {
    let database = fresh_database_on(backend, "in_tx", &[SCHEMA]).await;
    let store = EventStore::new(database.pool.clone());
    let metadata = EventMetadata::default();
    let bus = CommandBus::<Counter>::new(store.clone(), ());
    assert_eq!(bus.execute_versioned("c", 1, &metadata).await.unwrap(), 1);

    // -3 is allowed only after the +2 of the same transaction; then it rolls back.
    let mut tx = store.pool().begin().await.unwrap();
    bus.execute_in(&mut tx, "c", 2, &metadata).await.unwrap();
    bus.execute_in(&mut tx, "c", -3, &metadata).await.unwrap();
    assert!(matches!(
        bus.execute_in(&mut tx, "c", -1, &metadata).await,
        Err(CommandError::Rejected(_))
    ));
    tx.rollback().await.unwrap();
    // Nothing of it stayed: the total is 1, at sequence 1.
    assert!(matches!(
        bus.execute("c", -2, &metadata).await,
        Err(CommandError::Rejected(_))
    ));
    assert_eq!(bus.execute_versioned("c", 4, &metadata).await.unwrap(), 2);

    // Committed: three appends in order, and the cache knows the result (total 1).
    let mut tx = store.pool().begin().await.unwrap();
    for by in [-5, 3, -2] {
        bus.execute_in(&mut tx, "c", by, &metadata).await.unwrap();
    }
    tx.commit().await.unwrap();
    let sequences: Vec<i64> =
        sql::query_scalar("SELECT sequence FROM events WHERE aggregate_id = 'c' ORDER BY sequence")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    assert!(matches!(
        bus.execute("c", -2, &metadata).await,
        Err(CommandError::Rejected(_))
    ));
    assert_eq!(bus.execute_versioned("c", -1, &metadata).await.unwrap(), 6);
    database.drop().await;
}
