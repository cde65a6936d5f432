//! The replay stage of `shop bench`: a synthetic order history on every service's topic,
//! then every projection filled from offset 0 by the projector as `shop serve projector`
//! runs it (its version supervisor): first into a fresh read-model database (version 1,
//! live from the start), then rebuilt as `shop replay all` does (version 2 of each,
//! filled beside the live one and switched live once caught up) — against plain
//! consumers that only read the same topics (one per projection, concurrently), and
//! against plain consumers that also write one row per event ([`write_floor`]).
//!
//! The history is what the saga writes for delivered orders: per order 9 events on four
//! topics (placed, reserved, paid, committed, confirmed, scheduled, shipped, delivered
//! twice), after the customers (registered, deposit) and products (added) they use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use shop_eventing::platform::Platform;
use shop_eventing::store::StoredEvent;
use shop_log::{OutgoingRecord, StartFrom};
use shop_schemas::{customers, inventory, orders, payments, shipping};
use shop_schemas::{EventMetadata, Service};
use shop_sql::{Pool, RowSet};
use uuid::Uuid;

/// Replay throughput of the projector and of the plain consumers, in events per second.
pub struct Replay {
    pub events: usize,
    /// A rebuild of every projection.
    pub rate: f64,
    /// The first fill of a fresh read-model database.
    pub first_fill_rate: f64,
    pub baseline_rate: f64,
    /// Plain consumers that also write one row per event ([`write_floor`]).
    pub write_floor_rate: f64,
}

/// Builds and publishes the history (`orders` orders), then measures.
///
/// # Errors
/// Kafka or PostgreSQL fail, or the projector does not catch up within ten minutes.
pub async fn run(platform: &Platform, orders: usize) -> anyhow::Result<Replay> {
    // Topics of its own: the history and nothing else; its projector stops with it.
    let mut platform = platform.clone();
    platform.topic_prefix = format!("{}replay.", platform.topic_prefix);
    platform.shutdown = platform.shutdown.child_token();
    platform
        .log
        .ensure_topics(&crate::system::all_topics(&platform.topic_prefix))
        .await?;
    measure(&platform, orders).await
}

/// The topics of the replay stage (`shop bench` deletes them afterwards).
pub fn topics(prefix: &str) -> Vec<String> {
    crate::system::all_topics(&format!("{prefix}replay."))
}

async fn measure(platform: &Platform, orders: usize) -> anyhow::Result<Replay> {
    let mut history = History::new(&platform.topic_prefix);
    history.orders(orders);
    let mut per_topic: HashMap<String, usize> = HashMap::new();
    for record in &history.records {
        *per_topic.entry(record.topic.clone()).or_default() += 1;
    }
    for chunk in history.records.chunks(5_000) {
        platform.log.publish(chunk.to_vec()).await?;
    }
    // What each projection reads: the records of its sources' topics.
    let reads: Vec<(&'static str, Vec<String>, usize)> = shop_projections::PROJECTIONS
        .iter()
        .map(|info| {
            let topics: Vec<String> = info
                .sources
                .iter()
                .map(|s| s.topic(&platform.topic_prefix))
                .collect();
            let count = topics
                .iter()
                .map(|t| per_topic.get(t).copied().unwrap_or(0))
                .sum();
            (info.consumer, topics, count)
        })
        .collect();
    let events: usize = reads.iter().map(|(_, _, n)| n).sum();

    // The projector: every projection's version 1, from offset 0, on a read-model
    // database that exists (a rebuild does not create one; the plain consumers have
    // none to create).
    let read = shop_projections::open_read_database(platform).await?;
    let started = Instant::now();
    let projector = shop_projections::start(platform).await?;
    let counts: Vec<(String, usize)> = reads
        .iter()
        .map(|(consumer, _, count)| (consumer.to_string(), *count))
        .collect();
    caught_up(&read, &counts).await?;
    let first_fill_rate = events as f64 / started.elapsed().as_secs_f64();

    // Then a rebuild of every projection: version 2 of each from offset 0, beside the
    // live version 1, until caught up.
    let started = Instant::now();
    let mut counts = Vec::new();
    for (info, (_, _, count)) in shop_projections::PROJECTIONS.iter().zip(&reads) {
        let version = shop_projections::versions::request_rebuild(&read, info.name).await?;
        counts.push((
            shop_projections::versions::consumer_name(info, version),
            *count,
        ));
    }
    caught_up(&read, &counts).await?;
    let rate = events as f64 / started.elapsed().as_secs_f64();
    platform.shutdown.cancel();
    for task in projector.tasks {
        task.await.context("the projector panicked")?;
    }
    let write_floor_rate = write_floor(platform, &read, &reads).await?;
    read.close().await;

    // Baseline: one consumer per projection over the same topics, reading only.
    let started = Instant::now();
    let mut readers = Vec::new();
    for (consumer, topics, count) in reads {
        let log = platform.log();
        let group = format!("{}.bench-{consumer}", platform.database.instance);
        let batch = platform.consumer.batch_size;
        readers.push(tokio::spawn(async move {
            let mut subscription = log.subscribe(&group, &topics, StartFrom::Beginning).await?;
            let mut read = 0;
            while read < count {
                read += subscription
                    .poll(batch, Duration::from_millis(500))
                    .await?
                    .len();
            }
            anyhow::Ok(())
        }));
    }
    for reader in readers {
        reader.await.context("reader panicked")??;
    }
    let baseline_rate = events as f64 / started.elapsed().as_secs_f64();
    Ok(Replay {
        events,
        rate,
        first_fill_rate,
        baseline_rate,
        write_floor_rate,
    })
}

/// The least any projection writes, as fast as plain code can: per projection, as many
/// plain consumers as a rebuild has members (one group) read its topics from offset 0,
/// parse each record's CloudEvent and insert one row per event (its id, subject, type
/// and time; a primary key and no other index, a record read twice written once) into a
/// table of their own, one transaction per poll, committed as a projection's are (without
/// waiting for the write-ahead log's flush). Events per second over all projections, run
/// concurrently.
async fn write_floor(
    platform: &Platform,
    read: &Pool,
    reads: &[(&'static str, Vec<String>, usize)],
) -> anyhow::Result<f64> {
    const COLUMNS: [(&str, &str); 4] = [
        ("event_id", "UUID"),
        ("subject", "TEXT"),
        ("event_type", "TEXT"),
        ("at", "TIMESTAMPTZ"),
    ];
    let members = platform.consumer.rebuild_members.max(1);
    let mut tables = Vec::new();
    for (consumer, _, _) in reads {
        let table = format!("bench_floor_{}", consumer.replace('.', "_"));
        shop_sql::db::run_script(
            read,
            &format!(
                "CREATE TABLE {table} (event_id UUID PRIMARY KEY, subject TEXT NOT NULL,
                     event_type TEXT NOT NULL, at TIMESTAMPTZ NOT NULL)"
            ),
        )
        .await?;
        tables.push(table);
    }
    let started = Instant::now();
    let mut writers = Vec::new();
    for ((consumer, topics, count), table) in reads.iter().zip(tables) {
        let group = format!("{}.bench-floor-{consumer}", platform.database.instance);
        let written = Arc::new(AtomicUsize::new(0));
        for _ in 0..members {
            let (log, read, group, topics, table, written) = (
                platform.log(),
                read.clone(),
                group.clone(),
                topics.clone(),
                table.clone(),
                written.clone(),
            );
            let (count, batch) = (*count, platform.consumer.batch_size);
            writers.push(tokio::spawn(async move {
                let mut subscription = log.subscribe(&group, &topics, StartFrom::Beginning).await?;
                while written.load(Ordering::Relaxed) < count {
                    let records = subscription.poll(batch, Duration::from_millis(100)).await?;
                    if records.is_empty() {
                        continue;
                    }
                    let mut rows = RowSet::new(&COLUMNS);
                    for record in &records {
                        let event = record.cloud_event()?;
                        rows.push([
                            event.id.into(),
                            event.subject.as_str().into(),
                            event.event_name().into(),
                            event.time.into(),
                        ]);
                    }
                    let mut tx = read.begin().await?;
                    // A record read twice (a partition handed over before its first
                    // member got far) is written once; the count is of rows written.
                    let inserted = rows
                        .execute(&mut tx, Vec::new(), |r| {
                            format!(
                                "INSERT INTO {table} (event_id, subject, event_type, at)
                                 SELECT event_id, subject, event_type, at FROM {r} WHERE true
                                 ON CONFLICT DO NOTHING"
                            )
                        })
                        .await?;
                    tx.commit().await?;
                    written.fetch_add(inserted as usize, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }));
        }
    }
    for writer in writers {
        writer.await.context("writer panicked")??;
    }
    let events: usize = reads.iter().map(|(_, _, n)| n).sum();
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// Waits until each consumer has applied its count of events (ten minutes at most).
async fn caught_up(read: &shop_sql::Pool, counts: &[(String, usize)]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    for (consumer, count) in counts {
        loop {
            let progress = shop_eventing::checkpoint::progress(read, consumer).await?;
            if progress.events_applied >= *count as i64 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{consumer} applied {} of {count} events in ten minutes (last error: {:?})",
                progress.events_applied,
                progress.last_error
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

/// Records of a synthetic history, each aggregate's events in sequence.
struct History {
    prefix: String,
    records: Vec<OutgoingRecord>,
    sequences: HashMap<(Service, Uuid), i64>,
}

impl History {
    fn new(prefix: &str) -> Self {
        History {
            prefix: prefix.to_string(),
            records: Vec::new(),
            sequences: HashMap::new(),
        }
    }

    /// Appends one event of `aggregate_id`'s stream (next sequence) as its CloudEvent.
    fn push<E: Serialize>(
        &mut self,
        service: Service,
        aggregate_type: &str,
        aggregate_id: Uuid,
        event: E,
    ) {
        let sequence = self.sequences.entry((service, aggregate_id)).or_insert(0);
        *sequence += 1;
        let (event_type, data) =
            shop_schemas::split_event(serde_json::to_value(event).expect("events serialize"))
                .expect("an event enum value");
        let event_version = shop_schemas::event_type(service, &event_type)
            .map_or(1, |t| t.version)
            .to_string();
        let stored = StoredEvent {
            position: 0,
            aggregate_type: aggregate_type.to_string(),
            aggregate_id: aggregate_id.to_string(),
            sequence: *sequence,
            event_id: Uuid::now_v7(),
            event_type,
            event_version,
            data,
            metadata: EventMetadata::default(),
            recorded_at: Utc::now(),
        };
        self.records.push(OutgoingRecord::from_cloud_event(
            &service.topic(&self.prefix),
            &stored.to_cloud_event(service),
        ));
    }

    /// `count` delivered orders of one line each, by 1 customer per 10 orders, over 1
    /// product per 20 orders.
    fn orders(&mut self, count: usize) {
        let customers: Vec<Uuid> = (0..count.div_ceil(10)).map(|_| Uuid::now_v7()).collect();
        let products: Vec<Uuid> = (0..count.div_ceil(20)).map(|_| Uuid::now_v7()).collect();
        for (i, customer_id) in customers.iter().enumerate() {
            self.push(
                Service::Customers,
                "customer",
                *customer_id,
                customers::CustomerEvent::CustomerRegistered(customers::CustomerRegistered {
                    customer_id: *customer_id,
                    name: format!("Bench {i}"),
                    email: format!("bench{i}@example.com"),
                    address: customers::Address {
                        line1: "1 Bench Street".into(),
                        city: "Bench".into(),
                        postal_code: "12345".into(),
                        country: "NL".into(),
                    },
                }),
            );
            self.push(
                Service::Payments,
                "wallet",
                *customer_id,
                payments::PaymentEvent::FundsDeposited(payments::FundsDeposited {
                    customer_id: *customer_id,
                    amount: 1_000_000,
                }),
            );
        }
        for (i, product_id) in products.iter().enumerate() {
            self.push(
                Service::Inventory,
                "product",
                *product_id,
                inventory::InventoryEvent::ProductAdded(inventory::ProductAdded {
                    product_id: *product_id,
                    sku: format!("REPLAY-{i}"),
                    name: format!("Replay {i}"),
                    price: 250,
                    stock: 1_000_000,
                    category: inventory::UNCATEGORISED.into(),
                }),
            );
        }
        for i in 0..count {
            let order_id = Uuid::now_v7();
            let customer_id = customers[i % customers.len()];
            let product_id = products[i % products.len()];
            let lines = vec![inventory::StockLine {
                product_id,
                quantity: 2,
            }];
            self.push(
                Service::Orders,
                "order",
                order_id,
                orders::OrderEvent::OrderPlaced(orders::OrderPlaced {
                    order_id,
                    customer_id,
                    lines: vec![orders::OrderLine {
                        product_id,
                        quantity: 2,
                        unit_price: 250,
                    }],
                    total: 500,
                    currency: orders::DEPLOYMENT_CURRENCY.into(),
                }),
            );
            self.push(
                Service::Inventory,
                "reservation",
                order_id,
                inventory::InventoryEvent::StockReserved(inventory::StockReserved {
                    order_id,
                    lines: lines.clone(),
                }),
            );
            self.push(
                Service::Payments,
                "wallet",
                customer_id,
                payments::PaymentEvent::PaymentCompleted(payments::PaymentCompleted {
                    order_id,
                    customer_id,
                    amount: 500,
                }),
            );
            self.push(
                Service::Inventory,
                "reservation",
                order_id,
                inventory::InventoryEvent::StockCommitted(inventory::StockCommitted {
                    order_id,
                    lines,
                }),
            );
            self.push(
                Service::Orders,
                "order",
                order_id,
                orders::OrderEvent::OrderConfirmed(orders::OrderConfirmed { order_id }),
            );
            self.push(
                Service::Shipping,
                "shipment",
                order_id,
                shipping::ShippingEvent::ShipmentScheduled(shipping::ShipmentScheduled {
                    order_id,
                    customer_id,
                    country: "NL".into(),
                }),
            );
            self.push(
                Service::Orders,
                "order",
                order_id,
                orders::OrderEvent::OrderShipped(orders::OrderShipped { order_id }),
            );
            self.push(
                Service::Shipping,
                "shipment",
                order_id,
                shipping::ShippingEvent::ShipmentDelivered(shipping::ShipmentDelivered {
                    order_id,
                }),
            );
            self.push(
                Service::Orders,
                "order",
                order_id,
                orders::OrderEvent::OrderDelivered(orders::OrderDelivered { order_id }),
            );
        }
    }
}
