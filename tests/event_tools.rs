//! The event log as operators handle it (SPEC §3.7, §7), on both backends:
//! - `shop events orders --aggregate ID --json` prints the order's CloudEvents in order,
//!   and `GET /api/events?context=orders&aggregate_id=ID` answers the same (admin only);
//! - `shop export` from one instance, `shop import` into a fresh one, start it: its read
//!   models equal the first one's row for row, its event stores hold exactly the same
//!   events (the saga reactions replayed the history without acting again), and it takes
//!   new orders for the imported products.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Client, Instance};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_eventing::sql::Dialect;

shop_eventing::on_both_backends!(
    an_orders_events_are_cloud_events_in_order,
    export_then_import_gives_the_same_system,
);

/// `shop ARGS` against an instance's stores (its databases, or its data directory).
async fn shop(instance: &Instance, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"));
    command.args(args).env_clear();
    match instance.backend {
        Dialect::Sqlite => {
            command.arg("--data-dir").arg(&instance.data_dir);
        }
        Dialect::Postgres => {
            command
                .env("SHOP_DATABASE_URL", &instance.infra.database_url)
                .env("SHOP_KAFKA_BROKERS", &instance.infra.kafka_brokers)
                .env("SHOP_INSTANCE", &instance.name)
                .env("SHOP_TOPIC_PREFIX", &instance.topic_prefix);
        }
    }
    let out = command.output().await.unwrap();
    assert!(
        out.status.success(),
        "shop {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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

    let printed = shop(
        &instance,
        &["events", "orders", "--aggregate", &order_id, "--json"],
    )
    .await;
    let events: Vec<Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
        // The data is the event's own schema's.
        let name = event["type"].as_str().unwrap().rsplit('.').next().unwrap();
        shop_schemas::decode_event::<shop_schemas::orders::OrderEvent>(name, &event["data"])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    // The same through the API, for admins only.
    let path = format!("/api/events?context=orders&aggregate_id={order_id}");
    let answer = admin.get(&path).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let served = answer.body.as_array().unwrap();
    assert_eq!(served.len(), events.len());
    for (served, printed) in served.iter().zip(&events) {
        let mut printed = printed.clone();
        let object = printed.as_object_mut().unwrap();
        object.remove("aggregatetype");
        object.remove("eventversion");
        assert_eq!(served, &printed);
    }
    assert_eq!(customer.get(&path).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        admin
            .get(&format!("/api/events?context=nope&aggregate_id={order_id}"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    instance.cleanup().await;
}

async fn export_then_import_gives_the_same_system(backend: Dialect) {
    // Instance A: a history with every kind of outcome.
    let a = Instance::on(backend);
    let a_shop = a.spawn(&["all"], &[]).await;
    let base = a.gateway_url();
    let (admin, customer, delivered) =
        common::confirmed_order(&a, "TOOLS-1", "Tools", "tools@example.com").await;
    let scarce = admin.add_product("TOOLS-SCARCE", 100, 1).await;
    a.wait_for_catalogue(2).await;
    common::dispatch(&admin, &delivered).await;
    let mut orders = vec![delivered.clone()];
    for quantity in [1, 5] {
        let placed = customer
            .post(
                "/api/orders",
                json!({"lines": [{"product_id": scarce, "quantity": quantity}]}),
            )
            .await;
        orders.push(placed.body["order_id"].as_str().unwrap().to_string());
    }
    let (poor, poor_id) = Client::customer(&base, "Poor", "poor@example.com").await;
    let declined = poor
        .post(
            "/api/orders",
            json!({"lines": [{"product_id": scarce, "quantity": 1}]}),
        )
        .await;
    orders.push(declined.body["order_id"].as_str().unwrap().to_string());
    for order in &orders {
        admin
            .get_until(
                &format!("/api/orders/{order}"),
                Duration::from_secs(60),
                |o| o["status"] != "PENDING",
            )
            .await;
    }
    // Money arrives after the decline: replaying the history must not charge it now.
    let deposit = poor
        .post(
            &format!("/api/customers/{poor_id}/wallet/deposits"),
            json!({"amount": 10_000}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED);
    admin
        .post(&format!("/api/shipments/{delivered}/deliver"), json!({}))
        .await;
    admin
        .get_until(
            &format!("/api/orders/{delivered}"),
            Duration::from_secs(30),
            |o| o["status"] == "DELIVERED",
        )
        .await;
    common::eventually("A's projections caught up", Duration::from_secs(60), || {
        let admin = &admin;
        async move {
            let all = admin.get("/api/projections").await.body;
            all.as_array().unwrap().iter().all(|p| p["lag"] == 0)
        }
    })
    .await;

    // Export A (while it runs), import into a fresh B, start B.
    let file: PathBuf = common::logs_dir().join(format!("{}-export.jsonl", a.name));
    shop(&a, &["export", "--out", file.to_str().unwrap()]).await;
    let exported = std::fs::read_to_string(&file).unwrap().lines().count();
    assert!(exported > 20, "only {exported} events exported");
    let b = Instance::on(backend);
    shop(&b, &["import", file.to_str().unwrap()]).await;
    let b_shop = b.spawn(&["all"], &[]).await;

    // B's read models equal A's, row for row.
    let a_read = a.store("read").await;
    let b_read = b.store("read").await;
    let a_rows = common::read_model_snapshot(&a_read, 1).await;
    let mut b_rows = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        b_rows = common::read_model_snapshot(&b_read, 1).await;
        if b_rows == a_rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for ((table, a_table), (_, b_table)) in a_rows.iter().zip(&b_rows) {
        assert_eq!(a_table, b_table, "{table} differs after export/import");
    }

    // Every store holds exactly A's events: no saga step ran again on B.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for service in ["customers", "inventory", "orders", "payments", "shipping"] {
        let a_events = shop(&a, &["events", service, "--json"]).await;
        let b_events = shop(&b, &["events", service, "--json"]).await;
        assert_eq!(a_events, b_events, "{service}: the event stores differ");
    }

    // The reactions replayed the history without trying anything again (a saga command
    // refused by its aggregate would have been dead-lettered).
    let b_admin = Client::admin(&b.gateway_url()).await;
    assert_eq!(b_admin.get("/api/dlq").await.body, json!([]));

    // B goes on: a new customer orders an imported product; imported customers must
    // reset their password (credentials do not travel with events).
    let b_base = b.gateway_url();
    let (newcomer, id) = Client::customer(&b_base, "Newcomer", "newcomer@example.com").await;
    newcomer
        .post(
            &format!("/api/customers/{id}/wallet/deposits"),
            json!({"amount": 5000}),
        )
        .await;
    let product = admin.get("/api/products?limit=10").await.body[0]["product_id"]
        .as_str()
        .unwrap()
        .to_string();
    let placed = newcomer
        .post(
            "/api/orders",
            json!({"lines": [{"product_id": product, "quantity": 1}]}),
        )
        .await;
    assert_eq!(placed.status, StatusCode::ACCEPTED, "{placed:?}");
    let order = placed.body["order_id"].as_str().unwrap().to_string();
    b_admin
        .get_until(
            &format!("/api/orders/{order}"),
            Duration::from_secs(60),
            |o| o["status"] == "CONFIRMED",
        )
        .await;
    let login = Client::new(&b_base)
        .post(
            "/api/auth/token",
            json!({"email": "tools@example.com", "password": "password-tools@example.com"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);

    a_read.close().await;
    b_read.close().await;
    drop(a_shop);
    drop(b_shop);
    a.cleanup().await;
    b.cleanup().await;
}
