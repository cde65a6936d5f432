//! Pools and connections of either backend ([`Pool`], [`Conn`]): transactions, what
//! runs after a commit, the in-process notification a transaction asks for, and values
//! the layers above keep for a transaction's length.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::dialect::Dialect;
use crate::lite::{LiteDb, LiteTx};
use crate::signal::{local_listener, CommitSignal};

/// A pool of connections to one component database.
#[derive(Debug, Clone)]
pub enum Pool {
    Postgres(PgPool),
    Sqlite(LitePool),
}

/// An SQLite pool with what PostgreSQL gives for free: the in-process notification of
/// its commits (instead of `LISTEN/NOTIFY`) and a lock whose holder leads (instead of an
/// advisory lock).
#[derive(Debug, Clone)]
pub struct LitePool {
    pub db: Arc<LiteDb>,
    pub signal: Arc<CommitSignal>,
    pub advisory_lock: Arc<tokio::sync::Mutex<()>>,
}

impl From<PgPool> for Pool {
    fn from(pool: PgPool) -> Self {
        Pool::Postgres(pool)
    }
}

impl From<Arc<LiteDb>> for Pool {
    fn from(db: Arc<LiteDb>) -> Self {
        Pool::Sqlite(LitePool {
            db,
            signal: Arc::new(CommitSignal::default()),
            advisory_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }
}

impl Pool {
    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// How many transactions can write at once to good effect: SQLite serialises every
    /// transaction of a file behind its one writer (more would only queue); PostgreSQL
    /// sets no bound of its own.
    pub fn max_concurrent_writers(&self) -> usize {
        match self {
            Pool::Postgres(_) => usize::MAX,
            Pool::Sqlite(_) => 1,
        }
    }

    /// Starts a transaction. On SQLite it takes the writer lock at once (`BEGIN
    /// IMMEDIATE`), so two transactions never deadlock upgrading from reader to writer.
    ///
    /// # Errors
    /// No connection could be had.
    pub async fn begin(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Pool::Postgres(pool) => Conn {
                inner: Inner::PgTx(pool.begin().await?),
                signal: local_signal(pool),
                after_commit: Vec::new(),
                locals: HashMap::new(),
            },
            Pool::Sqlite(lite) => Conn {
                inner: Inner::LiteTx(lite.db.begin().await?),
                signal: Some(PendingSignal {
                    signal: lite.signal.clone(),
                    pending: false,
                }),
                after_commit: Vec::new(),
                locals: HashMap::new(),
            },
        })
    }

    /// A connection outside any transaction.
    ///
    /// # Errors
    /// No connection could be had.
    pub async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Pool::Postgres(pool) => Conn {
                inner: Inner::Pg(pool.acquire().await?),
                signal: local_signal(pool),
                after_commit: Vec::new(),
                locals: HashMap::new(),
            },
            Pool::Sqlite(lite) => Conn {
                inner: Inner::Lite(lite.db.clone()),
                signal: Some(PendingSignal {
                    signal: lite.signal.clone(),
                    pending: false,
                }),
                after_commit: Vec::new(),
                locals: HashMap::new(),
            },
        })
    }

    pub async fn close(&self) {
        match self {
            Pool::Postgres(pool) => pool.close().await,
            // Connections close when the last handle goes.
            Pool::Sqlite(_) => {}
        }
    }

    /// The PostgreSQL pool, for what only PostgreSQL has (`LISTEN`, advisory locks).
    pub fn as_postgres(&self) -> Option<&PgPool> {
        match self {
            Pool::Postgres(pool) => Some(pool),
            Pool::Sqlite(_) => None,
        }
    }
}

/// The in-process signal of a connection's database, and whether this transaction asked
/// for it ([`Conn::notify_on_commit`]).
#[derive(Debug)]
struct PendingSignal {
    signal: Arc<CommitSignal>,
    pending: bool,
}

/// The signal of the listener in this process for `pool`'s database, if any.
fn local_signal(pool: &PgPool) -> Option<PendingSignal> {
    local_listener(pool).map(|signal| PendingSignal {
        signal,
        pending: false,
    })
}

/// A pooled connection, possibly inside a transaction. Handlers and hooks receive
/// `&mut Conn` and run statements on it with `.execute(&mut *tx)`.
#[derive(Debug)]
pub struct Conn {
    inner: Inner,
    signal: Option<PendingSignal>,
    /// Work to do once the transaction has committed (e.g. caching the state an append
    /// produced); dropped with a rollback.
    after_commit: Vec<AfterCommit>,
    /// Values the layers above keep for as long as this connection or transaction lives
    /// ([`Conn::transaction_local`]), one per type.
    locals: HashMap<std::any::TypeId, Box<dyn std::any::Any + Send>>,
}

/// See [`Conn::after_commit`].
struct AfterCommit(Box<dyn FnOnce() + Send>);

/// What follows a commit: the in-process notification if the transaction asked for it
/// ([`Conn::notify_on_commit`]), then the work waiting for the commit.
fn after_commit_work(signal: Option<PendingSignal>, after_commit: Vec<AfterCommit>) {
    if let Some(signal) = signal {
        if signal.pending {
            signal.signal.committed();
        }
    }
    for work in after_commit {
        (work.0)();
    }
}

impl std::fmt::Debug for AfterCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterCommit")
    }
}

#[derive(Debug)]
enum Inner {
    PgTx(Transaction<'static, Postgres>),
    Pg(PoolConnection<Postgres>),
    PgOwned(Box<PgConnection>),
    LiteTx(LiteTx),
    Lite(Arc<LiteDb>),
}

impl Conn {
    pub fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::PgTx(_) | Inner::Pg(_) | Inner::PgOwned(_) => Dialect::Postgres,
            Inner::LiteTx(_) | Inner::Lite(_) => Dialect::Sqlite,
        }
    }

    /// Holds off other transactions' writes to `table` until this transaction ends, once
    /// those in flight have committed; reads go on. PostgreSQL: `LOCK TABLE … IN SHARE
    /// MODE`; SQLite: already so (a transaction holds the file's one writer from its
    /// start).
    ///
    /// # Errors
    /// The database failed.
    pub async fn hold_writes_to(&mut self, table: &str) -> Result<(), sqlx::Error> {
        let statement = format!("LOCK TABLE {table} IN SHARE MODE");
        let statement = sqlx::query(&statement);
        match &mut self.inner {
            Inner::PgTx(tx) => statement.execute(&mut **tx).await?,
            Inner::Pg(conn) => statement.execute(&mut **conn).await?,
            Inner::PgOwned(conn) => statement.execute(&mut **conn).await?,
            Inner::LiteTx(_) | Inner::Lite(_) => return Ok(()),
        };
        Ok(())
    }

    /// Commits the transaction (a no-op outside one), then notifies the in-process
    /// listener if the transaction asked for it ([`Conn::notify_on_commit`]).
    ///
    /// # Errors
    /// The commit failed; nothing was stored.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::PgTx(tx) => tx.commit().await?,
            Inner::LiteTx(tx) => tx.commit()?,
            Inner::Pg(_) | Inner::PgOwned(_) | Inner::Lite(_) => {}
        }
        after_commit_work(self.signal, self.after_commit);
        Ok(())
    }

    /// Runs `work` once this transaction has committed (at once outside a transaction);
    /// never if it rolls back.
    pub fn after_commit(&mut self, work: impl FnOnce() + Send + 'static) {
        match self.inner {
            Inner::PgTx(_) | Inner::LiteTx(_) => {
                self.after_commit.push(AfterCommit(Box::new(work)))
            }
            Inner::Pg(_) | Inner::PgOwned(_) | Inner::Lite(_) => work(),
        }
    }

    /// Whether this connection is inside a transaction.
    pub fn in_transaction(&self) -> bool {
        matches!(self.inner, Inner::PgTx(_) | Inner::LiteTx(_))
    }

    /// This connection's value of type `T` (created empty at first use), dropped with
    /// the connection: what a layer above keeps for the length of a transaction.
    pub fn transaction_local<T: Default + Send + 'static>(&mut self) -> &mut T {
        self.locals
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut::<T>()
            .expect("keyed by its type")
    }

    /// This connection's value of type `T`, if one was created.
    pub fn transaction_local_ref<T: 'static>(&self) -> Option<&T> {
        self.locals
            .get(&std::any::TypeId::of::<T>())?
            .downcast_ref::<T>()
    }

    /// Rolls the transaction back (dropping it does too).
    ///
    /// # Errors
    /// The rollback failed (the transaction is gone either way).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::PgTx(tx) => tx.rollback().await,
            Inner::LiteTx(tx) => tx.rollback(),
            Inner::Pg(_) | Inner::PgOwned(_) | Inner::Lite(_) => Ok(()),
        }
    }

    /// Whether [`Conn::notify_on_commit`] notifies a listener in this process (SQLite, or
    /// a PostgreSQL database with a [`LocalListener`](crate::signal::LocalListener) here)
    /// rather than with `NOTIFY`.
    pub fn notifies_in_process(&self) -> bool {
        self.signal.is_some()
    }

    /// Notifies `channel`'s listener once this transaction commits: in-process when it
    /// runs in this process ([`Conn::notifies_in_process`]), else `NOTIFY channel`
    /// (delivered at commit).
    ///
    /// # Errors
    /// The notification could not be queued.
    pub async fn notify_on_commit(&mut self, channel: &str) -> Result<(), sqlx::Error> {
        // SQLite connections always carry their pool's signal.
        match &mut self.signal {
            Some(signal) => signal.pending = true,
            None => {
                // Only PostgreSQL connections can lack the signal.
                let statement = sqlx::query("SELECT pg_notify($1, '')").bind(channel);
                match &mut self.inner {
                    Inner::PgTx(tx) => statement.execute(&mut **tx).await?,
                    Inner::Pg(conn) => statement.execute(&mut **conn).await?,
                    Inner::PgOwned(conn) => statement.execute(&mut **conn).await?,
                    Inner::LiteTx(_) | Inner::Lite(_) => unreachable!("SQLite carries its signal"),
                };
            }
        }
        Ok(())
    }

    /// A PostgreSQL connection its owner keeps between uses, detached from `pool` (see
    /// [`Conn::commit_keeping`]), outside any transaction; its notifications reach the
    /// listener as `pool`'s do.
    pub fn kept(conn: PgConnection, pool: &PgPool) -> Conn {
        Conn {
            inner: Inner::PgOwned(Box::new(conn)),
            signal: local_signal(pool),
            after_commit: Vec::new(),
            locals: HashMap::new(),
        }
    }

    /// [`Conn::commit`], handing back a [`Conn::kept`] connection for its owner to keep
    /// again; `None` for any other connection.
    ///
    /// # Errors
    /// The commit failed; nothing was stored.
    pub async fn commit_keeping(self) -> Result<Option<PgConnection>, sqlx::Error> {
        let Conn {
            inner,
            signal,
            after_commit,
            locals,
        } = self;
        let conn = match inner {
            Inner::PgOwned(conn) => *conn,
            inner => {
                let conn = Conn {
                    inner,
                    signal,
                    after_commit,
                    locals,
                };
                conn.commit().await?;
                return Ok(None);
            }
        };
        // Outside a transaction: nothing to commit; what follows a commit, as there.
        after_commit_work(signal, after_commit);
        Ok(Some(conn))
    }

    /// The connection of a [`Conn::kept`] whose statement failed with the database's
    /// answer (a lost race, a refused hook), for its owner to keep: outside a
    /// transaction nothing waits for a commit. `None` for any other connection.
    pub fn into_kept(self) -> Option<PgConnection> {
        match self.inner {
            Inner::PgOwned(conn) => Some(*conn),
            _ => None,
        }
    }

    /// A PostgreSQL connection of its own, outside the pool (e.g. one that holds a
    /// session-level advisory lock for as long as it lives).
    pub fn detached(conn: PgConnection) -> Conn {
        Conn {
            inner: Inner::PgOwned(Box::new(conn)),
            signal: None,
            after_commit: Vec::new(),
            locals: HashMap::new(),
        }
    }

    /// Closes a detached connection (others go back to their pool when dropped).
    pub async fn close(self) {
        if let Inner::PgOwned(conn) = self.inner {
            sqlx::Connection::close(*conn).await.ok();
        }
    }

    fn target(&mut self) -> Target<'_> {
        match &mut self.inner {
            Inner::PgTx(tx) => Target::Pg(tx),
            Inner::Pg(conn) => Target::Pg(conn),
            Inner::PgOwned(conn) => Target::Pg(conn),
            Inner::LiteTx(tx) => Target::Lite(tx.conn()),
            Inner::Lite(db) => Target::LitePool(db),
        }
    }
}

/// Where a statement runs.
pub enum Target<'a> {
    Pg(&'a mut PgConnection),
    PgPool(&'a PgPool),
    Lite(&'a rusqlite::Connection),
    LitePool(&'a LiteDb),
}

/// What statements run on: `&Pool` or `&mut Conn`.
pub trait Executor<'a>: Send {
    fn target(self) -> Target<'a>;
}

impl<'a> Executor<'a> for &'a Pool {
    fn target(self) -> Target<'a> {
        match self {
            Pool::Postgres(pool) => Target::PgPool(pool),
            Pool::Sqlite(lite) => Target::LitePool(&lite.db),
        }
    }
}

impl<'a> Executor<'a> for &'a mut Conn {
    fn target(self) -> Target<'a> {
        Conn::target(self)
    }
}
