//! Unit tests of the gateway's routing, forwarding and traffic decisions.

use super::*;
use axum::routing::post;
use shop_web::auth::Role;

/// A gateway whose every upstream is `base`, reached in-process through `service`
/// (nothing listens at `base`); health checks too rare to run.
fn gateway(service: Router, timeout: Duration) -> (Router, JwtKeys) {
    gateway_with(service, timeout, "http://127.0.0.1:9", 0)
}

/// Like [`gateway`], with the orders upstream's instances as given.
fn gateway_with_orders(service: Router, timeout: Duration, orders: &str) -> (Router, JwtKeys) {
    gateway_with(service, timeout, orders, 0)
}

/// Like [`gateway`], with the orders upstream's instances and at most `max_in_flight`
/// requests in flight per upstream.
fn gateway_with(
    service: Router,
    timeout: Duration,
    orders: &str,
    max_in_flight: usize,
) -> (Router, JwtKeys) {
    let base = "http://127.0.0.1:9".to_string();
    let jwt = JwtKeys::new("in-process-test-secret", 60);
    let config = GatewayConfig {
        upstreams: Upstreams {
            customers: base.clone(),
            inventory: base.clone(),
            orders: orders.to_string(),
            payments: base.clone(),
            shipping: base.clone(),
            notifications: base.clone(),
            read_api: base.clone(),
        },
        body_limit: 1024,
        upstream_timeout: timeout,
        rate_limit: None,
        cache_ttl: Duration::ZERO,
        resilience: Resilience {
            health_interval: Duration::from_secs(3600),
            ..Resilience::default()
        },
        canaries: Vec::new(),
        openapi: None,
        in_process: vec![(format!("{base}/"), service)],
        metrics_token: Some("scrape-secret".to_string()),
        max_in_flight,
    };
    (router(config, jwt.clone()), jwt)
}

async fn send(gateway: &Router, jwt: &JwtKeys, method: Method, uri: &str) -> Response {
    let token = jwt.issue("customer-1", Role::Customer).unwrap();
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("x-correlation-id", "corr-1")
        .header("connection", "keep-alive")
        .body(Body::from("{\"lines\":[]}"))
        .unwrap();
    gateway.clone().oneshot(request).await.unwrap()
}

#[tokio::test]
async fn an_upstream_in_this_process_is_called_without_a_connection() {
    let service = Router::new().route(
        "/api/orders",
        post(|request: Request| async move {
            let (parts, body) = request.into_parts();
            let body = to_bytes(body, 1024).await.unwrap();
            let echo = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            let seen = serde_json::json!({
                "query": parts.uri.query(),
                "body": String::from_utf8_lossy(&body),
                "correlation": echo("x-correlation-id"),
                "traceparent": !echo("traceparent").is_empty(),
                "authorization": !echo("authorization").is_empty(),
                "connection": echo("connection"),
            });
            (
                StatusCode::CREATED,
                [("connection", "close"), ("x-answer", "yes")],
                Json(seen),
            )
        }),
    );
    let (gateway, jwt) = gateway(service, Duration::from_secs(5));
    let response = send(&gateway, &jwt, Method::POST, "/api/orders?x=1").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let headers = response.headers().clone();
    assert_eq!(headers[ROUTE_HEADER], "stable");
    assert_eq!(headers["x-answer"], "yes");
    // Hop-by-hop headers stay on their side, as over a connection.
    assert!(!headers.contains_key("connection"));
    let body = to_bytes(response.into_body(), 4096).await.unwrap();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        seen,
        serde_json::json!({
            "query": "x=1",
            "body": "{\"lines\":[]}",
            "correlation": "corr-1",
            "traceparent": true,
            "authorization": true,
            "connection": "",
        })
    );
    // The token is still checked before anything reaches the service.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/orders")
        .body(Body::empty())
        .unwrap();
    let response = gateway.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_in_process_upstream_that_panics_or_is_slow_fails_as_over_a_connection() {
    let service = Router::new()
        .route(
            "/api/orders/{id}/cancel",
            post(|| async {
                if true {
                    panic!("a handler's bug");
                }
                StatusCode::OK
            }),
        )
        .route(
            "/api/orders",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::CREATED
            }),
        );
    let (gateway, jwt) = gateway(service, Duration::from_millis(100));
    let response = send(&gateway, &jwt, Method::POST, "/api/orders/o-1/cancel").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let response = send(&gateway, &jwt, Method::POST, "/api/orders").await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[test]
fn routes_by_method_and_path() {
    assert_eq!(
        route(&Method::GET, "/api/products"),
        Some((Upstream::ReadApi, true))
    );
    assert_eq!(
        route(&Method::GET, "/api/products/abc"),
        Some((Upstream::ReadApi, true))
    );
    assert_eq!(
        route(&Method::POST, "/api/products"),
        Some((Upstream::Inventory, false))
    );
    assert_eq!(
        route(&Method::PUT, "/api/products/abc/price"),
        Some((Upstream::Inventory, false))
    );
    assert_eq!(
        route(&Method::POST, "/api/products/abc/restock"),
        Some((Upstream::Inventory, false))
    );
    assert_eq!(
        route(&Method::POST, "/api/auth/token"),
        Some((Upstream::Customers, true))
    );
    assert_eq!(
        route(&Method::GET, "/api/projections"),
        Some((Upstream::ReadApi, false))
    );
    assert_eq!(
        route(&Method::POST, "/api/customers"),
        Some((Upstream::Customers, true))
    );
    assert_eq!(
        route(&Method::GET, "/api/customers/abc"),
        Some((Upstream::ReadApi, false))
    );
    assert_eq!(
        route(&Method::POST, "/api/customers/abc/wallet/deposits"),
        Some((Upstream::Payments, false))
    );
    assert_eq!(
        route(&Method::POST, "/api/orders"),
        Some((Upstream::Orders, false))
    );
    assert_eq!(
        route(&Method::GET, "/api/orders/abc"),
        Some((Upstream::ReadApi, false))
    );
    assert_eq!(
        route(&Method::GET, "/api/customers/abc/orders"),
        Some((Upstream::ReadApi, false))
    );
    assert_eq!(
        route(&Method::GET, "/api/orders"),
        Some((Upstream::ReadApi, false))
    );
    assert_eq!(
        route(&Method::GET, "/console/"),
        Some((Upstream::ReadApi, true))
    );
    assert_eq!(
        route(&Method::GET, "/console/console.js"),
        Some((Upstream::ReadApi, true))
    );
    assert_eq!(route(&Method::POST, "/console"), None);
    assert_eq!(route(&Method::GET, "/api/nothing"), None);
    assert!(matches!(
        events_context("/api/events", Some("aggregate_id=x&context=orders")),
        Some(Ok(Upstream::Orders))
    ));
    assert!(matches!(
        events_context("/api/events", Some("context=nope")),
        Some(Err(_))
    ));
    assert!(events_context("/api/orders", None).is_none());
    assert_eq!(route(&Method::GET, "/health"), None);
}

#[tokio::test]
async fn metrics_answer_only_the_scraper_token_or_an_admin() {
    let (gateway, jwt) = gateway(Router::new(), Duration::from_secs(5));
    let get = |authorization: Option<String>| {
        let gateway = gateway.clone();
        async move {
            let mut request = Request::builder().uri("/metrics");
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            gateway
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap()
        }
    };
    let anonymous = get(None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );
    let wrong = get(Some("Bearer scrape-secreT".into())).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let customer = jwt.issue("c-1", Role::Customer).unwrap();
    assert_eq!(
        get(Some(format!("Bearer {customer}"))).await.status(),
        StatusCode::FORBIDDEN
    );
    let scraper = get(Some("Bearer scrape-secret".into())).await;
    assert_eq!(scraper.status(), StatusCode::OK);
    let admin = jwt.issue("admin", Role::Admin).unwrap();
    assert_eq!(
        get(Some(format!("Bearer {admin}"))).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_trace_starts_at_the_gateway_and_answers_carry_security_headers() {
    let service = Router::new().route(
        "/api/orders",
        post(|request: Request| async move {
            let traceparent = request.headers()["traceparent"]
                .to_str()
                .unwrap()
                .to_string();
            (StatusCode::ACCEPTED, traceparent)
        }),
    );
    let (gateway, jwt) = gateway(service, Duration::from_secs(5));
    let response = send(&gateway, &jwt, Method::POST, "/api/orders").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let headers = response.headers().clone();
    let returned = headers["traceparent"].to_str().unwrap().to_string();
    let body = to_bytes(response.into_body(), 4096).await.unwrap();
    let forwarded = String::from_utf8(body.to_vec()).unwrap();
    // One trace: what the service got continues the one the client is told.
    assert_eq!(returned.len(), 55, "{returned}");
    assert_eq!(returned.get(3..35), forwarded.get(3..35));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    // A client's own trace is continued, not replaced.
    let mine = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let request = Request::builder()
        .uri("/api/nowhere")
        .header("traceparent", mine)
        .body(Body::empty())
        .unwrap();
    let response = gateway.clone().oneshot(request).await.unwrap();
    assert_eq!(response.headers()["traceparent"], mine);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(!response.headers().contains_key("cache-control"));
}

#[tokio::test]
async fn beyond_its_in_flight_limit_an_upstream_is_refused_at_once() {
    let service = Router::new().route(
        "/api/orders",
        post(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            StatusCode::ACCEPTED
        }),
    );
    let (gateway, jwt) = gateway_with(service, Duration::from_secs(5), "http://127.0.0.1:9", 2);
    let sends = (0..6).map(|_| send(&gateway, &jwt, Method::POST, "/api/orders"));
    let answers = futures::future::join_all(sends).await;
    let accepted = answers
        .iter()
        .filter(|a| a.status() == StatusCode::ACCEPTED)
        .count();
    let refused: Vec<&Response> = answers
        .iter()
        .filter(|a| a.status() == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!((accepted, refused.len()), (2, 4));
    for answer in refused {
        assert_eq!(answer.headers()["retry-after"], "1");
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
    }
    // Finished requests free their slots.
    let again = send(&gateway, &jwt, Method::POST, "/api/orders").await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
}

/// A request of any method goes to the next instance when one refuses the connection
/// (nothing was sent: an instance that has stopped after draining), and is sent once.
#[tokio::test]
async fn a_post_goes_to_the_next_instance_when_one_refuses_the_connection() {
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = received.clone();
    let service = Router::new().route(
        "/api/orders",
        post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                StatusCode::ACCEPTED
            }
        }),
    );
    // Nothing listens on port 1; the second instance is the in-process one. Round robin
    // puts the refusing instance first for every other request.
    let (gateway, jwt) = gateway_with_orders(
        service,
        Duration::from_secs(5),
        "http://127.0.0.1:1,http://127.0.0.1:9",
    );
    for _ in 0..4 {
        let response = send(&gateway, &jwt, Method::POST, "/api/orders").await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    assert_eq!(
        received.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "each sent once"
    );
}

#[test]
fn webhooks_go_to_notifications_which_readiness_does_not_wait_for() {
    for (method, path) in [
        (Method::POST, "/api/webhooks"),
        (
            Method::GET,
            "/api/webhooks/0190b1c2-0000-7000-8000-000000000000/deliveries",
        ),
        (Method::PATCH, "/api/webhooks/x"),
        (Method::DELETE, "/api/webhooks/x"),
    ] {
        assert_eq!(
            route(&method, path),
            Some((Upstream::Notifications, false)),
            "{method} {path}"
        );
    }
    assert_eq!(
        Upstream::named("notifications"),
        Some(Upstream::Notifications)
    );
    assert!(!Upstream::Notifications.needed_to_be_ready());
    assert!(Upstream::ALL
        .into_iter()
        .filter(|u| *u != Upstream::Notifications)
        .all(Upstream::needed_to_be_ready));
}
