//! Faults in the pipeline, on real Kafka and PostgreSQL: a relay killed between produce
//! and mark, a projector killed mid-batch, a poison record. Nothing is lost, nothing is
//! applied twice, and the consumer goes on.

mod common;

use std::time::Duration;

use common::{kcat_read, Client, Instance};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(45);

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_after_produce_loses_nothing_and_duplicates_change_nothing() {
    let instance = Instance::new();
    let front = instance
        .spawn(&["customers", "projector", "read-api", "gateway"], &[])
        .await;
    let mut inventory = instance
        .spawn(
            &["inventory"],
            &[("SHOP_FAULT_INJECT", "relay.after_produce")],
        )
        .await;
    let admin = Client::admin(instance.gateway_url()).await;

    // The append commits, the relay produces it and dies before deleting the outbox row.
    // The HTTP answer may or may not get out before the abort; the event store decides.
    let _ = admin
        .http
        .post(format!("{}/api/products", instance.gateway_url()))
        .bearer_auth(admin.token.as_deref().unwrap())
        .json(&json!({"sku": "RELAY-1", "name": "Relay", "price": 100, "stock": 7}))
        .send()
        .await;
    let status = inventory.wait_exit(WAIT).await;
    assert!(!status.success(), "the relay aborted at the fault point");

    let pool = instance.pool("inventory").await;
    let id: String =
        sqlx::query_scalar("SELECT aggregate_id FROM events WHERE event_type = 'ProductAdded'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        count(&pool, "SELECT count(*) FROM outbox").await,
        1,
        "produced but not marked"
    );

    // Restart: the batch is produced again, then more events flow.
    let inventory = instance.spawn(&["inventory"], &[]).await;
    for quantity in [1, 2, 3] {
        let answer = admin
            .post(
                &format!("/api/products/{id}/restock"),
                json!({"quantity": quantity}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    }
    let public = Client::new(instance.gateway_url());
    public
        .get_until(&format!("/api/products/{id}"), WAIT, |p| {
            p["available"] == 13
        })
        .await;
    common::eventually("outbox drained", WAIT, || async {
        count(&pool, "SELECT count(*) FROM outbox").await == 0
    })
    .await;

    // Every stored event is on the topic; the first one twice.
    let records = kcat_read(
        &instance.infra.kafka_brokers,
        &format!("{}inventory.events", instance.topic_prefix),
    )
    .await;
    let stored: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT event_id FROM events ORDER BY position")
            .fetch_all(&pool)
            .await
            .unwrap();
    for event_id in &stored {
        let copies = records
            .iter()
            .filter(|r| r.header("ce_id") == Some(&event_id.to_string()))
            .count();
        assert!(copies >= 1, "event {event_id} missing from the topic");
    }
    assert!(
        records.len() > stored.len(),
        "the republished batch is on the topic twice"
    );

    // The duplicate changed nothing: 7 + 1 + 2 + 3, and four events applied.
    let product = public.get(&format!("/api/products/{id}")).await.body;
    assert_eq!(product["available"], 13);
    let projections = admin
        .get_until("/api/projections", WAIT, |ps| ps[0]["lag"] == 0)
        .await;
    assert_eq!(projections[0]["events_applied"], 4);

    pool.close().await;
    inventory.kill().await;
    front.kill().await;
    instance.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_killed_mid_batch_equals_a_rebuild_from_offset_zero() {
    let instance = Instance::new();
    let writers = instance
        .spawn(&["customers", "inventory", "read-api", "gateway"], &[])
        .await;
    let admin = Client::admin(instance.gateway_url()).await;

    // A backlog for the projector to take in large batches.
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            admin
                .add_product(&format!("MB-{i}"), 100 * (i + 1), i)
                .await,
        );
    }
    for round in 1..=10 {
        for id in &ids {
            let answer = admin
                .post(
                    &format!("/api/products/{id}/restock"),
                    json!({"quantity": round}),
                )
                .await;
            assert_eq!(answer.status, StatusCode::ACCEPTED);
        }
    }
    admin
        .send(
            "PUT",
            &format!("/api/products/{}/price", ids[0]),
            Some(json!({"price": 1})),
        )
        .await;
    let inventory_db = instance.pool("inventory").await;
    let total = count(&inventory_db, "SELECT count(*) FROM events").await;
    assert_eq!(total, 45);
    common::eventually("outbox drained", WAIT, || async {
        count(&inventory_db, "SELECT count(*) FROM outbox").await == 0
    })
    .await;

    // The projector dies inside a batch, before its transaction commits.
    let mut projector = instance
        .spawn(
            &["projector"],
            &[("SHOP_FAULT_INJECT", "consumer.mid_batch")],
        )
        .await;
    assert!(!projector.wait_exit(WAIT).await.success());

    // Restarted, it catches up.
    let projector = instance.spawn(&["projector"], &[]).await;
    let projections = admin
        .get_until("/api/projections", WAIT, |ps| {
            ps[0]["lag"] == 0 && ps[0]["events_applied"] == total
        })
        .await;
    assert_eq!(
        projections[0]["events_applied"], total,
        "every event applied exactly once"
    );

    // A second projector, on its own database and group, rebuilds from offset 0.
    let rebuild = instance.sibling();
    let rebuilder = rebuild.spawn(&["projector"], &[]).await;
    let rebuilt_db = rebuild.pool("read").await;
    // The products projection's own count: the orders projection also reads the
    // inventory topic, and may reach the total first.
    common::eventually("rebuild caught up", WAIT, || async {
        count(
            &rebuilt_db,
            "SELECT COALESCE(max(events_applied), 0)::bigint FROM consumer_status WHERE consumer = 'projection.products'",
        )
        .await
            == total
    })
    .await;

    let live_db = instance.pool("read").await;
    let dump = "SELECT row_to_json(p)::text FROM (SELECT * FROM products ORDER BY product_id) p";
    let live: Vec<String> = sqlx::query_scalar(dump).fetch_all(&live_db).await.unwrap();
    let rebuilt: Vec<String> = sqlx::query_scalar(dump)
        .fetch_all(&rebuilt_db)
        .await
        .unwrap();
    assert_eq!(live.len(), 4);
    assert_eq!(
        live, rebuilt,
        "the live read model equals the rebuild, row for row"
    );

    for pool in [inventory_db, live_db, rebuilt_db] {
        pool.close().await;
    }
    rebuilder.kill().await;
    projector.kill().await;
    writers.kill().await;
    rebuild.cleanup().await;
    instance.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_goes_to_the_dead_letter_topic_and_later_events_apply() {
    let instance = Instance::new();
    let shop = instance.spawn(&["all"], &[]).await;
    let admin = Client::admin(instance.gateway_url()).await;
    let public = Client::new(instance.gateway_url());
    let id = admin.add_product("POISON-1", 100, 1).await;
    public
        .get_until(&format!("/api/products/{id}"), WAIT, |p| {
            p["available"] == 1
        })
        .await;

    // Two poison records in the product's partition (same key): one not a CloudEvent at
    // all, one a CloudEvent whose data does not fit its schema.
    let topic = format!("{}inventory.events", instance.topic_prefix);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &instance.infra.kafka_brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&id)
                .payload("this is not json"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let headers = [
        ("ce_specversion", "1.0".to_string()),
        ("ce_id", uuid::Uuid::now_v7().to_string()),
        ("ce_source", "/shop/inventory".to_string()),
        ("ce_type", "shop.inventory.ProductRestocked".to_string()),
        ("ce_subject", id.clone()),
        ("ce_time", "2026-01-01T00:00:00Z".to_string()),
        (
            "ce_dataschema",
            "schemas/events/inventory/ProductRestocked.v1.json".to_string(),
        ),
        ("ce_sequence", "99".to_string()),
    ];
    let mut owned = OwnedHeaders::new();
    for (key, value) in &headers {
        owned = owned.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    let bad_data = json!({"product_id": id, "quantity": "lots"}).to_string();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&id)
                .payload(&bad_data)
                .headers(owned),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // Later events of the same partition still apply.
    let answer = admin
        .post(
            &format!("/api/products/{id}/restock"),
            json!({"quantity": 5}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    public
        .get_until(&format!("/api/products/{id}"), WAIT, |p| {
            p["available"] == 6
        })
        .await;

    // Both poison records are on the dead-letter topic with the error and their origin.
    let dead_topic = format!("{}dead-letters", instance.topic_prefix);
    // Every consumer of inventory events (the products and orders projections, the orders
    // service's catalogue replica and saga, the payments charge step) dead-letters both
    // poison records on its own.
    let consumers = [
        "projection.products",
        "projection.orders",
        "orders.catalogue",
        "orders.saga",
        "payments.charges",
    ];
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = kcat_read(&instance.infra.kafka_brokers, &dead_topic).await;
        if dead.len() >= 2 * consumers.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dead.len(), 2 * consumers.len(), "{dead:?}");
    for consumer in consumers {
        let mine: Vec<_> = dead
            .iter()
            .filter(|r| r.header("dlq_consumer") == Some(consumer))
            .collect();
        assert_eq!(mine.len(), 2, "{consumer}: {dead:?}");
        assert!(mine
            .iter()
            .any(|r| r.payload.as_deref() == Some("this is not json")));
        for record in mine {
            assert_eq!(record.header("dlq_topic"), Some(topic.as_str()));
            assert!(record.header("dlq_error").is_some_and(|e| !e.is_empty()));
            assert_eq!(record.key.as_deref(), Some(id.as_str()));
        }
    }
    let read_db = instance.pool("read").await;
    assert_eq!(
        count(
            &read_db,
            "SELECT count(*) FROM dead_letters WHERE consumer = 'projection.products'"
        )
        .await,
        2
    );

    read_db.close().await;
    shop.kill().await;
    instance.cleanup().await;
}
