//! The one function that writes an append ([`write_batch`]: events with their outbox
//! rows and the relay's wake-up, the hook, the snapshots) and the transaction of its own
//! most appends get ([`commit_batch`]). Every route of an append ends here: alone or in
//! a group through [`commit_batch`] (`super::append`, `super::group`), on the store's
//! kept connection (`super::kept`), under a savepoint in a caller's transaction
//! (`super::tx`).

use chrono::{SubsecRound, Utc};
use cqrs_es::persist::{PersistenceError, SerializedEvent};
use serde_json::Value;

use shop_sql::{self as sql, Conn, Pool};

use super::event::StoredEvent;
use super::hook::{AppendHook, HookError, InlineHook};
use crate::backend::{self, Backend};

/// A snapshot written with an append: aggregate id, state, the last sequence it includes.
pub(super) type Snapshot = (String, Value, usize);

/// How an append runs its hook: not at all, inside the append statement, or as
/// statements of its own after it.
#[derive(Clone, Copy)]
pub(super) enum HookWork<'a> {
    None,
    Inline(&'a InlineHook, &'a dyn AppendHook),
    Statements(&'a dyn AppendHook),
}

impl<'a> HookWork<'a> {
    pub(super) fn of(
        hook: Option<&'a dyn AppendHook>,
        backend: Backend,
        events: &[SerializedEvent],
    ) -> Self {
        let Some(hook) = hook else {
            return HookWork::None;
        };
        let touched = || {
            events
                .iter()
                .map(|e| e.event_type.as_str())
                .filter(|t| hook.touches(t))
        };
        if touched().next().is_none() {
            return HookWork::None;
        }
        backend
            .inline_hooks(hook)
            .iter()
            .find(|inline| touched().all(|t| inline.event_types.contains(&t)))
            .map_or(HookWork::Statements(hook), |inline| {
                HookWork::Inline(inline, hook)
            })
    }
}

/// Where an append failed: before its commit (nothing stored), or at it (unknown).
pub(super) enum AppendFailure {
    Before(PersistenceError),
    AtCommit(PersistenceError),
}

impl AppendFailure {
    pub(super) fn into_error(self) -> PersistenceError {
        match self {
            AppendFailure::Before(e) | AppendFailure::AtCommit(e) => e,
        }
    }
}

pub(super) fn connection_error(e: sqlx::Error) -> PersistenceError {
    PersistenceError::ConnectionError(Box::new(e))
}

/// Whether an append failed because its connection was gone (closed by the server, or
/// the socket failed), not because of anything the database said.
pub(super) fn is_lost_connection(e: &PersistenceError) -> bool {
    match e {
        PersistenceError::ConnectionError(e) => match e.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Io(_)) => true,
            // The server's goodbye: shut down or terminated (57P0x), connection
            // exceptions (08xxx).
            Some(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
            _ => false,
        },
        _ => false,
    }
}

/// Appends in a transaction of its own; where the backend can
/// ([`Backend::appends_in_one_statement`]), an append without hook statements or
/// snapshot is one statement on its own (events, outbox rows and the relay's wake-up).
#[tracing::instrument(level = "debug", skip_all, fields(events = events.len()))]
pub(super) async fn commit_batch(
    pool: &Pool,
    hook: Option<&dyn AppendHook>,
    events: &[SerializedEvent],
    snapshots: &[Snapshot],
) -> Result<(), AppendFailure> {
    let backend = Backend::of_pool(pool);
    let work = HookWork::of(hook, backend, events);
    let single = backend.appends_in_one_statement()
        && !matches!(work, HookWork::Statements(_))
        && snapshots.is_empty();
    let mut tx = if single {
        pool.acquire().await
    } else {
        pool.begin().await
    }
    .map_err(|e| AppendFailure::Before(connection_error(e)))?;
    let appended = write_batch(&mut tx, work, events, snapshots)
        .await
        .map_err(AppendFailure::Before)?;
    tx.commit()
        .await
        .map_err(|e| AppendFailure::AtCommit(connection_error(e)))?;
    metrics::counter!("events_appended_total").increment(appended);
    Ok(())
}

/// The statements of an append on `tx` (a transaction, or a connection when they are
/// one): events, outbox rows and the relay's wake-up (the backend's
/// [`backend::insert_events`]), the hook, the snapshots. Returns how many events it
/// appended.
#[tracing::instrument(name = "append", skip_all, fields(aggregate_id = %events[0].aggregate_id, events = events.len()))]
pub(super) async fn write_batch(
    tx: &mut Conn,
    work: HookWork<'_>,
    events: &[SerializedEvent],
    snapshots: &[Snapshot],
) -> Result<u64, PersistenceError> {
    let now = Utc::now().trunc_subsecs(6);
    let mut stored = events
        .iter()
        .map(|event| StoredEvent::from_serialized(event, now))
        .collect::<Result<Vec<_>, _>>()?;
    let inline = match work {
        HookWork::Inline(inline, _) => Some(inline),
        _ => None,
    };
    let lost_race = |e: sqlx::Error| {
        if sql::is_unique_violation(&e, "events_aggregate_sequence", "events") {
            PersistenceError::OptimisticLockError
        } else if inline.is_some() && sql::is_check_violation(&e) {
            PersistenceError::UnknownError(Box::new(HookError::Refused(e.to_string())))
        } else {
            connection_error(e)
        }
    };
    backend::insert_events(tx, &mut stored, events, inline, &lost_race).await?;
    match work {
        HookWork::None => {}
        HookWork::Inline(_, hook) => hook.appended(&stored),
        HookWork::Statements(hook) => {
            hook.on_append(tx, &stored).await.map_err(|e| match e {
                HookError::Sql(e) => connection_error(e),
                taken => PersistenceError::UnknownError(Box::new(taken)),
            })?;
            hook.appended(&stored);
        }
    }
    for (aggregate_id, payload, last_sequence) in snapshots {
        let Some(of) = events.iter().find(|e| e.aggregate_id == *aggregate_id) else {
            continue;
        };
        sql::query(
            "INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, last_sequence, payload) VALUES ($1, $2, $3, $4)
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence, payload = EXCLUDED.payload, taken_at = CURRENT_TIMESTAMP",
        )
        .bind(&of.aggregate_type)
        .bind(aggregate_id)
        .bind(*last_sequence as i64)
        .bind(payload.clone())
        .execute(&mut *tx)
        .await
        .map_err(connection_error)?;
    }
    Ok(stored.len() as u64)
}
