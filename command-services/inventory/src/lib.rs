//! The inventory service: the catalogue (products, prices) and stock.
//!
//! - [`product`]: the `Product` aggregate — the rules, pure and tested given/when/then.
//! - [`reservation`]: the `Reservation` aggregate — one all-or-nothing decision per order.
//! - [`reactions`]: the saga step `OrderPlaced` → `StockReserved` / `StockReservationRejected`.
//! - [`api`]: the REST routes (admin writes) that turn requests into commands.
//! - [`service`]: wiring — its own database, event store, outbox relay.
#![forbid(unsafe_code)]

pub mod api;
pub mod product;
pub mod reactions;
pub mod reservation;
pub mod service;

pub use service::start;
