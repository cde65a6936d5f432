//! The consumer runner against real Kafka and PostgreSQL (fresh topic and database per
//! test): duplicates in one batch apply once, transient failures are retried, a
//! permanent failure is dead-lettered and the consumer goes on, a small batch lingers for
//! the records that follow. The applied-versions dedup runs on both backends (it takes
//! another path on SQLite, with the embedded log), and a batch runs to its commit without
//! giving way to other tasks (embedded log and SQLite).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shop_eventing::consumer::{ConsumerConfig, ConsumerRunner, SCHEMA};
use shop_eventing::handler::{EventHandler, HandlerError};
use shop_eventing::CancellationToken;
use shop_log::kafka::{KafkaConfig, KafkaLog};
use shop_log::{EventLog, OutgoingRecord, StartFrom};
use shop_schemas::CloudEvent;
use shop_sql::{self as sql, Conn};
use uuid::Uuid;

mod common;

use common::fresh_database;

/// Records applied events in a table; fails on data `{"fail": "transient"}` twice, and
/// always on `{"fail": "permanent"}`.
struct Recorder {
    attempts: Mutex<HashMap<Uuid, u32>>,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(event.id).or_default();
            *n += 1;
            *n
        };
        match event.data["fail"].as_str() {
            Some("transient") if attempt <= 2 => return Err(HandlerError::transient("not yet")),
            Some("permanent") => return Err(HandlerError::permanent("never")),
            _ => {}
        }
        sql::query("INSERT INTO applied (event_id) VALUES ($1)")
            .bind(event.id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

fn event(data: serde_json::Value) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: Uuid::now_v7(),
        source: "/shop/inventory".into(),
        ty: "shop.inventory.Test".into(),
        subject: "subject-1".into(),
        time: chrono::Utc::now(),
        dataschema: "schemas/events/inventory/Test.v1.json".into(),
        datacontenttype: "application/json".into(),
        sequence: 1,
        correlationid: String::new(),
        causationid: String::new(),
        traceparent: String::new(),
        data,
    }
}

/// The test's Kafka log with an event topic of `partitions` and a dead-letter topic, both
/// named after the test instance `name`.
async fn kafka_topics(name: &str, partitions: i32) -> (Arc<KafkaLog>, String, String) {
    let brokers =
        std::env::var("SHOP_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let log = Arc::new(
        KafkaLog::new(KafkaConfig {
            brokers,
            partitions,
            ..KafkaConfig::default()
        })
        .unwrap(),
    );
    let topic = format!("{name}.events");
    let dead = format!("{name}.dead-letters");
    log.ensure_topics(&[topic.clone(), dead.clone()])
        .await
        .unwrap_or_else(|e| panic!("{e}\n(start Kafka with `scripts/infra.sh up`)"));
    (log, topic, dead)
}

/// A consumer `name` in `group` reading `topic` from its beginning, three attempts 10 ms
/// apart before a record is dead-lettered to `dead`.
fn config(name: &str, group: String, topic: &str, dead: &str, batch_size: usize) -> ConsumerConfig {
    ConsumerConfig {
        name: name.into(),
        group,
        topics: vec![topic.to_string()],
        dead_letter_topic: dead.to_string(),
        batch_size,
        linger: Duration::ZERO,
        max_attempts: 3,
        retry_backoff: Duration::from_millis(10),
        start: StartFrom::Beginning,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_apply_once_failures_retry_then_dead_letter() {
    let database = fresh_database(
        "consumer",
        &[
            SCHEMA,
            "CREATE TABLE IF NOT EXISTS applied (event_id UUID NOT NULL)",
        ],
    )
    .await;
    let name = database.instance().to_string();
    let pool = database.pool.clone();
    let (log, topic, dead) = kafka_topics(&name, 1).await;

    let first = event(serde_json::json!({"n": 1}));
    let transient = event(serde_json::json!({"fail": "transient"}));
    let permanent = event(serde_json::json!({"fail": "permanent"}));
    let last = event(serde_json::json!({"n": 2}));
    let records: Vec<OutgoingRecord> = [&first, &first, &transient, &permanent, &last, &first]
        .iter()
        .map(|e| OutgoingRecord::from_cloud_event(&topic, e))
        .collect();
    log.publish(records).await.unwrap();

    let shutdown = CancellationToken::new();
    let runner = ConsumerRunner::new(
        pool.clone(),
        log.clone(),
        config("recorder", format!("{name}.recorder"), &topic, &dead, 100),
        Arc::new(Recorder {
            attempts: Mutex::new(HashMap::new()),
        }),
    );
    let task = tokio::spawn(runner.run(shutdown.clone()));

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let progress = shop_eventing::checkpoint::progress(&pool, "recorder")
            .await
            .unwrap();
        // Status and checkpoints are read one after the other: wait for both.
        if progress
            .positions
            .first()
            .is_some_and(|p| p.next_offset == 6)
            && progress.events_applied == 3
        {
            assert_eq!(progress.last_error.as_deref(), Some("never"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumer did not reach offset 6: {progress:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let applied: Vec<Uuid> = sql::query_scalar("SELECT event_id FROM applied")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut expected = vec![first.id, transient.id, last.id];
    let mut got = applied.clone();
    expected.sort();
    got.sort();
    assert_eq!(
        got, expected,
        "each event once; the permanent failure not at all"
    );
    let dead_letters: Vec<(i64, String)> =
        sql::query_as("SELECT \"offset\", error FROM dead_letters")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(dead_letters, vec![(3, "never".to_string())]);
    assert_eq!(
        log.end_offsets(&dead).await.unwrap(),
        vec![(0, 1)],
        "one record on the dead-letter topic"
    );

    shutdown.cancel();
    task.await.unwrap();
    log.delete_topics(&[topic, dead]).await.ok();
    database.drop().await;
}

/// Counts every application: a row per event and a running total, neither idempotent.
struct Counter;

/// The runner's tables and [`Counter`]'s.
const COUNTER_SCHEMA: &[&str] = &[
    SCHEMA,
    "CREATE TABLE IF NOT EXISTS applied (event_id UUID NOT NULL)",
    "CREATE TABLE IF NOT EXISTS totals (n BIGINT NOT NULL)",
    "INSERT INTO totals (n) VALUES (0)",
];

#[async_trait]
impl EventHandler for Counter {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        sql::query("INSERT INTO applied (event_id) VALUES ($1)")
            .bind(event.id)
            .execute(&mut *tx)
            .await?;
        sql::query("UPDATE totals SET n = n + 1")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// [`COUNTER_SCHEMA`] with the transaction that applied each event (`applied.tx`).
const TX_SCHEMA: &[&str] = &[
    SCHEMA,
    "CREATE TABLE IF NOT EXISTS applied (event_id UUID NOT NULL, tx BIGINT NOT NULL DEFAULT txid_current())",
    "CREATE TABLE IF NOT EXISTS totals (n BIGINT NOT NULL)",
    "INSERT INTO totals (n) VALUES (0)",
];

/// [`Counter`]'s running total once it reaches `until` (within 30 s).
async fn counted(pool: &sql::Pool, until: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let total: i64 = sql::query_scalar("SELECT n FROM totals")
            .fetch_one(pool)
            .await
            .unwrap();
        if total >= until {
            return total;
        }
        assert!(Instant::now() < deadline, "applied {total} of {until}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Members of one consumer joining and leaving while records are applied, and two of
/// them holding the same partitions at once — what happens when a rebalance hands a
/// partition to another member while the previous one still applies what it read, or
/// when the group has replaced a member that has not noticed yet. (Here the overlap is
/// made certain: one member reads through a group of its own, so it holds every
/// partition the whole time.) Every event still takes effect exactly once: on the
/// dedup path that only reads (`tracking_versions`, projectors), which the locked
/// checkpoints protect, and on the one that inserts processed event ids (reactions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_members_apply_each_event_once_by_applied_versions() {
    overlapping_members_apply_each_event_once(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_members_apply_each_event_once_by_processed_ids() {
    overlapping_members_apply_each_event_once(false).await;
}

async fn overlapping_members_apply_each_event_once(track_versions: bool) {
    const SUBJECTS: usize = 60;
    const PER_SUBJECT: usize = 25;
    const TOTAL: i64 = (SUBJECTS * PER_SUBJECT) as i64;
    let database = fresh_database("members", COUNTER_SCHEMA).await;
    let name = database.instance().to_string();
    let pool = database.pool.clone();
    let (log, topic, dead) = kafka_topics(&name, 6).await;
    // Each subject's events in sequence on its partition, subjects interleaved.
    let mut records = Vec::new();
    for sequence in 1..=PER_SUBJECT {
        for subject in 0..SUBJECTS {
            let mut e = event(serde_json::json!({"n": sequence}));
            e.subject = format!("subject-{subject}");
            e.sequence = sequence as u64;
            records.push(OutgoingRecord::from_cloud_event(&topic, &e));
        }
    }
    log.publish(records).await.unwrap();

    let member = |group: &str, shutdown: CancellationToken| {
        let runner = ConsumerRunner::new(
            pool.clone(),
            log.clone(),
            // Small batches: many in flight when partitions move.
            config("counter", format!("{name}.{group}"), &topic, &dead, 10),
            Arc::new(Counter),
        );
        let runner = if track_versions {
            runner.tracking_versions()
        } else {
            runner
        };
        tokio::spawn(runner.run(shutdown))
    };
    let applied = || async {
        shop_eventing::checkpoint::progress(&pool, "counter")
            .await
            .unwrap()
            .events_applied
    };
    let wait_for = |n: i64| {
        let applied = &applied;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while applied().await < n {
                assert!(
                    Instant::now() < deadline,
                    "the members stopped short of {n}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    let (first, second, third) = (
        CancellationToken::new(),
        CancellationToken::new(),
        CancellationToken::new(),
    );
    let a = member("counter", first.clone());
    let c = member("overlapping", third.clone());
    wait_for(TOTAL / 6).await;
    let b = member("counter", second.clone());
    wait_for(TOTAL / 2).await;
    // The first member leaves: its partitions move to the others.
    first.cancel();
    a.await.unwrap();
    wait_for(TOTAL).await;

    let (rows, distinct): (i64, i64) =
        sql::query_as("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM applied")
            .fetch_one(&pool)
            .await
            .unwrap();
    let total: i64 = sql::query_scalar("SELECT n FROM totals")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        (rows, distinct, total),
        (TOTAL, TOTAL, TOTAL),
        "every event applied exactly once across the members"
    );
    assert_eq!(applied().await, TOTAL, "events_applied counts each once");

    second.cancel();
    third.cancel();
    b.await.unwrap();
    c.await.unwrap();
    log.delete_topics(&[topic, dead]).await.ok();
    database.drop().await;
}

/// A projector's dedup records the applied version in the statement that checks it (one
/// per batch on PostgreSQL, through the batch path; one per event on SQLite, `shop dev`).
/// Republished events (lower or equal sequences, in one batch and across batches, and a
/// whole second delivery after a restart from offset 0) still take effect once, in
/// order, and the recorded version is the highest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_events_apply_once_by_applied_versions_on_postgres() {
    let database = fresh_database(
        "versions",
        &[
            SCHEMA,
            "CREATE TABLE IF NOT EXISTS applied (position BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL)",
            "CREATE TABLE IF NOT EXISTS totals (n BIGINT NOT NULL)",
            "INSERT INTO totals (n) VALUES (0)",
        ],
    )
    .await;
    let name = database.instance().to_string();
    let (log, topic, dead) = kafka_topics(&name, 1).await;
    republished_events_apply_once(
        database.pool.clone(),
        log.clone(),
        (topic.clone(), dead.clone()),
        (format!("{name}.first"), format!("{name}.second")),
        Arc::new(BatchCounter),
    )
    .await;
    log.delete_topics(&[topic, dead]).await.ok();
    database.drop().await;
}

/// A `shop dev`-style SQLite database `name` with `schema`, and an embedded log of one
/// partition, in a fresh directory (returned, for the caller to remove).
async fn embedded(
    name: &str,
    schema: &[&str],
) -> (
    std::path::PathBuf,
    sql::Pool,
    Arc<shop_log::embedded::EmbeddedLog>,
) {
    let dir = std::env::temp_dir().join(format!("shop-{name}-{}", Uuid::new_v4().simple()));
    let database = shop_sql::db::open(
        &shop_sql::db::DatabaseConfig {
            server_url: String::new(),
            instance: "dev".into(),
            max_connections: 1,
            sqlite_dir: Some(dir.clone()),
        },
        name,
        schema,
    )
    .await
    .unwrap();
    let log = Arc::new(
        shop_log::embedded::EmbeddedLog::open(&dir.join("log.db"), 1)
            .await
            .unwrap(),
    );
    (dir, database, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_events_apply_once_by_applied_versions_on_sqlite() {
    let (dir, database, log) = embedded(
        "versions",
        &[
            SCHEMA,
            "CREATE TABLE IF NOT EXISTS applied (position INTEGER PRIMARY KEY, event_id UUID NOT NULL)",
            "CREATE TABLE IF NOT EXISTS totals (n BIGINT NOT NULL)",
            "INSERT INTO totals (n) VALUES (0)",
        ],
    )
    .await;
    republished_events_apply_once(
        database,
        log,
        ("versions.events".into(), "versions.dead".into()),
        ("first".into(), "second".into()),
        Arc::new(Counter),
    )
    .await;
    std::fs::remove_dir_all(dir).ok();
}

/// [`Counter`] through the batch path (as projections on PostgreSQL).
struct BatchCounter;

#[async_trait]
impl EventHandler for BatchCounter {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        Counter.handle(tx, event).await
    }

    fn batches(&self) -> bool {
        true
    }
}

async fn republished_events_apply_once(
    database: sql::Pool,
    log: Arc<dyn EventLog>,
    (topic, dead): (String, String),
    (first, second): (String, String),
    handler: Arc<dyn EventHandler>,
) {
    let events: Vec<CloudEvent> = (1..=4)
        .map(|sequence| {
            let mut e = event(serde_json::json!({ "n": sequence }));
            e.sequence = sequence;
            e
        })
        .collect();
    // 1, 2, 2 again, 1 again, 3, 4, 3 again.
    let order = [0, 1, 1, 0, 2, 3, 2];
    log.publish(
        order
            .iter()
            .map(|&i| OutgoingRecord::from_cloud_event(&topic, &events[i]))
            .collect(),
    )
    .await
    .unwrap();
    let run = |group: &str| {
        let runner = ConsumerRunner::new(
            database.clone(),
            log.clone(),
            config("counter", group.into(), &topic, &dead, 3),
            handler.clone(),
        )
        .tracking_versions();
        let shutdown = CancellationToken::new();
        (tokio::spawn(runner.run(shutdown.clone())), shutdown)
    };
    let at_end = || async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let progress = shop_eventing::checkpoint::progress(&database, "counter")
                .await
                .unwrap();
            if progress
                .positions
                .first()
                .is_some_and(|p| p.next_offset == 7)
            {
                return;
            }
            assert!(Instant::now() < deadline, "stuck: {progress:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (task, shutdown) = run(&first);
    at_end().await;
    shutdown.cancel();
    task.await.unwrap();
    // Everything again, through a group with no committed position: the checkpoints
    // skip it all.
    sql::query("DELETE FROM consumer_checkpoints")
        .execute(&database)
        .await
        .unwrap();
    let (task, shutdown) = run(&second);
    at_end().await;
    shutdown.cancel();
    task.await.unwrap();

    let applied: Vec<Uuid> = sql::query_scalar("SELECT event_id FROM applied ORDER BY position")
        .fetch_all(&database)
        .await
        .unwrap();
    assert_eq!(
        applied,
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        "each event once, in sequence order"
    );
    let recorded: i64 =
        sql::query_scalar("SELECT sequence FROM applied_versions WHERE consumer = 'counter'")
            .fetch_one(&database)
            .await
            .unwrap();
    assert_eq!(recorded, 4);
}

/// The server closing the runner's connections — right after a batch, and after a
/// second idle — as a restart does: the next records are still applied, each once, and
/// none is dead-lettered (a lost connection is not the record's fault).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_survive_the_server_closing_connections() {
    let database = fresh_database("kept", COUNTER_SCHEMA).await;
    let name = database.instance().to_string();
    let pool = database.pool.clone();
    let (log, topic, dead) = kafka_topics(&name, 1).await;
    let shutdown = CancellationToken::new();
    let runner = ConsumerRunner::new(
        pool.clone(),
        log.clone(),
        config("counter", format!("{name}.counter"), &topic, &dead, 100),
        Arc::new(Counter),
    );
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let publish_and_wait = |until: i64| {
        let (log, topic, pool) = (log.clone(), topic.clone(), pool.clone());
        async move {
            let records: Vec<OutgoingRecord> = (0..5)
                .map(|n| {
                    OutgoingRecord::from_cloud_event(&topic, &event(serde_json::json!({"n": n})))
                })
                .collect();
            log.publish(records).await.unwrap();
            counted(&pool, until).await
        }
    };
    assert_eq!(publish_and_wait(5).await, 5);
    // Closed right after a batch.
    database.terminate_other_connections().await;
    assert_eq!(publish_and_wait(10).await, 10);
    // Closed after a second idle.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    database.terminate_other_connections().await;
    assert_eq!(publish_and_wait(15).await, 15);
    // Nothing more arrives late.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rows, distinct): (i64, i64) =
        sql::query_as("SELECT count(*), count(DISTINCT event_id) FROM applied")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (15, 15), "each event applied once");
    let dead_letters: i64 = sql::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        dead_letters, 0,
        "a closed connection is not the record's fault"
    );

    shutdown.cancel();
    task.await.unwrap();
    log.delete_topics(&[topic, dead]).await.ok();
    database.drop().await;
}

/// A consumer that lingers applies a record and the one that follows it shortly in one
/// transaction; without lingering the first would be applied alone, as soon as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_batch_lingers_for_the_records_that_follow_a_lone_one_does_not() {
    let database = fresh_database("linger", TX_SCHEMA).await;
    let name = database.instance().to_string();
    let pool = database.pool.clone();
    let (log, topic, dead) = kafka_topics(&name, 1).await;
    let shutdown = CancellationToken::new();
    let mut lingering = config("counter", format!("{name}.counter"), &topic, &dead, 100);
    lingering.linger = Duration::from_millis(500);
    let runner = ConsumerRunner::new(pool.clone(), log.clone(), lingering, Arc::new(Counter));
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let publish = |n: i64| {
        let record = OutgoingRecord::from_cloud_event(&topic, &event(serde_json::json!({"n": n})));
        let log = log.clone();
        async move { log.publish(vec![record]).await.unwrap() }
    };
    // The consumer has joined its group and waits for records (the first one says so).
    // A lone record is applied at once (nothing to gather): one that follows 300 ms
    // later, well within the 500 ms linger, gets a transaction of its own.
    publish(-1).await;
    assert_eq!(counted(&pool, 1).await, 1);
    publish(0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(1).await;
    assert_eq!(counted(&pool, 3).await, 3);
    // Two at once: the poll takes both and waits for what follows.
    let pair: Vec<OutgoingRecord> = [2, 3]
        .into_iter()
        .map(|n| OutgoingRecord::from_cloud_event(&topic, &event(serde_json::json!({"n": n}))))
        .collect();
    log.publish(pair).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish(4).await;
    assert_eq!(counted(&pool, 6).await, 6);
    let transactions: i64 = sql::query_scalar("SELECT count(DISTINCT tx) FROM applied")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        transactions, 4,
        "the first record alone, the next two each alone, then the last three together"
    );

    shutdown.cancel();
    task.await.unwrap();
    log.delete_topics(&[topic, dead]).await.ok();
    database.drop().await;
}

/// A projector lingers after a lone record too (it is off the saga's path): a record
/// that follows within the linger shares its transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_lingers_after_a_lone_record_too() {
    let database = fresh_database("lone", TX_SCHEMA).await;
    let name = database.instance().to_string();
    let pool = database.pool.clone();
    let (log, topic, dead) = kafka_topics(&name, 1).await;
    let shutdown = CancellationToken::new();
    let mut lingering = config("counter", format!("{name}.counter"), &topic, &dead, 100);
    lingering.linger = Duration::from_millis(1_000);
    let runner = ConsumerRunner::new(pool.clone(), log.clone(), lingering, Arc::new(Counter))
        .lingering_after_lone_records();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let publish = |n: i64| {
        let record = OutgoingRecord::from_cloud_event(&topic, &event(serde_json::json!({"n": n})));
        let log = log.clone();
        async move { log.publish(vec![record]).await.unwrap() }
    };
    publish(0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(1).await;
    assert_eq!(counted(&pool, 2).await, 2);
    let transactions: i64 = sql::query_scalar("SELECT count(DISTINCT tx) FROM applied")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        transactions, 1,
        "the lone record waited for the one 200 ms later"
    );

    shutdown.cancel();
    task.await.unwrap();
    log.delete_topics(&[topic, dead]).await.ok();
    database.drop().await;
}

/// Awaits a lock many times per event, as a command bus does (each await spends the
/// task's scheduling budget), and notes how often its neighbour task had run by then.
struct BudgetSpender {
    lock: tokio::sync::Mutex<()>,
    neighbour: Arc<std::sync::atomic::AtomicU64>,
    seen: Mutex<Vec<u64>>,
}

#[async_trait]
impl EventHandler for BudgetSpender {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        for _ in 0..40 {
            drop(self.lock.lock().await);
        }
        let neighbour = self.neighbour.load(std::sync::atomic::Ordering::SeqCst);
        self.seen.lock().unwrap().push(neighbour);
        Counter.handle(tx, event).await
    }
}

/// A batch holds its transaction (on SQLite, the database's one writer) from the first
/// event to the commit; tokio's fairness budget would make it give way to every other
/// ready task after a few events' awaits, and wait behind them while holding it. On one
/// thread, beside a task that runs whenever it can, the neighbour does not run between
/// the first and the last event of a batch.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_runs_to_its_commit_without_giving_way() {
    const EVENTS: usize = 20;
    let (dir, database, log) = embedded("budget", COUNTER_SCHEMA).await;
    // Published before the runner starts: its first poll reads them all, one batch.
    log.publish(
        (0..EVENTS)
            .map(|n| {
                OutgoingRecord::from_cloud_event(
                    "budget.events",
                    &event(serde_json::json!({ "n": n })),
                )
            })
            .collect(),
    )
    .await
    .unwrap();
    let neighbour = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let runs = neighbour.clone();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let neighbour_task = tokio::spawn(async move {
        while !stopped.is_cancelled() {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
    });
    let handler = Arc::new(BudgetSpender {
        lock: tokio::sync::Mutex::new(()),
        neighbour,
        seen: Mutex::new(Vec::new()),
    });
    let runner = ConsumerRunner::new(
        database.clone(),
        log.clone(),
        config(
            "budget",
            "budget".into(),
            "budget.events",
            "budget.dead",
            EVENTS,
        ),
        handler.clone(),
    );
    let consumer = tokio::spawn(runner.run(stop.clone()));
    assert_eq!(counted(&database, EVENTS as i64).await, EVENTS as i64);
    stop.cancel();
    consumer.await.unwrap();
    neighbour_task.await.unwrap();
    let seen = handler.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), EVENTS);
    assert!(
        seen.iter().all(|&n| n == seen[0]),
        "the neighbour ran within the batch: {seen:?}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Commits the database acknowledged and then lost — what a PostgreSQL crash did to
/// projections that committed without waiting for the flush, while their consumers read
/// on from where the log was — are read and applied again, exactly once, and the gap is
/// recorded (`consumer_rewinds`, `progress().checkpoint_gaps`). Found three ways: by the
/// periodic check of the checkpoints against what the member applied, with no record
/// coming (an idle partition); by the next records, which are past the checkpoint; and
/// after a restart, whose log position was past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_commits_are_read_again_from_the_checkpoint() {
    let database = fresh_database("gaps", COUNTER_SCHEMA).await;
    let name = database.instance().to_string();
    let pool = database.pool.clone();
    let (log, topic, dead) = kafka_topics(&name, 1).await;
    let mut events: Vec<CloudEvent> = Vec::new();
    let publish = |n: usize, events: &mut Vec<CloudEvent>| {
        let fresh: Vec<CloudEvent> = (0..n)
            .map(|i| event(serde_json::json!({ "n": i })))
            .collect();
        events.extend(fresh.iter().cloned());
        let log = log.clone();
        let topic = topic.clone();
        async move {
            let records = fresh
                .iter()
                .map(|e| OutgoingRecord::from_cloud_event(&topic, e))
                .collect();
            log.publish(records).await.unwrap();
        }
    };
    let start = |shutdown: CancellationToken| {
        let runner = ConsumerRunner::new(
            pool.clone(),
            log.clone(),
            config("counter", format!("{name}.counter"), &topic, &dead, 100),
            Arc::new(Counter),
        );
        tokio::spawn(runner.run(shutdown))
    };
    // What a crash takes: the last commits, from offset `from` on, effects, dedup
    // records and checkpoint together.
    let lose_from = |from: usize, events: &[CloudEvent]| {
        let lost: Vec<Uuid> = events[from..].iter().map(|e| e.id).collect();
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            for id in lost.iter().copied() {
                sql::query("DELETE FROM applied WHERE event_id = $1")
                    .bind(id)
                    .execute(&mut tx)
                    .await
                    .unwrap();
                sql::query("DELETE FROM processed_events WHERE event_id = $1")
                    .bind(id)
                    .execute(&mut tx)
                    .await
                    .unwrap();
            }
            sql::query("UPDATE totals SET n = n - $1")
                .bind(lost.len() as i64)
                .execute(&mut tx)
                .await
                .unwrap();
            sql::query("UPDATE consumer_checkpoints SET next_offset = $1")
                .bind(from as i64)
                .execute(&mut tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    let gaps = || async {
        let progress = shop_eventing::checkpoint::progress(&pool, "counter")
            .await
            .unwrap();
        // Applied again: no longer recovering.
        assert!(!progress.recovering(), "{progress:?}");
        let last = progress
            .last_checkpoint_gap
            .map(|g| (g.checkpoint, g.read_offset));
        (progress.checkpoint_gaps, last)
    };
    let exactly_once = |events: &[CloudEvent]| {
        let expected: std::collections::BTreeSet<Uuid> = events.iter().map(|e| e.id).collect();
        let pool = pool.clone();
        async move {
            let applied: Vec<Uuid> = sql::query_scalar("SELECT event_id FROM applied")
                .fetch_all(&pool)
                .await
                .unwrap();
            assert_eq!(applied.len(), expected.len(), "every event once");
            assert_eq!(
                applied
                    .into_iter()
                    .collect::<std::collections::BTreeSet<_>>(),
                expected
            );
        }
    };

    let shutdown = CancellationToken::new();
    let task = start(shutdown.clone());
    publish(10, &mut events).await;
    assert_eq!(counted(&pool, 10).await, 10);

    // An idle partition: the periodic check finds the checkpoint behind.
    lose_from(6, &events).await;
    assert_eq!(counted(&pool, 10).await, 10);
    exactly_once(&events).await;
    assert_eq!(gaps().await, (1, Some((6, 10))));

    // New records past the checkpoint show the gap at once.
    lose_from(7, &events).await;
    publish(5, &mut events).await;
    assert_eq!(counted(&pool, 15).await, 15);
    exactly_once(&events).await;
    assert_eq!(gaps().await.0, 2);

    // A restart reads on from the log's committed position, past the checkpoint.
    shutdown.cancel();
    task.await.unwrap();
    lose_from(13, &events).await;
    let shutdown = CancellationToken::new();
    let task = start(shutdown.clone());
    publish(1, &mut events).await;
    assert_eq!(counted(&pool, 16).await, 16);
    exactly_once(&events).await;
    assert_eq!(gaps().await, (3, Some((13, 15))));

    shutdown.cancel();
    task.await.unwrap();
    log.delete_topics(&[topic, dead]).await.ok();
    database.drop().await;
}

/// A member that holds its partitions and fetches nothing (librdkafka's consumer did, at
/// times, after the broker was killed twice in a row; here the `consumer.deaf` fault
/// point makes the first subscription deaf) is found by the stall watchdog, which
/// subscribes again: every record is applied, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deaf_subscription_is_replaced_and_every_record_applied() {
    shop_eventing::fault::arm(&format!("{}:deaf", shop_eventing::fault::CONSUMER_DEAF));
    let database = fresh_database("deaf", COUNTER_SCHEMA).await;
    let name = database.instance().to_string();
    let pool = database.pool.clone();
    let (log, topic, dead) = kafka_topics(&name, 2).await;
    let records: Vec<OutgoingRecord> = (0..20)
        .map(|i| OutgoingRecord::from_cloud_event(&topic, &event(serde_json::json!({ "n": i }))))
        .collect();
    log.publish(records).await.unwrap();
    let shutdown = CancellationToken::new();
    let runner = ConsumerRunner::new(
        pool.clone(),
        log.clone(),
        config("deaf", format!("{name}.deaf"), &topic, &dead, 100),
        Arc::new(Counter),
    );
    let task = tokio::spawn(runner.run(shutdown.clone()));
    // Deaf: nothing is applied while the first subscription lasts.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let total = || async {
        sql::query_scalar::<i64>("SELECT n FROM totals")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(total().await, 0, "the deaf subscription applied records");
    // The watchdog gives up on it after 30 s without a record; the next one applies all.
    let deadline = Instant::now() + Duration::from_secs(90);
    while total().await < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        total().await,
        20,
        "the stalled subscription was not replaced within 90 s"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(total().await, 20, "a record was applied twice");
    shutdown.cancel();
    task.await.unwrap();
}

/// Runs a command on one aggregate per event, as a saga reaction does.
struct Incrementer {
    bus: Arc<shop_eventing::command::CommandBus<common::Counter>>,
}

#[async_trait]
impl EventHandler for Incrementer {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        sql::query("INSERT INTO applied (event_id) VALUES ($1)")
            .bind(event.id)
            .execute(&mut *tx)
            .await?;
        self.bus
            .execute_in(tx, "c", 1, &shop_schemas::EventMetadata::default())
            .await?;
        Ok(())
    }
}

/// On PostgreSQL a batch's appends take no savepoint: a command that loses a race (here
/// on a cached state another writer made stale) aborts the batch, which is then applied
/// record by record, each record's appends under savepoints. Each event still takes
/// effect once, and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_command_loses_a_race_is_applied_again_record_by_record() {
    let schema: Vec<&str> = [shop_eventing::store::SCHEMA]
        .into_iter()
        .chain(TX_SCHEMA.iter().copied())
        .collect();
    let database = fresh_database("lost-race", &schema).await;
    let name = database.instance().to_string();
    let pool = database.pool.clone();
    let store = shop_eventing::store::EventStore::new(pool.clone());
    let bus = Arc::new(shop_eventing::command::CommandBus::<common::Counter>::new(
        store.clone(),
        (),
    ));
    let metadata = shop_schemas::EventMetadata::default();
    // The bus caches the counter at sequence 1; another writer then appends sequence 2.
    bus.execute("c", 1, &metadata).await.unwrap();
    shop_eventing::command::CommandBus::<common::Counter>::new(store, ())
        .execute("c", 1, &metadata)
        .await
        .unwrap();
    let (log, topic, dead) = kafka_topics(&name, 1).await;
    let shutdown = CancellationToken::new();
    let runner = ConsumerRunner::new(
        pool.clone(),
        log.clone(),
        config(
            "incrementer",
            format!("{name}.incrementer"),
            &topic,
            &dead,
            100,
        ),
        Arc::new(Incrementer { bus }),
    );
    let records: Vec<OutgoingRecord> = (0..3)
        .map(|n| OutgoingRecord::from_cloud_event(&topic, &event(serde_json::json!({"n": n}))))
        .collect();
    log.publish(records).await.unwrap();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied: i64 = sql::query_scalar("SELECT count(*) FROM applied")
            .fetch_one(&pool)
            .await
            .unwrap();
        if applied >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "applied {applied} of 3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    task.await.unwrap();
    let sequences: Vec<i64> =
        sql::query_scalar("SELECT sequence FROM events WHERE aggregate_id = 'c' ORDER BY sequence")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(sequences, [1, 2, 3, 4, 5], "each event's command once");
    let (rows, events, transactions): (i64, i64, i64) =
        sql::query_as("SELECT count(*), count(DISTINCT event_id), count(DISTINCT tx) FROM applied")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rows, events), (3, 3), "each event applied once");
    assert_eq!(
        transactions, 3,
        "the batch was rolled back and applied record by record"
    );
    let dead_letters: i64 = sql::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dead_letters, 0);
    log.delete_topics(&[topic, dead]).await.ok();
    database.drop().await;
}
