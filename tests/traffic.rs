//! Traffic control at run time through the gateway's admin API, end to end on PostgreSQL
//! and Kafka:
//! - an upstream's weights change without a restart (a second read API as the canary),
//!   promotion goes in steps, rollback is at once, assignment is sticky per client, and
//!   bad input is a problem+json 4xx that changes nothing;
//! - a failing canary (a stub answering 500 for orders) is rolled back automatically once
//!   its error rate over the window passes the threshold, which the admin read, a log line
//!   and a metric report;
//! - strangler fig: a path prefix, then a share of another, goes to a legacy HTTP server
//!   started by the test, with request and response headers rewritten.

mod common;

use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use common::{Client, Instance, JWT_SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_web::auth::{JwtKeys, Role};

/// An HTTP server on a free port for as long as the test runs; its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// A reply: status, headers, JSON body (Null when not JSON).
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.body)
    }
}

async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    if_match: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut request = http.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// The upstream version that answered (`x-upstream-version`).
fn version(reply: &Reply) -> &str {
    reply
        .headers
        .get("x-upstream-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn assert_problem(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        reply.headers["content-type"], "application/problem+json",
        "{reply:?}"
    );
}

/// A token for a customer `sub` (the gateway keys stickiness on it).
fn token_of(sub: &str) -> String {
    JwtKeys::new(JWT_SECRET, 3600)
        .issue(sub, Role::Customer)
        .unwrap()
}

struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    async fn new(base: &str) -> Self {
        let client = Client::admin(base).await;
        Admin {
            http: client.http.clone(),
            base: base.to_string(),
            token: client.token.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Reply {
        call(
            &self.http,
            "GET",
            &format!("{}{path}", self.base),
            Some(&self.token),
            None,
            None,
        )
        .await
    }

    async fn post(&self, path: &str) -> Reply {
        call(
            &self.http,
            "POST",
            &format!("{}{path}", self.base),
            Some(&self.token),
            None,
            None,
        )
        .await
    }

    /// PUT with the ETag of a fresh read of `read_path`.
    async fn put(&self, read_path: &str, path: &str, body: Value) -> Reply {
        let etag = self.get(read_path).await.headers["etag"]
            .to_str()
            .unwrap()
            .to_string();
        call(
            &self.http,
            "PUT",
            &format!("{}{path}", self.base),
            Some(&self.token),
            Some(&etag),
            Some(body),
        )
        .await
    }

    async fn weight(&self, upstream: &str) -> u64 {
        let split = self.get(&format!("/api/admin/traffic/{upstream}")).await;
        assert_eq!(split.status, StatusCode::OK, "{split:?}");
        split.body["versions"][1]["weight"].as_u64().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_weights_change_at_run_time_and_a_failing_canary_rolls_back() {
    // The failing canary of orders: a stub that is ready but answers every request 500.
    let failing = serve(
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/ready", get(|| async { "ok" }))
            .fallback(|| async {
                (
                    AxumStatus::INTERNAL_SERVER_ERROR,
                    Json(json!({"detail": "broken canary"})),
                )
            }),
    )
    .await;
    let instance = Instance::new();
    // The canary of the read API: a second `shop serve read-api` process on a port of its
    // own (started below, once the first process has created the databases).
    let canary_port = common::free_port();
    let canaries = format!("read-api=http://127.0.0.1:{canary_port}@0;orders={failing}@0");
    let shop = instance
        .spawn(
            &["all"],
            &[
                ("SHOP_GATEWAY_CANARY", canaries.as_str()),
                ("SHOP_GATEWAY_CACHE_TTL_MS", "0"),
                ("SHOP_GATEWAY_RATE_LIMIT", "0"),
            ],
        )
        .await;
    let canary_process = instance
        .spawn(
            &["read-api"],
            &[("SHOP_READ_API_PORT", canary_port.to_string().as_str())],
        )
        .await;
    let base = instance.gateway_url();
    let admin = Admin::new(&base).await;
    let http = reqwest::Client::new();
    let products = format!("{base}/api/products");
    // Product reads the canary process served (its own /metrics).
    let canary_reads = || {
        let http = http.clone();
        async move {
            let text = http
                .get(format!("http://127.0.0.1:{canary_port}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .filter(|l| {
                    l.starts_with("shop_http_requests_total{") && l.contains("/api/products")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };

    // At start: everything on stable.
    let split = admin.get("/api/admin/traffic/read-api").await;
    assert_eq!(split.status, StatusCode::OK, "{split:?}");
    assert_eq!(split.body["versions"][0]["weight"], 100);
    assert_eq!(split.body["versions"][1]["weight"], 0);
    assert!(split.body["lastRollback"].is_null());
    for _ in 0..5 {
        let reply = call(&http, "GET", &products, None, None, None).await;
        assert_eq!((reply.status, version(&reply)), (StatusCode::OK, "stable"));
    }

    // All to the canary, without a restart; labelled as a blue-green pair.
    let set = admin
        .put(
            "/api/admin/traffic/read-api",
            "/api/admin/traffic/read-api",
            json!({"weights": {"blue": 0, "green": 100}, "labels": {"stable": "blue", "canary": "green"}}),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    assert_eq!(set.body["versions"][1]["label"], "green");
    let served_before = canary_reads().await;
    for _ in 0..5 {
        let reply = call(&http, "GET", &products, None, None, None).await;
        assert_eq!((reply.status, version(&reply)), (StatusCode::OK, "canary"));
    }
    assert!(
        canary_reads().await >= served_before + 5.0,
        "the second read-api process did not serve the canary's reads"
    );

    // Bad input: a problem+json 4xx, and nothing changes.
    let before = admin.get("/api/admin/traffic/read-api").await;
    let etag = before.headers["etag"].to_str().unwrap().to_string();
    let bad = [
        (
            "/api/admin/traffic/nope",
            json!({"weights": {"stable": 100}}),
            Some(etag.as_str()),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/admin/traffic/read-api",
            json!({"weights": {"stable": 50, "canary": 40}}),
            Some(etag.as_str()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/admin/traffic/read-api",
            json!({"weights": {"stable": 50, "purple": 50}}),
            Some(etag.as_str()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/admin/traffic/read-api",
            json!({"rollback": {"threshold": 1.5, "minRequests": 10, "windowSecs": 60}}),
            Some(etag.as_str()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/admin/traffic/read-api",
            json!({"rollback": {"threshold": 0.2, "minRequests": 0, "windowSecs": 60}}),
            Some(etag.as_str()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/admin/traffic/read-api",
            json!({"weights": {"stable": 100}, "colour": "red"}),
            Some(etag.as_str()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/admin/traffic/read-api",
            json!({"weights": {"stable": 100}}),
            None,
            StatusCode::PRECONDITION_REQUIRED,
        ),
        (
            "/api/admin/traffic/read-api",
            json!({"weights": {"stable": 100}}),
            Some("\"stale\""),
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            // Payments has no canary instances to send a share to.
            "/api/admin/traffic/payments",
            json!({"weights": {"stable": 90, "canary": 10}}),
            Some(etag.as_str()),
            StatusCode::CONFLICT,
        ),
    ];
    for (path, body, if_match, status) in bad {
        let reply = call(
            &http,
            "PUT",
            &format!("{base}{path}"),
            Some(&admin.token),
            if_match,
            Some(body.clone()),
        )
        .await;
        assert_problem(&reply, status);
        let after = admin.get("/api/admin/traffic/read-api").await;
        assert_eq!(after.body, before.body, "{path} {body} changed the split");
    }
    // Not JSON, and not an admin.
    let reply = http
        .put(format!("{base}/api/admin/traffic/read-api"))
        .bearer_auth(&admin.token)
        .header("if-match", &etag)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    let customer = token_of("customer-x");
    let reply = call(
        &http,
        "POST",
        &format!("{base}/api/admin/traffic/read-api/rollback"),
        Some(&customer),
        None,
        None,
    )
    .await;
    assert_problem(&reply, StatusCode::FORBIDDEN);
    let reply = call(
        &http,
        "GET",
        &format!("{base}/api/admin/traffic"),
        None,
        None,
        None,
    )
    .await;
    assert_problem(&reply, StatusCode::UNAUTHORIZED);
    assert_eq!(admin.weight("read-api").await, 100);

    // Rollback at once, then promotion in steps.
    let rolled = admin.post("/api/admin/traffic/read-api/rollback").await;
    assert_eq!(rolled.status, StatusCode::OK, "{rolled:?}");
    assert_eq!(rolled.body["versions"][1]["weight"], 0);
    assert_eq!(rolled.body["lastRollback"]["kind"], "manual");
    assert_eq!(rolled.body["lastRollback"]["fromWeight"], 100);
    let reply = call(&http, "GET", &products, None, None, None).await;
    assert_eq!(version(&reply), "stable");
    let mut steps = Vec::new();
    for _ in 0..5 {
        let promoted = admin.post("/api/admin/traffic/read-api/promote").await;
        assert_eq!(promoted.status, StatusCode::OK, "{promoted:?}");
        steps.push(promoted.body["versions"][1]["weight"].as_u64().unwrap());
    }
    assert_eq!(steps, [10, 25, 50, 75, 100]);
    assert_problem(
        &admin.post("/api/admin/traffic/read-api/promote").await,
        StatusCode::CONFLICT,
    );
    assert_problem(
        &admin.post("/api/admin/traffic/payments/promote").await,
        StatusCode::CONFLICT,
    );

    // Sticky: at 50 %, each customer stays on one version; both versions get customers.
    let set = admin
        .put(
            "/api/admin/traffic/read-api",
            "/api/admin/traffic/read-api",
            json!({"weights": {"stable": 50, "canary": 50}}),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    let mut on_canary = 0;
    for i in 0..40 {
        let token = token_of(&format!("sticky-customer-{i}"));
        let mut seen = Vec::new();
        for _ in 0..4 {
            let reply = call(&http, "GET", &products, Some(&token), None, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            seen.push(version(&reply).to_string());
        }
        assert!(seen.iter().all(|v| *v == seen[0]), "customer {i}: {seen:?}");
        on_canary += usize::from(seen[0] == "canary");
    }
    assert!(
        (5..=35).contains(&on_canary),
        "{on_canary} of 40 on the canary"
    );

    // The failing canary of orders: half the customers go to it, it answers 500, and once
    // 5 requests in the window failed more than half the time it is rolled back.
    let set = admin
        .put(
            "/api/admin/traffic/orders",
            "/api/admin/traffic/orders",
            json!({
                "weights": {"stable": 50, "canary": 50},
                "rollback": {"threshold": 0.5, "minRequests": 5, "windowSecs": 60},
            }),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    let orders = format!("{base}/api/orders");
    let mut failed = 0;
    let mut customer = 0;
    while admin.weight("orders").await > 0 {
        customer += 1;
        assert!(customer <= 200, "the failing canary was never rolled back");
        let token = token_of(&format!("order-customer-{customer}"));
        let reply = call(
            &http,
            "POST",
            &orders,
            Some(&token),
            None,
            Some(json!({"lines": []})),
        )
        .await;
        if version(&reply) == "canary" {
            assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
            failed += 1;
        } else {
            assert!(reply.status.is_client_error(), "stable: {reply:?}");
        }
    }
    assert_eq!(failed, 5, "rolled back at the fifth failure");
    let split = admin.get("/api/admin/traffic/orders").await;
    let rollback = &split.body["lastRollback"];
    assert_eq!(rollback["kind"], "automatic", "{split:?}");
    assert_eq!(rollback["fromWeight"], 50);
    assert!(
        rollback["reason"]
            .as_str()
            .unwrap()
            .contains("5 of 5 canary requests"),
        "{rollback}"
    );
    // Every customer is on stable now.
    for i in 0..10 {
        let token = token_of(&format!("order-customer-{i}"));
        let reply = call(
            &http,
            "POST",
            &orders,
            Some(&token),
            None,
            Some(json!({"lines": []})),
        )
        .await;
        assert_eq!(version(&reply), "stable", "{reply:?}");
    }
    // The metric and the audit log line say so.
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shop_gateway_canary_rollbacks_total{upstream=\"orders\"} 1")),
        "no rollback metric:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("shop_gateway_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("shop_gateway_upstream_weight{") && l.contains("orders")));
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("shop_gateway_traffic_changes_total{")));
    common::eventually("the audit log lines", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&shop.log_path).unwrap_or_default();
        async move {
            log.contains("canary rolled back automatically")
                && log.contains("traffic weights set")
                && log.contains("canary promoted a step")
        }
    })
    .await;

    canary_process.kill().await;
    shop.kill().await;
    instance.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangler_fig_routes_send_a_prefix_or_a_share_to_the_legacy_system() {
    // The legacy monolith: echoes what it got, with a header of its own.
    let legacy = serve(Router::new().fallback(|request: Request| async move {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        (
            [("x-legacy-server", "monolith")],
            Json(json!({
                "legacy": true,
                "path": request.uri().path(),
                "api_version": header("x-api-version"),
                "authorization": !header("authorization").is_empty(),
            })),
        )
            .into_response()
    }))
    .await;
    let instance = Instance::new();
    let shop = instance
        .spawn(
            &["all"],
            &[
                ("SHOP_GATEWAY_CACHE_TTL_MS", "0"),
                ("SHOP_GATEWAY_RATE_LIMIT", "0"),
            ],
        )
        .await;
    let base = instance.gateway_url();
    let admin = Admin::new(&base).await;
    let http = reqwest::Client::new();
    let wishlist = format!("{base}/api/wishlists/7");

    // Not Shop's: no route until the legacy route exists.
    let reply = call(&http, "GET", &wishlist, None, None, None).await;
    assert_problem(&reply, StatusCode::NOT_FOUND);

    let route = json!({
        "prefix": "/api/wishlists",
        "upstream": legacy,
        "requestHeaders": {"X-API-Version": "2"},
        "responseHeaders": {"X-API-Version": "legacy-1"},
    });
    let set = admin
        .put(
            "/api/admin/legacy-routes",
            "/api/admin/legacy-routes/wishlists",
            route.clone(),
        )
        .await;
    assert_eq!(set.status, StatusCode::CREATED, "{set:?}");
    assert_eq!(set.body["percent"], 100);
    let token = token_of("legacy-customer");
    let reply = call(&http, "GET", &wishlist, Some(&token), None, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(version(&reply), "legacy");
    assert_eq!(reply.headers["x-api-version"], "legacy-1");
    assert_eq!(reply.headers["x-legacy-server"], "monolith");
    assert_eq!(
        reply.body,
        json!({"legacy": true, "path": "/api/wishlists/7", "api_version": "2", "authorization": true})
    );
    // Whole segments only.
    let reply = call(
        &http,
        "GET",
        &format!("{base}/api/wishlistsx"),
        None,
        None,
        None,
    )
    .await;
    assert_problem(&reply, StatusCode::NOT_FOUND);

    // Bad input changes nothing.
    let before = admin.get("/api/admin/legacy-routes").await;
    for (name, body) in [
        ("bad", json!({"prefix": "api/x", "upstream": legacy})),
        (
            "bad",
            json!({"prefix": "/api/x", "upstream": "ftp://legacy"}),
        ),
        (
            "bad",
            json!({"prefix": "/api/x", "upstream": legacy, "percent": 101}),
        ),
        (
            "bad",
            json!({"prefix": "/api/x", "upstream": legacy, "requestHeaders": {"bad header": "x"}}),
        ),
        ("bad name!", json!({"prefix": "/api/x", "upstream": legacy})),
    ] {
        let reply = admin
            .put(
                "/api/admin/legacy-routes",
                &format!("/api/admin/legacy-routes/{name}"),
                body.clone(),
            )
            .await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        let after = admin.get("/api/admin/legacy-routes").await;
        assert_eq!(after.body, before.body, "{body} changed the routes");
    }

    // A share of one of Shop's own prefixes: half the customers (sticky) to the legacy
    // system, the rest to Shop's read API.
    let set = admin
        .put(
            "/api/admin/legacy-routes",
            "/api/admin/legacy-routes/products",
            json!({"prefix": "/api/products", "upstream": legacy, "percent": 50,
                   "responseHeaders": {"X-API-Version": "legacy-1"}}),
        )
        .await;
    assert_eq!(set.status, StatusCode::CREATED, "{set:?}");
    let products = format!("{base}/api/products");
    let mut to_legacy = 0;
    for i in 0..40 {
        let token = token_of(&format!("migrating-customer-{i}"));
        let mut seen = Vec::new();
        for _ in 0..3 {
            let reply = call(&http, "GET", &products, Some(&token), None, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            seen.push(reply.body.get("legacy").is_some());
        }
        assert!(seen.iter().all(|l| *l == seen[0]), "customer {i}: {seen:?}");
        to_legacy += usize::from(seen[0]);
    }
    assert!((5..=35).contains(&to_legacy), "{to_legacy} of 40 to legacy");

    // Migration done: the share goes to 0, then the routes go.
    let set = admin
        .put(
            "/api/admin/legacy-routes",
            "/api/admin/legacy-routes/products",
            json!({"prefix": "/api/products", "upstream": legacy, "percent": 0}),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    for i in 0..10 {
        let token = token_of(&format!("migrating-customer-{i}"));
        let reply = call(&http, "GET", &products, Some(&token), None, None).await;
        assert!(reply.body.get("legacy").is_none(), "{reply:?}");
    }
    for name in ["products", "wishlists"] {
        let reply = call(
            &http,
            "DELETE",
            &format!("{base}/api/admin/legacy-routes/{name}"),
            Some(&admin.token),
            None,
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    }
    let reply = call(&http, "GET", &wishlist, None, None, None).await;
    assert_problem(&reply, StatusCode::NOT_FOUND);
    let log = std::fs::read_to_string(&shop.log_path).unwrap();
    assert!(log.contains("legacy route set") && log.contains("legacy route removed"));

    shop.kill().await;
    instance.cleanup().await;
}
