//! Event contracts of Shop: the CloudEvents envelope (SPEC §4), topic names, the Rust
//! types of every event and the JSON Schema files they are checked against.
//!
//! This crate depends on no other crate of ours. Every other crate speaks to the outside
//! world (Kafka, the read API, operator tools) only in the terms defined here.
#![forbid(unsafe_code)]

/// Declares a service's event enum (externally tagged, one variant per event struct of
/// the same name), its [`EventType`] registry `EVENT_TYPES` (each event at its newest
/// version: `Name = 2`; version 1 when none is given), `name()` and the cqrs-es
/// `DomainEvent` impl (whose `event_version` is that newest version: what producers write).
macro_rules! service_events {
    ($(#[$meta:meta])* $enum:ident, $service:expr, [$($name:ident $(= $version:literal)?),+ $(,)?]) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum $enum {
            $($name($name)),+
        }

        pub const EVENT_TYPES: &[$crate::EventType] = &[$($crate::EventType {
            service: $service,
            name: stringify!($name),
            version: $crate::newest(&[1 $(, $version)?]),
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
                match self {
                    $($enum::$name(_) => $crate::newest(&[1 $(, $version)?]).to_string()),+
                }
            }
        }
    };
}

pub mod customers;
pub mod envelope;
pub mod files;
pub mod inventory;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod shipping;
pub mod topics;
pub mod upcast;

pub use envelope::{CloudEvent, EventMetadata};
pub use topics::Service;
pub use upcast::{decode_versioned, upcast, Upcaster, UPCASTERS};

/// The last of a macro's version list (`[1]` or `[1, n]`): an event's newest version.
#[doc(hidden)]
pub const fn newest(versions: &[u32]) -> u32 {
    versions[versions.len() - 1]
}

/// The base of the absolute `dataschema` URIs unless the process sets another
/// ([`set_schema_base`]; `shop --schema-base-url`, `SHOP_SCHEMA_BASE_URL`). The gateway
/// serves the files at `<base>/schemas/events/...`; a deployment that wants its URIs to
/// resolve sets its public address.
pub const DEFAULT_SCHEMA_BASE: &str = "https://shop.example";

static SCHEMA_BASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the base of this process's `dataschema` URIs (without a trailing `/`; empty:
/// the default), once, before any event is written. Later calls change nothing.
pub fn set_schema_base(base: &str) {
    let base = base.trim().trim_end_matches('/');
    let base = if base.is_empty() {
        DEFAULT_SCHEMA_BASE
    } else {
        base
    };
    SCHEMA_BASE.get_or_init(|| base.to_string());
}

/// The base of the `dataschema` URIs: the one set by [`set_schema_base`], or
/// [`DEFAULT_SCHEMA_BASE`].
pub fn schema_base() -> &'static str {
    SCHEMA_BASE.get_or_init(|| DEFAULT_SCHEMA_BASE.to_string())
}

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

    /// The CloudEvents `dataschema` attribute of its newest version (an absolute URI).
    pub fn dataschema(&self) -> String {
        dataschema(self.service, self.name, self.version)
    }

    /// The schema file of its newest version, relative to the repository root.
    pub fn schema_path(&self) -> String {
        schema_path(self.service, self.name, self.version)
    }
}

/// The schema file of an event version, relative to the repository root (and to the
/// gateway's root, which serves it), e.g. `schemas/events/inventory/ProductAdded.v1.json`.
pub fn schema_path(service: Service, name: &str, version: u32) -> String {
    format!(
        "schemas/events/{}/{}.v{}.json",
        service.name(),
        name,
        version
    )
}

/// The CloudEvents `dataschema` of an event version: an absolute URI (CloudEvents 1.0
/// requires one), [`schema_base`] followed by [`schema_path`], e.g.
/// `https://shop.example/schemas/events/inventory/ProductAdded.v2.json`.
pub fn dataschema(service: Service, name: &str, version: u32) -> String {
    format!("{}/{}", schema_base(), schema_path(service, name, version))
}

/// The version a `dataschema` names: the `N` of its `….vN.json` ending, whatever its base
/// (absolute, or the relative paths events carried before the URIs became absolute).
pub fn dataschema_version(dataschema: &str) -> Option<u32> {
    let stem = dataschema.strip_suffix(".json")?;
    let (_, version) = stem.rsplit_once(".v")?;
    version.parse().ok().filter(|v| *v >= 1)
}

/// Every event type that has a Rust type in this crate, service by service.
pub fn event_types() -> impl Iterator<Item = &'static EventType> {
    [
        customers::EVENT_TYPES,
        inventory::EVENT_TYPES,
        orders::EVENT_TYPES,
        payments::EVENT_TYPES,
        shipping::EVENT_TYPES,
        notifications::EVENT_TYPES,
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
