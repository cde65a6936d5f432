//! The order saga end to end through the gateway (SPEC §5): the happy path to DELIVERED
//! and every way an order is cancelled, each checked by its final status and reason, the
//! customer's wallet and figures, and the product's stock figures.

mod common;

use std::time::Duration;

use common::{Client, Instance, ShopProcess};
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// One running system with an admin, a product and helpers to drive orders.
struct Shop {
    instance: Instance,
    processes: Vec<ShopProcess>,
    admin: Client,
}

impl Shop {
    async fn start(env: &[(&str, &str)]) -> Self {
        let instance = Instance::new();
        let process = instance.spawn(&["all"], env).await;
        Shop::with(instance, vec![process]).await
    }

    async fn with(instance: Instance, processes: Vec<ShopProcess>) -> Self {
        let admin = Client::admin(instance.gateway_url()).await;
        Shop {
            instance,
            processes,
            admin,
        }
    }

    /// Adds a product and waits until the orders service can price it.
    async fn product(&self, sku: &str, price: i64, stock: i64) -> String {
        let id = self.admin.add_product(sku, price, stock).await;
        let orders = self.instance.pool("orders").await;
        common::eventually("the orders service knows the product", WAIT, || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM catalogue WHERE product_id = $1::uuid",
            )
            .bind(&id)
            .fetch_one(&orders)
            .await
            .unwrap()
                == 1
        })
        .await;
        orders.close().await;
        id
    }

    /// Registers a customer living in `country`, logs in and deposits `funds`.
    async fn customer(&self, name: &str, country: &str, funds: i64) -> (Client, String) {
        let email = format!("{}@example.com", name.to_lowercase());
        let password = format!("password-{email}");
        let mut client = Client::new(self.instance.gateway_url());
        let registered = client
            .post(
                "/api/customers",
                json!({"name": name, "email": email, "password": password,
                       "address": {"line1": "1 Main St", "city": "Somewhere", "postal_code": "12345", "country": country}}),
            )
            .await;
        assert_eq!(registered.status, StatusCode::CREATED, "{registered:?}");
        let id = registered.body["customer_id"].as_str().unwrap().to_string();
        let login = client
            .post(
                "/api/auth/token",
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(login.status, StatusCode::OK, "{login:?}");
        client.token = Some(login.body["access_token"].as_str().unwrap().to_string());
        if funds > 0 {
            let deposit = client
                .post(
                    &format!("/api/customers/{id}/wallet/deposits"),
                    json!({ "amount": funds }),
                )
                .await;
            assert_eq!(deposit.status, StatusCode::ACCEPTED, "{deposit:?}");
            client
                .get_until(&format!("/api/customers/{id}"), WAIT, |c| {
                    c["wallet_balance"] == funds
                })
                .await;
        }
        (client, id)
    }

    async fn place(&self, customer: &Client, product: &str, quantity: i64) -> String {
        let answer = customer
            .post(
                "/api/orders",
                json!({"lines": [{"product_id": product, "quantity": quantity}]}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
        answer.body["order_id"].as_str().unwrap().to_string()
    }

    /// Waits until the order view shows `status` and returns it.
    async fn order_reaches(&self, customer: &Client, order: &str, status: &str) -> Value {
        customer
            .get_until(&format!("/api/orders/{order}"), WAIT, |o| {
                o["status"] == status
            })
            .await
    }

    /// Waits until the product shows `(available, reserved, sold)`.
    async fn stock_becomes(&self, product: &str, figures: (i64, i64, i64)) {
        let (available, reserved, sold) = figures;
        Client::new(self.instance.gateway_url())
            .get_until(&format!("/api/products/{product}"), WAIT, |p| {
                p["available"] == available && p["reserved"] == reserved && p["sold"] == sold
            })
            .await;
    }

    /// Waits until the customer view shows `(wallet_balance, orders_count, lifetime_spend)`.
    async fn figures_become(&self, customer: &Client, id: &str, figures: (i64, i64, i64)) {
        let (balance, count, spend) = figures;
        customer
            .get_until(&format!("/api/customers/{id}"), WAIT, |c| {
                c["wallet_balance"] == balance
                    && c["orders_count"] == count
                    && c["lifetime_spend"] == spend
            })
            .await;
    }

    async fn stop(self) {
        for process in self.processes {
            process.kill().await;
        }
        self.instance.cleanup().await;
    }
}

/// The order's history as `Event@source` steps.
fn steps(view: &Value) -> Vec<String> {
    view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{}@{}",
                h["event_type"].as_str().unwrap(),
                h["source"].as_str().unwrap()
            )
        })
        .collect()
}

fn has_steps(view: &Value, wanted: &[&str]) -> bool {
    let steps = steps(view);
    wanted.iter().all(|w| steps.iter().any(|s| s == w))
}

/// Waits until the order's history holds every one of `wanted` and returns the view.
async fn history_holds(customer: &Client, order: &str, wanted: &[&str]) -> Value {
    customer
        .get_until(&format!("/api/orders/{order}"), WAIT, |o| {
            has_steps(o, wanted)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_goes_from_placed_to_delivered() {
    let shop = Shop::start(&[]).await;
    let tea = shop.product("TEA-1", 1200, 10).await;
    let (hanako, hanako_id) = shop.customer("Hanako", "JP", 5000).await;

    let order = shop.place(&hanako, &tea, 2).await;
    let view = shop.order_reaches(&hanako, &order, "CONFIRMED").await;
    assert_eq!(view["cancel_reason"], Value::Null);
    shop.stock_becomes(&tea, (8, 0, 2)).await;
    history_holds(
        &hanako,
        &order,
        &["StockCommitted@inventory", "ShipmentScheduled@shipping"],
    )
    .await;

    // Only admins move shipments; a shipment must be dispatched before it is delivered.
    let dispatch = format!("/api/shipments/{order}/dispatch");
    let deliver = format!("/api/shipments/{order}/deliver");
    assert_eq!(
        hanako.post(&dispatch, json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        shop.admin.post(&deliver, json!({})).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        shop.admin.post(&dispatch, json!({})).await.status,
        StatusCode::ACCEPTED
    );
    shop.order_reaches(&hanako, &order, "SHIPPED").await;
    assert_eq!(
        shop.admin.post(&dispatch, json!({})).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        shop.admin.post(&deliver, json!({})).await.status,
        StatusCode::ACCEPTED
    );
    shop.order_reaches(&hanako, &order, "DELIVERED").await;

    let view = history_holds(&hanako, &order, &["OrderDelivered@orders"]).await;
    for step in [
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
    ] {
        assert!(
            steps(&view).contains(&step.to_string()),
            "{step} missing: {view}"
        );
    }
    shop.figures_become(&hanako, &hanako_id, (2600, 1, 2400))
        .await;
    shop.stock_becomes(&tea, (8, 0, 2)).await;
    // A delivered order can no longer be cancelled; an unknown shipment is 404.
    assert_eq!(
        hanako
            .post(&format!("/api/orders/{order}/cancel"), json!({}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        shop.admin
            .post(
                &format!("/api/shipments/{}/dispatch", uuid::Uuid::now_v7()),
                json!({})
            )
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_beyond_the_stock_is_cancelled_out_of_stock() {
    let shop = Shop::start(&[]).await;
    let tea = shop.product("TEA-1", 1200, 3).await;
    let (hanako, hanako_id) = shop.customer("Hanako", "JP", 10_000).await;

    let order = shop.place(&hanako, &tea, 4).await;
    let view = shop.order_reaches(&hanako, &order, "CANCELLED").await;
    assert_eq!(view["cancel_reason"], "out_of_stock");
    history_holds(
        &hanako,
        &order,
        &[
            "StockReservationRejected@inventory",
            "OrderCancelled@orders",
        ],
    )
    .await;
    shop.figures_become(&hanako, &hanako_id, (10_000, 1, 0))
        .await;
    shop.stock_becomes(&tea, (3, 0, 0)).await;
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_beyond_the_wallet_is_cancelled_payment_declined() {
    let shop = Shop::start(&[]).await;
    let tea = shop.product("TEA-1", 1200, 10).await;
    let (hanako, hanako_id) = shop.customer("Hanako", "JP", 1000).await;

    let order = shop.place(&hanako, &tea, 1).await;
    let view = shop.order_reaches(&hanako, &order, "CANCELLED").await;
    assert_eq!(view["cancel_reason"], "payment_declined");
    history_holds(
        &hanako,
        &order,
        &["PaymentDeclined@payments", "StockReleased@inventory"],
    )
    .await;
    shop.figures_become(&hanako, &hanako_id, (1000, 1, 0)).await;
    shop.stock_becomes(&tea, (10, 0, 0)).await;
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_to_an_unsupported_country_is_refunded_and_released() {
    let shop = Shop::start(&[("SHOP_SHIPPING_COUNTRIES", "JP,US")]).await;
    let tea = shop.product("TEA-1", 1200, 10).await;
    let (joao, joao_id) = shop.customer("Joao", "BR", 5000).await;

    let order = shop.place(&joao, &tea, 2).await;
    let view = shop.order_reaches(&joao, &order, "CANCELLED").await;
    assert_eq!(view["cancel_reason"], "shipping_failed");
    let view = history_holds(
        &joao,
        &order,
        &[
            "OrderConfirmed@orders",
            "ShipmentFailed@shipping",
            "PaymentRefunded@payments",
            "StockReleased@inventory",
        ],
    )
    .await;
    assert!(has_steps(
        &view,
        &["PaymentCompleted@payments", "StockCommitted@inventory"]
    ));
    shop.figures_become(&joao, &joao_id, (5000, 1, 0)).await;
    shop.stock_becomes(&tea, (10, 0, 0)).await;
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cancels_before_shipping_and_gets_everything_back() {
    let shop = Shop::start(&[]).await;
    let tea = shop.product("TEA-1", 1000, 10).await;
    let (hanako, hanako_id) = shop.customer("Hanako", "JP", 10_000).await;
    let (taro, _) = shop.customer("Taro", "JP", 0).await;

    // A confirmed order, cancelled by its customer: refund, stock back, shipment stopped.
    let order = shop.place(&hanako, &tea, 3).await;
    shop.order_reaches(&hanako, &order, "CONFIRMED").await;
    history_holds(&hanako, &order, &["ShipmentScheduled@shipping"]).await;
    let cancel = format!("/api/orders/{order}/cancel");
    assert_eq!(
        taro.post(&cancel, json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        hanako.post(&cancel, json!({})).await.status,
        StatusCode::ACCEPTED
    );
    let view = shop.order_reaches(&hanako, &order, "CANCELLED").await;
    assert_eq!(view["cancel_reason"], "customer_request");
    assert_eq!(
        hanako.post(&cancel, json!({})).await.status,
        StatusCode::CONFLICT
    );
    history_holds(
        &hanako,
        &order,
        &[
            "PaymentRefunded@payments",
            "StockReleased@inventory",
            "ShipmentCancelled@shipping",
        ],
    )
    .await;
    assert_eq!(
        shop.admin
            .post(&format!("/api/shipments/{order}/dispatch"), json!({}))
            .await
            .status,
        StatusCode::CONFLICT,
        "a cancelled order's shipment does not leave"
    );
    shop.figures_become(&hanako, &hanako_id, (10_000, 1, 0))
        .await;
    shop.stock_becomes(&tea, (10, 0, 0)).await;

    // A shipped order cannot be cancelled.
    let shipped = shop.place(&hanako, &tea, 1).await;
    shop.order_reaches(&hanako, &shipped, "CONFIRMED").await;
    history_holds(&hanako, &shipped, &["ShipmentScheduled@shipping"]).await;
    assert_eq!(
        shop.admin
            .post(&format!("/api/shipments/{shipped}/dispatch"), json!({}))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    shop.order_reaches(&hanako, &shipped, "SHIPPED").await;
    assert_eq!(
        hanako
            .post(&format!("/api/orders/{shipped}/cancel"), json!({}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    shop.figures_become(&hanako, &hanako_id, (9000, 2, 1000))
        .await;
    shop.stock_becomes(&tea, (9, 0, 1)).await;
    shop.stop().await;
}

/// SPEC §5.7: payments charges, but its events reach Kafka only after the deadline, so
/// orders cancels the order (`timeout`); payments sees the cancellation and refunds.
/// When its relay catches up, the late `PaymentCompleted` changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_after_the_deadline_is_refunded() {
    let instance = Instance::new();
    let rest = instance
        .spawn(
            &[
                "customers",
                "inventory",
                "orders",
                "shipping",
                "projector",
                "read-api",
                "gateway",
            ],
            &[("SHOP_SAGA_TIMEOUT_MS", "5000")],
        )
        .await;
    let stalled = instance
        .spawn(&["payments"], &[("SHOP_FAULT_INJECT", "relay.stall")])
        .await;
    let shop = Shop::with(instance, vec![rest]).await;
    let tea = shop.product("TEA-1", 1200, 10).await;
    let (hanako, hanako_id) = shop.customer_without_read_model_wait("Hanako", 5000).await;

    let order = shop.place(&hanako, &tea, 2).await;
    let view = shop.order_reaches(&hanako, &order, "CANCELLED").await;
    assert_eq!(view["cancel_reason"], "timeout");

    // Payments charged and then refunded, all still held in its outbox.
    let payments = shop.instance.pool("payments").await;
    let decisions = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT event_type FROM events WHERE data->>'order_id' = $1 ORDER BY sequence",
        )
        .bind(&order)
        .fetch_all(&payments)
        .await
        .unwrap()
    };
    common::eventually("payments refunds the timed-out order", WAIT, || async {
        decisions().await == ["PaymentCompleted", "PaymentRefunded"]
    })
    .await;

    // The relay catches up: the late payment reaches orders, which changes nothing.
    stalled.kill().await;
    let payments_again = shop.instance.spawn(&["payments"], &[]).await;
    let view = history_holds(
        &hanako,
        &order,
        &["PaymentCompleted@payments", "PaymentRefunded@payments"],
    )
    .await;
    assert_eq!(view["status"], "CANCELLED");
    assert_eq!(view["cancel_reason"], "timeout");
    shop.figures_become(&hanako, &hanako_id, (5000, 1, 0)).await;
    shop.stock_becomes(&tea, (10, 0, 0)).await;
    assert_eq!(decisions().await, ["PaymentCompleted", "PaymentRefunded"]);
    let orders = shop.instance.pool("orders").await;
    let order_events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&order)
    .fetch_all(&orders)
    .await
    .unwrap();
    assert_eq!(order_events, ["OrderPlaced", "OrderCancelled"]);

    payments.close().await;
    orders.close().await;
    payments_again.kill().await;
    shop.stop().await;
}

impl Shop {
    /// Like [`Shop::customer`] in Japan, for a system whose payments relay is held back
    /// (the deposit reaches the payments store, not yet the read model).
    async fn customer_without_read_model_wait(&self, name: &str, funds: i64) -> (Client, String) {
        let (client, id) = self.customer(name, "JP", 0).await;
        let deposit = client
            .post(
                &format!("/api/customers/{id}/wallet/deposits"),
                json!({ "amount": funds }),
            )
            .await;
        assert_eq!(deposit.status, StatusCode::ACCEPTED, "{deposit:?}");
        (client, id)
    }
}
