//! Every saga reaction, fed directly against its service's real PostgreSQL database: the
//! events it waits for in every order the log allows (events of one topic keep their
//! order; different topics interleave freely), each delivered twice — in a row, and all of
//! them again afterwards — gives the same outcome as one delivery in order.
//!
//! The consumer runner drops a redelivery by event id before the handler sees it; these
//! tests go further and show that the handlers themselves change nothing a second time.
//! On PostgreSQL, where the runner hands a reaction that batches whole batches, the
//! events go in batches ([`deliver`]); on SQLite one by one.

mod common;

use std::sync::Arc;

use serde::Serialize;
use shop_eventing::command::CommandBus;
use shop_eventing::handler::EventHandler;
use shop_eventing::store::EventStore;
use shop_schemas::customers::{Address, CustomerEvent, CustomerRegistered};
use shop_schemas::inventory::{InventoryEvent, StockLine, StockReservationRejected, StockReserved};
use shop_schemas::orders::{OrderCancelled, OrderConfirmed, OrderEvent, OrderLine, OrderPlaced};
use shop_schemas::payments::{PaymentCompleted, PaymentDeclined, PaymentEvent};
use shop_schemas::{CloudEvent, EventMetadata, Service};
use shop_sql::db::{self, DatabaseConfig};
use shop_sql::{self as sql, Dialect, Pool};
use uuid::Uuid;

shop_sql::on_both_backends!(
    the_orders_saga_decides_once_whatever_the_order,
    inventory_moves_each_order_s_units_once,
    the_stock_table_follows_every_move,
    payments_charge_once_and_refund_what_a_cancelled_order_paid,
    shipping_schedules_each_confirmed_order_once,
);

/// A service database of its own for one test, dropped at the end.
struct Database {
    config: DatabaseConfig,
    component: &'static str,
    pool: Pool,
}

impl Database {
    async fn fresh(backend: Dialect, component: &'static str, private_schema: &str) -> Self {
        let instance = common::fresh_instance();
        let config = DatabaseConfig {
            server_url: match backend {
                Dialect::Postgres => common::infra().database_url,
                Dialect::Sqlite => String::new(),
            },
            sqlite_dir: match backend {
                Dialect::Postgres => None,
                Dialect::Sqlite => Some(std::env::temp_dir().join(format!("shop-{instance}"))),
            },
            instance,
            max_connections: 4,
        };
        let schema = [
            shop_eventing::store::SCHEMA,
            shop_eventing::consumer::SCHEMA,
            private_schema,
        ];
        let pool = db::open(&config, component, &schema).await.unwrap();
        Database {
            config,
            component,
            pool,
        }
    }

    async fn drop(self) {
        self.pool.close().await;
        match &self.config.sqlite_dir {
            Some(dir) => std::fs::remove_dir_all(dir).unwrap(),
            None => db::drop_database(
                &self.config.server_url,
                &self.config.database_name(self.component),
            )
            .await
            .unwrap(),
        }
    }
}

/// `event` as the CloudEvent a consumer of `service`'s topic receives.
fn cloud_event(service: Service, subject: Uuid, event: impl Serialize) -> CloudEvent {
    let (name, data) = shop_schemas::split_event(serde_json::to_value(event).unwrap()).unwrap();
    CloudEvent {
        specversion: "1.0".into(),
        id: Uuid::now_v7(),
        source: service.source(),
        ty: format!("shop.{}.{name}", service.name()),
        subject: subject.to_string(),
        time: chrono::Utc::now(),
        dataschema: shop_schemas::event_type(service, &name)
            .unwrap()
            .dataschema(),
        datacontenttype: "application/json".into(),
        sequence: 1,
        correlationid: subject.to_string(),
        causationid: String::new(),
        traceparent: String::new(),
        data,
    }
}

/// Every order of `events` that the log allows: events of one topic (one partition per
/// aggregate key) keep their relative order.
fn interleavings(events: &[CloudEvent]) -> Vec<Vec<CloudEvent>> {
    fn permute(rest: Vec<usize>, prefix: Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if rest.is_empty() {
            out.push(prefix);
            return;
        }
        for i in 0..rest.len() {
            let mut rest = rest.clone();
            let next = rest.remove(i);
            let mut prefix = prefix.clone();
            prefix.push(next);
            permute(rest, prefix, out);
        }
    }
    let mut orders = Vec::new();
    permute((0..events.len()).collect(), Vec::new(), &mut orders);
    orders
        .into_iter()
        .filter(|order| {
            order.iter().enumerate().all(|(i, &a)| {
                order[i + 1..]
                    .iter()
                    .all(|&b| events[a].source != events[b].source || a < b)
            })
        })
        .map(|order| order.into_iter().map(|i| events[i].clone()).collect())
        .collect()
}

/// The ways one interleaving is delivered: each event twice in a row, and the whole
/// sequence delivered again after the first pass.
fn with_redeliveries(order: &[CloudEvent]) -> [Vec<CloudEvent>; 2] {
    [
        order.iter().flat_map(|e| [e.clone(), e.clone()]).collect(),
        order.iter().chain(order).cloned().collect(),
    ]
}

/// Hands the events to the handler as the runner does: on PostgreSQL, a handler that
/// batches gets them in batches, each in a transaction of its own (a new batch starts
/// where an event would come twice, as the runner applies an id once per batch); on
/// SQLite, or for a handler that does not batch, one by one ([`deliver_each`]).
async fn deliver(pool: &Pool, handler: &dyn EventHandler, events: &[CloudEvent]) {
    if !handler.batches() || pool.dialect() != Dialect::Postgres {
        return deliver_each(pool, handler, events).await;
    }
    let mut batches: Vec<Vec<&CloudEvent>> = vec![Vec::new()];
    for event in events {
        let batch = batches.last_mut().expect("one batch at least");
        if batch.iter().any(|e| e.id == event.id) {
            batches.push(vec![event]);
        } else {
            batch.push(event);
        }
    }
    for batch in batches {
        let mut tx = pool.begin().await.unwrap();
        handler
            .handle_batch(&mut tx, &batch)
            .await
            .unwrap_or_else(|e| panic!("a batch of {}: {e}", batch.len()));
        tx.commit().await.unwrap();
    }
}

/// Hands each event to the handler in a transaction of its own.
async fn deliver_each(pool: &Pool, handler: &dyn EventHandler, events: &[CloudEvent]) {
    for event in events {
        let mut tx = pool.begin().await.unwrap();
        handler
            .handle(&mut tx, event)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", event.ty));
        tx.commit().await.unwrap();
    }
}

/// What the reaction appended for one aggregate after its first `skip` events: event
/// types and data, with the run's ids replaced by their names.
async fn outcome(pool: &Pool, aggregate: Uuid, skip: i64, ids: &[(Uuid, &str)]) -> Vec<String> {
    let rows: Vec<(String, serde_json::Value)> = sql::query_as(
        "SELECT event_type, data FROM events WHERE aggregate_id = $1 AND sequence > $2 ORDER BY sequence",
    )
    .bind(aggregate.to_string())
    .bind(skip)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(ty, data)| {
            let mut text = format!("{ty} {data}");
            for (id, name) in ids {
                text = text.replace(&id.to_string(), name);
            }
            text
        })
        .collect()
}

fn order_placed(order_id: Uuid, customer_id: Uuid, product_id: Uuid, total: i64) -> OrderEvent {
    OrderEvent::OrderPlaced(OrderPlaced {
        order_id,
        customer_id,
        lines: vec![OrderLine {
            product_id,
            quantity: 2,
            unit_price: total / 2,
        }],
        total,
        currency: "JPY".into(),
    })
}

fn stock_reserved(order_id: Uuid, product_id: Uuid) -> InventoryEvent {
    InventoryEvent::StockReserved(StockReserved {
        order_id,
        lines: vec![StockLine {
            product_id,
            quantity: 2,
        }],
    })
}

fn order_cancelled(order_id: Uuid, reason: &str) -> OrderEvent {
    OrderEvent::OrderCancelled(OrderCancelled {
        order_id,
        reason: reason.into(),
    })
}

/// Runs `check` once per interleaving and redelivery of the events `build` makes (fresh
/// ids each time, so every run starts from a new order); returns how many runs there were.
async fn for_every_delivery<Build, Check, Fut>(mut build: Build, mut check: Check) -> usize
where
    Build: FnMut() -> (Uuid, Vec<CloudEvent>),
    Check: FnMut(Uuid, Vec<CloudEvent>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (_, template) = build();
    let runs = interleavings(&template).len() * 2;
    for run in 0..runs {
        let (id, events) = build();
        let order = &interleavings(&events)[run / 2];
        let delivery = with_redeliveries(order)[run % 2].clone();
        check(id, delivery).await;
    }
    runs
}

/// SPEC §5.3: stock reserved and payment completed, in either order, each twice → one
/// `OrderConfirmed`; a failed step → one `OrderCancelled` with its reason.
async fn the_orders_saga_decides_once_whatever_the_order(backend: Dialect) {
    let database = Database::fresh(
        backend,
        "orders",
        include_str!("../command-services/orders/sql/orders.sql"),
    )
    .await;
    let pool = database.pool.clone();
    let store = EventStore::new(pool.clone()).with_hook(Arc::new(
        shop_orders::deadline::DeadlineTable::new(std::time::Duration::from_secs(3600)),
    ));
    let bus = Arc::new(CommandBus::new(store, ()));
    let saga = shop_orders::reactions::OrderSaga { bus: bus.clone() };
    let product = Uuid::now_v7();
    let customer = Uuid::now_v7();

    type Steps = fn(Uuid, Uuid) -> Vec<CloudEvent>;
    let scenarios: [(Steps, &[&str]); 3] = [
        (
            |order, product| {
                vec![
                    cloud_event(Service::Inventory, order, stock_reserved(order, product)),
                    cloud_event(
                        Service::Payments,
                        order,
                        PaymentEvent::PaymentCompleted(PaymentCompleted {
                            order_id: order,
                            customer_id: Uuid::nil(),
                            amount: 600,
                        }),
                    ),
                ]
            },
            &[r#"OrderConfirmed {"order_id":"ORDER"}"#],
        ),
        (
            |order, product| {
                vec![
                    cloud_event(Service::Inventory, order, stock_reserved(order, product)),
                    cloud_event(
                        Service::Payments,
                        order,
                        PaymentEvent::PaymentDeclined(PaymentDeclined {
                            order_id: order,
                            customer_id: Uuid::nil(),
                            amount: 600,
                            reason: "insufficient_funds".into(),
                        }),
                    ),
                ]
            },
            &[r#"OrderCancelled {"order_id":"ORDER","reason":"payment_declined"}"#],
        ),
        (
            |order, product| {
                vec![cloud_event(
                    Service::Inventory,
                    order,
                    InventoryEvent::StockReservationRejected(StockReservationRejected {
                        order_id: order,
                        reason: "out_of_stock".into(),
                        lines: vec![shop_schemas::inventory::StockShortage {
                            product_id: product,
                            requested: 2,
                            available: 0,
                        }],
                    }),
                )]
            },
            &[r#"OrderCancelled {"order_id":"ORDER","reason":"out_of_stock"}"#],
        ),
    ];
    for (steps, expected) in scenarios {
        let runs = for_every_delivery(
            || {
                let order = Uuid::now_v7();
                (order, steps(order, product))
            },
            |order, delivery| {
                let (bus, saga, pool) = (bus.clone(), &saga, pool.clone());
                async move {
                    bus.execute(
                        &order.to_string(),
                        shop_orders::order::OrderCommand::Place {
                            order_id: order,
                            customer_id: customer,
                            lines: vec![OrderLine {
                                product_id: product,
                                quantity: 2,
                                unit_price: 300,
                            }],
                        },
                        &EventMetadata::default(),
                    )
                    .await
                    .unwrap();
                    deliver(&pool, saga, &delivery).await;
                    assert_eq!(
                        outcome(&pool, order, 1, &[(order, "ORDER")]).await,
                        expected,
                        "delivered: {:?}",
                        delivery.iter().map(|e| &e.ty).collect::<Vec<_>>()
                    );
                }
            },
        )
        .await;
        assert!(runs >= 2);
    }
    database.drop().await;
}

/// A fresh inventory database with one product (`sku`, price 300, 10 units): the
/// database, its store, the product bus and the product's id.
async fn inventory_with_product(
    backend: Dialect,
    sku: &str,
) -> (
    Database,
    EventStore,
    CommandBus<shop_inventory::product::Product>,
    Uuid,
) {
    let database = Database::fresh(
        backend,
        "inventory",
        include_str!("../command-services/inventory/sql/inventory.sql"),
    )
    .await;
    let store = shop_inventory::service::event_store(database.pool.clone());
    let products = CommandBus::<shop_inventory::product::Product>::new(store.clone(), ());
    let product = Uuid::now_v7();
    products
        .execute(
            &product.to_string(),
            shop_inventory::product::ProductCommand::AddProduct {
                product_id: product,
                sku: sku.into(),
                name: "Tea".into(),
                price: 300,
                stock: 10,
                category: shop_schemas::inventory::UNCATEGORISED.into(),
            },
            &EventMetadata::default(),
        )
        .await
        .unwrap();
    (database, store, products, product)
}

/// SPEC §5.1, §5.3, §5.5: placed → reserved, confirmed → committed, cancelled → released
/// from sold; each event twice: each step once, and the stock is back where it started.
async fn inventory_moves_each_order_s_units_once(backend: Dialect) {
    let (database, store, _, product) = inventory_with_product(backend, "TEA-1").await;
    let pool = database.pool.clone();
    let handler = shop_inventory::reactions::ReserveStock {
        bus: Arc::new(CommandBus::new(store, ())),
    };
    let customer = Uuid::now_v7();
    for_every_delivery(
        || {
            let order = Uuid::now_v7();
            let events = vec![
                cloud_event(
                    Service::Orders,
                    order,
                    order_placed(order, customer, product, 600),
                ),
                cloud_event(
                    Service::Orders,
                    order,
                    OrderEvent::OrderConfirmed(OrderConfirmed { order_id: order }),
                ),
                cloud_event(
                    Service::Orders,
                    order,
                    order_cancelled(order, "customer_request"),
                ),
            ];
            (order, events)
        },
        |order, delivery| {
            let (handler, pool) = (&handler, pool.clone());
            async move {
                deliver(&pool, handler, &delivery).await;
                let lines = r#""lines":[{"product_id":"PRODUCT","quantity":2}]"#;
                assert_eq!(
                    outcome(&pool, order, 0, &[(order, "ORDER"), (product, "PRODUCT")]).await,
                    [
                        format!(r#"StockReserved {{{lines},"order_id":"ORDER"}}"#),
                        format!(r#"StockCommitted {{{lines},"order_id":"ORDER"}}"#),
                        format!(
                            r#"StockReleased {{{lines},"order_id":"ORDER","released_from":"sold"}}"#
                        ),
                    ]
                );
                let stock: (i64, i64, i64) = sql::query_as(
                    "SELECT available, reserved, sold FROM stock WHERE product_id = $1",
                )
                .bind(product)
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(stock, (10, 0, 0));
            }
        },
    )
    .await;
    database.drop().await;
}

/// SPEC §5.2, §5.5, §5.7: placed and reserved in either order, each twice → one charge;
/// with a cancellation anywhere after the placement → the net charge is zero (refunded
/// when charged first, never charged when the cancellation came first).
async fn payments_charge_once_and_refund_what_a_cancelled_order_paid(backend: Dialect) {
    let database = Database::fresh(
        backend,
        "payments",
        include_str!("../command-services/payments/sql/payments.sql"),
    )
    .await;
    let pool = database.pool.clone();
    let bus = Arc::new(CommandBus::<shop_payments::wallet::Wallet>::new(
        EventStore::new(pool.clone()),
        (),
    ));
    let handler = shop_payments::reactions::OrderPayments { bus: bus.clone() };
    let customer = Uuid::now_v7();
    bus.execute(
        &customer.to_string(),
        shop_payments::wallet::WalletCommand::Deposit {
            customer_id: customer,
            amount: 1_000_000,
        },
        &EventMetadata::default(),
    )
    .await
    .unwrap();
    let product = Uuid::now_v7();
    let net_charge = |order: Uuid| {
        let pool = pool.clone();
        async move {
            let (mut completed, mut refunded, mut net) = (0, 0, 0);
            for (event_type, amount) in money_events(&pool, Some(order)).await {
                match event_type.as_str() {
                    "PaymentCompleted" => (completed, net) = (completed + 1, net + amount),
                    "PaymentRefunded" => (refunded, net) = (refunded + 1, net - amount),
                    _ => {}
                }
            }
            (completed, refunded, net)
        }
    };

    let mut charged = 0;
    let refunds = std::cell::Cell::new(0);
    for_every_delivery(
        || {
            let order = Uuid::now_v7();
            let events = vec![
                cloud_event(
                    Service::Orders,
                    order,
                    order_placed(order, customer, product, 600),
                ),
                cloud_event(Service::Inventory, order, stock_reserved(order, product)),
            ];
            (order, events)
        },
        |order, delivery| {
            let (handler, net_charge) = (&handler, &net_charge);
            charged += 600;
            let pool = pool.clone();
            async move {
                deliver(&pool, handler, &delivery).await;
                assert_eq!(net_charge(order).await, (1, 0, 600));
            }
        },
    )
    .await;
    for_every_delivery(
        || {
            let order = Uuid::now_v7();
            let events = vec![
                cloud_event(
                    Service::Orders,
                    order,
                    order_placed(order, customer, product, 600),
                ),
                cloud_event(Service::Inventory, order, stock_reserved(order, product)),
                cloud_event(Service::Orders, order, order_cancelled(order, "timeout")),
            ];
            (order, events)
        },
        |order, delivery| {
            let (handler, net_charge, pool, refunds) =
                (&handler, &net_charge, pool.clone(), &refunds);
            async move {
                deliver(&pool, handler, &delivery).await;
                let (completed, refunded, net) = net_charge(order).await;
                assert_eq!(net, 0, "a cancelled order's net charge");
                assert!(completed <= 1 && refunded == completed);
                refunds.set(refunds.get() + refunded);
            }
        },
    )
    .await;
    // Reserved before the cancellation: charged, then refunded (the late-payment case).
    assert!(refunds.get() > 0, "no run charged before the cancellation");
    let balance: i64 = money_events(&pool, None)
        .await
        .iter()
        .map(|(event_type, amount)| match event_type.as_str() {
            "PaymentCompleted" => -amount,
            _ => *amount,
        })
        .sum();
    assert_eq!(balance, 1_000_000 - charged);
    database.drop().await;
}

/// The payments store's money events (type, amount), of one order or of all.
async fn money_events(pool: &Pool, order: Option<Uuid>) -> Vec<(String, i64)> {
    let rows: Vec<(String, serde_json::Value)> = sql::query_as(
        "SELECT event_type, data FROM events WHERE event_type IN ('FundsDeposited', 'PaymentCompleted', 'PaymentRefunded') ORDER BY position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .filter(|(_, data)| order.is_none_or(|o| data["order_id"] == o.to_string()))
        .map(|(event_type, data)| (event_type, data["amount"].as_i64().unwrap()))
        .collect()
}

/// SPEC §5.4: the customer's country (customers topic) and the confirmed order (orders
/// topic) in any order, each twice → one `ShipmentScheduled`, or one `ShipmentFailed`
/// for a country shipments do not go to.
async fn shipping_schedules_each_confirmed_order_once(backend: Dialect) {
    let database = Database::fresh(
        backend,
        "shipping",
        include_str!("../command-services/shipping/sql/shipping.sql"),
    )
    .await;
    let pool = database.pool.clone();
    let handler = shop_shipping::reactions::ScheduleShipments {
        bus: Arc::new(CommandBus::new(
            EventStore::new(pool.clone()),
            shop_shipping::shipment::SupportedCountries::default(),
        )),
    };
    let product = Uuid::now_v7();
    for (country, expected) in [
        (
            "JP",
            r#"ShipmentScheduled {"country":"JP","customer_id":"CUSTOMER","order_id":"ORDER"}"#,
        ),
        (
            "BR",
            r#"ShipmentFailed {"country":"BR","customer_id":"CUSTOMER","order_id":"ORDER","reason":"unsupported_country"}"#,
        ),
    ] {
        let customers = std::cell::RefCell::new(Vec::new());
        for_every_delivery(
            || {
                let (order, customer) = (Uuid::now_v7(), Uuid::now_v7());
                customers.borrow_mut().push(customer);
                let registered = CustomerEvent::CustomerRegistered(CustomerRegistered {
                    customer_id: customer,
                    name: "Hanako".into(),
                    email: format!("{customer}@example.com"),
                    address: Address {
                        line1: "1-2-3 Shibuya".into(),
                        city: "Tokyo".into(),
                        postal_code: "150-0002".into(),
                        country: country.into(),
                    },
                });
                let events = vec![
                    cloud_event(Service::Customers, customer, registered),
                    cloud_event(
                        Service::Orders,
                        order,
                        order_placed(order, customer, product, 600),
                    ),
                    cloud_event(
                        Service::Orders,
                        order,
                        OrderEvent::OrderConfirmed(OrderConfirmed { order_id: order }),
                    ),
                ];
                (order, events)
            },
            |order, delivery| {
                let (handler, pool) = (&handler, pool.clone());
                let customer = *customers.borrow().last().unwrap();
                async move {
                    deliver(&pool, handler, &delivery).await;
                    assert_eq!(
                        outcome(&pool, order, 0, &[(order, "ORDER"), (customer, "CUSTOMER")]).await,
                        [expected]
                    );
                }
            },
        )
        .await;
    }
    database.drop().await;
}

/// Every kind of stock move lands in inventory's `stock` table: a restock, a reservation,
/// a commit, a release from reserved and one from sold. On PostgreSQL the restock is
/// written by the append statement itself (`InlineHook`), the other moves (and every move
/// on SQLite) by the hook's statements; the table reads the same after each step.
async fn the_stock_table_follows_every_move(backend: Dialect) {
    let (database, store, products, product) = inventory_with_product(backend, "TEA-2").await;
    let pool = database.pool.clone();
    let metadata = EventMetadata::default();
    let stock = || {
        let pool = pool.clone();
        async move {
            sql::query_as::<(i64, i64, i64)>(
                "SELECT available, reserved, sold FROM stock WHERE product_id = $1",
            )
            .bind(product)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(stock().await, (10, 0, 0), "added");
    products
        .execute(
            &product.to_string(),
            shop_inventory::product::ProductCommand::Restock { quantity: 5 },
            &metadata,
        )
        .await
        .unwrap();
    assert_eq!(stock().await, (15, 0, 0), "restocked");

    let handler = shop_inventory::reactions::ReserveStock {
        bus: Arc::new(CommandBus::new(store, ())),
    };
    let customer = Uuid::now_v7();
    let (kept, dropped) = (Uuid::now_v7(), Uuid::now_v7());
    let event = |order: Uuid, event: OrderEvent| cloud_event(Service::Orders, order, event);
    let steps = [
        (
            event(kept, order_placed(kept, customer, product, 600)),
            (13, 2, 0),
            "reserved",
        ),
        (
            event(
                kept,
                OrderEvent::OrderConfirmed(OrderConfirmed { order_id: kept }),
            ),
            (13, 0, 2),
            "committed",
        ),
        (
            event(dropped, order_placed(dropped, customer, product, 600)),
            (11, 2, 2),
            "reserved again",
        ),
        (
            event(dropped, order_cancelled(dropped, "customer_request")),
            (13, 0, 2),
            "released from reserved",
        ),
        (
            event(kept, order_cancelled(kept, "customer_request")),
            (15, 0, 0),
            "released from sold",
        ),
    ];
    for (event, expected, step) in steps {
        deliver(&pool, &handler, &[event]).await;
        assert_eq!(stock().await, expected, "{step}");
    }
    database.drop().await;
}

/// On PostgreSQL the reservation consumer takes a batch at once (one lock of every
/// placed order's stock up front): a batch of placements, a cancellation that puts units
/// back before later placements, a shortage and a commit decides every order as the
/// events applied one by one do, and leaves the same stock.
#[tokio::test]
async fn a_reservation_batch_decides_as_event_by_event() {
    let orders: Vec<Uuid> = (0..7).map(|_| Uuid::now_v7()).collect();
    let customer = Uuid::now_v7();
    let mut results = Vec::new();
    for batched in [false, true] {
        let (database, store, _, product) =
            inventory_with_product(Dialect::Postgres, "TEA-B").await;
        let pool = database.pool.clone();
        let handler = shop_inventory::reactions::ReserveStock {
            bus: Arc::new(CommandBus::new(store, ())),
        };
        let placed = |i: usize| {
            cloud_event(
                Service::Orders,
                orders[i],
                order_placed(orders[i], customer, product, 600),
            )
        };
        // 10 units, 2 an order: the cancellation frees two, the seventh placement finds none.
        let events = vec![
            placed(0),
            placed(1),
            cloud_event(
                Service::Orders,
                orders[0],
                order_cancelled(orders[0], "customer_request"),
            ),
            placed(2),
            placed(3),
            placed(4),
            placed(5),
            placed(6),
            cloud_event(
                Service::Orders,
                orders[1],
                OrderEvent::OrderConfirmed(OrderConfirmed {
                    order_id: orders[1],
                }),
            ),
        ];
        if batched {
            assert!(handler.batches());
            let batch: Vec<&CloudEvent> = events.iter().collect();
            let mut tx = pool.begin().await.unwrap();
            handler.handle_batch(&mut tx, &batch).await.unwrap();
            tx.commit().await.unwrap();
        } else {
            deliver_each(&pool, &handler, &events).await;
        }
        let mut seen = Vec::new();
        for (i, order) in orders.iter().enumerate() {
            let name = format!("ORDER{i}");
            seen.push(outcome(&pool, *order, 0, &[(*order, &name), (product, "PRODUCT")]).await);
        }
        let stock: (i64, i64, i64) =
            sql::query_as("SELECT available, reserved, sold FROM stock WHERE product_id = $1")
                .bind(product)
                .fetch_one(&pool)
                .await
                .unwrap();
        results.push((seen, stock));
        database.drop().await;
    }
    let (one_by_one, batch) = (&results[0], &results[1]);
    assert_eq!(one_by_one.1, (0, 8, 2), "{one_by_one:?}");
    assert!(
        one_by_one.0[6][0].starts_with("StockReservationRejected"),
        "{one_by_one:?}"
    );
    assert_eq!(batch, one_by_one);
}
