//! Gateway traffic management (SPEC §3.8): a per-client rate limit answers 429 with
//! `Retry-After` once a client's burst is spent, without slowing down other clients; a
//! repeat public product read is answered from a short-lived cache without reaching the
//! read API.

mod common;

use std::time::Duration;

use common::{Client, Instance};
use reqwest::StatusCode;
use shop_sql::Dialect;

shop_sql::on_both_backends!(
    each_client_has_its_own_rate_limit,
    a_repeat_product_read_comes_from_the_cache,
    an_oversized_body_is_refused_and_requests_carry_their_trace,
);

/// A body over `SHOP_GATEWAY_BODY_LIMIT` is a 413 problem and stores nothing; every
/// answer carries a request id (the client's, or a new one), and the W3C trace a client
/// sends reaches the events its command appends.
async fn an_oversized_body_is_refused_and_requests_carry_their_trace(backend: Dialect) {
    let instance = Instance::on(backend);
    let _shop = instance
        .spawn(&["all"], &[("SHOP_GATEWAY_BODY_LIMIT", "2048")])
        .await;
    let base = instance.gateway_url();
    let admin = Client::admin(&base).await;
    let token = admin.token.clone().unwrap();
    let http = reqwest::Client::new();

    let big = serde_json::json!({"sku": "BIG", "name": "x".repeat(4000), "price": 1, "stock": 1});
    let answer = http
        .post(format!("{base}/api/products"))
        .bearer_auth(&token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
    assert!(answer.headers().contains_key("x-request-id"));
    let products = admin.get("/api/products").await;
    assert_eq!(
        products.body,
        serde_json::json!([]),
        "a refused body stored nothing"
    );

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = http
        .post(format!("{base}/api/products"))
        .bearer_auth(&token)
        .header("x-request-id", "trace-test-1")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"sku": "TRACED", "name": "Traced", "price": 1, "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    assert_eq!(answer.headers()["x-request-id"], "trace-test-1");
    let generated = http
        .get(format!("{base}/api/products"))
        .send()
        .await
        .unwrap();
    let request_id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(!request_id.is_empty());

    let store = instance.store("inventory").await;
    let metadata: Vec<String> =
        shop_sql::query_scalar("SELECT CAST(metadata AS TEXT) FROM events ORDER BY position")
            .fetch_all(&store)
            .await
            .unwrap();
    assert_eq!(metadata.len(), 1, "{metadata:?}");
    assert!(
        metadata[0].contains(trace_id),
        "the event's trace continues the client's: {}",
        metadata[0]
    );
    store.close().await;
    instance.cleanup().await;
}

async fn each_client_has_its_own_rate_limit(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance
        .spawn(
            &["all"],
            &[
                ("SHOP_GATEWAY_RATE_LIMIT", "1"),
                ("SHOP_GATEWAY_RATE_BURST", "3"),
                ("SHOP_LOG_FORMAT", "json"),
            ],
        )
        .await;
    // The admin logs in first (an anonymous request from this address).
    let admin = Client::admin(instance.gateway_url()).await;
    let anonymous = Client::new(instance.gateway_url());

    // Two more requests fit in this address's burst of 3; the next is refused.
    for _ in 0..2 {
        assert_eq!(anonymous.get("/api/products").await.status, StatusCode::OK);
    }
    let refused = anonymous
        .http
        .get(format!("{}/api/products", anonymous.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["status"], 429);

    // Another client (the admin's token) has its own budget.
    assert_eq!(admin.get("/api/products").await.status, StatusCode::OK);

    // Every request has its access-log line, the refused one too.
    let log = std::fs::read_to_string(&shop.log_path).unwrap();
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|l| l["fields"].clone())
        .filter(|f| f["message"] == "access" && f["path"] == "/api/products")
        .collect();
    let statuses: Vec<i64> = access
        .iter()
        .map(|f| f["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 429, 200], "{access:#?}");
    assert!(access
        .iter()
        .all(|f| f["request_id"].as_str().is_some_and(|id| !id.is_empty())));

    // After the advised wait, the refused client may go on.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(anonymous.get("/api/products").await.status, StatusCode::OK);

    shop.kill().await;
    instance.cleanup().await;
}

/// How many requests on `route` the read API at `base` has answered (its `/metrics`).
async fn reads_of(base: &str, route: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let route = format!("route=\"{route}\"");
    text.lines()
        .filter(|l| {
            l.starts_with("shop_http_requests_total")
                && l.contains("component=\"read-api\"")
                && l.contains(&route)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn a_repeat_product_read_comes_from_the_cache(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance
        .spawn(&["all"], &[("SHOP_GATEWAY_CACHE_TTL_MS", "60000")])
        .await;
    let admin = Client::admin(instance.gateway_url()).await;
    let tea = admin.add_product("TEA-1", 100, 5).await;
    let path = format!("/api/products/{tea}");
    let public = Client::new(instance.gateway_url());
    public
        .get_until(&path, Duration::from_secs(60), |_| true)
        .await;
    let read_api = shop.url("read-api");
    let before = reads_of(&read_api, "/api/products/{id}").await;
    assert!(before > 0, "the first read reached the read API");

    for n in 0..5 {
        let request_id = format!("repeat-{n}");
        let answer = public
            .http
            .get(format!("{}{path}", public.base))
            .header("x-request-id", &request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.headers()["x-cache"], "hit");
        assert_eq!(
            answer.headers()["x-request-id"],
            request_id.as_str(),
            "a hit answers with its own request's id"
        );
    }
    assert_eq!(
        reads_of(&read_api, "/api/products/{id}").await,
        before,
        "the read API answered none of the repeats"
    );

    // A read that asks for its own write is never served from the cache.
    let restock = admin
        .http
        .post(format!("{}{path}/restock", admin.base))
        .bearer_auth(admin.token.as_deref().unwrap())
        .json(&serde_json::json!({"quantity": 2}))
        .send()
        .await
        .unwrap();
    let token = restock.headers()["x-consistency-token"]
        .to_str()
        .unwrap()
        .to_string();
    let fresh = public
        .http
        .get(format!("{}{path}", public.base))
        .header("x-consistency-token", token)
        .send()
        .await
        .unwrap();
    assert!(fresh.headers().get("x-cache").is_none());
    let fresh: serde_json::Value = fresh.json().await.unwrap();
    assert_eq!(fresh["available"], 7);

    shop.kill().await;
    instance.cleanup().await;
}

/// Several instances of one upstream (two read APIs, one process each): round robin,
/// a dead one skipped without a failed request, readmitted when it is back; with every
/// instance down the circuit opens (503) and closes again after a successful probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_instances_are_balanced_skipped_readmitted_and_guarded() {
    let instance = Instance::new();
    let ports = [common::free_port(), common::free_port()];
    let port_env = |i: usize| ports[i].to_string();
    let read_api = |i: usize| {
        let instance = &instance;
        let port = port_env(i);
        async move {
            instance
                .spawn(&["read-api"], &[("SHOP_READ_API_PORT", port.as_str())])
                .await
        }
    };
    let mut read_apis = vec![read_api(0).await, read_api(1).await];
    let bases: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let list = bases.join(",");
    let main = instance
        .spawn(
            &[
                "customers",
                "inventory",
                "orders",
                "payments",
                "shipping",
                "projector",
                "gateway",
            ],
            &[
                ("SHOP_READ_API_URL", list.as_str()),
                ("SHOP_GATEWAY_CACHE_TTL_MS", "0"),
                ("SHOP_GATEWAY_HEALTH_INTERVAL_MS", "200"),
                ("SHOP_GATEWAY_BREAKER_FAILURES", "3"),
                ("SHOP_GATEWAY_BREAKER_COOLDOWN_MS", "1000"),
            ],
        )
        .await;
    let public = Client::new(instance.gateway_url());
    let reads = |n: usize| {
        let public = &public;
        async move {
            for _ in 0..n {
                let answer = public.get("/api/products").await;
                assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
            }
        }
    };

    // Round robin: both instances answer.
    reads(10).await;
    assert!(
        reads_of(&bases[0], "/api/products").await >= 4
            && reads_of(&bases[1], "/api/products").await >= 4
    );

    // One dies: no request fails (a GET is retried on the other, and it is skipped).
    read_apis.remove(0).kill().await;
    reads(10).await;

    // Back on its port: readmitted after a health check.
    read_apis.insert(0, read_api(0).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    reads(10).await;
    assert!(
        reads_of(&bases[0], "/api/products").await >= 3,
        "the restarted instance is used again"
    );

    // All die: failures, then the circuit opens and answers 503 at once.
    for process in read_apis.drain(..) {
        process.kill().await;
    }
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(public.get("/api/products").await.status);
    }
    assert_eq!(statuses[..3], [StatusCode::BAD_GATEWAY; 3], "{statuses:?}");
    let open = public
        .http
        .get(format!("{}/api/products", public.base))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(open.headers().contains_key("retry-after"));
    let problem: serde_json::Value = open.json().await.unwrap();
    assert!(
        problem["type"].as_str().unwrap().ends_with("circuit-open"),
        "{problem}"
    );

    // One comes back: after the cool-down a probe succeeds and the circuit closes.
    read_apis.push(read_api(1).await);
    public
        .get_until("/api/products", Duration::from_secs(30), |_| true)
        .await;
    reads(5).await;

    for process in read_apis {
        process.kill().await;
    }
    main.kill().await;
    instance.cleanup().await;
}

/// Weighted canary routing: with 10 % to a second version of the read API, 1,000
/// clients split within a few percent of it, each client staying on its version (the
/// assignment is sticky by token subject, else by address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_gets_its_share_of_the_traffic() {
    let instance = Instance::new();
    // The canary: the read API reached under another name (the split is decided at the
    // gateway, which marks each answer with the version it chose).
    let canary = format!("read-api=http://localhost:{}@10", instance.ports.read_api);
    let shop = instance
        .spawn(
            &["all"],
            &[
                ("SHOP_GATEWAY_CANARY", canary.as_str()),
                ("SHOP_GATEWAY_CACHE_TTL_MS", "0"),
            ],
        )
        .await;
    let public = Client::new(instance.gateway_url());
    let mut canaries = 0;
    let keys = shop_web::auth::JwtKeys::new(common::JWT_SECRET, 3600);
    for i in 0..1000 {
        let token = keys
            .issue(
                &format!("canary-client-{i}"),
                shop_web::auth::Role::Customer,
            )
            .unwrap();
        let mut versions = Vec::new();
        for _ in 0..if i < 20 { 3 } else { 1 } {
            let answer = public
                .http
                .get(format!("{}/api/products", public.base))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            versions.push(
                answer.headers()["x-upstream-version"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert!(
            versions.iter().all(|v| *v == versions[0]),
            "client {i}: {versions:?}"
        );
        match versions[0].as_str() {
            "canary" => canaries += 1,
            version => assert_eq!(version, "stable"),
        }
    }
    // 10 % of 1,000 is 100 (standard deviation 9.5). Within five deviations, so a fair
    // split fails about once in a million runs (three deviations, the first bound, failed
    // a run with 69), while a canary that gets none or half of the traffic still fails.
    assert!(
        (52..=148).contains(&canaries),
        "{canaries} of 1000 went to the canary"
    );

    // A malformed canary setting stops the gateway at start.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["serve", "gateway"])
        .env("SHOP_GATEWAY_CANARY", "read-api=http://x@150")
        .env("SHOP_JWT_SECRET", "x")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("percent must be 0 to 100"));

    shop.kill().await;
    instance.cleanup().await;
}

/// An upstream that accepts connections and never answers: 504 problem+json after the
/// configured timeout (and the POST is not retried elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_times_out() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket); // read nothing, answer nothing
        }
    });
    let instance = Instance::new();
    let shop = instance
        .spawn(
            &["customers", "read-api", "projector", "gateway"],
            &[
                ("SHOP_SHIPPING_URL", silent_url.as_str()),
                ("SHOP_UPSTREAM_TIMEOUT_MS", "500"),
            ],
        )
        .await;
    let admin = Client::admin(instance.gateway_url()).await;
    let answer = admin
        .post(
            &format!("/api/shipments/{}/dispatch", uuid::Uuid::now_v7()),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT, "{answer:?}");
    assert_eq!(answer.content_type, "application/problem+json");
    assert!(answer.body["type"]
        .as_str()
        .unwrap()
        .ends_with("upstream-timeout"));

    held.abort();
    shop.kill().await;
    instance.cleanup().await;
}
