//! The orders service: orders and their lifecycle (SPEC §3.4).
//!
//! - [`order`]: the `Order` aggregate.
//! - [`api`]: `POST /api/orders`, `POST /api/orders/{id}/cancel`.
//! - [`reactions`]: its replica of the catalogue, fed by inventory events, and its part
//!   of the saga (confirm, cancel, follow the shipment).
//! - [`deadline`]: cancels orders not confirmed in time.
//! - [`backlog`]: refuses new orders while too many wait for the saga.
//! - [`service`]: wiring — its own database, relay and consumers.
#![forbid(unsafe_code)]

pub mod api;
pub mod backlog;
pub mod deadline;
pub mod order;
pub mod reactions;
pub mod service;

pub use service::{start, OrdersConfig, COMPONENT};
