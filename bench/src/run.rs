//! `shop bench`: throughput of the pipeline's stages on the configured PostgreSQL and
//! Kafka, each beside a baseline measured in the same run:
//!
//! - append: restock commands through the cqrs-es aggregate and the event store (events +
//!   outbox + NOTIFY in one transaction), against raw single-row inserts of the same rows
//!   in the same transaction shape, with the same number of concurrent clients;
//! - publish: the outbox relay draining the appended events to Kafka, against a raw
//!   rdkafka producer sending the same records;
//! - projection: the products projector catching up from offset 0 (dedup, checkpoint and
//!   read-model update in batched transactions), against a consumer that only reads the
//!   same topic.
//!
//! Each run uses a fresh instance (databases and topic prefix) and removes it afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use shop_eventing::command::CommandBus;
use shop_inventory::product::{Product, ProductCommand};
use shop_log::{EventLog, OutgoingRecord};
use shop_schemas::{EventMetadata, Service};
use shop_web::auth::JwtKeys;
use uuid::Uuid;

use crate::cli::{BenchArgs, Common};

#[derive(Clone)]
struct Stage {
    name: String,
    unit: &'static str,
    rate: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    baseline_name: String,
    baseline_rate: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

pub async fn run(common: &Common, args: BenchArgs) -> anyhow::Result<()> {
    let backends = args
        .e2e_backends
        .iter()
        .map(|name| crate::cli::backend(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let instance = format!("bench{}", &Uuid::new_v4().simple().to_string()[..8]);
    let mut common_for_run = common.clone();
    common_for_run.instance = instance.clone();
    common_for_run.topic_prefix = format!("{instance}.");
    common_for_run.db_pool_size = (args.clients as u32 + 4).max(common.db_pool_size);
    let kafka = crate::system::kafka(&common_for_run)?;
    let platform = crate::system::platform(
        &common_for_run,
        kafka.clone(),
        JwtKeys::new("bench", 60),
        shop_eventing::platform::ConsumerTuning {
            projection_members: args.projection_members as usize,
            rebuild_members: args.rebuild_members as usize,
            ..Default::default()
        },
        Default::default(),
    );
    let topics = crate::system::all_topics(&platform.topic_prefix);
    kafka
        .ensure_topics(&topics)
        .await
        .context("Kafka unreachable (`scripts/infra.sh up`)")?;
    let result = measure(&platform, &args).await;
    // SQL statements per order of the end-to-end rows on PostgreSQL, where the server
    // loads pg_stat_statements (a database of the bench's own, dropped at the end).
    let e2e_on_postgres = backends.contains(&"kafka")
        && !crate::cli::OfferedLoad::for_backend(&args.e2e_rates, "kafka").is_empty();
    let statements = if e2e_on_postgres && result.is_ok() {
        crate::cost::StatementCounter::open(&platform.database).await
    } else {
        Err("no end-to-end rows on PostgreSQL".to_string())
    };
    // The floor of the end-to-end stage on Kafka + PostgreSQL, at its offered loads.
    let floor_rates = crate::cli::OfferedLoad::for_backend(&args.e2e_rates, "kafka");
    let floor = match &result {
        Ok(_) if backends.contains(&"kafka") && !floor_rates.is_empty() => {
            crate::floor::run(&platform, &floor_rates, args.e2e_seconds, &statements).await
        }
        _ => Ok(Vec::new()),
    };
    // Clean up whatever happened.
    platform.shutdown.cancel();
    for component in ["inventory", "read", "peer", "floor"] {
        shop_sql::db::drop_database(
            &common.database_url,
            &platform.database.database_name(component),
        )
        .await
        .ok();
    }
    let raw_topic = format!("{}raw", platform.topic_prefix);
    kafka
        .delete_topics(
            &[
                topics,
                vec![raw_topic],
                crate::replay::topics(&platform.topic_prefix),
                floor_rates
                    .iter()
                    .flat_map(|rate| crate::floor::topics(&platform.topic_prefix, *rate))
                    .collect(),
            ]
            .concat(),
        )
        .await
        .ok();
    let e2e = match (&result, floor) {
        (Ok(_), Ok(mut floor)) => {
            let mut e2e = Ok(Vec::new());
            for backend in backends {
                let rates = crate::cli::OfferedLoad::for_backend(&args.e2e_rates, backend);
                if let (false, Ok(runs)) = (rates.is_empty(), &mut e2e) {
                    let options = crate::e2e::Options {
                        keep: args.e2e_keep,
                        log: args.e2e_system_log.clone(),
                    };
                    match crate::e2e::run(
                        common,
                        backend,
                        &rates,
                        args.e2e_seconds,
                        &statements,
                        &options,
                    )
                    .await
                    {
                        Ok(more) => runs.extend(more),
                        Err(e) => e2e = Err(e),
                    }
                }
                if let (true, Ok(runs)) = (backend == "kafka", &mut e2e) {
                    runs.append(&mut floor);
                }
            }
            e2e
        }
        (_, Err(e)) => Err(e),
        (Err(_), _) => Ok(Vec::new()),
    };
    // The statistics database goes last: the end-to-end rows read through it.
    if let Ok(counter) = statements {
        counter.close().await;
    }
    shop_sql::db::drop_database(
        &common.database_url,
        &platform.database.database_name("stats"),
    )
    .await
    .ok();
    let stages = result?;
    let mut e2e = e2e?;
    compare_with_floor(&mut e2e);

    println!(
        "\nshop bench: {} commands over {} products, {} clients (PostgreSQL {}, Kafka {})\n",
        args.events,
        args.products,
        args.clients,
        shop_sql::db::redact(&common.database_url),
        common.kafka_brokers
    );
    println!(
        "{:<18} {:>14} {:>9} {:>9}   {:<42} {:>14} {:>7}",
        "stage", "rate", "p50 ms", "p99 ms", "baseline", "rate", "ratio"
    );
    for s in &stages {
        let fmt_ms = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<18} {:>9.0} {:<4} {:>9} {:>9}   {:<42} {:>9.0} {:<4} {:>6.2}x",
            s.name,
            s.rate,
            s.unit,
            fmt_ms(s.p50_ms),
            fmt_ms(s.p99_ms),
            s.baseline_name,
            s.baseline_rate,
            s.unit,
            s.rate / s.baseline_rate
        );
    }
    if !e2e.is_empty() {
        println!(
            "\nend to end (open loop, {} s per load; placed -> CONFIRMED from the events' times)\n",
            args.e2e_seconds
        );
        println!(
            "{:<9} {:>9} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "backend",
            "offered/s",
            "decided/s",
            "ratio",
            "accepted",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "peak RSS"
        );
        for r in &e2e {
            // The floor runs in the bench's own process: no system's memory to show.
            let rss = r
                .peak_rss_mib
                .map_or_else(|| "-".to_string(), |mib| format!("{mib:.0} MiB"));
            println!(
                "{:<9} {:>9.0} {:>10.1} {:>6.2}x {:>9} {:>9.1} {:>9.1} {:>9.1} {:>10}",
                r.backend,
                r.offered_per_s,
                r.decided_per_s,
                r.decided_per_s / r.offered_per_s,
                r.accepted,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                rss
            );
            let steps: Vec<String> = r
                .steps
                .iter()
                .map(|s| format!("{} {:.1}/{:.1}", s.to, s.p50_ms, s.p99_ms))
                .collect();
            let cpu = r
                .cpu_busy_pct
                .map(|busy| format!("CPUs {busy:.0} % busy while sending; "))
                .unwrap_or_default();
            if !steps.is_empty() || !cpu.is_empty() {
                println!("{:<9} {cpu}steps p50/p99 ms: {}", "", steps.join(", "));
            }
        }
        print_costs(&e2e);
    }
    let report = json!({
        "e2e": e2e,
        "events": args.events,
        "products": args.products,
        "clients": args.clients,
        "stages": stages.iter().map(|s| json!({
            "stage": s.name,
            "unit": s.unit,
            "rate": s.rate,
            "p50_ms": s.p50_ms,
            "p99_ms": s.p99_ms,
            "baseline": s.baseline_name,
            "baseline_rate": s.baseline_rate,
            "ratio": s.rate / s.baseline_rate,
        })).collect::<Vec<_>>(),
    });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

/// Sets each Kafka row's CPU per order against the floor's at the same offered load.
fn compare_with_floor(e2e: &mut [crate::e2e::E2eRun]) {
    let floors: Vec<(f64, f64, f64)> = e2e
        .iter()
        .filter(|r| r.backend == crate::floor::BACKEND)
        .map(|r| {
            (
                r.offered_per_s,
                r.cost.cpu_ms_per_order,
                r.cost.total_cpu_ms_per_order,
            )
        })
        .collect();
    for run in e2e.iter_mut().filter(|r| r.backend == "kafka") {
        if let Some((_, cpu, total)) = floors.iter().find(|f| f.0 == run.offered_per_s) {
            run.cost.cpu_vs_floor = (*cpu > 0.0).then(|| run.cost.cpu_ms_per_order / cpu);
            run.cost.total_cpu_vs_floor =
                (*total > 0.0).then(|| run.cost.total_cpu_ms_per_order / total);
        }
    }
}

/// The end-to-end rows' cost per decided order, and what could not be measured.
fn print_costs(e2e: &[crate::e2e::E2eRun]) {
    println!(
        "\ncost per decided order (CPU ms from /proc: the system's processes, or the floor's \
         in the bench's; the broker; PostgreSQL's\nbackground processes and the row's \
         databases' backends; from the first order sent until the system is idle again)\n"
    );
    println!(
        "{:<9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "backend",
        "offered/s",
        "system",
        "broker",
        "postgres",
        "total",
        "vs floor",
        "load gen",
        "SQL stmt",
        "SQL tx",
        "records"
    );
    let opt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
    };
    for r in e2e {
        let c = &r.cost;
        let vs_floor = match (c.cpu_vs_floor, c.total_cpu_vs_floor) {
            (Some(system), Some(total)) => format!("{system:.2}/{total:.2}x"),
            _ => "-".to_string(),
        };
        println!(
            "{:<9} {:>9.0} {:>8.2} {:>8} {:>8} {:>8.2} {:>9} {:>9} {:>9} {:>9} {:>9}",
            r.backend,
            r.offered_per_s,
            c.cpu_ms_per_order,
            opt(c.broker_cpu_ms_per_order, 2),
            opt(c.postgres_cpu_ms_per_order, 2),
            c.total_cpu_ms_per_order,
            vs_floor,
            opt(c.load_cpu_ms_per_order, 2),
            opt(c.sql_statements_per_order, 1),
            opt(c.sql_commits_per_order, 1),
            opt(c.kafka_records_per_order, 1),
        );
        if let Some(idle) = c.system_idle_cpu_pct {
            println!(
                "{:<9} the system idle before the row: {idle:.0} % of a core",
                ""
            );
        }
        if !c.sql_statements_by_database.is_empty() {
            let by_db: Vec<String> = c
                .sql_statements_by_database
                .iter()
                .map(|(db, n)| format!("{db} {n:.1}"))
                .collect();
            println!("{:<9} SQL statements by database: {}", "", by_db.join(", "));
        }
    }
    println!(
        "\n(vs floor: the system's CPU per order / the floor's, then the totals'; \
         load gen: the bench's own process sending the orders, not in the total)"
    );
    let mut notes: Vec<&String> = e2e.iter().flat_map(|r| &r.cost.notes).collect();
    notes.sort();
    notes.dedup();
    for note in notes {
        println!("note: {note}");
    }
}

async fn measure(
    platform: &shop_eventing::platform::Platform,
    args: &BenchArgs,
) -> anyhow::Result<Vec<Stage>> {
    let pool = shop_inventory::service::open_database(platform).await?;
    let bus = Arc::new(CommandBus::<Product>::with_snapshots(
        shop_inventory::service::event_store(pool.clone()),
        (),
        shop_inventory::service::SNAPSHOT_EVERY,
    ));
    let metadata = EventMetadata::default();
    let mut products = Vec::with_capacity(args.products);
    for i in 0..args.products {
        let product_id = Uuid::now_v7();
        let command = ProductCommand::AddProduct {
            product_id,
            sku: format!("BENCH-{i}"),
            name: format!("Bench {i}"),
            price: 100,
            stock: 0,
            category: shop_schemas::inventory::UNCATEGORISED.into(),
        };
        bus.execute(&product_id.to_string(), command, &metadata)
            .await?;
        products.push(product_id.to_string());
    }
    let products = Arc::new(products);

    let raw = pool
        .as_postgres()
        .context("the bench runs on PostgreSQL")?
        .clone();
    sqlx::raw_sql(
        "CREATE TABLE bench_raw_events (LIKE events INCLUDING ALL);
         CREATE TABLE bench_raw_outbox (position BIGINT PRIMARY KEY);",
    )
    .execute(&raw)
    .await?;
    let mut stages = Vec::new();
    // As deployed (`shop serve inventory`), the service's relay is in this process, so
    // appends wake it in-process rather than by NOTIFY. It is held paused here: the
    // outbox fills for the publish stage.
    let paused_relay = pool
        .as_postgres()
        .map(shop_sql::signal::LocalListener::register);
    // Append with one client (a quarter of the commands), then with `clients`: commands
    // through the aggregate and the event store, each beside raw inserts of the same rows
    // by as many clients. `--events 0` skips them (and the publish stage with them).
    let mut client_counts = if args.events == 0 {
        Vec::new()
    } else {
        vec![1, args.clients]
    };
    client_counts.dedup();
    for clients in client_counts {
        let n = if clients == 1 && args.clients > 1 {
            (args.events / 4).max(1)
        } else {
            args.events
        };
        // In two halves, ours–raw–raw–ours, so neither side alone gets the cold start or
        // the warmer end of the stage, nor a drift of the machine during it.
        let half = (n / 2).max(1);
        let (first_rate, mut latencies) = append(&bus, &products, clients, half).await?;
        let raw_first = raw_append(&raw, &products, clients, half).await?;
        let raw_second = raw_append(&raw, &products, clients, n - half).await?;
        let (second_rate, second_latencies) = append(&bus, &products, clients, n - half).await?;
        latencies.extend(second_latencies);
        latencies.sort();
        let append_rate = combined_rate((half, first_rate), (n - half, second_rate));
        let raw_insert_rate = combined_rate((half, raw_first), (n - half, raw_second));
        stages.push(Stage {
            name: format!("append x{clients}"),
            unit: "cmd/s",
            rate: append_rate,
            p50_ms: Some(percentile(&latencies, 0.50)),
            p99_ms: Some(percentile(&latencies, 0.99)),
            baseline_name: format!("raw INSERT event+outbox per tx x{clients}"),
            baseline_rate: raw_insert_rate,
        });
        if clients == args.clients {
            // Peer: the same commands on the same aggregate through cqrs-es with
            // postgres-es (its own database, same snapshot interval, the same number of
            // clients; conflicts retried).
            let peer_rate = peer_append(platform, args).await?;
            stages.push(Stage {
                baseline_name: format!("cqrs-es + postgres-es x{clients}"),
                baseline_rate: peer_rate,
                ..stages.last().expect("just pushed").clone()
            });
        }
    }

    // Long streams: restocks of a product with `long_stream` events against restocks of
    // a new product, one client, each command loading its aggregate from the store
    // (snapshot and the events after it).
    if args.long_stream > 0 {
        stages.push(long_stream(&pool, args.long_stream).await?);
    }

    // Publish: the relay drains the outbox.
    drop(paused_relay);
    if args.events > 0 {
        stages.push(publish(platform, &pool).await?);
    }
    pool.close().await;

    // Replay: every projection from offset 0 over a synthetic order history.
    if args.replay_orders > 0 {
        let replay = crate::replay::run(platform, args.replay_orders).await?;
        stages.push(Stage {
            name: "first fill".into(),
            unit: "ev/s",
            rate: replay.first_fill_rate,
            p50_ms: None,
            p99_ms: None,
            baseline_name: format!("consumers that only read ({} ev)", replay.events),
            baseline_rate: replay.baseline_rate,
        });
        stages.push(Stage {
            name: "replay".into(),
            unit: "ev/s",
            rate: replay.rate,
            p50_ms: None,
            p99_ms: None,
            baseline_name: format!("consumers that only read ({} ev)", replay.events),
            baseline_rate: replay.baseline_rate,
        });
        stages.push(Stage {
            baseline_name: "consumers that read, write a row per event".into(),
            baseline_rate: replay.write_floor_rate,
            ..stages.last().expect("just pushed").clone()
        });
    }
    Ok(stages)
}

/// Publish: the relay drains the outbox the append stages filled, against a plain
/// producer sending the same records in batches of the relay's size.
async fn publish(
    platform: &shop_eventing::platform::Platform,
    pool: &shop_sql::Pool,
) -> anyhow::Result<Stage> {
    let total = shop_eventing::relay::backlog(pool).await?;
    // Done when the topic holds them all: watched at the broker, as counting the outbox
    // every few milliseconds would be work for the database the relay is reading.
    let topic = Service::Inventory.topic(&platform.topic_prefix);
    let in_topic = || async {
        let ends = platform.log.end_offsets(&topic).await?;
        anyhow::Ok(ends.iter().map(|(_, end)| end).sum::<i64>())
    };
    let before = in_topic().await?;
    let relay = platform.relay(pool.clone(), Service::Inventory);
    let started = Instant::now();
    let relay_task = tokio::spawn(relay.run(platform.shutdown.clone()));
    while in_topic().await? < before + total {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let publish_rate = total as f64 / started.elapsed().as_secs_f64();
    relay_task.abort();

    // Baseline: the same records through a plain producer, in batches of the same size.
    let store = shop_eventing::store::EventStore::new(pool.clone());
    let raw_topic = format!("{}raw", platform.topic_prefix);
    platform
        .log
        .ensure_topics(std::slice::from_ref(&raw_topic))
        .await?;
    let mut records = Vec::with_capacity(total as usize);
    let mut after = 0;
    loop {
        let events = store.events_after(after, 5000).await?;
        let Some(last) = events.last() else { break };
        after = last.position;
        records.extend(events.iter().map(|e| {
            OutgoingRecord::from_cloud_event(&raw_topic, &e.to_cloud_event(Service::Inventory))
        }));
    }
    let started = Instant::now();
    for chunk in records.chunks(platform.relay.batch_size as usize) {
        platform.log.publish(chunk.to_vec()).await?;
    }
    let raw_publish_rate = records.len() as f64 / started.elapsed().as_secs_f64();

    Ok(Stage {
        name: "publish".into(),
        unit: "ev/s",
        rate: publish_rate,
        p50_ms: None,
        p99_ms: None,
        baseline_name: "raw producer, same records".into(),
        baseline_rate: raw_publish_rate,
    })
}

/// The rate of two runs taken together: all their commands over all their time.
fn combined_rate((n1, rate1): (usize, f64), (n2, rate2): (usize, f64)) -> f64 {
    let seconds = |n: usize, rate: f64| if n == 0 { 0.0 } else { n as f64 / rate };
    (n1 + n2) as f64 / (seconds(n1, rate1) + seconds(n2, rate2))
}

/// `n` restocks through the command bus by `clients` concurrent clients, spread over the
/// products; the rate and each command's latency.
async fn append(
    bus: &Arc<CommandBus<Product>>,
    products: &Arc<Vec<String>>,
    clients: usize,
    n: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (bus, products) = (bus.clone(), products.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let metadata = EventMetadata::default();
            for i in (client..n).step_by(clients) {
                let t = Instant::now();
                let product = &products[i % products.len()];
                bus.execute(product, ProductCommand::Restock { quantity: 1 }, &metadata)
                    .await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((rate, latencies))
}

/// Sequences of the raw baseline's rows (unique, as the event store's are).
static RAW_SEQUENCE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);

/// The baseline of [`append`]: the same rows, one transaction per command (event +
/// outbox), raw SQL.
async fn raw_append(
    pool: &sqlx::PgPool,
    products: &Arc<Vec<String>>,
    clients: usize,
    n: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (pool, products) = (pool.clone(), products.clone());
        tasks.push(tokio::spawn(async move {
            for i in (client..n).step_by(clients) {
                let product = &products[i % products.len()];
                let mut tx = pool.begin().await?;
                let position: i64 = sqlx::query_scalar(
                    "INSERT INTO bench_raw_events (aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, data, metadata)
                     VALUES ('product', $1, $2, $3, 'ProductRestocked', '1', $4, '{}') RETURNING position",
                )
                .bind(product)
                .bind(RAW_SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                .bind(Uuid::now_v7())
                .bind(json!({"product_id": product, "quantity": 1}))
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO bench_raw_outbox (position) VALUES ($1)")
                    .bind(position)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Restocks of a product with `length` events against restocks of a new product: one
/// client, a bus without its aggregate cache, so every command loads from the store.
async fn long_stream(pool: &shop_sql::Pool, length: usize) -> anyhow::Result<Stage> {
    let bus = CommandBus::<Product>::with_snapshots(
        shop_inventory::service::event_store(pool.clone()),
        (),
        shop_inventory::service::SNAPSHOT_EVERY,
    )
    .without_cache();
    let metadata = EventMetadata::default();
    let add = |i: usize| {
        let product_id = Uuid::now_v7();
        (
            product_id.to_string(),
            ProductCommand::AddProduct {
                product_id,
                sku: format!("STREAM-{i}"),
                name: format!("Stream {i}"),
                price: 100,
                stock: 0,
                category: shop_schemas::inventory::UNCATEGORISED.into(),
            },
        )
    };
    let (long, command) = add(0);
    bus.execute(&long, command, &metadata).await?;
    for _ in 1..length {
        bus.execute(&long, ProductCommand::Restock { quantity: 1 }, &metadata)
            .await?;
    }
    let (new, command) = add(1);
    bus.execute(&new, command, &metadata).await?;
    let commands = 1_000;
    let rate = |product: String| {
        let (bus, metadata) = (&bus, &metadata);
        async move {
            let started = Instant::now();
            let mut latencies = Vec::with_capacity(commands);
            for _ in 0..commands {
                let t = Instant::now();
                bus.execute(&product, ProductCommand::Restock { quantity: 1 }, metadata)
                    .await?;
                latencies.push(t.elapsed());
            }
            latencies.sort();
            anyhow::Ok((commands as f64 / started.elapsed().as_secs_f64(), latencies))
        }
    };
    let (new_rate, _) = rate(new).await?;
    let (long_rate, latencies) = rate(long).await?;
    Ok(Stage {
        name: format!("{length}-event stream"),
        unit: "cmd/s",
        rate: long_rate,
        p50_ms: Some(percentile(&latencies, 0.50)),
        p99_ms: Some(percentile(&latencies, 0.99)),
        baseline_name: "same commands, new stream".into(),
        baseline_rate: new_rate,
    })
}

/// postgres-es's tables (its `db/init.sql`), in a database of their own.
const PEER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL,
    event_type text NOT NULL, event_version text NOT NULL,
    payload json NOT NULL, metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence));
CREATE TABLE IF NOT EXISTS snapshots (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));
";

/// Commands per second through cqrs-es + postgres-es: the same products, restocks and
/// clients as the append stage.
async fn peer_append(
    platform: &shop_eventing::platform::Platform,
    args: &BenchArgs,
) -> anyhow::Result<f64> {
    let pool = shop_sql::db::open(&platform.database, "peer", &[PEER_SCHEMA]).await?;
    let pg = pool
        .as_postgres()
        .context("the bench runs on PostgreSQL")?
        .clone();
    let cqrs = Arc::new(postgres_es::postgres_snapshot_cqrs::<Product>(
        pg,
        vec![],
        shop_inventory::service::SNAPSHOT_EVERY,
        (),
    ));
    let mut products = Vec::with_capacity(args.products);
    for i in 0..args.products {
        let product_id = Uuid::now_v7();
        cqrs.execute(
            &product_id.to_string(),
            ProductCommand::AddProduct {
                product_id,
                sku: format!("PEER-{i}"),
                name: format!("Peer {i}"),
                price: 100,
                stock: 0,
                category: shop_schemas::inventory::UNCATEGORISED.into(),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("postgres-es: {e}"))?;
        products.push(product_id.to_string());
    }
    let products = Arc::new(products);
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..args.clients {
        let (cqrs, products, n, count) =
            (cqrs.clone(), products.clone(), args.events, args.clients);
        clients.push(tokio::spawn(async move {
            for i in (client..n).step_by(count) {
                let product = &products[i % products.len()];
                // A user of the library retries a lost optimistic-concurrency race.
                loop {
                    match cqrs
                        .execute(product, ProductCommand::Restock { quantity: 1 })
                        .await
                    {
                        Ok(()) => break,
                        Err(cqrs_es::AggregateError::AggregateConflict) => continue,
                        Err(e) => anyhow::bail!("postgres-es: {e}"),
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for c in clients {
        c.await??;
    }
    let rate = args.events as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}
