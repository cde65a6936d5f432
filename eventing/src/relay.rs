//! The outbox relay: publishes a service's committed events to its topic.
//!
//! One relay is active per service database. On PostgreSQL it holds an advisory lock on
//! a dedicated connection and does all its reads and deletes on that connection, so when
//! the connection (or the process) dies the lock is released and a standby takes over;
//! on SQLite (one process owns the file) an in-process lock does the same.
//! It reads unpublished events in position order in batches, produces them as CloudEvents
//! records (key = aggregate id) and deletes their outbox rows only after every delivery
//! report is in. A crash between the two republishes the batch: consumers deduplicate by
//! event id. It wakes on `NOTIFY outbox` (on SQLite, an in-process wake-up at each
//! append's commit) and polls as a fallback.

use std::sync::Arc;
use std::time::Duration;

use shop_schemas::Service;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::backend;
use crate::fault;
use crate::store::{StoredEvent, OUTBOX_CHANNEL};
use shop_log::{EventLog, OutgoingRecord};
use shop_sql::signal::{CommitSignal, LocalListener};
use shop_sql::{self as sql, Conn, LitePool, Pool};

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub service: Service,
    pub topic_prefix: String,
    /// Events per produce batch.
    pub batch_size: i64,
    /// How often to look for work when no notification arrives.
    pub poll_interval: Duration,
}

/// The outbox relay of one service.
pub struct Relay {
    pool: Pool,
    log: Arc<dyn EventLog>,
    config: RelayConfig,
}

impl Relay {
    pub fn new(pool: impl Into<Pool>, log: Arc<dyn EventLog>, config: RelayConfig) -> Self {
        Relay {
            pool: pool.into(),
            log,
            config,
        }
    }

    /// Runs until `shutdown`: waits to become the active relay, then publishes.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!("relay", service = %self.config.service);
        async move {
            let stall = crate::fault::RELAY_STALL;
            if crate::fault::armed(stall)
                || crate::fault::armed(&format!("{stall}:{}", self.config.service))
            {
                warn!("fault injection: relay stalled, publishing nothing");
                shutdown.cancelled().await;
                return;
            }
            while !shutdown.is_cancelled() {
                let led = match &self.pool {
                    Pool::Postgres(pool) => self.lead_postgres(pool, &shutdown).await,
                    Pool::Sqlite(lite) => self.lead_sqlite(lite, &shutdown).await,
                };
                match led {
                    Ok(()) => {}
                    Err(e) => {
                        warn!(error = %e, "relay lost its connection; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    fn lock_key(&self) -> i64 {
        // A stable key per service: "the relay of <service>".
        7_242_100
            + Service::ALL
                .iter()
                .position(|s| *s == self.config.service)
                .unwrap_or(0) as i64
    }

    /// Holds the advisory lock and publishes until shutdown or a connection failure.
    async fn lead_postgres(
        &self,
        pool: &PgPool,
        shutdown: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        let mut conn = Conn::detached(pool.acquire().await?.detach());
        loop {
            let leader: bool = sql::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(self.lock_key())
                .fetch_one(&mut conn)
                .await?;
            if leader {
                break;
            }
            debug!("another relay is active; standing by");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        info!("relay active");
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(OUTBOX_CHANNEL).await?;
        // Appends in this process wake it directly, without NOTIFY.
        let local = LocalListener::register(pool);
        let topic = self.config.service.topic(&self.config.topic_prefix);
        let mut looks = Looks::new();
        loop {
            // Registered before looking, so a commit in between is not missed.
            let woken = local.signal().notified();
            if looks.due(local.signal()) {
                // Until a batch is not full: what is committed meanwhile wakes it again.
                self.drain(&mut conn, &topic).await?;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Closing the lock's connection releases it: a standby takes over at
                    // its next try (within a second).
                    conn.close().await;
                    info!("relay stopped; its lock is released");
                    return Ok(());
                }
                notification = listener.recv() => { notification?; looks.force(); }
                _ = woken => {}
                _ = tokio::time::sleep(self.config.poll_interval) => looks.force(),
            }
        }
    }

    /// Holds the in-process lock and publishes until shutdown.
    async fn lead_sqlite(
        &self,
        lite: &LitePool,
        shutdown: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        let _leader = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            guard = lite.advisory_lock.lock() => guard,
        };
        info!("relay active");
        let topic = self.config.service.topic(&self.config.topic_prefix);
        let mut looks = Looks::new();
        loop {
            // Registered before looking, so a commit in between is not missed.
            let woken = lite.signal.notified();
            if looks.due(&lite.signal) {
                let mut conn = self.pool.acquire().await?;
                self.drain(&mut conn, &topic).await?;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = woken => {}
                _ = tokio::time::sleep(self.config.poll_interval) => looks.force(),
            }
        }
    }

    /// Publishes what waits in the outbox, batch by batch, until a batch is not full.
    /// While a batch is produced, the one before it (acknowledged) is removed and the
    /// next one is read from the database; it is produced only once the one before is
    /// acknowledged, so records keep their order and a batch that fails is produced again
    /// before anything after it.
    async fn drain(&self, conn: &mut Conn, topic: &str) -> Result<(), sqlx::Error> {
        let size = self.config.batch_size;
        let mut batch = self.batch(backend::outbox_batch(conn, 0, size, &[]).await?.rows, topic)?;
        // The outbox backlog: the batch when it is not full, else a count, less what is
        // published as the drain goes.
        let mut backlog = if batch.rows.len() < size as usize {
            batch.rows.len() as i64
        } else {
            sql::query_scalar::<i64>("SELECT count(*) FROM outbox")
                .fetch_one(&mut *conn)
                .await?
        };
        let gauge =
            metrics::gauge!("relay_backlog_events", "service" => self.config.service.name());
        gauge.set(backlog as f64);
        // Produced and acknowledged, not yet removed from the outbox.
        let mut published: Option<Vec<i64>> = None;
        while !batch.rows.is_empty() {
            let Batch {
                rows,
                positions,
                records,
            } = batch;
            let full = rows.len() >= size as usize;
            let last = positions.last().copied().unwrap_or(0);
            let span = tracing::info_span!("publish", topic, events = rows.len());
            let sending = self.log.publish(records).instrument(span.clone());
            // Meanwhile: the batch before goes from the outbox, and the next is read and
            // made into records.
            let reading = async {
                let done = published.take().unwrap_or_default();
                if full {
                    let next = backend::outbox_batch(conn, last, size, &done).await?;
                    Ok(Some((self.batch(next.rows, topic)?, next.behind)))
                } else {
                    if !done.is_empty() {
                        backend::remove_from_outbox(conn, &done).await?;
                    }
                    Ok::<_, sqlx::Error>(None)
                }
            };
            let (next, mut sent) = tokio::join!(reading, sending);
            while let Err(e) = sent {
                // Nothing is marked; the whole batch is produced again.
                warn!(error = %e, "publish failed; retrying the batch");
                tokio::time::sleep(Duration::from_millis(500)).await;
                // Keep the lock connection alive (and notice if it died).
                sql::query("SELECT 1").execute(&mut *conn).await?;
                let (_, records) = self.records(&rows, topic)?;
                sent = self.log.publish(records).instrument(span.clone()).await;
            }
            fault::point(fault::RELAY_AFTER_PRODUCE);
            debug!(count = rows.len(), "published");
            backlog = (backlog - rows.len() as i64).max(0);
            gauge.set(backlog as f64);
            let batch_len = positions.len() as i64;
            published = Some(positions);
            batch = match next? {
                None => Batch::default(),
                // Besides this batch, an event at or below its positions waited when the
                // next was read: it committed after this batch was read, and a later event
                // of its aggregate may be in the next. It goes first.
                Some((_, behind)) if behind > batch_len => {
                    if let Some(done) = published.take() {
                        backend::remove_from_outbox(conn, &done).await?;
                    }
                    self.batch(backend::outbox_batch(conn, 0, size, &[]).await?.rows, topic)?
                }
                Some((next, _)) => next,
            };
        }
        if let Some(done) = published {
            backend::remove_from_outbox(conn, &done).await?;
        }
        Ok(())
    }

    /// The batch of these rows.
    fn batch(&self, rows: Vec<sql::Row>, topic: &str) -> Result<Batch, sqlx::Error> {
        let (positions, records) = self.records(&rows, topic)?;
        Ok(Batch {
            rows,
            positions,
            records,
        })
    }

    /// The rows' positions and records. An event's data goes out as the JSON text the
    /// store holds, not parsed and written again.
    fn records(
        &self,
        rows: &[sql::Row],
        topic: &str,
    ) -> Result<(Vec<i64>, Vec<OutgoingRecord>), sqlx::Error> {
        let mut positions = Vec::with_capacity(rows.len());
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let data: String = row.get("data")?;
            let event = StoredEvent::from_row_with_data(row, serde_json::Value::Null)?;
            positions.push(event.position);
            records.push(OutgoingRecord::with_data_json(
                topic,
                &event.to_cloud_event(self.config.service),
                data.into_bytes(),
            ));
        }
        Ok((positions, records))
    }
}

/// Events the relay read from its outbox, as rows and as records.
#[derive(Default)]
struct Batch {
    /// Kept to make the records again if producing them fails.
    rows: Vec<sql::Row>,
    positions: Vec<i64>,
    records: Vec<OutgoingRecord>,
}

/// How many events wait in a service's outbox (for metrics and status).
///
/// # Errors
/// The database fails.
pub async fn backlog(pool: &Pool) -> Result<i64, sqlx::Error> {
    sql::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
}

/// When a relay looks at its outbox: after a commit it has not looked after yet.
struct Looks {
    /// [`CommitSignal::commits`] when the relay last looked; `None`: look next time.
    seen: Option<u64>,
}

impl Looks {
    fn new() -> Self {
        Looks { seen: None }
    }

    /// Whether to look now: a commit was counted since the last look (or a look is
    /// due anyway). Call it after registering for the next wake-up, so that a commit
    /// counted after this check wakes the relay again.
    fn due(&mut self, signal: &CommitSignal) -> bool {
        let now = signal.commits();
        let due = self.seen != Some(now);
        self.seen = Some(now);
        due
    }

    /// Look at the next [`Looks::due`] whatever the count (a timer, a NOTIFY from
    /// another process, a full batch).
    fn force(&mut self) {
        self.seen = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay looks at its outbox first, after each counted commit, and when forced
    /// (timer, NOTIFY, full batch); a wake-up with no commit since its last look (a
    /// stored permit of a commit it already read) is not a look.
    #[test]
    fn a_relay_looks_only_after_a_commit_it_has_not_looked_after() {
        let signal = CommitSignal::default();
        let mut looks = Looks::new();
        assert!(looks.due(&signal), "the first look");
        assert!(!looks.due(&signal), "nothing committed since");
        signal.committed();
        signal.committed();
        assert!(looks.due(&signal), "after commits");
        assert!(!looks.due(&signal), "those commits were looked after");
        looks.force();
        assert!(looks.due(&signal), "forced");
    }

    /// A commit counted after the check wakes a waiter registered before it.
    #[tokio::test]
    async fn a_commit_after_the_check_wakes_the_relay() {
        let signal = Arc::new(CommitSignal::default());
        let mut looks = Looks::new();
        let woken = signal.notified();
        assert!(looks.due(&signal));
        let committer = signal.clone();
        tokio::spawn(async move { committer.committed() });
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("woken by the commit");
        assert!(looks.due(&signal), "and a look is due");
    }
}
