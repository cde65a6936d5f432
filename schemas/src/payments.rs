//! Events of the payments service: customer wallets.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Service;

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

/// A completed charge was given back (compensation for a cancelled order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount: i64,
}

service_events!(
    /// Every event of the payments service (externally tagged).
    PaymentEvent,
    Service::Payments,
    [
        FundsDeposited,
        PaymentCompleted,
        PaymentDeclined,
        PaymentRefunded,
    ]
);
