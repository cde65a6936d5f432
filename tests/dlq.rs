//! Dead letters (SPEC §3.7, §7), on both backends: an event the products projection
//! cannot apply (a trigger in its table refuses it, as a broken migration would) is
//! retried, dead-lettered, and shows in `GET /api/dlq` and `shop dlq list` with its error
//! while later events still apply. Once the cause is fixed, `shop dlq retry` re-drives it:
//! the product appears, and consumers that had applied the event do not apply it again.

mod common;

use std::time::Duration;

use common::{Client, Instance};
use reqwest::StatusCode;
use serde_json::Value;
use shop_sql::{self as sql, Dialect};

shop_sql::on_both_backends!(a_poison_event_is_dead_lettered_and_retried);

async fn shop(base: &str, args: &[&str]) -> String {
    common::shop_admin_command(base, args).await
}

async fn a_poison_event_is_dead_lettered_and_retried(backend: Dialect) {
    let instance = Instance::on(backend);
    let _shop = instance.spawn(&["all"], &[]).await;
    let base = instance.gateway_url();
    let admin = Client::admin(&base).await;
    let read = instance.store("read").await;

    // The cause: the products table refuses one SKU.
    match backend {
        Dialect::Postgres => {
            sql::query("CREATE FUNCTION poison() RETURNS trigger AS $body$ BEGIN IF NEW.sku = 'POISON' THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $body$ LANGUAGE plpgsql")
                .execute(&read).await.unwrap();
            sql::query("CREATE TRIGGER poison BEFORE INSERT ON products FOR EACH ROW EXECUTE FUNCTION poison()")
                .execute(&read).await.unwrap();
        }
        Dialect::Sqlite => {
            sql::query("CREATE TRIGGER poison BEFORE INSERT ON products WHEN NEW.sku = 'POISON' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END")
                .execute(&read).await.unwrap();
        }
    }
    let poison = admin.add_product("POISON", 100, 5).await;
    let good = admin.add_product("GOOD", 100, 5).await;
    // Later events still apply.
    admin
        .get_until(
            &format!("/api/products/{good}"),
            Duration::from_secs(30),
            |_| true,
        )
        .await;

    // Dead-lettered with its error, through the API and the command line.
    let letters = admin
        .get_until("/api/dlq", Duration::from_secs(30), |l| {
            l.as_array().is_some_and(|l| !l.is_empty())
        })
        .await;
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["consumer"], "projection.products", "{letter}");
    assert!(
        letter["event_type"]
            .as_str()
            .unwrap()
            .ends_with("ProductAdded"),
        "{letter}"
    );
    assert!(
        letter["error"].as_str().unwrap().contains("poisoned row"),
        "{letter}"
    );
    assert_eq!(letter["attempts"], 3, "{letter}");
    assert!(letter["retried_at"].is_null());
    let listed: Vec<Value> =
        serde_json::from_str(&shop(&base, &["dlq", "list", "--json"]).await).unwrap();
    assert_eq!(listed, letters.to_vec());
    assert_eq!(
        admin.get(&format!("/api/products/{poison}")).await.status,
        StatusCode::NOT_FOUND
    );
    let projections = admin.get("/api/projections").await.body;
    let products = projections
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "products")
        .unwrap();
    assert!(
        products["last_error"]
            .as_str()
            .unwrap()
            .contains("poisoned row"),
        "{products}"
    );

    // Fixed, then re-driven.
    match backend {
        Dialect::Postgres => sql::query("DROP TRIGGER poison ON products"),
        Dialect::Sqlite => sql::query("DROP TRIGGER poison"),
    }
    .execute(&read)
    .await
    .unwrap();
    let retried = shop(&base, &["dlq", "retry", "--all"]).await;
    assert!(
        retried.contains(letter["id"].as_str().unwrap()),
        "{retried}"
    );
    let product = admin
        .get_until(
            &format!("/api/products/{poison}"),
            Duration::from_secs(30),
            |_| true,
        )
        .await;
    assert_eq!(product["sku"], "POISON");
    assert_eq!(product["available"], 5);
    let after: Vec<Value> =
        serde_json::from_str(&shop(&base, &["dlq", "list", "--json"]).await).unwrap();
    assert_eq!(after.len(), 1);
    assert!(!after[0]["retried_at"].is_null(), "{after:?}");
    assert!(
        shop(&base, &["dlq", "list", "--pending", "--json"])
            .await
            .trim()
            == "[]"
    );

    // `shop topics list` sees the dead letter and its retry marker, on either log.
    let mut topics = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"));
    topics
        .args(["topics", "list", "--json", "--all"])
        .env_clear();
    match backend {
        Dialect::Sqlite => topics.arg("--data-dir").arg(&instance.data_dir),
        Dialect::Postgres => topics.env("SHOP_KAFKA_BROKERS", &instance.infra.kafka_brokers),
    };
    let out = topics.output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let dead = listed
        .iter()
        .find(|t| t["name"] == format!("{}dead-letters", instance.topic_prefix))
        .unwrap_or_else(|| panic!("no dead-letter topic in {listed:?}"));
    assert_eq!(
        dead["records"], 2,
        "the dead letter and its retry marker: {dead}"
    );

    // The orders service's catalogue had applied the event once; the re-drive changed
    // nothing there.
    let orders = instance.store("orders").await;
    let copies: i64 = sql::query_scalar("SELECT count(*) FROM catalogue WHERE product_id = $1")
        .bind(uuid::Uuid::parse_str(&poison).unwrap())
        .fetch_one(&orders)
        .await
        .unwrap();
    assert_eq!(copies, 1);
    orders.close().await;
    read.close().await;
    instance.cleanup().await;
}
