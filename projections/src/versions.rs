//! Zero-downtime rebuilds: each projection has versions. Version 1 uses the plain table
//! names; version n > 1 the same tables suffixed `_v<n>`, its own consumer
//! (`projection.<name>.v<n>`: own group, checkpoints and dedup records) and the same
//! projector code, whose statements are renamed on the fly ([`sql::with_renames`]).
//!
//! A rebuild request adds a `rebuilding` version. The projector fills it from offset 0
//! beside the live one and, once it has applied every record the live version has
//! (partition by partition, `switch`), switches in one update: the new version becomes
//! `live`, the old one `retired`. Reads pick the live version per request, so they never see a half-built
//! projection and never fail; the retired tables are dropped after a grace period.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shop_eventing::handler::{EventHandler, HandlerError};
use shop_eventing::platform::Platform;
use shop_eventing::CancellationToken;
use shop_log::EventLog;
use shop_schemas::CloudEvent;
use shop_sql::db::DbError;
use shop_sql::{self as sql, Conn, Pool, Renames};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::{ProjectionInfo, PROJECTIONS};

/// The versions table.
pub const SCHEMA: &str = include_str!("../sql/versions.sql");

pub const LIVE: &str = "live";
pub const REBUILDING: &str = "rebuilding";
pub const RETIRED: &str = "retired";

/// How long a retired version's tables stay after the switch (reads that picked it
/// just before finish; other projector processes notice and stop its consumer).
pub const DROP_GRACE: Duration = Duration::from_secs(10);

/// A table (or index) name of a version.
pub fn versioned_name(name: &str, version: i64) -> String {
    if version <= 1 {
        name.to_string()
    } else {
        format!("{name}_v{version}")
    }
}

/// The consumer a version runs as.
pub fn consumer_name(info: &ProjectionInfo, version: i64) -> String {
    if version <= 1 {
        info.consumer.to_string()
    } else {
        format!("{}.v{version}", info.consumer)
    }
}

fn names(info: &ProjectionInfo) -> impl Iterator<Item = &'static str> {
    info.tables.iter().chain(info.indexes).copied()
}

/// The renames that make a projection's code use a version's tables.
pub fn renames(info: &ProjectionInfo, version: i64) -> Renames {
    Renames::new(names(info).map(|n| (n.to_string(), versioned_name(n, version))))
}

/// The projection by name.
pub fn projection(name: &str) -> Option<&'static ProjectionInfo> {
    PROJECTIONS.iter().find(|p| p.name == name)
}

/// The live version of every projection, as reads use it.
#[derive(Debug, Clone, Default)]
pub struct LiveVersions(HashMap<&'static str, i64>);

impl LiveVersions {
    pub fn version(&self, info: &ProjectionInfo) -> i64 {
        self.0.get(info.name).copied().unwrap_or(1)
    }

    /// The live version's consumer of a projection.
    pub fn consumer(&self, info: &ProjectionInfo) -> String {
        consumer_name(info, self.version(info))
    }

    /// Renames of every projection's tables to their live versions.
    pub fn renames(&self) -> Renames {
        Renames::new(PROJECTIONS.iter().flat_map(|info| {
            let version = self.version(info);
            names(info).map(move |n| (n.to_string(), versioned_name(n, version)))
        }))
    }
}

/// Reads the live versions.
///
/// # Errors
/// The database fails.
pub async fn live_versions(pool: &Pool) -> Result<LiveVersions, sqlx::Error> {
    let rows: Vec<(String, i64)> = sql::query_as(
        "SELECT projection, CAST(version AS BIGINT) FROM projection_versions WHERE status = 'live'",
    )
    .fetch_all(pool)
    .await?;
    Ok(LiveVersions(
        rows.into_iter()
            .filter_map(|(name, version)| projection(&name).map(|info| (info.name, version)))
            .collect(),
    ))
}

/// Registers version 1 of every projection as live, once (built for this build's
/// revision), and brings the tables of the live and rebuilding versions to this build's
/// columns ([`prepare_tables`]).
///
/// # Errors
/// The database fails.
pub async fn register(pool: &Pool) -> Result<(), DbError> {
    shop_sql::db::ensure_column(
        pool,
        "projection_versions",
        "revision",
        "INTEGER NOT NULL DEFAULT 1",
    )
    .await?;
    for info in PROJECTIONS {
        sql::query("INSERT INTO projection_versions (projection, version, status, live_at, revision) VALUES ($1, 1, 'live', CURRENT_TIMESTAMP, $2) ON CONFLICT DO NOTHING")
            .bind(info.name)
            .bind(info.revision)
            .execute(pool)
            .await?;
    }
    for row in versions(pool).await? {
        if let (true, Some(info)) = (
            row.status == LIVE || row.status == REBUILDING,
            projection(&row.projection),
        ) {
            prepare_tables(pool, info, row.version).await?;
        }
    }
    Ok(())
}

/// Creates a version's tables when missing and adds the columns this build's code
/// writes that older tables lack ([`ProjectionInfo::added_columns`]).
///
/// # Errors
/// The database fails.
pub async fn prepare_tables(
    pool: &Pool,
    info: &ProjectionInfo,
    version: i64,
) -> Result<(), DbError> {
    if version > 1 {
        let script = renames(info, version).apply(info.schema).into_owned();
        shop_sql::db::run_script(pool, &script).await?;
    }
    for (table, column, definition) in info.added_columns {
        shop_sql::db::ensure_column(pool, &versioned_name(table, version), column, definition)
            .await?;
    }
    Ok(())
}

/// Why a rebuild was not started.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("no projection named {0:?}")]
    Unknown(String),
    #[error("projection {0} is already being rebuilt")]
    AlreadyRebuilding(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Asks for a rebuild of `name`: a new version, filled from the beginning of the log by
/// the projector; returns its number.
///
/// # Errors
/// Unknown projection, a rebuild already under way, or the database.
pub async fn request_rebuild(pool: &Pool, name: &str) -> Result<i64, RebuildError> {
    let info = projection(name).ok_or_else(|| RebuildError::Unknown(name.to_string()))?;
    let version: i64 = sql::query_scalar(
        "SELECT CAST(COALESCE(MAX(version), 1) + 1 AS BIGINT) FROM projection_versions WHERE projection = $1",
    )
    .bind(info.name)
    .fetch_one(pool)
    .await?;
    let inserted = sql::query(
        "INSERT INTO projection_versions (projection, version, status, revision) VALUES ($1, $2, 'rebuilding', $3) ON CONFLICT DO NOTHING",
    )
    .bind(info.name)
    .bind(version)
    .bind(info.revision)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(RebuildError::AlreadyRebuilding(info.name.to_string()));
    }
    info!(projection = info.name, version, "rebuild requested");
    // The supervisors in this process start it now rather than at their next look.
    REQUESTED.send_modify(|n| *n += 1);
    Ok(version)
}

/// Counts the rebuilds requested in this process: a change wakes its supervisors (also
/// one made while a supervisor was busy: it wakes at its next wait).
static REQUESTED: std::sync::LazyLock<tokio::sync::watch::Sender<u64>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::Sender::new(0));

/// One version of a projection as the versions table has it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    pub projection: String,
    pub version: i64,
    pub status: String,
    pub requested_at: DateTime<Utc>,
    pub live_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
    pub dropped_at: Option<DateTime<Utc>>,
    /// The projection's revision the version was built for.
    pub revision: i64,
}

impl sql::FromRow for VersionRow {
    fn from_row(row: &sql::Row) -> Result<Self, sqlx::Error> {
        Ok(VersionRow {
            projection: row.get("projection")?,
            version: row.get("version")?,
            status: row.get("status")?,
            requested_at: row.get("requested_at")?,
            live_at: row.get("live_at")?,
            retired_at: row.get("retired_at")?,
            dropped_at: row.get("dropped_at")?,
            revision: row.get("revision")?,
        })
    }
}

/// Every version not dropped yet.
///
/// # Errors
/// The database fails.
pub async fn versions(pool: &Pool) -> Result<Vec<VersionRow>, sqlx::Error> {
    sql::query_as(
        "SELECT projection, CAST(version AS BIGINT) AS version, status, requested_at, live_at, retired_at, dropped_at,
                CAST(revision AS BIGINT) AS revision
         FROM projection_versions WHERE dropped_at IS NULL ORDER BY projection, version",
    )
    .fetch_all(pool)
    .await
}

/// A partition of a consumer's progress against the log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The next offset the consumer will apply.
    pub offset: i64,
    pub end_offset: i64,
}

/// A consumer's progress against the end of its topics.
#[derive(Debug, Clone, Serialize)]
pub struct Lag {
    pub events_applied: i64,
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Records between the consumer's positions and the ends of its partitions.
    pub lag: i64,
    pub positions: Vec<PartitionLag>,
    /// Times the consumer found its checkpoint behind the records it read (lost commits)
    /// and read again from it; the last of them.
    pub checkpoint_gaps: i64,
    pub last_checkpoint_gap: Option<shop_eventing::checkpoint::CheckpointGap>,
    /// Still applying again what its last checkpoint gap made it read again.
    pub recovering: bool,
}

/// `consumer`'s lag on `topics`.
///
/// # Errors
/// The database or the log fails.
pub async fn lag(
    pool: &Pool,
    log: &dyn EventLog,
    consumer: &str,
    topics: &[String],
) -> Result<Lag, Box<dyn std::error::Error + Send + Sync>> {
    let progress = shop_eventing::checkpoint::progress(pool, consumer).await?;
    let mut positions = Vec::new();
    for topic in topics {
        for (partition, end_offset) in log.end_offsets(topic).await? {
            let offset = progress
                .positions
                .iter()
                .find(|p| &p.topic == topic && p.partition == partition)
                .map_or(0, |p| p.next_offset);
            positions.push(PartitionLag {
                topic: topic.clone(),
                partition,
                offset,
                end_offset,
            });
        }
    }
    positions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let recovering = progress.recovering();
    Ok(Lag {
        recovering,
        checkpoint_gaps: progress.checkpoint_gaps,
        last_checkpoint_gap: progress.last_checkpoint_gap,
        events_applied: progress.events_applied,
        last_event_at: progress.last_event_at,
        last_error: progress.last_error,
        lag: positions
            .iter()
            .map(|p| (p.end_offset - p.offset).max(0))
            .sum(),
        positions,
    })
}

/// How long the oldest record not yet applied has waited (SPEC §3.7), from the log's
/// timestamps; `None` when nothing is waiting.
///
/// # Errors
/// The log fails.
pub async fn oldest_unprocessed_age(
    log: &dyn EventLog,
    lag: &Lag,
) -> Result<Option<Duration>, Box<dyn std::error::Error + Send + Sync>> {
    let mut oldest: Option<i64> = None;
    for p in lag.positions.iter().filter(|p| p.offset < p.end_offset) {
        let records = log.read(&p.topic, p.partition, p.offset, 1).await?;
        if let Some(ms) = records.first().and_then(|r| r.timestamp_ms) {
            oldest = Some(oldest.map_or(ms, |o| o.min(ms)));
        }
    }
    Ok(oldest.map(|ms| {
        let age = Utc::now().timestamp_millis() - ms;
        Duration::from_millis(age.max(0) as u64)
    }))
}

/// A projector that runs its projection's code on a version's tables.
struct Versioned {
    inner: Arc<dyn EventHandler>,
    renames: Arc<Renames>,
}

#[async_trait]
impl EventHandler for Versioned {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        sql::with_renames(self.renames.clone(), self.inner.handle(tx, event)).await
    }

    // A rebuild writes set-based like the live version (without these it went event by
    // event: a fifth of the first fill's speed in `shop bench`).
    async fn handle_batch(
        &self,
        tx: &mut Conn,
        events: &[&CloudEvent],
    ) -> Result<(), HandlerError> {
        sql::with_renames(self.renames.clone(), self.inner.handle_batch(tx, events)).await
    }

    fn batches(&self) -> bool {
        self.inner.batches()
    }
}

struct Running {
    stop: CancellationToken,
    /// Members started (the count follows the version's status).
    members: usize,
    /// One per member of the version's consumer group.
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.await.ok();
        }
    }
}

/// Keeps the projector's consumers in line with the versions table: one consumer per
/// live or rebuilding version, switching a rebuild live once caught up and dropping
/// retired versions after [`DROP_GRACE`]. Several projector processes may run it; each
/// step is a conditional update, so they agree.
pub async fn supervise(platform: Platform, pool: Pool, shutdown: CancellationToken) {
    let mut running: HashMap<(&'static str, i64), Running> = HashMap::new();
    let mut ticks: u64 = 0;
    let mut requested = REQUESTED.subscribe();
    let mut gauges: Option<JoinHandle<()>> = None;
    loop {
        requested.mark_unchanged();
        if let Err(e) = supervise_once(
            &platform,
            &pool,
            &shutdown,
            &mut running,
            &mut gauges,
            ticks,
        )
        .await
        {
            warn!(error = %e, "projection supervisor step failed; retrying");
        }
        ticks += 1;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = requested.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
    if let Some(task) = gauges {
        task.abort();
    }
    for (_, run) in running.drain() {
        run.stop().await;
    }
}

fn topics(platform: &Platform, info: &ProjectionInfo) -> Vec<String> {
    info.sources
        .iter()
        .map(|s| s.topic(&platform.topic_prefix))
        .collect()
}

/// Sets `projection_lag_events` and `projection_oldest_unprocessed_seconds` of these
/// versions (a version that fails is skipped until the next time).
async fn record_gauges(
    pool: Pool,
    log: Arc<dyn EventLog>,
    versions: Vec<(&'static ProjectionInfo, i64, Vec<String>)>,
) {
    for (info, version, topics) in versions {
        let Ok(mine) = lag(&pool, log.as_ref(), &consumer_name(info, version), &topics).await
        else {
            continue;
        };
        metrics::gauge!("projection_lag_events", "projection" => info.name, "version" => version.to_string())
            .set(mine.lag as f64);
        metrics::gauge!("projection_checkpoint_gaps", "projection" => info.name, "version" => version.to_string())
            .set(mine.checkpoint_gaps as f64);
        metrics::gauge!("projection_recovering", "projection" => info.name, "version" => version.to_string())
            .set(if mine.recovering { 1.0 } else { 0.0 });
        if let Ok(age) = oldest_unprocessed_age(log.as_ref(), &mine).await {
            metrics::gauge!("projection_oldest_unprocessed_seconds", "projection" => info.name, "version" => version.to_string())
                .set(age.map_or(0.0, |a| a.as_secs_f64()));
        }
    }
}

async fn supervise_once(
    platform: &Platform,
    pool: &Pool,
    shutdown: &CancellationToken,
    running: &mut HashMap<(&'static str, i64), Running>,
    gauges: &mut Option<JoinHandle<()>>,
    ticks: u64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut rows = versions(pool).await?;
    if rebuild_older_revisions(pool, &rows).await? {
        rows = versions(pool).await?;
    }
    let mut wanted: Vec<(&'static ProjectionInfo, i64, bool)> = Vec::new();
    for r in &rows {
        if let (true, Some(info)) = (
            r.status == LIVE || r.status == REBUILDING,
            projection(&r.projection),
        ) {
            // A version built for a newer revision is a newer build's to run (during a
            // rolling update, this build's code would write it wrong).
            if r.revision > info.revision {
                continue;
            }
            wanted.push((info, r.version, r.status == REBUILDING));
        }
    }
    // No more members than the database writes with at once (SQLite: one; more would
    // only queue).
    let members = |rebuilding: bool| {
        let configured = if rebuilding {
            platform.consumer.rebuild_members
        } else {
            platform.consumer.projection_members
        };
        configured.max(1).min(pool.max_concurrent_writers())
    };
    // Stop the consumers of versions that are no longer wanted, and of those whose
    // member count changed (a rebuild switched live); the latter start again below.
    let mut stale: Vec<(&'static str, i64)> = Vec::new();
    for ((name, version), run) in running.iter() {
        let wants = wanted
            .iter()
            .find(|(i, v, _)| i.name == *name && v == version)
            .map(|(_, _, rebuilding)| members(*rebuilding));
        if wants != Some(run.members) {
            stale.push((name, *version));
        }
    }
    for key in stale {
        if let Some(run) = running.remove(&key) {
            info!(
                projection = key.0,
                version = key.1,
                "stopping a projection version's consumers"
            );
            run.stop().await;
        }
    }
    // Start the missing ones (a rebuild's tables first).
    for (info, version, rebuilding) in &wanted {
        if running.contains_key(&(info.name, *version)) {
            continue;
        }
        prepare_tables(pool, info, *version).await?;
        let handler = crate::handler(info);
        let handler: Arc<dyn EventHandler> = if *version > 1 {
            Arc::new(Versioned {
                inner: handler,
                renames: Arc::new(renames(info, *version)),
            })
        } else {
            handler
        };
        let members = members(*rebuilding);
        let stop = shutdown.child_token();
        info!(
            projection = info.name,
            version, members, "starting projection consumer"
        );
        let tasks = (0..members)
            .map(|_| {
                let runner = platform
                    .consumer(
                        pool.clone(),
                        &consumer_name(info, *version),
                        info.sources,
                        handler.clone(),
                    )
                    .tracking_versions()
                    .lingering_after_lone_records();
                tokio::spawn(runner.run(stop.clone()))
            })
            .collect();
        running.insert(
            (info.name, *version),
            Running {
                stop,
                members,
                tasks,
            },
        );
    }
    // Every few seconds, every version's gauges, on a task of their own: the age of the
    // oldest record waiting reads one record per partition behind (a first fill or a
    // rebuild: every partition), which took seconds that starting, switching and
    // stopping versions would otherwise wait for.
    if ticks.is_multiple_of(10) && gauges.as_ref().is_none_or(|task| task.is_finished()) {
        let versions: Vec<(&'static ProjectionInfo, i64, Vec<String>)> = wanted
            .iter()
            .map(|(info, version, _)| (*info, *version, topics(platform, info)))
            .collect();
        *gauges = Some(tokio::spawn(record_gauges(
            pool.clone(),
            platform.log(),
            versions,
        )));
    }
    // Switch caught-up rebuilds (their lag gauge at every step).
    let log = platform.log();
    for (info, version, rebuilding) in &wanted {
        if !*rebuilding {
            continue;
        }
        let topics = topics(platform, info);
        let mine = lag(pool, log.as_ref(), &consumer_name(info, *version), &topics).await?;
        metrics::gauge!("projection_lag_events", "projection" => info.name, "version" => version.to_string())
            .set(mine.lag as f64);
        let mut live = 1;
        for r in &rows {
            if r.projection == info.name && r.status == LIVE {
                live = r.version;
            }
        }
        let theirs = lag(pool, log.as_ref(), &consumer_name(info, live), &topics).await?;
        // A cheap test first; the switch itself compares positions exactly.
        if mine.lag <= theirs.lag {
            switch(pool, info, *version, live).await?;
        }
    }
    // Drop retired versions once the grace period is over.
    let now = Utc::now();
    let grace = chrono::Duration::from_std(DROP_GRACE).unwrap_or_default();
    for row in &rows {
        let Some(info) = projection(&row.projection) else {
            continue;
        };
        let old_enough = match row.retired_at {
            Some(at) => row.status == RETIRED && now - at > grace,
            None => false,
        };
        if old_enough && !running.contains_key(&(info.name, row.version)) {
            drop_version(pool, info, row.version).await?;
        }
    }
    Ok(())
}

/// Asks for a rebuild of each projection whose live version was built for an older
/// revision than this build's, unless one is under way: its rows were written by older
/// code (a column this build added holds its default there). Reads keep the live version
/// until the rebuild has caught up and switches. Whether one was asked for.
async fn rebuild_older_revisions(
    pool: &Pool,
    rows: &[VersionRow],
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let mut requested = false;
    for info in PROJECTIONS {
        let mine = || rows.iter().filter(|r| r.projection == info.name);
        let older_live = mine().any(|r| r.status == LIVE && r.revision < info.revision);
        if !older_live || mine().any(|r| r.status == REBUILDING) {
            continue;
        }
        match request_rebuild(pool, info.name).await {
            Ok(version) => {
                info!(
                    projection = info.name,
                    version,
                    revision = info.revision,
                    "the live version was built for an older revision; rebuilding it"
                );
                requested = true;
            }
            // Another projector process asked first.
            Err(RebuildError::AlreadyRebuilding(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(requested)
}

/// Makes `version` live and retires the live one, in one transaction, if the rebuild has
/// applied every record the live version has, partition by partition; a no-op otherwise,
/// or when another projector process did it first.
///
/// The positions are read inside the switching transaction with the checkpoints held
/// still (PostgreSQL: the table in `SHARE` mode, which waits for the projectors'
/// transactions in flight and holds off new ones until the commit; SQLite: the write
/// lock of `BEGIN IMMEDIATE`). So nothing a reader could have seen in the live version
/// is missing from the one that replaces it. Comparing lags read one after the other
/// left a window: a record the live version applied between the two reads could be
/// missing, for a moment, after the switch.
async fn switch(
    pool: &Pool,
    info: &ProjectionInfo,
    version: i64,
    live: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    tx.hold_writes_to("consumer_checkpoints").await?;
    let positions = |consumer: String| {
        sql::query_as::<(String, i32, i64)>(
            "SELECT topic, partition, next_offset FROM consumer_checkpoints WHERE consumer = $1",
        )
        .bind(consumer)
    };
    let theirs = positions(consumer_name(info, live))
        .fetch_all(&mut tx)
        .await?;
    let mine: HashMap<(String, i32), i64> = positions(consumer_name(info, version))
        .fetch_all(&mut tx)
        .await?
        .into_iter()
        .map(|(topic, partition, offset)| ((topic, partition), offset))
        .collect();
    let behind = theirs.into_iter().any(|(topic, partition, offset)| {
        mine.get(&(topic, partition)).copied().unwrap_or(0) < offset
    });
    if behind {
        return tx.rollback().await;
    }
    sql::query("UPDATE projection_versions SET status = 'retired', retired_at = CURRENT_TIMESTAMP WHERE projection = $1 AND status = 'live' AND version <> $2")
        .bind(info.name)
        .bind(version)
        .execute(&mut tx)
        .await?;
    let switched = sql::query("UPDATE projection_versions SET status = 'live', live_at = CURRENT_TIMESTAMP WHERE projection = $1 AND version = $2 AND status = 'rebuilding'")
        .bind(info.name)
        .bind(version)
        .execute(&mut tx)
        .await?
        .rows_affected();
    if switched == 1 {
        tx.commit().await?;
        metrics::counter!("projection_rebuilds_total", "projection" => info.name).increment(1);
        info!(projection = info.name, version, "rebuilt version is live");
    } else {
        tx.rollback().await?;
    }
    Ok(())
}

/// Drops a retired version's tables and its consumer's records.
async fn drop_version(pool: &Pool, info: &ProjectionInfo, version: i64) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let claimed = sql::query("UPDATE projection_versions SET dropped_at = CURRENT_TIMESTAMP WHERE projection = $1 AND version = $2 AND dropped_at IS NULL")
        .bind(info.name)
        .bind(version)
        .execute(&mut tx)
        .await?
        .rows_affected();
    if claimed == 0 {
        return tx.rollback().await;
    }
    for table in info.tables {
        sql::query(&format!(
            "DROP TABLE IF EXISTS {}",
            versioned_name(table, version)
        ))
        .execute(&mut tx)
        .await?;
    }
    let consumer = consumer_name(info, version);
    for table in [
        "consumer_checkpoints",
        "processed_events",
        "consumer_status",
        "applied_versions",
    ] {
        sql::query(&format!("DELETE FROM {table} WHERE consumer = $1"))
            .bind(&consumer)
            .execute(&mut tx)
            .await?;
    }
    tx.commit().await?;
    info!(
        projection = info.name,
        version, "dropped a retired projection version"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_applies_batches_as_the_live_version_does() {
        for info in PROJECTIONS {
            let live = crate::handler(info);
            let rebuild = Versioned {
                inner: crate::handler(info),
                renames: Arc::new(renames(info, 2)),
            };
            assert_eq!(rebuild.batches(), live.batches(), "{}", info.name);
        }
    }

    #[test]
    fn a_version_creates_every_table_and_index_under_its_own_name() {
        for info in PROJECTIONS {
            let script = renames(info, 7).apply(info.schema).into_owned();
            for name in names(info) {
                assert!(
                    script.contains(&format!("{name}_v7")),
                    "{}: {name} is not renamed",
                    info.name
                );
            }
            for table in info.tables {
                assert!(
                    !script.contains(&format!("EXISTS {table} ")),
                    "{}: {table} would be created under its live name",
                    info.name
                );
            }
            // Every CREATE in the script is a listed name.
            for line in script.lines().filter(|l| l.starts_with("CREATE")) {
                assert!(line.contains("_v7"), "{}: {line}", info.name);
            }
        }
        assert_eq!(consumer_name(&crate::orders::INFO, 1), "projection.orders");
        assert_eq!(
            consumer_name(&crate::orders::INFO, 3),
            "projection.orders.v3"
        );
    }
}
