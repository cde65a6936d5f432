//! The event-sourcing core shared by every Shop component, with no domain knowledge. It
//! is written against the SQL layer (`shop-sql`) and the event log (`shop-log`) and never
//! asks which backend runs them.
//!
//! - [`store`]: the event store (cqrs-es persistence over PostgreSQL or SQLite) with its
//!   outbox. [`command`]: command execution.
//! - [`relay`]: the outbox relay, one active per service, woken by the SQL layer's
//!   in-process notification of commits (`shop_sql::signal`) or `NOTIFY`.
//! - [`consumer`]: the consumer runner shared by projectors and saga reactions:
//!   effect + dedup + checkpoint in one transaction, retries, dead letters.
//!   [`handler`]: what it applies events with; [`checkpoint`]: its checkpoints and
//!   progress.
//! - [`http`]: the HTTP edge: problem+json errors, JSON extraction, health/ready/metrics,
//!   serving with graceful shutdown. [`auth`]: JWTs and the extractors that check them.
//!   [`idempotency`]: `Idempotency-Key` on the commands' routes. [`refusal`]: the one
//!   mapping of command errors to problem+json.
//! - [`consistency`]: read-your-writes tokens; [`events_api`]: `GET /api/events`;
//!   [`openapi`]: the document's assembly.
//! - `backend`: the backend seam, the few operations of the core whose SQL differs
//!   between PostgreSQL and SQLite; the rest of the core never asks which runs.
//! - [`platform`]: what every component is built from. [`telemetry`]: logging, trace
//!   context, metrics recorder. [`fault`]: fault injection points used by crash tests.
#![forbid(unsafe_code)]

pub mod auth;
mod backend;
pub mod checkpoint;
pub mod command;
pub mod consistency;
pub mod consumer;
pub mod events_api;
pub mod fault;
pub mod handler;
pub mod http;
pub mod idempotency;
pub mod openapi;
pub mod platform;
pub mod refusal;
pub mod relay;
pub mod store;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken;
