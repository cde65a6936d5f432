//! Metrics (ARCHITECTURE.md, Cross-cutting), on both backends: after one order, every
//! process's `/metrics` has command latency, events appended and published, the relay
//! backlog, consumer and projection lag, saga outcomes and HTTP latency by route and
//! status, in the Prometheus text format.

mod common;

use std::time::Duration;

use common::Instance;
use shop_sql::Dialect;

shop_sql::on_both_backends!(every_process_exposes_the_listed_metrics);

const LISTED: &[&str] = &[
    "http_requests_total",
    "http_request_duration_seconds",
    "command_duration_seconds",
    "events_appended_total",
    "events_published_total",
    "relay_backlog_events",
    "consumer_events_total",
    "consumer_lag_events",
    "projection_lag_events",
    "projection_oldest_unprocessed_seconds",
    "saga_outcomes_total",
];

/// Whether the exposition has a sample of `name` (labelled or not).
fn has_sample(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

async fn every_process_exposes_the_listed_metrics(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let _ = common::confirmed_order(&instance, "METRIC-1", "Metric", "metric@example.com").await;

    let http = reqwest::Client::new();
    for component in ["gateway", "orders", "projector", "read-api"] {
        let url = format!("{}/metrics", shop.url(component));
        common::eventually(
            &format!("{component}: every listed metric"),
            Duration::from_secs(20),
            || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let text = http
                        .get(&url)
                        .bearer_auth(common::METRICS_TOKEN)
                        .send()
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap();
                    let missing: Vec<&&str> =
                        LISTED.iter().filter(|m| !has_sample(&text, m)).collect();
                    if !missing.is_empty() {
                        eprintln!("{url}: missing {missing:?}");
                    }
                    missing.is_empty()
                }
            },
        )
        .await;
    }
    // The public entry answers the scraper's token (or an admin), nobody else.
    let anonymous = http
        .get(format!("{}/metrics", shop.url("gateway")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    let text = http
        .get(format!("{}/metrics", shop.url("gateway")))
        .bearer_auth(common::METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("saga_outcomes_total{event=\"OrderConfirmed\""),
        "the confirmation is counted"
    );
    assert!(
        text.contains("route=\"/api/orders\""),
        "HTTP metrics are by route template"
    );
    drop(shop);
    instance.cleanup().await;
}
