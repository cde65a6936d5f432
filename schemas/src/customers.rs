//! Events of the customers service: accounts. Credentials never appear in events.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Service;

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

service_events!(
    /// Every event of the customers service (externally tagged, as in [`crate::inventory`]).
    CustomerEvent,
    Service::Customers,
    [CustomerRegistered]
);
