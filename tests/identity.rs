//! Identity end to end through the gateway (SPEC §3.1): registration, login, Argon2id
//! credentials outside the events, and who may see what.

mod common;

shop_sql::on_both_backends!(
    customers_register_log_in_and_see_only_their_own_account,
    refused_registrations_and_logins_store_nothing_and_secrets_stay_out_of_events_and_logs,
    deposits_reach_the_wallet_balance_of_the_customer_view,
    password_guessing_is_throttled_per_account_and_the_admin_address_is_reserved,
);

use std::time::Duration;

use common::{Client, Instance};
use reqwest::StatusCode;
use serde_json::json;
use shop_sql::{self as sql, Dialect};

const WAIT: Duration = Duration::from_secs(60);

fn registration(email: &str) -> serde_json::Value {
    json!({"name": "Hanako Yamada", "email": email, "password": "s3cret-passw0rd",
           "address": {"line1": "1-2-3 Shibuya", "city": "Tokyo", "postal_code": "150-0002", "country": "JP"}})
}

async fn customers_register_log_in_and_see_only_their_own_account(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let anonymous = Client::new(instance.gateway_url());

    // Register and log in.
    let answer = anonymous
        .post("/api/customers", registration("Hanako@Example.com"))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    let hanako_id = answer.body["customer_id"].as_str().unwrap().to_string();
    let login = anonymous
        .post(
            "/api/auth/token",
            json!({"email": "hanako@example.com", "password": "s3cret-passw0rd"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{login:?}");
    assert_eq!(login.body["token_type"], "Bearer");
    assert!(login.body["expires_in"].as_u64().unwrap() > 0);
    let hanako = Client {
        token: Some(login.body["access_token"].as_str().unwrap().to_string()),
        ..Client::new(instance.gateway_url())
    };

    // The customer view (read model).
    let me = hanako
        .get_until(&format!("/api/customers/{hanako_id}"), WAIT, |c| {
            c["customer_id"] == hanako_id.as_str()
        })
        .await;
    assert_eq!(me["name"], "Hanako Yamada");
    assert_eq!(
        me["email"], "hanako@example.com",
        "emails are kept lower-cased"
    );
    assert_eq!(me["address"]["country"], "JP");
    assert_eq!(me["wallet_balance"], 0);
    assert_eq!(me["orders_count"], 0);
    assert_eq!(me["lifetime_spend"], 0);
    assert!(me["created_at"].is_string());

    // Another customer's account is "not found"; the admin sees every account.
    let (taro, taro_id) =
        Client::customer(instance.gateway_url(), "Taro", "taro@example.com").await;
    assert_eq!(
        taro.get(&format!("/api/customers/{hanako_id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let admin = Client::admin(instance.gateway_url()).await;
    admin
        .get_until(&format!("/api/customers/{taro_id}"), WAIT, |c| {
            c["name"] == "Taro"
        })
        .await;
    assert_eq!(
        admin
            .get(&format!("/api/customers/{hanako_id}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        anonymous
            .get(&format!("/api/customers/{hanako_id}"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Admin routes refuse customers (403), even straight at the service.
    let write = json!({"sku": "X-1", "name": "x", "price": 1, "stock": 1});
    assert_eq!(
        hanako.post("/api/products", write.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        hanako.get("/api/projections").await.status,
        StatusCode::FORBIDDEN
    );
    let direct = Client {
        token: hanako.token.clone(),
        ..Client::new(shop.url("inventory"))
    };
    assert_eq!(
        direct.post("/api/products", write).await.status,
        StatusCode::FORBIDDEN
    );

    shop.kill().await;
    instance.cleanup().await;
}

async fn refused_registrations_and_logins_store_nothing_and_secrets_stay_out_of_events_and_logs(
    backend: Dialect,
) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let anonymous = Client::new(instance.gateway_url());
    assert_eq!(
        anonymous
            .post("/api/customers", registration("sato@example.com"))
            .await
            .status,
        StatusCode::CREATED
    );

    // The same email in another case → 409.
    let duplicate = anonymous
        .post("/api/customers", registration("SATO@example.com"))
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT, "{duplicate:?}");
    assert_eq!(duplicate.content_type, "application/problem+json");

    // Every bad field is named.
    let bad = anonymous
        .post(
            "/api/customers",
            json!({"name": "", "email": "not-an-email", "password": "short",
                   "address": {"line1": "x", "city": "", "postal_code": "1", "country": "UK"}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "name",
            "email",
            "password",
            "address.city",
            "address.country"
        ]
    );
    let missing_address = anonymous
        .post(
            "/api/customers",
            json!({"name": "A", "email": "a@example.com", "password": "long-enough"}),
        )
        .await;
    assert_eq!(missing_address.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Wrong password, unknown email → 401 alike.
    for (email, password) in [
        ("sato@example.com", "wrong-password"),
        ("nobody@example.com", "s3cret-passw0rd"),
    ] {
        let answer = anonymous
            .post(
                "/api/auth/token",
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
        assert_eq!(answer.content_type, "application/problem+json");
    }

    // One account, one event; the password only as an Argon2id hash, never in events.
    let pool = instance.store("customers").await;
    let events: Vec<String> =
        sql::query_scalar("SELECT CAST(data AS TEXT) || CAST(metadata AS TEXT) FROM events")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(events.len(), 1);
    assert!(
        !events[0].contains("s3cret-passw0rd") && !events[0].contains("argon2"),
        "{}",
        events[0]
    );
    let hashes: Vec<String> = sql::query_scalar("SELECT password_hash FROM customer_credentials")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(hashes.len(), 1);
    assert!(hashes[0].starts_with("$argon2id$"), "{}", hashes[0]);

    // Nor on the topic, nor in the process's log.
    let records = instance
        .topic_records(&format!("{}customers.events", instance.topic_prefix))
        .await;
    assert_eq!(records.len(), 1);
    assert!(!records[0]
        .payload
        .as_deref()
        .unwrap_or_default()
        .contains("s3cret"));
    let log = std::fs::read_to_string(&shop.log_path).unwrap();
    assert!(!log.contains("s3cret-passw0rd") && !log.contains(common::ADMIN_PASSWORD));

    pool.close().await;
    shop.kill().await;
    instance.cleanup().await;
}

async fn deposits_reach_the_wallet_balance_of_the_customer_view(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let (hanako, hanako_id) =
        Client::customer(instance.gateway_url(), "Hanako", "hanako@example.com").await;
    let (taro, taro_id) =
        Client::customer(instance.gateway_url(), "Taro", "taro@example.com").await;
    let admin = Client::admin(instance.gateway_url()).await;

    // A customer deposits into its own wallet.
    for amount in [5000, 2500] {
        let answer = hanako
            .post(
                &format!("/api/customers/{hanako_id}/wallet/deposits"),
                json!({"amount": amount}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    }
    hanako
        .get_until(&format!("/api/customers/{hanako_id}"), WAIT, |c| {
            c["wallet_balance"] == 7500
        })
        .await;

    // Not into another's (404), not without a token (401), not a bad amount (422).
    let deposits = format!("/api/customers/{hanako_id}/wallet/deposits");
    assert_eq!(
        taro.post(&deposits, json!({"amount": 1})).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        Client::new(instance.gateway_url())
            .post(&deposits, json!({"amount": 1}))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    for amount in [
        json!(0),
        json!(-5),
        json!(1_000_000_000_001_i64),
        json!("ten"),
    ] {
        let answer = hanako.post(&deposits, json!({"amount": amount})).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{amount}: {answer:?}"
        );
    }

    // An admin deposits into any registered customer's wallet (once payments has seen the
    // registration), and into no unknown one.
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(
        admin
            .post(
                &format!("/api/customers/{unknown}/wallet/deposits"),
                json!({"amount": 1})
            )
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    common::eventually("payments knows taro", WAIT, || async {
        admin
            .post(
                &format!("/api/customers/{taro_id}/wallet/deposits"),
                json!({"amount": 300}),
            )
            .await
            .status
            == StatusCode::ACCEPTED
    })
    .await;
    taro.get_until(&format!("/api/customers/{taro_id}"), WAIT, |c| {
        c["wallet_balance"] == 300
    })
    .await;

    // Refused deposits stored nothing: three FundsDeposited in the payments store.
    let pool = instance.store("payments").await;
    let events: i64 = sql::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 3);
    let hanako_view = hanako
        .get(&format!("/api/customers/{hanako_id}"))
        .await
        .body;
    assert_eq!(hanako_view["wallet_balance"], 7500);

    pool.close().await;
    shop.kill().await;
    instance.cleanup().await;
}

/// Issue 26: wrong passwords for one account are throttled (after five in a minute every
/// attempt for it is 429 with `Retry-After`, the right password included), other accounts
/// are not; `admin@shop.local` cannot be registered as a customer (409, no event).
async fn password_guessing_is_throttled_per_account_and_the_admin_address_is_reserved(
    backend: Dialect,
) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let public = Client::new(instance.gateway_url());
    Client::customer(instance.gateway_url(), "Hanako", "hanako@example.com").await;
    Client::customer(instance.gateway_url(), "Taro", "taro@example.com").await;
    let login = |email: &str, password: &str| {
        public.post(
            "/api/auth/token",
            json!({"email": email, "password": password}),
        )
    };
    for attempt in 1..=5 {
        let answer = login("hanako@example.com", "not-her-password").await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}: {answer:?}"
        );
    }
    for password in ["not-her-password", "password-hanako@example.com"] {
        let answer = login("hanako@example.com", password).await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{answer:?}");
        assert_eq!(answer.content_type, "application/problem+json");
    }
    let raw = reqwest::Client::new()
        .post(format!("{}/api/auth/token", instance.gateway_url()))
        .json(&json!({"email": "hanako@example.com", "password": "x"}))
        .send()
        .await
        .unwrap();
    let wait: u64 = raw.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let other = login("taro@example.com", "password-taro@example.com").await;
    assert_eq!(
        other.status,
        StatusCode::OK,
        "another account is not throttled: {other:?}"
    );

    let admin = public
        .post("/api/customers", registration("Admin@Shop.Local"))
        .await;
    assert_eq!(admin.status, StatusCode::CONFLICT, "{admin:?}");
    let store = instance.store("customers").await;
    let registered: i64 =
        sql::query_scalar("SELECT count(*) FROM events WHERE event_type = 'CustomerRegistered'")
            .fetch_one(&store)
            .await
            .unwrap();
    assert_eq!(registered, 2, "no event for the refused registration");
    shop.kill().await;
    instance.cleanup().await;
}
