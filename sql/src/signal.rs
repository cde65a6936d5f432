//! In-process commit signals: what `LISTEN/NOTIFY` is between processes, for a listener
//! in the same process as the committing transactions (the SQL layer's own notification;
//! it knows nothing of what the listener does with it).
//!
//! A transaction asks for a notification with [`Conn::notify_on_commit`]; once it
//! commits, the [`CommitSignal`] of its database counts it and wakes the listener. On
//! SQLite every pool carries one; on PostgreSQL a listener registers itself for its
//! database ([`LocalListener`]) and transactions on that database find it at their
//! start, sparing a `NOTIFY` (which serialises every committing transaction on the
//! server's notification queue lock).
//!
//! [`Conn::notify_on_commit`]: crate::sql::Conn::notify_on_commit

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::PgPool;

/// Commits that asked for a notification, counted, and the wake-up of whoever waits for
/// them. The count lets a listener tell a wake-up for commits it has already looked
/// after (a stored permit) from new ones.
#[derive(Debug, Default)]
pub struct CommitSignal {
    notify: tokio::sync::Notify,
    commits: AtomicU64,
}

impl CommitSignal {
    /// Called after a commit that asked for a notification.
    pub fn committed(&self) {
        self.commits.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Commits counted so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// Resolves at the next commit counted after this call (or at a stored permit).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// The listeners of this process, by database.
static LOCAL_LISTENERS: std::sync::Mutex<Vec<(Database, Arc<CommitSignal>)>> =
    std::sync::Mutex::new(Vec::new());

/// A database as its pool's options name it: host, port, database name.
#[derive(Debug, Clone, PartialEq)]
struct Database {
    host: String,
    port: u16,
    database: String,
}

impl Database {
    fn of(pool: &PgPool) -> Self {
        let options = pool.connect_options();
        Database {
            host: options.get_host().to_string(),
            port: options.get_port(),
            database: options.get_database().unwrap_or_default().to_string(),
        }
    }

    /// Compared without allocating: this runs at every transaction's start.
    fn is(&self, pool: &PgPool) -> bool {
        let options = pool.connect_options();
        self.port == options.get_port()
            && self.host == options.get_host()
            && self.database == options.get_database().unwrap_or_default()
    }
}

/// The signal of the listener in this process for `pool`'s database, if any.
pub fn local_listener(pool: &PgPool) -> Option<Arc<CommitSignal>> {
    LOCAL_LISTENERS
        .lock()
        .expect("listener registry")
        .iter()
        .find(|(database, _)| database.is(pool))
        .map(|(_, signal)| signal.clone())
}

/// A listener of a PostgreSQL database's commits in this process, registered for as long
/// as it lives.
pub struct LocalListener {
    database: Database,
    signal: Arc<CommitSignal>,
}

impl LocalListener {
    pub fn register(pool: &PgPool) -> Self {
        let listener = LocalListener {
            database: Database::of(pool),
            signal: Arc::new(CommitSignal::default()),
        };
        LOCAL_LISTENERS
            .lock()
            .expect("listener registry")
            .push((listener.database.clone(), listener.signal.clone()));
        listener
    }

    /// The signal the database's notifying commits count on.
    pub fn signal(&self) -> &CommitSignal {
        &self.signal
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        let mut listeners = LOCAL_LISTENERS.lock().expect("listener registry");
        if let Some(index) = listeners.iter().position(|(database, signal)| {
            *database == self.database && Arc::ptr_eq(signal, &self.signal)
        }) {
            listeners.remove(index);
        }
    }
}
