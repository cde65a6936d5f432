//! What the in-process stages run on, built from the common flags as `shop serve` builds
//! it: the Kafka client, the platform, the deployment's topics.

use std::sync::Arc;

use shop_eventing::platform::{ConsumerTuning, Platform, RelayTuning};
use shop_eventing::CancellationToken;
use shop_log::kafka::{KafkaConfig, KafkaLog};
use shop_log::EventLog;
use shop_sql::db::DatabaseConfig;
use shop_web::auth::JwtKeys;

use crate::cli::Common;

/// The Kafka client from the common flags.
pub fn kafka(common: &Common) -> anyhow::Result<Arc<KafkaLog>> {
    Ok(Arc::new(KafkaLog::new(KafkaConfig {
        brokers: common.kafka_brokers.clone(),
        partitions: common.topic_partitions,
        replication_factor: common.topic_replication,
        session_timeout_ms: common.kafka_session_timeout_ms,
    })?))
}

/// The platform (PostgreSQL databases, the given event log, keys) from the common flags.
pub fn platform(
    common: &Common,
    log: Arc<dyn EventLog>,
    jwt: JwtKeys,
    consumer: ConsumerTuning,
    relay: RelayTuning,
) -> Platform {
    Platform {
        database: DatabaseConfig {
            server_url: common.database_url.clone(),
            instance: common.instance.clone(),
            max_connections: common.db_pool_size,
            sqlite_dir: None,
        },
        log,
        topic_prefix: common.topic_prefix.clone(),
        jwt,
        consumer,
        relay,
        shutdown: CancellationToken::new(),
    }
}

/// Every topic of the deployment: one per service, and the dead letters.
pub fn all_topics(prefix: &str) -> Vec<String> {
    let mut topics: Vec<String> = shop_schemas::Service::ALL
        .iter()
        .map(|s| s.topic(prefix))
        .collect();
    topics.push(shop_schemas::topics::dead_letter_topic(prefix));
    topics
}
