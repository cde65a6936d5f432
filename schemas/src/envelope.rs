//! The CloudEvents 1.0 envelope (SPEC §4) and its Kafka binary-mode mapping.
//!
//! On Kafka the record value is the event data (JSON) and every attribute travels as a
//! header named `ce_<attribute>`, plus `content-type`. The same envelope in structured
//! mode (one JSON object with `data`) is what the read API and the operator tools print.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::Service;

pub const SPEC_VERSION: &str = "1.0";
pub const CONTENT_TYPE: &str = "application/json";

/// Header names of the Kafka protocol binding, binary mode.
pub mod headers {
    pub const SPECVERSION: &str = "ce_specversion";
    pub const ID: &str = "ce_id";
    pub const SOURCE: &str = "ce_source";
    pub const TYPE: &str = "ce_type";
    pub const SUBJECT: &str = "ce_subject";
    pub const TIME: &str = "ce_time";
    pub const DATASCHEMA: &str = "ce_dataschema";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const SEQUENCE: &str = "ce_sequence";
    pub const CORRELATIONID: &str = "ce_correlationid";
    pub const CAUSATIONID: &str = "ce_causationid";
    pub const TRACEPARENT: &str = "ce_traceparent";

    /// Every header a Shop record carries.
    pub const ALL: [&str; 12] = [
        SPECVERSION,
        ID,
        SOURCE,
        TYPE,
        SUBJECT,
        TIME,
        DATASCHEMA,
        CONTENT_TYPE,
        SEQUENCE,
        CORRELATIONID,
        CAUSATIONID,
        TRACEPARENT,
    ];
}

/// One event as a CloudEvent, with Shop's extensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: Uuid,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub subject: String,
    pub time: DateTime<Utc>,
    pub dataschema: String,
    pub datacontenttype: String,
    /// The aggregate's event number, from 1 (serialized as a string, as CloudEvents
    /// extension attributes are on the wire).
    #[serde(with = "sequence_as_string")]
    pub sequence: u64,
    pub correlationid: String,
    pub causationid: String,
    pub traceparent: String,
    pub data: Value,
}

mod sequence_as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Why a record is not a Shop CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    MissingHeader(&'static str),
    BadHeader(&'static str, String),
    BadData(String),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::MissingHeader(h) => write!(f, "missing header {h}"),
            EnvelopeError::BadHeader(h, why) => write!(f, "bad header {h}: {why}"),
            EnvelopeError::BadData(why) => write!(f, "record value is not JSON event data: {why}"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl CloudEvent {
    /// The service named by `source` (`/shop/<service>`), if it is one of ours.
    pub fn service(&self) -> Option<Service> {
        self.source.strip_prefix("/shop/")?.parse().ok()
    }

    /// The event name: the last segment of `type` (`shop.orders.OrderPlaced` → `OrderPlaced`).
    pub fn event_name(&self) -> &str {
        self.ty.rsplit('.').next().unwrap_or(&self.ty)
    }

    /// The version of the event's data: the one its `dataschema` names (`….v2.json`), 1
    /// when it names none.
    pub fn event_version(&self) -> u32 {
        crate::dataschema_version(&self.dataschema).unwrap_or(1)
    }

    /// The event's data as the newest version of its type this build knows (upcast from
    /// the version it was written at, borrowed when it is that version already).
    pub fn upcast_data(&self) -> (u32, std::borrow::Cow<'_, Value>) {
        crate::upcast(
            self.event_name(),
            self.event_version(),
            std::borrow::Cow::Borrowed(&self.data),
        )
    }

    /// The headers of the Kafka binary-mode record, in a fixed order.
    pub fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (headers::SPECVERSION, self.specversion.clone()),
            (headers::ID, self.id.to_string()),
            (headers::SOURCE, self.source.clone()),
            (headers::TYPE, self.ty.clone()),
            (headers::SUBJECT, self.subject.clone()),
            (
                headers::TIME,
                self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
            (headers::DATASCHEMA, self.dataschema.clone()),
            (headers::CONTENT_TYPE, self.datacontenttype.clone()),
            (headers::SEQUENCE, self.sequence.to_string()),
            (headers::CORRELATIONID, self.correlationid.clone()),
            (headers::CAUSATIONID, self.causationid.clone()),
            (headers::TRACEPARENT, self.traceparent.clone()),
        ]
    }

    /// Rebuilds the event from a binary-mode record's headers and value.
    ///
    /// # Errors
    /// A missing or malformed required header, or a value that is not JSON.
    pub fn from_kafka<'a>(
        record_headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        value: &[u8],
    ) -> Result<CloudEvent, EnvelopeError> {
        // The known headers' texts, borrowed, in the order of `headers::ALL` (the last
        // of a repeated header wins); only the fields kept as text are copied.
        let mut found: [Option<&'a str>; headers::ALL.len()] = [None; headers::ALL.len()];
        for (name, bytes) in record_headers {
            if let Some(index) = headers::ALL.iter().position(|h| *h == name) {
                let known = headers::ALL[index];
                found[index] = Some(
                    std::str::from_utf8(bytes)
                        .map_err(|e| EnvelopeError::BadHeader(known, e.to_string()))?,
                );
            }
        }
        let get = |h: &'static str| {
            let index = headers::ALL
                .iter()
                .position(|known| *known == h)
                .expect("a known header");
            found[index].ok_or(EnvelopeError::MissingHeader(h))
        };
        let specversion = get(headers::SPECVERSION)?;
        if specversion != SPEC_VERSION {
            return Err(EnvelopeError::BadHeader(
                headers::SPECVERSION,
                specversion.to_string(),
            ));
        }
        let id = Uuid::parse_str(get(headers::ID)?)
            .map_err(|e| EnvelopeError::BadHeader(headers::ID, e.to_string()))?;
        let source = get(headers::SOURCE)?.to_string();
        let ty = get(headers::TYPE)?.to_string();
        let subject = get(headers::SUBJECT)?.to_string();
        let time = DateTime::parse_from_rfc3339(get(headers::TIME)?)
            .map_err(|e| EnvelopeError::BadHeader(headers::TIME, e.to_string()))?
            .with_timezone(&Utc);
        let dataschema = get(headers::DATASCHEMA)?.to_string();
        let datacontenttype = get(headers::CONTENT_TYPE)
            .unwrap_or(CONTENT_TYPE)
            .to_string();
        let sequence = get(headers::SEQUENCE)?;
        let sequence = sequence
            .parse()
            .map_err(|_| EnvelopeError::BadHeader(headers::SEQUENCE, sequence.to_string()))?;
        let optional = |h: &'static str| get(h).unwrap_or_default().to_string();
        let correlationid = optional(headers::CORRELATIONID);
        let causationid = optional(headers::CAUSATIONID);
        let traceparent = optional(headers::TRACEPARENT);
        let specversion = specversion.to_string();
        let data =
            serde_json::from_slice(value).map_err(|e| EnvelopeError::BadData(e.to_string()))?;
        Ok(CloudEvent {
            specversion,
            id,
            source,
            ty,
            subject,
            time,
            dataschema,
            datacontenttype,
            sequence,
            correlationid,
            causationid,
            traceparent,
            data,
        })
    }
}

/// What travels with an event besides its data: the chain it belongs to.
///
/// Stored in the event store's metadata column (cqrs-es's metadata map) and carried as
/// the `ce_correlationid`, `ce_causationid` and `ce_traceparent` extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The order (or first request) that started the chain.
    pub correlation_id: String,
    /// The event or command that caused this event.
    pub causation_id: String,
    /// W3C trace context of the span that appended the event.
    pub traceparent: String,
}

impl EventMetadata {
    pub const CORRELATION_ID: &'static str = "correlation_id";
    pub const CAUSATION_ID: &'static str = "causation_id";
    pub const TRACEPARENT: &'static str = "traceparent";

    /// The map form cqrs-es passes to the event store.
    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            (
                Self::CORRELATION_ID.to_string(),
                self.correlation_id.clone(),
            ),
            (Self::CAUSATION_ID.to_string(), self.causation_id.clone()),
            (Self::TRACEPARENT.to_string(), self.traceparent.clone()),
        ])
    }

    /// Reads the map form back; missing keys are empty.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        EventMetadata {
            correlation_id: get(Self::CORRELATION_ID),
            causation_id: get(Self::CAUSATION_ID),
            traceparent: get(Self::TRACEPARENT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CloudEvent {
        CloudEvent {
            specversion: SPEC_VERSION.into(),
            id: Uuid::now_v7(),
            source: "/shop/inventory".into(),
            ty: "shop.inventory.ProductAdded".into(),
            subject: Uuid::now_v7().to_string(),
            time: Utc::now(),
            dataschema: "https://shop.example/schemas/events/inventory/ProductAdded.v1.json".into(),
            datacontenttype: CONTENT_TYPE.into(),
            sequence: 3,
            correlationid: "c".into(),
            causationid: "d".into(),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            data: serde_json::json!({"sku": "A-1"}),
        }
    }

    #[test]
    fn kafka_headers_round_trip() {
        let event = sample();
        let hs = event.kafka_headers();
        assert_eq!(hs.len(), headers::ALL.len());
        let value = serde_json::to_vec(&event.data).unwrap();
        let back =
            CloudEvent::from_kafka(hs.iter().map(|(k, v)| (*k, v.as_bytes())), &value).unwrap();
        // RFC 3339 with microseconds: compare at that precision.
        assert_eq!(back.time.timestamp_micros(), event.time.timestamp_micros());
        assert_eq!(
            CloudEvent {
                time: event.time,
                ..back
            },
            event
        );
        assert_eq!(event.service(), Some(Service::Inventory));
        assert_eq!(event.event_name(), "ProductAdded");
        assert_eq!(event.event_version(), 1);
    }

    #[test]
    fn the_version_is_the_dataschemas_absolute_or_not() {
        let mut event = sample();
        assert_eq!(event.upcast_data().0, 2);
        assert_eq!(event.upcast_data().1["category"], "uncategorised");
        event.dataschema = "schemas/events/inventory/ProductAdded.v2.json".into();
        assert_eq!(event.event_version(), 2);
        assert!(matches!(
            event.upcast_data().1,
            std::borrow::Cow::Borrowed(_)
        ));
        event.dataschema = "urn:other".into();
        assert_eq!(event.event_version(), 1);
    }

    #[test]
    fn structured_json_has_string_sequence() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["sequence"], "3");
        assert_eq!(json["type"], "shop.inventory.ProductAdded");
        let back: CloudEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back.sequence, 3);
    }

    #[test]
    fn missing_header_is_an_error() {
        let err = CloudEvent::from_kafka(Vec::<(&str, &[u8])>::new(), b"{}").unwrap_err();
        assert_eq!(err, EnvelopeError::MissingHeader(headers::SPECVERSION));
    }
}
