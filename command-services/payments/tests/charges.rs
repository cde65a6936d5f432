//! The charge reaction against a real PostgreSQL database, fed directly: the two facts it
//! waits for arrive in either order, each twice — one charge, always.

use std::sync::Arc;

use shop_eventing::command::CommandBus;
use shop_eventing::consumer::EventHandler;
use shop_eventing::db::{self, DatabaseConfig};
use shop_eventing::store::PgEventStore;
use shop_payments::reactions::OrderPayments;
use shop_payments::wallet::{Wallet, WalletCommand};
use shop_schemas::inventory::{InventoryEvent, StockLine, StockReserved};
use shop_schemas::orders::{OrderEvent, OrderLine, OrderPlaced};
use shop_schemas::{CloudEvent, EventMetadata, Service};
use uuid::Uuid;

fn cloud_event(service: Service, name: &str, subject: Uuid, data: serde_json::Value) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: Uuid::now_v7(),
        source: service.source(),
        ty: format!("shop.{}.{name}", service.name()),
        subject: subject.to_string(),
        time: chrono::Utc::now(),
        dataschema: shop_schemas::dataschema(service, name, 1),
        datacontenttype: "application/json".into(),
        sequence: 1,
        correlationid: subject.to_string(),
        causationid: String::new(),
        traceparent: String::new(),
        data,
    }
}

fn data<T: serde::Serialize>(event: T) -> serde_json::Value {
    shop_schemas::split_event(serde_json::to_value(event).unwrap())
        .unwrap()
        .1
}

#[tokio::test]
async fn placed_and_reserved_in_any_order_and_twice_charge_once() {
    let config = DatabaseConfig {
        server_url: std::env::var("SHOP_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into()),
        instance: format!("t{}", &Uuid::new_v4().simple().to_string()[..12]),
        max_connections: 4,
    };
    let schema = [
        shop_eventing::store::SCHEMA,
        shop_eventing::consumer::SCHEMA,
        include_str!("../sql/payments.sql"),
    ];
    let pool = db::open(&config, "payments", &schema)
        .await
        .unwrap_or_else(|e| panic!("{e}\n(start PostgreSQL with `scripts/infra.sh up`)"));
    let bus = Arc::new(CommandBus::<Wallet>::new(
        PgEventStore::new(pool.clone()),
        (),
    ));
    let handler = OrderPayments { bus: bus.clone() };
    let customer = Uuid::now_v7();
    bus.execute(
        &customer.to_string(),
        WalletCommand::Deposit {
            customer_id: customer,
            amount: 1000,
        },
        &EventMetadata::default(),
    )
    .await
    .unwrap();

    for reserved_first in [true, false] {
        let order = Uuid::now_v7();
        let product = Uuid::now_v7();
        let placed = cloud_event(
            Service::Orders,
            "OrderPlaced",
            order,
            data(OrderEvent::OrderPlaced(OrderPlaced {
                order_id: order,
                customer_id: customer,
                lines: vec![OrderLine {
                    product_id: product,
                    quantity: 1,
                    unit_price: 300,
                }],
                total: 300,
            })),
        );
        let reserved = cloud_event(
            Service::Inventory,
            "StockReserved",
            order,
            data(InventoryEvent::StockReserved(StockReserved {
                order_id: order,
                lines: vec![StockLine {
                    product_id: product,
                    quantity: 1,
                }],
            })),
        );
        let sequence = if reserved_first {
            [&reserved, &reserved, &placed, &placed]
        } else {
            [&placed, &reserved, &placed, &reserved]
        };
        for event in sequence {
            let mut tx = pool.begin().await.unwrap();
            handler.handle(&mut tx, event).await.unwrap();
            tx.commit().await.unwrap();
        }
        let charges: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'PaymentCompleted' AND data->>'order_id' = $1")
            .bind(order.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(charges, 1, "reserved first: {reserved_first}");
    }
    let balance: i64 = sqlx::query_scalar(
        "SELECT sum(CASE WHEN event_type = 'FundsDeposited' THEN (data->>'amount')::bigint ELSE -(data->>'amount')::bigint END)::bigint
         FROM events WHERE event_type IN ('FundsDeposited', 'PaymentCompleted')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        balance, 400,
        "1000 deposited, two orders of 300 charged once each"
    );

    pool.close().await;
    db::drop_database(&config.server_url, &config.database_name("payments"))
        .await
        .unwrap();
}
