//! `Idempotency-Key` on the commands that create or move something (docs/src/idempotency.md),
//! on both backends: the same request again under a key gets the first answer again and
//! has no second effect; another request under it is refused (422); a refused request
//! stores nothing, its key included; requests racing with one key have one effect.
//! And commands that commute are retried by the server on a lost race: 50 parallel
//! deposits into one wallet are all accepted. A keyed command killed before its commit
//! stored nothing, and its retry takes effect once.

mod common;

shop_sql::on_both_backends!(
    a_retried_order_is_placed_and_charged_once,
    every_command_that_creates_or_moves_takes_a_key,
);

use std::time::Duration;

use common::{Client, Instance};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::{self as sql, Dialect, Pool};

const WAIT: Duration = Duration::from_secs(60);
const KEY: &str = "Idempotency-Key";
const REPLAYED: &str = "Idempotent-Replayed";
const TOKEN: &str = "X-Consistency-Token";

/// An answer with its headers.
#[derive(Debug)]
struct Keyed {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Keyed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn replayed(&self) -> bool {
        self.header(REPLAYED) == Some("true")
    }
}

/// Sends a request as `client` with `Idempotency-Key: key`.
async fn keyed(client: &Client, method: &str, path: &str, key: &str, body: Option<Value>) -> Keyed {
    let mut request = client
        .http
        .request(method.parse().unwrap(), format!("{}{path}", client.base))
        .header(KEY, key);
    if let Some(token) = &client.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    Keyed {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// Checks that `again` is `first` given again: same status, body, token and location,
/// marked replayed (and `first` not).
fn assert_replay(first: &Keyed, again: &Keyed) {
    assert!(first.status.is_success(), "{first:?}");
    assert!(!first.replayed(), "{first:?}");
    assert!(again.replayed(), "{again:?}");
    assert_eq!(again.status, first.status, "{again:?}");
    assert_eq!(again.body, first.body);
    assert!(first.header(TOKEN).is_some(), "{first:?}");
    assert_eq!(again.header(TOKEN), first.header(TOKEN));
    assert_eq!(again.header("location"), first.header("location"));
    assert!(again
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json")));
}

async fn count(pool: &Pool, event_type: &str) -> i64 {
    sql::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn stored_keys(pool: &Pool, key: &str) -> i64 {
    sql::query_scalar("SELECT COUNT(*) FROM idempotency_keys WHERE idempotency_key = $1")
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn a_retried_order_is_placed_and_charged_once(backend: Dialect) {
    let instance = Instance::on(backend);
    let _shop = instance.spawn(&["all"], &[]).await;
    let base = instance.gateway_url();
    let admin = Client::admin(&base).await;
    let tea = admin.add_product("TEA-1", 100, 100).await;
    instance.wait_for_catalogue(1).await;
    let (hanako, hanako_id) = Client::customer(&base, "Hanako", "hanako@example.com").await;
    let deposit = hanako
        .post(
            &format!("/api/customers/{hanako_id}/wallet/deposits"),
            json!({"amount": 100_000}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED, "{deposit:?}");
    let orders = instance.store("orders").await;
    let payments = instance.store("payments").await;

    // The same order twice under one key (the retry spells the body's keys in another
    // order): one order, the first answer again.
    let order = json!({"lines": [{"product_id": tea, "quantity": 1}]});
    let first = keyed(
        &hanako,
        "POST",
        "/api/orders",
        "order-1",
        Some(order.clone()),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let retry = json!({"lines": [{"quantity": 1, "product_id": tea}]});
    let again = keyed(&hanako, "POST", "/api/orders", "order-1", Some(retry)).await;
    assert_replay(&first, &again);
    assert_eq!(count(&orders, "OrderPlaced").await, 1);
    let order_id = first.body["order_id"].as_str().unwrap().to_string();
    hanako
        .get_until(&format!("/api/orders/{order_id}"), WAIT, |o| {
            o["status"] == "CONFIRMED"
        })
        .await;
    assert_eq!(count(&payments, "PaymentCompleted").await, 1, "one charge");

    // The same key with another body: 422 naming the header, nothing changed.
    let other = json!({"lines": [{"product_id": tea, "quantity": 2}]});
    let reused = keyed(
        &hanako,
        "POST",
        "/api/orders",
        "order-1",
        Some(other.clone()),
    )
    .await;
    assert_eq!(
        reused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{reused:?}"
    );
    assert!(reused
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/problem+json")));
    assert_eq!(reused.body["errors"][0]["field"], KEY, "{reused:?}");
    assert!(!reused.replayed());
    assert_eq!(count(&orders, "OrderPlaced").await, 1);
    // ... and on another route.
    let elsewhere = keyed(
        &hanako,
        "POST",
        &format!("/api/customers/{hanako_id}/wallet/deposits"),
        "order-1",
        Some(json!({"amount": 5})),
    )
    .await;
    // (Each service keeps its own keys: payments never saw this one.)
    assert_eq!(elsewhere.status, StatusCode::ACCEPTED, "{elsewhere:?}");
    assert!(!elsewhere.replayed());

    // A refused request stores nothing, its key included: the corrected one under the
    // same key takes effect.
    let unknown = json!({"lines": [{"product_id": uuid::Uuid::now_v7(), "quantity": 1}]});
    let refused = keyed(&hanako, "POST", "/api/orders", "order-2", Some(unknown)).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{refused:?}"
    );
    assert_eq!(stored_keys(&orders, "order-2").await, 0);
    let corrected = keyed(&hanako, "POST", "/api/orders", "order-2", Some(other)).await;
    assert_eq!(corrected.status, StatusCode::ACCEPTED, "{corrected:?}");
    assert!(!corrected.replayed());
    assert_ne!(corrected.body["order_id"], first.body["order_id"]);
    assert_eq!(count(&orders, "OrderPlaced").await, 2);

    // Ten at once under one key: one order; every answer names it, one is the first.
    let answers = futures::future::join_all((0..10).map(|_| {
        keyed(
            &hanako,
            "POST",
            "/api/orders",
            "order-3",
            Some(order.clone()),
        )
    }))
    .await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
        assert_eq!(answer.body, answers[0].body);
        assert_eq!(answer.header(TOKEN), answers[0].header(TOKEN));
    }
    assert_eq!(answers.iter().filter(|a| !a.replayed()).count(), 1);
    assert_eq!(count(&orders, "OrderPlaced").await, 3);
    assert_eq!(stored_keys(&orders, "order-3").await, 1);

    // Keys are per caller: another customer's "order-1" is its own.
    let (taro, taro_id) = Client::customer(&base, "Taro", "taro@example.com").await;
    let deposit = taro
        .post(
            &format!("/api/customers/{taro_id}/wallet/deposits"),
            json!({"amount": 100_000}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED, "{deposit:?}");
    let taros = keyed(&taro, "POST", "/api/orders", "order-1", Some(order.clone())).await;
    assert_eq!(taros.status, StatusCode::ACCEPTED, "{taros:?}");
    assert!(!taros.replayed());
    assert_ne!(taros.body["order_id"], first.body["order_id"]);
    assert_eq!(count(&orders, "OrderPlaced").await, 4);

    // A malformed key: 400 naming the header, nothing stored.
    for bad in ["k".repeat(256), "two words".to_string()] {
        let answer = keyed(&hanako, "POST", "/api/orders", &bad, Some(order.clone())).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
        assert_eq!(answer.body["errors"][0]["field"], KEY, "{answer:?}");
    }
    let longest = "k".repeat(255);
    let answer = keyed(&hanako, "POST", "/api/orders", &longest, Some(order)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(count(&orders, "OrderPlaced").await, 5);

    // Everything was charged once.
    for order_id in [&corrected.body["order_id"], &answers[0].body["order_id"]] {
        let order_id = order_id.as_str().unwrap();
        hanako
            .get_until(&format!("/api/orders/{order_id}"), WAIT, |o| {
                o["status"] == "CONFIRMED"
            })
            .await;
    }
    common::eventually("the orders are charged", WAIT, || {
        let payments = payments.clone();
        async move { count(&payments, "PaymentCompleted").await == 5 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&payments, "PaymentCompleted").await, 5);
}

async fn every_command_that_creates_or_moves_takes_a_key(backend: Dialect) {
    let instance = Instance::on(backend);
    let _shop = instance.spawn(&["all"], &[]).await;
    let base = instance.gateway_url();
    let admin = Client::admin(&base).await;
    let customers = instance.store("customers").await;
    let inventory = instance.store("inventory").await;
    let payments = instance.store("payments").await;
    let orders = instance.store("orders").await;
    let shipping = instance.store("shipping").await;

    // Registering (anonymous).
    let anonymous = Client::new(&base);
    let registration = json!({"name": "Hanako", "email": "hanako@example.com", "password": "password-hanako",
        "address": {"line1": "1-2-3 Shibuya", "city": "Tokyo", "postal_code": "150-0002", "country": "JP"}});
    let first = keyed(
        &anonymous,
        "POST",
        "/api/customers",
        "register",
        Some(registration.clone()),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let again = keyed(
        &anonymous,
        "POST",
        "/api/customers",
        "register",
        Some(registration),
    )
    .await;
    assert_replay(&first, &again);
    assert_eq!(count(&customers, "CustomerRegistered").await, 1);
    let hanako_id = first.body["customer_id"].as_str().unwrap().to_string();
    let mut hanako = Client::new(&base);
    let login = hanako
        .post(
            "/api/auth/token",
            json!({"email": "hanako@example.com", "password": "password-hanako"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{login:?}");
    hanako.token = Some(login.body["access_token"].as_str().unwrap().to_string());

    // Adding a product.
    let product = json!({"sku": "TEA-1", "name": "Tea", "price": 100, "stock": 5});
    let first = keyed(
        &admin,
        "POST",
        "/api/products",
        "add",
        Some(product.clone()),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let again = keyed(&admin, "POST", "/api/products", "add", Some(product)).await;
    assert_replay(&first, &again);
    assert_eq!(count(&inventory, "ProductAdded").await, 1);
    let tea = first.body["product_id"].as_str().unwrap().to_string();

    // Restocking; a restock refused by the product (unknown) stores nothing, so the
    // corrected one under its key takes effect.
    let restock = format!("/api/products/{tea}/restock");
    let first = keyed(
        &admin,
        "POST",
        &restock,
        "restock",
        Some(json!({"quantity": 10})),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let again = keyed(
        &admin,
        "POST",
        &restock,
        "restock",
        Some(json!({"quantity": 10})),
    )
    .await;
    assert_replay(&first, &again);
    assert_eq!(count(&inventory, "ProductRestocked").await, 1);
    let nowhere = format!("/api/products/{}/restock", uuid::Uuid::now_v7());
    let refused = keyed(
        &admin,
        "POST",
        &nowhere,
        "restock-2",
        Some(json!({"quantity": 1})),
    )
    .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{refused:?}");
    assert_eq!(stored_keys(&inventory, "restock-2").await, 0);
    let corrected = keyed(
        &admin,
        "POST",
        &restock,
        "restock-2",
        Some(json!({"quantity": 1})),
    )
    .await;
    assert_eq!(corrected.status, StatusCode::ACCEPTED, "{corrected:?}");
    assert!(!corrected.replayed());
    assert_eq!(count(&inventory, "ProductRestocked").await, 2);

    // Changing a price (PUT).
    let price = format!("/api/products/{tea}/price");
    let first = keyed(&admin, "PUT", &price, "price", Some(json!({"price": 120}))).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let again = keyed(&admin, "PUT", &price, "price", Some(json!({"price": 120}))).await;
    assert_replay(&first, &again);
    assert_eq!(count(&inventory, "ProductPriceChanged").await, 1);

    // Depositing.
    let deposits = format!("/api/customers/{hanako_id}/wallet/deposits");
    let first = keyed(
        &hanako,
        "POST",
        &deposits,
        "deposit",
        Some(json!({"amount": 10_000})),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let again = keyed(
        &hanako,
        "POST",
        &deposits,
        "deposit",
        Some(json!({"amount": 10_000})),
    )
    .await;
    assert_replay(&first, &again);
    assert_eq!(count(&payments, "FundsDeposited").await, 1);
    hanako
        .get_until(&format!("/api/customers/{hanako_id}"), WAIT, |c| {
            c["wallet_balance"] == 10_000
        })
        .await;

    // A key is kept 24 hours: one older than that is taken over by the next request
    // with it (a new deposit), and the expiry deletes it.
    let age = |hours: i64| {
        let payments = payments.clone();
        async move {
            sql::query(
                "UPDATE idempotency_keys SET created_at = $1 WHERE idempotency_key = 'deposit'",
            )
            .bind(chrono::Utc::now() - chrono::TimeDelta::hours(hours))
            .execute(&payments)
            .await
            .unwrap();
        }
    };
    age(23).await;
    let kept = keyed(
        &hanako,
        "POST",
        &deposits,
        "deposit",
        Some(json!({"amount": 10_000})),
    )
    .await;
    assert_replay(&first, &kept);
    assert_eq!(
        shop_eventing::idempotency::expire(&payments, chrono::Utc::now())
            .await
            .unwrap(),
        0
    );
    age(25).await;
    let later = keyed(
        &hanako,
        "POST",
        &deposits,
        "deposit",
        Some(json!({"amount": 10_000})),
    )
    .await;
    assert_eq!(later.status, StatusCode::ACCEPTED, "{later:?}");
    assert!(!later.replayed());
    assert_eq!(count(&payments, "FundsDeposited").await, 2);
    age(25).await;
    assert_eq!(
        shop_eventing::idempotency::expire(&payments, chrono::Utc::now())
            .await
            .unwrap(),
        1
    );
    assert_eq!(stored_keys(&payments, "deposit").await, 0);

    // Cancelling an order.
    instance.wait_for_catalogue(1).await;
    let order = json!({"lines": [{"product_id": tea, "quantity": 1}]});
    let placed = hanako.post("/api/orders", order.clone()).await;
    assert_eq!(placed.status, StatusCode::ACCEPTED, "{placed:?}");
    let doomed = placed.body["order_id"].as_str().unwrap().to_string();
    let cancel = format!("/api/orders/{doomed}/cancel");
    let first = keyed(&hanako, "POST", &cancel, "cancel", None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    // The saga goes on appending to the order until it is cancelled: count once it is.
    hanako
        .get_until(
            &format!("/api/orders/{doomed}"),
            Duration::from_secs(30),
            |o| o["status"] == "CANCELLED",
        )
        .await;
    let events: i64 = sql::query_scalar("SELECT COUNT(*) FROM events WHERE aggregate_id = $1")
        .bind(doomed.as_str())
        .fetch_one(&orders)
        .await
        .unwrap();
    let again = keyed(&hanako, "POST", &cancel, "cancel", None).await;
    assert_replay(&first, &again);
    let after: i64 = sql::query_scalar("SELECT COUNT(*) FROM events WHERE aggregate_id = $1")
        .bind(doomed.as_str())
        .fetch_one(&orders)
        .await
        .unwrap();
    assert_eq!(after, events, "the replay appended nothing");

    // Dispatching and delivering an order.
    let placed = hanako.post("/api/orders", order).await;
    assert_eq!(placed.status, StatusCode::ACCEPTED, "{placed:?}");
    let shipped = placed.body["order_id"].as_str().unwrap().to_string();
    admin
        .get_until(&format!("/api/orders/{shipped}"), WAIT, |o| {
            o["history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|s| s["event_type"] == "ShipmentScheduled"))
        })
        .await;
    for (step, event_type) in [
        ("dispatch", "ShipmentDispatched"),
        ("deliver", "ShipmentDelivered"),
    ] {
        let path = format!("/api/shipments/{shipped}/{step}");
        let first = keyed(&admin, "POST", &path, step, None).await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
        let again = keyed(&admin, "POST", &path, step, None).await;
        assert_replay(&first, &again);
        assert_eq!(count(&shipping, event_type).await, 1);
    }

    // A key too long on a route without a body: 400 naming the header.
    let answer = keyed(&admin, "POST", &cancel, &"k".repeat(256), None).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    assert_eq!(answer.body["errors"][0]["field"], KEY);
}

/// Deposits commute: 50 at once into one wallet on PostgreSQL are all accepted (the
/// server re-runs the ones that lose a race) and the balance is their sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_deposits_into_one_wallet_are_all_accepted() {
    let instance = Instance::on(Dialect::Postgres);
    let _shop = instance.spawn(&["all"], &[]).await;
    let base = instance.gateway_url();
    let (hanako, hanako_id) = Client::customer(&base, "Hanako", "hanako@example.com").await;
    let path = format!("/api/customers/{hanako_id}/wallet/deposits");
    let answers = futures::future::join_all(
        (1..=50).map(|amount| hanako.post(&path, json!({"amount": amount}))),
    )
    .await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    }
    let payments = instance.store("payments").await;
    assert_eq!(count(&payments, "FundsDeposited").await, 50);
    hanako
        .get_until(&format!("/api/customers/{hanako_id}"), WAIT, |c| {
            c["wallet_balance"] == 50 * 51 / 2
        })
        .await;
}

/// A keyed command whose process dies after writing its events and its key, before the
/// commit, stored neither: the client's retry under the key (to the restarted service)
/// takes effect once, and the next retry is answered from the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_command_killed_before_its_commit_stores_nothing_and_its_retry_takes_effect_once() {
    let instance = Instance::on(Dialect::Postgres);
    let _front = instance
        .spawn(&["customers", "projector", "read-api", "gateway"], &[])
        .await;
    let mut payments = instance
        .spawn(
            &["payments"],
            &[("SHOP_FAULT_INJECT", "idempotency.before_commit")],
        )
        .await;
    let (hanako, hanako_id) =
        Client::customer(instance.gateway_url(), "Hanako", "hanako@example.com").await;
    let path = format!("/api/customers/{hanako_id}/wallet/deposits");
    let deposit = json!({"amount": 700});

    let lost = keyed(&hanako, "POST", &path, "deposit", Some(deposit.clone())).await;
    assert!(lost.status.is_server_error(), "{lost:?}");
    let status = payments.wait_exit(WAIT).await;
    assert!(!status.success(), "payments aborted at the fault point");
    let pool = instance.store("payments").await;
    assert_eq!(count(&pool, "FundsDeposited").await, 0);
    assert_eq!(stored_keys(&pool, "deposit").await, 0);

    // The client retries until the service is back.
    let _payments = instance.spawn(&["payments"], &[]).await;
    let deadline = std::time::Instant::now() + WAIT;
    let first = loop {
        let answer = keyed(&hanako, "POST", &path, "deposit", Some(deposit.clone())).await;
        if !answer.status.is_server_error() {
            break answer;
        }
        assert!(std::time::Instant::now() < deadline, "{answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let again = keyed(&hanako, "POST", &path, "deposit", Some(deposit)).await;
    assert_replay(&first, &again);
    assert_eq!(count(&pool, "FundsDeposited").await, 1);
    hanako
        .get_until(&format!("/api/customers/{hanako_id}"), WAIT, |c| {
            c["wallet_balance"] == 700
        })
        .await;
}
