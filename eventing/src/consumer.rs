//! The consumer runner shared by projectors and saga reactions.
//!
//! It reads records of its topics as a member of a consumer group and applies each event
//! through an [`EventHandler`] inside a database transaction that also records the event
//! id (dedup) and the partition's checkpoint — so a crash anywhere repeats nothing and
//! loses nothing. Records are applied in batches with one commit; when a batch fails the
//! runner goes record by record, retries each with backoff, and sends a record it still
//! cannot process to the dead-letter topic (and its `dead_letters` table) and goes on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shop_schemas::CloudEvent;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::backend::Backend;
use crate::checkpoint::{load_checkpoints, progress, save_progress};
use crate::fault;
use crate::handler::{apply_span, EventHandler, HandlerError};
use shop_log::{EventLog, LogError, LogRecord, OutgoingRecord, Position, StartFrom, Subscription};
use shop_sql::{self as sql, Conn, Pool};

mod recovery;
mod watch;

use recovery::{BatchOutcome, Interrupted, RewindReason};
use watch::{stalled, Closing, Lag, LoopWatch};

/// How often a consumer measures its lag (`consumer_lag_events`).
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// How long a member may get no record while records wait on the partitions it holds
/// before it takes its subscription for stalled and subscribes again (seen once after a
/// broker was killed twice in a row: the member kept its partitions and fetched nothing).
const STALLED_AFTER: Duration = Duration::from_secs(30);

/// How often a consumer commits its positions to the log. The checkpoints in its own
/// database decide what is applied; the log's positions only save re-reading after a
/// restart or a rebalance, so committing them once a second (and when idle) instead of
/// after every batch costs at most a second of records read again and skipped. Under
/// load, a commit per batch was a request to the broker (a write to the embedded log's
/// database in `shop dev`) for every few events.
const LOG_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The consumer tables; apply with [`shop_sql::db::open`] in the consumer's database.
pub const SCHEMA: &str = include_str!("../sql/consumer.sql");

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer's name: its checkpoints and dedup records are kept under it.
    pub name: String,
    /// The Kafka consumer group (instances with the same group share partitions).
    pub group: String,
    pub topics: Vec<String>,
    pub dead_letter_topic: String,
    /// Records per transaction.
    pub batch_size: usize,
    /// How long a batch smaller than `batch_size` waits for more records before it is
    /// applied: at low load a consumer otherwise commits a transaction per record or two.
    /// Zero applies each poll's records at once.
    pub linger: Duration,
    /// Attempts per record before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub retry_backoff: Duration,
    pub start: StartFrom,
}

/// Runs one consumer until shutdown.
pub struct ConsumerRunner {
    pool: Pool,
    log: Arc<dyn EventLog>,
    config: ConsumerConfig,
    handler: Arc<dyn EventHandler>,
    /// Keep `applied_versions` for read-your-writes (projectors).
    track_versions: bool,
    /// A saga reaction: it may have imported events to replay ([`Self::replaying_imports`]).
    replays_imports: bool,
    /// Whether `replay_only` holds events for this consumer (an import), as of the batch
    /// being applied.
    replay_pending: std::sync::atomic::AtomicBool,
    /// Lingers after a lone record too ([`Self::lingering_after_lone_records`]).
    linger_lone: bool,
    /// Whether a subscription was made deaf already ([`fault::CONSUMER_DEAF`]).
    deafened: std::sync::atomic::AtomicBool,
}

enum Outcome {
    Applied,
    Duplicate,
    Behind,
}

impl ConsumerRunner {
    pub fn new(
        pool: impl Into<Pool>,
        log: Arc<dyn EventLog>,
        config: ConsumerConfig,
        handler: Arc<dyn EventHandler>,
    ) -> Self {
        ConsumerRunner {
            pool: pool.into(),
            log,
            config,
            handler,
            track_versions: false,
            replays_imports: false,
            replay_pending: std::sync::atomic::AtomicBool::new(false),
            deafened: std::sync::atomic::AtomicBool::new(false),
            linger_lone: false,
        }
    }

    /// Also records each applied event's aggregate version, in the same transaction, so
    /// reads can wait for a command's events ([`crate::consistency`]).
    pub fn tracking_versions(mut self) -> Self {
        self.track_versions = true;
        self
    }

    /// Every transaction commits durably (PostgreSQL's `synchronous_commit` as the
    /// server sets it, on by default): a commit the database acknowledged survives its
    /// crash. (Projections once committed without waiting for the flush, to be re-derived
    /// after a crash; but the log's position had moved on, and the lost events stayed
    /// lost — issue 22.)
    async fn begin(&self) -> Result<Conn, sqlx::Error> {
        self.pool.begin().await
    }

    /// Lingers after a lone record too, for a consumer off the saga's path (a
    /// projector): records that come one at a time then share a transaction more often,
    /// for at most [`ConsumerConfig::linger`] more before a read sees them.
    pub fn lingering_after_lone_records(mut self) -> Self {
        self.linger_lone = true;
        self
    }

    /// Lingers `linger` instead of the platform's [`ConsumerConfig::linger`] (and after
    /// lone records too): for a consumer whose work may wait longer, fewer and larger
    /// transactions.
    pub fn lingering(mut self, linger: Duration) -> Self {
        self.config.linger = linger;
        self.lingering_after_lone_records()
    }

    /// A saga reaction: events an import marked for it (`replay_only`) are applied in
    /// replay mode, without commands. Checked once per batch, so only such consumers pay.
    pub fn replaying_imports(mut self) -> Self {
        self.replays_imports = true;
        self
    }

    /// Consumes until `shutdown`; reconnects after failures.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!("consumer", consumer = %self.config.name);
        async move {
            while !shutdown.is_cancelled() {
                if let Err(e) = self.consume(&shutdown).await {
                    warn!(error = %e, "consumer failed; restarting in 1 s");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            info!("consumer stopped");
        }
        .instrument(span)
        .await
    }

    async fn consume(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut subscription = Closing::new(
            self.log
                .subscribe(&self.config.group, &self.config.topics, self.config.start)
                .await?,
        );
        // A member deaf on purpose (`consumer.deaf:<consumer>`): its first subscription
        // takes its partitions and fetches nothing, as librdkafka's did after a broker
        // was killed twice in a row; the stall watchdog must notice.
        let deaf = fault::armed(&format!("{}:{}", fault::CONSUMER_DEAF, self.config.name))
            && !self
                .deafened
                .swap(true, std::sync::atomic::Ordering::Relaxed);
        // Every series of this consumer exists from its start (at zero), so an alert on
        // an increase sees the first one.
        let name = self.config.name.clone();
        metrics::counter!("dead_letters_total", "consumer" => name.clone()).increment(0);
        metrics::counter!("consumer_resubscriptions_total", "consumer" => name.clone())
            .increment(0);
        for reason in ["checkpoint_gap", "database_unavailable"] {
            metrics::counter!("consumer_rewinds_total", "consumer" => name.clone(), "reason" => reason)
                .increment(0);
        }
        let mut lag_measured = std::time::Instant::now() - LAG_INTERVAL;
        // Positions applied but not yet committed to the log, and when it last was.
        let mut uncommitted: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut committed_at = std::time::Instant::now();
        // How far this member has applied each partition it read (or where it was sent
        // back to): its database's checkpoints must not be behind.
        let mut read: BTreeMap<(String, i32), i64> = BTreeMap::new();
        // When a poll last returned records (or the subscription started).
        let mut last_record_at = std::time::Instant::now();
        let turn = LoopWatch::start();
        loop {
            turn.turned();
            if lag_measured.elapsed() >= LAG_INTERVAL {
                lag_measured = std::time::Instant::now();
                let held = subscription.assignment().unwrap_or_default();
                if let Some(lag) = self.measure_lag(&held).await {
                    if let Some(waiting) = stalled(&lag, last_record_at) {
                        warn!(
                            waiting,
                            "no record for {} s while records wait on this member's partitions; subscribing again",
                            STALLED_AFTER.as_secs()
                        );
                        metrics::counter!("consumer_resubscriptions_total", "consumer" => self.config.name.clone()).increment(1);
                        commit_to_log(subscription.as_ref(), &mut uncommitted);
                        return Err("subscription stalled".into());
                    }
                    let checkpoints = lag.checkpoints;
                    let gaps = self.verify(&checkpoints, &read);
                    if !gaps.is_empty() {
                        self.report_gaps(&gaps).await;
                        let positions: Vec<Position> = gaps
                            .iter()
                            .map(|g| Position {
                                topic: g.topic.clone(),
                                partition: g.partition,
                                next_offset: g.checkpoint,
                            })
                            .collect();
                        for p in &positions {
                            uncommitted.remove(&(p.topic.clone(), p.partition));
                            read.insert((p.topic.clone(), p.partition), p.next_offset);
                        }
                        subscription.seek(&positions)?;
                        metrics::counter!("consumer_rewinds_total", "consumer" => self.config.name.clone(), "reason" => RewindReason::CheckpointGap.as_str()).increment(1);
                    }
                }
            }
            let records = tokio::select! {
                _ = shutdown.cancelled() => {
                    commit_to_log(subscription.as_ref(), &mut uncommitted);
                    // Dropping the subscription closes it: the member leaves its group
                    // (librdkafka blocks until it has), so the others take its partitions
                    // at once rather than after the session timeout. Off the async
                    // workers, so that every consumer of the process closes at once and
                    // the relays meanwhile release their locks.
                    if let Some(subscription) = subscription.take() {
                        let _ = tokio::task::spawn_blocking(move || drop(subscription)).await;
                    }
                    return Ok(());
                }
                records = subscription.poll(self.config.batch_size, Duration::from_millis(500)) => records?,
            };
            let records = if deaf { Vec::new() } else { records };
            let records = self.linger(subscription.as_mut(), records).await?;
            if !records.is_empty() {
                last_record_at = std::time::Instant::now();
                // The oldest record waiting is the oldest of what was just taken.
                if let Some(oldest) = records.iter().filter_map(|r| r.timestamp_ms).min() {
                    let age_ms = (chrono::Utc::now().timestamp_millis() - oldest).max(0);
                    metrics::gauge!("consumer_oldest_unprocessed_seconds", "consumer" => self.config.name.clone())
                        .set(age_ms as f64 / 1000.0);
                }
            }
            if records.is_empty() {
                if !uncommitted.is_empty() {
                    commit_to_log(subscription.as_ref(), &mut uncommitted);
                    committed_at = std::time::Instant::now();
                }
                continue;
            }
            let outcome = self.process(records).await;
            // A long batch is progress too, not a stall.
            last_record_at = std::time::Instant::now();
            match outcome {
                BatchOutcome::Applied(positions) => {
                    for p in positions {
                        read.insert((p.topic.clone(), p.partition), p.next_offset);
                        let next = uncommitted.entry((p.topic, p.partition)).or_default();
                        *next = (*next).max(p.next_offset);
                    }
                }
                BatchOutcome::Rewind { positions, reason } => {
                    for p in &positions {
                        uncommitted.remove(&(p.topic.clone(), p.partition));
                        read.insert((p.topic.clone(), p.partition), p.next_offset);
                    }
                    if reason == RewindReason::DatabaseUnavailable {
                        self.wait_for_database(shutdown).await;
                    }
                    subscription.seek(&positions)?;
                    metrics::counter!("consumer_rewinds_total", "consumer" => self.config.name.clone(), "reason" => reason.as_str()).increment(1);
                }
            }
            if committed_at.elapsed() >= LOG_COMMIT_INTERVAL {
                commit_to_log(subscription.as_ref(), &mut uncommitted);
                committed_at = std::time::Instant::now();
            }
        }
    }

    /// A small batch waits [`ConsumerConfig::linger`] once, then takes what arrived
    /// meanwhile (up to the batch size) without waiting again. A lone record does not
    /// wait: when records come one at a time there is nothing to gather, and each saga
    /// step would pay the wait (at 50 orders/s `shop bench` saw most polls return one
    /// record and each hop spend the 5 ms); when they come faster, polls return several
    /// and the wait gathers more.
    async fn linger(
        &self,
        subscription: &mut dyn Subscription,
        mut records: Vec<LogRecord>,
    ) -> Result<Vec<LogRecord>, LogError> {
        let room = self.config.batch_size.saturating_sub(records.len());
        let lone = records.len() < 2 && !self.linger_lone;
        if records.is_empty() || lone || room == 0 || self.config.linger.is_zero() {
            return Ok(records);
        }
        tokio::time::sleep(self.config.linger).await;
        records.extend(subscription.poll(room, Duration::ZERO).await?);
        Ok(records)
    }

    /// Notes whether imported events wait to be replayed by this consumer. Asked per
    /// batch, after the poll, in the batch's transaction (on SQLite the writer's
    /// connection, whose page cache the process's own writes keep current): an import
    /// writes its replay rows before its events reach the log, so a record of it always
    /// finds them (even on a running instance).
    async fn check_replay(&self, tx: &mut Conn) {
        if let Ok(pending) = sql::query_scalar::<bool>(
            "SELECT EXISTS (SELECT 1 FROM replay_only WHERE consumer = $1)",
        )
        .bind(&self.config.name)
        .fetch_one(&mut *tx)
        .await
        {
            self.replay_pending
                .store(pending, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Sets `consumer_lag_events{consumer}`: records of its topics between its
    /// checkpoints and the ends of the partitions. Returns the checkpoints it read and how
    /// many records wait on the partitions this member holds (`held`; `None` when the
    /// database did not answer).
    async fn measure_lag(&self, held: &[(String, i32)]) -> Option<Lag> {
        let Ok(progress) = progress(&self.pool, &self.config.name).await else {
            return None;
        };
        let mut lag = 0;
        let mut waiting = 0;
        for topic in &self.config.topics {
            // Bounded, so that the loop goes back to polling however the log answers.
            let answer = match tokio::time::timeout(LAG_INTERVAL, self.log.end_offsets(topic)).await
            {
                Ok(Ok(ends)) => Ok(ends),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer in {} s", LAG_INTERVAL.as_secs())),
            };
            let ends = match answer {
                Ok(ends) => ends,
                Err(error) => {
                    debug!(
                        topic,
                        error, "the log did not tell the ends of its partitions"
                    );
                    return Some(Lag {
                        checkpoints: progress.positions,
                        waiting: None,
                    });
                }
            };
            for (partition, end) in ends {
                let next = progress
                    .positions
                    .iter()
                    .find(|p| &p.topic == topic && p.partition == partition)
                    .map_or(0, |p| p.next_offset);
                lag += (end - next).max(0);
                if held.iter().any(|(t, p)| t == topic && *p == partition) {
                    waiting += (end - next).max(0);
                }
            }
        }
        let name = self.config.name.clone();
        metrics::gauge!("consumer_lag_events", "consumer" => name.clone()).set(lag as f64);
        // Nothing waits: nothing is old (while records wait, each poll sets the age of
        // the oldest it took; reading the log here cost a client per partition and
        // stalled the loop).
        if lag == 0 {
            metrics::gauge!("consumer_oldest_unprocessed_seconds", "consumer" => name).set(0.0);
        }
        Some(Lag {
            checkpoints: progress.positions,
            waiting: Some(waiting),
        })
    }

    /// The events not applied before, recorded as applied (the caller's transaction
    /// applies them). A consumer that records applied versions knows them by their
    /// sequences ([`crate::consistency::unapplied`]); any other records each new event id
    /// (`processed_events`) and gets back those it had not seen — one round trip either
    /// way.
    async fn unapplied(
        &self,
        tx: &mut Conn,
        events: &[&CloudEvent],
    ) -> Result<std::collections::HashSet<uuid::Uuid>, sqlx::Error> {
        if self.track_versions {
            return crate::consistency::unapplied(tx, &self.config.name, events).await;
        }
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        crate::backend::insert_processed_ids(tx, &self.config.name, &ids).await
    }

    /// Applies a batch: what to commit to the log, or where to read again.
    async fn process(&self, records: Vec<LogRecord>) -> BatchOutcome {
        debug!(count = records.len(), "batch");
        // Once its transaction is open, a batch runs to its commit without giving way to
        // the scheduler's fairness budget: every awaited lock (the command bus's, cqrs-es's)
        // spends it, and a batch of a few hundred events spent it many times over, each
        // time waiting behind every ready task of the process (HTTP requests, the other
        // consumers) while holding its transaction — on SQLite, the database's one writer.
        // It still waits, and lets others run, whenever it awaits the database or the log.
        match tokio::task::unconstrained(self.apply_batch(&records)).await {
            Ok(()) => return BatchOutcome::Applied(next_positions(&records)),
            Err(Interrupted::Gaps(gaps)) => return self.rewind_for_gaps(&records, gaps).await,
            Err(Interrupted::Failed(e)) if e.unavailable || !self.database_answers().await => {
                return self.rewind_for_database(&records, &e);
            }
            Err(Interrupted::Failed(e)) => {
                debug!(error = %e, count = records.len(), "batch failed; applying record by record");
            }
        }
        for record in &records {
            match self.apply_with_retries(record).await {
                Ok(()) => {}
                Err(Interrupted::Gaps(gaps)) => return self.rewind_for_gaps(&records, gaps).await,
                Err(Interrupted::Failed(e)) => return self.rewind_for_database(&records, &e),
            }
        }
        BatchOutcome::Applied(next_positions(&records))
    }

    async fn apply_batch(&self, records: &[LogRecord]) -> Result<(), Interrupted> {
        let events = records
            .iter()
            .map(|r| {
                r.cloud_event()
                    .map_err(|e| HandlerError::permanent(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut tx = self.begin().await?;
        let round_trips = Backend::of(&tx).statements_cost_round_trips();
        if round_trips {
            // A failed batch is applied again record by record (`process`).
            crate::store::without_savepoints(&mut tx);
        }
        // Where statements cost round trips, a consumer that deduplicates by event id
        // learns its checkpoints, its fresh ids and the replay question in one.
        let opened = if !self.track_versions && round_trips {
            let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
            let opened =
                crate::backend::open_batch(&mut tx, &self.config.name, &ids, self.replays_imports)
                    .await?;
            if let Some(pending) = opened.replay_pending {
                self.replay_pending
                    .store(pending, std::sync::atomic::Ordering::Relaxed);
            }
            Some(opened)
        } else {
            if self.replays_imports {
                self.check_replay(&mut tx).await;
            }
            None
        };
        let (checkpoints, fresh) = match opened {
            Some(opened) => (opened.checkpoints, Some(opened.fresh)),
            None => (
                load_checkpoints(&mut tx, &self.config.name, records, self.track_versions).await?,
                None,
            ),
        };
        let gaps = self.gaps(&checkpoints, records).await;
        if !gaps.is_empty() {
            return Err(Interrupted::Gaps(gaps));
        }
        let ahead: Vec<bool> = records.iter().map(|r| !behind(&checkpoints, r)).collect();
        let candidates: Vec<&CloudEvent> = events
            .iter()
            .zip(&ahead)
            .filter(|(_, a)| **a)
            .map(|(e, _)| e)
            .collect();
        let mut fresh = match fresh {
            Some(fresh) => fresh,
            None => self.unapplied(&mut tx, &candidates).await?,
        };
        let mut applied = 0i64;
        let mut last_event_at: Option<DateTime<Utc>> = None;
        // On SQLite, statements cost no round trip (and reading JSON rows costs more than
        // the statements it saves): handlers go event by event there. So do a reaction's
        // batches while an import's events wait to be replayed (each event decides
        // whether it is one of them).
        let replay_pending = self
            .replay_pending
            .load(std::sync::atomic::Ordering::Relaxed);
        if self.handler.batches() && round_trips && !replay_pending {
            // `remove`: an id twice in one batch (a republished record) applies once.
            let batch: Vec<&CloudEvent> = events
                .iter()
                .zip(&ahead)
                .filter(|(event, ahead)| **ahead && fresh.remove(&event.id))
                .map(|(event, _)| event)
                .collect();
            let span = tracing::info_span!("apply_batch", consumer = %self.config.name, events = batch.len());
            self.handler
                .handle_batch(&mut tx, &batch)
                .instrument(span)
                .await?;
            fault::point(fault::CONSUMER_MID_BATCH);
            applied = batch.len() as i64;
            last_event_at = batch.iter().map(|e| e.time).max();
        } else {
            for (index, (record, event)) in records.iter().zip(&events).enumerate() {
                if index == records.len() / 2 && index > 0 {
                    fault::point(fault::CONSUMER_MID_BATCH);
                }
                if !ahead[index] || !fresh.remove(&event.id) {
                    continue;
                }
                self.handle(&mut tx, record, event).await?;
                applied += 1;
                last_event_at = last_event_at.max(Some(event.time));
            }
        }
        let duplicates = candidates.len() as i64 - applied;
        save_progress(
            &mut tx,
            &self.config.name,
            &next_positions(records),
            applied,
            last_event_at,
            None,
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("consumer_events_total", "consumer" => self.config.name.clone(), "outcome" => "applied").increment(applied as u64);
        if duplicates > 0 {
            metrics::counter!("consumer_events_total", "consumer" => self.config.name.clone(), "outcome" => "duplicate").increment(duplicates as u64);
        }
        Ok(())
    }

    async fn handle(
        &self,
        tx: &mut Conn,
        record: &LogRecord,
        event: &CloudEvent,
    ) -> Result<(), HandlerError> {
        let span = apply_span(&self.config.name, event);
        span.record("partition", record.partition);
        span.record("offset", record.offset);
        // An imported event is replayed: tables updated, no command issued.
        let replay = self
            .replay_pending
            .load(std::sync::atomic::Ordering::Relaxed)
            && sql::query("DELETE FROM replay_only WHERE consumer = $1 AND event_id = $2")
                .bind(&self.config.name)
                .bind(event.id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
        if replay {
            crate::command::replay(self.handler.handle(tx, event).instrument(span)).await?;
        } else {
            self.handler.handle(tx, event).instrument(span).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut Conn,
        checkpoints: &BTreeMap<(String, i32), i64>,
        record: &LogRecord,
        event: &CloudEvent,
    ) -> Result<Outcome, HandlerError> {
        if behind(checkpoints, record) {
            return Ok(Outcome::Behind);
        }
        if self.unapplied(tx, &[event]).await?.is_empty() {
            metrics::counter!("consumer_events_total", "consumer" => self.config.name.clone(), "outcome" => "duplicate").increment(1);
            return Ok(Outcome::Duplicate);
        }
        self.handle(tx, record, event).await?;
        Ok(Outcome::Applied)
    }

    /// One record in its own transaction, retried with backoff, then dead-lettered. A
    /// database that does not answer is no attempt: the caller reads the record again
    /// once it does.
    async fn apply_with_retries(&self, record: &LogRecord) -> Result<(), Interrupted> {
        let mut backoff = self.config.retry_backoff;
        let mut attempt = 0;
        let error = loop {
            attempt += 1;
            let result = match record.cloud_event() {
                Err(e) => Err(Interrupted::Failed(HandlerError::permanent(format!(
                    "not a Shop CloudEvent: {e}"
                )))),
                Ok(event) => self.apply_single(record, &event).await,
            };
            let error = match result {
                Ok(()) => return Ok(()),
                Err(Interrupted::Gaps(gaps)) => return Err(Interrupted::Gaps(gaps)),
                Err(Interrupted::Failed(e)) => e,
            };
            if error.unavailable || (!error.permanent && !self.database_answers().await) {
                return Err(Interrupted::Failed(HandlerError {
                    unavailable: true,
                    ..error
                }));
            }
            if error.permanent || attempt >= self.config.max_attempts {
                break error;
            }
            warn!(error = %error, attempt, topic = %record.topic, partition = record.partition, offset = record.offset, "event failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        };
        self.dead_letter(record, &error, attempt)
            .await
            .map_err(|e| Interrupted::Failed(e.into()))
    }

    async fn apply_single(
        &self,
        record: &LogRecord,
        event: &CloudEvent,
    ) -> Result<(), Interrupted> {
        let mut tx = self.begin().await?;
        let checkpoints = load_checkpoints(
            &mut tx,
            &self.config.name,
            std::slice::from_ref(record),
            self.track_versions,
        )
        .await?;
        let gaps = self.gaps(&checkpoints, std::slice::from_ref(record)).await;
        if !gaps.is_empty() {
            return Err(Interrupted::Gaps(gaps));
        }
        let applied = matches!(
            self.apply(&mut tx, &checkpoints, record, event).await?,
            Outcome::Applied
        );
        let positions = next_positions(std::slice::from_ref(record));
        save_progress(
            &mut tx,
            &self.config.name,
            &positions,
            applied as i64,
            applied.then_some(event.time),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        record: &LogRecord,
        error: &HandlerError,
        attempts: u32,
    ) -> Result<(), sqlx::Error> {
        error!(error = %error, topic = %record.topic, partition = record.partition, offset = record.offset, attempts, "dead-lettering event");
        let mut headers: Vec<(String, String)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        headers.extend([
            ("dlq_consumer".to_string(), self.config.name.clone()),
            ("dlq_error".to_string(), error.message.clone()),
            ("dlq_topic".to_string(), record.topic.clone()),
            ("dlq_partition".to_string(), record.partition.to_string()),
            ("dlq_offset".to_string(), record.offset.to_string()),
            ("dlq_attempts".to_string(), attempts.to_string()),
        ]);
        let dead = OutgoingRecord {
            topic: self.config.dead_letter_topic.clone(),
            key: record.key.clone().unwrap_or_default(),
            headers: headers.clone(),
            payload: record
                .payload
                .as_deref()
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
        };
        // The dead letter must not be lost: keep trying until the log takes it.
        while let Err(e) = self.log.publish(vec![dead.clone()]).await {
            warn!(error = %e, "cannot publish dead letter; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut tx = self.begin().await?;
        sql::query(
            "INSERT INTO dead_letters (consumer, topic, partition, \"offset\", event_id, event_type, error, attempts, headers, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(&self.config.name)
        .bind(&record.topic)
        .bind(record.partition)
        .bind(record.offset)
        .bind(header(shop_schemas::envelope::headers::ID))
        .bind(header(shop_schemas::envelope::headers::TYPE))
        .bind(&error.message)
        .bind(attempts as i32)
        .bind(serde_json::to_value(headers.iter().cloned().collect::<BTreeMap<_, _>>()).unwrap_or_default())
        .bind(record.payload.as_ref().map(|p| String::from_utf8_lossy(p).into_owned()))
        .execute(&mut tx)
        .await?;
        let positions = next_positions(std::slice::from_ref(record));
        save_progress(
            &mut tx,
            &self.config.name,
            &positions,
            0,
            None,
            Some(&error.message),
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("dead_letters_total", "consumer" => self.config.name.clone())
            .increment(1);
        Ok(())
    }
}

/// Commits the positions applied since the last commit to the log.
fn commit_to_log(subscription: &dyn Subscription, uncommitted: &mut BTreeMap<(String, i32), i64>) {
    let positions: Vec<Position> = std::mem::take(uncommitted)
        .into_iter()
        .map(|((topic, partition), next_offset)| Position {
            topic,
            partition,
            next_offset,
        })
        .collect();
    if let Err(e) = subscription.commit(&positions) {
        debug!(error = %e, "offset commit failed (the database checkpoint stands)");
    }
}

/// Whether the consumer's checkpoint is already past this record.
fn behind(checkpoints: &BTreeMap<(String, i32), i64>, record: &LogRecord) -> bool {
    checkpoints
        .get(&(record.topic.clone(), record.partition))
        .is_some_and(|next| record.offset < *next)
}

/// The next offset to read per partition after these records.
fn next_positions(records: &[LogRecord]) -> Vec<Position> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for r in records {
        let entry = next.entry((r.topic.clone(), r.partition)).or_insert(0);
        *entry = (*entry).max(r.offset + 1);
    }
    next.into_iter()
        .map(|((topic, partition), next_offset)| Position {
            topic,
            partition,
            next_offset,
        })
        .collect()
}
