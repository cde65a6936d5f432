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
//! - [`idempotency`]: `Idempotency-Key` on the commands' routes, the store's side (the
//!   request's side is `shop_web::idempotency`). [`refusal`]: the one mapping of command
//!   errors to problem+json.
//! - [`consistency`]: waiting until a read-your-writes token's version is applied (the
//!   token itself is `shop_web::consistency`); [`events_api`]: `GET /api/events`.
//! - `backend`: the backend seam, the few operations of the core whose SQL differs
//!   between PostgreSQL and SQLite; the rest of the core never asks which runs.
//! - [`platform`]: what every component is built from. [`fault`]: fault injection points
//!   used by crash tests.
//!
//! The web edge (problem+json, auth, OpenAPI, telemetry) is `shop-web`, which this crate
//! uses and which knows nothing of it.
#![forbid(unsafe_code)]

mod backend;
pub mod checkpoint;
pub mod command;
pub mod consistency;
pub mod consumer;
pub mod events_api;
pub mod fault;
pub mod handler;
pub mod idempotency;
pub mod platform;
pub mod refusal;
pub mod relay;
pub mod store;

pub use tokio_util::sync::CancellationToken;
