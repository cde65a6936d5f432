//! Reading the event stores (SPEC §3.7, §7), on both backends:
//! - `shop events orders --aggregate ID --json` prints the order's CloudEvents (required
//!   attributes, type names, data valid for its schema, sequence 1, 2, 3…) in order, and
//!   the human form one line per event; `--follow` prints new events as they come;
//! - `GET /api/events?context=orders&aggregate_id=ID` through the gateway answers the
//!   same for admins (403 for a customer, 400 for a missing or unknown context, 404 for an
//!   aggregate without events), and without `aggregate_id` pages through the whole store
//!   (`limit`, `after`, `Link`) in the order `shop events` prints it.

mod common;

use std::time::Duration;

use common::{shop_on_stores, shop_store_command, Client, Instance};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::Dialect;
use tokio::io::{AsyncBufReadExt, BufReader};

shop_sql::on_both_backends!(
    an_orders_events_are_cloud_events_in_order,
    the_api_pages_through_a_store_and_follow_prints_new_events,
);

/// The JSON Lines `shop events … --json` printed.
fn json_lines(printed: &str) -> Vec<Value> {
    printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A printed CloudEvent without the two attributes only an export needs: what the API
/// serves.
fn as_served(printed: &Value) -> Value {
    let mut printed = printed.clone();
    let object = printed.as_object_mut().unwrap();
    object.remove("aggregatetype");
    object.remove("eventversion");
    printed
}

async fn an_orders_events_are_cloud_events_in_order(backend: Dialect) {
    let instance = Instance::on(backend);
    let _shop = instance.spawn(&["all"], &[]).await;
    let (admin, customer, order_id) =
        common::confirmed_order(&instance, "TOOLS-1", "Tools", "tools@example.com").await;
    common::dispatch(&admin, &order_id).await;
    admin
        .get_until(
            &format!("/api/orders/{order_id}"),
            Duration::from_secs(30),
            |o| o["status"] == "SHIPPED",
        )
        .await;

    let events = json_lines(
        &shop_on_stores(
            &instance,
            &["events", "orders", "--aggregate", &order_id, "--json"],
        )
        .await,
    );
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "shop.orders.OrderPlaced",
            "shop.orders.OrderConfirmed",
            "shop.orders.OrderShipped"
        ]
    );
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["source"], "/shop/orders");
        assert_eq!(event["subject"], order_id.as_str());
        assert_eq!(event["sequence"], (n + 1).to_string());
        assert_eq!(event["correlationid"], order_id.as_str());
        assert_eq!(event["datacontenttype"], "application/json");
        for attribute in [
            "id",
            "time",
            "dataschema",
            "causationid",
            "traceparent",
            "data",
        ] {
            assert!(!event[attribute].is_null(), "no {attribute} in {event}");
        }
        assert!(
            event["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok(),
            "{event}"
        );
        chrono::DateTime::parse_from_rfc3339(event["time"].as_str().unwrap()).unwrap();
        // The data is the event's own schema's.
        let name = event["type"].as_str().unwrap().rsplit('.').next().unwrap();
        shop_schemas::decode_event::<shop_schemas::orders::OrderEvent>(name, &event["data"])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    // The human form: one line per event, with its type, subject, sequence and correlation.
    let human = shop_on_stores(&instance, &["events", "orders", "--aggregate", &order_id]).await;
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 3, "{human}");
    for (n, (line, name)) in lines
        .iter()
        .zip(["OrderPlaced", "OrderConfirmed", "OrderShipped"])
        .enumerate()
    {
        assert!(line.contains(name), "{line}");
        assert!(line.contains(&format!("#{}", n + 1)), "{line}");
        assert!(line.contains(&format!("correlation {order_id}")), "{line}");
    }

    // An id that is no UUID is a usage error (2); an aggregate without events an error (1);
    // both say so on stderr and print nothing.
    let unknown = uuid::Uuid::new_v4().to_string();
    for (id, code, says) in [
        ("not-a-uuid", 2, "invalid value 'not-a-uuid'"),
        (unknown.as_str(), 1, "no events of aggregate"),
    ] {
        let out = shop_store_command(&instance, &["events", "orders", "--aggregate", id])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{id}: {stderr}");
        assert!(stderr.contains(says), "{id}: {stderr}");
        assert!(out.stdout.is_empty(), "{id}");
    }

    // The same through the API, for admins only.
    let path = format!("/api/events?context=orders&aggregate_id={order_id}");
    let answer = admin.get(&path).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let served = answer.body.as_array().unwrap();
    assert_eq!(served.len(), events.len());
    for (served, printed) in served.iter().zip(&events) {
        assert_eq!(served, &as_served(printed));
    }
    assert_eq!(customer.get(&path).await.status, StatusCode::FORBIDDEN);
    for (query, status) in [
        (
            format!("context=nope&aggregate_id={order_id}"),
            StatusCode::BAD_REQUEST,
        ),
        (format!("aggregate_id={order_id}"), StatusCode::BAD_REQUEST),
        (
            format!("context=orders&aggregate_id={}", uuid::Uuid::new_v4()),
            StatusCode::NOT_FOUND,
        ),
        (
            "context=orders&limit=0".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("context=orders&after={}", uuid::Uuid::new_v4()),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let answer = admin.get(&format!("/api/events?{query}")).await;
        assert_eq!(answer.status, status, "{query}: {answer:?}");
        assert_eq!(answer.content_type, "application/problem+json", "{query}");
    }
    instance.cleanup().await;
}

/// `GET path` as `client`: the JSON body and the `Link` header.
async fn get_page(client: &Client, path: &str) -> (Vec<Value>, Option<String>) {
    let response = client
        .http
        .get(format!("{}{path}", client.base))
        .bearer_auth(client.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let link = response
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Vec<Value> = response.json().await.unwrap();
    (body, link)
}

async fn the_api_pages_through_a_store_and_follow_prints_new_events(backend: Dialect) {
    let instance = Instance::on(backend);
    let _shop = instance.spawn(&["all"], &[]).await;
    let (admin, customer, _) =
        common::confirmed_order(&instance, "PAGES-1", "Pages", "pages@example.com").await;

    // Following the orders store from now on.
    let mut follow = shop_store_command(&instance, &["events", "orders", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut followed = BufReader::new(follow.stdout.take().unwrap()).lines();

    // The inventory store, two events a page, equals what `shop events` prints.
    let printed = json_lines(&shop_on_stores(&instance, &["events", "inventory", "--json"]).await);
    assert!(printed.len() >= 3, "{printed:?}");
    let mut served = Vec::new();
    let mut next = Some("/api/events?context=inventory&limit=2".to_string());
    while let Some(path) = next.take() {
        let (page, link) = get_page(&admin, &path).await;
        assert!(page.len() <= 2);
        served.extend(page);
        next = link.map(|l| {
            let target = l.split_once('<').unwrap().1.split_once('>').unwrap().0;
            assert!(l.ends_with("rel=\"next\""), "{l}");
            target.to_string()
        });
    }
    assert_eq!(
        served,
        printed.iter().map(as_served).collect::<Vec<_>>(),
        "the pages differ from the store"
    );

    // A new order shows in the followed output. (The product's read model is its own
    // projection: the order's confirmation does not mean it has caught up.)
    let product = admin
        .get_until("/api/products?limit=1", Duration::from_secs(30), |p| {
            p[0]["product_id"].is_string()
        })
        .await[0]["product_id"]
        .as_str()
        .unwrap()
        .to_string();
    let placed = customer
        .post(
            "/api/orders",
            json!({"lines": [{"product_id": product, "quantity": 1}]}),
        )
        .await;
    assert_eq!(placed.status, StatusCode::ACCEPTED, "{placed:?}");
    let order = placed.body["order_id"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = followed.next_line().await.unwrap().expect("follow ended");
            let event: Value = serde_json::from_str(&line).unwrap();
            seen.push(event["type"].as_str().unwrap().to_string());
            if event["subject"] == order.as_str() && event["type"] == "shop.orders.OrderPlaced" {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the new order never showed; followed {seen:?}"));
    // From the beginning: the first order's events came first, each once.
    assert_eq!(
        seen,
        [
            "shop.orders.OrderPlaced",
            "shop.orders.OrderConfirmed",
            "shop.orders.OrderPlaced"
        ]
    );
    follow.kill().await.ok();
    instance.cleanup().await;
}
