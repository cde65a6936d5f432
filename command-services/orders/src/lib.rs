//! The orders service: orders and their lifecycle (SPEC §3.4).
//!
//! - [`order`]: the `Order` aggregate.
//! - [`api`]: `POST /api/orders`.
//! - [`reactions`]: its replica of the catalogue, fed by inventory events.
//! - [`service`]: wiring — its own database, relay and consumers.
#![forbid(unsafe_code)]

pub mod api;
pub mod order;
pub mod reactions;
pub mod service;

pub use service::{start, COMPONENT};
