//! `shop bench`'s end-to-end stage: the whole system as a separate process (`shop serve
//! all` on PostgreSQL + Kafka, or `shop dev` on embedded storage), driven through the
//! gateway at fixed offered loads, open loop (orders are sent on schedule whatever the
//! answers, so slow responses are not hidden). Reported per load: orders/s decided,
//! placed → CONFIRMED p50/p99/p99.9 (from the events' own times, as the order view's
//! history has them), and the process's peak RSS; and what an order cost
//! ([`crate::cost`]): CPU of the system, the broker and PostgreSQL, SQL statements and
//! Kafka records, from the first order sent until the system is idle again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cli::Common;
use crate::cost::{self, Cost, StatementCounter};

/// One offered load's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct E2eRun {
    pub backend: &'static str,
    pub offered_per_s: f64,
    pub accepted: usize,
    pub confirmed: usize,
    pub cancelled: usize,
    /// Orders decided (confirmed or cancelled) per second of the sending window.
    pub decided_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Peak resident set of the system's process (VmHWM), in MiB; `None` for the floor
    /// ([`crate::floor`]), which runs in the bench's own process.
    pub peak_rss_mib: Option<f64>,
    /// How busy the machine's CPUs were while the orders were sent (all processes,
    /// the bench's own included), in percent; `None` where `/proc/stat` is not there.
    pub cpu_busy_pct: Option<f64>,
    /// Each saga step on the way to CONFIRMED (one event to the next in the order's
    /// history), so a slow figure shows which hop it comes from.
    pub steps: Vec<StepLatency>,
    /// What each decided order cost ([`crate::cost`]).
    pub cost: Cost,
}

/// The time from one saga event to the next across the confirmed orders.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepLatency {
    pub from: String,
    pub to: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

struct System {
    child: Child,
    base: String,
    cleanup: Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>,
    /// Where the system's stderr goes.
    log_path: std::path::PathBuf,
    /// Its instance: database names start with `<instance>_`, topics with `<instance>.`.
    instance: String,
}

const ADMIN_PASSWORD: &str = "bench-admin-password";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18_080)
}

/// The `shop` binary in the directory of the running `shop-bench` (cargo builds both
/// into the same one).
fn shop_executable() -> anyhow::Result<std::path::PathBuf> {
    let bench = std::env::current_exe()?;
    let shop = bench.with_file_name(format!("shop{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        shop.is_file(),
        "{} not found: the end-to-end stage runs the `shop` binary beside shop-bench; build \
         it with `cargo build --release -p shop` (or skip the stage with --e2e-rates 0)",
        shop.display()
    );
    Ok(shop)
}

/// How the bench runs the system, beside the common settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep its databases, topics and log afterwards.
    pub keep: bool,
    /// Its log filter.
    pub log: String,
}

/// Starts the system in its own process and waits for `shop: ready`.
async fn start(
    common: &Common,
    backend: &'static str,
    options: &Options,
) -> anyhow::Result<System> {
    let exe = shop_executable()?;
    let port = free_port();
    let instance = format!(
        "benche2e{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut command = Command::new(exe);
    let data_dir = std::env::temp_dir().join(&instance);
    // The system's warnings and errors, kept when the run fails.
    let log_path = std::env::temp_dir().join(format!("{instance}.log"));
    match backend {
        "embedded" => {
            command.arg("dev").arg("--data-dir").arg(&data_dir);
        }
        _ => {
            command
                .args(["serve", "all"])
                .env("SHOP_INSTANCE", &instance)
                .env("SHOP_TOPIC_PREFIX", format!("{instance}."));
            for var in [
                "SHOP_CUSTOMERS_PORT",
                "SHOP_INVENTORY_PORT",
                "SHOP_ORDERS_PORT",
                "SHOP_PAYMENTS_PORT",
                "SHOP_SHIPPING_PORT",
                "SHOP_READ_API_PORT",
                "SHOP_PROJECTOR_PORT",
            ] {
                command.env(var, free_port().to_string());
            }
        }
    }
    command
        .env("SHOP_PORT", port.to_string())
        .env("SHOP_DATABASE_URL", &common.database_url)
        .env("SHOP_KAFKA_BROKERS", &common.kafka_brokers)
        .env("SHOP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SHOP_JWT_SECRET", "bench-jwt-secret")
        .env("SHOP_GATEWAY_RATE_LIMIT", "0")
        .env("SHOP_LOG", &options.log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true);
    let database_url = common.database_url.clone();
    let kafka = crate::system::kafka(common).ok();
    let system_instance = instance.clone();
    let cleanup: Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send> =
        Box::new(move || {
            Box::pin(async move {
                if backend == "embedded" {
                    std::fs::remove_dir_all(&data_dir).ok();
                } else {
                    if let Some(kafka) = kafka {
                        let topics = crate::system::all_topics(&format!("{instance}."));
                        kafka.delete_topics(&topics).await.ok();
                    }
                    for component in [
                        "customers",
                        "inventory",
                        "orders",
                        "payments",
                        "shipping",
                        "read",
                    ] {
                        shop_sql::db::drop_database(
                            &database_url,
                            &format!("{instance}_{component}"),
                        )
                        .await
                        .ok();
                    }
                }
            })
        });
    let mut child = command.spawn().context("cannot start the system")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let deadline = Instant::now() + Duration::from_secs(90);
    let ready = loop {
        let line = match tokio::time::timeout_at(deadline.into(), lines.next_line()).await {
            Err(_) => break Err(anyhow::anyhow!("the system did not get ready in 90 s")),
            Ok(Err(e)) => break Err(e.into()),
            Ok(Ok(line)) => line,
        };
        match line {
            Some(line) if line == "shop: ready" => break Ok(()),
            Some(_) => {}
            None => {
                let last = std::fs::read_to_string(&log_path)
                    .ok()
                    .and_then(|log| log.lines().last().map(str::to_string))
                    .unwrap_or_default();
                break Err(anyhow::anyhow!(
                    "the system exited before it was ready: {last} (log: {})",
                    log_path.display()
                ));
            }
        }
    };
    if let Err(e) = ready {
        let _ = child.kill().await;
        cleanup().await;
        return Err(e);
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(System {
        child,
        base: format!("http://127.0.0.1:{port}"),
        cleanup,
        log_path,
        instance: system_instance,
    })
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Adds a confirmed order's steps up to `OrderConfirmed` (consecutive history entries, in
/// the order the view lists them) to `steps`, kept in first-seen order.
fn record_steps(history: &Value, steps: &mut Vec<(String, String, Vec<f64>)>) {
    let entries: Vec<(&str, chrono::DateTime<chrono::FixedOffset>)> = history
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let at = chrono::DateTime::parse_from_rfc3339(s["at"].as_str()?).ok()?;
            Some((s["event_type"].as_str()?, at))
        })
        .collect();
    for pair in entries.windows(2) {
        let ((from, start), (to, end)) = (pair[0], pair[1]);
        let ms = (end - start).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        match steps.iter_mut().find(|(f, t, _)| f == from && t == to) {
            Some((_, _, times)) => times.push(ms),
            None => steps.push((from.to_string(), to.to_string(), vec![ms])),
        }
        if to == "OrderConfirmed" {
            break;
        }
    }
}

/// The machine's CPU time so far as (busy, total) ticks, from `/proc/stat`'s `cpu` line
/// (Linux); idle and I/O wait count as not busy.
pub(crate) fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Busy percentage between two [`cpu_ticks`] readings.
pub(crate) fn busy_percent(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1).filter(|t| *t > 0)?;
    Some(100.0 * after.0.saturating_sub(before.0) as f64 / total as f64)
}

/// Peak resident set of a process, from `/proc/<pid>/status` (Linux).
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the offered loads against one backend; `statements` counts SQL statements (or
/// says why it cannot).
pub async fn run(
    common: &Common,
    backend: &'static str,
    rates: &[f64],
    seconds: u64,
    statements: &Result<StatementCounter, String>,
    options: &Options,
) -> anyhow::Result<Vec<E2eRun>> {
    // The ports are picked free, then bound by the system: another process may take one
    // in between (the system then exits with "Address already in use"); try again.
    let mut attempt = 1;
    let mut system = loop {
        match start(common, backend, options).await {
            Ok(system) => break system,
            Err(e) if attempt < 3 && e.to_string().contains("Address already in use") => {
                tracing::warn!(error = %e, "the system could not bind its port; starting again");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    // For the records produced (a client that cannot be built only leaves them out).
    let kafka = match backend {
        "kafka" => crate::system::kafka(common).ok(),
        _ => None,
    };
    let result = drive(&system, backend, rates, seconds, statements, kafka).await;
    // SIGTERM for a clean stop, then the clean-up.
    if let Some(pid) = system.child.id() {
        let _ = Command::new("kill").arg(pid.to_string()).status().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), system.child.wait()).await;
    let _ = system.child.kill().await;
    if options.keep {
        println!(
            "kept the {backend} system's instance {} (databases {0}_*, topics {0}.*, log {})",
            system.instance,
            system.log_path.display()
        );
        return result;
    }
    (system.cleanup)().await;
    if result.is_ok() {
        std::fs::remove_file(&system.log_path).ok();
    }
    result
}

/// An order as the gateway shows it once it is decided (no longer `PENDING`).
async fn decided_order(
    http: &reqwest::Client,
    system: &System,
    admin: &str,
    id: &str,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, order) = call(
            http,
            reqwest::Method::GET,
            format!("{}/api/orders/{id}", system.base),
            Some(admin),
            None,
        )
        .await?;
        let status = order["status"].as_str().unwrap_or("");
        if status != "PENDING" && !status.is_empty() {
            return Ok(order);
        }
        if Instant::now() > deadline {
            bail!(
                "order {id} was not decided in 120 s (the system's log: {})",
                system.log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn drive(
    system: &System,
    backend: &'static str,
    rates: &[f64],
    seconds: u64,
    statements: &Result<StatementCounter, String>,
    kafka: Option<Arc<shop_log::kafka::KafkaLog>>,
) -> anyhow::Result<Vec<E2eRun>> {
    let base = &system.base;
    let pid = system.child.id().context("the system has exited")?;
    let on_postgres = backend == "kafka";
    let sources = cost::Sources {
        system: cost::Group::Tree(pid),
        load: Some(cost::Group::Process(std::process::id())),
        databases: on_postgres.then(|| format!("{}_", system.instance)),
        statements: statements.as_ref().ok().filter(|_| on_postgres),
        log: kafka.as_ref().map(|k| {
            (
                k.as_ref() as &dyn shop_log::EventLog,
                crate::system::all_topics(&format!("{}.", system.instance)),
            )
        }),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()?;
    let post = reqwest::Method::POST;
    let (_, login) = call(
        &http,
        post.clone(),
        format!("{base}/api/auth/token"),
        None,
        Some(json!({"email": "admin@shop.local", "password": ADMIN_PASSWORD})),
    )
    .await?;
    let admin = login["access_token"]
        .as_str()
        .context("admin sign-in failed")?
        .to_string();
    // Plenty of stock and money: the saga's happy path is what is measured.
    let mut products = Vec::new();
    for i in 0..10 {
        let (_, answer) = call(
            &http,
            post.clone(),
            format!("{base}/api/products"),
            Some(&admin),
            Some(json!({"sku": format!("E2E-{i}"), "name": format!("Bench {i}"), "price": 100, "stock": 1_000_000_000})),
        )
        .await?;
        products.push(
            answer["product_id"]
                .as_str()
                .context("no product")?
                .to_string(),
        );
    }
    let mut customers = Vec::new();
    for i in 0..20 {
        let email = format!("bench{i}@example.com");
        let (_, answer) = call(
            &http,
            post.clone(),
            format!("{base}/api/customers"),
            None,
            Some(
                json!({"name": format!("Bench {i}"), "email": email, "password": "bench-password",
                "address": {"line1": "1", "city": "Tokyo", "postal_code": "100", "country": "JP"}}),
            ),
        )
        .await?;
        let id = answer["customer_id"]
            .as_str()
            .context("no customer")?
            .to_string();
        let (_, login) = call(
            &http,
            post.clone(),
            format!("{base}/api/auth/token"),
            None,
            Some(json!({"email": email, "password": "bench-password"})),
        )
        .await?;
        let token = login["access_token"]
            .as_str()
            .context("no token")?
            .to_string();
        call(
            &http,
            post.clone(),
            format!("{base}/api/customers/{id}/wallet/deposits"),
            Some(&token),
            Some(json!({"amount": 1_000_000_000_000i64})),
        )
        .await?;
        customers.push(token);
    }
    // The orders service knows the catalogue once a first order is accepted.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = call(
            &http,
            post.clone(),
            format!("{base}/api/orders"),
            Some(&customers[0]),
            Some(json!({"lines": [{"product_id": products[9], "quantity": 1}]})),
        )
        .await?;
        if status.is_success() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the orders service never saw the catalogue");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let customers = Arc::new(customers);
    let products = Arc::new(products);
    let mut runs = Vec::new();
    for &rate in rates {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let total = (rate * seconds as f64).round() as usize;
        // What the system uses doing nothing, to tell when it is done with the orders.
        let idle = cost::idle_ticks(pid).await;
        let usage_start = cost::start(&sources).await;
        let started = Instant::now();
        let cpu_before = cpu_ticks();
        let mut sends = Vec::with_capacity(total);
        for n in 0..total {
            // Open loop: each order leaves at its time, whatever the earlier ones do.
            tokio::time::sleep_until((started + interval * n as u32).into()).await;
            let (http, base, customers, products) = (
                http.clone(),
                base.clone(),
                customers.clone(),
                products.clone(),
            );
            sends.push(tokio::spawn(async move {
                let (status, answer) = call(
                    &http,
                    reqwest::Method::POST,
                    format!("{base}/api/orders"),
                    Some(&customers[n % customers.len()]),
                    Some(json!({"lines": [{"product_id": products[n % products.len()], "quantity": 1}]})),
                )
                .await
                .ok()?;
                status
                    .is_success()
                    .then(|| answer["order_id"].as_str().map(String::from))
                    .flatten()
            }));
        }
        let cpu_busy_pct = cpu_before
            .zip(cpu_ticks())
            .and_then(|(before, after)| busy_percent(before, after));
        let mut ids = Vec::new();
        for send in sends {
            if let Ok(Some(id)) = send.await {
                ids.push(id);
            }
        }
        // The cost window ends when the system has decided the last order sent and is
        // idle again (shipping, projections), before the bench reads every order back
        // (which is the bench's asking, not the orders' work).
        if let Some(last) = ids.last() {
            decided_order(&http, system, &admin, last).await?;
        }
        let settled = cost::settle(pid, idle, Duration::from_secs(60)).await;
        let usage = cost::finish(&sources, usage_start).await;
        // Wait for every accepted order's decision, then read its saga timeline.
        let mut latencies = Vec::new();
        let mut steps: Vec<(String, String, Vec<f64>)> = Vec::new();
        let (mut confirmed, mut cancelled) = (0, 0);
        let mut first_placed: Option<chrono::DateTime<chrono::FixedOffset>> = None;
        let mut last_decided: Option<chrono::DateTime<chrono::FixedOffset>> = None;
        for id in &ids {
            let order = decided_order(&http, system, &admin, id).await?;
            let at = |event: &str| {
                order["history"].as_array().and_then(|h| {
                    h.iter().find(|s| s["event_type"] == event).and_then(|s| {
                        s["at"]
                            .as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    })
                })
            };
            let placed = at("OrderPlaced");
            if let Some(p) = placed {
                first_placed = Some(first_placed.map_or(p, |f| f.min(p)));
            }
            match (placed, at("OrderConfirmed")) {
                (Some(placed), Some(done)) => {
                    confirmed += 1;
                    record_steps(&order["history"], &mut steps);
                    latencies.push((done - placed).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                    last_decided = Some(last_decided.map_or(done, |l| l.max(done)));
                }
                _ => {
                    cancelled += 1;
                    if let Some(done) = at("OrderCancelled") {
                        last_decided = Some(last_decided.map_or(done, |l| l.max(done)));
                    }
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        // From the first placement to the last decision, by the events' own times.
        let span = match (first_placed, last_decided) {
            (Some(first), Some(last)) => {
                ((last - first).num_milliseconds() as f64 / 1000.0).max(0.001)
            }
            _ => seconds as f64,
        };
        let mut cost = Cost::per_order(&usage, confirmed + cancelled);
        cost.system_idle_cpu_pct = Some(cost::idle_percent(idle));
        if !settled {
            cost.notes.push(format!(
                "{backend} {rate}: the system was not idle within 60 s of the last decision; \
                 its cost is measured until then"
            ));
        }
        if let (true, Err(why)) = (on_postgres, statements) {
            cost.notes.push(why.clone());
        }
        runs.push(E2eRun {
            backend,
            offered_per_s: rate,
            accepted: ids.len(),
            confirmed,
            cancelled,
            decided_per_s: (confirmed + cancelled) as f64 / span,
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            p999_ms: percentile(&latencies, 0.999),
            peak_rss_mib: Some(system.child.id().map_or(0.0, peak_rss_mib)),
            cpu_busy_pct,
            steps: steps
                .into_iter()
                .map(|(from, to, mut times)| {
                    times.sort_by(f64::total_cmp);
                    StepLatency {
                        from,
                        to,
                        p50_ms: percentile(&times, 0.50),
                        p99_ms: percentile(&times, 0.99),
                    }
                })
                .collect(),
            cost,
        });
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_busy_is_the_share_of_ticks_neither_idle_nor_waiting() {
        let before = parse_cpu_line("cpu  100 0 50 800 50 0 0 0 0 0").unwrap();
        assert_eq!(before, (150, 1000));
        let after = parse_cpu_line("cpu  250 0 100 1000 50 0 0 0 0 0").unwrap();
        assert_eq!(busy_percent(before, after), Some(50.0));
        assert_eq!(
            parse_cpu_line("cpu0 1 2 3 4"),
            None,
            "the machine's line only"
        );
        assert_eq!(busy_percent(before, before), None, "no time passed");
    }

    #[test]
    fn steps_are_the_times_between_saga_events_up_to_the_confirmation() {
        let history = |ms: [u32; 5]| {
            let names = [
                "OrderPlaced",
                "StockReserved",
                "PaymentCompleted",
                "OrderConfirmed",
                "ShipmentScheduled",
            ];
            Value::Array(
                names
                    .iter()
                    .zip(ms)
                    .map(|(name, ms)| json!({"event_type": name, "at": format!("2026-12-06T10:00:00.{ms:03}+00:00")}))
                    .collect(),
            )
        };
        let mut steps = Vec::new();
        record_steps(&history([0, 10, 25, 30, 50]), &mut steps);
        record_steps(&history([100, 104, 110, 130, 131]), &mut steps);
        let steps: Vec<(&str, &str, Vec<f64>)> = steps
            .iter()
            .map(|(from, to, times)| (from.as_str(), to.as_str(), times.clone()))
            .collect();
        assert_eq!(
            steps,
            vec![
                ("OrderPlaced", "StockReserved", vec![10.0, 4.0]),
                ("StockReserved", "PaymentCompleted", vec![15.0, 6.0]),
                ("PaymentCompleted", "OrderConfirmed", vec![5.0, 20.0]),
            ],
            "each step once per order, none after the confirmation"
        );
    }
}
