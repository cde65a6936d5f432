//! `shop bench`: an alias of the `shop-bench` binary (the `bench/` crate), so the product
//! binary links no benchmark code. The bench is looked up beside this executable; the
//! settings `shop` parsed (flags, environment, defaults) reach it as its environment.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use shop_web::telemetry::LogFormat;

use crate::args::{BenchArgs, Common};

/// Runs `shop-bench` with `args` and returns when it does, failing as it fails.
pub async fn run(common: &Common, args: BenchArgs) -> anyhow::Result<()> {
    let exe = bench_executable()?;
    let mut command = tokio::process::Command::new(&exe);
    command.args(&args.args);
    for (var, value) in environment(common) {
        command.env(var, value);
    }
    let status = command
        .status()
        .await
        .with_context(|| format!("could not run {}", exe.display()))?;
    anyhow::ensure!(status.success(), "shop-bench {status}");
    Ok(())
}

/// `shop-bench` in the directory of the running `shop`.
fn bench_executable() -> anyhow::Result<PathBuf> {
    let shop = std::env::current_exe().context("where is this executable?")?;
    let dir = shop.parent().context("this executable has no directory")?;
    let bench = dir.join(format!("shop-bench{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        bench.is_file(),
        "{} not found: `shop bench` runs the shop-bench binary beside `shop`; build it with \
         `cargo build --release -p shop-bench` (or run `cargo run --release -p shop-bench -- …`)",
        bench.display()
    );
    Ok(bench)
}

/// The common settings as `shop-bench` reads them from its environment.
fn environment(common: &Common) -> Vec<(&'static str, OsString)> {
    let mut vars: Vec<(&'static str, OsString)> = vec![
        ("SHOP_DATABASE_URL", common.database_url.clone().into()),
        ("SHOP_INSTANCE", common.instance.clone().into()),
        ("SHOP_DB_POOL_SIZE", common.db_pool_size.to_string().into()),
        ("SHOP_KAFKA_BROKERS", common.kafka_brokers.clone().into()),
        ("SHOP_TOPIC_PREFIX", common.topic_prefix.clone().into()),
        (
            "SHOP_TOPIC_PARTITIONS",
            common.topic_partitions.to_string().into(),
        ),
        (
            "SHOP_TOPIC_REPLICATION",
            common.topic_replication.to_string().into(),
        ),
        (
            "SHOP_KAFKA_SESSION_TIMEOUT_MS",
            common.kafka_session_timeout_ms.to_string().into(),
        ),
        (
            "SHOP_LOG_FORMAT",
            match common.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
            .into(),
        ),
        ("SHOP_LOG", common.log.clone().into()),
    ];
    if let Some(endpoint) = &common.otlp_endpoint {
        vars.push(("SHOP_OTLP_ENDPOINT", endpoint.clone().into()));
    }
    if let Some(points) = &common.fault_inject {
        vars.push(("SHOP_FAULT_INJECT", points.clone().into()));
    }
    vars
}
