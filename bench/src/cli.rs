//! `shop-bench`'s flags and their environment variables: the settings `shop` shares with
//! every subcommand (the same names, so `shop bench …` runs this binary unchanged), and
//! the bench's own.

use clap::{Args, Parser};
use shop_web::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "shop-bench",
    version,
    about = "Measure append, publish and projection throughput against baselines in one run"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub bench: BenchArgs,
}

/// Settings every subcommand shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// PostgreSQL server URL (any existing database; each component creates its own).
    #[arg(
        long,
        env = "SHOP_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Instance name: each component's database is `<instance>_<component>`, and consumer
    /// groups are `<instance>.<consumer>`. Lets several deployments share one server.
    #[arg(long, env = "SHOP_INSTANCE", default_value = "shop")]
    pub instance: String,
    /// Connections per database pool.
    #[arg(long, env = "SHOP_DB_POOL_SIZE", default_value_t = 10)]
    pub db_pool_size: u32,
    /// Kafka bootstrap servers.
    #[arg(long, env = "SHOP_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Prefix of every topic name (e.g. `staging.` gives `staging.orders.events`).
    #[arg(long, env = "SHOP_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Partitions of topics created by `shop topics ensure` and at start-up.
    #[arg(long, env = "SHOP_TOPIC_PARTITIONS", default_value_t = 6)]
    pub topic_partitions: i32,
    /// Replication factor of created topics.
    #[arg(long, env = "SHOP_TOPIC_REPLICATION", default_value_t = 1)]
    pub topic_replication: i32,
    /// Kafka consumer session timeout: how long a dead member keeps its partitions.
    #[arg(long, env = "SHOP_KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub kafka_session_timeout_ms: u32,
    /// Log line format.
    #[arg(long, env = "SHOP_LOG_FORMAT", default_value = "text", value_parser = parse_log_format)]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "SHOP_LOG", default_value = "info")]
    pub log: String,
    /// Export spans over OTLP/HTTP to this collector (e.g. `http://127.0.0.1:4318`);
    /// needs a build with `--features otlp`.
    #[arg(long, env = "SHOP_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Fault injection points (crash tests only), comma-separated.
    #[arg(long, env = "SHOP_FAULT_INJECT", hide = true)]
    pub fault_inject: Option<String>,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

/// One end-to-end load of `shop bench`: orders/s, for one backend or for all.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferedLoad {
    /// One of [`BACKENDS`]; `None`: every backend.
    pub backend: Option<&'static str>,
    pub rate: f64,
}

impl OfferedLoad {
    /// From `200` or `kafka:500`.
    pub fn parse(text: &str) -> Result<OfferedLoad, String> {
        let (backend, rate) = match text.split_once(':') {
            Some((name, rate)) => (Some(backend(name.trim())?), rate),
            None => (None, text),
        };
        let rate: f64 = rate
            .trim()
            .parse()
            .ok()
            .filter(|r: &f64| r.is_finite() && *r >= 0.0)
            .ok_or_else(|| {
                format!("{text:?} is not an offered load (orders/s, e.g. 200 or kafka:500)")
            })?;
        Ok(OfferedLoad { backend, rate })
    }

    /// The loads offered to `backend`, in the order given, without zeros.
    pub fn for_backend(loads: &[OfferedLoad], backend: &str) -> Vec<f64> {
        loads
            .iter()
            .filter(|l| l.rate > 0.0 && l.backend.is_none_or(|b| b == backend))
            .map(|l| l.rate)
            .collect()
    }
}

/// The end-to-end backends of `shop bench`.
pub const BACKENDS: [&str; 2] = ["kafka", "embedded"];

/// The end-to-end backend of that name.
pub fn backend(name: &str) -> Result<&'static str, String> {
    BACKENDS
        .into_iter()
        .find(|b| *b == name)
        .ok_or_else(|| format!("unknown end-to-end backend {name:?} (kafka or embedded)"))
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Commands to append (each one event).
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Products the commands are spread over.
    #[arg(long, default_value_t = 100)]
    pub products: usize,
    /// Concurrent clients issuing commands.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// End to end: offered loads (orders/s, open loop), comma-separated, each for every
    /// backend (`200`) or for one (`kafka:500`, `embedded:2000`); `0` skips it. The
    /// default offers both backends 50 and 200, and each its target load.
    #[arg(long, value_delimiter = ',', default_value = "50,200,kafka:500,embedded:2000", value_parser = OfferedLoad::parse)]
    pub e2e_rates: Vec<OfferedLoad>,
    /// End to end: seconds of sending per offered load.
    #[arg(long, default_value_t = 10)]
    pub e2e_seconds: u64,
    /// End to end: the backends, `kafka` (`shop serve all` on Kafka + PostgreSQL) and/or
    /// `embedded` (`shop dev`).
    #[arg(long, value_delimiter = ',', default_value = "kafka,embedded")]
    pub e2e_backends: Vec<String>,
    /// End to end: keep each system's databases, topics and log after its loads (and
    /// print its instance name), to look into where an order's time went; remove them
    /// yourself afterwards.
    #[arg(long, hide = true)]
    pub e2e_keep: bool,
    /// End to end: the system's log filter (`SHOP_LOG` of the process the bench starts).
    #[arg(long, default_value = "warn", hide = true)]
    pub e2e_system_log: String,
    /// Replay: delivered orders in the synthetic history (9 events each, plus their
    /// customers and products) that every projection is rebuilt from; 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    pub replay_orders: usize,
    /// Replay: members of each projection's consumer group filling a new projector's
    /// read models (as `shop serve projector`).
    #[arg(long, env = "SHOP_PROJECTION_MEMBERS", default_value_t = shop_eventing::platform::PROJECTION_MEMBERS as u64, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub projection_members: u64,
    /// Replay: members of each rebuilding version's consumer group (as `shop replay`).
    #[arg(long, env = "SHOP_REBUILD_MEMBERS", default_value_t = shop_eventing::platform::REBUILD_MEMBERS as u64, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub rebuild_members: u64,
    /// Long streams: events of the product whose restocks are timed against a new
    /// product's (snapshots); 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    pub long_stream: usize,
}

#[cfg(test)]
mod tests {
    use super::OfferedLoad;

    #[test]
    fn offered_loads_are_for_every_backend_or_for_one() {
        let loads: Vec<OfferedLoad> = "50,200,kafka:500,embedded:2000,0"
            .split(',')
            .map(|l| OfferedLoad::parse(l).unwrap())
            .collect();
        assert_eq!(
            OfferedLoad::for_backend(&loads, "kafka"),
            [50.0, 200.0, 500.0]
        );
        assert_eq!(
            OfferedLoad::for_backend(&loads, "embedded"),
            [50.0, 200.0, 2000.0]
        );
        assert!(OfferedLoad::for_backend(&[OfferedLoad::parse("0").unwrap()], "kafka").is_empty());
        for bad in ["fast", "kafka:", "nats:100", "-5", "inf"] {
            assert!(OfferedLoad::parse(bad).is_err(), "{bad}");
        }
    }
}
