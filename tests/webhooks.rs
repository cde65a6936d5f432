//! Signed webhooks (issue 27, the notifications service), on both backends: a receiver
//! started here (axum on 127.0.0.1, allowed by `SHOP_WEBHOOKS_ALLOW`) verifies every
//! signature with the secret the registration showed, answers 500 to the first attempts
//! of each message and 200 after, and sees each event once per `webhook-id` — several
//! times only under the same id. A delivery in flight when the notifications process is
//! killed arrives after the restart under the same id. A receiver that keeps failing
//! gets its endpoint disabled with a reason; registration refuses private targets.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as Status, Uri};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{eventually, Client, Instance, ShopProcess};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::Dialect;

shop_sql::on_both_backends!(
    webhooks_are_signed_retried_logged_and_survive_a_kill,
    an_import_recovers_the_endpoints_and_their_secrets,
    an_https_receiver_gets_them_over_tls_with_a_trusted_authority
);

/// What the test's receiver saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    webhook_id: String,
    event_id: String,
    event_type: String,
    verified: bool,
    /// What the signatures cover, and the header (to check them with other secrets).
    timestamp: String,
    body: String,
    signatures: String,
    /// 0: it was never answered (the process was killed meanwhile).
    answered: u16,
}

#[derive(Default)]
struct Receiver {
    /// The endpoint's secret, decoded.
    secret: Mutex<Vec<u8>>,
    seen: Mutex<Vec<Seen>>,
    /// Attempts of each message answered 500 before one is answered 200.
    fail_first: AtomicUsize,
    /// The next new message is held, never answered (until the test kills the sender).
    hold_next: AtomicBool,
    held: AtomicBool,
}

/// Standard Webhooks verification, written here independently of the service.
fn verify(secret: &[u8], id: &str, timestamp: &str, body: &str, header: &str) -> bool {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    fresh && header.split(' ').any(|signature| signature == expected)
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Status {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let webhook_id = header("webhook-id");
    let secret = receiver.secret.lock().unwrap().clone();
    let verified = verify(
        &secret,
        &webhook_id,
        &header("webhook-timestamp"),
        &body,
        &header("webhook-signature"),
    );
    let event: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let path = uri.path().to_string();
    let earlier = {
        let seen = receiver.seen.lock().unwrap();
        seen.iter().filter(|s| s.webhook_id == webhook_id).count()
    };
    let hold = earlier == 0
        && path == "/hooks"
        && receiver.hold_next.load(Ordering::SeqCst)
        && !receiver.held.swap(true, Ordering::SeqCst);
    let answer = if path == "/always-500" || earlier < receiver.fail_first.load(Ordering::SeqCst) {
        500
    } else {
        200
    };
    let slow = path == "/slow";
    receiver.seen.lock().unwrap().push(Seen {
        path,
        webhook_id,
        event_id: event["id"].as_str().unwrap_or("").to_string(),
        event_type: event["type"].as_str().unwrap_or("").to_string(),
        verified,
        timestamp: header("webhook-timestamp"),
        body: body.clone(),
        signatures: header("webhook-signature"),
        answered: if hold { 0 } else { answer },
    });
    if hold {
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
    if slow {
        // Longer than the service waits (SHOP_WEBHOOKS_TIMEOUT_MS).
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    Status::from_u16(answer).unwrap()
}

/// Starts the receiver on a free loopback port; its base URL.
async fn start_receiver(receiver: Arc<Receiver>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{addr}")
}

const ENV: &[(&str, &str)] = &[
    ("SHOP_WEBHOOKS_ALLOW", "127.0.0.1/32"),
    ("SHOP_WEBHOOKS_RETRY_BASE_MS", "200"),
    ("SHOP_WEBHOOKS_RETRY_MAX_MS", "1000"),
    ("SHOP_WEBHOOKS_TIMEOUT_MS", "2000"),
    ("SHOP_WEBHOOKS_POLL_MS", "100"),
    ("SHOP_WEBHOOKS_MAX_ATTEMPTS", "4"),
];

/// Every component but notifications in one process, notifications in another (on
/// PostgreSQL and Kafka); `shop dev` runs them all in one.
async fn start(instance: &Instance) -> (Option<ShopProcess>, ShopProcess) {
    match instance.backend {
        Dialect::Postgres => {
            let rest = instance
                .spawn(
                    &[
                        "customers",
                        "inventory",
                        "orders",
                        "payments",
                        "shipping",
                        "projector",
                        "read-api",
                        "gateway",
                    ],
                    ENV,
                )
                .await;
            (Some(rest), instance.spawn(&["notifications"], ENV).await)
        }
        Dialect::Sqlite => (None, instance.spawn(&["all"], ENV).await),
    }
}

async fn restart_notifications(instance: &Instance) -> ShopProcess {
    match instance.backend {
        Dialect::Postgres => instance.spawn(&["notifications"], ENV).await,
        Dialect::Sqlite => instance.spawn(&["all"], ENV).await,
    }
}

fn seen(receiver: &Receiver) -> Vec<Seen> {
    receiver.seen.lock().unwrap().clone()
}

/// Messages (by webhook-id) of `path` answered 200.
fn delivered(receiver: &Receiver, path: &str) -> BTreeMap<String, Vec<Seen>> {
    let mut by_id: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for s in seen(receiver).into_iter().filter(|s| s.path == path) {
        by_id.entry(s.webhook_id.clone()).or_default().push(s);
    }
    by_id.retain(|_, all| all.iter().any(|s| s.answered == 200));
    by_id
}

async fn webhooks_are_signed_retried_logged_and_survive_a_kill(backend: Dialect) {
    let instance = Instance::on(backend);
    let receiver = Arc::new(Receiver::default());
    receiver.fail_first.store(2, Ordering::SeqCst);
    let base_url = start_receiver(receiver.clone()).await;
    let (rest, notifications) = start(&instance).await;
    let admin = Client::admin(instance.gateway_url()).await;

    // Refused, and nothing registered: private targets, unknown types, no admin.
    for (body, field) in [
        (
            json!({"url": "http://10.0.0.1/hooks", "event_types": ["shop.orders.OrderPlaced"]}),
            "url",
        ),
        (
            json!({"url": "http://[::1]:9/hooks", "event_types": ["shop.orders.OrderPlaced"]}),
            "url",
        ),
        (
            json!({"url": "ftp://example.com/", "event_types": ["shop.orders.OrderPlaced"]}),
            "url",
        ),
        (
            json!({"url": format!("{base_url}/hooks"), "event_types": ["shop.orders.Nope"]}),
            "event_types",
        ),
        (
            json!({"url": format!("{base_url}/hooks"), "event_types": []}),
            "event_types",
        ),
    ] {
        let answer = admin.post("/api/webhooks", body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {answer:?}"
        );
        assert_eq!(answer.content_type, "application/problem+json");
        assert_eq!(answer.body["errors"][0]["field"], field, "{answer:?}");
    }
    let anonymous = Client::new(instance.gateway_url())
        .get("/api/webhooks")
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{anonymous:?}");
    assert_eq!(admin.get("/api/webhooks").await.body, json!([]));

    // Registered: the secret is shown once.
    let types = [
        "shop.orders.OrderPlaced",
        "shop.payments.PaymentCompleted",
        "shop.orders.OrderConfirmed",
        "shop.shipping.ShipmentScheduled",
        "shop.shipping.ShipmentDispatched",
    ];
    let answer = admin
        .post(
            "/api/webhooks",
            json!({"url": format!("{base_url}/hooks"), "event_types": types, "description": "ERP"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    let endpoint = answer.body["endpoint_id"].as_str().unwrap().to_string();
    let secret = answer.body["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    *receiver.secret.lock().unwrap() = STANDARD.decode(&secret[6..]).unwrap();
    let listed = admin.get("/api/webhooks").await.body;
    assert_eq!(listed[0]["endpoint_id"], endpoint.as_str(), "{listed}");
    assert_eq!(listed[0]["status"], "active");
    assert!(listed[0].get("secret").is_none(), "{listed}");

    // An order goes through the saga: four of its events are delivered, each after two
    // 500s, under one id per event.
    let (admin, _customer, order_id) =
        common::confirmed_order(&instance, "HOOK-1", "Hook", "hook@example.com").await;
    eventually(
        "four webhooks delivered",
        Duration::from_secs(60),
        || async { delivered(&receiver, "/hooks").len() == 4 },
    )
    .await;
    let first = delivered(&receiver, "/hooks");
    let mut delivered_types: Vec<&str> = first
        .values()
        .map(|all| all[0].event_type.as_str())
        .collect();
    delivered_types.sort();
    let mut expected: Vec<&str> = types[..4].to_vec();
    expected.sort();
    assert_eq!(delivered_types, expected);
    for (id, all) in &first {
        assert!(id.starts_with("msg_"), "{id}");
        let answers: Vec<u16> = all.iter().map(|s| s.answered).collect();
        assert_eq!(answers, [500, 500, 200], "{id}: {all:?}");
        assert!(all.iter().all(|s| s.verified), "a bad signature: {all:?}");
        assert!(
            all.iter().all(|s| s.event_id == all[0].event_id),
            "one id, one event: {all:?}"
        );
    }

    // The delivery log: attempts, status codes, latencies, retries.
    let log = admin
        .get_until(
            &format!("/api/webhooks/{endpoint}/deliveries"),
            Duration::from_secs(10),
            |l| {
                l.as_array()
                    .is_some_and(|l| l.len() == 4 && l.iter().all(|d| d["status"] == "delivered"))
            },
        )
        .await;
    for delivery in log.as_array().unwrap() {
        assert_eq!(delivery["attempts"], 3, "{delivery}");
        let attempts = delivery["attempt_log"].as_array().unwrap();
        let outcomes: Vec<&str> = attempts
            .iter()
            .map(|a| a["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(
            outcomes,
            ["retrying", "retrying", "delivered"],
            "{delivery}"
        );
        let codes: Vec<i64> = attempts
            .iter()
            .map(|a| a["status_code"].as_i64().unwrap())
            .collect();
        assert_eq!(codes, [500, 500, 200], "{delivery}");
        assert!(attempts[0]["next_attempt_at"].is_string(), "{delivery}");
        assert!(attempts.iter().all(|a| a["latency_ms"].as_i64().is_some()));
        assert!(first.contains_key(delivery["webhook_id"].as_str().unwrap()));
    }
    // Its events, in its own store.
    let one = &log[0];
    let history = admin
        .get(&format!(
            "/api/events?context=notifications&aggregate_id={}",
            one["delivery_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(history.status, StatusCode::OK, "{history:?}");
    let names: Vec<&str> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "shop.notifications.WebhookScheduled",
            "shop.notifications.WebhookAttemptFailed",
            "shop.notifications.WebhookAttemptFailed",
            "shop.notifications.WebhookDelivered"
        ]
    );

    // Published through its outbox to its own topic, as CloudEvents.
    let topic = format!("{}notifications.events", instance.topic_prefix);
    eventually(
        "the notifications topic",
        Duration::from_secs(30),
        || async {
            let records = instance.topic_records(&topic).await;
            let types: Vec<&str> = records.iter().filter_map(|r| r.header("ce_type")).collect();
            [
                "shop.notifications.WebhookEndpointRegistered",
                "shop.notifications.WebhookScheduled",
                "shop.notifications.WebhookAttemptFailed",
                "shop.notifications.WebhookDelivered",
            ]
            .iter()
            .all(|t| types.contains(t))
        },
    )
    .await;
    let records = instance.topic_records(&topic).await;
    assert!(
        records
            .iter()
            .all(|r| !r.payload.as_deref().unwrap_or("").contains(&secret[6..])),
        "a secret on the topic"
    );

    // A redelivery: the same message again, under the same id.
    let id = one["webhook_id"].as_str().unwrap().to_string();
    let answer = admin
        .post(
            &format!(
                "/api/webhooks/{endpoint}/deliveries/{}/redeliver",
                one["delivery_id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(answer.body["webhook_id"], id.as_str());
    eventually(
        "the redelivery arrives",
        Duration::from_secs(20),
        || async {
            delivered(&receiver, "/hooks")[&id]
                .iter()
                .filter(|s| s.answered == 200)
                .count()
                == 2
        },
    )
    .await;

    // Killed mid-delivery: the dispatch's webhook is held by the receiver when the
    // notifications process dies; after the restart it arrives, under the same id.
    receiver.fail_first.store(0, Ordering::SeqCst);
    receiver.hold_next.store(true, Ordering::SeqCst);
    common::dispatch(&admin, &order_id).await;
    eventually(
        "the dispatch webhook is in flight",
        Duration::from_secs(30),
        || async { receiver.held.load(Ordering::SeqCst) },
    )
    .await;
    notifications.kill().await;
    let held = seen(&receiver)
        .into_iter()
        .find(|s| s.answered == 0)
        .unwrap();
    assert_eq!(held.event_type, "shop.shipping.ShipmentDispatched");
    let notifications = restart_notifications(&instance).await;
    let admin = Client::admin(instance.gateway_url()).await;
    eventually(
        "the held webhook arrives after the restart",
        Duration::from_secs(60),
        || async { delivered(&receiver, "/hooks").contains_key(&held.webhook_id) },
    )
    .await;
    let again = &delivered(&receiver, "/hooks")[&held.webhook_id];
    assert!(
        again
            .iter()
            .all(|s| s.verified && s.event_id == held.event_id),
        "{again:?}"
    );
    // Each event once per id: five events, five ids.
    let ids = delivered(&receiver, "/hooks");
    assert_eq!(ids.len(), 5, "{ids:?}");
    let events: std::collections::BTreeSet<&str> =
        ids.values().map(|all| all[0].event_id.as_str()).collect();
    assert_eq!(events.len(), 5);

    // The secret rotated: the new one is shown once; for a day deliveries carry a
    // signature with each.
    let old_secret = receiver.secret.lock().unwrap().clone();
    let rotated = admin
        .post(
            &format!("/api/webhooks/{endpoint}/rotate-secret"),
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{rotated:?}");
    let new_secret = rotated.body["secret"].as_str().unwrap();
    assert!(
        new_secret.starts_with("whsec_") && new_secret != secret,
        "{rotated:?}"
    );
    assert!(
        rotated.body["previous_secret_until"].is_string(),
        "{rotated:?}"
    );
    *receiver.secret.lock().unwrap() = STANDARD.decode(&new_secret[6..]).unwrap();
    let before_rotation = seen(&receiver).len();

    // A receiver that keeps failing: after the last attempt its endpoint is disabled
    // with a reason; resumed, then deleted.
    let answer = admin
        .post(
            "/api/webhooks",
            json!({"url": format!("{base_url}/always-500"), "event_types": ["shop.orders.OrderPlaced"]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    let failing = answer.body["endpoint_id"].as_str().unwrap().to_string();
    let answer = admin
        .post(
            "/api/webhooks",
            json!({"url": format!("{base_url}/slow"), "event_types": ["shop.orders.OrderPlaced"]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    let slow = answer.body["endpoint_id"].as_str().unwrap().to_string();
    let (customer, customer_id) =
        Client::customer(instance.gateway_url(), "Second", "second@example.com").await;
    let product = admin.get("/api/products").await.body[0]["product_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deposit = customer
        .post(
            &format!("/api/customers/{customer_id}/wallet/deposits"),
            json!({"amount": 1000}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED);
    let order = customer
        .post(
            "/api/orders",
            json!({"lines": [{"product_id": product, "quantity": 1}]}),
        )
        .await;
    assert_eq!(order.status, StatusCode::ACCEPTED, "{order:?}");
    // Neither receiver holds the saga up.
    let second = order.body["order_id"].as_str().unwrap();
    admin
        .get_until(
            &format!("/api/orders/{second}"),
            Duration::from_secs(30),
            |o| o["status"] == "CONFIRMED",
        )
        .await;
    // The second order's events reach the first endpoint signed with both secrets.
    eventually(
        "webhooks after the rotation",
        Duration::from_secs(30),
        || async {
            seen(&receiver)[before_rotation..]
                .iter()
                .any(|s| s.path == "/hooks")
        },
    )
    .await;
    for s in seen(&receiver)[before_rotation..]
        .iter()
        .filter(|s| s.path == "/hooks")
    {
        assert!(s.verified, "not signed with the new secret: {s:?}");
        assert!(
            verify(
                &old_secret,
                &s.webhook_id,
                &s.timestamp,
                &s.body,
                &s.signatures
            ),
            "not signed with the previous secret: {s:?}"
        );
    }
    let timed_out = admin
        .get_until(
            &format!("/api/webhooks/{slow}/deliveries"),
            Duration::from_secs(30),
            |l| l[0]["attempt_log"][0]["error"] == "timed out",
        )
        .await;
    assert!(
        timed_out[0]["attempt_log"][0]["status_code"].is_null(),
        "{timed_out}"
    );
    let disabled = admin
        .get_until(
            &format!("/api/webhooks/{failing}"),
            Duration::from_secs(60),
            |e| e["status"] == "disabled",
        )
        .await;
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("failed after 4 attempts"), "{reason}");
    let log = admin
        .get(&format!("/api/webhooks/{failing}/deliveries?status=failed"))
        .await
        .body;
    assert_eq!(log[0]["attempts"], 4, "{log}");
    assert_eq!(log[0]["attempt_log"][3]["outcome"], "failed", "{log}");
    let failed_attempts = seen(&receiver)
        .iter()
        .filter(|s| s.path == "/always-500")
        .count();
    assert_eq!(failed_attempts, 4);
    // The first endpoint was not held up by it: still active.
    assert_eq!(
        admin.get(&format!("/api/webhooks/{endpoint}")).await.body["status"],
        "active"
    );

    let resumed = admin
        .post(&format!("/api/webhooks/{failing}/resume"), json!({}))
        .await;
    assert_eq!(resumed.status, StatusCode::OK, "{resumed:?}");
    assert_eq!(resumed.body["status"], "active");
    let paused = admin
        .post(&format!("/api/webhooks/{failing}/pause"), json!({}))
        .await;
    assert_eq!(paused.body["status"], "paused", "{paused:?}");
    let updated = admin
        .send(
            "PATCH",
            &format!("/api/webhooks/{failing}"),
            Some(json!({"description": "flaky"})),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{updated:?}");
    assert_eq!(updated.body["description"], "flaky");
    let deleted = admin
        .send("DELETE", &format!("/api/webhooks/{failing}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert_eq!(
        admin.get(&format!("/api/webhooks/{failing}")).await.status,
        StatusCode::NOT_FOUND
    );

    drop(notifications);
    drop(rest);
    instance.cleanup().await;
}

/// No secret is in an event: an export imported into a fresh deployment with the same key
/// (here the JWT secret every test instance shares) has the endpoint back, and signs its
/// deliveries with the secret shown at registration.
async fn an_import_recovers_the_endpoints_and_their_secrets(backend: Dialect) {
    let receiver = Arc::new(Receiver::default());
    let base_url = start_receiver(receiver.clone()).await;
    let a = Instance::on(backend);
    let a_shop = a.spawn(&["all"], ENV).await;
    let admin = Client::admin(a.gateway_url()).await;
    let answer = admin
        .post(
            "/api/webhooks",
            json!({"url": format!("{base_url}/hooks"), "event_types": ["shop.orders.OrderPlaced"]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    let endpoint = answer.body["endpoint_id"].as_str().unwrap().to_string();
    let secret = answer.body["secret"].as_str().unwrap().to_string();
    *receiver.secret.lock().unwrap() = STANDARD.decode(&secret[6..]).unwrap();
    let exported = common::shop_on_stores(&a, &["export", "--quiet"]).await;
    assert!(!exported.contains(&secret[6..]), "a secret in the export");
    let file = common::logs_dir().join(format!("{}-webhooks-export.jsonl", a.name));
    std::fs::write(&file, &exported).unwrap();
    drop(a_shop);

    let b = Instance::on(backend);
    common::shop_on_stores(&b, &["import", file.to_str().unwrap()]).await;
    let b_shop = b.spawn(&["all"], ENV).await;
    let admin = Client::admin(b.gateway_url()).await;
    let listed = admin.get("/api/webhooks").await.body;
    assert_eq!(listed[0]["endpoint_id"], endpoint.as_str(), "{listed}");
    assert_eq!(listed[0]["status"], "active", "{listed}");
    let _ = common::confirmed_order(&b, "IMPORTED-1", "Imported", "imported@example.com").await;
    eventually(
        "the imported endpoint's delivery",
        Duration::from_secs(60),
        || async { !delivered(&receiver, "/hooks").is_empty() },
    )
    .await;
    let all: Vec<Seen> = seen(&receiver);
    assert!(
        all.iter().all(|s| s.verified),
        "signed with another secret: {all:?}"
    );
    assert_eq!(all[0].event_type, "shop.orders.OrderPlaced");
    drop(b_shop);
    a.cleanup().await;
    b.cleanup().await;
}

/// Runs `openssl` in `dir`; panics with its output when it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority of the test's own and a `localhost` / 127.0.0.1 server
/// certificate it signed, as PEM files in `dir`: `ca.pem`, `server.pem`, `server.key`.
fn test_authority(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Shop test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

/// Starts the receiver behind TLS (the certificate of [`test_authority`]); its base URL.
async fn start_tls_receiver(receiver: Arc<Receiver>, dir: &std::path::Path) -> String {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(receiver);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    // By name: the certificate is checked against the host the URL names.
    format!("https://localhost:{port}")
}

/// An https receiver: with its authority trusted (`SHOP_WEBHOOKS_CA_FILE`) it gets the
/// signed deliveries; the same receiver registered with a process that does not trust
/// that authority gets nothing, and the attempt's error names the certificate.
async fn an_https_receiver_gets_them_over_tls_with_a_trusted_authority(backend: Dialect) {
    let instance = Instance::on(backend);
    let dir = std::env::temp_dir().join(format!("shop-webhooks-tls-{}", uuid_suffix()));
    test_authority(&dir);
    let receiver = Arc::new(Receiver::default());
    let base_url = start_tls_receiver(receiver.clone(), &dir).await;
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let allow = ("SHOP_WEBHOOKS_ALLOW", "127.0.0.1/32,localhost");
    let others = ENV.iter().copied().filter(|(k, _)| *k != allow.0);
    let mut env: Vec<(&str, &str)> = others.clone().chain([allow]).collect();
    env.push(("SHOP_WEBHOOKS_CA_FILE", ca));
    let shop = instance.spawn(&["all"], &env).await;
    let admin = Client::admin(instance.gateway_url()).await;
    let register = |path: &'static str| {
        let admin = &admin;
        let url = format!("{base_url}{path}");
        async move {
            let answer = admin
                .post(
                    "/api/webhooks",
                    json!({"url": url, "event_types": ["shop.orders.OrderPlaced"]}),
                )
                .await;
            assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
            answer
        }
    };
    let answer = register("/hooks").await;
    let secret = answer.body["secret"].as_str().unwrap();
    *receiver.secret.lock().unwrap() = STANDARD.decode(&secret[6..]).unwrap();
    let (_admin, _customer, _order) =
        common::confirmed_order(&instance, "TLS-1", "Tls", "tls@example.com").await;
    eventually("a delivery over TLS", Duration::from_secs(60), || async {
        delivered(&receiver, "/hooks").len() == 1
    })
    .await;
    let all = seen(&receiver);
    assert!(all.iter().all(|s| s.verified), "{all:?}");
    assert_eq!(all[0].event_type, "shop.orders.OrderPlaced");
    shop.kill().await;

    // Without the authority: the handshake fails, nothing arrives, the log says why.
    let env: Vec<(&str, &str)> = others.chain([allow]).collect();
    let shop = instance.spawn(&["all"], &env).await;
    let admin = Client::admin(instance.gateway_url()).await;
    let endpoint = admin
        .post(
            "/api/webhooks",
            json!({"url": format!("{base_url}/untrusted"), "event_types": ["shop.orders.OrderPlaced"]}),
        )
        .await;
    assert_eq!(endpoint.status, StatusCode::CREATED, "{endpoint:?}");
    let endpoint = endpoint.body["endpoint_id"].as_str().unwrap().to_string();
    let _ = common::confirmed_order(&instance, "TLS-2", "Tls2", "tls2@example.com").await;
    let log = admin
        .get_until(
            &format!("/api/webhooks/{endpoint}/deliveries"),
            Duration::from_secs(60),
            |l| {
                l.as_array().is_some_and(|l| {
                    l.iter()
                        .any(|d| d["attempt_log"].as_array().is_some_and(|a| !a.is_empty()))
                })
            },
        )
        .await;
    let error = log[0]["attempt_log"][0]["error"]
        .as_str()
        .unwrap_or("")
        .to_lowercase();
    assert!(
        error.contains("certificate") || error.contains("tls"),
        "{log}"
    );
    assert!(
        seen(&receiver).iter().all(|s| s.path != "/untrusted"),
        "nothing arrives over an untrusted connection"
    );
    shop.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    instance.cleanup().await;
}

fn uuid_suffix() -> String {
    format!("{:x}", fastrand::u64(..))
}
