//! Event contracts of Shop: the CloudEvents envelope (SPEC §4), topic names, the Rust
//! types of every event and the JSON Schema files they are checked against.
//!
//! This crate depends on no other crate of ours. Every other crate speaks to the outside
//! world (Kafka, the read API, operator tools) only in the terms defined here.
#![forbid(unsafe_code)]

/// Declares a service's event enum (externally tagged, one variant per event struct of
/// the same name), its [`EventType`] registry `EVENT_TYPES` (all version 1), `name()` and
/// the cqrs-es `DomainEvent` impl.
macro_rules! service_events {
    ($(#[$meta:meta])* $enum:ident, $service:expr, [$($name:ident),+ $(,)?]) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum $enum {
            $($name($name)),+
        }

        pub const EVENT_TYPES: &[$crate::EventType] = &[$($crate::EventType {
            service: $service,
            name: stringify!($name),
            version: 1,
        }),+];

        impl $enum {
            /// The event's name, as in its CloudEvents type and schema file.
            pub fn name(&self) -> &'static str {
                match self {
                    $($enum::$name(_) => stringify!($name)),+
                }
            }
        }

        impl cqrs_es::DomainEvent for $enum {
            fn event_type(&self) -> String {
                self.name().to_string()
            }

            fn event_version(&self) -> String {
                "1".to_string()
            }
        }
    };
}

pub mod customers;
pub mod envelope;
pub mod inventory;
pub mod orders;
pub mod payments;
pub mod shipping;
pub mod topics;

pub use envelope::{CloudEvent, EventMetadata};
pub use topics::Service;

/// One event type of the catalogue: where it comes from, its name and its version.
///
/// The registry [`event_types`] lists every event type that has a Rust type; a test checks
/// that each has a schema file under `schemas/events/` and that each schema file is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType {
    pub service: Service,
    pub name: &'static str,
    pub version: u32,
}

impl EventType {
    /// The CloudEvents `type` attribute, e.g. `shop.inventory.ProductAdded`.
    pub fn ce_type(&self) -> String {
        format!("shop.{}.{}", self.service.name(), self.name)
    }

    /// The CloudEvents `dataschema` attribute: the schema file's path in the repository.
    pub fn dataschema(&self) -> String {
        dataschema(self.service, self.name, self.version)
    }
}

/// The schema path of an event type, e.g. `schemas/events/inventory/ProductAdded.v1.json`.
pub fn dataschema(service: Service, name: &str, version: u32) -> String {
    format!(
        "schemas/events/{}/{}.v{}.json",
        service.name(),
        name,
        version
    )
}

/// Every event type that has a Rust type in this crate, service by service.
pub fn event_types() -> impl Iterator<Item = &'static EventType> {
    [
        customers::EVENT_TYPES,
        inventory::EVENT_TYPES,
        orders::EVENT_TYPES,
        payments::EVENT_TYPES,
        shipping::EVENT_TYPES,
    ]
    .into_iter()
    .flatten()
}

/// Looks up an event type by its service and name.
pub fn event_type(service: Service, name: &str) -> Option<&'static EventType> {
    event_types().find(|t| t.service == service && t.name == name)
}

/// Decodes event data of a named event into a service's event enum (externally tagged).
///
/// # Errors
/// The name is not a variant of `E`, or the data does not fit its shape.
pub fn decode_event<E: serde::de::DeserializeOwned>(
    name: &str,
    data: &serde_json::Value,
) -> Result<E, serde_json::Error> {
    // The enum is read straight from the name and the borrowed data, as from
    // `{name: data}` but without copying the data into such an object first.
    E::deserialize(serde::de::value::EnumAccessDeserializer::new(Tagged {
        name,
        data,
    }))
}

/// An externally tagged enum value as its variant's name and its data.
struct Tagged<'a> {
    name: &'a str,
    data: &'a serde_json::Value,
}

impl<'de> serde::de::EnumAccess<'de> for Tagged<'de> {
    type Error = serde_json::Error;
    type Variant = VariantData<'de>;

    fn variant_seed<V: serde::de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        use serde::de::IntoDeserializer;
        let variant = seed.deserialize(self.name.into_deserializer())?;
        Ok((variant, VariantData(self.data)))
    }
}

/// A variant's data, read as serde_json reads the value of a one-key object.
struct VariantData<'de>(&'de serde_json::Value);

impl<'de> serde::de::VariantAccess<'de> for VariantData<'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        serde::Deserialize::deserialize(self.0)
    }

    fn newtype_variant_seed<T: serde::de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        seed.deserialize(self.0)
    }

    fn tuple_variant<V: serde::de::Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_seq(self.0, visitor)
    }

    fn struct_variant<V: serde::de::Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_struct(self.0, "", fields, visitor)
    }
}

/// Splits an externally tagged event enum value into its name and its data.
///
/// Returns `None` when the value is not a one-key object.
pub fn split_event(value: serde_json::Value) -> Option<(String, serde_json::Value)> {
    match value {
        serde_json::Value::Object(map) if map.len() == 1 => map.into_iter().next(),
        _ => None,
    }
}
