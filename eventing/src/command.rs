//! Executing commands on cqrs-es aggregates over the [`EventStore`], with retries on
//! optimistic-concurrency conflicts and one typed error for the HTTP edge.

use std::time::{Duration, Instant};

use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, CqrsFramework};
use shop_schemas::EventMetadata;
use tracing::{debug, warn};

use crate::sql::Conn;
use crate::store::{EventStore, HookError, TxEventStore};

/// How often a command is re-run after losing an optimistic-concurrency race before the
/// caller gets a conflict (409).
pub const CONFLICT_RETRIES: usize = 8;

/// Why a command did not append.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command (a domain rule).
    #[error(transparent)]
    Rejected(E),
    /// Other commands kept winning the race for this aggregate.
    #[error("the aggregate was changed concurrently; retry the request")]
    Conflict,
    /// A unique key the service keeps (e.g. a SKU) is taken.
    #[error("{0} is already taken")]
    Taken(String),
    /// The store failed.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
}

/// Runs commands of one aggregate type against the event store.
pub struct CommandBus<A>
where
    A: Aggregate,
{
    store: EventStore,
    services: A::Services,
    /// Load from a snapshot taken every this many events (`None`: replay every event).
    snapshot_every: Option<usize>,
}

impl<A> CommandBus<A>
where
    A: Aggregate,
    A::Command: Clone,
    A::Services: Clone,
{
    pub fn new(store: EventStore, services: A::Services) -> Self {
        CommandBus {
            store,
            services,
            snapshot_every: None,
        }
    }

    /// Like [`CommandBus::new`], loading aggregates from a snapshot taken every
    /// `snapshot_every` events.
    pub fn with_snapshots(store: EventStore, services: A::Services, snapshot_every: usize) -> Self {
        CommandBus {
            store,
            services,
            snapshot_every: Some(snapshot_every),
        }
    }

    fn framework<R: PersistedEventRepository>(
        &self,
        repository: R,
    ) -> CqrsFramework<A, PersistedEventStore<R, A>> {
        let store = match self.snapshot_every {
            Some(every) => PersistedEventStore::new_snapshot_store(repository, every),
            None => PersistedEventStore::new_event_store(repository),
        };
        CqrsFramework::new(store, vec![], self.services.clone())
    }

    /// Executes a command in a transaction of its own; a lost concurrency race is retried
    /// with a fresh aggregate.
    ///
    /// # Errors
    /// See [`CommandError`].
    #[tracing::instrument(name = "command", skip_all, fields(aggregate = A::TYPE, aggregate_id = %aggregate_id))]
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<A::Error>> {
        let cqrs = self.framework(self.store.clone());
        run_with_retries(&cqrs, aggregate_id, command, metadata).await
    }

    /// Like [`CommandBus::execute`], returning the aggregate's version after the command
    /// (its last sequence) for a read-your-writes token.
    ///
    /// # Errors
    /// See [`CommandError`].
    pub async fn execute_versioned(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<i64, CommandError<A::Error>> {
        self.execute(aggregate_id, command, metadata).await?;
        self.store
            .last_sequence(A::TYPE, aggregate_id)
            .await
            .map_err(|e| CommandError::Unavailable(e.to_string()))
    }

    /// Executes a command inside the caller's transaction (a reaction's: its dedup record
    /// and checkpoint commit with the events, or nothing does). A lost concurrency race
    /// rolls back to a savepoint and is retried; the caller's transaction stays usable.
    ///
    /// # Errors
    /// See [`CommandError`].
    #[tracing::instrument(name = "command", skip_all, fields(aggregate = A::TYPE, aggregate_id = %aggregate_id))]
    pub async fn execute_in(
        &self,
        conn: &mut Conn,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<A::Error>> {
        // Replaying imported history: the outcome is already in the store.
        if replaying() {
            return Ok(());
        }
        let cqrs = self.framework(TxEventStore::new(conn, self.store.hook()));
        run_with_retries(&cqrs, aggregate_id, command, metadata).await
    }
}

async fn run_with_retries<A, R>(
    cqrs: &CqrsFramework<A, PersistedEventStore<R, A>>,
    aggregate_id: &str,
    command: A::Command,
    metadata: &EventMetadata,
) -> Result<(), CommandError<A::Error>>
where
    A: Aggregate,
    A::Command: Clone,
    R: PersistedEventRepository,
{
    let started = Instant::now();
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match cqrs
            .execute_with_metadata(aggregate_id, command.clone(), metadata.to_map())
            .await
        {
            Ok(()) => break Ok(()),
            Err(AggregateError::AggregateConflict) if attempt <= CONFLICT_RETRIES => {
                debug!(attempt, "concurrency conflict, retrying");
                let backoff = Duration::from_millis(fastrand::u64(1..=5 * attempt as u64));
                tokio::time::sleep(backoff).await;
            }
            Err(e) => break Err(map_error(e)),
        }
    };
    let outcome = match &result {
        Ok(()) => "accepted",
        Err(CommandError::Rejected(_)) => "rejected",
        Err(CommandError::Conflict) => "conflict",
        Err(CommandError::Taken(_)) => "taken",
        Err(CommandError::Unavailable(e)) => {
            warn!(error = %e, "command failed");
            "failed"
        }
    };
    metrics::histogram!("command_duration_seconds", "aggregate" => A::TYPE, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result
}

fn map_error<E: std::error::Error>(error: AggregateError<E>) -> CommandError<E> {
    match error {
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::AggregateConflict => CommandError::Conflict,
        AggregateError::UnexpectedError(e) => match e.downcast::<HookError>() {
            Ok(hook) => match *hook {
                HookError::Taken { what } => CommandError::Taken(what),
                HookError::Sql(e) => CommandError::Unavailable(e.to_string()),
                HookError::Refused(why) => CommandError::Unavailable(why),
            },
            Err(e) => CommandError::Unavailable(e.to_string()),
        },
        AggregateError::DatabaseConnectionError(e) | AggregateError::DeserializationError(e) => {
            CommandError::Unavailable(e.to_string())
        }
    }
}

tokio::task_local! {
    static REPLAYING: bool;
}

/// Runs a reaction's handler in replay mode: its own tables are updated, but
/// [`CommandBus::execute_in`] issues no command (the history already holds the outcome).
pub async fn replay<F: std::future::Future>(work: F) -> F::Output {
    REPLAYING.scope(true, work).await
}

/// Whether the current task replays ([`replay`]).
pub fn replaying() -> bool {
    REPLAYING.try_with(|r| *r).unwrap_or(false)
}
