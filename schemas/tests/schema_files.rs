//! Every event type validates against its JSON Schema file, every schema file under
//! `schemas/events/<service>/` belongs to an event type with a Rust type, and every
//! event's data decodes by its name into its service's enum.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use shop_schemas::customers::{Address, CustomerEvent, CustomerRegistered};
use shop_schemas::files::SCHEMA_FILES;
use shop_schemas::inventory::{
    InventoryEvent, ProductAdded, ProductPriceChanged, ProductRestocked, StockCommitted, StockLine,
    StockReleased, StockReservationRejected, StockReserved, StockShortage,
};
use shop_schemas::notifications::{
    NotificationEvent, WebhookAttemptFailed, WebhookDelivered, WebhookEndpointDeleted,
    WebhookEndpointDisabled, WebhookEndpointPaused, WebhookEndpointRegistered,
    WebhookEndpointResumed, WebhookEndpointUpdated, WebhookFailed, WebhookRedeliveryRequested,
    WebhookScheduled, WebhookSecretRotated,
};
use shop_schemas::orders::{
    OrderCancellationRefused, OrderCancellationRequested, OrderCancelled, OrderConfirmed,
    OrderDelivered, OrderEvent, OrderLine, OrderPlaced, OrderShipped,
};
use shop_schemas::payments::{
    FundsDeposited, PaymentCompleted, PaymentDeclined, PaymentEvent, PaymentRefunded,
};
use shop_schemas::shipping::{
    ShipmentCancellationRefused, ShipmentCancelled, ShipmentDelivered, ShipmentDispatched,
    ShipmentFailed, ShipmentScheduled, ShippingEvent,
};
use shop_schemas::{
    dataschema_version, decode_event, decode_versioned, event_type, event_types, schema_path,
    split_event, Service,
};
use uuid::Uuid;

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("events")
}

fn load_schema(relative: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One sample of every event, as the service would emit it.
fn samples() -> Vec<(String, Value)> {
    let product_id = Uuid::now_v7();
    let events = vec![
        InventoryEvent::ProductAdded(ProductAdded {
            product_id,
            sku: "SKU-1".into(),
            name: "Tea".into(),
            price: 1200,
            stock: 5,
            category: "tea".into(),
        }),
        InventoryEvent::ProductPriceChanged(ProductPriceChanged {
            product_id,
            price: 900,
        }),
        InventoryEvent::ProductRestocked(ProductRestocked {
            product_id,
            quantity: 3,
        }),
        InventoryEvent::StockReserved(StockReserved {
            order_id: Uuid::now_v7(),
            lines: vec![StockLine {
                product_id,
                quantity: 2,
            }],
        }),
        InventoryEvent::StockReservationRejected(StockReservationRejected {
            order_id: Uuid::now_v7(),
            reason: "out_of_stock".into(),
            lines: vec![StockShortage {
                product_id,
                requested: 5,
                available: 1,
            }],
        }),
    ];
    let customers = vec![CustomerEvent::CustomerRegistered(CustomerRegistered {
        customer_id: Uuid::now_v7(),
        name: "Hanako".into(),
        email: "hanako@example.com".into(),
        address: Address {
            line1: "1-2-3 Shibuya".into(),
            city: "Tokyo".into(),
            postal_code: "150-0002".into(),
            country: "JP".into(),
        },
    })];
    let payments = vec![
        PaymentEvent::FundsDeposited(FundsDeposited {
            customer_id: Uuid::now_v7(),
            amount: 5000,
        }),
        PaymentEvent::PaymentCompleted(PaymentCompleted {
            order_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            amount: 2400,
        }),
        PaymentEvent::PaymentDeclined(PaymentDeclined {
            order_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            amount: 2400,
            reason: "insufficient_funds".into(),
        }),
    ];
    let mut samples: Vec<(String, Value)> = events.into_iter().map(split).collect();
    samples.extend(customers.into_iter().map(split));
    samples.extend(payments.into_iter().map(split));
    samples.push(split(OrderEvent::OrderPlaced(OrderPlaced {
        order_id: Uuid::now_v7(),
        customer_id: Uuid::now_v7(),
        lines: vec![OrderLine {
            product_id,
            quantity: 2,
            unit_price: 1200,
        }],
        total: 2400,
        currency: "JPY".into(),
    })));
    let order_id = Uuid::now_v7();
    let customer_id = Uuid::now_v7();
    let stock_lines = vec![StockLine {
        product_id,
        quantity: 2,
    }];
    samples.extend(
        [
            InventoryEvent::StockCommitted(StockCommitted {
                order_id,
                lines: stock_lines.clone(),
            }),
            InventoryEvent::StockReleased(StockReleased {
                order_id,
                lines: stock_lines,
                released_from: "sold".into(),
            }),
        ]
        .into_iter()
        .map(split),
    );
    samples.extend(
        [
            OrderEvent::OrderConfirmed(OrderConfirmed { order_id }),
            OrderEvent::OrderCancelled(OrderCancelled {
                order_id,
                reason: "timeout".into(),
            }),
            OrderEvent::OrderShipped(OrderShipped { order_id }),
            OrderEvent::OrderDelivered(OrderDelivered { order_id }),
            OrderEvent::OrderCancellationRequested(OrderCancellationRequested {
                order_id,
                reason: "customer_request".into(),
            }),
            OrderEvent::OrderCancellationRefused(OrderCancellationRefused {
                order_id,
                reason: "already_dispatched".into(),
            }),
        ]
        .into_iter()
        .map(split),
    );
    samples.push(split(PaymentEvent::PaymentRefunded(PaymentRefunded {
        order_id,
        customer_id,
        amount: 2400,
    })));
    samples.extend(
        [
            ShippingEvent::ShipmentScheduled(ShipmentScheduled {
                order_id,
                customer_id,
                country: "JP".into(),
            }),
            ShippingEvent::ShipmentFailed(ShipmentFailed {
                order_id,
                customer_id,
                country: "BR".into(),
                reason: "unsupported_country".into(),
            }),
            ShippingEvent::ShipmentDispatched(ShipmentDispatched { order_id }),
            ShippingEvent::ShipmentDelivered(ShipmentDelivered { order_id }),
            ShippingEvent::ShipmentCancelled(ShipmentCancelled { order_id }),
            ShippingEvent::ShipmentCancellationRefused(ShipmentCancellationRefused {
                order_id,
                reason: "already_dispatched".into(),
            }),
        ]
        .into_iter()
        .map(split),
    );
    let endpoint_id = Uuid::now_v7();
    let delivery_id = Uuid::now_v7();
    let at = chrono::Utc::now();
    let types = vec!["shop.orders.OrderPlaced".to_string()];
    samples.extend(
        [
            NotificationEvent::WebhookEndpointRegistered(WebhookEndpointRegistered {
                endpoint_id,
                url: "https://hooks.example.com/shop".into(),
                event_types: types.clone(),
                description: "ERP".into(),
                secret_nonce: "0123456789abcdef0123456789abcdef".into(),
            }),
            NotificationEvent::WebhookEndpointUpdated(WebhookEndpointUpdated {
                endpoint_id,
                url: "https://hooks.example.com/v2".into(),
                event_types: types,
                description: String::new(),
            }),
            NotificationEvent::WebhookSecretRotated(WebhookSecretRotated {
                endpoint_id,
                secret_nonce: "fedcba9876543210fedcba9876543210".into(),
                previous_valid_secs: 86_400,
            }),
            NotificationEvent::WebhookEndpointPaused(WebhookEndpointPaused { endpoint_id }),
            NotificationEvent::WebhookEndpointResumed(WebhookEndpointResumed { endpoint_id }),
            NotificationEvent::WebhookEndpointDisabled(WebhookEndpointDisabled {
                endpoint_id,
                reason: "delivery failed 10 times".into(),
            }),
            NotificationEvent::WebhookEndpointDeleted(WebhookEndpointDeleted { endpoint_id }),
            NotificationEvent::WebhookScheduled(WebhookScheduled {
                delivery_id,
                endpoint_id,
                webhook_id: format!("msg_{}", delivery_id.simple()),
                event_id: order_id,
                event_type: "shop.orders.OrderPlaced".into(),
                payload: serde_json::json!({"specversion": "1.0", "id": order_id, "type": "shop.orders.OrderPlaced", "data": {}}),
            }),
            NotificationEvent::WebhookAttemptFailed(WebhookAttemptFailed {
                delivery_id,
                endpoint_id,
                attempt: 1,
                status_code: Some(500),
                error: "HTTP 500".into(),
                latency_ms: 12,
                at,
                next_attempt_at: at,
            }),
            NotificationEvent::WebhookDelivered(WebhookDelivered {
                delivery_id,
                endpoint_id,
                attempt: 2,
                status_code: 204,
                latency_ms: 9,
                at,
            }),
            NotificationEvent::WebhookFailed(WebhookFailed {
                delivery_id,
                endpoint_id,
                attempt: 10,
                status_code: None,
                error: "timed out".into(),
                latency_ms: 5000,
                at,
            }),
            NotificationEvent::WebhookRedeliveryRequested(WebhookRedeliveryRequested {
                delivery_id,
                endpoint_id,
            }),
        ]
        .into_iter()
        .map(split),
    );
    samples
}

/// The sample of the event type `name`.
fn sample<'a>(samples: &'a [(String, Value)], name: &str) -> &'a (String, Value) {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no sample for {name}"))
}

fn split(event: impl serde::Serialize) -> (String, Value) {
    split_event(serde_json::to_value(event).unwrap()).unwrap()
}

#[test]
fn every_event_validates_against_its_schema_file() {
    let samples = samples();
    for event_type in event_types() {
        let (_, data) = sample(&samples, event_type.name);
        let schema = load_schema(&event_type.schema_path());
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let errors: Vec<String> = validator.iter_errors(data).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", event_type.name);
    }
}

#[test]
fn every_schema_file_has_a_rust_type() {
    let mut files = BTreeSet::new();
    for service_dir in std::fs::read_dir(events_dir()).unwrap() {
        let service_dir = service_dir.unwrap().path();
        if !service_dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&service_dir).unwrap() {
            let file = file.unwrap().path();
            let relative = file
                .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
                .unwrap();
            files.insert(relative.to_string_lossy().into_owned());
        }
    }
    // Every version of every event type, from 1 to its newest.
    let typed: BTreeSet<String> = event_types()
        .flat_map(|t| (1..=t.version).map(|v| schema_path(t.service, t.name, v)))
        .collect();
    assert_eq!(files, typed, "schema files and Rust event types differ");
    // The gateway serves exactly these, and the envelope's schema.
    let compiled: BTreeSet<String> = SCHEMA_FILES
        .iter()
        .map(|(path, content)| {
            let on_disk = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .unwrap()
                    .join(path),
            )
            .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(*content, on_disk, "{path}");
            path.to_string()
        })
        .collect();
    let mut expected = typed;
    expected.insert("schemas/events/cloudevent.v1.json".to_string());
    assert_eq!(
        compiled, expected,
        "shop_schemas::files::SCHEMA_FILES and schemas/events/ differ"
    );
}

#[test]
fn dataschema_is_an_absolute_uri_naming_the_version() {
    for event_type in event_types() {
        let uri = event_type.dataschema();
        assert!(
            uri.starts_with("https://") && uri.ends_with(&event_type.schema_path()),
            "{uri}"
        );
        assert_eq!(dataschema_version(&uri), Some(event_type.version), "{uri}");
    }
    assert_eq!(
        event_type(Service::Orders, "OrderPlaced")
            .unwrap()
            .dataschema(),
        format!(
            "{}/schemas/events/orders/OrderPlaced.v2.json",
            shop_schemas::schema_base()
        )
    );
    assert_eq!(
        dataschema_version("schemas/events/orders/OrderPlaced.v1.json"),
        Some(1)
    );
    assert_eq!(dataschema_version("urn:x"), None);
}

#[test]
fn a_v2_payload_with_fields_this_build_does_not_know_still_decodes() {
    // A newer producer (a rolling update) adds a field: older consumers ignore it.
    let samples = samples();
    for name in ["OrderPlaced", "ProductAdded"] {
        let (_, data) = sample(&samples, name);
        let mut newer = data.clone();
        newer["gift_wrap"] = Value::from(true);
        let service = event_types().find(|t| t.name == name).unwrap().service;
        let (_, back) = round_trip(service, name, &newer).unwrap();
        assert_eq!(&back, data, "{name}");
        // Also when it names a version this build does not know.
        let decoded = match service {
            Service::Orders => decode_versioned::<OrderEvent>(name, 3, &newer).map(|_| ()),
            _ => decode_versioned::<InventoryEvent>(name, 3, &newer).map(|_| ()),
        };
        assert!(decoded.is_ok(), "{name}: {decoded:?}");
    }
}

#[test]
fn v1_data_is_upcast_to_data_valid_for_v2() {
    let product_id = Uuid::now_v7();
    let cases = [
        (
            "ProductAdded",
            "schemas/events/inventory/ProductAdded",
            serde_json::json!({"product_id": product_id, "sku": "TEA-1", "name": "Tea", "price": 1200, "stock": 3}),
        ),
        (
            "OrderPlaced",
            "schemas/events/orders/OrderPlaced",
            serde_json::json!({"order_id": Uuid::now_v7(), "customer_id": Uuid::now_v7(),
                "lines": [{"product_id": product_id, "quantity": 2, "unit_price": 600}], "total": 1200}),
        ),
    ];
    for (name, schema, v1) in cases {
        let validate = |version: u32, data: &Value| {
            let schema = load_schema(&format!("{schema}.v{version}.json"));
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap();
            let errors: Vec<String> = validator.iter_errors(data).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{name} v{version}: {errors:?}");
        };
        validate(1, &v1);
        // A v1 event is not a v2 one (its new field is required)…
        let schema_v2 = load_schema(&format!("{schema}.v2.json"));
        assert!(!jsonschema::draft202012::new(&schema_v2)
            .unwrap()
            .is_valid(&v1));
        // …until it is upcast.
        let (version, v2) = shop_schemas::upcast(name, 1, std::borrow::Cow::Borrowed(&v1));
        assert_eq!(version, 2);
        validate(2, &v2);
    }
    // Decoded v1 data carries the upcasters' defaults.
    let (_, data) = &cases_v1_order();
    match decode_versioned::<OrderEvent>("OrderPlaced", 1, data).unwrap() {
        OrderEvent::OrderPlaced(e) => assert_eq!(e.currency, "JPY"),
        other => panic!("{other:?}"),
    }
}

fn cases_v1_order() -> (String, Value) {
    let mut data = sample(&samples(), "OrderPlaced").1.clone();
    data.as_object_mut().unwrap().remove("currency");
    ("OrderPlaced".into(), data)
}

#[test]
fn invalid_data_is_rejected_by_the_schema() {
    let schema = load_schema("schemas/events/inventory/ProductAdded.v1.json");
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    assert!(!validator.is_valid(&serde_json::json!({"product_id": "x", "sku": "", "price": -1})));
}

#[test]
fn structured_cloudevent_validates_against_envelope_schema() {
    let schema = load_schema("schemas/events/cloudevent.v1.json");
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let (name, data) = samples().remove(0);
    let event = shop_schemas::CloudEvent {
        specversion: "1.0".into(),
        id: Uuid::now_v7(),
        source: "/shop/inventory".into(),
        ty: format!("shop.inventory.{name}"),
        subject: Uuid::now_v7().to_string(),
        time: chrono::Utc::now(),
        dataschema: shop_schemas::dataschema(Service::Inventory, &name, 2),
        datacontenttype: "application/json".into(),
        sequence: 1,
        correlationid: String::new(),
        causationid: String::new(),
        traceparent: String::new(),
        data,
    };
    let json = serde_json::to_value(event).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// The sample's data read back by name into its service's enum, and written again.
fn round_trip(service: Service, name: &str, data: &Value) -> Result<(String, Value), String> {
    fn again<E: serde::de::DeserializeOwned + serde::Serialize>(
        name: &str,
        data: &Value,
    ) -> Result<(String, Value), String> {
        decode_event::<E>(name, data)
            .map(split)
            .map_err(|e| e.to_string())
    }
    match service {
        Service::Customers => again::<CustomerEvent>(name, data),
        Service::Inventory => again::<InventoryEvent>(name, data),
        Service::Orders => again::<OrderEvent>(name, data),
        Service::Payments => again::<PaymentEvent>(name, data),
        Service::Shipping => again::<ShippingEvent>(name, data),
        Service::Notifications => again::<NotificationEvent>(name, data),
    }
}

#[test]
fn every_event_decodes_by_its_name_into_its_services_enum() {
    let samples = samples();
    for event_type in event_types() {
        let (name, data) = sample(&samples, event_type.name);
        assert_eq!(
            round_trip(event_type.service, name, data),
            Ok((name.clone(), data.clone())),
            "{name}"
        );
    }
    // Data that does not fit its type, a name the enum does not have, data that is not
    // an object: errors, never a default.
    let (_, placed) = sample(&samples, "OrderPlaced");
    let mut wrong = placed.clone();
    wrong["total"] = Value::from("a lot");
    assert!(round_trip(Service::Orders, "OrderPlaced", &wrong).is_err());
    assert!(round_trip(Service::Orders, "OrderLost", placed).is_err());
    assert!(round_trip(Service::Orders, "OrderConfirmed", &Value::from(7)).is_err());
    assert!(round_trip(Service::Inventory, "OrderPlaced", placed).is_err());
}
