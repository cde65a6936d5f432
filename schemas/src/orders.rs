//! Events of the orders service: orders and their lifecycle.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Service;

/// One line of an order, priced when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i64,
    /// The product's price (minor units) when the order was placed.
    pub unit_price: i64,
}

/// The currency of every amount of a deployment (SPEC §3: one per deployment, JPY by
/// default; no deployment can choose another yet). ISO 4217.
pub const DEPLOYMENT_CURRENCY: &str = "JPY";

/// A customer placed an order; the saga starts here (version 2: with the currency its
/// prices are in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub lines: Vec<OrderLine>,
    pub total: i64,
    /// Since v2: the ISO 4217 code of `unit_price` and `total` when the order was placed.
    pub currency: String,
}

/// `OrderPlaced` v1 → v2: every order placed before v2 was priced in the deployment's
/// only currency, [`DEPLOYMENT_CURRENCY`].
pub fn order_placed_v1_to_v2(data: serde_json::Value) -> serde_json::Value {
    crate::upcast::with_default(data, "currency", DEPLOYMENT_CURRENCY.into())
}

/// Stock is reserved and payment completed: the order is confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: Uuid,
}

/// Why an order was cancelled (SPEC §3.4).
pub const CANCEL_REASONS: &[&str] = &[
    "out_of_stock",
    "payment_declined",
    "shipping_failed",
    "customer_request",
    "timeout",
];

/// The order was cancelled; compensations follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    /// One of [`CANCEL_REASONS`].
    pub reason: String,
}

/// The customer (or an admin) asked to cancel a confirmed order. Once an order is
/// confirmed its shipment may be scheduled and dispatched, so shipping decides (SPEC §5
/// rule 6): `ShipmentCancelled` leads to `OrderCancelled`, `ShipmentCancellationRefused`
/// to `OrderCancellationRefused`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancellationRequested {
    pub order_id: Uuid,
    /// `customer_request`.
    pub reason: String,
}

/// Shipping refused the order's cancellation: its parcel had already left. The order
/// goes on; nothing is refunded or released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancellationRefused {
    pub order_id: Uuid,
    /// Shipping's reason, e.g. `already_dispatched`.
    pub reason: String,
}

/// The order's shipment left the warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub order_id: Uuid,
}

/// The order reached its customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDelivered {
    pub order_id: Uuid,
}

service_events!(
    /// Every event of the orders service (externally tagged).
    OrderEvent,
    Service::Orders,
    [
        OrderPlaced = 2,
        OrderConfirmed,
        OrderCancelled,
        OrderShipped,
        OrderDelivered,
        OrderCancellationRequested,
        OrderCancellationRefused,
    ]
);

impl OrderEvent {
    /// The order an event is about.
    pub fn order_id(&self) -> Uuid {
        match self {
            OrderEvent::OrderPlaced(e) => e.order_id,
            OrderEvent::OrderConfirmed(e) => e.order_id,
            OrderEvent::OrderCancelled(e) => e.order_id,
            OrderEvent::OrderShipped(e) => e.order_id,
            OrderEvent::OrderDelivered(e) => e.order_id,
            OrderEvent::OrderCancellationRequested(e) => e.order_id,
            OrderEvent::OrderCancellationRefused(e) => e.order_id,
        }
    }
}
