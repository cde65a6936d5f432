//! Chaos (SPEC §6): every component in its own process; a few clients place 200 orders
//! concurrently while one service process, chosen at random, is SIGKILLed and restarted.
//! Afterwards every accepted order is decided, and the invariants hold both in the read
//! models and in the event stores.
//!
//! `CHAOS_VICTIM=payments` forces the victim, `CHAOS_SEED=N` replays a run. Run with
//! `cargo test --test chaos -- --nocapture` to see the report (`chaos: ...` lines).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{Answer, Client, Instance, ShopProcess};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::{self as sql, Dialect, Pool};

const COMPONENTS: &[&str] = &[
    "customers",
    "inventory",
    "orders",
    "payments",
    "shipping",
    "projector",
    "read-api",
    "gateway",
];
/// `shop dev` is one process: the victim is all of it.
const DEV_COMPONENTS: &[&str] = &["all"];
const VICTIMS: &[&str] = &[
    "customers",
    "inventory",
    "orders",
    "payments",
    "shipping",
    "projector",
];
const ENV: &[(&str, &str)] = &[("SHOP_SAGA_TIMEOUT_MS", "30000")];

const PRODUCTS: usize = 10;
const INITIAL_STOCK: i64 = 40;
const RESTOCKED: usize = 3;
const RESTOCK_QUANTITY: i64 = 20;
const CUSTOMERS: usize = 20;
/// The last few customers deposit little, so some of their payments are declined.
const SMALL_DEPOSITORS: usize = 5;
const LARGE_DEPOSIT: i64 = 60_000;
const SMALL_DEPOSIT: i64 = 1_000;
const ORDERS: usize = 200;
const CLIENTS: u64 = 4;
/// Each client offers one order per this interval (4 clients: 40 orders/s, about 5 s of
/// load), so the kill and the restart both fall inside the flow of orders.
const PACE: Duration = Duration::from_millis(100);

/// How long a request may keep meeting a service that is down or restarting.
const OUTAGE: Duration = Duration::from_secs(120);
/// How long every accepted order may take to be decided in the read model.
const DECIDE: Duration = Duration::from_secs(180);
/// How long the compensations and projections may take to settle after that.
const SETTLE: Duration = Duration::from_secs(90);

/// Requests answered 502/503/504 while a service was down (then retried).
static REFUSED: AtomicUsize = AtomicUsize::new(0);

struct Product {
    id: String,
    /// Initial stock plus accepted restocks.
    received: i64,
}

struct Buyer {
    client: Client,
    id: String,
    deposited: i64,
}

shop_sql::on_both_backends!(orders_survive_a_killed_process_and_every_invariant_holds);

/// On PostgreSQL + Kafka one service process of eight is killed; on the embedded
/// backend the one `shop dev` process is (and restarted on the same data directory).
async fn orders_survive_a_killed_process_and_every_invariant_holds(backend: Dialect) {
    let (components, victims) = match backend {
        Dialect::Postgres => (COMPONENTS, VICTIMS),
        Dialect::Sqlite => (DEV_COMPONENTS, DEV_COMPONENTS),
    };
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = fastrand::Rng::with_seed(seed);
    let victim = std::env::var("CHAOS_VICTIM")
        .ok()
        .filter(|v| victims.contains(&v.as_str()))
        .unwrap_or_else(|| victims[rng.usize(..victims.len())].to_string());
    println!(
        "chaos: {backend:?} backend, seed {seed} (CHAOS_SEED), victim {victim} (CHAOS_VICTIM)"
    );

    let instance = Instance::on(backend);
    let mut processes = Vec::new();
    for component in components {
        processes.push(instance.spawn(&[component], ENV).await);
    }
    let admin = Client::admin(instance.gateway_url()).await;
    let mut products = Vec::new();
    for i in 0..PRODUCTS {
        let price = 150 * (i as i64 + 1);
        products.push(Product {
            id: admin
                .add_product(&format!("CHAOS-{i}"), price, INITIAL_STOCK)
                .await,
            received: INITIAL_STOCK,
        });
    }
    let mut buyers = Vec::new();
    for i in 0..CUSTOMERS {
        let deposit = if i < CUSTOMERS - SMALL_DEPOSITORS {
            LARGE_DEPOSIT
        } else {
            SMALL_DEPOSIT
        };
        buyers.push(funded_buyer(&instance, i, deposit).await);
    }
    instance.wait_for_catalogue(PRODUCTS as i64).await;

    // The load, and meanwhile the kill and restart, and a few restocks.
    let victim_at = processes
        .iter()
        .position(|p| p.components[0] == victim)
        .unwrap();
    let doomed = processes.swap_remove(victim_at);
    let slots = AtomicUsize::new(0);
    let accepted = AtomicUsize::new(0);
    let workers = (0..CLIENTS).map(|worker| {
        place_orders(
            seed.wrapping_add(worker + 1),
            &buyers,
            &products,
            &slots,
            &accepted,
        )
    });
    let (placed, restarted, restocks) = tokio::join!(
        futures::future::join_all(workers),
        kill_and_restart(&instance, doomed, &accepted),
        restock_midway(&admin, &products, &accepted),
    );
    processes.push(restarted);
    for (index, quantity) in restocks {
        products[index].received += quantity;
    }
    let placed: Vec<String> = placed.into_iter().flatten().collect();
    println!(
        "chaos: {} orders accepted; {} requests refused during the outage and retried",
        placed.len(),
        REFUSED.load(SeqCst)
    );

    let pools = Pools::open(&instance).await;
    wait_until_decided(&pools, &placed).await;

    // SPEC §6, once compensations and projections have settled.
    let deadline = Instant::now() + SETTLE;
    let state = loop {
        let state = State::load(&pools, &admin, &products, &buyers).await;
        let violations = state.violations(&products, &buyers, &placed);
        if violations.is_empty() {
            break state;
        }
        if Instant::now() > deadline {
            panic!(
                "chaos: {} invariant violations after {SETTLE:?} (seed {seed}, victim {victim}):\n{}",
                violations.len(),
                violations.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    state.report(&placed);

    pools.close().await;
    for process in processes {
        process.kill().await;
    }
    instance.cleanup().await;
}

/// Registers customer `i` (in Japan) and deposits `deposit` into its wallet.
async fn funded_buyer(instance: &Instance, i: usize, deposit: i64) -> Buyer {
    let (client, id) = Client::customer(
        instance.gateway_url(),
        &format!("Buyer {i}"),
        &format!("buyer{i}@example.com"),
    )
    .await;
    let answer = client
        .post(
            &format!("/api/customers/{id}/wallet/deposits"),
            json!({ "amount": deposit }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    Buyer {
        client,
        id,
        deposited: deposit,
    }
}

/// POSTs until 202, retrying while the service behind the gateway (or, in `shop dev`,
/// the whole process) is down or restarting.
async fn post_through_outage(client: &Client, path: &str, body: &Value) -> Answer {
    let deadline = Instant::now() + OUTAGE;
    loop {
        let outage = match client.try_send("POST", path, Some(body.clone())).await {
            Ok(answer) if answer.status == StatusCode::ACCEPTED => return answer,
            Ok(answer) => matches!(
                answer.status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            )
            .then_some(())
            .ok_or(answer),
            Err(_) => Ok(()),
        };
        match outage {
            Ok(()) if Instant::now() < deadline => {
                REFUSED.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(()) => panic!("POST {path}: still down after {OUTAGE:?}"),
            Err(answer) => panic!("POST {path} {body}: {answer:?}"),
        }
    }
}

/// One client: places an order every `PACE` (a random buyer, one or two random products,
/// one to three units each) until all `ORDERS` slots are taken; returns the ids of those
/// accepted.
async fn place_orders(
    seed: u64,
    buyers: &[Buyer],
    products: &[Product],
    slots: &AtomicUsize,
    accepted: &AtomicUsize,
) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut placed = Vec::new();
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while slots.fetch_add(1, SeqCst) < ORDERS {
        pace.tick().await;
        let buyer = &buyers[rng.usize(..buyers.len())];
        let mut picks: Vec<usize> = (0..products.len()).collect();
        rng.shuffle(&mut picks);
        let lines: Vec<Value> = picks[..rng.usize(1..=2)]
            .iter()
            .map(|&p| json!({"product_id": products[p].id, "quantity": rng.i64(1..=3)}))
            .collect();
        let answer =
            post_through_outage(&buyer.client, "/api/orders", &json!({ "lines": lines })).await;
        placed.push(answer.body["order_id"].as_str().unwrap().to_string());
        accepted.fetch_add(1, SeqCst);
    }
    placed
}

async fn wait_for_accepted(accepted: &AtomicUsize, at_least: usize) {
    while accepted.load(SeqCst) < at_least {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After a third of the orders: SIGKILL the victim, and start it again 2 s later.
async fn kill_and_restart(
    instance: &Instance,
    victim: ShopProcess,
    accepted: &AtomicUsize,
) -> ShopProcess {
    wait_for_accepted(accepted, ORDERS / 3).await;
    let component = victim.components[0].clone();
    println!(
        "chaos: SIGKILL {component} after {} accepted orders",
        accepted.load(SeqCst)
    );
    victim.kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = instance.spawn(&[component.as_str()], ENV).await;
    println!(
        "chaos: {component} restarted after {} accepted orders",
        accepted.load(SeqCst)
    );
    restarted
}

/// After half of the orders: restocks the first few products; returns what was added.
async fn restock_midway(
    admin: &Client,
    products: &[Product],
    accepted: &AtomicUsize,
) -> Vec<(usize, i64)> {
    wait_for_accepted(accepted, ORDERS / 2).await;
    let mut restocks = Vec::new();
    for (index, product) in products.iter().enumerate().take(RESTOCKED) {
        post_through_outage(
            admin,
            &format!("/api/products/{}/restock", product.id),
            &json!({ "quantity": RESTOCK_QUANTITY }),
        )
        .await;
        restocks.push((index, RESTOCK_QUANTITY));
    }
    restocks
}

/// Connections to the databases the checks read.
struct Pools {
    orders: Pool,
    payments: Pool,
    inventory: Pool,
    read: Pool,
}

impl Pools {
    async fn open(instance: &Instance) -> Self {
        Pools {
            orders: instance.store("orders").await,
            payments: instance.store("payments").await,
            inventory: instance.store("inventory").await,
            read: instance.store("read").await,
        }
    }

    async fn close(self) {
        for pool in [self.orders, self.payments, self.inventory, self.read] {
            pool.close().await;
        }
    }
}

const DECIDED: &[&str] = &["CONFIRMED", "SHIPPED", "DELIVERED", "CANCELLED"];

/// Waits until the read model shows every accepted order decided; meanwhile the
/// inventory's stock never goes below zero.
async fn wait_until_decided(pools: &Pools, placed: &[String]) {
    let ids: Vec<uuid::Uuid> = placed.iter().map(|id| id.parse().unwrap()).collect();
    let deadline = Instant::now() + DECIDE;
    loop {
        let oversold: i64 = sql::query_scalar("SELECT count(*) FROM stock WHERE available < 0")
            .fetch_one(&pools.inventory)
            .await
            .unwrap();
        assert_eq!(oversold, 0, "a product's available stock went below zero");
        let in_list = |n| pools.read.dialect().in_list(n);
        let decided: i64 = sql::query_scalar(&format!(
            "SELECT count(*) FROM orders WHERE order_id {} AND status {}",
            in_list(1),
            in_list(2)
        ))
        .bind(&ids)
        .bind(DECIDED)
        .fetch_one(&pools.read)
        .await
        .unwrap();
        if decided as usize == ids.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {decided} of {} accepted orders decided within {DECIDE:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One event of a service's event store.
struct Stored {
    aggregate_id: String,
    event_type: String,
    data: Value,
    at: DateTime<Utc>,
}

async fn load_events(pool: &Pool, aggregate_type: &str) -> Vec<Stored> {
    sql::query_as::<(String, String, Value, DateTime<Utc>)>(
        "SELECT aggregate_id, event_type, data, recorded_at FROM events
         WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence",
    )
    .bind(aggregate_type)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(aggregate_id, event_type, data, at)| Stored {
        aggregate_id,
        event_type,
        data,
        at,
    })
    .collect()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or_default()
}

/// `(product_id, quantity)` of an event's `lines`.
fn lines(data: &Value) -> Vec<(String, i64)> {
    data["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|l| (text(&l["product_id"]), int(&l["quantity"])))
                .collect()
        })
        .unwrap_or_default()
}

/// An order as the orders event store tells it.
#[derive(Default)]
struct OrderFacts {
    customer_id: String,
    total: i64,
    lines: Vec<(String, i64)>,
    /// From the last status event: PENDING, CONFIRMED, SHIPPED, DELIVERED or CANCELLED.
    status: String,
    cancel_reason: Option<String>,
    placed_at: Option<DateTime<Utc>>,
    /// When it was first confirmed or cancelled.
    decided_at: Option<DateTime<Utc>>,
    /// Every event type with how often it occurs.
    events: BTreeMap<String, usize>,
}

impl OrderFacts {
    fn fulfilled(&self) -> bool {
        matches!(self.status.as_str(), "CONFIRMED" | "SHIPPED" | "DELIVERED")
    }
}

fn orders_from(events: &[Stored]) -> BTreeMap<String, OrderFacts> {
    let mut orders: BTreeMap<String, OrderFacts> = BTreeMap::new();
    for e in events {
        let order = orders.entry(e.aggregate_id.clone()).or_default();
        *order.events.entry(e.event_type.clone()).or_default() += 1;
        let status = match e.event_type.as_str() {
            "OrderPlaced" => {
                order.customer_id = text(&e.data["customer_id"]);
                order.total = int(&e.data["total"]);
                order.lines = lines(&e.data);
                order.placed_at = Some(e.at);
                "PENDING"
            }
            "OrderConfirmed" => "CONFIRMED",
            "OrderCancelled" => {
                order.cancel_reason = Some(text(&e.data["reason"]));
                "CANCELLED"
            }
            "OrderShipped" => "SHIPPED",
            "OrderDelivered" => "DELIVERED",
            _ => continue,
        };
        if matches!(status, "CONFIRMED" | "CANCELLED") {
            order.decided_at.get_or_insert(e.at);
        }
        order.status = status.to_string();
    }
    orders
}

/// A wallet as the payments event store tells it.
#[derive(Default)]
struct WalletFacts {
    deposits: i64,
    charged: i64,
    refunded: i64,
}

impl WalletFacts {
    fn balance(&self) -> i64 {
        self.deposits - self.charged + self.refunded
    }
}

/// One order's payments as the payments event store tells them.
#[derive(Default)]
struct ChargeFacts {
    completed: Vec<i64>,
    refunded: Vec<i64>,
}

impl ChargeFacts {
    fn net(&self) -> i64 {
        self.completed.iter().sum::<i64>() - self.refunded.iter().sum::<i64>()
    }
}

fn payments_from(
    events: &[Stored],
) -> (BTreeMap<String, WalletFacts>, BTreeMap<String, ChargeFacts>) {
    let mut wallets: BTreeMap<String, WalletFacts> = BTreeMap::new();
    let mut charges: BTreeMap<String, ChargeFacts> = BTreeMap::new();
    for e in events {
        let wallet = wallets.entry(e.aggregate_id.clone()).or_default();
        let amount = int(&e.data["amount"]);
        let order = text(&e.data["order_id"]);
        match e.event_type.as_str() {
            "FundsDeposited" => wallet.deposits += amount,
            "PaymentCompleted" => {
                wallet.charged += amount;
                charges.entry(order).or_default().completed.push(amount);
            }
            "PaymentRefunded" => {
                wallet.refunded += amount;
                charges.entry(order).or_default().refunded.push(amount);
            }
            _ => {}
        }
    }
    (wallets, charges)
}

/// `(available, reserved, sold)`.
type Figures = (i64, i64, i64);

/// product → (received, (available, reserved, sold)).
type StockFacts = BTreeMap<String, (i64, Figures)>;
/// order → the event types of its reservation.
type ReservationFacts = BTreeMap<String, Vec<String>>;

/// Stock per product, and each order's reservation event types, as the inventory event
/// store tells them.
fn stock_from(products: &[Stored], reservations: &[Stored]) -> (StockFacts, ReservationFacts) {
    let mut stock = StockFacts::new();
    for e in products {
        let (received, (available, _, _)) = stock.entry(e.aggregate_id.clone()).or_default();
        let added = match e.event_type.as_str() {
            "ProductAdded" => int(&e.data["stock"]),
            "ProductRestocked" => int(&e.data["quantity"]),
            _ => 0,
        };
        *received += added;
        *available += added;
    }
    let mut by_order = ReservationFacts::new();
    for e in reservations {
        by_order
            .entry(e.aggregate_id.clone())
            .or_default()
            .push(e.event_type.clone());
        for (product, quantity) in lines(&e.data) {
            let (_, (available, reserved, sold)) = stock.entry(product).or_default();
            match (e.event_type.as_str(), e.data["released_from"].as_str()) {
                ("StockReserved", _) => {
                    *available -= quantity;
                    *reserved += quantity;
                }
                ("StockCommitted", _) => {
                    *reserved -= quantity;
                    *sold += quantity;
                }
                ("StockReleased", Some("sold")) => {
                    *sold -= quantity;
                    *available += quantity;
                }
                ("StockReleased", _) => {
                    *reserved -= quantity;
                    *available += quantity;
                }
                _ => {}
            }
        }
    }
    (stock, by_order)
}

/// Everything the checks compare: the event stores, the inventory's stock table and the
/// read models, read at one moment.
struct State {
    orders: BTreeMap<String, OrderFacts>,
    wallets: BTreeMap<String, WalletFacts>,
    charges: BTreeMap<String, ChargeFacts>,
    stock: StockFacts,
    reservations: ReservationFacts,
    stock_table: BTreeMap<String, Figures>,
    /// order → (status, cancel_reason, total)
    read_orders: BTreeMap<String, (String, Option<String>, i64)>,
    read_products: BTreeMap<String, Figures>,
    /// customer → (wallet_balance, lifetime_spend, orders_count)
    read_customers: BTreeMap<String, Figures>,
}

impl State {
    async fn load(pools: &Pools, admin: &Client, products: &[Product], buyers: &[Buyer]) -> Self {
        let orders = orders_from(&load_events(&pools.orders, "order").await);
        let (wallets, charges) = payments_from(&load_events(&pools.payments, "wallet").await);
        let (stock, reservations) = stock_from(
            &load_events(&pools.inventory, "product").await,
            &load_events(&pools.inventory, "reservation").await,
        );
        let stock_table = sql::query_as::<(uuid::Uuid, i64, i64, i64)>(
            "SELECT product_id, available, reserved, sold FROM stock",
        )
        .fetch_all(&pools.inventory)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, a, r, s)| (id.to_string(), (a, r, s)))
        .collect();
        let read_orders = sql::query_as::<(uuid::Uuid, String, Option<String>, i64)>(
            "SELECT order_id, status, cancel_reason, total FROM orders",
        )
        .fetch_all(&pools.read)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, status, reason, total)| (id.to_string(), (status, reason, total)))
        .collect();
        let mut read_products = BTreeMap::new();
        for product in products {
            let view = admin.get(&format!("/api/products/{}", product.id)).await;
            let n = |field: &str| view.body[field].as_i64().unwrap_or(-1);
            read_products.insert(
                product.id.clone(),
                (n("available"), n("reserved"), n("sold")),
            );
        }
        let mut read_customers = BTreeMap::new();
        for buyer in buyers {
            let view = admin.get(&format!("/api/customers/{}", buyer.id)).await;
            let n = |field: &str| view.body[field].as_i64().unwrap_or(-1);
            read_customers.insert(
                buyer.id.clone(),
                (n("wallet_balance"), n("lifetime_spend"), n("orders_count")),
            );
        }
        State {
            orders,
            wallets,
            charges,
            stock,
            reservations,
            stock_table,
            read_orders,
            read_products,
            read_customers,
        }
    }

    fn violations(&self, products: &[Product], buyers: &[Buyer], placed: &[String]) -> Vec<String> {
        let mut violations = self.order_violations(placed);
        violations.extend(self.money_violations(buyers));
        violations.extend(self.stock_violations(products));
        violations
    }

    /// Every order decided once, in the store and the same in the read model.
    fn order_violations(&self, placed: &[String]) -> Vec<String> {
        let mut v = Vec::new();
        for id in placed {
            if !self.orders.contains_key(id) {
                v.push(format!(
                    "accepted order {id} is not in the orders event store"
                ));
            }
        }
        for (id, order) in &self.orders {
            for (event, n) in &order.events {
                if *n > 1 {
                    v.push(format!("order {id}: {event} appended {n} times"));
                }
            }
            if order.placed_at.is_none() {
                v.push(format!("order {id}: no OrderPlaced"));
            }
            if order.decided_at.is_none() {
                v.push(format!("order {id}: never confirmed nor cancelled"));
            }
            let confirmed = order.events.contains_key("OrderConfirmed");
            if confirmed
                && order.status == "CANCELLED"
                && !matches!(
                    order.cancel_reason.as_deref(),
                    Some("shipping_failed" | "customer_request")
                )
            {
                v.push(format!(
                    "order {id}: confirmed, then cancelled for {:?}",
                    order.cancel_reason
                ));
            }
            let derived = (
                order.status.clone(),
                order.cancel_reason.clone(),
                order.total,
            );
            match self.read_orders.get(id) {
                None => v.push(format!("order {id}: no read-model row")),
                Some(read) if *read != derived => v.push(format!(
                    "order {id}: read model {read:?}, event store {derived:?}"
                )),
                Some(_) => {}
            }
        }
        v
    }

    /// Deposits − charges + refunds = balance, per customer; per order the net charge is
    /// its total when fulfilled and zero when cancelled; at most one charge and refund.
    fn money_violations(&self, buyers: &[Buyer]) -> Vec<String> {
        let mut v = Vec::new();
        for (id, charge) in &self.charges {
            if charge.completed.len() > 1 || charge.refunded.len() > 1 {
                v.push(format!(
                    "order {id}: {} charges, {} refunds",
                    charge.completed.len(),
                    charge.refunded.len()
                ));
            }
            if charge.refunded.len() > charge.completed.len() {
                v.push(format!("order {id}: refunded without a charge"));
            }
            if !self.orders.contains_key(id) {
                v.push(format!(
                    "order {id}: charged but not in the orders event store"
                ));
            }
        }
        for (id, order) in &self.orders {
            let net = self.charges.get(id).map_or(0, ChargeFacts::net);
            let expected = match order.status.as_str() {
                "CANCELLED" => 0,
                _ if order.fulfilled() => order.total,
                _ => continue,
            };
            if net != expected {
                v.push(format!(
                    "order {id} ({}, {:?}): net charge {net}, expected {expected}",
                    order.status, order.cancel_reason
                ));
            }
        }
        for buyer in buyers {
            let empty = WalletFacts::default();
            let wallet = self.wallets.get(&buyer.id).unwrap_or(&empty);
            if wallet.deposits != buyer.deposited {
                v.push(format!(
                    "customer {}: {} deposited in the event store, {} accepted",
                    buyer.id, wallet.deposits, buyer.deposited
                ));
            }
            if wallet.balance() < 0 {
                v.push(format!(
                    "customer {}: balance {}",
                    buyer.id,
                    wallet.balance()
                ));
            }
            let orders_count = self
                .orders
                .values()
                .filter(|o| o.customer_id == buyer.id)
                .count() as i64;
            let derived = (
                wallet.balance(),
                wallet.charged - wallet.refunded,
                orders_count,
            );
            let read = self.read_customers.get(&buyer.id);
            if read != Some(&derived) {
                v.push(format!(
                    "customer {}: read model (balance, spend, orders) {read:?}, event stores {derived:?}",
                    buyer.id
                ));
            }
        }
        v
    }

    /// initial + restocked = available + reserved + sold, available ≥ 0, nothing left
    /// reserved, sold = the units of fulfilled orders; the same in the inventory event
    /// store, its stock table and the read model; every reservation committed or released
    /// as its order went.
    fn stock_violations(&self, products: &[Product]) -> Vec<String> {
        let mut v = Vec::new();
        let mut sold_by_orders: BTreeMap<&str, i64> = BTreeMap::new();
        for order in self.orders.values().filter(|o| o.fulfilled()) {
            for (product, quantity) in &order.lines {
                *sold_by_orders.entry(product.as_str()).or_default() += quantity;
            }
        }
        for product in products {
            let id = &product.id;
            let (received, derived) = self.stock.get(id).copied().unwrap_or_default();
            let (available, reserved, sold) = derived;
            if received != product.received {
                v.push(format!(
                    "product {id}: {received} received in the event store, {} accepted",
                    product.received
                ));
            }
            if available + reserved + sold != received || available < 0 {
                v.push(format!(
                    "product {id}: {derived:?} (available, reserved, sold) of {received} received"
                ));
            }
            if reserved != 0 {
                v.push(format!(
                    "product {id}: {reserved} still reserved with every order decided"
                ));
            }
            let expected_sold = sold_by_orders.get(id.as_str()).copied().unwrap_or(0);
            if sold != expected_sold {
                v.push(format!(
                    "product {id}: {sold} sold, fulfilled orders hold {expected_sold}"
                ));
            }
            for (place, figures) in [
                ("stock table", self.stock_table.get(id)),
                ("read model", self.read_products.get(id)),
            ] {
                if figures != Some(&derived) {
                    v.push(format!(
                        "product {id}: {place} {figures:?}, event store {derived:?}"
                    ));
                }
            }
        }
        for (id, order) in &self.orders {
            let empty = Vec::new();
            let steps = self.reservations.get(id).unwrap_or(&empty);
            let has = |event: &str| steps.iter().filter(|s| *s == event).count();
            let consistent = if order.fulfilled() {
                has("StockReserved") == 1 && has("StockCommitted") == 1 && has("StockReleased") == 0
            } else if order.status == "CANCELLED" {
                has("StockReserved") == has("StockReleased") && has("StockReserved") <= 1
            } else {
                true
            };
            if !consistent {
                v.push(format!(
                    "order {id} ({}): reservation {steps:?}",
                    order.status
                ));
            }
        }
        v
    }

    /// Prints the outcome and throughput of the run.
    fn report(&self, placed: &[String]) {
        let accepted: Vec<&OrderFacts> =
            placed.iter().filter_map(|id| self.orders.get(id)).collect();
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        for order in &accepted {
            let outcome = match &order.cancel_reason {
                Some(reason) => format!("{}/{reason}", order.status),
                None => order.status.clone(),
            };
            *outcomes.entry(outcome).or_default() += 1;
        }
        println!("chaos: outcomes {outcomes:?}");
        let first_placed = accepted.iter().filter_map(|o| o.placed_at).min().unwrap();
        let last_decided = accepted.iter().filter_map(|o| o.decided_at).max().unwrap();
        let seconds = (last_decided - first_placed).num_milliseconds() as f64 / 1000.0;
        let mut latencies: Vec<i64> = accepted
            .iter()
            .filter_map(|o| Some((o.decided_at? - o.placed_at?).num_milliseconds()))
            .collect();
        latencies.sort_unstable();
        println!(
            "chaos: {} orders in {seconds:.1} s from first placement to last decision: {:.1} orders/s",
            accepted.len(),
            accepted.len() as f64 / seconds
        );
        println!(
            "chaos: placed → confirmed/cancelled latency p50 {} ms, p99 {} ms (orders event store timestamps)",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99)
        );
        println!("chaos: every invariant of SPEC §6 holds");
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
