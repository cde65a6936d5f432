//! How the command bus loads aggregates: from snapshots (the same state as a full
//! replay), and from its cache of its own appends, which never decides on a stale state.

use shop_eventing::command::{CommandBus, CommandError};
use shop_eventing::sql::{self, Dialect};
use shop_eventing::store::{EventStore, SCHEMA};
use shop_schemas::EventMetadata;

mod common;

shop_eventing::on_both_backends!(
    a_snapshot_loads_the_state_a_full_replay_gives,
    a_stale_cached_aggregate_never_decides
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
