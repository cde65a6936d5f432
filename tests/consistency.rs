//! Read-your-writes (SPEC §3.6) through the gateway, on both backends: every accepted
//! command answers with `X-Consistency-Token`; a GET carrying it (header or
//! `?consistency=`) sees that command's effect at once, and one that cannot be satisfied
//! in time answers what it has with `X-Consistency: stale`.

mod common;

use common::{Client, Instance};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::Dialect;

shop_sql::on_both_backends!(a_read_with_the_token_sees_the_command);

/// `GET path` with the token in a header; the answer and its `X-Consistency` header.
async fn get_with_token(
    client: &Client,
    path: &str,
    token: &str,
) -> (StatusCode, Value, Option<String>) {
    let mut request = client
        .http
        .get(format!("{}{path}", client.base))
        .header("x-consistency-token", token);
    if let Some(bearer) = &client.token {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let state = response
        .headers()
        .get("x-consistency")
        .map(|v| v.to_str().unwrap().to_string());
    (status, response.json().await.unwrap_or(Value::Null), state)
}

/// `POST path`; the status and the token it answered with.
async fn post_for_token(client: &Client, path: &str, body: Value) -> (StatusCode, Value, String) {
    let response = client
        .http
        .post(format!("{}{path}", client.base))
        .bearer_auth(client.token.as_deref().unwrap_or_default())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let token = response
        .headers()
        .get("x-consistency-token")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("POST {path} answered {status} without a token"));
    (status, response.json().await.unwrap_or(Value::Null), token)
}

async fn a_read_with_the_token_sees_the_command(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance
        .spawn(&["all"], &[("SHOP_CONSISTENCY_WAIT_MS", "5000")])
        .await;
    let admin = Client::admin(instance.gateway_url()).await;
    let public = Client::new(instance.gateway_url());

    // A new product is readable at once with its token, every time.
    for i in 0..10 {
        let (status, body, token) = post_for_token(
            &admin,
            "/api/products",
            json!({"sku": format!("SKU-{i}"), "name": "Tea", "price": 100, "stock": 5}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let id = body["product_id"].as_str().unwrap().to_string();
        let (status, product, state) =
            get_with_token(&public, &format!("/api/products/{id}"), &token).await;
        assert_eq!((status, state), (StatusCode::OK, None), "{product}");
        assert_eq!(product["available"], 5);

        // A restock, read through the query parameter instead of the header.
        let (status, _, token) = post_for_token(
            &admin,
            &format!("/api/products/{id}/restock"),
            json!({"quantity": 3}),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let answer = public
            .get(&format!("/api/products/{id}?consistency={token}"))
            .await;
        assert_eq!(answer.body["available"], 8, "{answer:?}");
    }

    // A deposit is in the customer view at once.
    let (hanako, hanako_id) =
        Client::customer(instance.gateway_url(), "Hanako", "hanako@example.com").await;
    let (status, _, token) = post_for_token(
        &hanako,
        &format!("/api/customers/{hanako_id}/wallet/deposits"),
        json!({"amount": 700}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, view, state) =
        get_with_token(&hanako, &format!("/api/customers/{hanako_id}"), &token).await;
    assert_eq!((view["wallet_balance"].as_i64(), state), (Some(700), None));

    // A version no projection will reach in time: the answer is marked stale.
    let far = format!("payments:{hanako_id}:1000000");
    let (status, view, state) =
        get_with_token(&hanako, &format!("/api/customers/{hanako_id}"), &far).await;
    assert_eq!(
        (status, state.as_deref()),
        (StatusCode::OK, Some("stale")),
        "{view}"
    );
    // Not a token at all: a problem, not a wait.
    let (status, problem, _) = get_with_token(&public, "/api/products", "garbage").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    // Issue 26: 1,500 tokens in one anonymous read are refused at once, not waited on.
    let many: Vec<String> = (0..1_500).map(|i| format!("inventory:p{i}:1")).collect();
    let (status, problem, _) = get_with_token(&public, "/api/products", &many.join(",")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap_or("").contains("at most"),
        "{problem}"
    );

    shop.kill().await;
    instance.cleanup().await;
}
