//! How a consumer finds that it must read records again, and does: a checkpoint behind
//! the records read (lost commits), a database that does not answer, and the types the
//! runner passes between a batch and its loop.

use std::collections::BTreeMap;
use std::time::Duration;

use shop_log::{LogRecord, Position, StartFrom};
use shop_sql as sql;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{ConsumerRunner, HandlerError};

impl ConsumerRunner {
    /// The partitions this member applied further than its database's checkpoints now
    /// say: commits the database acknowledged and lost (found even when no record arrives
    /// to show it — an idle partition after a crash).
    pub(super) fn verify(
        &self,
        checkpoints: &[Position],
        read: &BTreeMap<(String, i32), i64>,
    ) -> Vec<Gap> {
        let from_beginning = self.config.start == StartFrom::Beginning;
        read.iter()
            .filter_map(|((topic, partition), next)| {
                let checkpoint = checkpoints
                    .iter()
                    .find(|p| &p.topic == topic && p.partition == *partition)
                    .map(|p| p.next_offset);
                let checkpoint = match checkpoint {
                    Some(c) => c,
                    None if from_beginning => 0,
                    None => return None,
                };
                (*next > checkpoint).then(|| Gap {
                    topic: topic.clone(),
                    partition: *partition,
                    checkpoint,
                    read_offset: *next,
                })
            })
            .collect()
    }

    /// The database failed under a batch: its partitions are read again from the batch's
    /// first records once the database answers (those applied meanwhile are behind their
    /// checkpoint by then, and skipped; a commit the crash took is a gap, found then).
    pub(super) fn rewind_for_database(
        &self,
        records: &[LogRecord],
        error: &HandlerError,
    ) -> BatchOutcome {
        warn!(error = %error, "database unavailable; the batch will be read again once it answers");
        BatchOutcome::Rewind {
            positions: first_positions(records),
            reason: RewindReason::DatabaseUnavailable,
        }
    }

    /// Some partition's checkpoint is behind the records read of it: commits the database
    /// acknowledged were lost (a crash of a server that committed without flushing), or
    /// the log's position ran ahead of the database's. The partitions are read again from
    /// the checkpoints, and the mismatch is recorded (`consumer_rewinds`, the
    /// `consumer_rewinds_total` metric, a warning) so that it is seen, not silent.
    pub(super) async fn rewind_for_gaps(
        &self,
        records: &[LogRecord],
        gaps: Vec<Gap>,
    ) -> BatchOutcome {
        let mut positions = first_positions(records);
        for position in &mut positions {
            if let Some(gap) = gaps
                .iter()
                .find(|g| g.topic == position.topic && g.partition == position.partition)
            {
                position.next_offset = gap.checkpoint;
            }
        }
        self.report_gaps(&gaps).await;
        BatchOutcome::Rewind {
            positions,
            reason: RewindReason::CheckpointGap,
        }
    }

    /// A warning per gap, and a row in `consumer_rewinds`.
    pub(super) async fn report_gaps(&self, gaps: &[Gap]) {
        for gap in gaps {
            warn!(
                topic = %gap.topic,
                partition = gap.partition,
                checkpoint = gap.checkpoint,
                read_offset = gap.read_offset,
                "checkpoint behind the records read (lost commits?): reading again from the checkpoint"
            );
        }
        if let Err(e) = self.record_gaps(gaps).await {
            warn!(error = %e, "cannot record the checkpoint gap");
        }
    }

    pub(super) async fn record_gaps(&self, gaps: &[Gap]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for gap in gaps {
            sql::query(
                "INSERT INTO consumer_rewinds (consumer, topic, partition, checkpoint, read_offset) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&self.config.name)
            .bind(&gap.topic)
            .bind(gap.partition)
            .bind(gap.checkpoint)
            .bind(gap.read_offset)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await
    }

    /// Whether the consumer's database answers a trivial query within two seconds.
    pub(super) async fn database_answers(&self) -> bool {
        matches!(
            tokio::time::timeout(
                Duration::from_secs(2),
                sql::query("SELECT 1").execute(&self.pool)
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// Waits, with a growing pause up to five seconds, until the database answers or
    /// the consumer is shut down.
    pub(super) async fn wait_for_database(&self, shutdown: &CancellationToken) {
        let mut pause = Duration::from_millis(100);
        let mut waited = false;
        while !shutdown.is_cancelled() && !self.database_answers().await {
            if !waited {
                warn!("waiting for the database");
                waited = true;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        if waited {
            info!("the database answers again; reading from the checkpoints");
        }
    }

    /// The partitions of `records` whose checkpoint is behind the first record read of
    /// them (see [`Self::rewind_for_gaps`]). A partition without a checkpoint starts at
    /// the beginning for a consumer that starts there; records the log no longer keeps
    /// cannot be read again, so a checkpoint older than the log's start is no gap when
    /// reading resumed at that start.
    pub(super) async fn gaps(
        &self,
        checkpoints: &BTreeMap<(String, i32), i64>,
        records: &[LogRecord],
    ) -> Vec<Gap> {
        let from_beginning = self.config.start == StartFrom::Beginning;
        let mut gaps = Vec::new();
        for first in first_positions(records) {
            let checkpoint = match checkpoints.get(&(first.topic.clone(), first.partition)) {
                Some(c) if *c > 0 || from_beginning => *c,
                None if from_beginning => 0,
                _ => continue,
            };
            if first.next_offset <= checkpoint {
                continue;
            }
            if let Ok(start) = self.log.start_offset(&first.topic, first.partition).await {
                if first.next_offset <= start {
                    continue;
                }
            }
            gaps.push(Gap {
                topic: first.topic,
                partition: first.partition,
                checkpoint,
                read_offset: first.next_offset,
            });
        }
        gaps
    }
}

/// What became of a batch.
pub(super) enum BatchOutcome {
    /// Applied (events that failed for good dead-lettered): the log may record these
    /// positions.
    Applied(Vec<Position>),
    /// Not (wholly) applied: its partitions are read again from these positions.
    Rewind {
        positions: Vec<Position>,
        reason: RewindReason,
    },
}

/// Why a consumer reads records again (`consumer_rewinds_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RewindReason {
    /// Its database did not answer.
    DatabaseUnavailable,
    /// Its checkpoint was behind the records read.
    CheckpointGap,
}

impl RewindReason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RewindReason::DatabaseUnavailable => "database_unavailable",
            RewindReason::CheckpointGap => "checkpoint_gap",
        }
    }
}

/// A partition whose checkpoint is behind the first record read of it.
#[derive(Debug, Clone)]
pub(super) struct Gap {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) checkpoint: i64,
    pub(super) read_offset: i64,
}

/// Why a batch (or a record) stopped before its commit.
pub(super) enum Interrupted {
    Failed(HandlerError),
    Gaps(Vec<Gap>),
}

impl From<HandlerError> for Interrupted {
    fn from(e: HandlerError) -> Self {
        Interrupted::Failed(e)
    }
}

impl From<sqlx::Error> for Interrupted {
    fn from(e: sqlx::Error) -> Self {
        Interrupted::Failed(e.into())
    }
}

/// The first offset read per partition of these records.
pub(super) fn first_positions(records: &[LogRecord]) -> Vec<Position> {
    let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for r in records {
        let entry = first
            .entry((r.topic.clone(), r.partition))
            .or_insert(r.offset);
        *entry = (*entry).min(r.offset);
    }
    first
        .into_iter()
        .map(|((topic, partition), next_offset)| Position {
            topic,
            partition,
            next_offset,
        })
        .collect()
}
