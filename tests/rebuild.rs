//! Zero-downtime rebuilds (SPEC §3.7, §7), on both backends: `shop replay all` while
//! clients keep reading and writing. No read fails during the rebuild; the rebuilt
//! version goes live and keeps up with the writes; afterwards it equals, row for row, a
//! clean replay of the whole log made once the writes have stopped; the retired
//! version's tables are dropped.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Instance};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::{self as sql, Dialect};

shop_sql::on_both_backends!(
    a_rebuild_keeps_reads_up_and_ends_equal,
    read_models_of_an_older_revision_are_rebuilt_at_start,
);

const WAIT: Duration = Duration::from_secs(60);

/// `shop replay all --json` against the gateway; its outcome.
async fn replay_all(base: &str) -> Vec<Value> {
    let out =
        common::shop_admin_command(base, &["replay", "all", "--json", "--timeout", "120"]).await;
    serde_json::from_str(&out).unwrap()
}

async fn projections(admin: &Client) -> Vec<Value> {
    let answer = admin.get("/api/projections").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    answer.body.as_array().unwrap().clone()
}

async fn a_rebuild_keeps_reads_up_and_ends_equal(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let base = instance.gateway_url();
    let admin = Arc::new(Client::admin(&base).await);

    // History to rebuild: products, funded customers, orders (some short of funds).
    let mut products = Vec::new();
    for i in 0..5 {
        products.push(admin.add_product(&format!("RB-{i}"), 100 + i, 1_000).await);
    }
    instance.wait_for_catalogue(5).await;
    let mut customers = Vec::new();
    for i in 0..4 {
        let (customer, id) = Client::customer(
            &base,
            &format!("Rebuild {i}"),
            &format!("rb{i}@example.com"),
        )
        .await;
        let deposit = customer
            .post(
                &format!("/api/customers/{id}/wallet/deposits"),
                json!({"amount": if i == 3 { 50 } else { 100_000 }}),
            )
            .await;
        assert_eq!(deposit.status, StatusCode::ACCEPTED, "{deposit:?}");
        customers.push((Arc::new(customer), id));
    }
    let mut orders = Vec::new();
    for n in 0..12 {
        let (customer, _) = &customers[n % customers.len()];
        let placed = customer
            .post(
                "/api/orders",
                json!({"lines": [{"product_id": products[n % 5], "quantity": 1 + n % 3}]}),
            )
            .await;
        assert_eq!(placed.status, StatusCode::ACCEPTED, "{placed:?}");
        orders.push(placed.body["order_id"].as_str().unwrap().to_string());
    }

    // What the readers read is in the read model before the rebuild starts (the
    // projectors are consumers of their own; a 404 before they catch up is no failure
    // of the rebuild).
    for reader in 0..2 {
        for path in [
            format!("/api/orders/{}", orders[reader]),
            format!("/api/customers/{}", customers[reader].1),
        ] {
            admin
                .get_until(&path, Duration::from_secs(30), |_| true)
                .await;
        }
    }

    // Readers and writers for the whole rebuild.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for reader in 0..2 {
        let (admin, stop, reads, failures) =
            (admin.clone(), stop.clone(), reads.clone(), failures.clone());
        let paths: Vec<String> = [
            "/api/products?limit=100".to_string(),
            format!("/api/products/{}", products[reader]),
            format!("/api/orders/{}", orders[reader]),
            format!("/api/customers/{}", customers[reader].1),
            format!("/api/customers/{}/orders", customers[reader].1),
            "/api/projections".to_string(),
        ]
        .into();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for path in &paths {
                    let answer = admin.try_send("GET", path, None).await;
                    reads.fetch_add(1, Ordering::Relaxed);
                    match answer {
                        Ok(a) if a.status == StatusCode::OK => {}
                        other => failures
                            .lock()
                            .unwrap()
                            .push(format!("GET {path}: {other:?}")),
                    }
                }
            }
        }));
    }
    let placed_during = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let (customer, stop, placed_during, products) = (
            customers[0].0.clone(),
            stop.clone(),
            placed_during.clone(),
            products.clone(),
        );
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let placed = customer
                    .post(
                        "/api/orders",
                        json!({"lines": [{"product_id": products[n % 5], "quantity": 1}]}),
                    )
                    .await;
                assert_eq!(placed.status, StatusCode::ACCEPTED, "{placed:?}");
                placed_during
                    .lock()
                    .unwrap()
                    .push(placed.body["order_id"].as_str().unwrap().to_string());
                let restock = admin
                    .post(
                        &format!("/api/products/{}/restock", products[n % 5]),
                        json!({"quantity": 2}),
                    )
                    .await;
                assert_eq!(restock.status, StatusCode::ACCEPTED, "{restock:?}");
                n += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcome = replay_all(&base).await;
    assert_eq!(outcome.len(), 3, "{outcome:?}");
    for projection in &outcome {
        assert_eq!(projection["status"], "live", "{projection}");
        assert_eq!(projection["version"], 2, "{projection}");
    }
    // Writes go on for a moment on the rebuilt version.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let reads = reads.load(Ordering::Relaxed);
    println!(
        "rebuild: {reads} reads during the rebuild, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "reads failed during the rebuild: {failures:#?}"
    );
    assert!(reads > 20, "only {reads} reads ran");

    // Quiet: every order decided, every projection caught up on version 2.
    let all_orders: Vec<String> = orders
        .iter()
        .cloned()
        .chain(placed_during.lock().unwrap().iter().cloned())
        .collect();
    for order in &all_orders {
        admin
            .get_until(
                &format!("/api/orders/{order}"),
                Duration::from_secs(60),
                |o| o["status"] != "PENDING",
            )
            .await;
    }
    common::eventually(
        "every projection caught up",
        Duration::from_secs(60),
        || {
            let admin = admin.clone();
            async move {
                projections(&admin)
                    .await
                    .iter()
                    .all(|p| p["lag"] == 0 && p["version"] == 2 && p["status"] == "live")
            }
        },
    )
    .await;

    // Rebuilt-under-load equals a clean replay of the same log, row for row.
    let pool = instance.store("read").await;
    let rebuilt = common::read_model_snapshot(&pool, 2).await;
    let again = replay_all(&base).await;
    assert!(again.iter().all(|p| p["version"] == 3), "{again:?}");
    common::eventually("version 3 caught up", Duration::from_secs(60), || {
        let admin = admin.clone();
        async move {
            projections(&admin)
                .await
                .iter()
                .all(|p| p["lag"] == 0 && p["version"] == 3)
        }
    })
    .await;
    let clean = common::read_model_snapshot(&pool, 3).await;
    for ((table, rebuilt_rows), (_, clean_rows)) in rebuilt.iter().zip(&clean) {
        assert_eq!(
            rebuilt_rows, clean_rows,
            "{table}: the rebuilt version differs from a clean replay"
        );
    }
    let count = |name: &str| rebuilt.iter().find(|(t, _)| t == name).unwrap().1.len();
    assert_eq!(count("products"), 5);
    assert_eq!(count("customers"), 4);
    assert_eq!(count("orders"), all_orders.len());

    // The retired versions' tables go after their grace period.
    common::eventually("version 1 dropped", Duration::from_secs(40), || {
        let pool = pool.clone();
        async move {
            let exists = match pool.dialect() {
                Dialect::Postgres => {
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = 'products'"
                }
                Dialect::Sqlite => {
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'products'"
                }
            };
            sql::query_scalar::<i64>(exists)
                .fetch_one(&pool)
                .await
                .unwrap()
                == 0
        }
    })
    .await;
    pool.close().await;
    drop(shop);
    instance.cleanup().await;
}

/// A projection's revision (`ProjectionInfo::revision`): read models written by a build
/// whose products had no `category` and orders no `currency` (revision 1: the columns
/// dropped, the versions table as that build left it) are served at once by this build —
/// the columns added with their defaults — and rebuilt from the log to its revision, after
/// which they show what the events carry. The customers projection, unchanged, stays.
async fn read_models_of_an_older_revision_are_rebuilt_at_start(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let base = instance.gateway_url();
    let admin = Client::admin(&base).await;
    let tea = admin
        .post(
            "/api/products",
            json!({"sku": "TEA-9", "name": "Sencha", "price": 700, "stock": 10, "category": "tea"}),
        )
        .await;
    assert_eq!(tea.status, StatusCode::CREATED, "{tea:?}");
    let tea = tea.body["product_id"].as_str().unwrap().to_string();
    instance.wait_for_catalogue(1).await;
    let (hanako, id) = Client::customer(&base, "Hanako", "hanako@example.com").await;
    let deposit = hanako
        .post(
            &format!("/api/customers/{id}/wallet/deposits"),
            json!({"amount": 5000}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED, "{deposit:?}");
    let placed = hanako
        .post(
            "/api/orders",
            json!({"lines": [{"product_id": tea, "quantity": 1}]}),
        )
        .await;
    assert_eq!(placed.status, StatusCode::ACCEPTED, "{placed:?}");
    let order = placed.body["order_id"].as_str().unwrap().to_string();
    admin
        .get_until(&format!("/api/orders/{order}"), WAIT, |o| {
            o["status"] == "CONFIRMED" && o["currency"] == "JPY"
        })
        .await;
    admin
        .get_until(&format!("/api/products/{tea}"), WAIT, |p| {
            p["category"] == "tea"
        })
        .await;
    shop.kill().await;

    // The read database as the build before categories and currencies left it.
    let read = instance.store("read").await;
    for statement in [
        "ALTER TABLE products DROP COLUMN category",
        "ALTER TABLE orders DROP COLUMN currency",
        "ALTER TABLE projection_versions DROP COLUMN revision",
    ] {
        sql::query(statement).execute(&read).await.unwrap();
    }

    let shop = instance.spawn(&["all"], &[]).await;
    let admin = Client::admin(&base).await;
    let rebuilt = |p: &Value| p["status"] == "live" && p["version"] == 2 && p["revision"] == 2;
    let deadline = std::time::Instant::now() + WAIT;
    let listed = loop {
        let listed = projections(&admin).await;
        let named = |name: &str| listed.iter().find(|p| p["name"] == name).unwrap().clone();
        if rebuilt(&named("products")) && rebuilt(&named("orders")) {
            let customers = named("customers");
            assert_eq!(customers["version"], 1, "{customers}");
            assert_eq!(customers["revision"], 1, "{customers}");
            break listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "products and orders were not rebuilt to revision 2: {listed:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(listed.len(), 3);
    let product = admin.get(&format!("/api/products/{tea}")).await;
    assert_eq!(product.body["category"], "tea", "{product:?}");
    assert_eq!(product.body["available"], 9, "{product:?}");
    let order = admin.get(&format!("/api/orders/{order}")).await;
    assert_eq!(order.body["currency"], "JPY", "{order:?}");
    assert_eq!(order.body["status"], "CONFIRMED", "{order:?}");
    shop.kill().await;
    instance.cleanup().await;
}
