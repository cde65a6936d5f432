//! The web edge shared by every Shop component and the gateway. It knows HTTP, tokens and
//! the OpenAPI document, and nothing of events, aggregates or databases.
//!
//! - [`http`]: problem+json errors, JSON extraction, `/health`, `/ready`, `/metrics`, the
//!   edge's layers, serving with graceful shutdown.
//! - [`auth`]: JWTs, Argon2id passwords, and the extractors that check them.
//! - [`openapi`]: the document's assembly and what every operation shares.
//! - [`consistency`]: read-your-writes tokens (their format and headers, reading them from
//!   a request); [`idempotency`]: the request's side of `Idempotency-Key` (the header, the
//!   fingerprint, the extractors).
//! - [`telemetry`]: logging, trace context, metrics recorder (and, with the `otlp`
//!   feature, span export).
#![forbid(unsafe_code)]

pub mod auth;
pub mod consistency;
pub mod http;
pub mod idempotency;
pub mod openapi;
pub mod telemetry;
