//! The test harness: starts `shop serve` processes on a fresh instance (own databases,
//! own topic prefix) against the real PostgreSQL and Kafka that `scripts/infra.sh up`
//! starts — or, for an instance on the embedded backend, one `shop dev` process on a
//! fresh data directory — and talks to them over HTTP like a client would.
//!
//! A test that cannot reach PostgreSQL or Kafka fails with a message saying how to start
//! them; it never passes by skipping.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::{self as sql, Dialect, Pool};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ADMIN_PASSWORD: &str = "admin-test-password";
/// The consumer session timeout of the processes tests start: the broker's least
/// (`group.min.session.timeout.ms`, 6 s by default), so a killed member's partitions move
/// as soon as Kafka allows.
pub const KAFKA_SESSION_TIMEOUT_MS: u32 = 6000;
/// What Prometheus presents to read the gateway's `/metrics` (`SHOP_METRICS_TOKEN`).
pub const METRICS_TOKEN: &str = "metrics-test-token";
pub const JWT_SECRET: &str = "test-jwt-secret";

/// Where the test services are.
#[derive(Debug, Clone)]
pub struct Infra {
    pub database_url: String,
    pub kafka_brokers: String,
}

fn reachable(host_port: &str) -> bool {
    use std::net::ToSocketAddrs;
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
}

/// The test services, checked: fails (never skips) when one is down.
pub fn infra() -> Infra {
    let database_url = std::env::var("SHOP_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let kafka_brokers =
        std::env::var("SHOP_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let pg_host = database_url
        .rsplit('@')
        .next()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .to_string();
    assert!(
        reachable(&pg_host),
        "PostgreSQL is not reachable at {pg_host}. Start it with `scripts/infra.sh up` (or set SHOP_TEST_DATABASE_URL)."
    );
    let first_broker = kafka_brokers
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        reachable(&first_broker),
        "Kafka is not reachable at {first_broker}. Start it with `scripts/infra.sh up` (or set SHOP_TEST_KAFKA_BROKERS)."
    );
    Infra {
        database_url,
        kafka_brokers,
    }
}

/// A fresh name for one test's instance: its databases and its topic prefix.
pub fn fresh_instance() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A free TCP port on loopback for a component that must keep its port across restarts.
///
/// Chosen at random below the kernel's ephemeral range (32768 and up here), so outgoing
/// connections — to PostgreSQL, Kafka, between components — cannot take it between this
/// check and the component's bind, as they could a port the kernel handed out.
/// Never the same port twice in one test binary: tests run in parallel, and two instances
/// could otherwise pick one port before either binds it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = 20_000 + fastrand::u16(..12_000);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

pub fn logs_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("shop-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One instance of Shop: a name for its databases and topics, and the processes that
/// serve it.
pub struct Instance {
    /// PostgreSQL + Kafka (`shop serve`), or SQLite + the embedded log (`shop dev`).
    pub backend: Dialect,
    /// The data directory of a `shop dev` instance.
    pub data_dir: PathBuf,
    pub infra: Infra,
    pub name: String,
    pub topic_prefix: String,
    pub ports: Ports,
}

/// Fixed ports of an instance, so a killed process comes back where the gateway expects.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub gateway: u16,
    pub customers: u16,
    pub inventory: u16,
    pub orders: u16,
    pub payments: u16,
    pub shipping: u16,
    pub notifications: u16,
    pub read_api: u16,
    pub projector: u16,
}

/// A running `shop serve` process.
pub struct ShopProcess {
    pub child: Child,
    pub components: Vec<String>,
    pub log_path: PathBuf,
    /// `component → base URL` as the process printed them.
    pub urls: Vec<(String, String)>,
}

impl ShopProcess {
    pub fn url(&self, component: &str) -> String {
        self.urls
            .iter()
            .find(|(c, _)| c == component)
            .map(|(_, u)| u.clone())
            .unwrap_or_else(|| panic!("{component} is not served by this process"))
    }

    /// SIGKILL: the process dies without any cleanup.
    pub async fn kill(mut self) {
        self.child.kill().await.ok();
    }

    /// SIGTERM (what Kubernetes sends, and `docker stop`): the process drains and exits.
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("the process is running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits until the process exits on its own (e.g. at an armed fault point).
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "process did not exit within {timeout:?}; log: {}",
                    self.log_path.display()
                )
            })
            .unwrap()
    }
}

impl Instance {
    /// An instance on PostgreSQL and Kafka.
    pub fn new() -> Self {
        Instance::on(Dialect::Postgres)
    }

    /// An instance on the given backend (`Dialect::Sqlite`: `shop dev`, no services).
    pub fn on(backend: Dialect) -> Self {
        let infra = match backend {
            Dialect::Postgres => infra(),
            Dialect::Sqlite => Infra {
                database_url: String::new(),
                kafka_brokers: String::new(),
            },
        };
        Instance::with_infra(backend, infra)
    }

    /// An instance on PostgreSQL and Kafka elsewhere than the test services of
    /// [`infra`]: the fault test's own cluster and broker (`scripts/faults-infra.sh`).
    pub fn on_infra(infra: Infra) -> Self {
        Instance::with_infra(Dialect::Postgres, infra)
    }

    /// Another instance (own databases, consumer groups and ports) on the same
    /// PostgreSQL and Kafka as this one, reading the same topics.
    pub fn sibling_here(&self) -> Self {
        let mut other = Instance::with_infra(self.backend, self.infra.clone());
        other.topic_prefix = self.topic_prefix.clone();
        other
    }

    fn with_infra(backend: Dialect, infra: Infra) -> Self {
        let name = fresh_instance();
        Instance {
            backend,
            data_dir: logs_dir().join(format!("{name}-data")),
            infra,
            topic_prefix: format!("{name}."),
            name,
            ports: Ports {
                gateway: free_port(),
                customers: free_port(),
                inventory: free_port(),
                orders: free_port(),
                payments: free_port(),
                shipping: free_port(),
                notifications: free_port(),
                read_api: free_port(),
                projector: free_port(),
            },
        }
    }

    /// A second set of processes of this same instance — same databases, topics and
    /// consumer groups — on ports of its own: the other replica of a rolling update.
    pub fn replica(&self) -> Self {
        let mut other = Instance::with_infra(self.backend, self.infra.clone());
        other.name = self.name.clone();
        other.topic_prefix = self.topic_prefix.clone();
        other.data_dir = self.data_dir.clone();
        other
    }

    /// Another instance (own databases, consumer groups and ports) reading the same
    /// topics: a second projector rebuilt from offset 0, for example.
    pub fn sibling(&self) -> Self {
        let mut other = Instance::new();
        other.topic_prefix = self.topic_prefix.clone();
        other
    }

    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.gateway)
    }

    pub fn database(&self, component: &str) -> String {
        format!("{}_{}", self.name, component)
    }

    /// Starts `shop serve COMPONENTS...` with this instance's settings and waits until it
    /// prints `shop: ready`. `env` adds or overrides variables (e.g. fault injection).
    /// On the embedded backend it starts `shop dev` (every component) instead.
    pub async fn spawn(&self, components: &[&str], env: &[(&str, &str)]) -> ShopProcess {
        self.try_spawn(components, env, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Instance::spawn`], returning once the process printed a line that starts
    /// with `until` (e.g. `shop: gateway listening on`) rather than `shop: ready`.
    pub async fn spawn_until(
        &self,
        components: &[&str],
        env: &[(&str, &str)],
        until: &str,
    ) -> ShopProcess {
        self.try_spawn_until(components, env, until, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Instance::spawn`], with a process that exits or is not ready within
    /// `timeout` as an error.
    pub async fn try_spawn(
        &self,
        components: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<ShopProcess, String> {
        self.try_spawn_until(components, env, "shop: ready", timeout)
            .await
    }

    async fn try_spawn_until(
        &self,
        components: &[&str],
        env: &[(&str, &str)],
        until: &str,
        timeout: Duration,
    ) -> Result<ShopProcess, String> {
        let log_path = logs_dir().join(format!(
            "{}-{}-{}.log",
            self.name,
            components.join("+"),
            uuid::Uuid::new_v4().simple()
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
        match self.backend {
            Dialect::Postgres => command.arg("serve").args(components),
            Dialect::Sqlite => {
                assert_eq!(components, ["all"], "shop dev runs every component");
                command.arg("dev").arg("--data-dir").arg(&self.data_dir)
            }
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SHOP_DATABASE_URL", &self.infra.database_url)
            .env("SHOP_KAFKA_BROKERS", &self.infra.kafka_brokers)
            .env("SHOP_INSTANCE", &self.name)
            .env("SHOP_TOPIC_PREFIX", &self.topic_prefix)
            .env("SHOP_TOPIC_PARTITIONS", "3")
            .env(
                "SHOP_KAFKA_SESSION_TIMEOUT_MS",
                KAFKA_SESSION_TIMEOUT_MS.to_string(),
            )
            .env("SHOP_JWT_SECRET", JWT_SECRET)
            .env("SHOP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("SHOP_METRICS_TOKEN", METRICS_TOKEN)
            .env("SHOP_DB_POOL_SIZE", "5")
            .env("SHOP_RELAY_POLL_MS", "200")
            .env("SHOP_CONSUMER_RETRY_BACKOFF_MS", "50")
            .env("SHOP_LOG", "info,shop_eventing=debug,shop_web=debug")
            // Functional tests are not about rate limits (tests/gateway.rs is).
            .env("SHOP_GATEWAY_RATE_LIMIT", "10000")
            .env("SHOP_GATEWAY_RATE_BURST", "10000")
            .env("SHOP_PORT", self.ports.gateway.to_string())
            .env("SHOP_CUSTOMERS_PORT", self.ports.customers.to_string())
            .env("SHOP_INVENTORY_PORT", self.ports.inventory.to_string())
            .env("SHOP_ORDERS_PORT", self.ports.orders.to_string())
            .env("SHOP_PAYMENTS_PORT", self.ports.payments.to_string())
            .env("SHOP_SHIPPING_PORT", self.ports.shipping.to_string())
            .env(
                "SHOP_NOTIFICATIONS_PORT",
                self.ports.notifications.to_string(),
            )
            .env("SHOP_READ_API_PORT", self.ports.read_api.to_string())
            .env("SHOP_PROJECTOR_PORT", self.ports.projector.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("cannot start the shop binary");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut urls = Vec::new();
        let deadline = Instant::now() + timeout;
        loop {
            let Ok(line) = tokio::time::timeout_at(deadline.into(), lines.next_line()).await else {
                return Err(format!(
                    "shop serve {components:?} did not become ready in {} s; log: {}",
                    timeout.as_secs(),
                    log_path.display()
                ));
            };
            let Some(line) = line.unwrap() else {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!(
                    "shop serve {components:?} exited before ready; log {}:\n{log}",
                    log_path.display()
                ));
            };
            if let Some(rest) = line.strip_prefix("shop: ") {
                if let Some((component, url)) = rest.split_once(" listening on ") {
                    urls.push((component.to_string(), url.to_string()));
                }
            }
            if line.starts_with(until) {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ShopProcess {
            child,
            components: components.iter().map(|s| s.to_string()).collect(),
            log_path,
            urls,
        })
    }

    /// A connection pool to one of this instance's databases, on either backend (for
    /// checks written once for both: `shop_sql`).
    pub async fn store(&self, component: &str) -> Pool {
        match self.backend {
            Dialect::Postgres => self.pool(component).await.into(),
            Dialect::Sqlite => {
                shop_sql::lite::LiteDb::open(&self.data_dir.join(format!("{component}.db")), false)
                    .unwrap()
                    .into()
            }
        }
    }

    /// A connection pool to one of this instance's PostgreSQL databases.
    pub async fn pool(&self, component: &str) -> sqlx::PgPool {
        let base = self
            .infra
            .database_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&self.infra.database_url);
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&format!("{base}/{}", self.database(component)))
            .await
            .unwrap()
    }

    /// Waits until the orders service's catalogue replica holds `products` products (it
    /// learns them from inventory events; until then orders for them are 422).
    pub async fn wait_for_catalogue(&self, products: i64) {
        let pool = self.store("orders").await;
        eventually(
            "the orders service knows the products",
            Duration::from_secs(60),
            || async {
                sql::query_scalar::<i64>("SELECT count(*) FROM catalogue")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    == products
            },
        )
        .await;
        pool.close().await;
    }

    /// Every record on a topic, read as an outside consumer would: `kcat` on Kafka, the
    /// log file itself on the embedded backend.
    pub async fn topic_records(&self, topic: &str) -> Vec<KcatRecord> {
        if self.backend == Dialect::Postgres {
            return kcat_read(&self.infra.kafka_brokers, topic).await;
        }
        let log = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            self.data_dir.join("log.db").display()
        ))
        .await
        .unwrap();
        type Stored = (i64, i64, Option<String>, String, Option<Vec<u8>>);
        let rows: Vec<Stored> = sqlx::query_as(
            "SELECT partition, offset, key, headers, payload FROM records WHERE topic = ?1 ORDER BY partition, offset",
        )
        .bind(topic)
        .fetch_all(&log)
        .await
        .unwrap();
        log.close().await;
        rows.into_iter()
            .map(|(partition, offset, key, headers, payload)| KcatRecord {
                partition,
                offset,
                key,
                headers: serde_json::from_str(&headers).unwrap(),
                payload: payload.map(|p| String::from_utf8_lossy(&p).into_owned()),
            })
            .collect()
    }

    /// Drops this instance's databases and deletes its topics (the data directory of a
    /// `shop dev` instance).
    pub async fn cleanup(&self) {
        if self.backend == Dialect::Sqlite {
            std::fs::remove_dir_all(&self.data_dir).ok();
            return;
        }
        let kafka = shop_log::kafka::KafkaLog::new(shop_log::kafka::KafkaConfig {
            brokers: self.infra.kafka_brokers.clone(),
            ..Default::default()
        })
        .unwrap();
        let mut topics: Vec<String> = shop_schemas::Service::ALL
            .iter()
            .map(|s| s.topic(&self.topic_prefix))
            .collect();
        topics.push(shop_schemas::topics::dead_letter_topic(&self.topic_prefix));
        kafka.delete_topics(&topics).await.ok();
        for component in [
            "customers",
            "inventory",
            "read",
            "orders",
            "payments",
            "shipping",
            "notifications",
        ] {
            shop_sql::db::drop_database(&self.infra.database_url, &self.database(component))
                .await
                .ok();
        }
    }
}

/// An HTTP client of the gateway.
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

/// A response: status, headers, JSON body (Null when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        Client {
            base: base.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            token: None,
        }
    }

    /// A client logged in as the admin.
    pub async fn admin(base: impl Into<String>) -> Self {
        let mut client = Client::new(base);
        let answer = client
            .send(
                "POST",
                "/api/auth/token",
                Some(json!({"email": "admin@shop.local", "password": ADMIN_PASSWORD})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        client.token = Some(answer.body["access_token"].as_str().unwrap().to_string());
        client
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.try_send(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`Client::send`], with a connection failure (nothing listening) as an error.
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, reqwest::Error> {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.text().await.unwrap_or_default();
        Ok(Answer {
            status,
            content_type,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send("POST", path, Some(body)).await
    }

    /// Registers a customer (password `password-<email>`) and returns a client logged in
    /// as that customer, with its id.
    pub async fn customer(base: impl Into<String>, name: &str, email: &str) -> (Self, String) {
        let mut client = Client::new(base);
        let answer = client
            .post(
                "/api/customers",
                json!({"name": name, "email": email, "password": format!("password-{email}"),
                       "address": {"line1": "1-2-3 Shibuya", "city": "Tokyo", "postal_code": "150-0002", "country": "JP"}}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        let id = answer.body["customer_id"].as_str().unwrap().to_string();
        let login = client
            .post(
                "/api/auth/token",
                json!({"email": email, "password": format!("password-{email}")}),
            )
            .await;
        assert_eq!(login.status, StatusCode::OK, "{login:?}");
        client.token = Some(login.body["access_token"].as_str().unwrap().to_string());
        (client, id)
    }

    /// Adds a product; returns its id.
    pub async fn add_product(&self, sku: &str, price: i64, stock: i64) -> String {
        let answer = self
            .post("/api/products", json!({"sku": sku, "name": format!("Product {sku}"), "price": price, "stock": stock}))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        answer.body["product_id"].as_str().unwrap().to_string()
    }

    /// Polls `GET path` until `check` accepts the body, or fails after `timeout`.
    pub async fn get_until(
        &self,
        path: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.get(path).await;
            if answer.status == StatusCode::OK && check(&answer.body) {
                return answer.body;
            }
            if Instant::now() > deadline {
                panic!("GET {path} never satisfied the check within {timeout:?}; last answer: {answer:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Polls an async condition until it holds, or fails after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() > deadline {
            panic!("{what}: not true within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One record of a topic as read by `kcat`, an independent Kafka client.
#[derive(Debug, Clone)]
pub struct KcatRecord {
    pub partition: i64,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Option<String>,
}

impl KcatRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a whole topic with `kcat` (Debian's package; installed by `scripts/infra.sh up`).
pub async fn kcat_read(brokers: &str, topic: &str) -> Vec<KcatRecord> {
    let output = Command::new("kcat")
        .args([
            "-C",
            "-b",
            brokers,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-J",
        ])
        .output()
        .await
        .expect("kcat is not installed: run `scripts/infra.sh up` (it installs Debian's kcat)");
    // A topic just created may not be in every client's metadata yet: no records so far.
    if !output.status.success()
        && String::from_utf8_lossy(&output.stderr).contains("Unknown topic or partition")
    {
        return Vec::new();
    }
    assert!(
        output.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("kcat line {line:?}: {e}"));
            let headers = v["headers"]
                .as_array()
                .map(|hs| {
                    hs.chunks(2)
                        .map(|kv| {
                            (
                                kv[0].as_str().unwrap_or("").to_string(),
                                kv[1].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            KcatRecord {
                partition: v["partition"].as_i64().unwrap_or(-1),
                offset: v["offset"].as_i64().unwrap_or(-1),
                key: v["key"].as_str().map(String::from),
                headers,
                payload: v["payload"].as_str().map(String::from),
            }
        })
        .collect()
}

/// Runs an admin-API command of the `shop` binary (`replay`, `dlq`, …) against the
/// gateway at `base` as the test admin; its standard output (fails on a non-zero exit).
pub async fn shop_admin_command(base: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(args)
        .args(["--url", base])
        .env_clear()
        .env("SHOP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "shop {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `shop` command that works on an instance's stores directly (`events`, `export`,
/// `import`), pointed at its databases or its data directory.
pub fn shop_store_command(instance: &Instance, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
    command.args(args).env_clear().kill_on_drop(true);
    match instance.backend {
        Dialect::Sqlite => {
            command.arg("--data-dir").arg(&instance.data_dir);
        }
        Dialect::Postgres => {
            command
                .env("SHOP_DATABASE_URL", &instance.infra.database_url)
                .env("SHOP_KAFKA_BROKERS", &instance.infra.kafka_brokers)
                .env("SHOP_INSTANCE", &instance.name)
                .env("SHOP_TOPIC_PREFIX", &instance.topic_prefix);
        }
    }
    command
}

/// Runs [`shop_store_command`]; its standard output (fails on a non-zero exit).
pub async fn shop_on_stores(instance: &Instance, args: &[&str]) -> String {
    let out = shop_store_command(instance, args).output().await.unwrap();
    assert!(
        out.status.success(),
        "shop {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every projection table with its columns (`projections/sql/*.sql`).
pub const TABLES: &[(&str, &str)] = &[
    (
        "products",
        "product_id, sku, name, price, received, version, created_at, updated_at",
    ),
    ("product_stock", "product_id, reserved, sold"),
    (
        "customers",
        "customer_id, name, email, address, version, created_at, updated_at",
    ),
    (
        "customer_figures",
        "customer_id, wallet_balance, orders_count, lifetime_spend, updated_at",
    ),
    (
        "orders",
        "order_id, customer_id, status, cancel_reason, total, version, created_at, updated_at",
    ),
    (
        "order_lines",
        "order_id, position, product_id, quantity, unit_price, line_total",
    ),
    (
        "order_history",
        "event_id, order_id, event_type, source, at",
    ),
];

fn versioned(table: &str, version: i64) -> String {
    if version <= 1 {
        table.to_string()
    } else {
        format!("{table}_v{version}")
    }
}

/// Each read-model table of a projection version as sorted text rows (row-for-row
/// comparisons of read models).
pub async fn read_model_snapshot(pool: &Pool, version: i64) -> Vec<(String, Vec<String>)> {
    let mut tables = Vec::new();
    for (table, columns) in TABLES {
        let row = columns
            .split(", ")
            .map(|c| format!("COALESCE(CAST({c} AS TEXT), '-')"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let query = format!("SELECT {row} FROM {} ORDER BY 1", versioned(table, version));
        let rows: Vec<String> = sql::query_scalar(&query).fetch_all(pool).await.unwrap();
        tables.push((table.to_string(), rows));
    }
    tables
}

/// A confirmed order on a fresh instance: the admin adds a product (price 100 × `sku`'s
/// stock 10), a customer named `name` registers with `email`, deposits 10,000 and orders
/// one unit, and the read model shows it CONFIRMED. Returns (admin, customer, order id).
pub async fn confirmed_order(
    instance: &Instance,
    sku: &str,
    name: &str,
    email: &str,
) -> (Client, Client, String) {
    let base = instance.gateway_url();
    let admin = Client::admin(&base).await;
    let product = admin.add_product(sku, 100, 10).await;
    // This product, whatever else the catalogue has (a test may place several orders).
    let orders = instance.store("orders").await;
    eventually(
        "the orders service knows the product",
        Duration::from_secs(60),
        || async {
            sql::query_scalar::<i64>("SELECT count(*) FROM catalogue WHERE product_id = $1")
                .bind(uuid::Uuid::parse_str(&product).unwrap())
                .fetch_one(&orders)
                .await
                .unwrap()
                == 1
        },
    )
    .await;
    orders.close().await;
    let (customer, id) = Client::customer(&base, name, email).await;
    let deposit = customer
        .post(
            &format!("/api/customers/{id}/wallet/deposits"),
            json!({"amount": 10_000}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED, "{deposit:?}");
    let order = customer
        .post(
            "/api/orders",
            json!({"lines": [{"product_id": product, "quantity": 1}]}),
        )
        .await;
    assert_eq!(order.status, StatusCode::ACCEPTED, "{order:?}");
    let order_id = order.body["order_id"].as_str().unwrap().to_string();
    admin
        .get_until(
            &format!("/api/orders/{order_id}"),
            Duration::from_secs(60),
            |o| o["status"] == "CONFIRMED",
        )
        .await;
    (admin, customer, order_id)
}

/// Dispatches an order's parcel once shipping has scheduled it (the admin's step).
pub async fn dispatch(admin: &Client, order_id: &str) {
    admin
        .get_until(
            &format!("/api/orders/{order_id}"),
            Duration::from_secs(30),
            |o| {
                o["history"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|s| s["event_type"] == "ShipmentScheduled"))
            },
        )
        .await;
    let answer = admin
        .post(&format!("/api/shipments/{order_id}/dispatch"), json!({}))
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
}
