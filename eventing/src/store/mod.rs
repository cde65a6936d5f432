//! The event store: cqrs-es's persistence over PostgreSQL or SQLite ([`shop_sql`]),
//! with the outbox.
//!
//! One transaction per command appends the events (unique `(aggregate_type,
//! aggregate_id, sequence)`: the optimistic concurrency check), records them in the
//! outbox for the relay, lets the service's [`AppendHook`] maintain its private lookup
//! tables (e.g. unique SKUs) and notifies the relay — all or nothing.
//!
//! - `event`: the stored event, its row and its CloudEvent;
//! - `hook`: the service's append hook;
//! - `append`: the one append entry, which picks a route: `group` (group commit) or
//!   alone (`kept`, the store's kept connection, or a transaction of its own);
//!   `tx` ([`TxEventStore`]) appends inside a caller's transaction;
//! - `write`: the one function every route writes an append with (events, outbox,
//!   wake-up, hook, snapshots);
//! - `reads`: cqrs-es's loads and replay streams, and the reads tools use.
//!
//! The SQL that differs between the backends is in [`crate::backend`].

use std::sync::Arc;

use shop_sql::Pool;

mod append;
pub(crate) mod event;
mod group;
pub(crate) mod hook;
mod kept;
mod reads;
mod tx;
mod write;

pub use event::StoredEvent;
pub use hook::{AppendHook, HookError, InlineHook};
pub(crate) use tx::without_savepoints;
pub use tx::TxEventStore;

/// The event-store tables; apply with [`shop_sql::db::open`].
pub const SCHEMA: &str = include_str!("../../sql/event_store.sql");

pub use crate::backend::OUTBOX_CHANNEL;

/// The event repository for cqrs-es on either backend ([`shop_sql`]), with outbox and
/// append hook.
#[derive(Clone)]
pub struct EventStore {
    pool: Pool,
    hook: Option<Arc<dyn AppendHook>>,
    /// Appends through the pool: their group commit, started on first use.
    group: Arc<std::sync::OnceLock<group::GroupCommit>>,
    /// The store's own connection for an append alone that is one statement, where the
    /// backend has round trips to save (PostgreSQL).
    kept: Option<Arc<kept::KeptConnection>>,
}

impl EventStore {
    pub fn new(pool: impl Into<Pool>) -> Self {
        let pool = pool.into();
        EventStore {
            kept: kept::KeptConnection::for_pool(&pool).map(Arc::new),
            pool,
            hook: None,
            group: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Adds the service's transactional hook.
    pub fn with_hook(mut self, hook: Arc<dyn AppendHook>) -> Self {
        self.hook = Some(hook);
        // A group writer of its own: one started for a store without the hook would not
        // run it.
        self.group = Arc::new(std::sync::OnceLock::new());
        self
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The service's append hook, if any.
    pub fn hook(&self) -> Option<Arc<dyn AppendHook>> {
        self.hook.clone()
    }

    /// The store's group commit, started on first use.
    fn group_commit(&self) -> &group::GroupCommit {
        self.group
            .get_or_init(|| group::GroupCommit::start(self.pool.clone(), self.hook.clone()))
    }
}
