//! Events of the customers service: accounts. Credentials never appear in events.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{EventType, Service};

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line1: String,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// A customer account was opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub customer_id: Uuid,
    pub name: String,
    pub email: String,
    pub address: Address,
}

/// Every event of the customers service (externally tagged, as in [`crate::inventory`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerEvent {
    CustomerRegistered(CustomerRegistered),
}

pub const EVENT_TYPES: &[EventType] = &[EventType {
    service: Service::Customers,
    name: "CustomerRegistered",
    version: 1,
}];

impl CustomerEvent {
    pub fn name(&self) -> &'static str {
        match self {
            CustomerEvent::CustomerRegistered(_) => "CustomerRegistered",
        }
    }
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
