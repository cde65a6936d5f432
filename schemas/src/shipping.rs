//! Events of the shipping service: one shipment per confirmed order.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Service;

/// A shipment was planned to the customer's country.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentScheduled {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// A shipment could not be scheduled; the saga compensates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentFailed {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub country: String,
    /// `unsupported_country`.
    pub reason: String,
}

/// The parcel left the warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentDispatched {
    pub order_id: Uuid,
}

/// The parcel reached the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentDelivered {
    pub order_id: Uuid,
}

/// Why shipping refuses to cancel a shipment: its parcel has left.
pub const ALREADY_DISPATCHED: &str = "already_dispatched";

/// Shipping refused an order's cancellation request ([`ALREADY_DISPATCHED`]): the goods
/// are on their way, so the order is not cancelled and nothing is refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentCancellationRefused {
    pub order_id: Uuid,
    pub reason: String,
}

/// The shipment will not leave: the order was cancelled before dispatch, or its
/// cancellation was requested before the parcel left (then the order is cancelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentCancelled {
    pub order_id: Uuid,
}

service_events!(
    /// Every event of the shipping service (externally tagged).
    ShippingEvent,
    Service::Shipping,
    [
        ShipmentScheduled,
        ShipmentFailed,
        ShipmentDispatched,
        ShipmentDelivered,
        ShipmentCancelled,
        ShipmentCancellationRefused,
    ]
);

impl ShippingEvent {
    /// The order (and shipment) an event is about.
    pub fn order_id(&self) -> Uuid {
        match self {
            ShippingEvent::ShipmentScheduled(e) => e.order_id,
            ShippingEvent::ShipmentFailed(e) => e.order_id,
            ShippingEvent::ShipmentDispatched(e) => e.order_id,
            ShippingEvent::ShipmentDelivered(e) => e.order_id,
            ShippingEvent::ShipmentCancelled(e) => e.order_id,
            ShippingEvent::ShipmentCancellationRefused(e) => e.order_id,
        }
    }
}
