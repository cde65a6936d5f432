//! Graceful drain for rolling updates (issue 25), on real Kafka and PostgreSQL.
//!
//! Two `shop serve all` processes of one instance (the same databases, topics and
//! consumer groups), each gateway given both processes' upstream URLs, behind a
//! client-side balancer that — like a Kubernetes Service — sends only to gateways whose
//! `/ready` is 200. Under a steady load of orders (~10/s) process A is restarted (SIGTERM,
//! exit, start, ready), then process B. No client request may fail, every order placed
//! is confirmed, none is charged or reserved twice, each process exits within its bound
//! after SIGTERM, and each relay's advisory lock passes to the other process at once.
//!
//! Run with `cargo test --test rolling -- --nocapture` for the measurements (`rolling:`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Instance, ShopProcess};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::{self as sql, Pool};

/// `--drain-grace-ms` as `shop serve` has it by default.
const GRACE: Duration = Duration::from_millis(5_000);
/// A process must be gone this long after SIGTERM: the grace period, then at most 15 s
/// for in-flight requests, consumers and relays (`STOP_BOUND` in src/serve.rs).
const EXIT_BOUND: Duration = Duration::from_secs(20);
const PRODUCTS: usize = 4;
const CUSTOMERS: usize = 5;
const DEPOSIT: i64 = 1_000_000;
/// One order per tick: ~10 orders/s.
const PACE: Duration = Duration::from_millis(100);
/// How often the client-side balancer checks each gateway's `/ready`.
const PROBE: Duration = Duration::from_millis(100);
/// The relays' advisory lock keys (eventing/src/relay.rs): one per service database.
const RELAY_LOCKS: (i64, i64) = (7_242_100, 7_242_104);
const SERVICES: [&str; 5] = ["customers", "inventory", "orders", "payments", "shipping"];

/// The client side: the gateways, which are ready, round robin among those.
struct Balancer {
    gateways: Vec<String>,
    ready: Vec<AtomicBool>,
    next: AtomicUsize,
    http: reqwest::Client,
}

impl Balancer {
    fn new(gateways: Vec<String>) -> Arc<Self> {
        Arc::new(Balancer {
            ready: gateways.iter().map(|_| AtomicBool::new(false)).collect(),
            gateways,
            next: AtomicUsize::new(0),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        })
    }

    /// Checks every gateway's `/ready` every [`PROBE`] until `stop`.
    async fn probe(self: Arc<Self>, stop: Arc<AtomicBool>) {
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        while !stop.load(SeqCst) {
            for (gateway, ready) in self.gateways.iter().zip(&self.ready) {
                let ok = probe
                    .get(format!("{gateway}/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                ready.store(ok, SeqCst);
            }
            tokio::time::sleep(PROBE).await;
        }
    }

    fn is_ready(&self, gateway: &str) -> bool {
        self.gateways
            .iter()
            .zip(&self.ready)
            .any(|(g, r)| g == gateway && r.load(SeqCst))
    }

    /// A ready gateway, round robin (waits while none is: no endpoint, no request).
    async fn pick(&self) -> String {
        loop {
            let n = self.gateways.len();
            let start = self.next.fetch_add(1, SeqCst);
            if let Some(i) = (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| self.ready[i].load(SeqCst))
            {
                return self.gateways[i].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs through a ready gateway; the answer, or what went wrong.
    async fn post(&self, token: &str, path: &str, body: &Value) -> Result<Value, String> {
        let gateway = self.pick().await;
        let response = self
            .http
            .post(format!("{gateway}{path}"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("POST {gateway}{path}: {e}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
        } else {
            Err(format!("POST {gateway}{path}: {status} {text}"))
        }
    }
}

/// Each gateway is given both processes' instances of every upstream.
fn upstreams(a: &Instance, b: &Instance) -> Vec<(&'static str, String)> {
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let both = |pa, pb| format!("{},{}", url(pa), url(pb));
    let (pa, pb) = (a.ports, b.ports);
    vec![
        ("SHOP_CUSTOMERS_URL", both(pa.customers, pb.customers)),
        ("SHOP_INVENTORY_URL", both(pa.inventory, pb.inventory)),
        ("SHOP_ORDERS_URL", both(pa.orders, pb.orders)),
        ("SHOP_PAYMENTS_URL", both(pa.payments, pb.payments)),
        ("SHOP_SHIPPING_URL", both(pa.shipping, pb.shipping)),
        ("SHOP_READ_API_URL", both(pa.read_api, pb.read_api)),
    ]
}

async fn spawn_all(instance: &Instance, env: &[(&'static str, String)]) -> ShopProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    instance.spawn(&["all"], &env).await
}

/// SIGTERM, the exit (how long it took), a new process in its place, and its gateway
/// back in the client's rotation.
async fn restart(
    label: &str,
    replica: &Instance,
    mut process: ShopProcess,
    env: &[(&'static str, String)],
    balancer: &Balancer,
) -> (ShopProcess, Duration) {
    let signalled = Instant::now();
    process.terminate().await;
    let status = process
        .wait_exit(EXIT_BOUND + Duration::from_secs(10))
        .await;
    let took = signalled.elapsed();
    println!(
        "rolling: process {label} exited {:.2} s after SIGTERM ({status}); log {}",
        took.as_secs_f64(),
        process.log_path.display()
    );
    assert!(status.success(), "process {label} exited with {status}");
    let started = Instant::now();
    let process = spawn_all(replica, env).await;
    common::eventually(
        "the restarted gateway is in the client's rotation",
        Duration::from_secs(30),
        || async { balancer.is_ready(&replica.gateway_url()) },
    )
    .await;
    println!(
        "rolling: process {label} ready again {:.2} s after its start",
        started.elapsed().as_secs_f64()
    );
    (process, took)
}

/// Watches who holds each relay's advisory lock until `stop`; returns every handover:
/// the service database and how long its lock was held by nobody.
async fn watch_relays(
    pool: sqlx::PgPool,
    instance: String,
    stop: Arc<AtomicBool>,
) -> Vec<(String, Duration)> {
    let databases: Vec<String> = SERVICES.iter().map(|s| format!("{instance}_{s}")).collect();
    let mut holders: BTreeMap<String, i32> = BTreeMap::new();
    let mut free_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut handovers = Vec::new();
    while !stop.load(SeqCst) {
        let held: BTreeMap<String, i32> = sqlx::query_as::<_, (String, i32)>(
            "SELECT d.datname::text, l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.objid::bigint BETWEEN $1 AND $2 AND d.datname = ANY($3)",
        )
        .bind(RELAY_LOCKS.0)
        .bind(RELAY_LOCKS.1)
        .bind(&databases)
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        let now = Instant::now();
        for database in &databases {
            match (holders.get(database).copied(), held.get(database).copied()) {
                (Some(_), None) => {
                    free_since.insert(database.clone(), now);
                }
                (before, Some(pid)) if before != Some(pid) => {
                    if let Some(since) = free_since.remove(database) {
                        handovers.push((database.clone(), now - since));
                    } else if before.is_some() {
                        // Released and taken between two looks.
                        handovers.push((database.clone(), Duration::ZERO));
                    }
                }
                _ => {}
            }
            match held.get(database) {
                Some(pid) => holders.insert(database.clone(), *pid),
                None => holders.remove(database),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handovers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request_and_duplicates_nothing() {
    let a = Instance::new();
    let b = a.replica();
    let env = upstreams(&a, &b);
    let mut process_a = spawn_all(&a, &env).await;
    let mut process_b = spawn_all(&b, &env).await;
    let balancer = Balancer::new(vec![a.gateway_url(), b.gateway_url()]);
    let stop_probes = Arc::new(AtomicBool::new(false));
    let probes = tokio::spawn(balancer.clone().probe(stop_probes.clone()));

    // Products with stock for every order, customers with money for every order.
    let admin = Client::admin(a.gateway_url()).await;
    let mut products = Vec::new();
    for i in 0..PRODUCTS {
        products.push(admin.add_product(&format!("ROLL-{i}"), 100, 100_000).await);
    }
    let mut customers = Vec::new();
    for i in 0..CUSTOMERS {
        let (client, id) = Client::customer(
            a.gateway_url(),
            &format!("Roller {i}"),
            &format!("roller{i}@example.com"),
        )
        .await;
        let deposit = client
            .post(
                &format!("/api/customers/{id}/wallet/deposits"),
                json!({"amount": DEPOSIT}),
            )
            .await;
        assert_eq!(deposit.status, StatusCode::ACCEPTED, "{deposit:?}");
        customers.push((client.token.unwrap(), id));
    }
    a.wait_for_catalogue(PRODUCTS as i64).await;
    common::eventually(
        "both gateways are ready",
        Duration::from_secs(30),
        || async { balancer.is_ready(&a.gateway_url()) && balancer.is_ready(&b.gateway_url()) },
    )
    .await;

    let relays_stop = Arc::new(AtomicBool::new(false));
    let relays = tokio::spawn(watch_relays(
        a.pool("orders").await,
        a.name.clone(),
        relays_stop.clone(),
    ));

    // The load: one order every PACE, each its own request, whatever the others do.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = {
        let balancer = balancer.clone();
        let stop = stop_load.clone();
        let products = products.clone();
        let customers = customers.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PACE);
            let mut requests = Vec::new();
            let mut n = 0usize;
            while !stop.load(SeqCst) {
                tick.tick().await;
                let (token, customer) = customers[n % CUSTOMERS].clone();
                let product = products[(n / CUSTOMERS) % PRODUCTS].clone();
                let balancer = balancer.clone();
                requests.push(tokio::spawn(async move {
                    let quantity = 1 + (n % 3) as i64;
                    let body = json!({"lines": [{"product_id": product, "quantity": quantity}]});
                    let answer = balancer.post(&token, "/api/orders", &body).await;
                    (customer, answer)
                }));
                n += 1;
            }
            let mut placed = Vec::new();
            let mut failed = Vec::new();
            for request in requests {
                match request.await.unwrap() {
                    (customer, Ok(body)) => placed.push((
                        customer,
                        body["order_id"].as_str().unwrap_or_default().to_string(),
                    )),
                    (_, Err(e)) => failed.push(e),
                }
            }
            (placed, failed)
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    let (restarted_a, exit_a) = restart("A", &a, process_a, &env, &balancer).await;
    process_a = restarted_a;
    // The new process's consumers join their groups before the other one leaves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (restarted_b, exit_b) = restart("B", &b, process_b, &env, &balancer).await;
    process_b = restarted_b;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_load.store(true, SeqCst);
    let (placed, failed) = load.await.unwrap();
    println!(
        "rolling: {} orders placed, {} client requests failed",
        placed.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} client requests failed:\n{}",
        failed.len(),
        placed.len() + failed.len(),
        failed.join("\n")
    );
    assert!(placed.len() > 100, "the load ran: {} orders", placed.len());
    for (label, took) in [("A", exit_a), ("B", exit_b)] {
        assert!(
            took <= EXIT_BOUND,
            "process {label} took {took:?} to exit after SIGTERM (bound {EXIT_BOUND:?})"
        );
        assert!(
            took >= GRACE,
            "process {label} exited after {took:?}, before its grace period"
        );
    }

    // Every order placed is confirmed (stock and money suffice), each effect once.
    let orders = a.store("orders").await;
    let payments = a.store("payments").await;
    let inventory = a.store("inventory").await;
    let ids: Vec<&str> = placed.iter().map(|(_, id)| id.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let order_events = loop {
        let events = event_counts(&orders, "order").await;
        let decided = ids
            .iter()
            .filter(|id| {
                events.get(**id).is_some_and(|e| {
                    e.contains_key("OrderConfirmed") || e.contains_key("OrderCancelled")
                })
            })
            .count();
        if decided == ids.len() {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "only {decided} of {} orders decided within 60 s",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The saga's last steps (the stock's commit) follow the confirmation: checked until
    // they hold, or for a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let wallets = loop {
        let (violations, wallets) = effects(
            &orders,
            &payments,
            &inventory,
            &ids,
            &order_events,
            &customers,
        )
        .await;
        if violations.is_empty() {
            break wallets;
        }
        assert!(
            Instant::now() < deadline,
            "{} violations:\n{}",
            violations.len(),
            violations.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // The read models (projected by whichever process held the partitions) agree.
    for (_, id) in &customers {
        let (deposited, charged) = wallets[id];
        let count = placed.iter().filter(|(c, _)| c == id).count() as i64;
        admin
            .get_until(
                &format!("/api/customers/{id}"),
                Duration::from_secs(60),
                |c| {
                    c["wallet_balance"] == deposited - charged
                        && c["lifetime_spend"] == charged
                        && c["orders_count"] == count
                },
            )
            .await;
    }

    relays_stop.store(true, SeqCst);
    let handovers = relays.await.unwrap();
    for (database, gap) in &handovers {
        println!(
            "rolling: relay lock of {database} held by nobody for {} ms",
            gap.as_millis()
        );
    }
    assert!(
        !handovers.is_empty(),
        "no relay changed hands in two restarts"
    );
    let longest = handovers.iter().map(|(_, gap)| *gap).max().unwrap();
    assert!(
        longest <= Duration::from_secs(3),
        "a relay's lock was free for {longest:?}: the standby should take it within about a second"
    );

    stop_probes.store(true, SeqCst);
    probes.await.unwrap();
    for pool in [orders, payments, inventory] {
        pool.close().await;
    }
    process_a.kill().await;
    process_b.kill().await;
    a.cleanup().await;
}

/// What the event stores say against "every order confirmed, each effect once": the
/// violations, and each wallet's (deposited, charged).
async fn effects(
    orders: &Pool,
    payments: &Pool,
    inventory: &Pool,
    ids: &[&str],
    order_events: &BTreeMap<String, BTreeMap<String, usize>>,
    customers: &[(String, String)],
) -> (Vec<String>, BTreeMap<String, (i64, i64)>) {
    let mut violations = Vec::new();
    for id in ids {
        let events = &order_events[*id];
        if !events.contains_key("OrderConfirmed") || events.contains_key("OrderCancelled") {
            violations.push(format!("order {id} not confirmed: {events:?}"));
        }
        for (event, n) in events {
            if *n > 1 {
                violations.push(format!("order {id}: {event} appended {n} times"));
            }
        }
    }
    let reservations = event_counts(inventory, "reservation").await;
    for id in ids {
        let steps = reservations.get(*id).cloned().unwrap_or_default();
        if steps.get("StockReserved") != Some(&1) || steps.get("StockCommitted") != Some(&1) {
            violations.push(format!("order {id}: reservation {steps:?}"));
        }
    }
    // Payments: each order charged exactly once, its total; nothing refunded.
    let mut charges: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut wallets: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (wallet, event_type, data) in events_of(payments, "wallet").await {
        let amount = data["amount"].as_i64().unwrap_or_default();
        let (deposited, charged) = wallets.entry(wallet).or_default();
        match event_type.as_str() {
            "FundsDeposited" => *deposited += amount,
            "PaymentCompleted" => {
                *charged += amount;
                charges
                    .entry(data["order_id"].as_str().unwrap_or_default().to_string())
                    .or_default()
                    .push(amount);
            }
            other => violations.push(format!("wallet event {other}: {data}")),
        }
    }
    let totals: BTreeMap<String, i64> = events_of(orders, "order")
        .await
        .into_iter()
        .filter(|(_, event_type, _)| event_type == "OrderPlaced")
        .map(|(id, _, data)| (id, data["total"].as_i64().unwrap_or_default()))
        .collect();
    for id in ids {
        let charged = charges.get(*id).cloned().unwrap_or_default();
        if charged != [totals[*id]] {
            violations.push(format!(
                "order {id} (total {}): charged {charged:?}",
                totals[*id]
            ));
        }
    }
    for (_, id) in customers {
        let (deposited, charged) = wallets.get(id).copied().unwrap_or_default();
        if deposited != DEPOSIT || charged > deposited {
            violations.push(format!(
                "customer {id}: deposited {deposited}, charged {charged}"
            ));
        }
    }
    (violations, wallets)
}

/// `(aggregate id, event type, data)` of a service's events of one aggregate type.
async fn events_of(pool: &Pool, aggregate_type: &str) -> Vec<(String, String, Value)> {
    sql::query_as::<(String, String, Value)>(
        "SELECT aggregate_id, event_type, data FROM events WHERE aggregate_type = $1
         ORDER BY aggregate_id, sequence",
    )
    .bind(aggregate_type)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// aggregate id → event type → how often it was appended.
async fn event_counts(
    pool: &Pool,
    aggregate_type: &str,
) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (id, event_type, _) in events_of(pool, aggregate_type).await {
        *counts.entry(id).or_default().entry(event_type).or_default() += 1;
    }
    counts
}

/// SIGTERM: `/ready` turns 503 (`draining`) at once on every component of the process,
/// while requests are still served; after the grace period it stops accepting and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_ready_to_503_while_requests_are_still_served() {
    let instance = Instance::new();
    let mut shop = instance
        .spawn(
            &["customers", "gateway"],
            &[("SHOP_DRAIN_GRACE_MS", "3000")],
        )
        .await;
    let customers = Client::new(shop.url("customers"));
    let gateway = Client::new(instance.gateway_url());
    assert_eq!(customers.get("/ready").await.status, StatusCode::OK);

    let signalled = Instant::now();
    shop.terminate().await;
    while customers.get("/ready").await.status != StatusCode::SERVICE_UNAVAILABLE {
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "/ready still 200 a second after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "rolling: /ready answered 503 {} ms after SIGTERM",
        signalled.elapsed().as_millis()
    );
    for component in [&customers, &gateway] {
        let ready = component.get("/ready").await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
        assert!(
            ready.body["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/draining")),
            "{ready:?}"
        );
        assert_eq!(component.get("/health").await.status, StatusCode::OK);
    }
    // Still served, through the gateway too: a login.
    let admin = Client::admin(instance.gateway_url()).await;
    assert!(admin.token.is_some());
    assert!(
        signalled.elapsed() < Duration::from_millis(2_500),
        "the checks ran within the grace period"
    );

    let status = shop.wait_exit(EXIT_BOUND).await;
    let took = signalled.elapsed();
    println!(
        "rolling: customers+gateway exited {:.2} s after SIGTERM (grace 3 s)",
        took.as_secs_f64()
    );
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_secs(3),
        "exited before the grace ended: {took:?}"
    );
    assert!(
        customers.try_send("GET", "/health", None).await.is_err(),
        "nothing listens after the exit"
    );
    instance.cleanup().await;
}
