//! Several instances of one component on real Kafka and PostgreSQL: projectors sharing
//! partitions through their consumer group (one killed mid-stream), and inventory
//! processes electing one active relay (the active one killed).

mod common;

use std::time::Duration;

use common::{Client, Instance};
use reqwest::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_share_partitions_and_a_killed_one_hands_over() {
    let instance = Instance::new();
    let writers = instance
        .spawn(&["customers", "inventory", "read-api", "gateway"], &[])
        .await;
    let first = instance.spawn(&["projector"], &[]).await;
    let second = instance
        .spawn(&["projector"], &[("SHOP_PROJECTOR_PORT", "0")])
        .await;
    let admin = Client::admin(instance.gateway_url()).await;

    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(admin.add_product(&format!("SO-{i}"), 100, 0).await);
    }
    let mut first = Some(first);
    let mut killed_at = None;
    for round in 1..=20 {
        for id in &ids {
            let answer = admin
                .post(
                    &format!("/api/products/{id}/restock"),
                    json!({"quantity": round}),
                )
                .await;
            assert_eq!(answer.status, StatusCode::ACCEPTED);
        }
        if round == 8 {
            // Mid-stream: one member dies without leaving the group; after the session
            // timeout the group rebalances and the other takes its partitions.
            first.take().unwrap().kill().await;
            killed_at = Some(std::time::Instant::now());
        }
    }
    let expected: i64 = (1..=20).sum();
    let public = Client::new(instance.gateway_url());
    for id in &ids {
        public
            .get_until(&format!("/api/products/{id}"), WAIT, |p| {
                p["available"] == expected
            })
            .await;
    }
    let projections = admin
        .get_until("/api/projections", WAIT, |ps| ps[0]["lag"] == 0)
        .await;
    // Reported, not asserted (docs/src/deployment.md quotes it): from the kill to the
    // survivor having applied every event, the killed member's partitions included.
    println!(
        "takeover: every event applied {:.1} s after the kill (session timeout {} ms)",
        killed_at.unwrap().elapsed().as_secs_f64(),
        common::KAFKA_SESSION_TIMEOUT_MS
    );
    assert_eq!(
        projections[0]["events_applied"],
        12 + 12 * 20,
        "every event applied exactly once"
    );

    second.kill().await;
    writers.kill().await;
    instance.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_relay_takes_over_when_the_active_one_dies() {
    let instance = Instance::new();
    let front = instance
        .spawn(&["customers", "projector", "read-api", "gateway"], &[])
        .await;
    let active = instance.spawn(&["inventory"], &[]).await;
    let standby = instance
        .spawn(&["inventory"], &[("SHOP_INVENTORY_PORT", "0")])
        .await;
    let admin = Client::admin(instance.gateway_url()).await;
    let public = Client::new(instance.gateway_url());

    let id = admin.add_product("RELAY-HA", 100, 1).await;
    public
        .get_until(&format!("/api/products/{id}"), WAIT, |p| {
            p["available"] == 1
        })
        .await;

    active.kill().await;
    // Write through the surviving process; only its relay can publish now.
    let direct = Client {
        token: admin.token.clone(),
        ..Client::new(standby.url("inventory"))
    };
    let answer = direct
        .post(
            &format!("/api/products/{id}/restock"),
            json!({"quantity": 4}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    public
        .get_until(&format!("/api/products/{id}"), WAIT, |p| {
            p["available"] == 5
        })
        .await;

    standby.kill().await;
    front.kill().await;
    instance.cleanup().await;
}
