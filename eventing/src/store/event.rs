//! The event as stored ([`StoredEvent`]): its row, its CloudEvent, its cqrs-es form.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use serde_json::Value;
use shop_schemas::{CloudEvent, EventMetadata, Service};
use uuid::Uuid;

use shop_sql as sql;

/// The columns of an event row, in [`StoredEvent::from_row`]'s terms.
pub(crate) const EVENT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, data, metadata, recorded_at";

/// An event as appended: what the hook sees and what the relay publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    pub data: Value,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// The event as a CloudEvent of the given service.
    /// The event as this build reads it: its data upcast to its type's newest version
    /// ([`shop_schemas::upcast`]), which its `event_version` (and so its CloudEvent's
    /// `dataschema`) then names. The stored row is not changed.
    pub fn upcast(&self) -> StoredEvent {
        let (version, data) = shop_schemas::upcast(
            &self.event_type,
            self.version(),
            std::borrow::Cow::Borrowed(&self.data),
        );
        StoredEvent {
            event_version: version.to_string(),
            data: data.into_owned(),
            ..self.clone()
        }
    }

    pub fn to_cloud_event(&self, service: Service) -> CloudEvent {
        // Published as stored: the version it was written at names its schema.
        let version = self.version();
        CloudEvent {
            specversion: shop_schemas::envelope::SPEC_VERSION.to_string(),
            id: self.event_id,
            source: service.source(),
            ty: format!("shop.{}.{}", service.name(), self.event_type),
            subject: self.aggregate_id.clone(),
            time: self.recorded_at,
            dataschema: shop_schemas::dataschema(service, &self.event_type, version),
            datacontenttype: shop_schemas::envelope::CONTENT_TYPE.to_string(),
            sequence: self.sequence as u64,
            correlationid: self.metadata.correlation_id.clone(),
            causationid: self.metadata.causation_id.clone(),
            traceparent: self.metadata.traceparent.clone(),
            data: self.data.clone(),
        }
    }

    pub(crate) fn from_row(row: &sql::Row) -> Result<Self, sqlx::Error> {
        Self::from_row_with_data(row, row.get("data")?)
    }

    /// The event of a row whose `data` is taken as given (the relay reads it as text).
    pub(crate) fn from_row_with_data(row: &sql::Row, data: Value) -> Result<Self, sqlx::Error> {
        let metadata: Value = row.get("metadata")?;
        let metadata: HashMap<String, String> =
            serde_json::from_value(metadata).unwrap_or_default();
        Ok(StoredEvent {
            position: row.get("position")?,
            aggregate_type: row.get("aggregate_type")?,
            aggregate_id: row.get("aggregate_id")?,
            sequence: row.get("sequence")?,
            event_id: row.get("event_id")?,
            event_type: row.get("event_type")?,
            event_version: row.get("event_version")?,
            data,
            metadata: EventMetadata::from_map(&metadata),
            recorded_at: row.get("recorded_at")?,
        })
    }

    /// The event cqrs-es hands over for appending, as it will be stored (position 0
    /// until the insert assigns one), with a new id and the append's time.
    pub(crate) fn from_serialized(
        event: &SerializedEvent,
        now: DateTime<Utc>,
    ) -> Result<Self, cqrs_es::persist::PersistenceError> {
        let (event_type, data) =
            shop_schemas::split_event(event.payload.clone()).ok_or_else(|| {
                cqrs_es::persist::PersistenceError::UnknownError(
                    format!(
                        "event {} is not an externally tagged enum value",
                        event.event_type
                    )
                    .into(),
                )
            })?;
        let metadata: HashMap<String, String> =
            serde_json::from_value(event.metadata.clone()).unwrap_or_default();
        Ok(StoredEvent {
            position: 0,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence as i64,
            event_id: Uuid::now_v7(),
            event_type,
            event_version: event.event_version.clone(),
            data,
            metadata: EventMetadata::from_map(&metadata),
            recorded_at: now,
        })
    }

    /// The version the event was written at (1 for a stored text that is no number).
    pub fn version(&self) -> u32 {
        self.event_version.parse().unwrap_or(1)
    }

    /// The cqrs-es form an aggregate loads: the data upcast to the newest version of its
    /// type ([`shop_schemas::upcast`]; the row stays as written) and wrapped again in its
    /// enum tag.
    pub(crate) fn to_serialized(&self) -> SerializedEvent {
        let (version, data) = shop_schemas::upcast(
            &self.event_type,
            self.version(),
            std::borrow::Cow::Borrowed(&self.data),
        );
        let mut tagged = serde_json::Map::with_capacity(1);
        tagged.insert(self.event_type.clone(), data.into_owned());
        let metadata: HashMap<String, String> = self.metadata.to_map();
        SerializedEvent {
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence as usize,
            aggregate_type: self.aggregate_type.clone(),
            event_type: self.event_type.clone(),
            event_version: version.to_string(),
            payload: Value::Object(tagged),
            metadata: serde_json::to_value(metadata).unwrap_or(Value::Null),
        }
    }
}
