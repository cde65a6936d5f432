//! A service's transactional reaction to its own appends ([`AppendHook`]).

use futures::future::BoxFuture;

use shop_sql::Conn;

use super::event::StoredEvent;

/// A service's private, transactional reaction to its own appends (unique keys, lookup
/// tables). It runs inside the append transaction: its failure aborts the append.
pub trait AppendHook: Send + Sync {
    fn on_append<'a>(
        &'a self,
        tx: &'a mut Conn,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), HookError>>;

    /// Called once an append's events are written, with its hook work done (inline or
    /// by [`AppendHook::on_append`]), before the transaction commits: for what the
    /// process itself keeps, such as metrics. The append may still roll back.
    fn appended(&self, _events: &[StoredEvent]) {}

    /// Whether events of this type need the hook. An append none of whose events does
    /// (and that writes no snapshot) is a single statement, outside any transaction.
    fn touches(&self, _event_type: &str) -> bool {
        true
    }

    /// The hook's work as part of the append statement itself (PostgreSQL): the first
    /// of these whose [`InlineHook::event_types`] hold every hooked event of an append
    /// runs in its statement, so the append is one statement, outside any transaction
    /// when it writes no snapshot. The narrower forms go first (they plan and run
    /// cheaper).
    fn inline_postgres(&self) -> &[InlineHook] {
        &[]
    }
}

/// An [`AppendHook`]'s work written as a data-modifying CTE of the append statement.
pub struct InlineHook {
    /// `name AS (…)`, over `appended` (the new events' `event_type` and `data`). A
    /// constraint it violates aborts the append; a `CHECK` violation is the hook's
    /// refusal ([`HookError::Refused`]). Written once (a hook's configuration may be
    /// part of it), so that the statement's text, and its prepared form, stay the same.
    pub cte: std::borrow::Cow<'static, str>,
    /// The event types it covers; an append with another hooked type runs
    /// [`AppendHook::on_append`] instead.
    pub event_types: &'static [&'static str],
}

/// A refusal from an [`AppendHook`]: a unique key is taken, or the database failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{what} is already taken")]
    Taken { what: String },
    /// The append lacks something the hook needs (a bug in the caller).
    #[error("append refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

impl StoredEvent {
    /// The event as the service's event enum (`{"<event_type>": data}`), upcast to the
    /// newest version of its type, for hooks and other readers of stored events.
    ///
    /// # Errors
    /// The stored data does not fit the enum: the append is refused.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, HookError> {
        shop_schemas::decode_versioned(&self.event_type, self.version(), &self.data)
            .map_err(|e| HookError::Refused(format!("{}: {e}", self.event_type)))
    }
}
