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
    "shop_http_requests_total",
    "shop_http_request_duration_seconds",
    "shop_command_duration_seconds",
    "shop_events_appended_total",
    "shop_events_published_total",
    "shop_relay_backlog_events",
    "shop_consumer_events_total",
    "shop_consumer_lag_events",
    "shop_consumer_oldest_unprocessed_seconds",
    "shop_dead_letters_total",
    "shop_consumer_rewinds_total",
    "shop_projection_lag_events",
    "shop_projection_oldest_unprocessed_seconds",
    "shop_saga_outcomes_total",
    "shop_saga_backlog_orders",
    "shop_build_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
];

/// Whether the exposition has a sample of `name` (labelled or not; a histogram's
/// buckets count).
fn has_sample(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        line.strip_prefix(name).is_some_and(|rest| {
            rest.starts_with('{') || rest.starts_with(' ') || rest.starts_with("_bucket{")
        })
    })
}

/// What a Prometheus linter (`promtool check metrics`) would say about an exposition:
/// every family has `# HELP` and `# TYPE`, latencies are histograms (they add up across
/// instances; summaries do not), and every name has Shop's prefix or is a process's own.
fn lint(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut helped = std::collections::HashSet::new();
    let mut typed = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if help.trim().is_empty() {
                problems.push(format!("{name}: empty HELP"));
            }
            helped.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            typed.insert(name.to_string(), kind.to_string());
        } else if !line.is_empty() && !line.starts_with('#') {
            let sample = line.split(['{', ' ']).next().unwrap_or_default();
            let family = typed
                .keys()
                .filter(|f| sample.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .cloned();
            match family {
                None => problems.push(format!("{sample}: no TYPE")),
                Some(family) => {
                    if !helped.contains(&family) {
                        problems.push(format!("{family}: no HELP"));
                    }
                    if !(family.starts_with("shop_") || family.starts_with("process_")) {
                        problems.push(format!("{family}: not prefixed"));
                    }
                }
            }
        }
    }
    for (name, kind) in &typed {
        if kind == "summary" {
            problems.push(format!("{name}: a summary, not a histogram"));
        }
    }
    problems.sort();
    problems.dedup();
    problems
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
        text.contains("shop_saga_outcomes_total{event=\"OrderConfirmed\""),
        "the confirmation is counted"
    );
    assert_eq!(lint(&text), Vec::<String>::new(), "{text}");
    assert!(
        text.contains("# TYPE shop_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("route=\"/api/orders\""),
        "HTTP metrics are by route template"
    );
    drop(shop);
    instance.cleanup().await;
}
