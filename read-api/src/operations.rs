//! Operations (SPEC §3.7, admin): projections with their lag and rebuilds, and the dead
//! letters of every consumer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use shop_log::{EventLog, LogRecord, OutgoingRecord};
use shop_projections::versions::{self, LiveVersions, RebuildError};
use shop_projections::PROJECTIONS;
use shop_sql::{Pool, Renames};
use shop_web::auth::Admin;
use shop_web::http::Problem;
use utoipa::ToSchema;

use crate::{AppState, NoParams, ReadQuery};

/// The live version of each projection, re-read at most every 250 ms: every read runs
/// on the live version's tables ([`shop_sql::with_renames`]).
pub(crate) struct LiveTables {
    pool: Pool,
    current: Mutex<(Instant, Arc<LiveVersions>, Arc<Renames>)>,
}

const LIVE_TABLES_TTL: Duration = Duration::from_millis(250);

impl LiveTables {
    pub(crate) fn new(pool: Pool) -> Self {
        LiveTables {
            pool,
            current: Mutex::new((
                Instant::now() - LIVE_TABLES_TTL * 2,
                Arc::default(),
                Arc::default(),
            )),
        }
    }

    /// The live versions and the renames that read them.
    pub(crate) async fn get(&self) -> (Arc<LiveVersions>, Arc<Renames>) {
        {
            let current = self.current.lock().expect("live tables lock");
            if current.0.elapsed() < LIVE_TABLES_TTL {
                return (current.1.clone(), current.2.clone());
            }
        }
        match versions::live_versions(&self.pool).await {
            Ok(live) => {
                let renames = Arc::new(live.renames());
                let live = Arc::new(live);
                *self.current.lock().expect("live tables lock") =
                    (Instant::now(), live.clone(), renames.clone());
                (live, renames)
            }
            Err(e) => {
                // Keep serving the last known versions; the database error will show
                // in the read itself if it persists.
                tracing::warn!(error = %e, "cannot read projection versions");
                let current = self.current.lock().expect("live tables lock");
                (current.1.clone(), current.2.clone())
            }
        }
    }
}

/// Middleware: the request runs on the live versions' tables, and handlers find the
/// live versions in the request's extensions.
pub(crate) async fn on_live_tables(
    State(tables): State<Arc<LiveTables>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (live, renames) = tables.get().await;
    request.extensions_mut().insert(live);
    shop_sql::with_renames(renames, next.run(request)).await
}

/// A partition of a projection against the log.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProjectionPosition)]
pub(crate) struct PositionView {
    topic: String,
    partition: i32,
    /// The next offset the projection will apply.
    offset: i64,
    end_offset: i64,
}

/// A rebuild under way: the new version filling beside the live one.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProjectionRebuild)]
pub(crate) struct RebuildView {
    version: i64,
    requested_at: DateTime<Utc>,
    events_applied: i64,
    lag: i64,
}

/// A projection's progress (SPEC §3.7).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Projection)]
pub(crate) struct ProjectionView {
    name: &'static str,
    /// `rebuilding` while a new version fills beside the live one, `failed` when its last
    /// event was dead-lettered and it has not applied one since, `recovering` while it
    /// applies again what it found missing after its checkpoint (see
    /// `last_checkpoint_gap`).
    #[schema(example = "live")]
    status: &'static str,
    /// The version reads are served from.
    version: i64,
    /// The projection's revision that version was built for (a projector with a newer
    /// one rebuilds it).
    revision: i64,
    events_applied: i64,
    /// Records of its topics not applied yet.
    lag: i64,
    /// How long the oldest record not applied yet has waited, in milliseconds.
    oldest_unprocessed_age_ms: Option<u64>,
    last_event_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// Times the projection found its checkpoint behind the records it read — commits
    /// the database had acknowledged and then lost in a crash — and read them again.
    checkpoint_gaps: i64,
    last_checkpoint_gap: Option<CheckpointGapView>,
    positions: Vec<PositionView>,
    rebuild: Option<RebuildView>,
}

/// A time a projection found a partition's checkpoint behind the records it read.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CheckpointGap)]
pub(crate) struct CheckpointGapView {
    topic: String,
    partition: i32,
    /// Where its database said to resume.
    checkpoint: i64,
    /// The first record it had read instead.
    read_offset: i64,
    at: DateTime<Utc>,
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::unavailable(e.to_string())
}

/// Each projection's positions against the log's end offsets, and its rebuild if any.
#[utoipa::path(
    get,
    path = "/api/projections",
    tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every projection.", body = Vec<ProjectionView>),
        (status = 403, description = "Admins only."),
    )
)]
pub(crate) async fn list_projections(
    State(state): State<AppState>,
    _admin: Admin,
    _: ReadQuery<NoParams>,
) -> Result<Json<Vec<ProjectionView>>, Problem> {
    let rows = versions::versions(&state.pool)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let log = state.log.as_ref();
    let mut views = Vec::new();
    for info in PROJECTIONS {
        let topics: Vec<String> = info
            .sources
            .iter()
            .map(|s| s.topic(&state.topic_prefix))
            .collect();
        let (live, revision) = rows
            .iter()
            .find(|r| r.projection == info.name && r.status == versions::LIVE)
            .map_or((1, 1), |r| (r.version, r.revision));
        let lag = versions::lag(
            &state.pool,
            log,
            &versions::consumer_name(info, live),
            &topics,
        )
        .await
        .map_err(unavailable)?;
        let age = versions::oldest_unprocessed_age(log, &lag)
            .await
            .map_err(unavailable)?;
        let mut rebuild = None;
        if let Some(row) = rows
            .iter()
            .find(|r| r.projection == info.name && r.status == versions::REBUILDING)
        {
            let progress = versions::lag(
                &state.pool,
                log,
                &versions::consumer_name(info, row.version),
                &topics,
            )
            .await
            .map_err(unavailable)?;
            rebuild = Some(RebuildView {
                version: row.version,
                requested_at: row.requested_at,
                events_applied: progress.events_applied,
                lag: progress.lag,
            });
        }
        let failed = lag.last_error.is_some() && lag.lag > 0;
        views.push(ProjectionView {
            name: info.name,
            status: if rebuild.is_some() {
                "rebuilding"
            } else if failed {
                "failed"
            } else if lag.recovering {
                "recovering"
            } else {
                "live"
            },
            version: live,
            revision,
            events_applied: lag.events_applied,
            lag: lag.lag,
            oldest_unprocessed_age_ms: age.map(|a| a.as_millis() as u64),
            last_event_at: lag.last_event_at,
            last_error: lag.last_error,
            checkpoint_gaps: lag.checkpoint_gaps,
            last_checkpoint_gap: lag.last_checkpoint_gap.map(|g| CheckpointGapView {
                topic: g.topic,
                partition: g.partition,
                checkpoint: g.checkpoint,
                read_offset: g.read_offset,
                at: g.at,
            }),
            positions: lag
                .positions
                .into_iter()
                .map(|p| PositionView {
                    topic: p.topic,
                    partition: p.partition,
                    offset: p.offset,
                    end_offset: p.end_offset,
                })
                .collect(),
            rebuild,
        });
    }
    Ok(Json(views))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RebuildAccepted {
    projection: String,
    /// The version being filled; reads switch to it when it has caught up.
    version: i64,
    #[schema(example = "rebuilding")]
    status: &'static str,
}

/// Rebuilds a projection from the beginning of the log while the live version keeps
/// serving; reads switch to the new version once it has caught up (`GET
/// /api/projections` shows its progress).
#[utoipa::path(
    post,
    path = "/api/projections/{name}/rebuild",
    tag = "operations",
    params(("name" = String, Path, description = "products, customers or orders")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Rebuild started.", body = RebuildAccepted),
        (status = 403, description = "Admins only."),
        (status = 404, description = "No such projection."),
        (status = 409, description = "A rebuild of it is already under way."),
    )
)]
pub(crate) async fn rebuild_projection(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<RebuildAccepted>), Problem> {
    let version = versions::request_rebuild(&state.pool, &name)
        .await
        .map_err(|e| match e {
            RebuildError::Unknown(_) => Problem::not_found(e.to_string()),
            RebuildError::AlreadyRebuilding(_) => Problem::conflict(e.to_string()),
            RebuildError::Db(e) => Problem::internal(&e),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RebuildAccepted {
            projection: name,
            version,
            status: "rebuilding",
        }),
    ))
}

/// Headers the consumer runner adds to a dead letter.
mod dlq_headers {
    pub const CONSUMER: &str = "dlq_consumer";
    pub const ERROR: &str = "dlq_error";
    pub const TOPIC: &str = "dlq_topic";
    pub const PARTITION: &str = "dlq_partition";
    pub const OFFSET: &str = "dlq_offset";
    pub const ATTEMPTS: &str = "dlq_attempts";
    /// On a marker record: the id of the dead letter an operator re-drove.
    pub const RETRIED: &str = "dlq_retried";
}

/// An event a consumer gave up on.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DeadLetter {
    /// `<partition>-<offset>` in the dead-letter topic.
    #[schema(example = "0-12")]
    id: String,
    consumer: String,
    /// Where the event was read from.
    topic: String,
    partition: i32,
    offset: i64,
    event_id: Option<String>,
    event_type: Option<String>,
    error: String,
    attempts: u32,
    created_at: Option<DateTime<Utc>>,
    /// When an operator re-drove it (`POST /api/dlq/{id}/retry`, `shop dlq retry`).
    retried_at: Option<DateTime<Utc>>,
    /// The record's key (the aggregate id).
    key: Option<String>,
    /// The event's own headers (its CloudEvent attributes, `ce_*`), without the
    /// dead-letter ones.
    headers: BTreeMap<String, String>,
    /// The event's data: JSON as published, or the payload as text when it is not JSON.
    payload: Option<serde_json::Value>,
}

fn header<'r>(record: &'r LogRecord, name: &str) -> Option<&'r str> {
    record
        .headers
        .iter()
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn timestamp(record: &LogRecord) -> Option<DateTime<Utc>> {
    record
        .timestamp_ms
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}

/// Every record of the dead-letter topic, in offset order per partition.
async fn dead_letter_records(log: &dyn EventLog, topic: &str) -> Result<Vec<LogRecord>, Problem> {
    let ends = match log.end_offsets(topic).await {
        Ok(ends) => ends,
        // No dead letter yet: the topic may not exist.
        Err(_) => return Ok(Vec::new()),
    };
    let mut records = Vec::new();
    for (partition, end) in ends {
        let mut next = 0;
        while next < end {
            let batch = log
                .read(topic, partition, next, 500)
                .await
                .map_err(unavailable)?;
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            records.extend(batch);
        }
    }
    Ok(records)
}

fn dead_letters(records: &[LogRecord]) -> Vec<DeadLetter> {
    let retried: HashMap<&str, Option<DateTime<Utc>>> = records
        .iter()
        .filter_map(|r| header(r, dlq_headers::RETRIED).map(|id| (id, timestamp(r))))
        .collect();
    let mut letters: Vec<DeadLetter> = records
        .iter()
        .filter(|r| header(r, dlq_headers::RETRIED).is_none())
        .filter_map(|r| {
            let id = format!("{}-{}", r.partition, r.offset);
            Some(DeadLetter {
                consumer: header(r, dlq_headers::CONSUMER)?.to_string(),
                topic: header(r, dlq_headers::TOPIC)?.to_string(),
                partition: header(r, dlq_headers::PARTITION)?.parse().ok()?,
                offset: header(r, dlq_headers::OFFSET)?.parse().ok()?,
                event_id: header(r, shop_schemas::envelope::headers::ID).map(String::from),
                event_type: header(r, shop_schemas::envelope::headers::TYPE).map(String::from),
                error: header(r, dlq_headers::ERROR).unwrap_or("").to_string(),
                attempts: header(r, dlq_headers::ATTEMPTS)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
                created_at: timestamp(r),
                retried_at: retried.get(id.as_str()).copied().flatten(),
                key: r.key.clone(),
                headers: r
                    .headers
                    .iter()
                    .filter(|(k, _)| !k.starts_with("dlq_"))
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
                    .collect(),
                payload: r.payload.as_deref().filter(|p| !p.is_empty()).map(|p| {
                    serde_json::from_slice(p).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(p).into_owned())
                    })
                }),
                id,
            })
        })
        .collect();
    letters.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    letters
}

/// Events that consumers (projectors and saga reactions) gave up on after their retries,
/// with the error, oldest first.
#[utoipa::path(
    get,
    path = "/api/dlq",
    tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every dead letter.", body = Vec<DeadLetter>),
        (status = 403, description = "Admins only."),
    )
)]
pub(crate) async fn list_dead_letters(
    State(state): State<AppState>,
    _admin: Admin,
    _: ReadQuery<NoParams>,
) -> Result<Json<Vec<DeadLetter>>, Problem> {
    let topic = shop_schemas::topics::dead_letter_topic(&state.topic_prefix);
    let records = dead_letter_records(state.log.as_ref(), &topic).await?;
    Ok(Json(dead_letters(&records)))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RetryAccepted {
    id: String,
    /// The topic the event was published to again.
    topic: String,
}

/// Re-drives a dead letter once its cause is fixed: the event goes back to its topic
/// (same id, so consumers that applied it skip it, and the one that gave up applies it).
#[utoipa::path(
    post,
    path = "/api/dlq/{id}/retry",
    tag = "operations",
    params(("id" = String, Path, description = "A dead letter's id (`<partition>-<offset>`)")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Published again.", body = RetryAccepted),
        (status = 403, description = "Admins only."),
        (status = 404, description = "No such dead letter."),
    )
)]
pub(crate) async fn retry_dead_letter(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RetryAccepted>), Problem> {
    let not_found = || Problem::not_found("no such dead letter");
    let (partition, offset) = id
        .split_once('-')
        .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)))
        .ok_or_else(not_found)?;
    let dlq_topic = shop_schemas::topics::dead_letter_topic(&state.topic_prefix);
    let record = state
        .log
        .read(&dlq_topic, partition, offset, 1)
        .await
        .map_err(|_| not_found())?
        .into_iter()
        .find(|r| r.offset == offset)
        .ok_or_else(not_found)?;
    let letter = dead_letters(std::slice::from_ref(&record))
        .into_iter()
        .next()
        .ok_or_else(not_found)?;
    let key = record.key.clone().unwrap_or_default();
    let again = OutgoingRecord {
        topic: letter.topic.clone(),
        key: key.clone(),
        headers: record
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("dlq_"))
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
            .collect(),
        payload: record
            .payload
            .as_deref()
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
    };
    let marker = OutgoingRecord {
        topic: dlq_topic,
        key,
        headers: vec![(dlq_headers::RETRIED.to_string(), id.clone())],
        payload: Vec::new(),
    };
    state.log.publish(vec![again]).await.map_err(unavailable)?;
    state.log.publish(vec![marker]).await.map_err(unavailable)?;
    tracing::info!(dead_letter = %id, topic = %letter.topic, consumer = %letter.consumer, "dead letter re-driven");
    metrics::counter!("dead_letters_retried_total", "consumer" => letter.consumer).increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(RetryAccepted {
            id,
            topic: letter.topic,
        }),
    ))
}
