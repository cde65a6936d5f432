//! A randomized fault test in the spirit of Jepsen (issue 22). Every component runs in its
//! own process on the test's OWN PostgreSQL cluster and Kafka broker
//! (`scripts/faults-infra.sh`, ports 5433 and 9094), which the test crashes: SIGKILLs of
//! components (then restarts), SIGKILLs of the broker (then restarts on its data),
//! immediate restarts and stops of PostgreSQL. Meanwhile clients race: orders for scarce
//! stock, restocks, bursts of parallel deposits into one wallet, and a customer's cancel
//! against the admin's dispatch of the same confirmed order (together, or one right after
//! the other). Every request carries an `Idempotency-Key`; a 5xx or a broken connection is
//! an unknown outcome, retried with the same key.
//!
//! Afterwards a checker recomputes every invariant from the event stores (each service's
//! `events` table) and compares the read models, a projector rebuilt from offset 0, the
//! topics and what each client was told. Each violation is printed; any fails the test.
//!
//! `SHOP_FAULTS_SEED=N` replays a run's choices (a round prints its own seed);
//! `SHOP_FAULTS_SECONDS=3600` runs faults for an hour, in rounds of
//! `SHOP_FAULTS_ROUND_SECONDS` (default 120), each on a fresh instance. See
//! docs/src/testing-faults.md.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Infra, Instance, ShopProcess};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/faults-infra.sh");
const DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5433/postgres";
const BROKERS: &str = "127.0.0.1:9094";

const COMPONENTS: &[&str] = &[
    "customers",
    "inventory",
    "orders",
    "payments",
    "shipping",
    "projector",
    "read-api",
    "gateway",
];
const SERVICES: &[&str] = &["customers", "inventory", "orders", "payments", "shipping"];
const ENV: &[(&str, &str)] = &[("SHOP_SAGA_TIMEOUT_MS", "30000")];

/// Default seconds of faults (one round): CI's budget.
const DEFAULT_SECONDS: u64 = 60;
const DEFAULT_ROUND_SECONDS: u64 = 120;

/// Scarce products (orders compete for them) and one plentiful one (the races' orders).
const SCARCE: usize = 4;
const SCARCE_STOCK: i64 = 12;
const PLENTIFUL_STOCK: i64 = 100_000;
const CUSTOMERS: usize = 6;
/// The last customer is poor: some of its payments are declined.
const POOR_DEPOSIT: i64 = 700;
const RICH_DEPOSIT: i64 = 1_000_000;

/// How long one logical request is retried through an outage.
const RETRY_FOR: Duration = Duration::from_secs(90);
/// How long every order may take to be decided after the faults stop.
const DECIDE: Duration = Duration::from_secs(150);
/// How long the read models, topics and compensations may take to settle after that.
const SETTLE: Duration = Duration::from_secs(45);

// --- what the clients were told ------------------------------------------------------

/// What a client was told about one logical request (after its retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    /// 2xx: it must have taken effect.
    Accepted,
    /// 4xx at the first attempt: it must not have taken effect.
    Refused(u16),
    /// 4xx on a retry after an outage: an earlier attempt may have taken effect (with the
    /// `Idempotency-Key` honoured, the retry would have been told the first answer).
    RefusedOnRetry(u16),
    /// 5xx or no answer, until the retries gave up: it may or may not have.
    Unknown,
}

/// One logical request's outcome: the last answer's body, and how many attempts met an
/// outage (each may have taken effect when the server does not honour the key).
struct Reply {
    told: Told,
    body: Value,
    unknown_attempts: usize,
}

/// POSTs `body` with one `Idempotency-Key` until a 2xx or 4xx, or until [`RETRY_FOR`].
async fn post(client: &Client, path: &str, body: Value) -> Reply {
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + RETRY_FOR;
    let mut unknown_attempts = 0;
    loop {
        let mut request = client
            .http
            .post(format!("{}{path}", client.base))
            .header("Idempotency-Key", &key)
            .timeout(Duration::from_secs(20))
            .json(&body);
        if let Some(token) = &client.token {
            request = request.bearer_auth(token);
        }
        if let Ok(response) = request.send().await {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status.is_success() {
                return Reply {
                    told: Told::Accepted,
                    body,
                    unknown_attempts,
                };
            }
            if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                return Reply {
                    told: if unknown_attempts == 0 {
                        Told::Refused(status.as_u16())
                    } else {
                        Told::RefusedOnRetry(status.as_u16())
                    },
                    body,
                    unknown_attempts,
                };
            }
        }
        unknown_attempts += 1;
        if Instant::now() > deadline {
            return Reply {
                told: Told::Unknown,
                body: Value::Null,
                unknown_attempts,
            };
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[derive(Default)]
struct Ledger {
    /// order id → customer, for every order answered 202.
    orders_accepted: Vec<String>,
    orders_refused: usize,
    orders_unknown: usize,
    /// (customer, unique amount, told, attempts that met an outage)
    deposits: Vec<(String, i64, Told, usize)>,
    /// (product, quantity, told, attempts that met an outage)
    restocks: Vec<(String, i64, Told, usize)>,
    /// order → answers to the customer's cancels
    cancels: BTreeMap<String, Vec<Told>>,
    /// order → answers to the admin's dispatches
    dispatches: BTreeMap<String, Vec<Told>>,
    /// race mode → count
    races: BTreeMap<&'static str, usize>,
    /// requests that met at least one outage
    retried: usize,
}

type Shared = Arc<Mutex<Ledger>>;

fn note(ledger: &Shared, f: impl FnOnce(&mut Ledger)) {
    f(&mut ledger.lock().unwrap_or_else(|e| e.into_inner()));
}

// --- the test's own infrastructure -------------------------------------------------------

/// Runs `scripts/faults-infra.sh COMMAND`; its error output when it fails.
async fn infra_script(command: &str) -> Result<(), String> {
    let out = tokio::process::Command::new(SCRIPT)
        .arg(command)
        .output()
        .await
        .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{SCRIPT} {command} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Removes the test's cluster and broker when dropped, even after a panic.
struct InfraGuard;

impl Drop for InfraGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(SCRIPT)
            .arg("down")
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// Holds `~/.cache/shop/faults.lock` (`SHOP_CACHE_DIR`) until dropped, waiting while
/// another fault run holds it. The lock goes with the process, however it ends.
async fn exclusive_lock() -> std::fs::File {
    let dir = std::env::var("SHOP_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
                .join(".cache/shop")
        });
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("faults.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    if file.try_lock().is_err() {
        println!(
            "faults: another fault run holds {}; waiting for it",
            path.display()
        );
        let t0 = Instant::now();
        let file = tokio::task::spawn_blocking(move || {
            file.lock().unwrap();
            file
        })
        .await
        .unwrap();
        println!("faults: waited {:.0} s", t0.elapsed().as_secs_f64());
        return file;
    }
    file
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_and_races_break_no_invariant() {
    let seed = env_u64("SHOP_FAULTS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            % 1_000_000_000_000
    });
    let total = env_u64("SHOP_FAULTS_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let per_round = env_u64("SHOP_FAULTS_ROUND_SECONDS")
        .unwrap_or(DEFAULT_ROUND_SECONDS)
        .max(10);
    let rounds = total.div_ceil(per_round).max(1);
    let kinds: Vec<&str> = fault_kinds().iter().map(|(k, _)| *k).collect();
    println!(
        "faults: seed {seed} (SHOP_FAULTS_SEED), {total} s of faults (SHOP_FAULTS_SECONDS) in {rounds} round(s), kinds {kinds:?}"
    );

    // One fault run at a time on this machine: the cluster, the broker and their ports
    // are shared by every checkout (several worktrees run the suite at once).
    let _lock = exclusive_lock().await;
    let guard = InfraGuard;
    if let Err(e) = infra_script("up").await {
        panic!("the fault test's own PostgreSQL (5433) and Kafka (9094) did not start — run `scripts/infra.sh up` first (it installs PostgreSQL, Java and the Kafka jars):\n{e}");
    }
    let infra = Infra {
        database_url: DATABASE_URL.into(),
        kafka_brokers: BROKERS.into(),
    };

    let mut summaries = Vec::new();
    let mut total_violations = 0;
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut orders = 0;
    for round in 0..rounds {
        let seconds = (total - round * per_round).min(per_round).max(5);
        let round_seed = seed.wrapping_add(round);
        let summary = run_round(&infra, round + 1, round_seed, seconds).await;
        total_violations += summary.violations;
        orders += summary.orders;
        for (kind, n) in summary.faults {
            *faults.entry(kind).or_default() += n;
        }
        for (kind, n) in summary.violations_by_kind {
            *kinds.entry(kind).or_default() += n;
        }
        summaries.push(summary.line);
    }
    println!("faults: === {rounds} round(s), seed {seed} ===");
    for line in &summaries {
        println!("faults: {line}");
    }
    println!(
        "faults: in all: {rounds} round(s), {} faults {faults:?}, {orders} orders, {total_violations} violations {kinds:?}",
        faults.values().sum::<usize>()
    );
    drop(guard);
    assert_eq!(
        total_violations, 0,
        "faults: {total_violations} invariant violations (seed {seed}); see the `VIOLATION` lines above"
    );
}

struct RoundSummary {
    line: String,
    faults: BTreeMap<String, usize>,
    orders: usize,
    violations: usize,
    violations_by_kind: BTreeMap<String, usize>,
}

/// The PostgreSQL cluster's system identifier: another `up` in the meantime changes it.
async fn cluster_identity() -> i64 {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(DATABASE_URL)
        .await
        .unwrap_or_else(|e| panic!("faults: cannot connect to {DATABASE_URL}: {e}"));
    let id = sqlx::query_scalar("SELECT system_identifier FROM pg_control_system()")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    id
}

/// The processes of an instance, by component.
type Processes = Arc<tokio::sync::Mutex<BTreeMap<String, ShopProcess>>>;

async fn start(instance: &Instance, component: &str) -> Result<ShopProcess, String> {
    let mut last = String::new();
    for _ in 0..4 {
        match instance
            .try_spawn(&[component], ENV, Duration::from_secs(120))
            .await
        {
            Ok(process) => return Ok(process),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last)
}

async fn run_round(infra: &Infra, round: u64, seed: u64, seconds: u64) -> RoundSummary {
    println!("faults: round {round}: seed {seed} (SHOP_FAULTS_SEED={seed} replays its choices), {seconds} s of faults");
    let mut rng = fastrand::Rng::with_seed(seed);
    let instance = Instance::on_infra(infra.clone());
    let processes: Processes = Default::default();
    for component in COMPONENTS {
        let process = start(&instance, component)
            .await
            .unwrap_or_else(|e| panic!("faults: {e}"));
        processes
            .lock()
            .await
            .insert(component.to_string(), process);
    }
    let base = instance.gateway_url();
    let admin = Arc::new(Client::admin(&base).await);
    let ledger: Shared = Default::default();

    // Products: a few scarce ones and one plentiful one for the races.
    let mut scarce = Vec::new();
    for i in 0..SCARCE {
        let price = 100 * (i as i64 + 1);
        scarce.push(
            admin
                .add_product(&format!("FAULT-{i}"), price, SCARCE_STOCK)
                .await,
        );
    }
    let plentiful = admin.add_product("FAULT-PLENTY", 50, PLENTIFUL_STOCK).await;
    let mut customers = Vec::new();
    let unique = Arc::new(AtomicI64::new(1));
    for i in 0..CUSTOMERS {
        let (client, id) = Client::customer(
            &base,
            &format!("Faulty {i}"),
            &format!("faulty{i}-{seed}@example.com"),
        )
        .await;
        // The amount's last digits make it unique, so the checker can find each deposit.
        let amount = if i + 1 == CUSTOMERS {
            POOR_DEPOSIT
        } else {
            RICH_DEPOSIT
        } + unique.fetch_add(1, SeqCst);
        let reply = post(
            &client,
            &format!("/api/customers/{id}/wallet/deposits"),
            json!({ "amount": amount }),
        )
        .await;
        assert_eq!(reply.told, Told::Accepted, "{:?}", reply.body);
        note(&ledger, |l| {
            l.deposits.push((id.clone(), amount, reply.told, 0));
        });
        customers.push((Arc::new(client), id));
    }
    instance.wait_for_catalogue(SCARCE as i64 + 1).await;
    let cluster = cluster_identity().await;
    let shipping = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&format!(
            "{}/{}",
            DATABASE_URL.rsplit_once('/').unwrap().0,
            instance.database("shipping")
        ))
        .await
        .unwrap();

    // The load and the faults, for `seconds`.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..2u64 {
        workers.push(tokio::spawn(place_orders(
            seed.wrapping_mul(31).wrapping_add(worker),
            customers.clone(),
            scarce.clone(),
            ledger.clone(),
            stop.clone(),
        )));
    }
    workers.push(tokio::spawn(deposit_bursts(
        seed.wrapping_mul(37),
        customers.clone(),
        unique.clone(),
        ledger.clone(),
        stop.clone(),
    )));
    workers.push(tokio::spawn(restock(
        seed.wrapping_mul(41),
        admin.clone(),
        scarce.clone(),
        ledger.clone(),
        stop.clone(),
    )));
    for racer in 0..2u64 {
        let (customer, _) = customers[racer as usize].clone();
        workers.push(tokio::spawn(race_cancel_and_dispatch(
            seed.wrapping_mul(43).wrapping_add(racer),
            customer,
            admin.clone(),
            plentiful.clone(),
            shipping.clone(),
            ledger.clone(),
            stop.clone(),
        )));
    }
    let faults = inject_faults(
        fastrand::Rng::with_seed(rng.u64(..)),
        &instance,
        processes.clone(),
        Duration::from_secs(seconds),
    )
    .await;
    stop.store(true, SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    shipping.close().await;

    // A projector of its own reads every topic from offset 0 meanwhile: the rebuild the
    // read models must equal.
    let sibling = instance.sibling_here();
    let rebuilt = start(&sibling, "projector")
        .await
        .unwrap_or_else(|e| panic!("faults: {e}"));

    let ledger = Arc::try_unwrap(ledger)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    assert_eq!(
        cluster_identity().await,
        cluster,
        "faults: the PostgreSQL cluster on 5433 was replaced during the round — another run of scripts/faults-infra.sh (a fault test without the lock?) took it over"
    );
    let checker = Checker::open(&instance, &sibling).await;
    checker.wait_until_decided(&ledger).await;
    let deadline = Instant::now() + SETTLE;
    let (state, violations) = loop {
        let state = checker.load().await;
        let mut violations = state.violations(&ledger);
        violations.extend(checker.rebuild_violations().await);
        violations.extend(checker.topic_violations(&state).await);
        if violations.is_empty() || Instant::now() > deadline {
            break (state, violations);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    for violation in &violations {
        println!("faults: VIOLATION round {round} seed {seed}: {violation}");
    }

    // The round's summary.
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for violation in &violations {
        let kind = violation.split(':').next().unwrap_or_default().to_string();
        *by_kind.entry(kind).or_default() += 1;
    }
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for order in state.orders.values() {
        *outcomes.entry(order.outcome()).or_default() += 1;
    }
    let mut races: BTreeMap<String, usize> = BTreeMap::new();
    for id in ledger.cancels.keys() {
        let outcome = state
            .orders
            .get(id)
            .map_or("missing".into(), |o| o.outcome());
        *races.entry(outcome).or_default() += 1;
    }
    let deposits = ledger.deposits.len();
    let deposits_refused = ledger
        .deposits
        .iter()
        .filter(|d| matches!(d.2, Told::Refused(_) | Told::RefusedOnRetry(_)))
        .count();
    let line = format!(
        "round {round} seed {seed}: faults {faults:?}; orders {} accepted, {} refused, {} unknown, outcomes {outcomes:?}; {deposits} deposits ({deposits_refused} refused); {} restocks; races {:?} ending {races:?}; {} requests retried through an outage; violations {} {by_kind:?}",
        ledger.orders_accepted.len(),
        ledger.orders_refused,
        ledger.orders_unknown,
        ledger.restocks.len(),
        ledger.races,
        ledger.retried,
        violations.len(),
    );
    println!("faults: {line}");

    checker.close().await;
    rebuilt.kill().await;
    for (_, process) in std::mem::take(&mut *processes.lock().await) {
        process.kill().await;
    }
    instance.cleanup().await;
    sibling.cleanup().await;
    RoundSummary {
        line,
        faults,
        orders: state.orders.len(),
        violations: violations.len(),
        violations_by_kind: by_kind,
    }
}

// --- the clients -----------------------------------------------------------------------

/// Orders for scarce stock: a random customer, one or two products, one to three units.
async fn place_orders(
    seed: u64,
    customers: Vec<(Arc<Client>, String)>,
    products: Vec<String>,
    ledger: Shared,
    stop: Arc<AtomicBool>,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(SeqCst) {
        let (customer, _) = &customers[rng.usize(..customers.len())];
        let mut picks: Vec<usize> = (0..products.len()).collect();
        rng.shuffle(&mut picks);
        let lines: Vec<Value> = picks[..rng.usize(1..=2)]
            .iter()
            .map(|&p| json!({"product_id": products[p], "quantity": rng.i64(1..=3)}))
            .collect();
        let reply = post(customer, "/api/orders", json!({ "lines": lines })).await;
        note(&ledger, |l| {
            l.retried += usize::from(reply.unknown_attempts > 0);
            match reply.told {
                Told::Accepted => l
                    .orders_accepted
                    .push(reply.body["order_id"].as_str().unwrap_or_default().into()),
                Told::Refused(_) | Told::RefusedOnRetry(_) => l.orders_refused += 1,
                Told::Unknown => l.orders_unknown += 1,
            }
        });
        tokio::time::sleep(Duration::from_millis(rng.u64(100..400))).await;
    }
}

/// Bursts of parallel deposits into one wallet, each of a unique amount.
async fn deposit_bursts(
    seed: u64,
    customers: Vec<(Arc<Client>, String)>,
    unique: Arc<AtomicI64>,
    ledger: Shared,
    stop: Arc<AtomicBool>,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(SeqCst) {
        let (customer, id) = customers[rng.usize(..customers.len())].clone();
        let burst = rng.usize(10..=30);
        let deposits = (0..burst).map(|_| {
            let amount = 1_000 + unique.fetch_add(1, SeqCst);
            let (customer, id) = (customer.clone(), id.clone());
            async move {
                let reply = post(
                    &customer,
                    &format!("/api/customers/{id}/wallet/deposits"),
                    json!({ "amount": amount }),
                )
                .await;
                (amount, reply)
            }
        });
        for (amount, reply) in futures::future::join_all(deposits).await {
            note(&ledger, |l| {
                l.retried += usize::from(reply.unknown_attempts > 0);
                l.deposits
                    .push((id.clone(), amount, reply.told, reply.unknown_attempts));
            });
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(1_000..3_000))).await;
    }
}

/// The admin restocks a random scarce product now and then.
async fn restock(
    seed: u64,
    admin: Arc<Client>,
    products: Vec<String>,
    ledger: Shared,
    stop: Arc<AtomicBool>,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.u64(1_000..3_000))).await;
        let product = products[rng.usize(..products.len())].clone();
        let quantity = rng.i64(1..=6);
        let reply = post(
            &admin,
            &format!("/api/products/{product}/restock"),
            json!({ "quantity": quantity }),
        )
        .await;
        note(&ledger, |l| {
            l.retried += usize::from(reply.unknown_attempts > 0);
            l.restocks
                .push((product, quantity, reply.told, reply.unknown_attempts));
        });
    }
}

/// Whether shipping has scheduled the order's parcel (read from its event store; a
/// database outage is a "not yet").
async fn scheduled(shipping: &sqlx::PgPool, order: &str) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM events WHERE event_type = 'ShipmentScheduled' AND data->>'order_id' = $1",
    )
    .bind(order)
    .fetch_one(shipping)
    .await
    .is_ok_and(|n| n > 0)
}

/// A customer's cancel against the admin's dispatch of the same confirmed order: sent
/// together, or one right after the other; a dispatched parcel is sometimes delivered.
async fn race_cancel_and_dispatch(
    seed: u64,
    customer: Arc<Client>,
    admin: Arc<Client>,
    product: String,
    shipping: sqlx::PgPool,
    ledger: Shared,
    stop: Arc<AtomicBool>,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(SeqCst) {
        let reply = post(
            &customer,
            "/api/orders",
            json!({"lines": [{"product_id": product, "quantity": 1}]}),
        )
        .await;
        let order = reply.body["order_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        note(&ledger, |l| {
            l.retried += usize::from(reply.unknown_attempts > 0);
            match reply.told {
                Told::Accepted => l.orders_accepted.push(order.clone()),
                Told::Refused(_) | Told::RefusedOnRetry(_) => l.orders_refused += 1,
                Told::Unknown => l.orders_unknown += 1,
            }
        });
        if reply.told != Told::Accepted {
            continue;
        }
        // Confirmed and scheduled; an order the faults delay for long is left to the saga.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut ready = false;
        while Instant::now() < deadline && !stop.load(SeqCst) {
            if scheduled(&shipping, &order).await {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ready {
            continue;
        }
        let cancel_path = format!("/api/orders/{order}/cancel");
        let dispatch_path = format!("/api/shipments/{order}/dispatch");
        let mode = [
            "together",
            "cancel-then-dispatch",
            "dispatch-then-cancel",
            "cancel-pause-dispatch",
        ][rng.usize(..4)];
        let (cancel, dispatch) = match mode {
            "together" => {
                tokio::join!(
                    post(&customer, &cancel_path, json!({})),
                    post(&admin, &dispatch_path, json!({}))
                )
            }
            "cancel-then-dispatch" => {
                let cancel = post(&customer, &cancel_path, json!({})).await;
                (cancel, post(&admin, &dispatch_path, json!({})).await)
            }
            "cancel-pause-dispatch" => {
                // The admin is a moment late: the cancellation may have been decided.
                let cancel = post(&customer, &cancel_path, json!({})).await;
                tokio::time::sleep(Duration::from_millis(rng.u64(100..3_000))).await;
                (cancel, post(&admin, &dispatch_path, json!({})).await)
            }
            _ => {
                let dispatch = post(&admin, &dispatch_path, json!({})).await;
                (post(&customer, &cancel_path, json!({})).await, dispatch)
            }
        };
        if dispatch.told == Told::Accepted && rng.bool() {
            let _ = post(
                &admin,
                &format!("/api/shipments/{order}/deliver"),
                json!({}),
            )
            .await;
        }
        note(&ledger, |l| {
            *l.races.entry(mode).or_default() += 1;
            l.retried += usize::from(cancel.unknown_attempts > 0);
            l.retried += usize::from(dispatch.unknown_attempts > 0);
            l.cancels
                .entry(order.clone())
                .or_default()
                .push(cancel.told);
            l.dispatches
                .entry(order.clone())
                .or_default()
                .push(dispatch.told);
        });
        tokio::time::sleep(Duration::from_millis(rng.u64(50..300))).await;
    }
}

// --- the faults ------------------------------------------------------------------------

/// The kinds of fault, with their weights in the random choice (a broker kill costs
/// 15–40 s of recovery, so it is the rarest).
const KINDS: &[(&str, u32)] = &[
    ("sigkill-component", 30),
    ("sigstop-component", 10),
    ("pg-immediate-restart", 25),
    ("pg-immediate-stop", 20),
    ("sigkill-broker", 15),
];

/// Injects one fault after another for `window`, chosen by `rng`; then leaves every
/// process, PostgreSQL and the broker running. Returns the faults by kind.
async fn inject_faults(
    mut rng: fastrand::Rng,
    instance: &Instance,
    processes: Processes,
    window: Duration,
) -> BTreeMap<String, usize> {
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    let end = Instant::now() + window;
    // `SHOP_FAULTS_KINDS=pg-immediate-restart,pg-immediate-stop` keeps only those kinds.
    let kinds = fault_kinds();
    // Every kind once, in a random order (the slow broker kill last), so that a short run
    // meets each; then by weight.
    let mut first: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
    rng.shuffle(&mut first);
    first.sort_by_key(|k| std::cmp::Reverse(*k == "sigkill-broker"));
    let weights: u32 = kinds.iter().map(|(_, w)| w).sum();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.u64(1_000..4_000))).await;
        let kind = first.pop().unwrap_or_else(|| {
            let mut pick = rng.u32(..weights);
            kinds
                .iter()
                .find(|(_, w)| {
                    let hit = pick < *w;
                    pick = pick.saturating_sub(*w);
                    hit
                })
                .map(|(k, _)| *k)
                .unwrap()
        });
        inject(&mut rng, kind, instance, &processes).await;
        *faults.entry(kind.to_string()).or_default() += 1;
        revive(instance, &processes, &mut faults).await;
    }
    revive(instance, &processes, &mut faults).await;
    faults
}

/// The kinds of fault this run injects, with their weights (`SHOP_FAULTS_KINDS`).
fn fault_kinds() -> Vec<(&'static str, u32)> {
    let only = std::env::var("SHOP_FAULTS_KINDS").unwrap_or_default();
    let kinds: Vec<(&str, u32)> = KINDS
        .iter()
        .copied()
        .filter(|(k, _)| only.is_empty() || only.split(',').any(|o| o.trim() == *k))
        .collect();
    assert!(
        !kinds.is_empty(),
        "SHOP_FAULTS_KINDS={only:?} names none of {:?}",
        KINDS.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    kinds
}

fn script_or_panic(result: Result<(), String>) {
    result.unwrap_or_else(|e| panic!("faults: {e}"));
}

async fn inject(rng: &mut fastrand::Rng, kind: &str, instance: &Instance, processes: &Processes) {
    match kind {
        "sigkill-component" => {
            let victim = COMPONENTS[rng.usize(..COMPONENTS.len())];
            if let Some(process) = processes.lock().await.remove(victim) {
                process.kill().await;
            }
            let down = rng.u64(200..2_000);
            println!("faults: SIGKILL {victim}, restart after {down} ms");
            tokio::time::sleep(Duration::from_millis(down)).await;
            let process = start(instance, victim)
                .await
                .unwrap_or_else(|e| panic!("faults: {victim} did not come back: {e}"));
            processes.lock().await.insert(victim.to_string(), process);
        }
        "sigstop-component" => {
            let victim = COMPONENTS[rng.usize(..COMPONENTS.len())];
            let pause = rng.u64(500..5_000);
            let pid = processes
                .lock()
                .await
                .get(victim)
                .and_then(|p| p.child.id());
            println!("faults: SIGSTOP {victim} for {pause} ms");
            if let Some(pid) = pid {
                signal(pid, "-STOP").await;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                signal(pid, "-CONT").await;
            }
        }
        "pg-immediate-restart" => {
            println!("faults: PostgreSQL immediate restart");
            script_or_panic(infra_script("pg-crash").await);
        }
        "pg-immediate-stop" => {
            let down = rng.u64(1_000..4_000);
            println!("faults: PostgreSQL immediate stop for {down} ms");
            script_or_panic(infra_script("pg-stop").await);
            tokio::time::sleep(Duration::from_millis(down)).await;
            script_or_panic(infra_script("pg-start").await);
        }
        "sigkill-broker" => {
            let down = rng.u64(500..3_000);
            println!("faults: SIGKILL the broker for {down} ms");
            script_or_panic(infra_script("kafka-kill").await);
            tokio::time::sleep(Duration::from_millis(down)).await;
            let t0 = Instant::now();
            script_or_panic(infra_script("kafka-start").await);
            println!(
                "faults: broker back after {:.1} s",
                t0.elapsed().as_secs_f64()
            );
        }
        other => unreachable!("fault kind {other}"),
    }
}

/// Sends a signal to a process of the test's own (by its id).
async fn signal(pid: u32, signal: &str) {
    let _ = tokio::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await;
}

/// A component that died of a fault it did not receive comes back too (and is counted:
/// `exited-on-its-own:COMPONENT`).
async fn revive(instance: &Instance, processes: &Processes, faults: &mut BTreeMap<String, usize>) {
    let mut map = processes.lock().await;
    let exited: Vec<String> = map
        .iter_mut()
        .filter_map(|(c, p)| matches!(p.child.try_wait(), Ok(Some(_))).then(|| c.clone()))
        .collect();
    for component in exited {
        let log = map.remove(&component).map(|p| p.log_path);
        println!("faults: {component} exited on its own (log {log:?}); restarting it");
        *faults
            .entry(format!("exited-on-its-own:{component}"))
            .or_default() += 1;
        let process = start(instance, &component)
            .await
            .unwrap_or_else(|e| panic!("faults: {component} did not come back: {e}"));
        map.insert(component, process);
    }
}

// --- the checker -----------------------------------------------------------------------

/// One event of a service's event store.
struct Stored {
    position: i64,
    event_id: String,
    aggregate_type: String,
    aggregate_id: String,
    event_type: String,
    data: Value,
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or_default()
}

/// `(product_id, quantity)` of an event's `lines`.
fn lines(data: &Value) -> Vec<(String, i64)> {
    data["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|l| (text(&l["product_id"]), int(&l["quantity"])))
                .collect()
        })
        .unwrap_or_default()
}

/// An order as the event stores tell it.
#[derive(Default, Debug)]
struct OrderFacts {
    customer_id: String,
    total: i64,
    lines: Vec<(String, i64)>,
    /// From the orders store's last status event.
    status: String,
    cancel_reason: Option<String>,
    /// A cancellation requested and not yet decided (the new protocol).
    cancellation_pending: bool,
    /// Every event type about this order, in any store, with its count.
    events: BTreeMap<String, usize>,
}

impl OrderFacts {
    fn fulfilled(&self) -> bool {
        matches!(self.status.as_str(), "CONFIRMED" | "SHIPPED" | "DELIVERED")
    }

    fn terminal(&self) -> bool {
        (self.fulfilled() || self.status == "CANCELLED") && !self.cancellation_pending
    }

    fn has(&self, event: &str) -> usize {
        self.events.get(event).copied().unwrap_or(0)
    }

    fn outcome(&self) -> String {
        match &self.cancel_reason {
            Some(reason) => format!("{}/{reason}", self.status),
            None => self.status.clone(),
        }
    }
}

#[derive(Default, Debug)]
struct WalletFacts {
    deposits: i64,
    charged: i64,
    refunded: i64,
    /// amount → how many FundsDeposited of that amount
    deposit_amounts: BTreeMap<i64, usize>,
}

impl WalletFacts {
    fn balance(&self) -> i64 {
        self.deposits - self.charged + self.refunded
    }
}

/// `(received, available, reserved, sold)` of a product.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct StockFacts {
    received: i64,
    available: i64,
    reserved: i64,
    sold: i64,
}

/// Everything the checks compare, read at one moment.
#[derive(Default)]
struct State {
    /// service → its events, by position
    events: BTreeMap<String, Vec<Stored>>,
    orders: BTreeMap<String, OrderFacts>,
    wallets: BTreeMap<String, WalletFacts>,
    /// order → (charged amounts, refunded amounts)
    charges: BTreeMap<String, (Vec<i64>, Vec<i64>)>,
    stock: BTreeMap<String, StockFacts>,
    /// product → restocked quantity in the store
    restocked: BTreeMap<String, i64>,
    /// what went below zero while replaying the stores in append order
    negative: Vec<String>,
    /// inventory's stock table: product → (available, reserved, sold)
    stock_table: BTreeMap<String, (i64, i64, i64)>,
    /// read model: order → (status, cancel_reason, total)
    read_orders: BTreeMap<String, (String, Option<String>, i64)>,
    /// read model: product → (received, reserved, sold)
    read_products: BTreeMap<String, (i64, i64, i64)>,
    /// read model: customer → (wallet_balance, lifetime_spend, orders_count)
    read_customers: BTreeMap<String, (i64, i64, i64)>,
    outbox_rows: i64,
}

struct Checker {
    stores: BTreeMap<String, sqlx::PgPool>,
    read: sqlx::PgPool,
    rebuilt: shop_sql::Pool,
    live: shop_sql::Pool,
    brokers: String,
    topic_prefix: String,
}

impl Checker {
    async fn open(instance: &Instance, sibling: &Instance) -> Self {
        let mut stores = BTreeMap::new();
        for service in SERVICES {
            stores.insert(service.to_string(), instance.pool(service).await);
        }
        Checker {
            stores,
            read: instance.pool("read").await,
            live: instance.store("read").await,
            rebuilt: sibling.store("read").await,
            brokers: instance.infra.kafka_brokers.clone(),
            topic_prefix: instance.topic_prefix.clone(),
        }
    }

    async fn close(self) {
        for pool in self.stores.into_values() {
            pool.close().await;
        }
        self.read.close().await;
        self.live.close().await;
        self.rebuilt.close().await;
    }

    /// Waits until every order in the orders store is decided (and every accepted one is
    /// there) and every outbox is empty, or [`DECIDE`] passes (the checks then say what
    /// is not).
    async fn wait_until_decided(&self, ledger: &Ledger) {
        let deadline = Instant::now() + DECIDE;
        loop {
            let state = self.load().await;
            let undecided = state.orders.values().filter(|o| !o.terminal()).count();
            let missing = ledger
                .orders_accepted
                .iter()
                .filter(|id| !state.orders.contains_key(*id))
                .count();
            if undecided == 0 && missing == 0 && state.outbox_rows == 0 {
                return;
            }
            if Instant::now() > deadline {
                println!("faults: after {DECIDE:?}: {undecided} orders undecided, {missing} accepted orders missing, {} outbox rows", state.outbox_rows);
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn load(&self) -> State {
        let mut state = State::default();
        for (service, pool) in &self.stores {
            let rows = sqlx::query_as::<_, (i64, String, String, String, String, Value)>(
                "SELECT position, event_id::text, aggregate_type, aggregate_id, event_type, data
                 FROM events ORDER BY position",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            let events = rows
                .into_iter()
                .map(
                    |(position, event_id, aggregate_type, aggregate_id, event_type, data)| Stored {
                        position,
                        event_id,
                        aggregate_type,
                        aggregate_id,
                        event_type,
                        data,
                    },
                )
                .collect();
            state.events.insert(service.clone(), events);
            state.outbox_rows += sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
                .fetch_one(pool)
                .await
                .unwrap();
        }
        state.derive();
        state.stock_table = sqlx::query_as::<_, (uuid::Uuid, i64, i64, i64)>(
            "SELECT product_id, available, reserved, sold FROM stock",
        )
        .fetch_all(&self.stores["inventory"])
        .await
        .unwrap()
        .into_iter()
        .map(|(id, a, r, s)| (id.to_string(), (a, r, s)))
        .collect();
        state.read_orders = sqlx::query_as::<_, (uuid::Uuid, String, Option<String>, i64)>(
            "SELECT order_id, status, cancel_reason, total FROM orders",
        )
        .fetch_all(&self.read)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, status, reason, total)| (id.to_string(), (status, reason, total)))
        .collect();
        state.read_products = sqlx::query_as::<_, (uuid::Uuid, i64, Option<i64>, Option<i64>)>(
            "SELECT p.product_id, p.received, s.reserved, s.sold
             FROM products p LEFT JOIN product_stock s USING (product_id)",
        )
        .fetch_all(&self.read)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, received, reserved, sold)| {
            (
                id.to_string(),
                (received, reserved.unwrap_or(0), sold.unwrap_or(0)),
            )
        })
        .collect();
        state.read_customers = sqlx::query_as::<_, (uuid::Uuid, i64, i64, i64)>(
            "SELECT customer_id, wallet_balance, lifetime_spend, orders_count FROM customer_figures",
        )
        .fetch_all(&self.read)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, b, s, n)| (id.to_string(), (b, s, n)))
        .collect();
        state
    }

    /// The read models equal, row for row, what a projector of its own built from
    /// offset 0 of the same topics.
    async fn rebuild_violations(&self) -> Vec<String> {
        let live = common::read_model_snapshot(&self.live, 1).await;
        let rebuilt = common::read_model_snapshot(&self.rebuilt, 1).await;
        let mut v = Vec::new();
        for ((table, live_rows), (_, rebuilt_rows)) in live.iter().zip(&rebuilt) {
            let live_set: BTreeSet<&String> = live_rows.iter().collect();
            let rebuilt_set: BTreeSet<&String> = rebuilt_rows.iter().collect();
            let only_live: Vec<_> = live_set.difference(&rebuilt_set).collect();
            let only_rebuilt: Vec<_> = rebuilt_set.difference(&live_set).collect();
            if only_live.is_empty() && only_rebuilt.is_empty() {
                continue;
            }
            v.push(format!(
                "rebuild: table {table}: {} rows only in the live read model, {} only in the rebuild; e.g. live {:?}, rebuild {:?}",
                only_live.len(),
                only_rebuilt.len(),
                only_live.iter().take(3).collect::<Vec<_>>(),
                only_rebuilt.iter().take(3).collect::<Vec<_>>(),
            ));
        }
        v
    }

    /// Every stored event's id is on its service's topic, nothing on a topic is not
    /// stored, and nothing went to the dead-letter topic.
    async fn topic_violations(&self, state: &State) -> Vec<String> {
        let mut v = Vec::new();
        for service in SERVICES {
            let topic = format!("{}{service}.events", self.topic_prefix);
            let on_topic: BTreeSet<String> = common::kcat_read(&self.brokers, &topic)
                .await
                .iter()
                .filter_map(|r| r.header("ce_id").map(String::from))
                .collect();
            let stored: BTreeSet<String> = state.events[*service]
                .iter()
                .map(|e| e.event_id.clone())
                .collect();
            let missing: Vec<_> = stored.difference(&on_topic).collect();
            let extra: Vec<_> = on_topic.difference(&stored).collect();
            if !missing.is_empty() {
                v.push(format!(
                    "topic: {} stored {service} events not on {topic}, e.g. {:?}",
                    missing.len(),
                    missing.iter().take(3).collect::<Vec<_>>()
                ));
            }
            if !extra.is_empty() {
                v.push(format!(
                    "topic: {} events on {topic} not in the {service} store, e.g. {:?}",
                    extra.len(),
                    extra.iter().take(3).collect::<Vec<_>>()
                ));
            }
        }
        let dead = common::kcat_read(
            &self.brokers,
            &shop_schemas::topics::dead_letter_topic(&self.topic_prefix),
        )
        .await;
        if !dead.is_empty() {
            v.push(format!(
                "topic: {} records on the dead-letter topic, e.g. {:?}",
                dead.len(),
                dead.first().map(|r| &r.headers)
            ));
        }
        v
    }
}

impl State {
    /// Derives orders, wallets, charges and stock from the stores, in append order.
    fn derive(&mut self) {
        let events = std::mem::take(&mut self.events);
        for e in &events["orders"] {
            if e.aggregate_type != "order" {
                continue;
            }
            let order = self.orders.entry(e.aggregate_id.clone()).or_default();
            *order.events.entry(e.event_type.clone()).or_default() += 1;
            let status = match e.event_type.as_str() {
                "OrderPlaced" => {
                    order.customer_id = text(&e.data["customer_id"]);
                    order.total = int(&e.data["total"]);
                    order.lines = lines(&e.data);
                    "PENDING"
                }
                "OrderConfirmed" => "CONFIRMED",
                "OrderCancelled" => {
                    order.cancel_reason = Some(text(&e.data["reason"]));
                    order.cancellation_pending = false;
                    "CANCELLED"
                }
                "OrderShipped" => "SHIPPED",
                "OrderDelivered" => "DELIVERED",
                "OrderCancellationRequested" => {
                    order.cancellation_pending = true;
                    continue;
                }
                "OrderCancellationRefused" => {
                    order.cancellation_pending = false;
                    continue;
                }
                _ => continue,
            };
            order.status = status.to_string();
        }
        for e in &events["payments"] {
            let wallet = self.wallets.entry(e.aggregate_id.clone()).or_default();
            let amount = int(&e.data["amount"]);
            let order = text(&e.data["order_id"]);
            if !order.is_empty() {
                *self
                    .orders
                    .entry(order.clone())
                    .or_default()
                    .events
                    .entry(e.event_type.clone())
                    .or_default() += 1;
            }
            match e.event_type.as_str() {
                "FundsDeposited" => {
                    wallet.deposits += amount;
                    *wallet.deposit_amounts.entry(amount).or_default() += 1;
                }
                "PaymentCompleted" => {
                    wallet.charged += amount;
                    self.charges.entry(order).or_default().0.push(amount);
                }
                "PaymentRefunded" => {
                    wallet.refunded += amount;
                    self.charges.entry(order).or_default().1.push(amount);
                }
                _ => {}
            }
            if wallet.balance() < 0 {
                self.negative.push(format!(
                    "wallet {} at {} after {} at position {}",
                    e.aggregate_id,
                    wallet.balance(),
                    e.event_type,
                    e.position
                ));
            }
        }
        for e in &events["inventory"] {
            match e.aggregate_type.as_str() {
                "product" => {
                    let stock = self.stock.entry(e.aggregate_id.clone()).or_default();
                    let added = match e.event_type.as_str() {
                        "ProductAdded" => int(&e.data["stock"]),
                        "ProductRestocked" => {
                            *self.restocked.entry(e.aggregate_id.clone()).or_default() +=
                                int(&e.data["quantity"]);
                            int(&e.data["quantity"])
                        }
                        _ => 0,
                    };
                    stock.received += added;
                    stock.available += added;
                }
                "reservation" => {
                    *self
                        .orders
                        .entry(e.aggregate_id.clone())
                        .or_default()
                        .events
                        .entry(e.event_type.clone())
                        .or_default() += 1;
                    for (product, quantity) in lines(&e.data) {
                        let stock = self.stock.entry(product.clone()).or_default();
                        match (e.event_type.as_str(), e.data["released_from"].as_str()) {
                            ("StockReserved", _) => {
                                stock.available -= quantity;
                                stock.reserved += quantity;
                            }
                            ("StockCommitted", _) => {
                                stock.reserved -= quantity;
                                stock.sold += quantity;
                            }
                            ("StockReleased", Some("sold")) => {
                                stock.sold -= quantity;
                                stock.available += quantity;
                            }
                            ("StockReleased", _) => {
                                stock.reserved -= quantity;
                                stock.available += quantity;
                            }
                            _ => {}
                        }
                        if stock.available < 0 || stock.reserved < 0 || stock.sold < 0 {
                            self.negative.push(format!(
                                "product {product} at {stock:?} after {} of order {} at position {}",
                                e.event_type, e.aggregate_id, e.position
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        for e in &events["shipping"] {
            let order = text(&e.data["order_id"]);
            let order = if order.is_empty() {
                e.aggregate_id.clone()
            } else {
                order
            };
            *self
                .orders
                .entry(order)
                .or_default()
                .events
                .entry(e.event_type.clone())
                .or_default() += 1;
        }
        self.events = events;
    }

    fn violations(&self, ledger: &Ledger) -> Vec<String> {
        let mut v = Vec::new();
        self.order_violations(ledger, &mut v);
        self.stock_violations(ledger, &mut v);
        self.money_violations(ledger, &mut v);
        self.race_violations(ledger, &mut v);
        self.read_model_violations(&mut v);
        v
    }

    fn order_violations(&self, ledger: &Ledger, v: &mut Vec<String>) {
        for id in &ledger.orders_accepted {
            if self
                .orders
                .get(id)
                .is_none_or(|o| o.has("OrderPlaced") == 0)
            {
                v.push(format!(
                    "order: accepted order {id} (202) is not in the orders store"
                ));
            }
        }
        let mut ids = BTreeSet::new();
        for (service, events) in &self.events {
            for e in events {
                if !ids.insert(&e.event_id) {
                    v.push(format!(
                        "exactly-once: event id {} stored twice (again in {service})",
                        e.event_id
                    ));
                }
            }
        }
        for (id, order) in &self.orders {
            if order.has("OrderPlaced") == 0 {
                v.push(format!(
                    "order: {id} has {:?} but no OrderPlaced",
                    order.events
                ));
                continue;
            }
            if !order.terminal() {
                v.push(format!(
                    "order: {id} is not terminal in the store: {} (cancellation pending: {})",
                    order.status, order.cancellation_pending
                ));
            }
            for event in [
                "OrderPlaced",
                "OrderConfirmed",
                "OrderCancelled",
                "PaymentCompleted",
                "PaymentRefunded",
                "StockReserved",
                "StockCommitted",
                "StockReleased",
                "ShipmentScheduled",
                "ShipmentDispatched",
                "ShipmentDelivered",
            ] {
                let n = order.has(event);
                if n > 1 {
                    v.push(format!("exactly-once: order {id}: {event} {n} times"));
                }
            }
            if order.has("ShipmentDispatched") > 0 {
                let undone: Vec<&str> = ["OrderCancelled", "PaymentRefunded", "StockReleased"]
                    .into_iter()
                    .filter(|e| order.has(e) > 0)
                    .collect();
                if !undone.is_empty() {
                    v.push(format!(
                        "goods-and-money: order {id} was dispatched and also has {undone:?} ({})",
                        order.outcome()
                    ));
                }
            }
        }
    }

    fn stock_violations(&self, ledger: &Ledger, v: &mut Vec<String>) {
        for negative in &self.negative {
            v.push(format!("stock-or-money: went below zero: {negative}"));
        }
        let mut sold_by_orders: BTreeMap<&str, i64> = BTreeMap::new();
        for order in self.orders.values().filter(|o| o.fulfilled()) {
            for (product, quantity) in &order.lines {
                *sold_by_orders.entry(product.as_str()).or_default() += quantity;
            }
        }
        for (id, s) in &self.stock {
            if s.available + s.reserved + s.sold != s.received {
                v.push(format!(
                    "stock: product {id}: {s:?}: available + reserved + sold ≠ received"
                ));
            }
            if s.reserved != 0 {
                v.push(format!(
                    "stock: product {id}: {} still reserved with every order decided",
                    s.reserved
                ));
            }
            let expected = sold_by_orders.get(id.as_str()).copied().unwrap_or(0);
            if s.sold != expected {
                v.push(format!(
                    "stock: product {id}: {} sold in the store, fulfilled orders hold {expected}",
                    s.sold
                ));
            }
            let table = self.stock_table.get(id);
            if table != Some(&(s.available, s.reserved, s.sold)) {
                v.push(format!(
                    "stock: product {id}: inventory's stock table {table:?}, event store {:?}",
                    (s.available, s.reserved, s.sold)
                ));
            }
        }
        // Restocks: at least every accepted one, at most every one that may have applied.
        let mut bounds: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for (product, quantity, told, unknown) in &ledger.restocks {
            let (low, high) = bounds.entry(product.as_str()).or_default();
            match told {
                Told::Accepted => {
                    *low += quantity;
                    *high += quantity * (1 + *unknown as i64);
                }
                Told::Unknown => *high += quantity * *unknown as i64,
                Told::Refused(_) | Told::RefusedOnRetry(_) => *high += quantity * *unknown as i64,
            }
        }
        for (product, (low, high)) in bounds {
            let stored = self.restocked.get(product).copied().unwrap_or(0);
            if stored < low || stored > high {
                v.push(format!(
                    "client-told: product {product}: {stored} restocked in the store, clients were told {low} (at most {high} with unknown outcomes)"
                ));
            }
        }
    }

    fn money_violations(&self, ledger: &Ledger, v: &mut Vec<String>) {
        for (id, (charged, refunded)) in &self.charges {
            if refunded.len() > charged.len() {
                v.push(format!("money: order {id}: refunded without a charge"));
            }
        }
        for (id, order) in &self.orders {
            if order.has("OrderPlaced") == 0 {
                continue;
            }
            let net = self
                .charges
                .get(id)
                .map_or(0, |(c, r)| c.iter().sum::<i64>() - r.iter().sum::<i64>());
            let expected = if order.status == "CANCELLED" {
                0
            } else if order.fulfilled() {
                order.total
            } else {
                continue;
            };
            if net != expected {
                v.push(format!(
                    "money: order {id} ({}): net charge {net}, expected {expected}",
                    order.outcome()
                ));
            }
        }
        // Each deposit by its unique amount.
        for (customer, amount, told, unknown) in &ledger.deposits {
            let n = self
                .wallets
                .get(customer)
                .and_then(|w| w.deposit_amounts.get(amount))
                .copied()
                .unwrap_or(0);
            let ok = match told {
                Told::Accepted => n == 1,
                Told::Refused(_) => n == 0,
                Told::Unknown => n <= 1,
                Told::RefusedOnRetry(status) => {
                    if n == 1 {
                        v.push(format!(
                            "idempotency: deposit of {amount} into {customer} took effect, and its retry with the same Idempotency-Key was answered {status}"
                        ));
                    }
                    n <= 1
                }
            };
            if !ok {
                let why = if n > 1 && *unknown > 0 {
                    " (a retry with the same Idempotency-Key took effect again)"
                } else {
                    ""
                };
                v.push(format!(
                    "client-told: deposit of {amount} into {customer} answered {told:?} after {unknown} unknown attempts is in the store {n} times{why}"
                ));
            }
        }
    }

    /// Cancel against dispatch, as the clients were told and as the stores say.
    fn race_violations(&self, ledger: &Ledger, v: &mut Vec<String>) {
        let empty = OrderFacts::default();
        for (id, cancels) in &ledger.cancels {
            let dispatches = ledger.dispatches.get(id).cloned().unwrap_or_default();
            let order = self.orders.get(id).unwrap_or(&empty);
            let cancelled = order.has("OrderCancelled") > 0;
            let dispatched = order.has("ShipmentDispatched") > 0;
            let accepted = |told: &[Told]| told.contains(&Told::Accepted);
            let maybe = |told: &[Told]| told.iter().any(|t| !matches!(t, Told::Refused(_)));
            if accepted(&dispatches) && !dispatched {
                v.push(format!(
                    "client-told: order {id}: dispatch answered 202 but no ShipmentDispatched"
                ));
            }
            let on_retry = |told: &[Told]| {
                !accepted(told) && told.iter().any(|t| matches!(t, Told::RefusedOnRetry(_)))
            };
            if on_retry(&dispatches) && dispatched {
                v.push(format!(
                    "idempotency: order {id}: dispatched, and the dispatch's retry with the same Idempotency-Key was answered {dispatches:?}"
                ));
            }
            if on_retry(cancels) && cancelled {
                v.push(format!(
                    "idempotency: order {id}: cancelled, and the cancel's retry with the same Idempotency-Key was answered {cancels:?}"
                ));
            }
            if !maybe(&dispatches) && dispatched {
                v.push(format!(
                    "client-told: order {id}: dispatch refused {dispatches:?} but ShipmentDispatched"
                ));
            }
            if !maybe(cancels)
                && cancelled
                && order.cancel_reason.as_deref() == Some("customer_request")
            {
                v.push(format!(
                    "client-told: order {id}: cancel refused {cancels:?} but cancelled at the customer's request"
                ));
            }
            if accepted(cancels)
                && !cancelled
                && order.has("OrderCancellationRequested") == 0
                && order.has("OrderCancellationRefused") == 0
            {
                v.push(format!(
                    "client-told: order {id}: cancel answered 202 but the store has neither a cancellation nor its request ({})",
                    order.outcome()
                ));
            }
            if accepted(&dispatches) && cancelled {
                v.push(format!(
                    "cancel-vs-dispatch: order {id}: dispatch answered 202 and the cancel {cancels:?} took effect ({})",
                    order.outcome()
                ));
            }
        }
    }

    fn read_model_violations(&self, v: &mut Vec<String>) {
        let mut orders_count: BTreeMap<&str, i64> = BTreeMap::new();
        for (id, order) in &self.orders {
            if order.has("OrderPlaced") == 0 {
                continue;
            }
            *orders_count.entry(order.customer_id.as_str()).or_default() += 1;
            if !order.terminal() {
                continue;
            }
            let derived = (
                order.status.clone(),
                order.cancel_reason.clone(),
                order.total,
            );
            match self.read_orders.get(id) {
                None => v.push(format!("read-model: order {id}: no row")),
                Some(read) if *read != derived => v.push(format!(
                    "read-model: order {id}: read model {read:?}, event store {derived:?}"
                )),
                Some(_) => {}
            }
        }
        for (id, s) in &self.stock {
            let derived = (s.received, s.reserved, s.sold);
            let read = self.read_products.get(id);
            if read != Some(&derived) {
                v.push(format!(
                    "read-model: product {id}: (received, reserved, sold) read model {read:?}, event store {derived:?}"
                ));
            }
        }
        for (id, wallet) in &self.wallets {
            let derived = (
                wallet.balance(),
                wallet.charged - wallet.refunded,
                orders_count.get(id.as_str()).copied().unwrap_or(0),
            );
            let read = self.read_customers.get(id);
            if read != Some(&derived) {
                v.push(format!(
                    "read-model: customer {id}: (balance, spend, orders) read model {read:?}, event stores {derived:?}"
                ));
            }
        }
    }
}
