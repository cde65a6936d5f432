//! Gateway traffic management (SPEC §3.8): a per-client rate limit answers 429 with
//! `Retry-After` once a client's burst is spent, without slowing down other clients.

mod common;

use std::time::Duration;

use common::{Client, Instance};
use reqwest::StatusCode;
use shop_eventing::sql::Dialect;

shop_eventing::on_both_backends!(each_client_has_its_own_rate_limit);

async fn each_client_has_its_own_rate_limit(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance
        .spawn(
            &["all"],
            &[
                ("SHOP_GATEWAY_RATE_LIMIT", "1"),
                ("SHOP_GATEWAY_RATE_BURST", "3"),
            ],
        )
        .await;
    // The admin logs in first (an anonymous request from this address).
    let admin = Client::admin(instance.gateway_url()).await;
    let anonymous = Client::new(instance.gateway_url());

    // Two more requests fit in this address's burst of 3; the next is refused.
    for _ in 0..2 {
        assert_eq!(anonymous.get("/api/products").await.status, StatusCode::OK);
    }
    let refused = anonymous
        .http
        .get(format!("{}/api/products", anonymous.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["status"], 429);

    // Another client (the admin's token) has its own budget.
    assert_eq!(admin.get("/api/products").await.status, StatusCode::OK);

    // After the advised wait, the refused client may go on.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(anonymous.get("/api/products").await.status, StatusCode::OK);

    shop.kill().await;
    instance.cleanup().await;
}
