//! The order saga end to end through the gateway (SPEC §5): every outcome of an order —
//! delivered, out of stock, payment declined, shipping failed, cancelled by the customer,
//! timed out with a late payment — with the compensations each one needs, seen in the
//! order view, the customer's figures and the product's stock.

mod common;

shop_sql::on_both_backends!(
    an_order_is_confirmed_shipped_and_delivered,
    an_order_beyond_the_stock_is_cancelled_out_of_stock,
    an_order_beyond_the_wallet_is_cancelled_and_its_stock_released,
    an_order_to_an_unserved_country_is_cancelled_refunded_and_released,
    a_customer_cancels_before_shipping_but_not_after,
    a_cancel_racing_a_dispatch_never_both_take_effect,
    a_payment_published_after_the_deadline_is_refunded,
);

use std::time::{Duration, Instant};

use common::{eventually, Client, Instance, ShopProcess};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::{self as sql, Dialect, Pool};

const WAIT: Duration = Duration::from_secs(60);

/// Environment variables for a process, and the components one process runs with them.
type Env<'a> = &'a [(&'a str, &'a str)];

/// A deadline far enough that only the timeout scenario meets one, and the default
/// shipping countries (Brazil is not among them).
const SAGA_ENV: Env = &[
    ("SHOP_SAGA_TIMEOUT_MS", "120000"),
    ("SHOP_SHIPPING_COUNTRIES", "JP,US,GB,DE,FR"),
];

/// One instance of the shop for one test, with an admin and an anonymous client.
struct Shop {
    instance: Instance,
    processes: Vec<ShopProcess>,
    admin: Client,
    public: Client,
}

/// A registered, logged-in customer.
struct Customer {
    client: Client,
    id: String,
}

impl Shop {
    /// Every component in one process (`shop serve all`, or `shop dev` on SQLite).
    async fn start(backend: Dialect, env: Env<'_>) -> Self {
        let instance = Instance::on(backend);
        let processes = vec![instance.spawn(&["all"], env).await];
        let admin = Client::admin(instance.gateway_url()).await;
        let public = Client::new(instance.gateway_url());
        Shop {
            instance,
            processes,
            admin,
            public,
        }
    }

    async fn stop(self) {
        for process in self.processes {
            process.kill().await;
        }
        self.instance.cleanup().await;
    }

    /// Registers a customer living in `country`, logs in, and deposits `deposit` (if any).
    async fn customer(&self, name: &str, country: &str, deposit: i64) -> Customer {
        let mut client = Client::new(self.instance.gateway_url());
        let email = format!("{}@example.com", name.to_lowercase());
        let password = format!("password-{email}");
        let registered = client
            .post(
                "/api/customers",
                json!({"name": name, "email": email, "password": password,
                       "address": {"line1": "1 Main Street", "city": "Anytown", "postal_code": "12345", "country": country}}),
            )
            .await;
        assert_eq!(registered.status, StatusCode::CREATED, "{registered:?}");
        let login = client
            .post(
                "/api/auth/token",
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(login.status, StatusCode::OK, "{login:?}");
        client.token = Some(login.body["access_token"].as_str().unwrap().to_string());
        let customer = Customer {
            client,
            id: registered.body["customer_id"].as_str().unwrap().to_string(),
        };
        if deposit > 0 {
            customer.deposit(deposit).await;
        }
        customer
    }

    /// The order view, as the admin sees it.
    async fn order(&self, order_id: &str) -> Value {
        let answer = self.admin.get(&format!("/api/orders/{order_id}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        answer.body
    }

    /// Waits until the order reaches `status`, or fails as soon as it is cancelled instead
    /// (a cancelled order never moves again).
    async fn wait_order(&self, order_id: &str, status: &str) -> Value {
        let view = self
            .admin
            .get_until(&format!("/api/orders/{order_id}"), WAIT, |o| {
                o["status"] == status || o["status"] == "CANCELLED"
            })
            .await;
        assert_eq!(view["status"], status, "{view:#}");
        view
    }

    /// Waits until the order's history holds every one of `expected` (`Event@service`).
    async fn wait_history(&self, order_id: &str, expected: &[&str]) -> Value {
        self.admin
            .get_until(&format!("/api/orders/{order_id}"), WAIT, |o| {
                let steps = steps(o);
                expected.iter().all(|e| steps.iter().any(|s| s == e))
            })
            .await
    }

    /// Waits until the customer's figures are `(wallet_balance, lifetime_spend, orders_count)`.
    async fn wait_figures(&self, customer: &Customer, expected: (i64, i64, i64)) {
        self.admin
            .get_until(&format!("/api/customers/{}", customer.id), WAIT, |c| {
                figures(c) == expected
            })
            .await;
    }

    /// Waits until the product's stock is `(available, reserved, sold)`.
    async fn wait_stock(&self, product_id: &str, expected: (i64, i64, i64)) {
        self.public
            .get_until(&format!("/api/products/{product_id}"), WAIT, |p| {
                stock(p) == expected
            })
            .await;
    }

    /// An admin's shipment step (`dispatch` or `deliver`); the answer's status.
    async fn shipment(&self, order_id: &str, step: &str) -> StatusCode {
        self.admin
            .post(&format!("/api/shipments/{order_id}/{step}"), json!({}))
            .await
            .status
    }

    /// Dispatches the order once its shipment is scheduled.
    async fn ship(&self, order_id: &str) {
        self.wait_history(order_id, &["ShipmentScheduled@shipping"])
            .await;
        assert_eq!(
            self.shipment(order_id, "dispatch").await,
            StatusCode::ACCEPTED
        );
    }
}

impl Customer {
    async fn deposit(&self, amount: i64) {
        let answer = self
            .client
            .post(
                &format!("/api/customers/{}/wallet/deposits", self.id),
                json!({ "amount": amount }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    }

    /// Places an order of `(product_id, quantity)` lines; retries while the orders
    /// service has not yet learned the products (422). Returns the order id.
    async fn place(&self, lines: &[(&str, i64)]) -> String {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(product_id, quantity)| json!({"product_id": product_id, "quantity": quantity}))
            .collect();
        let body = json!({ "lines": lines });
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = self.client.post("/api/orders", body.clone()).await;
            if answer.status == StatusCode::ACCEPTED {
                assert_eq!(answer.body["status"], "PENDING");
                return answer.body["order_id"].as_str().unwrap().to_string();
            }
            assert_eq!(
                answer.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{answer:?}"
            );
            assert!(
                Instant::now() < deadline,
                "the orders service never learned the products: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cancel(&self, order_id: &str) -> StatusCode {
        self.client
            .post(&format!("/api/orders/{order_id}/cancel"), json!({}))
            .await
            .status
    }
}

/// The order's history as `Event@service` steps.
fn steps(view: &Value) -> Vec<String> {
    view["history"]
        .as_array()
        .map(|history| {
            history
                .iter()
                .map(|h| {
                    format!(
                        "{}@{}",
                        h["event_type"].as_str().unwrap_or("?"),
                        h["source"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `(available, reserved, sold)` of a product view.
fn stock(product: &Value) -> (i64, i64, i64) {
    let n = |field: &str| product[field].as_i64().unwrap_or(-1);
    (n("available"), n("reserved"), n("sold"))
}

/// `(wallet_balance, lifetime_spend, orders_count)` of a customer view.
fn figures(customer: &Value) -> (i64, i64, i64) {
    let n = |field: &str| customer[field].as_i64().unwrap_or(-1);
    (n("wallet_balance"), n("lifetime_spend"), n("orders_count"))
}

/// The types of the events about one order in a service's event store, in order.
async fn events_of_order(pool: &Pool, order_id: &str) -> Vec<String> {
    sql::query_scalar(
        "SELECT event_type FROM events WHERE data->>'order_id' = $1 ORDER BY position",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn count(pool: &Pool, sql: &str) -> i64 {
    sql::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn an_order_is_confirmed_shipped_and_delivered(backend: Dialect) {
    let shop = Shop::start(backend, SAGA_ENV).await;
    let tea = shop.admin.add_product("TEA-1", 1200, 10).await;
    let hanako = shop.customer("Hanako", "JP", 10_000).await;

    let order = hanako.place(&[(&tea, 3)]).await;
    let view = shop.wait_order(&order, "CONFIRMED").await;
    assert_eq!(view["total"], 3600);
    assert_eq!(view["cancel_reason"], Value::Null);
    // The confirmation's append removed the order's deadline.
    let orders_db = shop.instance.store("orders").await;
    assert_eq!(
        count(&orders_db, "SELECT count(*) FROM order_deadlines").await,
        0
    );

    // Shipping: only a dispatched parcel can be delivered, and only once dispatched.
    shop.wait_history(&order, &["ShipmentScheduled@shipping"])
        .await;
    assert_eq!(
        shop.shipment(&order, "deliver").await,
        StatusCode::CONFLICT,
        "not dispatched yet"
    );
    assert_eq!(
        shop.shipment(&order, "dispatch").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        shop.shipment(&order, "dispatch").await,
        StatusCode::CONFLICT,
        "already dispatched"
    );
    shop.wait_order(&order, "SHIPPED").await;
    assert_eq!(shop.shipment(&order, "deliver").await, StatusCode::ACCEPTED);
    shop.wait_order(&order, "DELIVERED").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        shop.shipment(&unknown, "dispatch").await,
        StatusCode::NOT_FOUND
    );

    // Every step, by the service that took it.
    shop.wait_history(
        &order,
        &[
            "OrderPlaced@orders",
            "StockReserved@inventory",
            "PaymentCompleted@payments",
            "OrderConfirmed@orders",
            "StockCommitted@inventory",
            "ShipmentScheduled@shipping",
            "ShipmentDispatched@shipping",
            "OrderShipped@orders",
            "ShipmentDelivered@shipping",
            "OrderDelivered@orders",
        ],
    )
    .await;
    shop.wait_figures(&hanako, (10_000 - 3600, 3600, 1)).await;
    shop.wait_stock(&tea, (7, 0, 3)).await;

    orders_db.close().await;
    shop.stop().await;
}

async fn an_order_beyond_the_stock_is_cancelled_out_of_stock(backend: Dialect) {
    let shop = Shop::start(backend, SAGA_ENV).await;
    let tea = shop.admin.add_product("TEA-1", 1200, 5).await;
    let hanako = shop.customer("Hanako", "JP", 10_000).await;

    let order = hanako.place(&[(&tea, 6)]).await;
    let view = shop.wait_order(&order, "CANCELLED").await;
    assert_eq!(view["cancel_reason"], "out_of_stock");
    shop.wait_history(
        &order,
        &[
            "StockReservationRejected@inventory",
            "OrderCancelled@orders",
        ],
    )
    .await;

    // Nothing was taken: no charge, no stock held.
    shop.wait_figures(&hanako, (10_000, 0, 1)).await;
    shop.wait_stock(&tea, (5, 0, 0)).await;
    let payments_db = shop.instance.store("payments").await;
    assert_eq!(
        events_of_order(&payments_db, &order).await,
        Vec::<String>::new(),
        "an order without stock is never charged"
    );

    payments_db.close().await;
    shop.stop().await;
}

async fn an_order_beyond_the_wallet_is_cancelled_and_its_stock_released(backend: Dialect) {
    let shop = Shop::start(backend, SAGA_ENV).await;
    let tea = shop.admin.add_product("TEA-1", 1200, 10).await;
    let hanako = shop.customer("Hanako", "JP", 1000).await;

    let order = hanako.place(&[(&tea, 2)]).await;
    let view = shop.wait_order(&order, "CANCELLED").await;
    assert_eq!(view["cancel_reason"], "payment_declined");
    // The cancellation's append removed the order's deadline.
    let orders_db = shop.instance.store("orders").await;
    assert_eq!(
        count(&orders_db, "SELECT count(*) FROM order_deadlines").await,
        0
    );
    shop.wait_history(
        &order,
        &[
            "StockReserved@inventory",
            "PaymentDeclined@payments",
            "OrderCancelled@orders",
            "StockReleased@inventory",
        ],
    )
    .await;

    shop.wait_figures(&hanako, (1000, 0, 1)).await;
    shop.wait_stock(&tea, (10, 0, 0)).await;

    orders_db.close().await;
    shop.stop().await;
}

async fn an_order_to_an_unserved_country_is_cancelled_refunded_and_released(backend: Dialect) {
    let shop = Shop::start(backend, SAGA_ENV).await;
    let tea = shop.admin.add_product("TEA-1", 1200, 10).await;
    let joao = shop.customer("Joao", "BR", 10_000).await;

    let order = joao.place(&[(&tea, 2)]).await;
    let view = shop.wait_order(&order, "CANCELLED").await;
    assert_eq!(view["cancel_reason"], "shipping_failed");
    // Confirmed (paid, sold), then compensated once shipping could not schedule it.
    shop.wait_history(
        &order,
        &[
            "PaymentCompleted@payments",
            "OrderConfirmed@orders",
            "ShipmentFailed@shipping",
            "OrderCancelled@orders",
            "PaymentRefunded@payments",
            "StockReleased@inventory",
        ],
    )
    .await;

    shop.wait_figures(&joao, (10_000, 0, 1)).await;
    shop.wait_stock(&tea, (10, 0, 0)).await;

    shop.stop().await;
}

async fn a_customer_cancels_before_shipping_but_not_after(backend: Dialect) {
    let shop = Shop::start(backend, SAGA_ENV).await;
    let tea = shop.admin.add_product("TEA-1", 1000, 10).await;
    let hanako = shop.customer("Hanako", "JP", 10_000).await;
    let taro = shop.customer("Taro", "JP", 0).await;

    // Confirmed and scheduled, then cancelled: refunded, released, shipment cancelled.
    let first = hanako.place(&[(&tea, 2)]).await;
    shop.wait_order(&first, "CONFIRMED").await;
    shop.wait_history(&first, &["ShipmentScheduled@shipping"])
        .await;
    assert_eq!(
        taro.cancel(&first).await,
        StatusCode::NOT_FOUND,
        "another customer's order does not exist for them"
    );
    assert_eq!(hanako.cancel(&first).await, StatusCode::ACCEPTED);
    let view = shop.wait_order(&first, "CANCELLED").await;
    assert_eq!(view["cancel_reason"], "customer_request");
    shop.wait_history(
        &first,
        &[
            "OrderCancelled@orders",
            "PaymentRefunded@payments",
            "StockReleased@inventory",
            "ShipmentCancelled@shipping",
        ],
    )
    .await;
    assert_eq!(
        hanako.cancel(&first).await,
        StatusCode::CONFLICT,
        "already cancelled"
    );
    assert_eq!(
        shop.shipment(&first, "dispatch").await,
        StatusCode::CONFLICT,
        "a cancelled shipment is not dispatched"
    );
    shop.wait_figures(&hanako, (10_000, 0, 1)).await;
    shop.wait_stock(&tea, (10, 0, 0)).await;

    // Shipped: too late to cancel; the sale stands.
    let second = hanako.place(&[(&tea, 3)]).await;
    shop.wait_order(&second, "CONFIRMED").await;
    shop.ship(&second).await;
    shop.wait_order(&second, "SHIPPED").await;
    assert_eq!(hanako.cancel(&second).await, StatusCode::CONFLICT);
    shop.wait_figures(&hanako, (10_000 - 3000, 3000, 2)).await;
    shop.wait_stock(&tea, (7, 0, 3)).await;
    assert_eq!(shop.order(&second).await["status"], "SHIPPED");

    shop.stop().await;
}

/// SPEC §5 rule 6 and §6 (goods and money agree): a confirmed order's cancel and its
/// dispatch, sent together or one right after the other, never both take effect. Each
/// race ends one way: the shipment cancelled, the order cancelled, refunded and released,
/// and the dispatch refused (409); or the parcel dispatched, the cancellation refused, the
/// order shipped and nothing refunded. Checked in the answers, the order view and the
/// event stores.
async fn a_cancel_racing_a_dispatch_never_both_take_effect(backend: Dialect) {
    const RACES: usize = 8;
    let shop = Shop::start(backend, SAGA_ENV).await;
    let tea = shop.admin.add_product("TEA-1", 100, 100).await;
    let hanako = shop.customer("Hanako", "JP", 100_000).await;
    let mut orders = Vec::new();
    for _ in 0..RACES {
        orders.push(hanako.place(&[(&tea, 1)]).await);
    }
    for order in &orders {
        shop.wait_order(order, "CONFIRMED").await;
        shop.wait_history(order, &["ShipmentScheduled@shipping"])
            .await;
    }
    let mut outcomes = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        // Together, cancel first, dispatch first, in turn.
        let (cancel, dispatch) = match i % 3 {
            0 => tokio::join!(hanako.cancel(order), shop.shipment(order, "dispatch")),
            1 => {
                let cancel = hanako.cancel(order).await;
                (cancel, shop.shipment(order, "dispatch").await)
            }
            _ => {
                let dispatch = shop.shipment(order, "dispatch").await;
                (hanako.cancel(order).await, dispatch)
            }
        };
        outcomes.push((order.clone(), cancel, dispatch));
    }
    let payments = shop.instance.store("payments").await;
    let inventory = shop.instance.store("inventory").await;
    let shipping = shop.instance.store("shipping").await;
    let mut cancelled = 0;
    let mut shipped = 0;
    for (order, cancel, dispatch) in &outcomes {
        assert!(
            [StatusCode::ACCEPTED, StatusCode::CONFLICT].contains(cancel),
            "cancel of {order}: {cancel}"
        );
        let view = shop
            .admin
            .get_until(&format!("/api/orders/{order}"), WAIT, |o| {
                let decided = o["cancellation"]["state"] != "requested";
                (o["status"] == "CANCELLED" || o["status"] == "SHIPPED") && decided
            })
            .await;
        let refunded = events_of_order(&payments, order)
            .await
            .contains(&"PaymentRefunded".to_string());
        let released = events_of_order(&inventory, order)
            .await
            .contains(&"StockReleased".to_string());
        let shipment = events_of_order(&shipping, order).await;
        let left = shipment.contains(&"ShipmentDispatched".to_string());
        if view["status"] == "CANCELLED" {
            cancelled += 1;
            assert_eq!(view["cancel_reason"], "customer_request", "{view:#}");
            assert_eq!(view["cancellation"]["state"], "accepted", "{view:#}");
            assert_eq!(
                *dispatch,
                StatusCode::CONFLICT,
                "{order}: the dispatch of a cancelled shipment"
            );
            assert!(!left, "{order}: cancelled and dispatched: {shipment:?}");
            shop.wait_history(
                order,
                &["PaymentRefunded@payments", "StockReleased@inventory"],
            )
            .await;
        } else {
            shipped += 1;
            assert_eq!(*dispatch, StatusCode::ACCEPTED, "{order}: {view:#}");
            assert!(left, "{order}: shipped without a dispatch: {shipment:?}");
            assert!(
                !refunded && !released,
                "{order}: shipped, yet refunded or released"
            );
            if *cancel == StatusCode::ACCEPTED {
                assert_eq!(view["cancellation"]["state"], "refused", "{view:#}");
                assert!(shipment.contains(&"ShipmentCancellationRefused".to_string()));
            }
        }
    }
    println!("cancel vs dispatch: {cancelled} cancelled, {shipped} shipped of {RACES}");
    assert_eq!(cancelled + shipped, RACES);
    // Money and goods add up: each shipped order's units sold and paid, each cancelled
    // one's returned.
    let spent = 100 * shipped as i64;
    shop.wait_figures(&hanako, (100_000 - spent, spent, RACES as i64))
        .await;
    shop.wait_stock(&tea, (100 - shipped as i64, 0, shipped as i64))
        .await;
    shop.stop().await;
}

/// SPEC §5.7: payments charges the order but its events are held back (a stalled relay);
/// orders, never told, cancels at the deadline; payments sees the cancellation and
/// refunds. When the held events finally go out, nothing changes: the order stays
/// cancelled, the money is back, the stock too.
async fn a_payment_published_after_the_deadline_is_refunded(backend: Dialect) {
    // Payments' relay is held back; everything else runs.
    let deadline = ("SHOP_SAGA_TIMEOUT_MS", "3000");
    let mut shop = Shop::start(
        backend,
        &[deadline, ("SHOP_FAULT_INJECT", "relay.stall:payments")],
    )
    .await;
    let tea = shop.admin.add_product("TEA-1", 1000, 10).await;
    let hanako = shop.customer("Hanako", "JP", 5000).await;
    let payments_db = shop.instance.store("payments").await;
    let orders_db = shop.instance.store("orders").await;
    // Payments is consuming (it has read the catalogue's events), so it can charge the
    // order well within the deadline.
    eventually("payments consumes inventory events", WAIT, || async {
        count(
            &payments_db,
            "SELECT count(*) FROM consumer_checkpoints WHERE topic LIKE '%inventory.events'",
        )
        .await
            > 0
    })
    .await;

    let order = hanako.place(&[(&tea, 2)]).await;
    eventually(
        "payments charges the order (before the 3 s deadline)",
        WAIT,
        || async {
            events_of_order(&payments_db, &order)
                .await
                .contains(&"PaymentCompleted".to_string())
        },
    )
    .await;
    let view = shop.wait_order(&order, "CANCELLED").await;
    assert_eq!(view["cancel_reason"], "timeout");
    eventually("payments refunds the cancelled order", WAIT, || async {
        events_of_order(&payments_db, &order)
            .await
            .contains(&"PaymentRefunded".to_string())
    })
    .await;
    shop.wait_stock(&tea, (10, 0, 0)).await;
    // Held back: nothing of payments' has been published yet.
    assert!(count(&payments_db, "SELECT count(*) FROM outbox").await >= 3);
    assert!(
        !steps(&shop.order(&order).await).contains(&"PaymentCompleted@payments".to_string()),
        "the charge is not published while the relay is stalled"
    );

    // The system restarts without the fault: deposit, charge and refund go out late.
    shop.processes.pop().unwrap().kill().await;
    shop.processes
        .push(shop.instance.spawn(&["all"], &[deadline]).await);
    shop.wait_history(
        &order,
        &["PaymentCompleted@payments", "PaymentRefunded@payments"],
    )
    .await;
    shop.wait_figures(&hanako, (5000, 0, 1)).await;
    let charge: uuid::Uuid = sql::query_scalar(
        "SELECT event_id FROM events WHERE event_type = 'PaymentCompleted' AND data->>'order_id' = $1",
    )
    .bind(&order)
    .fetch_one(&payments_db)
    .await
    .unwrap();
    eventually("orders handles the late payment", WAIT, || async {
        sql::query_scalar::<i64>("SELECT count(*) FROM processed_events WHERE event_id = $1")
            .bind(charge)
            .fetch_one(&orders_db)
            .await
            .unwrap()
            > 0
    })
    .await;

    // The late payment changed nothing: still cancelled, one charge, one refund.
    assert_eq!(
        events_of_order(&orders_db, &order).await,
        ["OrderPlaced", "OrderCancelled"]
    );
    assert_eq!(
        events_of_order(&payments_db, &order).await,
        ["PaymentCompleted", "PaymentRefunded"]
    );
    let view = shop.order(&order).await;
    assert_eq!(view["status"], "CANCELLED");
    assert_eq!(view["cancel_reason"], "timeout");
    shop.wait_figures(&hanako, (5000, 0, 1)).await;
    shop.wait_stock(&tea, (10, 0, 0)).await;

    payments_db.close().await;
    orders_db.close().await;
    shop.stop().await;
}
