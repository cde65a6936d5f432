//! Moving an event log between instances (SPEC §7), on both backends: `shop export` of an
//! instance whose sagas ended every way (delivered, confirmed, cancelled for stock, for
//! payment and by the customer), `shop import` into a fresh one and its start give:
//! - read models equal to the first instance's, row for row;
//! - event stores holding exactly the same events (id, sequence, type, data, time,
//!   metadata): the saga reactions replayed the history without acting again — nothing
//!   charged, reserved, confirmed or refunded twice, nothing dead-lettered;
//! - an instance that goes on: a new customer's order for an imported product confirms,
//!   while an imported customer cannot sign in (credentials do not travel with events);
//! - and a second import into it is refused, writing nothing.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{shop_on_stores, shop_store_command, Client, Instance};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::{self as sql, Dialect};

shop_sql::on_both_backends!(export_then_import_gives_the_same_system);

const SERVICES: [&str; 5] = ["customers", "inventory", "orders", "payments", "shipping"];

/// Waits until an instance is at rest: no event appended for a while in any store,
/// nothing left in an outbox, every projection caught up — so that no saga step is still
/// to come when it is exported.
async fn at_rest(instance: &Instance, admin: &Client) {
    let mut stores = Vec::new();
    for service in SERVICES {
        stores.push(instance.store(service).await);
    }
    let mut last = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut counts = Vec::new();
        for store in &stores {
            for table in ["events", "outbox"] {
                counts.push(
                    sql::query_scalar::<i64>(&format!("SELECT count(*) FROM {table}"))
                        .fetch_one(store)
                        .await
                        .unwrap(),
                );
            }
        }
        let projections = admin.get("/api/projections").await.body;
        let caught_up = projections
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["lag"] == 0);
        let outboxes_empty = counts.iter().skip(1).step_by(2).all(|c| *c == 0);
        if last == counts && outboxes_empty && caught_up {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: not at rest within 90 s (events, outbox per store: {counts:?}; projections {projections})",
            instance.name
        );
        last = counts;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    for store in stores {
        store.close().await;
    }
}

async fn order(client: &Client, product: &str, quantity: i64) -> String {
    let placed = client
        .post(
            "/api/orders",
            json!({"lines": [{"product_id": product, "quantity": quantity}]}),
        )
        .await;
    assert_eq!(placed.status, StatusCode::ACCEPTED, "{placed:?}");
    placed.body["order_id"].as_str().unwrap().to_string()
}

async fn status_until(admin: &Client, order: &str, check: impl Fn(&Value) -> bool) -> Value {
    admin
        .get_until(
            &format!("/api/orders/{order}"),
            Duration::from_secs(60),
            check,
        )
        .await
}

async fn export_then_import_gives_the_same_system(backend: Dialect) {
    // Instance A: a history with every kind of outcome.
    let a = Instance::on(backend);
    let a_shop = a.spawn(&["all"], &[]).await;
    let base = a.gateway_url();
    let (admin, customer, delivered) =
        common::confirmed_order(&a, "TOOLS-1", "Tools", "tools@example.com").await;
    // The products read model is its own projection: the order's confirmation does not
    // mean it has caught up.
    let tools = admin
        .get_until("/api/products?limit=1", Duration::from_secs(30), |p| {
            p[0]["product_id"].is_string()
        })
        .await[0]["product_id"]
        .as_str()
        .unwrap()
        .to_string();
    let scarce = admin.add_product("TOOLS-SCARCE", 100, 1).await;
    a.wait_for_catalogue(2).await;
    common::dispatch(&admin, &delivered).await;
    // Confirmed (the last unit), then out of stock.
    let confirmed = order(&customer, &scarce, 1).await;
    status_until(&admin, &confirmed, |o| o["status"] == "CONFIRMED").await;
    let out_of_stock = order(&customer, &scarce, 5).await;
    // Declined: no money.
    let (poor, poor_id) = Client::customer(&base, "Poor", "poor@example.com").await;
    let declined = order(&poor, &tools, 1).await;
    // Cancelled by the customer once confirmed: refunded, released, shipment stopped.
    let cancelled = order(&customer, &tools, 2).await;
    status_until(&admin, &cancelled, |o| o["status"] == "CONFIRMED").await;
    let answer = customer
        .post(&format!("/api/orders/{cancelled}/cancel"), json!({}))
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    for (order, reason) in [
        (&out_of_stock, "out_of_stock"),
        (&declined, "payment_declined"),
        (&cancelled, "customer_request"),
    ] {
        status_until(&admin, order, |o| {
            o["status"] == "CANCELLED" && o["cancel_reason"] == reason
        })
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
    status_until(&admin, &delivered, |o| o["status"] == "DELIVERED").await;
    at_rest(&a, &admin).await;

    // Export A (while it runs, to standard output), import into a fresh B, start B.
    let file: PathBuf = common::logs_dir().join(format!("{}-export.jsonl", a.name));
    let exported = shop_on_stores(&a, &["export", "--quiet"]).await;
    std::fs::write(&file, &exported).unwrap();
    let lines = exported.lines().count();
    assert!(lines > 30, "only {lines} events exported");
    let b = Instance::on(backend);
    shop_on_stores(&b, &["import", file.to_str().unwrap()]).await;
    // The import marked the events each saga reaction will read for replay.
    for service in ["inventory", "orders", "payments", "shipping"] {
        let store = b.store(service).await;
        let marks: i64 = sql::query_scalar("SELECT count(*) FROM replay_only")
            .fetch_one(&store)
            .await
            .unwrap();
        assert!(marks > 0, "{service}: no replay marks");
        store.close().await;
    }
    let b_shop = b.spawn(&["all"], &[]).await;
    let b_admin = Client::admin(&b.gateway_url()).await;

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

    // B's saga reactions use up every replay mark (each imported event of the topics they
    // read, applied to their own tables without a command)…
    for service in ["inventory", "orders", "payments", "shipping"] {
        let store = b.store(service).await;
        common::eventually(
            &format!("{service}: every replay mark used"),
            Duration::from_secs(60),
            || async {
                sql::query_scalar::<i64>("SELECT count(*) FROM replay_only")
                    .fetch_one(&store)
                    .await
                    .unwrap()
                    == 0
            },
        )
        .await;
        store.close().await;
    }
    // …and then every store holds exactly A's events: no saga step ran again on B, and
    // nothing was dead-lettered (a saga command refused by its aggregate would have been).
    at_rest(&b, &b_admin).await;
    for service in SERVICES {
        let a_events = shop_on_stores(&a, &["events", service, "--json"]).await;
        let b_events = shop_on_stores(&b, &["events", service, "--json"]).await;
        assert_eq!(a_events, b_events, "{service}: the event stores differ");
    }
    // Not even a command that would have appended nothing: the replay issued none.
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", b_shop.url("orders")))
        .bearer_auth(common::METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("# TYPE shop_"), "no metrics: {metrics}");
    let commands: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("shop_command_duration_seconds_count"))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert!(commands.is_empty(), "commands ran on B: {commands:?}");
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
    let new_order = order(&newcomer, &tools, 1).await;
    status_until(&b_admin, &new_order, |o| o["status"] == "CONFIRMED").await;
    let login = Client::new(&b_base)
        .post(
            "/api/auth/token",
            json!({"email": "tools@example.com", "password": "password-tools@example.com"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    // The email stays taken on B.
    let again = Client::new(&b_base)
        .post(
            "/api/customers",
            json!({"name": "Tools", "email": "tools@example.com", "password": "another-password",
                   "address": {"line1": "1-2-3 Shibuya", "city": "Tokyo", "postal_code": "150-0002", "country": "JP"}}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");

    // A second import into B is refused and writes nothing.
    let before = shop_on_stores(&b, &["events", "customers", "--json"]).await;
    let refused = shop_store_command(&b, &["import", file.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("fresh instance"), "{message}");
    assert_eq!(
        shop_on_stores(&b, &["events", "customers", "--json"]).await,
        before
    );

    a_read.close().await;
    b_read.close().await;
    drop(a_shop);
    drop(b_shop);
    a.cleanup().await;
    b.cleanup().await;
}
