//! The event store inside a transaction someone else owns ([`TxEventStore`]): its
//! appends under a savepoint, and the aggregate states its appends left uncommitted.

use std::sync::Arc;

use cqrs_es::persist::{PersistenceError, SerializedEvent};

use shop_sql::{self as sql, Conn};

use super::hook::AppendHook;
use super::write::{connection_error, write_batch, HookWork, Snapshot};
use crate::backend::Backend;

/// The event store inside a transaction someone else owns — a reaction's, whose dedup
/// record and checkpoint commit in the same transaction. Loads see the transaction's own
/// writes; each append is a savepoint, so a lost concurrency race rolls back only itself.
pub struct TxEventStore<'c> {
    pub(super) conn: tokio::sync::Mutex<&'c mut Conn>,
    hook: Option<Arc<dyn AppendHook>>,
}

impl<'c> TxEventStore<'c> {
    pub fn new(conn: &'c mut Conn, hook: Option<Arc<dyn AppendHook>>) -> Self {
        TxEventStore {
            conn: tokio::sync::Mutex::new(conn),
            hook,
        }
    }
}

/// Aggregate states appended in a transaction and not committed yet, by aggregate type
/// and id: a later command of the same transaction starts from them. Kept with the
/// transaction's connection ([`Conn::transaction_local`]), so they go with it.
#[derive(Default)]
struct UncommittedStates(std::collections::HashMap<String, (Box<dyn std::any::Any + Send>, usize)>);

impl TxEventStore<'_> {
    /// Runs `work` once the owner's transaction commits ([`Conn::after_commit`]).
    pub(crate) async fn after_commit(&self, work: impl FnOnce() + Send + 'static) {
        self.conn.lock().await.after_commit(work);
    }

    /// The state and sequence an append of this transaction left for `key` (aggregate
    /// type and id), if any.
    pub(crate) async fn uncommitted_state<T: Clone + 'static>(
        &self,
        key: &str,
    ) -> Option<(T, usize)> {
        let conn = self.conn.lock().await;
        let (state, sequence) = conn
            .transaction_local_ref::<UncommittedStates>()?
            .0
            .get(key)?;
        Some((state.downcast_ref::<T>()?.clone(), *sequence))
    }

    /// Records the state an append of this transaction produced (`Some`), or forgets it
    /// (`None`: a conflict showed it stale). Outside a transaction there is nothing to
    /// remember: the append is committed.
    pub(crate) async fn set_uncommitted_state<T: Send + 'static>(
        &self,
        key: String,
        state: Option<(T, usize)>,
    ) {
        let mut conn = self.conn.lock().await;
        let in_transaction = conn.in_transaction();
        let states = &mut conn.transaction_local::<UncommittedStates>().0;
        match state {
            Some((state, sequence)) if in_transaction => {
                states.insert(key, (Box::new(state), sequence));
            }
            _ => {
                states.remove(&key);
            }
        }
    }

    /// The append of cqrs-es's `persist`: in the owner's transaction, under a savepoint.
    pub(super) async fn append(
        &self,
        events: &[SerializedEvent],
        snapshot: Option<Snapshot>,
    ) -> Result<(), PersistenceError> {
        let mut conn = self.conn.lock().await;
        append_under_savepoint(&mut conn, self.hook.as_deref(), events, snapshot).await
    }
}

/// Marks a transaction that is retried as a whole when it fails ([`without_savepoints`]):
/// present or not.
#[derive(Default)]
struct RetriedWhole;

/// Appends in this transaction take no savepoint: its owner retries it as a whole when
/// it fails (the consumer runner's batch on PostgreSQL, applied again record by record,
/// each record's appends under savepoints). A lost race or a hook's refusal then aborts
/// the transaction rather than one append. That is rare (another writer of the same
/// aggregate, a stale cached state, a stock count the batch misjudged), while the
/// savepoint's `SAVEPOINT` and `RELEASE` cost two round trips per command, every time:
/// ten per order on the saga's path.
pub(crate) fn without_savepoints(tx: &mut Conn) {
    tx.transaction_local::<RetriedWhole>();
}

/// Appends inside the caller's transaction (a reaction's) under a savepoint: a lost race
/// rolls back only this append and leaves the caller's transaction usable. In a
/// transaction retried as a whole ([`without_savepoints`]), without one.
#[tracing::instrument(level = "debug", skip_all, fields(events = events.len()))]
async fn append_under_savepoint(
    conn: &mut Conn,
    hook: Option<&dyn AppendHook>,
    events: &[SerializedEvent],
    snapshot: Option<Snapshot>,
) -> Result<(), PersistenceError> {
    let snapshots: Vec<Snapshot> = snapshot.into_iter().collect();
    let savepoint = conn.transaction_local_ref::<RetriedWhole>().is_none();
    let run = |statement: &'static str| sql::query(statement);
    if savepoint {
        run("SAVEPOINT append")
            .execute(&mut *conn)
            .await
            .map_err(connection_error)?;
    }
    let work = HookWork::of(hook, Backend::of(conn), events);
    match write_batch(conn, work, events, &snapshots).await {
        Ok(appended) => {
            if savepoint {
                run("RELEASE SAVEPOINT append")
                    .execute(&mut *conn)
                    .await
                    .map_err(connection_error)?;
            }
            metrics::counter!("events_appended_total").increment(appended);
            Ok(())
        }
        Err(e) if savepoint => {
            run("ROLLBACK TO SAVEPOINT append")
                .execute(&mut *conn)
                .await
                .map_err(connection_error)?;
            run("RELEASE SAVEPOINT append")
                .execute(&mut *conn)
                .await
                .map_err(connection_error)?;
            Err(e)
        }
        // The transaction is aborted: no retry can run in it (the command bus retries a
        // lost race), so the whole transaction goes.
        Err(PersistenceError::OptimisticLockError) => Err(PersistenceError::UnknownError(
            "lost a concurrency race in a transaction without savepoints; it is retried as a whole"
                .into(),
        )),
        Err(e) => Err(e),
    }
}
