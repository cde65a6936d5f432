//! The notifications service: signed webhooks of order, payment and shipping events
//! (issue 27). It only listens to the saga's topics; it never takes part in the saga.
//!
//! - [`endpoint`]: the `WebhookEndpoint` aggregate (register, update, pause, resume,
//!   disable, delete).
//! - [`delivery`]: the `WebhookDelivery` aggregate (one event to one endpoint: attempts,
//!   retries with exponential backoff and jitter, give-up, redelivery).
//! - [`reactions`]: schedules a delivery per subscribed endpoint for each event read.
//! - [`dispatcher`]: sends due deliveries on bounded tasks of its own, signed.
//! - [`signing`]: Standard Webhooks secrets, ids and signatures.
//! - [`address`]: public targets only, unless the allow-list names them.
//! - [`tables`], [`views`]: the read model (endpoints, deliveries, attempts) and its reads.
//! - [`api`]: the admin routes under `/api/webhooks`.
//! - [`service`]: wiring — its own database, relay, consumer and dispatcher.
//!
//! It must never block the consumer on a receiver, and never put a secret in an event
//! or a log line.
#![forbid(unsafe_code)]

pub mod address;
pub mod api;
pub mod delivery;
pub mod dispatcher;
pub mod endpoint;
pub mod reactions;
pub mod service;
pub mod signing;
pub mod tables;
pub mod views;

pub use service::{start, NotificationsConfig, COMPONENT};
