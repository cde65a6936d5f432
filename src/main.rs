//! `shop`: the command line of Shop. Parses flags (with environment fallbacks), builds
//! the components and starts them. Thin: everything else lives in the component crates.
#![forbid(unsafe_code)]

/// `println!` that returns an error instead of panicking when stdout is a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod admin;
mod args;
mod bench;
mod cli;
mod dev;
mod dlq;
mod events;
mod openapi;
mod replay;
mod serve;
mod topics;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::parse();
    let otlp = cli
        .common
        .otlp_endpoint
        .clone()
        .map(|endpoint| shop_web::telemetry::OtlpConfig {
            endpoint,
            service_name: service_name(&cli.command),
        });
    shop_web::telemetry::init_tracing(cli.common.log_format, &cli.common.log, otlp);
    // Before anything counts: metrics recorded without a recorder are lost.
    shop_web::telemetry::init_metrics();
    shop_schemas::set_schema_base(&cli.common.schema_base_url);
    if let Some(points) = &cli.common.fault_inject {
        shop_eventing::fault::arm(points);
    }
    let result = match cli.command {
        cli::Command::Dev(args) => dev::run(&cli.common, *args).await,
        cli::Command::Serve(args) => serve::run(&cli.common, *args).await,
        cli::Command::Topics(args) => topics::run(&cli.common, args).await,
        cli::Command::Bench(args) => bench::run(&cli.common, args).await,
        cli::Command::Openapi => openapi::run(),
        cli::Command::Replay(args) => replay::run(args).await,
        cli::Command::Dlq(args) => dlq::run(args).await,
        cli::Command::Events(args) => events::events(&cli.common, args).await,
        cli::Command::Export(args) => events::export(&cli.common, args).await,
        cli::Command::Import(args) => events::import(&cli.common, args).await,
    };
    shop_web::telemetry::shutdown_tracing();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Output piped into a reader that stopped (`shop events … | head`): done.
        Err(e) if broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shop: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `error` comes from writing to a pipe whose reader has gone.
fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `service.name` of exported spans: what this process runs.
fn service_name(command: &cli::Command) -> String {
    match command {
        cli::Command::Serve(args) => {
            let names: Vec<String> = args
                .components
                .iter()
                .map(|c| format!("{c:?}").to_lowercase())
                .collect();
            format!("shop-{}", names.join("+"))
        }
        cli::Command::Dev(_) => "shop-dev".to_string(),
        _ => "shop-cli".to_string(),
    }
}
