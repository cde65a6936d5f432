//! The append's one entry ([`EventStore::append`], cqrs-es's `persist`), which picks
//! the route — alone (on the kept connection, `super::kept`, or in a transaction of its
//! own) or in the next group (`super::group`) — and the import of exported events. The
//! writing itself is `super::write`'s.

use cqrs_es::persist::{PersistenceError, SerializedEvent};

use shop_sql as sql;

use super::event::StoredEvent;
use super::group::{InFlight, Pending};
use super::write::{commit_batch, AppendFailure, HookWork, Snapshot};
use super::EventStore;
use crate::backend::Backend;

impl EventStore {
    /// The append of cqrs-es's `persist`. Alone, an append is written at once (no
    /// hand-over to the writer task); while others are in flight it joins the next
    /// group ([`super::group`]).
    #[tracing::instrument(level = "debug", skip_all, fields(events = events.len()))]
    pub(super) async fn append(
        &self,
        events: &[SerializedEvent],
        snapshot: Option<Snapshot>,
    ) -> Result<(), PersistenceError> {
        let group = self.group_commit();
        let in_flight = InFlight::enter(&group.in_flight);
        if in_flight.others == 0 {
            return self.append_alone(events, snapshot).await;
        }
        let (done, outcome) = tokio::sync::oneshot::channel();
        let pending = Pending {
            events: events.to_vec(),
            snapshot,
            done,
        };
        let stopped =
            || PersistenceError::ConnectionError("the group commit writer stopped".into());
        group.queue.send(pending).map_err(|_| stopped())?;
        outcome.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// An append with none other in flight: on the kept connection when it is one
    /// statement and the store keeps one, else in a transaction of its own.
    #[tracing::instrument(level = "debug", skip_all, fields(events = events.len()))]
    async fn append_alone(
        &self,
        events: &[SerializedEvent],
        snapshot: Option<Snapshot>,
    ) -> Result<(), PersistenceError> {
        let snapshots: Vec<Snapshot> = snapshot.into_iter().collect();
        if let Some(kept) = &self.kept {
            let work = HookWork::of(self.hook.as_deref(), Backend::of_pool(&self.pool), events);
            if !matches!(work, HookWork::Statements(_)) && snapshots.is_empty() {
                if let Some((borrowed, idle)) = kept.borrow() {
                    return kept
                        .append(
                            &self.pool,
                            self.hook.as_deref(),
                            borrowed,
                            idle,
                            work,
                            events,
                        )
                        .await;
                }
            }
        }
        commit_batch(&self.pool, self.hook.as_deref(), events, &snapshots)
            .await
            .map_err(AppendFailure::into_error)
    }

    /// Writes events exported from another instance (`shop import`) as they were — ids,
    /// sequences, times, metadata — in one transaction, through the outbox (the relay
    /// publishes them) and the append hook (the service's own tables follow).
    ///
    /// Not through `write_batch`: that one gives new events their id and time and
    /// inserts a batch in sequence order, while an import keeps ids and times and
    /// inserts in the order it is given (the exporting store's positions).
    ///
    /// # Errors
    /// The database fails, an event is already there, or the hook refuses.
    #[tracing::instrument(level = "debug", skip_all, fields(events = events.len()))]
    pub async fn import(
        &self,
        events: &[StoredEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut tx = self.pool.begin().await?;
        let mut stored = Vec::with_capacity(events.len());
        for event in events {
            let position: i64 = sql::query_scalar(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, data, metadata, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING position",
            )
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(event.sequence)
            .bind(event.event_id)
            .bind(&event.event_type)
            .bind(&event.event_version)
            .bind(event.data.clone())
            .bind(serde_json::to_value(event.metadata.to_map())?)
            .bind(event.recorded_at)
            .fetch_one(&mut tx)
            .await?;
            sql::query("INSERT INTO outbox (position) VALUES ($1)")
                .bind(position)
                .execute(&mut tx)
                .await?;
            stored.push(StoredEvent {
                position,
                ..event.clone()
            });
        }
        if let Some(hook) = &self.hook {
            hook.on_append(&mut tx, &stored).await?;
        }
        tx.commit().await?;
        metrics::counter!("events_appended_total").increment(stored.len() as u64);
        Ok(())
    }
}
