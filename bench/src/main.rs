//! `shop-bench`: throughput of Shop's pipeline stages on the configured PostgreSQL and
//! Kafka, each beside a baseline measured in the same run. Not part of the product: the
//! `shop` binary links none of this (`shop bench` runs this binary), and only this crate
//! links `postgres-es`, the peer the append stage is compared with.
//!
//! Layout: [`cli`] the flags; [`run`] the stages in order and the report; [`replay`] the
//! first fill and the rebuild; [`e2e`] the system end to end in its own process;
//! [`floor`] the saga's hops as plain code; [`cost`] what an end-to-end order costs
//! (CPU, SQL statements, Kafka records); [`system`] the Kafka client and platform the
//! in-process stages run on.
#![forbid(unsafe_code)]

mod cli;
mod cost;
mod e2e;
mod floor;
mod replay;
mod run;
mod system;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let otlp = cli
        .common
        .otlp_endpoint
        .clone()
        .map(|endpoint| shop_web::telemetry::OtlpConfig {
            endpoint,
            service_name: "shop-bench".to_string(),
        });
    shop_web::telemetry::init_tracing(cli.common.log_format, &cli.common.log, otlp);
    shop_web::telemetry::init_metrics();
    if let Some(points) = &cli.common.fault_inject {
        shop_eventing::fault::arm(points);
    }
    let result = run::run(&cli.common, cli.bench).await;
    shop_web::telemetry::shutdown_tracing();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shop-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
