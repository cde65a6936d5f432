//! Placing orders end to end (SPEC §3.4): priced from the orders service's own replica
//! of the catalogue, validated line by line, visible in the order view.

mod common;

shop_sql::on_both_backends!(
    a_customer_places_an_order_priced_at_placement,
    refused_orders_name_each_bad_line_and_store_nothing,
    inventory_reserves_every_line_or_none,
    thirty_buyers_race_for_ten_units_and_exactly_ten_are_sold,
    payments_charges_reserved_orders_once,
    new_orders_are_refused_while_the_saga_backlog_is_full,
);

use std::time::Duration;

use common::{Client, Instance};
use reqwest::StatusCode;
use serde_json::json;
use shop_sql::{self as sql, Dialect};

const WAIT: Duration = Duration::from_secs(60);

async fn a_customer_places_an_order_priced_at_placement(backend: Dialect) {
    let instance = Instance::on(backend);
    // Payments' events held back (and a far deadline): the orders stay PENDING while we
    // look.
    let shop = instance
        .spawn(
            &["all"],
            &[
                ("SHOP_SAGA_TIMEOUT_MS", "600000"),
                ("SHOP_FAULT_INJECT", "relay.stall:payments"),
            ],
        )
        .await;
    let admin = Client::admin(instance.gateway_url()).await;
    let tea = admin.add_product("TEA-1", 1200, 10).await;
    let cup = admin.add_product("CUP-1", 500, 5).await;
    let (hanako, hanako_id) =
        Client::customer(instance.gateway_url(), "Hanako", "hanako@example.com").await;

    // Once the orders service has seen the products, the order is accepted.
    let order =
        json!({"lines": [{"product_id": tea, "quantity": 2}, {"product_id": cup, "quantity": 1}]});
    let deadline = std::time::Instant::now() + WAIT;
    let placed = loop {
        let answer = hanako.post("/api/orders", order.clone()).await;
        if answer.status == StatusCode::ACCEPTED {
            break answer.body;
        }
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{answer:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the orders service never saw the products"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(placed["status"], "PENDING");
    let order_id = placed["order_id"].as_str().unwrap().to_string();

    // The order view: lines with SKU, name and the price at placement; the history.
    let view = hanako
        .get_until(&format!("/api/orders/{order_id}"), WAIT, |o| {
            o["customer_name"] == "Hanako" && o["lines"][0]["sku"] == "TEA-1"
        })
        .await;
    assert_eq!(view["status"], "PENDING");
    assert_eq!(view["customer_id"], hanako_id.as_str());
    assert_eq!(view["total"], 2900);
    assert_eq!(view["cancel_reason"], serde_json::Value::Null);
    assert_eq!(view["lines"][0]["quantity"], 2);
    assert_eq!(view["lines"][0]["unit_price"], 1200);
    assert_eq!(view["lines"][0]["line_total"], 2400);
    assert_eq!(view["lines"][1]["name"], "Product CUP-1");
    assert_eq!(view["history"][0]["event_type"], "OrderPlaced");
    assert_eq!(view["history"][0]["source"], "orders");

    // A price change applies to later orders only.
    let answer = admin
        .send(
            "PUT",
            &format!("/api/products/{tea}/price"),
            Some(json!({"price": 1000})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let one_tea = json!({"lines": [{"product_id": tea, "quantity": 1}]});
    let deadline = std::time::Instant::now() + WAIT;
    let second = loop {
        let answer = hanako.post("/api/orders", one_tea.clone()).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
        let id = answer.body["order_id"].as_str().unwrap().to_string();
        let view = hanako
            .get_until(&format!("/api/orders/{id}"), WAIT, |_| true)
            .await;
        if view["total"] == 1000 {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new price never reached orders"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first = hanako.get(&format!("/api/orders/{order_id}")).await.body;
    assert_eq!(
        first["lines"][0]["unit_price"], 1200,
        "the first order keeps its price"
    );

    // The customer's orders, newest first.
    let mine = hanako
        .get(&format!("/api/customers/{hanako_id}/orders"))
        .await;
    assert_eq!(mine.status, StatusCode::OK);
    let mine = mine.body.as_array().unwrap().clone();
    assert!(mine.len() >= 2);
    assert_eq!(mine[0]["order_id"], second.as_str());
    assert_eq!(mine.last().unwrap()["order_id"], order_id.as_str());

    // Nobody else sees it.
    let (taro, _) = Client::customer(instance.gateway_url(), "Taro", "taro@example.com").await;
    assert_eq!(
        taro.get(&format!("/api/orders/{order_id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        taro.get(&format!("/api/customers/{hanako_id}/orders"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin.get(&format!("/api/orders/{order_id}")).await.status,
        StatusCode::OK
    );

    // The event carries the order id as its correlation id.
    let records = instance
        .topic_records(&format!("{}orders.events", instance.topic_prefix))
        .await;
    let record = records
        .iter()
        .find(|r| r.header("ce_subject") == Some(order_id.as_str()))
        .expect("OrderPlaced on the topic");
    assert_eq!(record.header("ce_type"), Some("shop.orders.OrderPlaced"));
    assert_eq!(record.header("ce_correlationid"), Some(order_id.as_str()));

    shop.kill().await;
    instance.cleanup().await;
}

async fn refused_orders_name_each_bad_line_and_store_nothing(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let admin = Client::admin(instance.gateway_url()).await;
    let tea = admin.add_product("TEA-1", 1200, 10).await;
    let (hanako, _) =
        Client::customer(instance.gateway_url(), "Hanako", "hanako@example.com").await;
    // Wait until the catalogue replica has the product (a valid order is accepted).
    let pool = instance.store("orders").await;
    instance.wait_for_catalogue(1).await;

    let unknown = uuid::Uuid::now_v7().to_string();
    let cases = [
        (json!({"lines": []}), vec!["lines"]),
        (json!({}), vec!["lines"]),
        (
            json!({"lines": [{"product_id": tea, "quantity": 0}]}),
            vec!["lines[0].quantity"],
        ),
        (
            json!({"lines": [{"product_id": tea, "quantity": 1001}]}),
            vec!["lines[0].quantity"],
        ),
        (
            json!({"lines": [{"product_id": tea, "quantity": 1}, {"product_id": tea, "quantity": 2}]}),
            vec!["lines[1].product_id"],
        ),
        (
            json!({"lines": [{"product_id": "nope", "quantity": 1}]}),
            vec!["lines[0].product_id"],
        ),
        (
            json!({"lines": [{"product_id": tea, "quantity": 1}, {"product_id": unknown, "quantity": 1}]}),
            vec!["lines[1].product_id"],
        ),
    ];
    for (body, fields) in cases {
        let answer = hanako.post("/api/orders", body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {answer:?}"
        );
        assert_eq!(answer.content_type, "application/problem+json");
        let named: Vec<&str> = answer.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{body}");
    }
    let too_many: Vec<_> = (0..101)
        .map(|_| json!({"product_id": uuid::Uuid::now_v7(), "quantity": 1}))
        .collect();
    assert_eq!(
        hanako
            .post("/api/orders", json!({"lines": too_many}))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Only customers place orders.
    let valid = json!({"lines": [{"product_id": tea, "quantity": 1}]});
    assert_eq!(
        admin.post("/api/orders", valid.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        Client::new(instance.gateway_url())
            .post("/api/orders", valid)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let events: i64 = sql::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 0, "no refused order was stored");

    pool.close().await;
    shop.kill().await;
    instance.cleanup().await;
}

async fn inventory_reserves_every_line_or_none(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let admin = Client::admin(instance.gateway_url()).await;
    let tea = admin.add_product("TEA-1", 100, 5).await;
    let cup = admin.add_product("CUP-1", 50, 1).await;
    let (hanako, hanako_id) =
        Client::customer(instance.gateway_url(), "Hanako", "hanako@example.com").await;
    // Funds for the order that fits, so the saga keeps its units (sold, not released).
    let deposit = hanako
        .post(
            &format!("/api/customers/{hanako_id}/wallet/deposits"),
            json!({"amount": 1000}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED);
    instance.wait_for_catalogue(2).await;

    // Both lines there: both reserved, as one event.
    let fits = hanako
        .post("/api/orders", json!({"lines": [{"product_id": tea, "quantity": 2}, {"product_id": cup, "quantity": 1}]}))
        .await;
    assert_eq!(fits.status, StatusCode::ACCEPTED, "{fits:?}");
    let fits_id = fits.body["order_id"].as_str().unwrap().to_string();
    // Waits for the reservation itself (a later step may be projected first).
    let view = hanako
        .get_until(&format!("/api/orders/{fits_id}"), WAIT, |o| {
            has_step(o, "StockReserved")
        })
        .await;
    assert_eq!(view["history"][1]["event_type"], "StockReserved");
    assert_eq!(view["history"][1]["source"], "inventory");
    // The units are reserved, then sold once the order is confirmed.
    let held =
        |p: &serde_json::Value| p["reserved"].as_i64().unwrap() + p["sold"].as_i64().unwrap();
    let public = Client::new(instance.gateway_url());
    public
        .get_until(&format!("/api/products/{tea}"), WAIT, |p| {
            p["available"] == 3 && held(p) == 2
        })
        .await;
    public
        .get_until(&format!("/api/products/{cup}"), WAIT, |p| {
            p["available"] == 0 && held(p) == 1
        })
        .await;

    // One line short: nothing reserved, the short line named.
    let short = hanako
        .post("/api/orders", json!({"lines": [{"product_id": tea, "quantity": 1}, {"product_id": cup, "quantity": 1}]}))
        .await;
    assert_eq!(short.status, StatusCode::ACCEPTED);
    let short_id = short.body["order_id"].as_str().unwrap().to_string();
    let view = hanako
        .get_until(&format!("/api/orders/{short_id}"), WAIT, |o| {
            has_step(o, "StockReservationRejected")
        })
        .await;
    assert_eq!(view["history"][1]["event_type"], "StockReservationRejected");
    let inventory_db = instance.store("inventory").await;
    let rejected: serde_json::Value =
        sql::query_scalar("SELECT data FROM events WHERE event_type = 'StockReservationRejected'")
            .fetch_one(&inventory_db)
            .await
            .unwrap();
    assert_eq!(rejected["reason"], "out_of_stock");
    assert_eq!(
        rejected["lines"],
        json!([{"product_id": cup, "requested": 1, "available": 0}])
    );
    let tea_now = public.get(&format!("/api/products/{tea}")).await.body;
    assert_eq!(
        (tea_now["available"].as_i64(), Some(held(&tea_now))),
        (Some(3), Some(2)),
        "the tea line was not reserved"
    );

    inventory_db.close().await;
    shop.kill().await;
    instance.cleanup().await;
}

/// SPEC §6: no oversell under any concurrency. 30 funded buyers race for 10 units:
/// exactly ten orders are confirmed and their units sold, twenty are cancelled out of
/// stock, and available never goes below zero on the way.
async fn thirty_buyers_race_for_ten_units_and_exactly_ten_are_sold(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let admin = Client::admin(instance.gateway_url()).await;
    let item = admin.add_product("RARE-1", 100, 10).await;
    let mut buyers = Vec::new();
    for i in 0..30 {
        let (buyer, id) = Client::customer(
            instance.gateway_url(),
            &format!("Buyer {i}"),
            &format!("buyer{i}@example.com"),
        )
        .await;
        let deposit = buyer
            .post(
                &format!("/api/customers/{id}/wallet/deposits"),
                json!({"amount": 1000}),
            )
            .await;
        assert_eq!(deposit.status, StatusCode::ACCEPTED, "{deposit:?}");
        buyers.push(buyer);
    }
    instance.wait_for_catalogue(1).await;

    let order = json!({"lines": [{"product_id": item, "quantity": 1}]});
    let answers =
        futures::future::join_all(buyers.iter().map(|b| b.post("/api/orders", order.clone())))
            .await;
    assert!(
        answers.iter().all(|a| a.status == StatusCode::ACCEPTED),
        "{answers:?}"
    );
    let paths: Vec<String> = answers
        .iter()
        .map(|a| format!("/api/orders/{}", a.body["order_id"].as_str().unwrap()))
        .collect();

    // Until every order is decided, available never goes below zero: neither in the
    // inventory's own stock table nor in the read model.
    let inventory_db = instance.store("inventory").await;
    let public = Client::new(instance.gateway_url());
    let deadline = std::time::Instant::now() + WAIT;
    let views = loop {
        let available: i64 = sql::query_scalar("SELECT available FROM stock")
            .fetch_one(&inventory_db)
            .await
            .unwrap();
        assert!(available >= 0, "inventory oversold: available {available}");
        let product = public.get(&format!("/api/products/{item}")).await;
        assert!(
            product.body["available"].as_i64().unwrap_or(0) >= 0,
            "read model oversold: {product:?}"
        );
        let views =
            futures::future::join_all(buyers.iter().zip(&paths).map(|(b, p)| b.get(p))).await;
        if views
            .iter()
            .all(|v| v.body["status"] == "CONFIRMED" || v.body["status"] == "CANCELLED")
        {
            break views;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every order was decided within {WAIT:?}: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let outcome = |status: &str, reason: serde_json::Value| {
        views
            .iter()
            .filter(|v| v.body["status"] == status && v.body["cancel_reason"] == reason)
            .count()
    };
    assert_eq!(
        (
            outcome("CONFIRMED", serde_json::Value::Null),
            outcome("CANCELLED", json!("out_of_stock"))
        ),
        (10, 20),
        "{views:?}"
    );

    // One reservation decision per order in inventory's event store.
    let by_type: Vec<(String, i64)> = sql::query_as(
        "SELECT event_type, count(*) FROM events
         WHERE event_type IN ('StockReserved', 'StockReservationRejected')
         GROUP BY event_type ORDER BY event_type",
    )
    .fetch_all(&inventory_db)
    .await
    .unwrap();
    assert_eq!(
        by_type,
        vec![
            ("StockReservationRejected".to_string(), 20),
            ("StockReserved".to_string(), 10)
        ]
    );

    // The ten reserved units are sold, in the stock table and in the read model.
    common::eventually("ten units sold", WAIT, || async {
        sql::query_as::<(i64, i64, i64)>("SELECT available, reserved, sold FROM stock")
            .fetch_one(&inventory_db)
            .await
            .unwrap()
            == (0, 0, 10)
    })
    .await;
    public
        .get_until(&format!("/api/products/{item}"), WAIT, |p| {
            p["available"] == 0 && p["reserved"] == 0 && p["sold"] == 10
        })
        .await;

    inventory_db.close().await;
    shop.kill().await;
    instance.cleanup().await;
}

/// SPEC §5.2: once an order is placed and reserved, payments charges the wallet —
/// completed within the balance, declined beyond it — and never charges an order whose
/// stock was not reserved.
async fn payments_charges_reserved_orders_once(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance.spawn(&["all"], &[]).await;
    let admin = Client::admin(instance.gateway_url()).await;
    let tea = admin.add_product("TEA-1", 1200, 10).await;
    let rare = admin.add_product("RARE-1", 100, 0).await;
    let (hanako, hanako_id) =
        Client::customer(instance.gateway_url(), "Hanako", "hanako@example.com").await;
    let deposit = hanako
        .post(
            &format!("/api/customers/{hanako_id}/wallet/deposits"),
            json!({"amount": 5000}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED);
    instance.wait_for_catalogue(2).await;
    let place = |lines: serde_json::Value| {
        let hanako = &hanako;
        async move {
            let answer = hanako.post("/api/orders", json!({ "lines": lines })).await;
            assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
            answer.body["order_id"].as_str().unwrap().to_string()
        }
    };
    let steps = |view: &serde_json::Value| -> Vec<String> {
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
    };

    // Within the balance: reserved, then paid; the wallet shows the charge.
    let paid = place(json!([{"product_id": tea, "quantity": 2}])).await;
    let view = hanako
        .get_until(&format!("/api/orders/{paid}"), WAIT, |o| {
            o["history"].as_array().is_some_and(|h| h.len() >= 3)
        })
        .await;
    assert_eq!(
        steps(&view)[..3],
        [
            "OrderPlaced@orders",
            "StockReserved@inventory",
            "PaymentCompleted@payments"
        ]
    );
    hanako
        .get_until(&format!("/api/customers/{hanako_id}"), WAIT, |c| {
            c["wallet_balance"] == 2600
        })
        .await;

    // Beyond it: declined, nothing taken.
    let declined = place(json!([{"product_id": tea, "quantity": 3}])).await;
    let view = hanako
        .get_until(&format!("/api/orders/{declined}"), WAIT, |o| {
            has_step(o, "StockReserved") && has_step(o, "PaymentDeclined")
        })
        .await;
    assert_eq!(steps(&view)[2], "PaymentDeclined@payments");

    // Not reserved: never charged.
    let unreserved = place(json!([{"product_id": rare, "quantity": 1}])).await;
    let view = hanako
        .get_until(&format!("/api/orders/{unreserved}"), WAIT, |o| {
            has_step(o, "StockReservationRejected")
        })
        .await;
    assert_eq!(steps(&view)[1], "StockReservationRejected@inventory");

    // One charge decision per reserved order, in the payments event store.
    let payments_db = instance.store("payments").await;
    common::eventually("two payment decisions", WAIT, || async {
        sql::query_scalar::<i64>("SELECT count(*) FROM events WHERE event_type IN ('PaymentCompleted', 'PaymentDeclined')")
            .fetch_one(&payments_db)
            .await
            .unwrap()
            == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let decisions: Vec<(String, i64)> = sql::query_as(
        "SELECT event_type, CAST(data->>'amount' AS BIGINT) FROM events WHERE event_type IN ('PaymentCompleted', 'PaymentDeclined') ORDER BY position",
    )
    .fetch_all(&payments_db)
    .await
    .unwrap();
    assert_eq!(
        decisions,
        vec![
            ("PaymentCompleted".to_string(), 2400),
            ("PaymentDeclined".to_string(), 3600)
        ]
    );
    assert_eq!(
        hanako
            .get(&format!("/api/customers/{hanako_id}"))
            .await
            .body["wallet_balance"],
        2600
    );

    payments_db.close().await;
    shop.kill().await;
    instance.cleanup().await;
}

/// Whether an order view's history has a step of this event type. The projector reads
/// each service's topic on its own partitions, so a later step may be projected before
/// an earlier one: tests wait for the step they check, and the history is in time order.
/// `SHOP_ORDERS_MAX_PENDING`: while that many placed orders are undecided (payments' events
/// held back), one more is refused at once with 503 problem+json and `Retry-After`, and
/// nothing is placed; once the saga has decided them (here their deadline cancels them),
/// orders are accepted again.
async fn new_orders_are_refused_while_the_saga_backlog_is_full(backend: Dialect) {
    let instance = Instance::on(backend);
    let shop = instance
        .spawn(
            &["all"],
            &[
                ("SHOP_ORDERS_MAX_PENDING", "2"),
                ("SHOP_SAGA_TIMEOUT_MS", "4000"),
                ("SHOP_FAULT_INJECT", "relay.stall:payments"),
            ],
        )
        .await;
    let admin = Client::admin(instance.gateway_url()).await;
    let tea = admin.add_product("TEA-1", 100, 1000).await;
    let (hanako, _) =
        Client::customer(instance.gateway_url(), "Hanako", "hanako@example.com").await;
    instance.wait_for_catalogue(1).await;
    let one_tea = json!({"lines": [{"product_id": tea, "quantity": 1}]});
    for _ in 0..2 {
        let answer = hanako.post("/api/orders", one_tea.clone()).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    }

    let url = format!("{}/api/orders", instance.gateway_url());
    let refused = hanako
        .http
        .post(&url)
        .bearer_auth(hanako.token.as_deref().unwrap())
        .json(&one_tea)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("orders are waiting for the saga"),
        "{problem}"
    );
    let orders = instance.store("orders").await;
    let placed = || async {
        sql::query_scalar::<i64>("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_one(&orders)
            .await
            .unwrap()
    };
    assert_eq!(placed().await, 2, "the refused order placed nothing");

    // The deadline decides the two (cancelled, `timeout`): the backlog empties.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let answer = hanako.post("/api/orders", one_tea.clone()).await;
        if answer.status == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "orders were never admitted again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(placed().await, 3);
    shop.kill().await;
}

fn has_step(order: &serde_json::Value, event_type: &str) -> bool {
    order["history"]
        .as_array()
        .is_some_and(|h| h.iter().any(|e| e["event_type"] == event_type))
}
