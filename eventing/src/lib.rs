//! Event plumbing shared by every Shop component, with no domain knowledge.
//!
//! - [`db`]: databases per component (create, connect, apply schema).
//! - [`store`]: the event store (cqrs-es persistence over PostgreSQL) with its outbox.
//! - [`log`]: the event-log abstraction (append to topics, consume as a group) and its
//!   Kafka implementation in [`kafka`].
//! - [`relay`]: the outbox relay, one active per service, woken by [`signal`] (the SQL
//!   layer's in-process notification of commits) or `NOTIFY`.
//! - [`consumer`]: the consumer runner shared by projectors and saga reactions:
//!   effect + dedup + checkpoint in one transaction, retries, dead letters.
//! - [`http`]: the HTTP edge: problem+json errors, JSON extraction, health/ready/metrics,
//!   serving with graceful shutdown. [`auth`]: JWTs and the extractors that check them.
//!   [`idempotency`]: `Idempotency-Key` on the commands' routes. [`refusal`]: the one
//!   mapping of command errors to problem+json.
//! - [`telemetry`]: logging, trace context, metrics recorder. [`fault`]: fault injection
//!   points used by crash tests.
#![forbid(unsafe_code)]

pub mod auth;
pub mod command;
pub mod consistency;
pub mod consumer;
pub mod events_api;
pub mod fault;
pub mod http;
pub mod idempotency;
pub mod openapi;
pub mod platform;
pub mod refusal;
pub mod relay;
pub mod store;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken;
