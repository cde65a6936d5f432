//! Events of the payments service: customer wallets.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{EventType, Service};

/// Money was put into a customer's wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsDeposited {
    pub customer_id: Uuid,
    /// Minor units of the deployment's currency.
    pub amount: i64,
}

/// An order's total was taken from its customer's wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount: i64,
}

/// The wallet held less than the order's total; nothing was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount: i64,
    /// `insufficient_funds`.
    pub reason: String,
}

/// Every event of the payments service (externally tagged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    FundsDeposited(FundsDeposited),
    PaymentCompleted(PaymentCompleted),
    PaymentDeclined(PaymentDeclined),
}

pub const EVENT_TYPES: &[EventType] = &[
    EventType {
        service: Service::Payments,
        name: "FundsDeposited",
        version: 1,
    },
    EventType {
        service: Service::Payments,
        name: "PaymentCompleted",
        version: 1,
    },
    EventType {
        service: Service::Payments,
        name: "PaymentDeclined",
        version: 1,
    },
];

impl PaymentEvent {
    pub fn name(&self) -> &'static str {
        match self {
            PaymentEvent::FundsDeposited(_) => "FundsDeposited",
            PaymentEvent::PaymentCompleted(_) => "PaymentCompleted",
            PaymentEvent::PaymentDeclined(_) => "PaymentDeclined",
        }
    }
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
