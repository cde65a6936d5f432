//! Upcasters: how an event written at an older version is read as its newest version.
//!
//! Stored and published events are never rewritten: every reader (an aggregate loading
//! its stream, a consumer or projector reading a CloudEvent, `shop events`, `shop import`)
//! passes the data with the version it was written at through [`upcast`] before decoding
//! it, so domain code only ever sees the newest version of each event.
//!
//! An upcaster is a plain function on the JSON data of one version of one event that
//! returns the data of the next version. They chain: v1 → v2 → v3. Adding one is
//! described in `docs/src/evolution.md`; `schemas/tests/compat.rs` refuses a schema
//! version that breaks readers of its predecessor unless its upcaster exists and has a
//! fixture test under `schemas/tests/upcasters/`.

use std::borrow::Cow;

use serde_json::Value;

/// Turns the data of `name` at version `from` into its data at version `from + 1`.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    /// The event name (unique across services, as in `shop.<service>.<name>`).
    pub name: &'static str,
    /// The version it reads; it writes `from + 1`.
    pub from: u32,
    pub upcast: fn(Value) -> Value,
}

/// Every upcaster, registered per (event name, from version).
pub const UPCASTERS: &[Upcaster] = &[
    Upcaster {
        name: "ProductAdded",
        from: 1,
        upcast: crate::inventory::product_added_v1_to_v2,
    },
    Upcaster {
        name: "OrderPlaced",
        from: 1,
        upcast: crate::orders::order_placed_v1_to_v2,
    },
];

/// The upcaster of `name` from version `from`, if there is one.
pub fn upcaster(name: &str, from: u32) -> Option<&'static Upcaster> {
    UPCASTERS.iter().find(|u| u.name == name && u.from == from)
}

/// The data of an event written at `version`, brought to the newest version this build
/// knows: the upcasters of `name` from `version` on, in turn. Returns the version reached
/// and the data — borrowed, untouched, when no upcaster applies (the newest version, or a
/// version newer than this build knows: a newer producer's event during a rolling update,
/// read as it is; its extra fields are ignored).
pub fn upcast<'a>(name: &str, version: u32, data: Cow<'a, Value>) -> (u32, Cow<'a, Value>) {
    let mut version = version;
    let mut data = data;
    while let Some(upcaster) = upcaster(name, version) {
        data = Cow::Owned((upcaster.upcast)(data.into_owned()));
        version += 1;
    }
    (version, data)
}

/// Decodes the data of event `name` written at `version` into a service's event enum,
/// upcast to the newest version first: what every read path calls.
///
/// # Errors
/// The name is not a variant of `E`, or the upcast data does not fit its shape.
pub fn decode_versioned<E: serde::de::DeserializeOwned>(
    name: &str,
    version: u32,
    data: &Value,
) -> Result<E, serde_json::Error> {
    let (_, data) = upcast(name, version, Cow::Borrowed(data));
    crate::decode_event(name, &data)
}

/// Sets `field` to `value` in an object's data unless it is there already (an upcaster's
/// usual step: a new field's default for events written before it existed).
pub(crate) fn with_default(mut data: Value, field: &str, value: Value) -> Value {
    if let Value::Object(map) = &mut data {
        map.entry(field.to_string()).or_insert(value);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn newest_data_is_borrowed_and_older_data_upcast() {
        let data = json!({"order_id": "x", "currency": "EUR"});
        let (version, same) = upcast("OrderPlaced", 2, Cow::Borrowed(&data));
        assert_eq!(version, 2);
        assert!(matches!(same, Cow::Borrowed(_)));
        let v1 = json!({"total": 1});
        let (version, up) = upcast("OrderPlaced", 1, Cow::Borrowed(&v1));
        assert_eq!(version, 2);
        assert_eq!(up.into_owned(), json!({"total": 1, "currency": "JPY"}));
        // A version newer than this build knows is read as it is.
        let (version, _) = upcast("OrderPlaced", 7, Cow::Borrowed(&data));
        assert_eq!(version, 7);
        // Events without upcasters keep their version.
        let (version, _) = upcast("OrderConfirmed", 1, Cow::Borrowed(&data));
        assert_eq!(version, 1);
    }

    #[test]
    fn every_upcaster_reads_an_older_version_than_its_events_newest() {
        for upcaster in UPCASTERS {
            let event_type = crate::event_types()
                .find(|t| t.name == upcaster.name)
                .unwrap_or_else(|| panic!("{}: no such event", upcaster.name));
            assert!(
                upcaster.from >= 1 && upcaster.from < event_type.version,
                "{} from v{}: its newest version is v{}",
                upcaster.name,
                upcaster.from,
                event_type.version
            );
        }
    }
}
