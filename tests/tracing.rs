//! Trace export (a build with `--features otlp`; `scripts/test.sh` runs it): every
//! component in its own process exports spans over OTLP/HTTP to a collector (here, one
//! the test serves); one order placed with a client's W3C `traceparent` yields spans of
//! that trace from the orders, inventory and payments processes — their HTTP handlers and
//! their consumers' `apply` spans, joined through `ce_traceparent` on the log.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use common::{Client, Instance};
use serde_json::json;

const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_services_and_consumers() {
    // The collector: keeps every OTLP/HTTP export request body.
    let exports: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let kept = exports.clone();
    let collector = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(body);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await.unwrap() });

    let instance = Instance::new();
    let env = [
        ("SHOP_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let mut processes = Vec::new();
    for components in [
        &["gateway", "customers", "read-api", "projector"][..],
        &["orders"],
        &["inventory"],
        &["payments"],
        &["shipping"],
    ] {
        processes.push(instance.spawn(components, &env).await);
    }
    let base = instance.gateway_url();
    let admin = Client::admin(&base).await;
    let product = admin.add_product("TRACED-1", 500, 10).await;
    instance.wait_for_catalogue(1).await;
    let (customer, customer_id) = Client::customer(&base, "Tracy", "tracy@example.com").await;
    let deposit = customer
        .post(
            &format!("/api/customers/{customer_id}/wallet/deposits"),
            json!({"amount": 10_000}),
        )
        .await;
    assert_eq!(deposit.status, reqwest::StatusCode::ACCEPTED);

    let placed = customer
        .http
        .post(format!("{base}/api/orders"))
        .bearer_auth(customer.token.as_deref().unwrap())
        .header("traceparent", format!("00-{TRACE_ID}-a1b2c3d4e5f60718-01"))
        .json(&json!({"lines": [{"product_id": product, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), reqwest::StatusCode::ACCEPTED);
    let order: serde_json::Value = placed.json().await.unwrap();
    let order_id = order["order_id"].as_str().unwrap();
    customer
        .get_until(
            &format!("/api/orders/{order_id}"),
            Duration::from_secs(60),
            |o| o["status"] == "CONFIRMED",
        )
        .await;

    // Each service's process exported spans of the client's trace: the handler that
    // took the request, and the consumers that reacted to its events.
    let trace = hex(TRACE_ID);
    let wanted = [
        ("shop-orders", "place_order"),
        ("shop-orders", "apply"),
        ("shop-inventory", "apply"),
        ("shop-payments", "apply"),
    ];
    common::eventually(
        "spans of the trace from every service",
        Duration::from_secs(30),
        || {
            let exports = exports.clone();
            let trace = trace.clone();
            async move {
                let exports = exports.lock().unwrap();
                wanted.iter().all(|(service, span)| {
                    exports.iter().any(|body| {
                        contains(body, &trace)
                            && contains(body, service.as_bytes())
                            && contains(body, span.as_bytes())
                    })
                })
            }
        },
    )
    .await;
    for process in processes {
        process.kill().await;
    }
    instance.cleanup().await;
}
