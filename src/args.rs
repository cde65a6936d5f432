//! The arguments of every subcommand and the settings they share, with their environment
//! variables: the one documented place for every setting. The subcommands' modules read
//! them; this module imports none of them.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use shop_schemas::Service;
use shop_web::telemetry::LogFormat;

/// Settings every subcommand shares.
/// Flags of `shop serve` (and of the tools that reach Kafka and PostgreSQL) that mean
/// nothing to `shop dev`, which runs every component in one process on embedded storage:
/// hidden from `shop dev --help` and refused on its command line (an environment
/// variable set for other commands is ignored).
pub const NOT_FOR_DEV: &[&str] = &[
    "database_url",
    "instance",
    "kafka_brokers",
    "topic_replication",
    "kafka_session_timeout_ms",
    "customers_port",
    "inventory_port",
    "orders_port",
    "payments_port",
    "shipping_port",
    "notifications_port",
    "read_api_port",
    "projector_port",
    "customers_url",
    "inventory_url",
    "orders_url",
    "payments_url",
    "shipping_url",
    "notifications_url",
    "read_api_url",
    "projection_members",
    "rebuild_members",
];

/// The heading of the global flags that reach Kafka and PostgreSQL (not `shop dev`).
const PRODUCTION: &str = "Kafka and PostgreSQL (shop serve and the tools; not shop dev)";

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// PostgreSQL server URL (any existing database; each component creates its own).
    #[arg(
        long,
        global = true,
        help_heading = PRODUCTION,
        env = "SHOP_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Instance name: each component's database is `<instance>_<component>`, and consumer
    /// groups are `<instance>.<consumer>`. Lets several deployments share one server.
    #[arg(long, global = true,
        help_heading = PRODUCTION, env = "SHOP_INSTANCE", default_value = "shop")]
    pub instance: String,
    /// Connections per database pool.
    #[arg(long, global = true, env = "SHOP_DB_POOL_SIZE", default_value_t = 10)]
    pub db_pool_size: u32,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        global = true,
        help_heading = PRODUCTION,
        env = "SHOP_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub kafka_brokers: String,
    /// Prefix of every topic name (e.g. `staging.` gives `staging.orders.events`).
    #[arg(long, global = true, env = "SHOP_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Base of the events' `dataschema` URIs (`<base>/schemas/events/<service>/<Event>.vN.json`;
    /// the gateway serves those paths): set it to the gateway's public address for URIs
    /// that resolve.
    #[arg(
        long,
        global = true,
        env = "SHOP_SCHEMA_BASE_URL",
        default_value = shop_schemas::DEFAULT_SCHEMA_BASE
    )]
    pub schema_base_url: String,
    /// Partitions of topics created by `shop topics ensure` and at start-up.
    #[arg(
        long,
        global = true,
        env = "SHOP_TOPIC_PARTITIONS",
        default_value_t = 6
    )]
    pub topic_partitions: i32,
    /// Replication factor of created topics.
    #[arg(
        long,
        global = true,
        help_heading = PRODUCTION,
        env = "SHOP_TOPIC_REPLICATION",
        default_value_t = 1
    )]
    pub topic_replication: i32,
    /// Kafka consumer session timeout: how long a dead member keeps its partitions. The
    /// default is the broker's least (`group.min.session.timeout.ms`, 6 s unless the
    /// broker says otherwise); a member that stops cleanly leaves its group at once.
    #[arg(
        long,
        global = true,
        help_heading = PRODUCTION,
        env = "SHOP_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 6_000
    )]
    pub kafka_session_timeout_ms: u32,
    /// Log line format.
    #[arg(long, global = true, env = "SHOP_LOG_FORMAT", default_value = "text", value_parser = parse_log_format)]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, global = true, env = "SHOP_LOG", default_value = "info")]
    pub log: String,
    /// Export spans over OTLP/HTTP to this collector (e.g. `http://127.0.0.1:4318`);
    /// needs a build with `--features otlp`.
    #[arg(long, global = true, env = "SHOP_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Fault injection points (crash tests only), comma-separated.
    #[arg(long, global = true, env = "SHOP_FAULT_INJECT", hide = true)]
    pub fault_inject: Option<String>,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

/// A component `shop serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Component {
    All,
    Customers,
    Inventory,
    Orders,
    Payments,
    Shipping,
    Notifications,
    Projector,
    ReadApi,
    Gateway,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Components to run in this process (`all` for every one).
    #[arg(value_enum, required = true)]
    pub components: Vec<Component>,
    #[command(flatten)]
    pub options: ServeOptions,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the embedded event log, the databases (one SQLite file per component) and
    /// the generated admin password and JWT secret live.
    #[arg(long, env = "SHOP_DATA_DIR", default_value = "./data")]
    pub data_dir: std::path::PathBuf,
    #[command(flatten)]
    pub options: ServeOptions,
}

/// What `shop serve` and `shop dev` share: ports, upstreams, secrets, tuning.
#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// Address the HTTP servers bind to.
    #[arg(long, env = "SHOP_BIND", default_value = "127.0.0.1")]
    pub bind: String,
    /// The gateway's port (0 picks a free one).
    #[arg(long, env = "SHOP_PORT", default_value_t = 8080)]
    pub port: u16,
    #[arg(long, env = "SHOP_CUSTOMERS_PORT", default_value_t = 8081)]
    pub customers_port: u16,
    #[arg(long, env = "SHOP_INVENTORY_PORT", default_value_t = 8082)]
    pub inventory_port: u16,
    #[arg(long, env = "SHOP_ORDERS_PORT", default_value_t = 8083)]
    pub orders_port: u16,
    #[arg(long, env = "SHOP_PAYMENTS_PORT", default_value_t = 8084)]
    pub payments_port: u16,
    #[arg(long, env = "SHOP_SHIPPING_PORT", default_value_t = 8085)]
    pub shipping_port: u16,
    #[arg(long, env = "SHOP_NOTIFICATIONS_PORT", default_value_t = 8086)]
    pub notifications_port: u16,
    #[arg(long, env = "SHOP_READ_API_PORT", default_value_t = 8090)]
    pub read_api_port: u16,
    /// The projector's health/metrics port.
    #[arg(long, env = "SHOP_PROJECTOR_PORT", default_value_t = 8091)]
    pub projector_port: u16,
    /// The gateway's customers upstream (default: in this process, or 127.0.0.1 and its port).
    #[arg(long, env = "SHOP_CUSTOMERS_URL")]
    pub customers_url: Option<String>,
    /// The gateway's inventory upstream.
    #[arg(long, env = "SHOP_INVENTORY_URL")]
    pub inventory_url: Option<String>,
    /// The gateway's orders upstream.
    #[arg(long, env = "SHOP_ORDERS_URL")]
    pub orders_url: Option<String>,
    /// The gateway's payments upstream.
    #[arg(long, env = "SHOP_PAYMENTS_URL")]
    pub payments_url: Option<String>,
    /// The gateway's shipping upstream.
    #[arg(long, env = "SHOP_SHIPPING_URL")]
    pub shipping_url: Option<String>,
    /// The gateway's notifications upstream.
    #[arg(long, env = "SHOP_NOTIFICATIONS_URL")]
    pub notifications_url: Option<String>,
    /// The gateway's read-api upstream.
    #[arg(long, env = "SHOP_READ_API_URL")]
    pub read_api_url: Option<String>,
    /// Secret that signs and verifies JWTs (HS256); the same for every component.
    #[arg(long, env = "SHOP_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Lifetime of issued tokens.
    #[arg(long, env = "SHOP_JWT_TTL_SECS", default_value_t = 3600)]
    pub jwt_ttl_secs: u64,
    /// The password of `admin@shop.local` (customers component).
    #[arg(long, env = "SHOP_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// An order not confirmed within this is cancelled with reason `timeout` (orders).
    #[arg(long, env = "SHOP_SAGA_TIMEOUT_MS", default_value_t = 30_000)]
    pub saga_timeout_ms: u64,
    /// New orders are refused with 503 and `Retry-After` while this many placed orders wait
    /// for the saga to decide them; 0 never refuses (orders).
    #[arg(long, env = "SHOP_ORDERS_MAX_PENDING", default_value_t = 1000)]
    pub orders_max_pending: u64,
    /// Countries shipments go to, ISO 3166 alpha-2, comma-separated (shipping).
    #[arg(
        long,
        env = "SHOP_SHIPPING_COUNTRIES",
        default_value = "JP,US,GB,DE,FR"
    )]
    pub shipping_countries: String,
    /// The key every webhook endpoint's signing secret is derived from (notifications;
    /// default: the JWT secret). Keep it to keep the secrets: an import into a deployment
    /// with the same key recovers them.
    #[arg(long, env = "SHOP_WEBHOOKS_KEY", hide_env_values = true)]
    pub webhooks_key: Option<String>,
    /// Non-public webhook targets that may be called anyway, comma-separated host names,
    /// addresses and CIDR blocks (e.g. `127.0.0.1/32,hooks.internal`); every other
    /// private, loopback or link-local address is refused, at registration and at each
    /// delivery (notifications).
    #[arg(long, env = "SHOP_WEBHOOKS_ALLOW", default_value = "")]
    pub webhooks_allow: String,
    /// How long one webhook attempt may take, connection included (notifications).
    #[arg(long, env = "SHOP_WEBHOOKS_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhooks_timeout_ms: u64,
    /// The pause after a webhook's first failed attempt; each next pause is four times
    /// longer, up to `--webhooks-retry-max-ms`, each ±20 % at random (notifications).
    #[arg(long, env = "SHOP_WEBHOOKS_RETRY_BASE_MS", default_value_t = 5_000)]
    pub webhooks_retry_base_ms: u64,
    /// The longest pause between two attempts of a webhook (notifications).
    #[arg(long, env = "SHOP_WEBHOOKS_RETRY_MAX_MS", default_value_t = 6 * 3600 * 1000)]
    pub webhooks_retry_max_ms: u64,
    /// Attempts of a webhook delivery before it fails and its endpoint is disabled
    /// (notifications; the default schedule spans about 20 hours).
    #[arg(long, env = "SHOP_WEBHOOKS_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhooks_max_attempts: u32,
    /// Webhook attempts in flight at once per notifications process.
    #[arg(long, env = "SHOP_WEBHOOKS_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub webhooks_concurrency: u64,
    /// Webhook attempts in flight at once to one endpoint per notifications process: a
    /// slow receiver's backlog leaves the other slots to the other endpoints.
    #[arg(long, env = "SHOP_WEBHOOKS_PER_ENDPOINT", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub webhooks_per_endpoint: u64,
    /// How often the notifications service looks for due webhook deliveries.
    #[arg(long, env = "SHOP_WEBHOOKS_POLL_MS", default_value_t = 500)]
    pub webhooks_poll_ms: u64,
    /// A PEM file of certificate authorities trusted for https webhook receivers beyond
    /// the system's (a private CA of internal receivers; notifications).
    #[arg(long, env = "SHOP_WEBHOOKS_CA_FILE")]
    pub webhooks_ca_file: Option<std::path::PathBuf>,
    /// How long a read carrying a consistency token waits for the read models (read-api).
    #[arg(long, env = "SHOP_CONSISTENCY_WAIT_MS", default_value_t = 2000)]
    pub consistency_wait_ms: u64,
    /// Events per relay produce batch.
    #[arg(long, env = "SHOP_RELAY_BATCH_SIZE", default_value_t = 500)]
    pub relay_batch_size: i64,
    /// Relay polling interval when no notification arrives.
    #[arg(long, env = "SHOP_RELAY_POLL_MS", default_value_t = 500)]
    pub relay_poll_ms: u64,
    /// Records per consumer transaction.
    #[arg(long, env = "SHOP_CONSUMER_BATCH_SIZE", default_value_t = 500)]
    pub consumer_batch_size: usize,
    /// How long a consumer's batch smaller than the batch size waits for more records
    /// before it is applied, in milliseconds (0: at once). Default: 5 on PostgreSQL
    /// (fewer, larger transactions at low load), 0 in `shop dev` (in-process SQLite
    /// transactions cost no round trip).
    #[arg(long, env = "SHOP_CONSUMER_LINGER_MS")]
    pub consumer_linger_ms: Option<u64>,
    /// Members of each projection's consumer group in a projector process (PostgreSQL;
    /// `shop dev` uses one): each applies its share of the partitions in its own
    /// transactions.
    #[arg(long, env = "SHOP_PROJECTION_MEMBERS", default_value_t = shop_eventing::platform::PROJECTION_MEMBERS as u64, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub projection_members: u64,
    /// Members of a rebuilding projection version's consumer group (PostgreSQL; `shop
    /// replay`): a rebuild is not read until it is live, then it runs
    /// `--projection-members`.
    #[arg(long, env = "SHOP_REBUILD_MEMBERS", default_value_t = shop_eventing::platform::REBUILD_MEMBERS as u64, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub rebuild_members: u64,
    /// Attempts per event before it is dead-lettered.
    #[arg(long, env = "SHOP_CONSUMER_MAX_ATTEMPTS", default_value_t = 3)]
    pub consumer_max_attempts: u32,
    /// First retry delay of a failing event (doubles per attempt).
    #[arg(long, env = "SHOP_CONSUMER_RETRY_BACKOFF_MS", default_value_t = 200)]
    pub consumer_retry_backoff_ms: u64,
    /// Largest request body the gateway accepts.
    #[arg(long, env = "SHOP_GATEWAY_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub gateway_body_limit: usize,
    /// Consecutive failed requests that open an upstream's circuit (503 meanwhile).
    #[arg(long, env = "SHOP_GATEWAY_BREAKER_FAILURES", default_value_t = 5)]
    pub gateway_breaker_failures: u32,
    /// How long an open circuit holds requests back before one probe goes through.
    #[arg(long, env = "SHOP_GATEWAY_BREAKER_COOLDOWN_MS", default_value_t = 5000)]
    pub gateway_breaker_cooldown_ms: u64,
    /// How often the gateway checks every upstream instance's `/ready` (one that fails it
    /// — starting, draining, gone — gets no new requests).
    #[arg(long, env = "SHOP_GATEWAY_HEALTH_INTERVAL_MS", default_value_t = 1000)]
    pub gateway_health_interval_ms: u64,
    /// Canary routes, `upstream=url[,url…]@percent` separated by `;` (e.g.
    /// `read-api=http://10.0.0.9:8090@10`): that share of the upstream's clients (each
    /// client sticks to one version); the weights change at run time through
    /// `/api/admin/traffic`.
    #[arg(long, env = "SHOP_GATEWAY_CANARY", default_value = "")]
    pub gateway_canary: String,
    /// How long the gateway serves a public product read from its cache (0: no cache).
    #[arg(long, env = "SHOP_GATEWAY_CACHE_TTL_MS", default_value_t = 1000)]
    pub gateway_cache_ttl_ms: u64,
    /// Requests per second each client may make through the gateway (0: unlimited).
    #[arg(long, env = "SHOP_GATEWAY_RATE_LIMIT", default_value_t = 100)]
    pub gateway_rate_limit: u32,
    /// Requests a client may make at once before the per-second rate applies.
    #[arg(long, env = "SHOP_GATEWAY_RATE_BURST", default_value_t = 200)]
    pub gateway_rate_burst: u32,
    /// The bearer token Prometheus presents to read the gateway's `/metrics` (an admin's
    /// token works too; unset: admins only). The other components' `/metrics` are not
    /// public and need none.
    #[arg(long, env = "SHOP_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Requests the gateway has in flight to one upstream at most (0: no limit): one more
    /// is refused at once with 503 and `Retry-After: 1`, so an overload is answered fast
    /// instead of queueing without bound.
    #[arg(long, env = "SHOP_GATEWAY_MAX_IN_FLIGHT", default_value_t = 256)]
    pub gateway_max_in_flight: usize,
    /// Connections each component's listener serves at once (0: no limit): one more is
    /// answered 503 with `Retry-After: 1` and closed, so a flood of clients cannot grow
    /// the process's memory without bound.
    #[arg(long, env = "SHOP_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,
    /// How long the gateway waits for an upstream.
    #[arg(long, env = "SHOP_UPSTREAM_TIMEOUT_MS", default_value_t = 10_000)]
    pub upstream_timeout_ms: u64,
    /// On SIGTERM or Ctrl-C, how long every component keeps serving with `/ready` at 503
    /// (`draining`) before it stops accepting connections, so load balancers take it out
    /// of rotation first; then in-flight requests finish, consumers commit their batch and
    /// leave their groups, relays hand over, and the process exits (within 15 s more).
    /// Default: 5000 for `shop serve`, 0 for `shop dev`. A second signal ends the wait.
    #[arg(long, env = "SHOP_DRAIN_GRACE_MS")]
    pub drain_grace_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(subcommand)]
    pub action: TopicsAction,
    /// The embedded event log of a `shop dev` data directory instead of Kafka.
    #[arg(long, global = true)]
    pub data_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TopicsAction {
    /// Create missing topics (partitions, unlimited retention).
    Ensure,
    /// List this deployment's topics (`--topic-prefix`) with their partitions, records and
    /// each partition's end offset.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Every topic on the broker, other deployments' too.
        #[arg(long)]
        all: bool,
    },
}

/// `shop bench`'s arguments: passed unchanged to the `shop-bench` binary, which parses them.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The arguments of `shop-bench` (e.g. `--events 20000 --json bench.json`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// Where the running system is, and how to sign in as its admin.
#[derive(Debug, Clone, Args)]
pub struct AdminTarget {
    /// The gateway's base URL, e.g. `http://127.0.0.1:8080` (required: the admin password
    /// goes to it).
    #[arg(long, global = true, env = "SHOP_URL")]
    pub url: Option<String>,
    /// The admin password (default: `SHOP_ADMIN_PASSWORD`, else the one `shop dev`
    /// generated in `--data-dir`).
    #[arg(
        long,
        global = true,
        env = "SHOP_ADMIN_PASSWORD",
        hide_env_values = true
    )]
    pub admin_password: Option<String>,
    /// A `shop dev` data directory to read the generated admin password from.
    #[arg(long, global = true, env = "SHOP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
    #[command(flatten)]
    pub target: AdminTarget,
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Every dead letter with its consumer, event and error.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only the ones not re-driven yet.
        #[arg(long)]
        pending: bool,
    },
    /// Publish dead letters to their topic again (same event id: consumers that applied
    /// it skip it; the one that gave up applies it).
    Retry {
        /// Dead-letter ids (`<partition>-<offset>`, as `list` shows them).
        ids: Vec<String>,
        /// Every dead letter not re-driven yet.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

/// `shop replay`'s arguments.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// `products`, `customers`, `orders`, or `all`.
    pub projection: String,
    /// Start over from the beginning of the log (the only mode: a rebuild always
    /// starts at offset 0).
    #[arg(long, default_value_t = true)]
    pub from_beginning: bool,
    /// Return once the rebuild is started instead of following it.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up following after this many seconds (the rebuild goes on).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Print the outcome as JSON (no progress bars).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: AdminTarget,
}

/// Where the event stores are.
#[derive(Debug, Clone, Args)]
pub struct StoreTarget {
    /// A `shop dev` data directory (embedded storage) instead of PostgreSQL.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// customers, inventory, orders, payments or shipping.
    pub service: Service,
    /// Only this aggregate's events (in sequence order): its id, a UUID. None stored is an
    /// error (exit 1).
    #[arg(long)]
    pub aggregate: Option<uuid::Uuid>,
    /// Start after this store position.
    #[arg(long, default_value_t = 0)]
    pub from_position: i64,
    /// Keep printing new events until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// One CloudEvent (structured JSON) per line.
    #[arg(long)]
    pub json: bool,
    /// One CloudEvent (structured JSON) per line as this build reads it: the data upcast
    /// to its type's newest version, which `dataschema` and `eventversion` name (without
    /// it, events print as stored, at the version they were written at).
    #[arg(long)]
    pub upcast: bool,
    #[command(flatten)]
    pub target: StoreTarget,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Services to export (default: all).
    pub services: Vec<Service>,
    /// No progress bars and no summary on standard error.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub target: StoreTarget,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// JSON Lines of CloudEvents, as `shop export` writes them.
    pub file: PathBuf,
    /// No progress bars and no summary on standard error.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub target: StoreTarget,
}
