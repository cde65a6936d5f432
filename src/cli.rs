//! The command line: the subcommands and their arguments (defined in [`crate::args`]).

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::args::{
    BenchArgs, Common, DevArgs, DlqArgs, EventsArgs, ExportArgs, ImportArgs, ReplayArgs, ServeArgs,
    TopicsArgs,
};

#[derive(Debug, Parser)]
#[command(
    name = "shop",
    version,
    about = "Shop: an event-sourced CQRS commerce backend"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system in one process on embedded storage: no Kafka, no PostgreSQL.
    Dev(Box<DevArgs>),
    /// Run components against Kafka and PostgreSQL (production mode).
    Serve(Box<ServeArgs>),
    /// Create or list the event topics.
    Topics(TopicsArgs),
    /// Measure append, publish and projection throughput against baselines in one run
    /// (runs the `shop-bench` binary beside this one; `shop-bench --help` lists its
    /// options).
    Bench(BenchArgs),
    /// Print the public API's OpenAPI 3.1 document (what the gateway serves at /api/openapi.json).
    Openapi,
    /// Rebuild read models from the log without taking reads down (through the admin API).
    Replay(ReplayArgs),
    /// List or re-drive dead-lettered events (through the admin API).
    Dlq(DlqArgs),
    /// Read a service's event store (one aggregate, or all; --follow for new ones).
    Events(EventsArgs),
    /// Write every event as JSON Lines of CloudEvents.
    Export(ExportArgs),
    /// Load exported events into a fresh instance (saga reactions replay them without
    /// acting again).
    Import(ImportArgs),
}

/// The parsed command line; exits with clap's usage error (2) for a bad one, and for a
/// flag of `shop serve` given to `shop dev`.
pub fn parse() -> Cli {
    // Hidden from `shop dev --help`: its own copies of `shop serve`'s options (the
    // global Kafka and PostgreSQL flags are refused below, and their help says they are
    // for production).
    let command = Cli::command().mut_subcommand("dev", |mut dev| {
        for id in crate::args::NOT_FOR_DEV {
            if dev.get_arguments().any(|a| a.get_id() == *id) {
                dev = dev.mut_arg(*id, |arg| arg.hide(true));
            }
        }
        dev
    });
    let matches = command.clone().get_matches();
    let mut command = command;
    if let Some(("dev", dev)) = matches.subcommand() {
        for id in crate::args::NOT_FOR_DEV {
            let given = |m: &clap::ArgMatches| {
                matches!(m.try_get_raw(id), Ok(Some(_)))
                    && m.value_source(id) == Some(ValueSource::CommandLine)
            };
            if given(&matches) || given(dev) {
                command
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "--{} is a flag of `shop serve`: `shop dev` runs every component in \
                             one process on embedded storage (see `shop dev --help`)",
                            id.replace('_', "-")
                        ),
                    )
                    .exit();
            }
        }
    }
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
