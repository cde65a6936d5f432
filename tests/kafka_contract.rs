//! What an outside consumer sees on the inventory topic, read with `kcat` (an
//! independent Kafka client): one CloudEvents record per stored event, every header of
//! SPEC §4, key = product id, each product's events in sequence order.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{kcat_read, Client, Instance};
use serde_json::json;

const HEADERS: [&str; 12] = [
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_subject",
    "ce_time",
    "ce_dataschema",
    "content-type",
    "ce_sequence",
    "ce_correlationid",
    "ce_causationid",
    "ce_traceparent",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_topic_carries_one_cloudevent_per_event_in_order() {
    let instance = Instance::new();
    let shop = instance.spawn(&["all"], &[]).await;
    let admin = Client::admin(instance.gateway_url()).await;

    let mut products = Vec::new();
    for i in 0..3 {
        let id = admin.add_product(&format!("K-{i}"), 100 + i, 1).await;
        for q in 1..=3 {
            let answer = admin
                .post(
                    &format!("/api/products/{id}/restock"),
                    json!({"quantity": q}),
                )
                .await;
            assert_eq!(answer.status, 202);
        }
        admin
            .send(
                "PUT",
                &format!("/api/products/{id}/price"),
                Some(json!({"price": 999})),
            )
            .await;
        products.push(id);
    }
    let pool = instance.pool("inventory").await;
    let stored: Vec<(String, i64, uuid::Uuid, String)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, event_id, event_type FROM events ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 15);

    let topic = format!("{}inventory.events", instance.topic_prefix);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records = kcat_read(&instance.infra.kafka_brokers, &topic).await;
        if records.len() >= 15 || std::time::Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(records.len(), 15, "exactly one record per event");

    let mut by_product: HashMap<String, Vec<i64>> = HashMap::new();
    let mut partition_of: HashMap<String, i64> = HashMap::new();
    let mut sorted = records.clone();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for record in &sorted {
        for header in HEADERS {
            assert!(
                record.header(header).is_some_and(|v| !v.is_empty()),
                "missing {header} in {record:?}"
            );
        }
        let subject = record.header("ce_subject").unwrap().to_string();
        assert_eq!(
            record.key.as_deref(),
            Some(subject.as_str()),
            "key = aggregate id"
        );
        assert_eq!(record.header("ce_specversion"), Some("1.0"));
        assert_eq!(record.header("ce_source"), Some("/shop/inventory"));
        assert_eq!(record.header("content-type"), Some("application/json"));
        let ty = record.header("ce_type").unwrap();
        let name = ty
            .strip_prefix("shop.inventory.")
            .expect("ce_type shop.inventory.<Event>");
        // An absolute URI (the default base) naming the newest version, which the
        // gateway serves.
        let version = shop_schemas::event_type(shop_schemas::Service::Inventory, name)
            .expect("a known event")
            .version;
        let dataschema = record.header("ce_dataschema").unwrap();
        assert_eq!(
            dataschema,
            format!("https://shop.example/schemas/events/inventory/{name}.v{version}.json")
        );
        assert!(chrono::DateTime::parse_from_rfc3339(record.header("ce_time").unwrap()).is_ok());
        let traceparent = record.header("ce_traceparent").unwrap();
        assert_eq!(traceparent.len(), 55, "W3C traceparent: {traceparent}");
        // The stored event with that id has that type, subject and sequence.
        let id: uuid::Uuid = record.header("ce_id").unwrap().parse().unwrap();
        let sequence: i64 = record.header("ce_sequence").unwrap().parse().unwrap();
        let (aggregate, stored_sequence, _, stored_type) = stored
            .iter()
            .find(|e| e.2 == id)
            .expect("record of a stored event");
        assert_eq!(
            (aggregate, stored_sequence, stored_type.as_str()),
            (&subject, &sequence, name)
        );
        // Value = the event data as JSON.
        let data: serde_json::Value =
            serde_json::from_str(record.payload.as_deref().unwrap()).unwrap();
        assert_eq!(data["product_id"], subject.as_str());
        by_product
            .entry(subject.clone())
            .or_default()
            .push(sequence);
        let partition = partition_of.entry(subject).or_insert(record.partition);
        assert_eq!(*partition, record.partition, "one product, one partition");
    }
    for id in &products {
        assert_eq!(
            by_product[id],
            vec![1, 2, 3, 4, 5],
            "sequence order per product"
        );
    }

    // The gateway serves every dataschema's file at its path, to anyone; nothing else.
    let anyone = Client::new(instance.gateway_url());
    for record in &sorted {
        let dataschema = record.header("ce_dataschema").unwrap();
        let path = dataschema.strip_prefix("https://shop.example").unwrap();
        let answer = anyone.get(path).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert_eq!(answer.content_type, "application/schema+json");
        assert_eq!(answer.body["$id"], path.trim_start_matches('/'), "{path}");
    }
    let answer = anyone
        .get("/schemas/events/inventory/ProductAdded.v9.json")
        .await;
    assert_eq!(answer.status, 404, "{answer:?}");

    pool.close().await;
    shop.kill().await;
    instance.cleanup().await;
}
