//! The connection an event store keeps between single-statement appends on
//! PostgreSQL, and the append route that uses it.

use std::time::{Duration, Instant};

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use sqlx::{PgConnection, PgPool};

use shop_sql::{self as sql, Conn, Pool};

use super::hook::AppendHook;
use super::write::{
    commit_batch, connection_error, is_lost_connection, write_batch, AppendFailure, HookWork,
};

/// A connection an event store keeps between single-statement appends, so they skip
/// the pool's check-out (a round trip to test the connection) and its check-in (another,
/// in the background) — half of the round trips of a restock. One append uses it at a
/// time; another meanwhile goes through the pool. It is detached from the pool (one
/// connection beyond the pool's size per store), so closing the pool never waits for it;
/// it closes with the store.
#[derive(Default)]
struct Kept {
    /// The connection and when its last append ended.
    idle: Option<(PgConnection, Instant)>,
    busy: bool,
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let (Some((conn, _)), Ok(runtime)) =
            (self.idle.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(sqlx::Connection::close(conn));
        }
    }
}

/// A kept connection idle longer than this is tested before it is used, as the pool
/// tests every connection it hands out (a server restart closes it).
const KEPT_TEST_AFTER: Duration = Duration::from_secs(1);

/// The [`Kept`] connection taken for one append; the append hands it back with
/// [`Borrowed::keep`] (after success or the database's refusal), or drops it (a lost
/// connection, a cancelled append), after which the next append opens a new one.
pub(super) struct Borrowed<'a> {
    kept: &'a std::sync::Mutex<Kept>,
}

impl Borrowed<'_> {
    /// Hands the connection back; dropping `self` then frees the slot.
    fn keep(self, conn: PgConnection) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.idle = Some((conn, Instant::now()));
        }
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.busy = false;
        }
    }
}

/// The idle kept connection a borrow finds, and when its last append ended.
pub(super) type Idle = Option<(PgConnection, Instant)>;

/// A [`Kept`] connection slot of a store and the pool it comes from (PostgreSQL, where
/// an append is a round trip to a server; SQLite has none to save).
pub(super) struct KeptConnection {
    pool: PgPool,
    kept: std::sync::Mutex<Kept>,
}

impl KeptConnection {
    /// The slot for a store over `pool`: `None` where no connection is worth keeping.
    pub(super) fn for_pool(pool: &Pool) -> Option<Self> {
        pool.as_postgres().map(|pool| KeptConnection {
            pool: pool.clone(),
            kept: std::sync::Mutex::new(Kept::default()),
        })
    }

    /// The kept connection (`None` inside when there is none yet), unless another append
    /// is using it.
    pub(super) fn borrow(&self) -> Option<(Borrowed<'_>, Idle)> {
        let mut kept = self.kept.lock().ok()?;
        if kept.busy {
            return None;
        }
        kept.busy = true;
        let idle = kept.idle.take();
        Some((Borrowed { kept: &self.kept }, idle))
    }

    /// A single-statement append on the kept connection (opened from the pool when there
    /// is none, tested when idle a while), kept again once it succeeded.
    #[tracing::instrument(name = "append_on_kept", level = "debug", skip_all)]
    pub(super) async fn append(
        &self,
        pool: &Pool,
        hook: Option<&dyn AppendHook>,
        borrowed: Borrowed<'_>,
        idle: Idle,
        work: HookWork<'_>,
        events: &[SerializedEvent],
    ) -> Result<(), PersistenceError> {
        let tested = match idle {
            Some((mut conn, since)) if since.elapsed() >= KEPT_TEST_AFTER => {
                sqlx::Connection::ping(&mut conn).await.ok().map(|()| conn)
            }
            Some((conn, _)) => Some(conn),
            None => None,
        };
        let (conn, was_kept) = match tested {
            Some(conn) => (conn, true),
            None => (
                self.pool
                    .acquire()
                    .await
                    .map_err(connection_error)?
                    .detach(),
                false,
            ),
        };
        let mut conn = Conn::kept(conn, &self.pool);
        let appended = match write_batch(&mut conn, work, events, &[]).await {
            Ok(appended) => appended,
            // A kept connection the server closed since its last append (a restart within
            // [`KEPT_TEST_AFTER`]): the pool would have tested and replaced it. When none
            // of the append is stored, it is written as the pool would have written it;
            // when it is (it cannot be told whose), the failure stands, as for any
            // connection lost mid-statement.
            Err(e) if was_kept && is_lost_connection(&e) => {
                drop(conn);
                drop(borrowed);
                let first = &events[0];
                let stored: bool = sql::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3)",
                )
                .bind(&first.aggregate_type)
                .bind(&first.aggregate_id)
                .bind(first.sequence as i64)
                .fetch_one(pool)
                .await
                .map_err(connection_error)?;
                if stored {
                    return Err(e);
                }
                return commit_batch(pool, hook, events, &[])
                    .await
                    .map_err(AppendFailure::into_error);
            }
            // The database's answer (a lost race, a refusal): the connection is sound.
            Err(e) => {
                if !is_lost_connection(&e) {
                    if let Some(conn) = conn.into_kept() {
                        borrowed.keep(conn);
                    }
                }
                return Err(e);
            }
        };
        if let Some(conn) = conn.commit_keeping().await.map_err(connection_error)? {
            borrowed.keep(conn);
        }
        metrics::counter!("events_appended_total").increment(appended);
        Ok(())
    }
}
