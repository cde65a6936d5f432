//! The customers service: accounts and identity (SPEC §3.1).
//!
//! - [`customer`]: the `Customer` aggregate (registration), pure and tested.
//! - [`api`]: `POST /api/customers` (public registration) and `POST /api/auth/token`
//!   (login for customers and for `admin@shop.local`).
//! - [`credentials`]: the hooks that keep credentials beside `CustomerRegistered`.
//! - [`service`]: wiring — its own database (event store, outbox, credentials), relay.
//!
//! Passwords are hashed with Argon2id before anything else happens and exist only as
//! that hash in `customer_credentials`; events carry no credential.
#![forbid(unsafe_code)]

pub mod api;
pub mod countries;
pub mod credentials;
pub mod customer;
pub mod service;
pub mod throttle;

pub use service::{start, COMPONENT};
