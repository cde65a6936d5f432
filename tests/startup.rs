//! A component comes up live whatever is down (SPEC §1): started while PostgreSQL and
//! Kafka are both unreachable, every component listens at once — `/health` answers,
//! `/ready` says 503 and names what it waits for, routes answer 503 with `Retry-After` —
//! and it takes traffic as soon as it can: commands once its database answers (the outbox
//! holds their events while the broker is away), ready once the broker answers too, and
//! the events then reach their topic. Here the dependencies "arrive" as forwarders to
//! the real PostgreSQL and Kafka, started on the ports the process was pointed at.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, free_port, infra, kcat_read, Client, Instance};
use reqwest::StatusCode;
use serde_json::json;
use shop_web::auth::{JwtKeys, Role};
use tokio::net::{TcpListener, TcpStream};

/// Forwards every connection to `listen` on loopback to `to`.
async fn forward(listen: u16, to: String) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(("127.0.0.1", listen)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_listen_at_once_and_take_traffic_as_their_dependencies_arrive() {
    let infra = infra();
    let instance = Instance::new();
    let (pg_port, kafka_port) = (free_port(), free_port());
    let database_url = format!("postgres://postgres:postgres@127.0.0.1:{pg_port}/postgres");
    let brokers = format!("127.0.0.1:{kafka_port}");
    let started = Instant::now();
    let process = instance
        .spawn_until(
            &["inventory", "gateway"],
            &[
                ("SHOP_DATABASE_URL", &database_url),
                ("SHOP_KAFKA_BROKERS", &brokers),
            ],
            "shop: gateway listening on",
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "listening took {:?}",
        started.elapsed()
    );
    let inventory = Client::new(process.url("inventory"));
    let mut gateway = Client::new(instance.gateway_url());
    gateway.token = Some(
        JwtKeys::new(common::JWT_SECRET, 3600)
            .issue("admin", Role::Admin)
            .unwrap(),
    );

    // Alive, not ready, and it says why; commands are refused fast.
    assert_eq!(gateway.get("/health").await.status, StatusCode::OK);
    assert_eq!(inventory.get("/health").await.status, StatusCode::OK);
    let ready = inventory.get("/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert!(
        ready.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("PostgreSQL"),
        "/ready names what it waits for: {ready:?}"
    );
    let product = json!({"sku": "TEA-1", "name": "Green tea", "price": 1200, "stock": 5});
    let refused = gateway.post("/api/products", product.clone()).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{refused:?}"
    );
    assert_eq!(refused.content_type, "application/problem+json");

    // PostgreSQL arrives: commands are taken, though the broker is still away.
    let database = forward(
        pg_port,
        infra
            .database_url
            .rsplit('@')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let added = loop {
        let answer = gateway.post("/api/products", product.clone()).await;
        if answer.status == StatusCode::CREATED {
            break answer;
        }
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
        assert!(
            Instant::now() < deadline,
            "never took the command: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ready = inventory.get("/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert!(
        ready.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("event log"),
        "/ready names the broker: {ready:?}"
    );
    // While the broker is away the log says so — without repeating librdkafka's
    // connection failures many times a second (each kind at most once per 30 s).
    let log = std::fs::read_to_string(&process.log_path).unwrap();
    let connect_failures = log
        .lines()
        .filter(|l| l.contains("Connect to") && l.contains("failed"))
        .count();
    assert!(
        connect_failures <= 4,
        "{connect_failures} connection failures logged since the start ({:?})",
        started.elapsed()
    );
    assert!(
        log.contains("waiting for Kafka at"),
        "the log names what it waits for"
    );

    // Kafka arrives: ready, and the event held in the outbox reaches its topic.
    let broker = forward(
        kafka_port,
        infra.kafka_brokers.split(',').next().unwrap().to_string(),
    )
    .await;
    eventually("inventory is ready", Duration::from_secs(90), || async {
        inventory.get("/ready").await.status == StatusCode::OK
    })
    .await;
    let topic = format!("{}inventory.events", instance.topic_prefix);
    let product_id = added.body["product_id"].as_str().unwrap().to_string();
    eventually(
        "ProductAdded is on its topic",
        Duration::from_secs(60),
        || async {
            kcat_read(&infra.kafka_brokers, &topic)
                .await
                .iter()
                .any(|r| r.key.as_deref() == Some(product_id.as_str()))
        },
    )
    .await;

    process.kill().await;
    database.abort();
    broker.abort();
    instance.cleanup().await;
}
