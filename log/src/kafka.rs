//! The event log on Apache Kafka (rdkafka): an idempotent acks=all producer, consumer
//! groups with manually committed offsets, and topic administration.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::log::{
    EventLog, LogError, LogRecord, OutgoingRecord, Position, StartFrom, Subscription, TopicInfo,
};

/// How to reach Kafka and how topics are laid out.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// Partitions of topics created by `ensure_topics`.
    pub partitions: i32,
    /// Replication factor of topics created by `ensure_topics`.
    pub replication_factor: i32,
    /// Consumer session timeout: how long a killed member holds its partitions.
    pub session_timeout_ms: u32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            partitions: 6,
            replication_factor: 1,
            session_timeout_ms: 6_000,
        }
    }
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`KafkaLog::end_offsets`] may take in all (metadata and every partition's
/// high watermark).
const END_OFFSETS_TIMEOUT: Duration = Duration::from_secs(5);

/// Routes librdkafka's own log lines into `tracing`.
#[derive(Clone, Default)]
pub struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => match throttled(fac) {
                Some(held_back) => {
                    warn!(target: "rdkafka", facility = fac, held_back, "{log_message}")
                }
                None => debug!(target: "rdkafka", facility = fac, "{log_message}"),
            },
            _ => debug!(target: "rdkafka", facility = fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let kind = format!("{:?}", error.rdkafka_error_code());
        match throttled(&kind) {
            Some(held_back) => warn!(target: "rdkafka", %error, held_back, "{reason}"),
            None => debug!(target: "rdkafka", %error, "{reason}"),
        }
    }
}

/// How often one kind of librdkafka warning is logged: a broker that is down makes every
/// client repeat "connection refused" many times a second (1,800 lines in 20 s for one
/// `shop serve all`), which buries what matters.
const WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a warning of `kind` is logged now (`Some(n)`: n like it were held back since
/// the last one) or only at debug level.
fn throttled(kind: &str) -> Option<u64> {
    static LAST: std::sync::Mutex<
        Option<std::collections::HashMap<String, (std::time::Instant, u64)>>,
    > = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let seen = last.get_or_insert_with(std::collections::HashMap::new);
    let now = std::time::Instant::now();
    match seen.get_mut(kind) {
        Some((at, held)) if now.duration_since(*at) < WARNING_INTERVAL => {
            *held += 1;
            None
        }
        Some((at, held)) => {
            let was = *held;
            (*at, *held) = (now, 0);
            Some(was)
        }
        None => {
            seen.insert(kind.to_string(), (now, 0));
            Some(0)
        }
    }
}

impl ConsumerContext for TracingContext {
    /// Which partitions this member gained or gave up (cooperative rebalances move only
    /// some), so an operator can see how a group's members share a topic.
    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        match rebalance {
            rdkafka::consumer::Rebalance::Assign(list) => {
                info!(partitions = list.count(), "partitions assigned")
            }
            rdkafka::consumer::Rebalance::Revoke(list) => {
                info!(partitions = list.count(), "partitions revoked")
            }
            rdkafka::consumer::Rebalance::Error(e) => warn!(error = %e, "rebalance failed"),
        }
    }
}

/// The Kafka event log.
pub struct KafkaLog {
    config: KafkaConfig,
    producer: FutureProducer<TracingContext>,
    admin: AdminClient<DefaultClientContext>,
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

impl KafkaLog {
    /// Creates the clients (they connect lazily).
    ///
    /// # Errors
    /// The configuration is invalid.
    pub fn new(config: KafkaConfig) -> Result<Self, LogError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            // Requests go out when written (`TCP_NODELAY`), not held back by Nagle's
            // algorithm until the last one is acknowledged — up to the broker's delayed
            // acknowledgement on a real network; the batching is `linger.ms`'s. On the
            // bench's loopback broker it measured no different.
            .set("socket.nagle.disable", "true")
            .set("message.timeout.ms", "30000")
            .create_with_context(TracingContext)
            .map_err(unavailable)?;
        let admin = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .create()
            .map_err(unavailable)?;
        Ok(KafkaLog {
            config,
            producer,
            admin,
        })
    }

    /// Deletes topics (benchmark and test clean-up); unknown topics are ignored.
    ///
    /// # Errors
    /// The broker is unreachable.
    pub async fn delete_topics(&self, topics: &[String]) -> Result<(), LogError> {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.admin
            .delete_topics(
                &names,
                &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Checks that a broker answers (for `/ready`).
    ///
    /// # Errors
    /// No broker answered in time.
    pub async fn ping(&self) -> Result<(), LogError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(3))
                .map(|_| ())
        })
        .await
        .map_err(unavailable)?
        .map_err(|e| {
            LogError::Unavailable(format!(
                "{e}. Start Kafka with `scripts/infra.sh up` or set SHOP_KAFKA_BROKERS"
            ))
        })
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn ping(&self) -> Result<(), LogError> {
        KafkaLog::ping(self).await
    }

    async fn start_offset(&self, topic: &str, partition: i32) -> Result<i64, LogError> {
        let producer = self.producer.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                .map(|(low, _)| low)
                .map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    async fn publish(&self, records: Vec<OutgoingRecord>) -> Result<(), LogError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let future_record = FutureRecord::to(&record.topic)
                .key(&record.key)
                .payload(&record.payload)
                .headers(headers);
            // `send_result` queues without waiting; the delivery future resolves on the
            // broker's acknowledgement.
            match self.producer.send_result(future_record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => return Err(unavailable(e)),
            }
        }
        let mut first_error = None;
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    first_error.get_or_insert(unavailable(e));
                }
                Err(_) => {
                    first_error
                        .get_or_insert(LogError::Other("producer dropped the delivery".into()));
                }
            }
        }
        match first_error {
            None => {
                metrics::counter!("events_published_total").increment(records.len() as u64);
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
        start: StartFrom,
    ) -> Result<Box<dyn Subscription>, LogError> {
        let consumer: StreamConsumer<TracingContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.config.brokers)
            .set("group.id", group)
            // As the producer: fetches and offset commits are not held back by Nagle.
            .set("socket.nagle.disable", "true")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set(
                "session.timeout.ms",
                self.config.session_timeout_ms.to_string(),
            )
            // A member learns of a rebalance (another member joining or leaving) at its
            // next heartbeat, and a cooperative rebalance takes two rounds: at a quarter
            // of the session timeout (2.5 s) a projector's second member began work 5 s
            // after the first. Heartbeats are small; half a second at most.
            .set(
                "heartbeat.interval.ms",
                (self.config.session_timeout_ms / 4)
                    .clamp(100, 500)
                    .to_string(),
            )
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "auto.offset.reset",
                match start {
                    StartFrom::Beginning => "earliest",
                    StartFrom::End => "latest",
                },
            )
            .create_with_context(TracingContext)
            .map_err(unavailable)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(unavailable)?;
        info!(group, topics = ?topics, "subscribed");
        Ok(Box::new(KafkaSubscription { consumer }))
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<(i32, i64)>, LogError> {
        let producer = self.producer.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            // One deadline for the whole answer, not one per request: after a broker
            // restart each request could wait its full timeout, and a consumer measuring
            // its lag waited for all of them in turn.
            let deadline = std::time::Instant::now() + END_OFFSETS_TIMEOUT;
            let left = || deadline.saturating_duration_since(std::time::Instant::now());
            let client = producer.client();
            let metadata = client
                .fetch_metadata(Some(&topic), left())
                .map_err(unavailable)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if partitions.is_empty() {
                return Err(LogError::Other(format!("unknown topic {topic}")));
            }
            partitions
                .into_iter()
                .map(|p| {
                    client
                        .fetch_watermarks(&topic, p, left())
                        .map(|(_, high)| (p, high))
                        .map_err(unavailable)
                })
                .collect()
        })
        .await
        .map_err(unavailable)?
    }

    async fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        let brokers = self.config.brokers.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "shop-reader")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .create()
                .map_err(unavailable)?;
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                .map_err(unavailable)?;
            let from = offset.max(low);
            let mut records = Vec::new();
            if from >= high || max == 0 {
                return Ok(records);
            }
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&topic, partition, Offset::Offset(from))
                .map_err(unavailable)?;
            consumer.assign(&assignment).map_err(unavailable)?;
            let deadline = std::time::Instant::now() + METADATA_TIMEOUT;
            while records.len() < max && std::time::Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(200)) {
                    None => {}
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    Some(Err(e)) => return Err(unavailable(e)),
                    Some(Ok(message)) => {
                        let record = to_record(&message);
                        let last = record.offset + 1 >= high;
                        records.push(record);
                        if last {
                            break;
                        }
                    }
                }
            }
            Ok(records)
        })
        .await
        .map_err(unavailable)?
    }

    async fn ensure_topics(&self, topics: &[String]) -> Result<(), LogError> {
        let new_topics: Vec<NewTopic> = topics
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication_factor),
                )
                .set("retention.ms", "-1")
                .set("retention.bytes", "-1")
            })
            .collect();
        let results = self
            .admin
            .create_topics(
                &new_topics,
                &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
            )
            .await
            .map_err(unavailable)?;
        for result in results {
            match result {
                Ok(name) => info!(
                    topic = name,
                    partitions = self.config.partitions,
                    "created topic"
                ),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(LogError::Other(format!(
                        "cannot create topic {name}: {code}"
                    )))
                }
            }
        }
        // Wait until the new topics are visible to clients, so a first publish succeeds.
        for topic in topics {
            let mut tries = 0;
            while self.end_offsets(topic).await.is_err() {
                tries += 1;
                if tries > 50 {
                    return Err(LogError::Other(format!("topic {topic} did not appear")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(None, METADATA_TIMEOUT)
                .map_err(unavailable)?;
            let mut topics: Vec<TopicInfo> = metadata
                .topics()
                .iter()
                .filter(|t| !t.name().starts_with("__"))
                .map(|t| TopicInfo {
                    name: t.name().to_string(),
                    partitions: t.partitions().len() as i32,
                })
                .collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(topics)
        })
        .await
        .map_err(unavailable)?
    }
}

struct KafkaSubscription {
    consumer: StreamConsumer<TracingContext>,
}

fn to_record(message: &BorrowedMessage<'_>) -> LogRecord {
    let headers = message
        .headers()
        .map(|hs| crate::log::Headers::new(hs.iter().map(|h| (h.key, h.value.unwrap_or_default()))))
        .unwrap_or_default();
    LogRecord {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        headers,
        payload: message.payload().map(Arc::from),
        timestamp_ms: message.timestamp().to_millis(),
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        let mut records = Vec::new();
        match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(records),
            // librdkafka reports a broker it cannot reach (or a partition it cannot fetch
            // yet) to the consumer and recovers by itself: nothing to give up on. A member
            // that subscribed again on each such report, while the broker restarted, left
            // and joined its group every few seconds and applied nothing for minutes (the
            // stall watchdog, counting from each new subscription, never fired).
            Ok(Err(KafkaError::MessageConsumption(code))) => {
                debug!(error = %code, "consumer error (librdkafka recovers)");
                return Ok(records);
            }
            Ok(Err(e)) => return Err(unavailable(e)),
            Ok(Ok(message)) => records.push(to_record(&message)),
        }
        while records.len() < max {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => records.push(to_record(&message)),
                Some(Err(e)) => {
                    warn!(error = %e, "consumer error while draining");
                    break;
                }
                None => break,
            }
        }
        Ok(records)
    }

    fn assignment(&self) -> Option<Vec<(String, i32)>> {
        let list = self.consumer.assignment().ok()?;
        Some(
            list.elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect(),
        )
    }

    fn seek(&mut self, positions: &[Position]) -> Result<(), LogError> {
        let assigned = self
            .consumer
            .assignment()
            .map_err(|e| LogError::Other(e.to_string()))?;
        for p in positions {
            if assigned.find_partition(&p.topic, p.partition).is_none() {
                continue;
            }
            // librdkafka drops the partition's records fetched before the seek (they carry
            // an older version of its fetch state), so the next record is `next_offset`'s.
            self.consumer
                .seek(
                    &p.topic,
                    p.partition,
                    Offset::Offset(p.next_offset),
                    Duration::from_secs(5),
                )
                .map_err(|e| LogError::Other(e.to_string()))?;
        }
        Ok(())
    }

    fn commit(&self, positions: &[Position]) -> Result<(), LogError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::with_capacity(positions.len());
        for p in positions {
            list.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset))
                .map_err(|e| LogError::Other(e.to_string()))?;
        }
        self.consumer
            .commit(&list, CommitMode::Async)
            .map_err(|e| LogError::Other(e.to_string()))
    }
}
