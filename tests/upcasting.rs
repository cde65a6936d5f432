//! Event versions and upcasting (docs/src/evolution.md), on both backends: a log written
//! with the v1 events of the build before `OrderPlaced` v2 and `ProductAdded` v2
//! (`tests/fixtures/v1-log/export.jsonl`: `shop export` of a `shop dev` instance after one
//! product, one customer and one order through the saga to SHIPPED) imported into a fresh
//! instance:
//! - is stored and printed as written (`shop events --json`: version 1, v1 data);
//! - reads upcast: `shop events --upcast` shows v2 with the upcasters' defaults
//!   (`currency` "JPY", `category` "uncategorised"), and the read models serve the order,
//!   the product and the customer as the instance that wrote the log did
//!   (`tests/fixtures/v1-log/*.json`, its answers then), plus the fields views gained
//!   since (the order's `currency`, the product's `category`, with the upcasters' values);
//! - goes on: the imported product's aggregate loads its v1 `ProductAdded` (a restock),
//!   the imported order's aggregate its v1 `OrderPlaced` (a refused cancellation), a new
//!   order of the imported product is written as `OrderPlaced` v2 and confirms, and a new
//!   product as `ProductAdded` v2 with the category it was given (a blank one is 422).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{shop_on_stores, Client, Instance};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::Dialect;

shop_sql::on_both_backends!(a_v1_log_imports_upcasts_and_serves_the_same);

const ORDER: &str = "01a24f9b-1317-7057-ab01-931e24aba1da";
const PRODUCT: &str = "01a24f9a-f33d-76a5-92eb-1b4d2e6a108e";
const CUSTOMER: &str = "01a24f9a-fa42-7738-a8d4-679a90afecac";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-log")
}

fn fixture(name: &str) -> Value {
    let path = fixtures().join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn json_lines(printed: &str) -> Vec<Value> {
    printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The fixture's events by id.
fn written() -> BTreeMap<String, Value> {
    json_lines(&std::fs::read_to_string(fixtures().join("export.jsonl")).unwrap())
        .into_iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e))
        .collect()
}

/// Polls `GET path` until it answers `expected`; fails with the last answer.
async fn serves(client: &Client, path: &str, expected: &Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client.get(path).await;
        if answer.status == StatusCode::OK && &answer.body == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "GET {path} never answered as the v1 instance did:\n{:#}\nexpected:\n{expected:#}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn a_v1_log_imports_upcasts_and_serves_the_same(backend: Dialect) {
    let written = written();
    assert!(written.values().all(
        |e| e["eventversion"] == "1" && e["dataschema"].as_str().unwrap().ends_with(".v1.json")
    ));
    let instance = Instance::on(backend);
    let file = fixtures().join("export.jsonl");
    shop_on_stores(&instance, &["import", "--quiet", file.to_str().unwrap()]).await;
    let shop = instance.spawn(&["all"], &[]).await;
    let admin = Client::admin(instance.gateway_url()).await;

    // The read models serve what the v1 instance served.
    let mut order = fixture("order.json");
    order["currency"] = json!("JPY");
    serves(&admin, &format!("/api/orders/{ORDER}"), &order).await;
    let mut product = fixture("product.json");
    product["category"] = json!("uncategorised");
    serves(&admin, &format!("/api/products/{PRODUCT}"), &product).await;
    serves(
        &admin,
        &format!("/api/customers/{CUSTOMER}"),
        &fixture("customer.json"),
    )
    .await;

    // Stored as written: every event at v1 with its v1 data (its dataschema names v1, now
    // an absolute URI).
    let mut stored = BTreeMap::new();
    for service in ["customers", "inventory", "orders", "payments", "shipping"] {
        for event in json_lines(&shop_on_stores(&instance, &["events", service, "--json"]).await) {
            stored.insert(event["id"].as_str().unwrap().to_string(), event);
        }
    }
    assert_eq!(stored.len(), written.len());
    for (id, was) in &written {
        let mut now = stored[id].clone();
        let dataschema = now["dataschema"].as_str().unwrap().to_string();
        assert_eq!(
            dataschema,
            format!(
                "https://shop.example/{}",
                was["dataschema"].as_str().unwrap()
            ),
            "{id}"
        );
        now["dataschema"] = was["dataschema"].clone();
        assert_eq!(&now, was, "{id}: not stored as written");
    }

    // Read upcast: v2 of the two evolved events, with their defaults; the rest as stored.
    let upcast = json_lines(
        &shop_on_stores(
            &instance,
            &["events", "orders", "--aggregate", ORDER, "--upcast"],
        )
        .await,
    );
    assert_eq!(upcast[0]["type"], "shop.orders.OrderPlaced");
    assert_eq!(upcast[0]["eventversion"], "2");
    assert_eq!(
        upcast[0]["dataschema"],
        "https://shop.example/schemas/events/orders/OrderPlaced.v2.json"
    );
    let mut expected = written[upcast[0]["id"].as_str().unwrap()]["data"].clone();
    expected["currency"] = json!("JPY");
    assert_eq!(upcast[0]["data"], expected);
    for event in &upcast[1..] {
        assert_eq!(event["eventversion"], "1", "{event}");
        assert_eq!(
            event["data"],
            written[event["id"].as_str().unwrap()]["data"]
        );
    }
    // The same through the admin API: as stored by default, upcast on request.
    let events = |query: String| {
        let admin = &admin;
        async move {
            admin
                .get(&format!("/api/events?context=orders&{query}"))
                .await
        }
    };
    let as_stored = events(format!("aggregate_id={ORDER}")).await;
    assert_eq!(as_stored.status, StatusCode::OK, "{as_stored:?}");
    assert!(as_stored.body[0]["dataschema"]
        .as_str()
        .unwrap()
        .ends_with("/orders/OrderPlaced.v1.json"));
    let upcast_page = events(format!("aggregate_id={ORDER}&upcast=true")).await;
    assert_eq!(upcast_page.status, StatusCode::OK, "{upcast_page:?}");
    assert_eq!(upcast_page.body[0]["dataschema"], upcast[0]["dataschema"]);
    assert_eq!(upcast_page.body[0]["data"], expected);
    assert_eq!(
        upcast_page.body.as_array().unwrap().len(),
        upcast.len(),
        "the API pages what the CLI prints"
    );
    let refused = events("upcast=yes".into()).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");

    let products = json_lines(
        &shop_on_stores(
            &instance,
            &["events", "inventory", "--aggregate", PRODUCT, "--upcast"],
        )
        .await,
    );
    assert_eq!(products[0]["type"], "shop.inventory.ProductAdded");
    assert_eq!(products[0]["eventversion"], "2");
    assert_eq!(products[0]["data"]["category"], "uncategorised");

    // Aggregates load their v1 events: the imported product restocks, the imported
    // (shipped) order refuses a cancellation as a shipped order does.
    let restock = admin
        .post(
            &format!("/api/products/{PRODUCT}/restock"),
            json!({"quantity": 5}),
        )
        .await;
    assert_eq!(restock.status, StatusCode::ACCEPTED, "{restock:?}");
    admin
        .get_until(
            &format!("/api/products/{PRODUCT}"),
            Duration::from_secs(30),
            |p| p["available"] == 13,
        )
        .await;
    let cancel = admin
        .post(&format!("/api/orders/{ORDER}/cancel"), json!({}))
        .await;
    assert_eq!(cancel.status, StatusCode::CONFLICT, "{cancel:?}");

    // New events are written at the newest version: a new customer's order of the
    // imported product is an `OrderPlaced` v2 in JPY, and the saga confirms it.
    let base = instance.gateway_url();
    let (customer, id) = Client::customer(&base, "Taro", "taro@example.com").await;
    let deposit = customer
        .post(
            &format!("/api/customers/{id}/wallet/deposits"),
            json!({"amount": 5000}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED, "{deposit:?}");
    let placed = customer
        .post(
            "/api/orders",
            json!({"lines": [{"product_id": PRODUCT, "quantity": 1}]}),
        )
        .await;
    assert_eq!(placed.status, StatusCode::ACCEPTED, "{placed:?}");
    let order = placed.body["order_id"].as_str().unwrap().to_string();
    admin
        .get_until(
            &format!("/api/orders/{order}"),
            Duration::from_secs(60),
            |o| o["status"] == "CONFIRMED",
        )
        .await;
    let events = json_lines(
        &shop_on_stores(
            &instance,
            &["events", "orders", "--aggregate", &order, "--json"],
        )
        .await,
    );
    assert_eq!(events[0]["eventversion"], "2");
    assert_eq!(
        events[0]["dataschema"],
        "https://shop.example/schemas/events/orders/OrderPlaced.v2.json"
    );
    assert_eq!(events[0]["data"]["currency"], "JPY");
    // A product added now is a `ProductAdded` v2 with the category it was given.
    let tea = admin
        .post(
            "/api/products",
            json!({"sku": "TEA-002", "name": "Matcha", "price": 2000, "stock": 1, "category": "tea"}),
        )
        .await;
    assert_eq!(tea.status, StatusCode::CREATED, "{tea:?}");
    let tea = tea.body["product_id"].as_str().unwrap().to_string();
    let events = json_lines(
        &shop_on_stores(
            &instance,
            &["events", "inventory", "--aggregate", &tea, "--json"],
        )
        .await,
    );
    assert_eq!(events[0]["eventversion"], "2");
    assert_eq!(events[0]["data"]["category"], "tea");
    admin
        .get_until(
            &format!("/api/products/{tea}"),
            Duration::from_secs(30),
            |p| p["category"] == "tea",
        )
        .await;
    let blank = admin
        .post(
            "/api/products",
            json!({"sku": "TEA-003", "name": "Hojicha", "price": 900, "stock": 1, "category": " "}),
        )
        .await;
    assert_eq!(blank.status, StatusCode::UNPROCESSABLE_ENTITY, "{blank:?}");
    assert_eq!(blank.body["errors"][0]["field"], "category", "{blank:?}");

    drop(shop);
    instance.cleanup().await;
}
