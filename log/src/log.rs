//! The event-log abstraction: append records to topics, consume topics as a group with
//! positions. Kafka implements it in production ([`crate::kafka`]), the embedded log in
//! `shop dev` ([`crate::embedded`]). Domain code, sagas and projectors only see this trait.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shop_schemas::CloudEvent;

/// A record to append.
#[derive(Debug, Clone)]
pub struct OutgoingRecord {
    pub topic: String,
    /// Partitioning key: the aggregate id, so an aggregate's events keep their order.
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl OutgoingRecord {
    /// A CloudEvent as a binary-mode record keyed by its subject.
    pub fn from_cloud_event(topic: &str, event: &CloudEvent) -> Self {
        Self::with_data_json(
            topic,
            event,
            serde_json::to_vec(&event.data).unwrap_or_default(),
        )
    }

    /// A CloudEvent as a binary-mode record whose value is `data_json`, the event's data
    /// already written as JSON (the event's own `data` is not read).
    pub fn with_data_json(topic: &str, event: &CloudEvent, data_json: Vec<u8>) -> Self {
        OutgoingRecord {
            topic: topic.to_string(),
            key: event.subject.clone(),
            headers: event
                .kafka_headers()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            payload: data_json,
        }
    }
}

/// A record read from a topic. Headers and payload are shared, not copied, by clones:
/// the embedded log hands each consumer group a clone of the records it keeps in memory.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: Headers,
    pub payload: Option<Arc<[u8]>>,
    /// Milliseconds since the epoch, when the log knows it.
    pub timestamp_ms: Option<i64>,
}

impl LogRecord {
    /// The record as a CloudEvent (binary mode).
    ///
    /// # Errors
    /// The record is not a Shop CloudEvent.
    pub fn cloud_event(&self) -> Result<CloudEvent, shop_schemas::envelope::EnvelopeError> {
        CloudEvent::from_kafka(
            self.headers.iter(),
            self.payload.as_deref().unwrap_or_default(),
        )
    }
}

/// A read record's headers: names and values back to back in one shared buffer, each
/// header as its name's length and its value's length (4 bytes each, little-endian),
/// then the name and the value.
///
/// A record from Kafka carries a dozen headers, and every consumer group reads every
/// record of its topics. Held as a `String` and a `Vec` each, they were two allocations
/// a header and two frees: `perf` of a projection rebuild put the copies of header values
/// alone at a twentieth of the projector's CPU. Here a record's headers are two
/// allocations (the buffer while written, then the shared one).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Arc<[u8]>);

impl Headers {
    /// Headers from their names and values, in order (a name may repeat).
    pub fn new<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut bytes = Vec::with_capacity(512);
        for (name, value) in headers {
            bytes.extend_from_slice(&Self::length(name.len()));
            bytes.extend_from_slice(&Self::length(value.len()));
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(value);
        }
        Headers(bytes.into())
    }

    fn length(n: usize) -> [u8; 4] {
        u32::try_from(n)
            .expect("a header's name or value under 4 GiB")
            .to_le_bytes()
    }

    /// Each header's name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let (lengths, after) = rest.split_at_checked(8)?;
            let length = |at: usize| {
                let bytes: [u8; 4] = lengths[at..at + 4].try_into().expect("4 bytes");
                u32::from_le_bytes(bytes) as usize
            };
            let (name, after) = after.split_at(length(0));
            let (value, after) = after.split_at(length(4));
            rest = after;
            // Written from a `&str` by `new`.
            Some((
                std::str::from_utf8(name).expect("a header name is UTF-8"),
                value,
            ))
        })
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(name, value)| (name, String::from_utf8_lossy(value))),
            )
            .finish()
    }
}

/// One partition's position: the offset of the next record to read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error("event log error: {0}")]
    Other(String),
}

/// Where the first read of a new consumer group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Beginning,
    End,
}

/// An append-only, partitioned log of records.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends records; returns once every one is acknowledged by the log (for Kafka:
    /// the delivery reports of an idempotent acks=all producer).
    ///
    /// # Errors
    /// Any record was not acknowledged; some others may have been (the caller retries the
    /// whole batch, and consumers deduplicate by event id).
    async fn publish(&self, records: Vec<OutgoingRecord>) -> Result<(), LogError>;

    /// Joins consumer group `group` on `topics`.
    ///
    /// # Errors
    /// The log is unreachable or refuses the subscription.
    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
        start: StartFrom,
    ) -> Result<Box<dyn Subscription>, LogError>;

    /// The end offset (next offset to be written) of every partition of `topic`.
    ///
    /// # Errors
    /// The log is unreachable or the topic is unknown.
    async fn end_offsets(&self, topic: &str) -> Result<Vec<(i32, i64)>, LogError>;

    /// Up to `max` records of one partition from `offset` on, read outside any consumer
    /// group (operator tools: dead letters, the oldest unprocessed event). Fewer when the
    /// partition ends first.
    ///
    /// # Errors
    /// The log is unreachable or the topic is unknown.
    async fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max: usize,
    ) -> Result<Vec<LogRecord>, LogError>;

    /// Creates missing topics with the deployment's partitions and unlimited retention.
    ///
    /// # Errors
    /// The log is unreachable or refuses.
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), LogError>;

    /// Every topic with its partition count.
    ///
    /// # Errors
    /// The log is unreachable.
    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError>;

    /// Whether the log answers (for readiness checks).
    ///
    /// # Errors
    /// The log is unreachable.
    async fn ping(&self) -> Result<(), LogError> {
        Ok(())
    }

    /// The offset of the first record still kept in one partition (0 unless records were
    /// deleted). A consumer whose checkpoint is older than this cannot re-read the
    /// records between, and must start here.
    ///
    /// # Errors
    /// The log is unreachable or the topic is unknown.
    async fn start_offset(&self, _topic: &str, _partition: i32) -> Result<i64, LogError> {
        Ok(0)
    }
}

/// A group member's view of its partitions.
#[async_trait]
pub trait Subscription: Send {
    /// Waits up to `wait` for records, then returns what is there (up to `max`).
    ///
    /// # Errors
    /// The log failed.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError>;

    /// Records the group's positions (asynchronously; the consumer's own database is the
    /// source of truth, this only saves re-reading).
    ///
    /// # Errors
    /// The log refused the commit.
    fn commit(&self, positions: &[Position]) -> Result<(), LogError>;

    /// Moves the reading position of assigned partitions back (or forward): the next
    /// records of each partition start at its `next_offset`, and records read before the
    /// seek but not yet handed out are dropped. A partition this member no longer holds
    /// is left alone (its new holder starts from its own checkpoint).
    ///
    /// # Errors
    /// The log refused the seek.
    fn seek(&mut self, positions: &[Position]) -> Result<(), LogError>;

    /// The partitions this member holds now (`None` when the log cannot say).
    fn assignment(&self) -> Option<Vec<(String, i32)>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Headers;

    #[test]
    fn headers_keep_names_values_and_order() {
        let pairs: [(&str, &[u8]); 4] = [
            ("ce_id", b"1"),
            ("empty", b""),
            ("ce_id", b"2"),
            ("bytes", &[0, 255, 7]),
        ];
        let headers = Headers::new(pairs);
        assert_eq!(headers.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(headers.clone(), headers);
        let none = Headers::new([]);
        assert!(none.iter().next().is_none());
        assert_eq!(none, Headers::default());
    }
}
