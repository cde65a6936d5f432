//! The shipping service: one shipment per confirmed order (SPEC §3.5, §5.4).
//!
//! - [`shipment`]: the `Shipment` aggregate (id = order id).
//! - [`api`]: `POST /api/shipments/{order_id}/dispatch` and `/deliver` (admin).
//! - [`reactions`]: schedules (or fails) a shipment when an order is confirmed, cancels it
//!   when the order is cancelled first; keeps a replica of customers' countries.
//! - [`service`]: wiring — its own database, relay and consumers.
#![forbid(unsafe_code)]

pub mod api;
pub mod reactions;
pub mod service;
pub mod shipment;

pub use service::{start, ShippingConfig, COMPONENT};
