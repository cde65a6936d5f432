//! Every schema file under `schemas/events/`, compiled in: what the gateway serves at
//! `GET /schemas/events/...` (the `dataschema` URIs' targets). A test checks that this
//! list is the directory's content.

/// (path relative to the repository root, content) of every schema file.
pub const SCHEMA_FILES: &[(&str, &str)] = &[
    (
        "schemas/events/cloudevent.v1.json",
        include_str!("../events/cloudevent.v1.json"),
    ),
    (
        "schemas/events/customers/CustomerRegistered.v1.json",
        include_str!("../events/customers/CustomerRegistered.v1.json"),
    ),
    (
        "schemas/events/inventory/ProductAdded.v1.json",
        include_str!("../events/inventory/ProductAdded.v1.json"),
    ),
    (
        "schemas/events/inventory/ProductAdded.v2.json",
        include_str!("../events/inventory/ProductAdded.v2.json"),
    ),
    (
        "schemas/events/inventory/ProductPriceChanged.v1.json",
        include_str!("../events/inventory/ProductPriceChanged.v1.json"),
    ),
    (
        "schemas/events/inventory/ProductRestocked.v1.json",
        include_str!("../events/inventory/ProductRestocked.v1.json"),
    ),
    (
        "schemas/events/inventory/StockCommitted.v1.json",
        include_str!("../events/inventory/StockCommitted.v1.json"),
    ),
    (
        "schemas/events/inventory/StockReleased.v1.json",
        include_str!("../events/inventory/StockReleased.v1.json"),
    ),
    (
        "schemas/events/inventory/StockReservationRejected.v1.json",
        include_str!("../events/inventory/StockReservationRejected.v1.json"),
    ),
    (
        "schemas/events/inventory/StockReserved.v1.json",
        include_str!("../events/inventory/StockReserved.v1.json"),
    ),
    (
        "schemas/events/orders/OrderCancellationRefused.v1.json",
        include_str!("../events/orders/OrderCancellationRefused.v1.json"),
    ),
    (
        "schemas/events/orders/OrderCancellationRequested.v1.json",
        include_str!("../events/orders/OrderCancellationRequested.v1.json"),
    ),
    (
        "schemas/events/orders/OrderCancelled.v1.json",
        include_str!("../events/orders/OrderCancelled.v1.json"),
    ),
    (
        "schemas/events/orders/OrderConfirmed.v1.json",
        include_str!("../events/orders/OrderConfirmed.v1.json"),
    ),
    (
        "schemas/events/orders/OrderDelivered.v1.json",
        include_str!("../events/orders/OrderDelivered.v1.json"),
    ),
    (
        "schemas/events/orders/OrderPlaced.v1.json",
        include_str!("../events/orders/OrderPlaced.v1.json"),
    ),
    (
        "schemas/events/orders/OrderPlaced.v2.json",
        include_str!("../events/orders/OrderPlaced.v2.json"),
    ),
    (
        "schemas/events/orders/OrderShipped.v1.json",
        include_str!("../events/orders/OrderShipped.v1.json"),
    ),
    (
        "schemas/events/payments/FundsDeposited.v1.json",
        include_str!("../events/payments/FundsDeposited.v1.json"),
    ),
    (
        "schemas/events/payments/PaymentCompleted.v1.json",
        include_str!("../events/payments/PaymentCompleted.v1.json"),
    ),
    (
        "schemas/events/payments/PaymentDeclined.v1.json",
        include_str!("../events/payments/PaymentDeclined.v1.json"),
    ),
    (
        "schemas/events/payments/PaymentRefunded.v1.json",
        include_str!("../events/payments/PaymentRefunded.v1.json"),
    ),
    (
        "schemas/events/shipping/ShipmentCancellationRefused.v1.json",
        include_str!("../events/shipping/ShipmentCancellationRefused.v1.json"),
    ),
    (
        "schemas/events/shipping/ShipmentCancelled.v1.json",
        include_str!("../events/shipping/ShipmentCancelled.v1.json"),
    ),
    (
        "schemas/events/shipping/ShipmentDelivered.v1.json",
        include_str!("../events/shipping/ShipmentDelivered.v1.json"),
    ),
    (
        "schemas/events/shipping/ShipmentDispatched.v1.json",
        include_str!("../events/shipping/ShipmentDispatched.v1.json"),
    ),
    (
        "schemas/events/shipping/ShipmentFailed.v1.json",
        include_str!("../events/shipping/ShipmentFailed.v1.json"),
    ),
    (
        "schemas/events/shipping/ShipmentScheduled.v1.json",
        include_str!("../events/shipping/ShipmentScheduled.v1.json"),
    ),
];

/// The content of the schema file at `path` (relative to the repository root, e.g.
/// `schemas/events/orders/OrderPlaced.v2.json`).
pub fn schema_file(path: &str) -> Option<&'static str> {
    SCHEMA_FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, content)| *content)
}
