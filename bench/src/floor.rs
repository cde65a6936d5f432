//! The end-to-end stage's floor on Kafka + PostgreSQL: the saga's three hops to a
//! confirmation as plain code in the bench's process, at the same offered load, open loop.
//!
//! An order is a row inserted and committed (durably) in a database of its own and a
//! record on a topic. Each hop — the stock reservation, the payment, the confirmation —
//! is one plain consumer that inserts each record's row (with its topic, partition and
//! offset) in one durable transaction per poll and then publishes the next record
//! (acknowledged by the broker before the next poll); the confirmation's commit decides
//! the order. Each hop commits its positions to the log as the system's consumers do (once
//! a second, and when idle). Same Kafka client settings, same PostgreSQL, same batch size
//! as the system. What the system does beyond this (aggregates, dedup, outboxes and
//! relays, several consumers per topic, projections, HTTP) is what its figures cost over
//! these.
//!
//! Its cost per order ([`crate::cost`]) is the bench's process's CPU from the first order
//! placed to the last decision: the three hops and the placing of the orders (the insert
//! and the first record; the system's counterpart is its order service's `POST`), with
//! nothing else running in the process meanwhile.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use shop_eventing::platform::Platform;
use shop_log::{OutgoingRecord, Position, StartFrom};
use shop_sql::{self as sql, Pool, RowSet};
use uuid::Uuid;

use crate::cost::{self, Cost, StatementCounter};
use crate::e2e::{busy_percent, cpu_ticks, percentile, E2eRun, StepLatency};

/// The name the floor's rows carry in the end-to-end table and JSON.
pub const BACKEND: &str = "floor";

/// How often a hop commits its positions to the log: as the system's consumers do
/// (`shop_eventing::consumer`'s `LOG_COMMIT_INTERVAL`).
const LOG_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The hops' names, as the system's saga steps are named.
const HOPS: [&str; 3] = ["StockReserved", "PaymentCompleted", "OrderConfirmed"];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS floor_orders (order_id UUID PRIMARY KEY, placed_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS floor_steps (
    order_id UUID NOT NULL, step TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    position BIGINT NOT NULL, PRIMARY KEY (order_id, step));
";

const STEP_COLUMNS: [(&str, &str); 5] = [
    ("order_id", "UUID"),
    ("step", "TEXT"),
    ("topic", "TEXT"),
    ("partition", "INTEGER"),
    ("position", "BIGINT"),
];

/// What travels on the floor's topics: the order and the times (microseconds since the
/// epoch) of each step so far.
#[derive(serde::Serialize, serde::Deserialize)]
struct Carried {
    order_id: Uuid,
    times: Vec<i64>,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The floor's topics for one offered load (`shop bench` deletes them afterwards).
pub fn topics(prefix: &str, rate: f64) -> Vec<String> {
    (0..HOPS.len())
        .map(|hop| format!("{prefix}floor{rate:.0}.{hop}"))
        .collect()
}

/// Runs each offered load for `seconds` on the platform's Kafka and PostgreSQL;
/// `statements` counts SQL statements (or says why it cannot).
///
/// # Errors
/// Kafka or PostgreSQL fail.
pub async fn run(
    platform: &Platform,
    rates: &[f64],
    seconds: u64,
    statements: &Result<StatementCounter, String>,
) -> anyhow::Result<Vec<E2eRun>> {
    let pool = shop_sql::db::open(&platform.database, "floor", &[SCHEMA]).await?;
    let mut runs = Vec::new();
    for rate in rates {
        runs.push(one_load(platform, &pool, *rate, seconds, statements).await?);
    }
    pool.close().await;
    Ok(runs)
}

async fn one_load(
    platform: &Platform,
    pool: &Pool,
    rate: f64,
    seconds: u64,
    statements: &Result<StatementCounter, String>,
) -> anyhow::Result<E2eRun> {
    let topics = topics(&platform.topic_prefix, rate);
    platform.log.ensure_topics(&topics).await?;
    let stop = platform.shutdown.child_token();
    let decided: Arc<Mutex<Vec<Vec<i64>>>> = Arc::default();
    let mut hops = Vec::new();
    for hop in 0..HOPS.len() {
        let (log, pool, stop, decided) =
            (platform.log(), pool.clone(), stop.clone(), decided.clone());
        let from = topics[hop].clone();
        let to = topics.get(hop + 1).cloned();
        let group = format!("{}.floor-{from}", platform.database.instance);
        let batch = platform.consumer.batch_size;
        let mut subscription = log
            .subscribe(&group, std::slice::from_ref(&from), StartFrom::Beginning)
            .await?;
        hops.push(tokio::spawn(async move {
            // Positions applied but not yet committed to the log, and when it last was.
            let mut uncommitted: std::collections::BTreeMap<(String, i32), i64> =
                Default::default();
            let mut committed_at = Instant::now();
            while !stop.is_cancelled() {
                let records = subscription.poll(batch, Duration::from_millis(50)).await?;
                if records.is_empty() || committed_at.elapsed() >= LOG_COMMIT_INTERVAL {
                    let positions: Vec<Position> = std::mem::take(&mut uncommitted)
                        .into_iter()
                        .map(|((topic, partition), next_offset)| Position {
                            topic,
                            partition,
                            next_offset,
                        })
                        .collect();
                    // As the system's consumers: the rows are the truth, a failed
                    // commit only costs re-reading.
                    if let Err(e) = subscription.commit(&positions) {
                        tracing::debug!(error = %e, "floor offset commit failed");
                    }
                    committed_at = Instant::now();
                }
                if records.is_empty() {
                    continue;
                }
                for record in &records {
                    let next = uncommitted
                        .entry((record.topic.clone(), record.partition))
                        .or_default();
                    *next = (*next).max(record.offset + 1);
                }
                let mut carried = Vec::with_capacity(records.len());
                let mut rows = RowSet::new(&STEP_COLUMNS);
                for record in &records {
                    let c: Carried =
                        serde_json::from_slice(record.payload.as_deref().unwrap_or_default())?;
                    rows.push([
                        c.order_id.into(),
                        HOPS[hop].into(),
                        record.topic.as_str().into(),
                        record.partition.into(),
                        record.offset.into(),
                    ]);
                    carried.push(c);
                }
                let mut tx = pool.begin().await?;
                rows.execute(&mut tx, Vec::new(), |r| {
                    format!(
                        "INSERT INTO floor_steps (order_id, step, topic, partition, position)
                         SELECT order_id, step, topic, partition, position FROM {r} WHERE true"
                    )
                })
                .await?;
                tx.commit().await?;
                let at = now_micros();
                for c in &mut carried {
                    c.times.push(at);
                }
                match &to {
                    Some(to) => {
                        let next = carried
                            .iter()
                            .map(|c| record(to, c))
                            .collect::<anyhow::Result<Vec<_>>>()?;
                        log.publish(next).await?;
                    }
                    None => decided
                        .lock()
                        .expect("not poisoned")
                        .extend(carried.into_iter().map(|c| c.times)),
                }
            }
            anyhow::Ok(())
        }));
    }

    // Open loop: every order leaves at its time, whatever the earlier ones do.
    let orders = (rate * seconds as f64).round() as usize;
    let sources = cost::Sources {
        system: cost::Group::Process(std::process::id()),
        load: None,
        databases: Some(platform.database.database_name("floor")),
        statements: statements.as_ref().ok(),
        log: Some((platform.log.as_ref(), topics.clone())),
    };
    let usage_start = cost::start(&sources).await;
    let cpu_before = cpu_ticks();
    let started = tokio::time::Instant::now();
    let mut senders = Vec::with_capacity(orders);
    for i in 0..orders {
        tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate)).await;
        let (pool, log, topic) = (pool.clone(), platform.log(), topics[0].clone());
        senders.push(tokio::spawn(async move {
            let order_id = Uuid::now_v7();
            let placed = now_micros();
            let mut tx = pool.begin().await?;
            sql::query("INSERT INTO floor_orders (order_id, placed_at) VALUES ($1, now())")
                .bind(order_id)
                .execute(&mut tx)
                .await?;
            tx.commit().await?;
            let carried = Carried {
                order_id,
                times: vec![placed],
            };
            log.publish(vec![record(&topic, &carried)?]).await?;
            anyhow::Ok(())
        }));
    }
    let cpu_busy_pct = cpu_before
        .zip(cpu_ticks())
        .and_then(|(b, a)| busy_percent(b, a));
    let mut accepted = 0;
    for sender in senders {
        if sender.await.context("a floor order panicked")?.is_ok() {
            accepted += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while decided.lock().expect("not poisoned").len() < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let usage = cost::finish(&sources, usage_start).await;
    stop.cancel();
    for hop in hops {
        hop.await.context("a floor hop panicked")??;
    }
    let times = std::mem::take(&mut *decided.lock().expect("not poisoned"));
    let mut cost = Cost::per_order(&usage, times.len());
    if let Err(why) = statements {
        cost.notes.push(why.clone());
    }
    Ok(summarise(rate, accepted, &times, cpu_busy_pct, cost))
}

fn record(topic: &str, carried: &Carried) -> anyhow::Result<OutgoingRecord> {
    Ok(OutgoingRecord {
        topic: topic.to_string(),
        key: carried.order_id.to_string(),
        headers: Vec::new(),
        payload: serde_json::to_vec(carried)?,
    })
}

/// The run's row from each decided order's step times (placed, then one per hop).
fn summarise(
    rate: f64,
    accepted: usize,
    times: &[Vec<i64>],
    cpu_busy_pct: Option<f64>,
    cost: Cost,
) -> E2eRun {
    let ms = |from: i64, to: i64| (to - from) as f64 / 1000.0;
    let mut total: Vec<f64> = times.iter().map(|t| ms(t[0], t[HOPS.len()])).collect();
    total.sort_by(f64::total_cmp);
    let steps = HOPS
        .iter()
        .enumerate()
        .map(|(hop, name)| {
            let mut hop_ms: Vec<f64> = times.iter().map(|t| ms(t[hop], t[hop + 1])).collect();
            hop_ms.sort_by(f64::total_cmp);
            StepLatency {
                from: if hop == 0 {
                    "OrderPlaced"
                } else {
                    HOPS[hop - 1]
                }
                .to_string(),
                to: name.to_string(),
                p50_ms: percentile(&hop_ms, 0.50),
                p99_ms: percentile(&hop_ms, 0.99),
            }
        })
        .collect();
    let first = times.iter().map(|t| t[0]).min().unwrap_or(0);
    let last = times.iter().map(|t| t[HOPS.len()]).max().unwrap_or(0);
    let window = (ms(first, last) / 1000.0).max(f64::EPSILON);
    E2eRun {
        backend: BACKEND,
        offered_per_s: rate,
        accepted,
        confirmed: times.len(),
        cancelled: 0,
        decided_per_s: times.len() as f64 / window,
        p50_ms: percentile(&total, 0.50),
        p99_ms: percentile(&total, 0.99),
        p999_ms: percentile(&total, 0.999),
        peak_rss_mib: None,
        cpu_busy_pct,
        steps,
        cost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_summarised_from_each_orders_step_times() {
        // Two orders, 1 s apart, each decided 30 ms after it was placed.
        let times = vec![
            vec![0, 10_000, 20_000, 30_000],
            vec![1_000_000, 1_010_000, 1_020_000, 1_030_000],
        ];
        let run = summarise(2.0, 2, &times, Some(50.0), Cost::default());
        assert_eq!(run.backend, BACKEND);
        assert_eq!((run.accepted, run.confirmed), (2, 2));
        assert!((run.p99_ms - 30.0).abs() < 1e-9);
        assert!((run.decided_per_s - 2.0 / 1.03).abs() < 1e-9);
        let steps: Vec<(&str, &str, f64)> = run
            .steps
            .iter()
            .map(|s| (s.from.as_str(), s.to.as_str(), s.p50_ms))
            .collect();
        assert_eq!(
            steps,
            [
                ("OrderPlaced", "StockReserved", 10.0),
                ("StockReserved", "PaymentCompleted", 10.0),
                ("PaymentCompleted", "OrderConfirmed", 10.0),
            ]
        );
    }
}
