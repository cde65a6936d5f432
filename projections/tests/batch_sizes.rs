//! Each projector has one handler, which takes a batch (the runner's single event, on
//! SQLite or after a failed batch, is a batch of one). Batches of any size write the same
//! read model, for a history that touches every table: new rows, updates folded per key,
//! deltas summed per key, statuses and their reasons — on both backends.

use chrono::{SubsecRound, Utc};
use serde::Serialize;
use shop_eventing::store::StoredEvent;
use shop_projections::PROJECTIONS;
use shop_schemas::{customers, inventory, orders, payments, shipping};
use shop_schemas::{CloudEvent, EventMetadata, Service};
use shop_sql::db::{self, DatabaseConfig};
use shop_sql::{self as sql, Dialect, Pool};
use std::collections::HashMap;
use uuid::Uuid;

struct History {
    events: Vec<CloudEvent>,
    sequences: HashMap<Uuid, i64>,
}

impl History {
    fn push<E: Serialize>(&mut self, service: Service, aggregate_id: Uuid, event: E) {
        let sequence = self.sequences.entry(aggregate_id).or_default();
        *sequence += 1;
        let (event_type, data) =
            shop_schemas::split_event(serde_json::to_value(event).unwrap()).unwrap();
        let event_version = shop_schemas::event_type(service, &event_type)
            .map_or(1, |t| t.version)
            .to_string();
        let stored = StoredEvent {
            position: 0,
            aggregate_type: "any".into(),
            aggregate_id: aggregate_id.to_string(),
            sequence: *sequence,
            event_id: Uuid::now_v7(),
            event_type,
            event_version,
            data,
            metadata: EventMetadata::default(),
            recorded_at: Utc::now().trunc_subsecs(6),
        };
        self.events.push(stored.to_cloud_event(service));
    }
}

fn history() -> Vec<CloudEvent> {
    use inventory::InventoryEvent as I;
    use orders::OrderEvent as O;
    use payments::PaymentEvent as P;
    let mut h = History {
        events: Vec::new(),
        sequences: HashMap::new(),
    };
    let (c1, c2) = (Uuid::now_v7(), Uuid::now_v7());
    let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
    let (o1, o2) = (Uuid::now_v7(), Uuid::now_v7());
    for (c, name) in [(c1, "Ada"), (c2, "Bo")] {
        h.push(
            Service::Customers,
            c,
            customers::CustomerEvent::CustomerRegistered(customers::CustomerRegistered {
                customer_id: c,
                name: name.into(),
                email: format!("{name}@example.com"),
                address: customers::Address {
                    line1: "1 Street".into(),
                    city: "Town".into(),
                    postal_code: "1000".into(),
                    country: "NL".into(),
                },
            }),
        );
        h.push(
            Service::Payments,
            c,
            P::FundsDeposited(payments::FundsDeposited {
                customer_id: c,
                amount: 10_000,
            }),
        );
    }
    for (p, sku) in [(p1, "A-1"), (p2, "B-2")] {
        h.push(
            Service::Inventory,
            p,
            I::ProductAdded(inventory::ProductAdded {
                product_id: p,
                sku: sku.into(),
                name: sku.into(),
                price: 300,
                stock: 10,
                category: inventory::UNCATEGORISED.into(),
            }),
        );
    }
    h.push(
        Service::Inventory,
        p1,
        I::ProductRestocked(inventory::ProductRestocked {
            product_id: p1,
            quantity: 5,
        }),
    );
    h.push(
        Service::Inventory,
        p1,
        I::ProductPriceChanged(inventory::ProductPriceChanged {
            product_id: p1,
            price: 350,
        }),
    );
    h.push(
        Service::Inventory,
        p1,
        I::ProductRestocked(inventory::ProductRestocked {
            product_id: p1,
            quantity: 2,
        }),
    );
    // o1: confirmed, shipped, delivered; o2: reserved, then cancelled and released.
    for (o, c) in [(o1, c1), (o2, c2)] {
        h.push(
            Service::Orders,
            o,
            O::OrderPlaced(orders::OrderPlaced {
                order_id: o,
                customer_id: c,
                lines: vec![
                    orders::OrderLine {
                        product_id: p1,
                        quantity: 2,
                        unit_price: 350,
                    },
                    orders::OrderLine {
                        product_id: p2,
                        quantity: 1,
                        unit_price: 300,
                    },
                ],
                total: 1000,
                currency: orders::DEPLOYMENT_CURRENCY.into(),
            }),
        );
        let lines = vec![
            inventory::StockLine {
                product_id: p1,
                quantity: 2,
            },
            inventory::StockLine {
                product_id: p2,
                quantity: 1,
            },
        ];
        h.push(
            Service::Inventory,
            o,
            I::StockReserved(inventory::StockReserved {
                order_id: o,
                lines: lines.clone(),
            }),
        );
        if o == o1 {
            h.push(
                Service::Payments,
                c,
                P::PaymentCompleted(payments::PaymentCompleted {
                    order_id: o,
                    customer_id: c,
                    amount: 1000,
                }),
            );
            h.push(
                Service::Inventory,
                o,
                I::StockCommitted(inventory::StockCommitted { order_id: o, lines }),
            );
            h.push(
                Service::Orders,
                o,
                O::OrderConfirmed(orders::OrderConfirmed { order_id: o }),
            );
            h.push(
                Service::Shipping,
                o,
                shipping::ShippingEvent::ShipmentScheduled(shipping::ShipmentScheduled {
                    order_id: o,
                    customer_id: c,
                    country: "NL".into(),
                }),
            );
            h.push(
                Service::Orders,
                o,
                O::OrderShipped(orders::OrderShipped { order_id: o }),
            );
            h.push(
                Service::Orders,
                o,
                O::OrderDelivered(orders::OrderDelivered { order_id: o }),
            );
        } else {
            h.push(
                Service::Orders,
                o,
                O::OrderCancelled(orders::OrderCancelled {
                    order_id: o,
                    reason: "customer_request".into(),
                }),
            );
            h.push(
                Service::Inventory,
                o,
                I::StockReleased(inventory::StockReleased {
                    order_id: o,
                    lines,
                    released_from: inventory::RELEASED_FROM_RESERVED.into(),
                }),
            );
            h.push(
                Service::Payments,
                c,
                P::PaymentRefunded(payments::PaymentRefunded {
                    order_id: o,
                    customer_id: c,
                    amount: 0,
                }),
            );
        }
    }
    h.events
}

shop_sql::on_both_backends!(
    batches_of_any_size_write_the_same_read_model,
    an_orders_batch_over_rows_already_there_fails_and_the_event_path_skips_them,
);

/// A read-model database of its own for one test.
struct Database {
    pool: Pool,
    config: DatabaseConfig,
    name: &'static str,
}

impl Database {
    async fn fresh(backend: Dialect, name: &'static str) -> Self {
        let instance = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let config = DatabaseConfig {
            server_url: match backend {
                Dialect::Postgres => std::env::var("SHOP_TEST_DATABASE_URL").unwrap_or_else(|_| {
                    "postgres://postgres:postgres@127.0.0.1:5432/postgres".into()
                }),
                Dialect::Sqlite => String::new(),
            },
            sqlite_dir: match backend {
                Dialect::Postgres => None,
                Dialect::Sqlite => Some(std::env::temp_dir().join(format!("shop-{instance}"))),
            },
            instance,
            max_connections: 2,
        };
        let schemas: Vec<&str> = PROJECTIONS.iter().map(|p| p.schema).collect();
        let pool = db::open(&config, name, &schemas).await.unwrap_or_else(|e| {
            panic!(
                "{e}\n(start PostgreSQL with `scripts/infra.sh up`, or set SHOP_TEST_DATABASE_URL)"
            )
        });
        Database { pool, config, name }
    }

    async fn drop(self) {
        self.pool.close().await;
        match &self.config.sqlite_dir {
            Some(dir) => std::fs::remove_dir_all(dir).unwrap(),
            None => db::drop_database(
                &self.config.server_url,
                &self.config.database_name(self.name),
            )
            .await
            .unwrap(),
        }
    }
}

/// Every row of every projection table, as JSON text, sorted.
async fn rows(pool: &Pool) -> Vec<String> {
    let mut all = Vec::new();
    for info in PROJECTIONS {
        for table in info.tables {
            let statement = match pool.dialect() {
                Dialect::Postgres => {
                    format!("SELECT '{table} ' || row_to_json(t)::text FROM {table} t")
                }
                Dialect::Sqlite => {
                    let columns: Vec<String> = sql::query_scalar(&format!(
                        "SELECT name FROM pragma_table_info('{table}')"
                    ))
                    .fetch_all(pool)
                    .await
                    .unwrap();
                    let pairs: Vec<String> =
                        columns.iter().map(|c| format!("'{c}', {c}")).collect();
                    format!(
                        "SELECT '{table} ' || json_object({}) FROM {table}",
                        pairs.join(", ")
                    )
                }
            };
            let mut rows: Vec<String> =
                sql::query_scalar(&statement).fetch_all(pool).await.unwrap();
            rows.sort();
            all.extend(rows);
        }
    }
    all
}

/// Applies each projection's events in batches of `size` (one transaction each); size 1
/// goes through `handle`, the runner's single event.
async fn project(pool: &Pool, events: &[CloudEvent], size: usize) {
    for info in PROJECTIONS {
        let handler = shop_projections::handler(info);
        assert!(handler.batches(), "{} writes batches", info.name);
        let mine: Vec<&CloudEvent> = events
            .iter()
            .filter(|e| e.service().is_some_and(|s| info.sources.contains(&s)))
            .collect();
        for batch in mine.chunks(size) {
            let mut tx = pool.begin().await.unwrap();
            if let [event] = batch {
                handler.handle(&mut tx, event).await.unwrap();
            } else {
                handler.handle_batch(&mut tx, batch).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
    }
}

async fn batches_of_any_size_write_the_same_read_model(backend: Dialect) {
    let events = history();
    let one = Database::fresh(backend, "each").await;
    project(&one.pool, &events, 1).await;
    let expected = rows(&one.pool).await;
    assert!(
        expected.len() > 15,
        "the history fills every table: {expected:#?}"
    );
    one.drop().await;
    // Two events, three, about half (the second batch updates rows the first inserted),
    // everything at once.
    for size in [2, 3, events.len() / 2 + 1, events.len()] {
        let batched = Database::fresh(backend, "batch").await;
        project(&batched.pool, &events, size).await;
        assert_eq!(rows(&batched.pool).await, expected, "batches of {size}");
        batched.drop().await;
    }
}

/// The orders projection's batch inserts plainly (the runner hands it only events not
/// applied before): a row already there fails the batch, and the event-by-event path the
/// runner then takes (a batch of one that skips what exists) writes nothing twice.
async fn an_orders_batch_over_rows_already_there_fails_and_the_event_path_skips_them(
    backend: Dialect,
) {
    let info = shop_projections::versions::projection("orders").unwrap();
    let handler = shop_projections::handler(info);
    let events = history();
    let mine: Vec<&CloudEvent> = events
        .iter()
        .filter(|e| e.service().is_some_and(|s| info.sources.contains(&s)))
        .collect();
    let database = Database::fresh(backend, "again").await;
    let pool = &database.pool;
    let mut tx = pool.begin().await.unwrap();
    handler.handle_batch(&mut tx, &mine).await.unwrap();
    tx.commit().await.unwrap();
    let applied = rows(pool).await;

    let mut tx = pool.begin().await.unwrap();
    assert!(handler.handle_batch(&mut tx, &mine).await.is_err());
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    for event in &mine {
        handler.handle(&mut tx, event).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(rows(pool).await, applied);
    database.drop().await;
}
