//! The catalogue end to end through the gateway, on real Kafka and PostgreSQL:
//! admin writes → inventory event store → outbox → Kafka → projector → read API.

mod common;

shop_sql::on_both_backends!(
    admin_manages_the_catalogue_and_the_read_api_follows,
    refused_requests_answer_problems_and_store_nothing,
    racing_commands_on_one_product_are_serialized,
);

use std::time::Duration;

use common::{Client, Instance};
use reqwest::StatusCode;
use serde_json::json;
use shop_sql::{self as sql, Dialect};

const WAIT: Duration = Duration::from_secs(30);

async fn admin_manages_the_catalogue_and_the_read_api_follows(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let admin = Client::admin(instance.gateway_url()).await;
    let public = Client::new(instance.gateway_url());

    // Add: the read model shows the product with its stock.
    let id = admin.add_product("TEA-1", 1200, 10).await;
    let product = public
        .get_until(&format!("/api/products/{id}"), WAIT, |p| {
            p["available"] == 10
        })
        .await;
    assert_eq!(product["sku"], "TEA-1");
    assert_eq!(product["name"], "Product TEA-1");
    assert_eq!(product["price"], 1200);
    assert_eq!(product["reserved"], 0);
    assert_eq!(product["sold"], 0);

    // Restock: available grows.
    let answer = admin
        .post(
            &format!("/api/products/{id}/restock"),
            json!({"quantity": 5}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    public
        .get_until(&format!("/api/products/{id}"), WAIT, |p| {
            p["available"] == 15
        })
        .await;

    // Price change.
    let answer = admin
        .send(
            "PUT",
            &format!("/api/products/{id}/price"),
            Some(json!({"price": 990})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    public
        .get_until(&format!("/api/products/{id}"), WAIT, |p| p["price"] == 990)
        .await;

    // The list shows it, and pages.
    let second = admin.add_product("TEA-2", 500, 1).await;
    let list = public
        .get_until("/api/products", WAIT, |l| {
            l.as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    assert_eq!(list[0]["product_id"], id.as_str());
    let page = public.get("/api/products?limit=1").await;
    assert_eq!(page.body.as_array().unwrap().len(), 1);
    let next = public
        .get(&format!("/api/products?limit=1&after={id}"))
        .await;
    assert_eq!(next.body[0]["product_id"], second.as_str());

    // The projection reports its position and no lag.
    let projections = admin
        .get_until("/api/projections", WAIT, |ps| {
            ps[0]["lag"] == 0 && ps[0]["events_applied"] == 4
        })
        .await;
    assert_eq!(projections[0]["name"], "products");
    assert_eq!(projections[0]["status"], "live");
    assert_eq!(projections[0]["positions"].as_array().unwrap().len(), 3);

    shop.kill().await;
    instance.cleanup().await;
}

async fn refused_requests_answer_problems_and_store_nothing(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let admin = Client::admin(instance.gateway_url()).await;
    let anonymous = Client::new(instance.gateway_url());
    let id = admin.add_product("SKU-A", 100, 1).await;

    let problem = |answer: &common::Answer, status: StatusCode| {
        assert_eq!(answer.status, status, "{answer:?}");
        assert_eq!(
            answer.content_type, "application/problem+json",
            "{answer:?}"
        );
        assert_eq!(answer.body["status"], status.as_u16());
        assert!(
            answer.body["type"].is_string()
                && answer.body["title"].is_string()
                && answer.body["detail"].is_string()
        );
    };

    // Duplicate SKU → 409.
    let dup = admin
        .post(
            "/api/products",
            json!({"sku": "SKU-A", "name": "Again", "price": 1, "stock": 1}),
        )
        .await;
    problem(&dup, StatusCode::CONFLICT);

    // Bad fields → 422 naming each field.
    let bad = admin
        .post(
            "/api/products",
            json!({"sku": "", "name": "x", "price": -5}),
        )
        .await;
    problem(&bad, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["sku", "price", "stock"]);

    // Wrong JSON type → 422; not JSON at all → 400.
    let wrong_type = admin
        .post(
            "/api/products",
            json!({"sku": "S", "name": "x", "price": "cheap", "stock": 1}),
        )
        .await;
    problem(&wrong_type, StatusCode::UNPROCESSABLE_ENTITY);
    let garbage = admin
        .http
        .post(format!("{}/api/products", instance.gateway_url()))
        .bearer_auth(admin.token.as_deref().unwrap())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        garbage.headers()["content-type"],
        "application/problem+json"
    );

    // Restock with a bad quantity, unknown product, malformed id.
    problem(
        &admin
            .post(
                &format!("/api/products/{id}/restock"),
                json!({"quantity": 0}),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let unknown = uuid::Uuid::now_v7();
    problem(
        &admin
            .post(
                &format!("/api/products/{unknown}/restock"),
                json!({"quantity": 1}),
            )
            .await,
        StatusCode::NOT_FOUND,
    );
    problem(
        &admin
            .post("/api/products/not-a-uuid/restock", json!({"quantity": 1}))
            .await,
        StatusCode::BAD_REQUEST,
    );

    // No token, a bad token, bad credentials → 401.
    problem(
        &anonymous
            .post(
                "/api/products",
                json!({"sku": "S2", "name": "x", "price": 1, "stock": 1}),
            )
            .await,
        StatusCode::UNAUTHORIZED,
    );
    let forged = Client {
        token: Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.bad".into()),
        ..Client::new(instance.gateway_url())
    };
    problem(
        &forged
            .post(
                &format!("/api/products/{id}/restock"),
                json!({"quantity": 1}),
            )
            .await,
        StatusCode::UNAUTHORIZED,
    );
    let wrong_password = anonymous
        .post(
            "/api/auth/token",
            json!({"email": "admin@shop.local", "password": "nope-nope"}),
        )
        .await;
    problem(&wrong_password, StatusCode::UNAUTHORIZED);
    problem(
        &anonymous.get("/api/projections").await,
        StatusCode::UNAUTHORIZED,
    );
    problem(
        &anonymous.get("/api/no-such-route").await,
        StatusCode::NOT_FOUND,
    );

    // The services check tokens themselves too: straight to inventory without one → 401.
    let direct = Client::new(shop.url("inventory"));
    problem(
        &direct
            .post(
                "/api/products",
                json!({"sku": "S3", "name": "x", "price": 1, "stock": 1}),
            )
            .await,
        StatusCode::UNAUTHORIZED,
    );

    // Nothing of the refused requests was stored: one product, one event.
    let pool = instance.store("inventory").await;
    let events: i64 = sql::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 1);
    let skus: i64 = sql::query_scalar("SELECT count(*) FROM product_skus")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(skus, 1);
    let list = anonymous
        .get_until("/api/products", Duration::from_secs(30), |l| {
            l.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["available"], 1);

    pool.close().await;
    shop.kill().await;
    instance.cleanup().await;
}

async fn racing_commands_on_one_product_are_serialized(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let admin = std::sync::Arc::new(Client::admin(instance.gateway_url()).await);
    let id = admin.add_product("RACE-1", 100, 0).await;

    // 20 restocks at once on one aggregate: each either wins or is retried after losing
    // the optimistic-concurrency race; none is lost or applied twice.
    let mut handles = Vec::new();
    for i in 1..=20 {
        let admin = admin.clone();
        let id = id.clone();
        handles.push(tokio::spawn(async move {
            admin
                .post(
                    &format!("/api/products/{id}/restock"),
                    json!({"quantity": i}),
                )
                .await
        }));
    }
    let mut accepted = 0;
    let mut conflicts = 0;
    for handle in handles {
        let answer = handle.await.unwrap();
        match answer.status {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}: {answer:?}"),
        }
    }
    assert_eq!(accepted + conflicts, 20);
    let pool = instance.store("inventory").await;
    let sequences: Vec<i64> =
        sql::query_scalar("SELECT sequence FROM events WHERE aggregate_id = $1 ORDER BY sequence")
            .bind(&id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        sequences,
        (1..=(accepted + 1) as i64).collect::<Vec<_>>(),
        "gapless, unique sequence"
    );
    let stored: i64 = sql::query_scalar("SELECT CAST(COALESCE(sum(CAST(data->>'quantity' AS BIGINT)), 0) AS BIGINT) FROM events WHERE event_type = 'ProductRestocked'")
        .fetch_one(&pool)
        .await
        .unwrap();
    Client::new(instance.gateway_url())
        .get_until(&format!("/api/products/{id}"), WAIT, |p| {
            p["available"] == stored
        })
        .await;

    pool.close().await;
    shop.kill().await;
    instance.cleanup().await;
}
