//! The public edge under attack and misuse, black-box through the gateway of `shop serve
//! all` on Kafka and PostgreSQL: every refusal is problem+json and changes nothing, and
//! clients that open connections without finishing a request cannot hold them.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Instance};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::Dialect;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether `answer` is a problem with `status` (its body decoded).
async fn problem(answer: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(answer.status(), status);
    assert_eq!(
        answer.headers()["content-type"],
        "application/problem+json",
        "{status}"
    );
    assert_eq!(answer.headers()["x-content-type-options"], "nosniff");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    body
}

#[tokio::test]
async fn refusals_at_the_edge_are_problems_and_change_nothing() {
    let instance = Instance::on(Dialect::Postgres);
    let _shop = instance.spawn(&["all"], &[]).await;
    let base = instance.gateway_url();
    let admin = Client::admin(&base).await;
    let token = admin.token.clone().unwrap();
    let http = reqwest::Client::new();

    // A method a route does not take: 405 with Allow.
    let answer = http
        .delete(format!("{base}/api/products"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(answer.headers().contains_key("allow"));
    problem(answer, StatusCode::METHOD_NOT_ALLOWED).await;
    let answer = http.post(format!("{base}/health")).send().await.unwrap();
    problem(answer, StatusCode::METHOD_NOT_ALLOWED).await;

    // A request target or header section too long for any route.
    let long = format!("{base}/api/products?after={}", "a".repeat(9000));
    problem(
        http.get(long).send().await.unwrap(),
        StatusCode::URI_TOO_LONG,
    )
    .await;
    let answer = http
        .get(format!("{base}/api/products"))
        .header("x-filler", "b".repeat(40_000))
        .send()
        .await
        .unwrap();
    problem(answer, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;

    // A field of the wrong type, or a number no field can hold, is named in `errors`.
    for (body, field) in [
        (r#"{"sku":"E-1","name":"E","price":"1","stock":1}"#, "price"),
        (
            r#"{"sku":"E-1","name":"E","price":1e309,"stock":1}"#,
            "price",
        ),
        (
            r#"{"sku":"E-1","name":"E","price":1,"stock":-1e400}"#,
            "stock",
        ),
    ] {
        let answer = http
            .post(format!("{base}/api/products"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let problem = problem(answer, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    // Broken JSON is a 400 that says where it broke.
    let answer = http
        .post(format!("{base}/api/products"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"sku":"E-1","#)
        .send()
        .await
        .unwrap();
    let broken = problem(answer, StatusCode::BAD_REQUEST).await;
    assert_eq!(broken["errors"][0]["field"], "body", "{broken}");

    // None of it stored anything.
    let products = admin.send("GET", "/api/products", None).await;
    assert_eq!(products.body, json!([]), "{products:?}");
    drop(_shop);
    instance.cleanup().await;
}

/// Bytes a connection gets before the server closes it, and how long that took.
async fn until_closed(base: &str, send: &[u8]) -> (Vec<u8>, Duration) {
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(send).await.unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(40), stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection was still open after 40 s");
    (got, started.elapsed())
}

#[tokio::test]
async fn connections_that_never_finish_a_request_are_closed() {
    let instance = Instance::on(Dialect::Postgres);
    let _shop = instance.spawn(&["all"], &[]).await;
    let base = instance.gateway_url();
    // Nothing at all, half a request head, and a kept-alive connection gone quiet: each
    // is closed after the header read timeout (10 s), all at once.
    let (silent, partial, idle) = tokio::join!(
        until_closed(&base, b""),
        until_closed(
            &base,
            b"GET /api/products HTTP/1.1\r\nHost: shop\r\nX-Slow: "
        ),
        until_closed(&base, b"GET /health HTTP/1.1\r\nHost: shop\r\n\r\n"),
    );
    for (what, (bytes, after)) in [("silent", &silent), ("partial", &partial)] {
        assert!(
            bytes.is_empty(),
            "{what}: {:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(
            *after < Duration::from_secs(30),
            "{what}: closed after {after:?}"
        );
    }
    assert!(
        String::from_utf8_lossy(&idle.0).starts_with("HTTP/1.1 200"),
        "the finished request was answered first"
    );
    assert!(
        idle.1 < Duration::from_secs(30),
        "idle: closed after {:?}",
        idle.1
    );
    // The server still serves.
    let answer = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    drop(_shop);
    instance.cleanup().await;
}
