//! The payments service: customer wallets (SPEC §3.2).
//!
//! - [`wallet`]: the `Wallet` aggregate (one per customer, id = customer id).
//! - [`api`]: `POST /api/customers/{id}/wallet/deposits`.
//! - [`reactions`]: what payments does with other services' events — for now, keeping
//!   its replica of registered customers.
//! - [`service`]: wiring — its own database, relay and consumers.
#![forbid(unsafe_code)]

pub mod api;
pub mod reactions;
pub mod service;
pub mod wallet;

pub use service::{start, COMPONENT};
