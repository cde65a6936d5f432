//! Shop's event log: one trait for "append records to a topic" and "consume topics as a
//! group, with positions" ([`EventLog`]), and its two implementations — Kafka
//! ([`kafka`], production) and the embedded log on SQLite ([`embedded`], `shop dev`).
//! It knows topics, records and positions; nothing of aggregates, stores or relays.
#![forbid(unsafe_code)]

pub mod embedded;
pub mod kafka;
mod log;

pub use log::*;
