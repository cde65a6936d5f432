//! The command line: the subcommands and their arguments (defined in [`crate::args`]).

use clap::{Parser, Subcommand};

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
